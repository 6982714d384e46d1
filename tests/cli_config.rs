//! Bad configuration stops the binary with status 2 and one line naming the variable.

use std::process::{Command, Output};

const VARIABLES: &[&str] = &[
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_TOPIC_NAME",
    "KAFKA_CONSUMER_GROUP_ID",
    "KAFKA_AUTO_OFFSET_RESET",
    "KAFKA_REPLICATION_FACTOR",
    "KAFKA_PARTITIONS",
    "KAFKA_MIN_INSYNC_REPLICAS",
    "IOT_NUM_DEVICES",
    "IOT_DATA_INTERVAL_SEC",
    "IOT_DEVICE_TYPES",
    "IOT_ANOMALY_PROBABILITY",
    "IOT_SIMULATOR_SEED",
    "LOG_LEVEL",
    "ENVIRONMENT",
    "METROCLOUD_LOG_DIR",
    "RUST_LOG",
    "KAFKA_PRODUCER_LINGER_MS",
    "KAFKA_PRODUCER_BATCH_BYTES",
    "KAFKA_PRODUCER_BUFFER_BYTES",
    "KAFKA_PRODUCER_COMPRESSION",
    "KAFKA_PRODUCER_DELIVERY_TIMEOUT_MS",
    "KAFKA_PRODUCER_REQUEST_TIMEOUT_MS",
    "KAFKA_PRODUCER_RETRY_BACKOFF_MS",
    "KAFKA_PRODUCER_RETRY_BACKOFF_MAX_MS",
    "KAFKA_CONSUMER_COMMIT_INTERVAL_MS",
    "KAFKA_CONSUMER_FETCH_MAX_BYTES",
    "KAFKA_CONSUMER_FETCH_MAX_WAIT_MS",
    "KAFKA_CONSUMER_REQUEST_TIMEOUT_MS",
    "KAFKA_CONSUMER_REBALANCE_TIMEOUT_MS",
    "KAFKA_STARTUP_WAIT_SEC",
    "KAFKA_ALERTS_TOPIC",
    "KAFKA_DLQ_TOPIC",
    "ALERT_TEMPERATURE_HIGH_C",
    "ALERT_TEMPERATURE_LOW_C",
    "ALERT_HUMIDITY_HIGH_PCT",
    "ALERT_PRESSURE_LOW_HPA",
    "ALERT_LIGHT_LOW_LUX",
    "ALERT_BATTERY_LOW_PCT",
    "ALERT_DEVICE_SILENT_SEC",
    "ALERT_COOLDOWN_SEC",
];

/// Runs `metrocloud ARGS` with only the given configuration variables set.
fn metrocloud(vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_metrocloud"));
    for variable in VARIABLES {
        command.env_remove(variable);
    }
    command.envs(vars.iter().copied()).args(args);
    command.output().expect("run metrocloud")
}

#[test]
fn each_bad_value_exits_with_status_2_and_one_line_naming_variable_and_value() {
    let cases = [
        ("IOT_ANOMALY_PROBABILITY", "1.5", "between 0.0 and 1.0"),
        ("KAFKA_PARTITIONS", "0", "whole number from 1"),
        (
            "IOT_DEVICE_TYPES",
            "temperature,thermostat",
            "temperature, humidity",
        ),
        ("KAFKA_BOOTSTRAP_SERVERS", "localhost", "host:port"),
        ("KAFKA_BOOTSTRAP_SERVERS", "broker one:9092", "host:port"),
        ("KAFKA_AUTO_OFFSET_RESET", "sometimes", "earliest, latest"),
        ("IOT_DATA_INTERVAL_SEC", "0", "greater than 0"),
        ("KAFKA_REPLICATION_FACTOR", "three", "whole number"),
        ("LOG_LEVEL", "LOUD", "INFO"),
    ];
    for (variable, value, allowed) in cases {
        let output = metrocloud(&[(variable, value)], &["config"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{variable}={value}: {stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!("{variable}=\"{value}\"")),
            "{stderr}"
        );
        assert!(stderr.contains(allowed), "{variable}: {stderr}");
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn bad_configuration_stops_every_command_before_it_does_anything() {
    let output = metrocloud(&[("KAFKA_PARTITIONS", "-1")], &["topics", "ensure"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("KAFKA_PARTITIONS"));
}

#[test]
fn config_prints_the_original_designs_defaults_and_the_values_given() {
    let output = metrocloud(&[], &["config"]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "KAFKA_BOOTSTRAP_SERVERS=localhost:29092,localhost:29093,localhost:29094",
        "KAFKA_TOPIC_NAME=iot-sensor-data",
        "KAFKA_CONSUMER_GROUP_ID=iot-data-consumer",
        "KAFKA_AUTO_OFFSET_RESET=earliest",
        "KAFKA_REPLICATION_FACTOR=3",
        "KAFKA_PARTITIONS=6",
        "IOT_NUM_DEVICES=8",
        "IOT_DATA_INTERVAL_SEC=1",
        "IOT_DEVICE_TYPES=temperature,humidity,pressure,motion,light",
        "IOT_ANOMALY_PROBABILITY=0.05",
        "LOG_LEVEL=INFO",
    ] {
        assert!(
            stdout.lines().any(|l| l == expected),
            "missing {expected} in\n{stdout}"
        );
    }

    let output = metrocloud(
        &[("IOT_NUM_DEVICES", "100000"), ("IOT_DEVICE_TYPES", "light")],
        &["config"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("IOT_NUM_DEVICES=100000\n"), "{stdout}");
    assert!(stdout.contains("IOT_DEVICE_TYPES=light\n"), "{stdout}");
}

#[test]
fn every_variable_is_listed_in_env_example() {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example"))
        .expect(".env.example");
    let output = metrocloud(&[], &["config"]);
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let variable = line.split('=').next().unwrap();
        assert!(
            example.lines().any(|l| l
                .trim_start_matches("# ")
                .starts_with(&format!("{variable}="))),
            "{variable} is missing from .env.example"
        );
    }
}

#[test]
fn production_writes_json_log_lines_to_the_log_directory() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("logs");
    let output = metrocloud(
        &[
            ("ENVIRONMENT", "production"),
            ("METROCLOUD_LOG_DIR", log_dir.to_str().unwrap()),
            ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1"),
        ],
        &["topics", "describe"],
    );
    assert_eq!(output.status.code(), Some(1), "no broker listens on port 1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    let files: Vec<_> = std::fs::read_dir(&log_dir).unwrap().flatten().collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().to_string_lossy().into_owned();
    assert!(
        name.starts_with("metrocloud.") && name.ends_with(".log"),
        "{name}"
    );
    let text = std::fs::read_to_string(files[0].path()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    let error = lines
        .iter()
        .find(|line| line["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR line in {text}"));
    assert!(
        error["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:1")
    );
    assert_eq!(error["fields"]["exit_status"], 1);
    assert_eq!(
        stderr.lines().count(),
        1,
        "the console shows the error once: {stderr}"
    );
}

#[test]
fn a_cluster_that_never_answers_is_waited_for_with_log_lines_then_given_up_with_status_1() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let bootstrap = format!("127.0.0.1:{port}");
    for command in ["consume", "produce"] {
        let output = metrocloud(
            &[
                ("KAFKA_BOOTSTRAP_SERVERS", &bootstrap),
                ("KAFKA_STARTUP_WAIT_SEC", "3"),
            ],
            &[command],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{command}: {stderr}");
        assert!(
            stderr.contains(&format!("waiting for Kafka at {bootstrap} (attempt 1")),
            "{command}: {stderr}"
        );
        assert!(
            stderr.contains("Kafka was not ready within KAFKA_STARTUP_WAIT_SEC (3s)"),
            "{command}: {stderr}"
        );
    }
}
