//! One scenario's run: a cluster of its own, load, the fault, recovery, and
//! the checks judged by the delivery audit.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use crate::bench::postgres::LocalPostgres;
use crate::cluster::{ClusterSpec, LocalCluster};
use crate::config::Config;
use load::Load;
use stages::{StoreProcess, StoredIn, audit_store};

use super::*;

/// One scenario under way.
pub(super) struct Run<'a> {
    pub(super) scenario: Scenario,
    pub(super) settings: &'a ChaosSettings,
    pub(super) cluster: &'a LocalCluster,
    pub(super) spec: &'a ClusterSpec,
    pub(super) say: &'a (dyn Fn(&str) + Sync),
    pub(super) checks: Vec<Check>,
    /// The storage stage, in the scenarios that run one.
    pub(super) store: Option<StoreProcess>,
    /// Its PostgreSQL server, in the scenario that stores there.
    pub(super) postgres: Option<LocalPostgres>,
}

impl Run<'_> {
    fn check(&mut self, passed: bool, what: String) {
        (self.say)(&format!(
            "{} {what}",
            if passed { "ok:" } else { "FAILED:" }
        ));
        self.checks.push(Check { what, passed });
    }

    pub(super) async fn execute(mut self, dir: &Path) -> Result<ScenarioReport, ChaosError> {
        let settings = self.settings;
        let config = settings.pipeline_config(self.scenario, self.cluster)?;
        if self.scenario != Scenario::LateCluster {
            self.cluster.start(self.spec.ready_timeout).await?;
            if self.cluster.is_secure() {
                self.cluster
                    .grant(&config.pipeline_names(), &config.pipeline_topics())
                    .await?;
            }
            (self.say)(&format!(
                "cluster of {} nodes ready on {}",
                self.cluster.nodes().len(),
                self.cluster.bootstrap_servers().join(",")
            ));
        }
        let mut load =
            Load::start(config.clone(), dir, &settings.binary, settings.consumers).await?;
        if self.scenario == Scenario::PostgresRestart {
            let server = LocalPostgres::start(&dir.join("postgres")).map_err(ChaosError::Log)?;
            self.postgres = Some(server);
        }
        if matches!(
            self.scenario,
            Scenario::StorageKill | Scenario::PostgresRestart
        ) {
            self.start_store(&config, dir)?;
        }
        (self.say)(&format!(
            "load started: {} readings/s from {} devices, {} consumer processes",
            settings.rate, settings.devices, settings.consumers
        ));
        if self.scenario == Scenario::LateCluster {
            self.late_cluster(&mut load).await?;
        }
        let flowing = load
            .run_until(Duration::from_secs(120), Load::every_partition_processed)
            .await?;
        self.check(
            flowing,
            "every partition is produced to and processed".to_string(),
        );
        if flowing {
            load.run_for(settings.warmup).await?;
            self.inject(&mut load, &config).await?;
            load.run_for(settings.cooldown).await?;
            let recovered = load
                .run_until(settings.settle, |l| l.recovery().is_some())
                .await?;
            self.check(
                recovered,
                match load.recovery() {
                    Some(r) => {
                        format!("every partition processed new records {r:.1?} after the mark")
                    }
                    None => "every partition processes new records again".to_string(),
                },
            );
        }
        let expected_exits = usize::from(self.scenario == Scenario::ConsumerKill);
        let exited = load.exited_consumers();
        self.check(
            exited.len() == expected_exits,
            format!(
                "no consumer process ended by itself ({} ended, {expected_exits} killed)",
                exited.len()
            ),
        );
        (self.say)("stopping the load; the producer delivers what it holds");
        let summary = load.stop_producing().await?;
        let caught_up = load
            .run_until(settings.settle, |l| {
                let audit = l.audit();
                audit.acked > 0 && audit.lost == 0
            })
            .await?;
        (self.say)(&format!(
            "consumers {} within {:?}; stopping them",
            if caught_up {
                "caught up"
            } else {
                "did not catch up"
            },
            settings.settle
        ));
        load.stop_consumers(Duration::from_secs(30)).await?;
        if self.store.is_some() {
            self.judge_store(&load, dir).await?;
        }
        let missing_from_topic = load.acked_missing_from_topic().await?;
        let audit = load.audit();
        self.check(
            summary.producer.acked + summary.producer.failed == summary.producer.sent,
            format!(
                "every reading ended acked or failed ({} sent, {} acked, {} failed)",
                summary.producer.sent, summary.producer.acked, summary.producer.failed
            ),
        );
        Ok(ScenarioReport {
            scenario: self.scenario,
            sent: summary.producer.sent,
            acked: audit.acked,
            failed: audit.failed,
            consumed: audit.consumed,
            lost: audit.lost,
            missing_from_topic,
            duplicates_removed: load.removed_duplicates(),
            reprocessed: audit.duplicates,
            duplicate_bound: settings.duplicate_bound(self.scenario),
            longest_stall: load.longest_stall(),
            recovery: load.recovery(),
            checks: self.checks,
            elapsed: Duration::ZERO,
            dir: dir.to_path_buf(),
        })
    }

    /// The producer and consumers wait for a cluster that is not there; then it starts.
    async fn late_cluster(&mut self, load: &mut Load) -> Result<(), ChaosError> {
        load.run_for(self.settings.fault).await?;
        let waiting = load.producer_running() && load.exited_consumers().is_empty();
        self.check(
            waiting,
            format!(
                "producer and consumers still waiting after {:?} without a cluster",
                self.settings.fault
            ),
        );
        let logged = (0..self.settings.consumers)
            .all(|n| load.consumer_output_contains(n, "waiting for Kafka"));
        self.check(
            logged,
            "each consumer logged that it waits for Kafka".to_string(),
        );
        self.cluster.start(self.spec.ready_timeout).await?;
        (self.say)("cluster started");
        load.mark(Instant::now());
        Ok(())
    }

    async fn inject(&mut self, load: &mut Load, config: &Config) -> Result<(), ChaosError> {
        let ready = self.spec.ready_timeout;
        let fault = self.settings.fault;
        match self.scenario {
            Scenario::LeaderKill => {
                let (victim, led) = leader_of_most(self.cluster, &config.topic).await?;
                let at = Instant::now();
                self.cluster.kill_node(victim).await?;
                load.mark(at);
                (self.say)(&format!(
                    "SIGKILL node {victim}, leader of {led} partitions"
                ));
                let moved = wait_until(load, Duration::from_secs(60), || async {
                    leaders_avoid(self.cluster, &config.topic, victim).await
                })
                .await?;
                self.check(
                    moved,
                    format!("every partition led by a live broker without node {victim}"),
                );
                load.run_for(fault).await?;
                self.restart(load, victim, ready).await?;
            }
            Scenario::ControllerKill => {
                let victim = self.cluster.admin().quorum().await?.leader.unwrap_or(1);
                let at = Instant::now();
                self.cluster.kill_node(victim).await?;
                load.mark(at);
                (self.say)(&format!("SIGKILL node {victim}, the active controller"));
                let elected = wait_until(load, Duration::from_secs(60), || async {
                    matches!(self.cluster.admin().quorum().await, Ok(q) if q.leader.is_some_and(|l| l != victim))
                })
                .await?;
                self.check(elected, "another controller elected".to_string());
                load.run_for(fault).await?;
                self.restart(load, victim, ready).await?;
            }
            Scenario::RollingRestart => {
                load.mark(Instant::now());
                for node in self.cluster.nodes() {
                    (self.say)(&format!("SIGTERM node {}", node.id));
                    self.cluster.stop_node(node.id).await?;
                    self.restart(load, node.id, ready).await?;
                }
            }
            Scenario::TwoDown => {
                let victims: Vec<i32> = self.cluster.nodes().iter().skip(1).map(|n| n.id).collect();
                for &victim in &victims {
                    self.cluster.kill_node(victim).await?;
                }
                (self.say)(&format!(
                    "SIGKILL nodes {victims:?}: one broker left, min.insync.replicas=2"
                ));
                // What was in flight at the kill may still be answered.
                load.run_for(Duration::from_secs(3)).await?;
                let before = load.producer();
                load.run_for(fault).await?;
                let after = load.producer();
                self.check(
                    after.acked == before.acked,
                    format!(
                        "nothing acknowledged with two brokers down ({} acks in {fault:?})",
                        after.acked - before.acked
                    ),
                );
                let accepted = after.sent - before.sent;
                self.check(
                    accepted <= load.buffer_records(),
                    format!(
                        "the producer pushed back: {accepted} readings taken in {fault:?} (buffer holds about {})",
                        load.buffer_records()
                    ),
                );
                for &victim in &victims {
                    self.restart(load, victim, ready).await?;
                }
                load.mark(Instant::now());
            }
            Scenario::BrokerHang => {
                let (victim, led) = leader_of_most(self.cluster, &config.topic).await?;
                // Every partition has a replica on the frozen broker, so acks=all
                // waits until Kafka fences it (its session, plus a controller
                // election when it was the controller) and clients time out and
                // move on. The check looks at the time after both.
                let moved_on =
                    self.settings.request_timeout.max(FENCED_AFTER) + Duration::from_secs(2);
                let hang = fault.max(moved_on + Duration::from_secs(8));
                let at = Instant::now();
                self.cluster.pause_node(victim).await?;
                load.mark(at);
                (self.say)(&format!(
                    "SIGSTOP node {victim}, leader of {led} partitions, for {hang:?}"
                ));
                load.run_for(moved_on).await?;
                let before = load.producer();
                load.run_for(hang.saturating_sub(moved_on)).await?;
                let after = load.producer();
                self.check(
                    after.acked > before.acked,
                    format!(
                        "acknowledgements continued while node {victim} was frozen ({} in its last {:?})",
                        after.acked - before.acked,
                        hang.saturating_sub(moved_on)
                    ),
                );
                self.cluster.resume_node(victim).await?;
                (self.say)(&format!("SIGCONT node {victim}"));
                self.wait_replicated(load).await?;
            }
            Scenario::ConsumerKill => {
                let at = Instant::now();
                load.kill_consumer(0).await?;
                load.mark(at);
                (self.say)("SIGKILL consumer process 0");
                let taken_over = load
                    .run_until(Duration::from_secs(90), |l| l.recovery().is_some())
                    .await?;
                self.check(
                    taken_over,
                    "the other member took over every partition".to_string(),
                );
            }
            Scenario::FullRestart => {
                (self.say)("stopping every node (SIGTERM)");
                self.cluster.down(false).await?;
                load.run_for(fault).await?;
                self.cluster.start(ready).await?;
                (self.say)("cluster started again");
                load.mark(Instant::now());
                self.wait_replicated(load).await?;
            }
            Scenario::StorageKill => {
                let storing = self.storing(load).await?;
                self.check(
                    storing,
                    "the storage stage renamed files into place".to_string(),
                );
                let store = self.store.as_mut().expect("started with the load");
                store.kill().await?;
                load.mark(Instant::now());
                (self.say)("SIGKILL the storage process (its open files half written)");
                load.run_for(Duration::from_secs(2)).await?;
                self.start_store(config, load.dir())?;
                (self.say)("storage process started again; it reads from its last commit");
            }
            Scenario::PostgresRestart => {
                let storing = self.storing(load).await?;
                self.check(
                    storing,
                    "the storage stage wrote rows into PostgreSQL".to_string(),
                );
                let server = self.postgres.as_ref().expect("started with the load");
                server.halt().map_err(ChaosError::Log)?;
                load.mark(Instant::now());
                (self.say)(&format!(
                    "PostgreSQL stopped at once (pg_ctl -m immediate) for {fault:?}"
                ));
                load.run_for(fault).await?;
                server.resume().map_err(ChaosError::Log)?;
                (self.say)("PostgreSQL started again");
            }
            // Started before the load; the gateway's scenarios run in [`super::gateway`].
            Scenario::LateCluster
            | Scenario::GatewayOffline
            | Scenario::GatewayKill
            | Scenario::GatewayFull => {}
        }
        Ok(())
    }

    /// Waits up to a minute for the storage stage's first durable readings.
    async fn storing(&self, load: &Load) -> Result<bool, ChaosError> {
        let stored = self.stored_in(load.dir());
        wait_until(load, Duration::from_secs(60), || async {
            audit_store(&stored, &HashMap::new())
                .await
                .is_ok_and(|a| a.rows > 0)
        })
        .await
    }

    /// Where this scenario's storage stage keeps readings.
    fn stored_in(&self, dir: &Path) -> StoredIn {
        match &self.postgres {
            Some(server) => StoredIn::Postgres(server.url()),
            None => StoredIn::Files(stages::data_dir(dir)),
        }
    }

    /// Starts (or starts again) the storage stage; its output goes to `store.log`.
    fn start_store(&mut self, config: &Config, dir: &Path) -> Result<(), ChaosError> {
        let output = dir.join(format!("store-{}.log", usize::from(self.store.is_some())));
        let data = stages::data_dir(dir);
        let mut config = config.clone();
        if let Some(server) = &self.postgres {
            config.store.kind = crate::store::StoreKind::Postgres;
            config.store.postgres_url = Some(server.url());
        }
        self.store = Some(StoreProcess::start(
            &self.settings.binary,
            &config,
            &data,
            &output,
        )?);
        Ok(())
    }

    /// Once the storage stage has stored every acknowledged reading (or the
    /// settle time passed), stops it and checks its files against the acknowledgements.
    async fn judge_store(&mut self, load: &Load, dir: &Path) -> Result<(), ChaosError> {
        let stored = self.stored_in(dir);
        let acked = load.acked_at();
        wait_until(load, self.settings.settle, || async {
            audit_store(&stored, &acked)
                .await
                .is_ok_and(|a| a.missing == 0)
        })
        .await?;
        let stopped = match self.store.as_mut() {
            Some(store) => store.stop(Duration::from_secs(30)).await,
            None => false,
        };
        self.check(
            stopped,
            "the storage process stopped cleanly on SIGTERM".to_string(),
        );
        if self.scenario == Scenario::StorageKill {
            let restarted = std::fs::read_to_string(dir.join("store-1.log")).unwrap_or_default();
            let removed = restarted.matches("never committed; read again").count();
            self.check(
                removed > 0,
                format!(
                    "the restarted storage process removed {removed} half-written files the kill left"
                ),
            );
        }
        let audit = audit_store(&stored, &acked).await?;
        self.check(
            audit.missing == 0,
            format!(
                "every acknowledged reading stored: {} rows for {} acknowledged, {} missing",
                audit.rows,
                acked.len(),
                audit.missing
            ),
        );
        self.check(
            audit.offsets_twice == 0 && audit.readings_twice == 0,
            format!(
                "no reading stored twice: {} offsets and {} device/sequence pairs twice",
                audit.offsets_twice, audit.readings_twice
            ),
        );
        Ok(())
    }

    /// Starts a stopped node and waits until every partition is fully replicated.
    async fn restart(
        &mut self,
        load: &mut Load,
        id: i32,
        ready: Duration,
    ) -> Result<(), ChaosError> {
        self.cluster.start_node(id, ready).await?;
        (self.say)(&format!("node {id} started again"));
        self.wait_replicated(load).await
    }

    async fn wait_replicated(&mut self, load: &mut Load) -> Result<(), ChaosError> {
        let started = Instant::now();
        let full = wait_until(load, Duration::from_secs(120), || async {
            matches!(self.cluster.admin().metadata(None).await,
                Ok(m) if m.brokers.len() == self.cluster.nodes().len() && m.under_replicated().is_empty())
        })
        .await?;
        self.check(
            full,
            format!(
                "every partition's ISR full again ({:.1?})",
                started.elapsed()
            ),
        );
        Ok(())
    }
}

/// Tails the load until `condition` holds (asked twice a second) or `limit` passes.
pub(super) async fn wait_until<F, Fut>(
    load: &Load,
    limit: Duration,
    condition: F,
) -> Result<bool, ChaosError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + limit;
    loop {
        if condition().await {
            return Ok(true);
        }
        if Instant::now() >= until {
            return Ok(false);
        }
        load.run_for(Duration::from_millis(500)).await?;
    }
}

/// The broker leading most partitions of `topic`, and how many it leads.
pub(super) async fn leader_of_most(
    cluster: &LocalCluster,
    topic: &str,
) -> Result<(i32, usize), ChaosError> {
    let metadata = cluster.admin().metadata(Some(&[topic])).await?;
    let mut led: BTreeMap<i32, usize> = BTreeMap::new();
    for partition in metadata
        .topic(topic)
        .map(|t| t.partitions.as_slice())
        .unwrap_or(&[])
    {
        *led.entry(partition.leader).or_default() += 1;
    }
    Ok(led
        .into_iter()
        .max_by_key(|&(id, count)| (count, -id))
        .unwrap_or((1, 0)))
}

/// Whether every partition of `topic` has a leader other than `node`.
pub(super) async fn leaders_avoid(cluster: &LocalCluster, topic: &str, node: i32) -> bool {
    match cluster.admin().metadata(Some(&[topic])).await {
        Ok(metadata) => metadata.topic(topic).is_some_and(|t| {
            t.partitions
                .iter()
                .all(|p| p.leader >= 0 && p.leader != node)
        }),
        Err(_) => false,
    }
}
