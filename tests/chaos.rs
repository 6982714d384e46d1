//! Fault tolerance under Kafka's failure matrix: every scenario of
//! `metrocloud chaos`, each on a fresh cluster of its own, under a short load.
//!
//! Every scenario must end with no acknowledged reading lost (all were
//! processed and all are in the topic where they were acknowledged), repeats
//! within what at-least-once delivery explains, and the scenario's own
//! conditions held. The scenarios take turns: each runs three brokers and two
//! consumer processes, more than this suite's machines run twice at once.

mod common;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use metrocloud::chaos::{self, ChaosSettings, Scenario, ScenarioReport};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn settings() -> ChaosSettings {
    let mut settings = ChaosSettings::new(
        PathBuf::from(env!("CARGO_BIN_EXE_metrocloud")),
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chaos"),
    );
    settings.rate = 300;
    settings.devices = 150;
    settings.warmup = Duration::from_secs(2);
    // Long enough for every fault to be noticed, retried through and healed
    // (`metrocloud chaos` defaults to 15 s; the README has longer runs).
    settings.fault = Duration::from_secs(8);
    settings.cooldown = Duration::from_secs(3);
    settings.request_timeout = Duration::from_secs(5);
    settings
}

/// Runs `scenario` and checks what every scenario must hold; returns the report.
fn run(scenario: Scenario) -> ScenarioReport {
    run_with(scenario, settings())
}

/// [`run`] with `settings` of the test's own.
fn run_with(scenario: Scenario, settings: ChaosSettings) -> ScenarioReport {
    common::init_logs();
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let report = runtime
        .block_on(chaos::run_scenario(scenario, &settings, &|line| {
            eprintln!("{line}")
        }))
        .unwrap_or_else(|e| panic!("{} could not run: {e}", scenario.name()));
    let table = chaos::render_table(std::slice::from_ref(&report));
    eprintln!("{table}");
    // At least what was offered before the fault and after it was healed.
    let offered = u64::from(settings.rate) * (settings.warmup + settings.cooldown).as_secs();
    assert!(
        report.acked >= offered,
        "too little load was acknowledged to judge (fewer than {offered}):\n{table}"
    );
    assert_eq!(
        report.lost, 0,
        "acknowledged readings never processed:\n{table}"
    );
    assert_eq!(
        report.missing_from_topic, 0,
        "acknowledged readings not in the topic:\n{table}"
    );
    assert!(
        report.consumed <= report.acked + report.failed,
        "processed readings that were neither acknowledged nor reported failed:\n{table}"
    );
    assert!(
        report.duplicates_removed + report.reprocessed <= report.duplicate_bound,
        "more repeats than at-least-once delivery explains:\n{table}"
    );
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.what.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "conditions that did not hold: {failed:?}\n{table}"
    );
    assert!(report.passed());
    report
}

#[test]
fn a_killed_partition_leader_loses_no_acknowledged_reading() {
    let report = run(Scenario::LeaderKill);
    assert!(report.recovery.is_some());
}

/// On a secure cluster, every client as the `pipeline` user, over SASL_SSL
/// (CI runs it with the tls feature, on the static musl build).
#[cfg(feature = "tls")]
#[test]
fn a_killed_partition_leader_of_a_secure_cluster_over_sasl_loses_no_acknowledged_reading() {
    let report = run_with(
        Scenario::LeaderKill,
        ChaosSettings {
            secure: true,
            ..settings()
        },
    );
    assert!(report.recovery.is_some());
}

#[test]
fn a_killed_quorum_controller_loses_no_acknowledged_reading() {
    run(Scenario::ControllerKill);
}

#[test]
fn a_rolling_restart_of_every_broker_loses_no_acknowledged_reading() {
    run(Scenario::RollingRestart);
}

/// The scenario checked a condition starting with `what`, and it held.
fn assert_held(report: &ScenarioReport, what: &str) {
    assert!(
        report
            .checks
            .iter()
            .any(|check| check.what.starts_with(what) && check.passed),
        "no check starting {what:?} held: {:?}",
        report.checks
    );
}

#[test]
fn with_two_brokers_down_nothing_is_acknowledged_and_nothing_acknowledged_is_lost() {
    let report = run(Scenario::TwoDown);
    assert_held(&report, "nothing acknowledged with two brokers down");
    assert_held(&report, "the producer pushed back");
}

#[test]
fn a_frozen_broker_hangs_no_client_and_loses_no_acknowledged_reading() {
    let report = run(Scenario::BrokerHang);
    assert_held(&report, "acknowledgements continued while node");
}

#[test]
fn a_killed_consumer_hands_its_partitions_on_without_a_gap() {
    let report = run(Scenario::ConsumerKill);
    assert_held(&report, "the other member took over every partition");
    // The group session on these clusters is 6 s: the take-over follows it.
    let recovery = report.recovery.expect("recovered");
    assert!(recovery < Duration::from_secs(45), "took {recovery:?}");
}

#[test]
fn a_full_cluster_restart_keeps_every_acknowledged_reading() {
    run(Scenario::FullRestart);
}

#[test]
fn a_pipeline_started_before_its_cluster_waits_and_then_works() {
    let report = run(Scenario::LateCluster);
    assert_held(&report, "each consumer logged that it waits for Kafka");
    assert_held(&report, "producer and consumers still waiting after");
}

#[test]
fn a_storage_stage_killed_with_files_open_stores_every_acknowledged_reading_once() {
    let report = run(Scenario::StorageKill);
    assert_held(&report, "the storage stage renamed files into place");
    assert_held(&report, "every acknowledged reading stored");
    assert_held(&report, "no reading stored twice");
}

#[test]
fn a_postgres_server_restarted_under_load_keeps_every_acknowledged_reading_once() {
    let report = run(Scenario::PostgresRestart);
    assert_held(&report, "the storage stage wrote rows into PostgreSQL");
    assert_held(&report, "every acknowledged reading stored");
    assert_held(&report, "no reading stored twice");
}

#[test]
fn readings_acknowledged_by_the_gateway_while_kafka_is_away_are_all_in_the_topic_once_it_returns() {
    let report = run(Scenario::GatewayOffline);
    assert_held(&report, "devices were acknowledged while Kafka was away");
    assert_held(&report, "the gateway's buffer emptied into Kafka");
    assert_held(
        &report,
        "each device's readings are in the topic in the order it sent them",
    );
}

#[test]
fn a_gateway_killed_under_load_loses_no_reading_it_acknowledged() {
    let report = run(Scenario::GatewayKill);
    assert_held(&report, "the gateway's buffer emptied into Kafka");
    assert_held(
        &report,
        "each device's readings are in the topic in the order it sent them",
    );
}

#[test]
fn a_full_gateway_buffer_pushes_devices_back_and_loses_nothing_it_acknowledged() {
    let report = run(Scenario::GatewayFull);
    assert_held(&report, "devices were pushed back once the buffer was full");
    assert_held(
        &report,
        "each device's readings are in the topic in the order it sent them",
    );
}
