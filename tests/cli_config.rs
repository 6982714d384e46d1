//! Bad configuration stops the binary with status 2 and one line naming the
//! variable; bad input to `metrocloud detect` does so naming the line.

use std::process::{Command, Output};

use metrocloud::config::SETTINGS;

/// Runs `metrocloud ARGS` with only the given configuration variables set.
fn metrocloud(vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_metrocloud"));
    for setting in SETTINGS {
        command.env_remove(setting.name);
    }
    command.envs(vars.iter().copied()).args(args);
    command.output().expect("run metrocloud")
}

#[test]
fn each_bad_value_exits_with_status_2_and_one_line_naming_variable_and_value() {
    let cases = [
        ("IOT_ANOMALY_PROBABILITY", "1.5", "between 0.0 and 1.0"),
        ("KAFKA_PARTITIONS", "0", "whole number from 1"),
        ("DETECT_SILENCE_GAPS", "1", "above 1"),
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
fn env_example_and_the_readme_table_are_made_from_the_declarations() {
    let root = env!("CARGO_MANIFEST_DIR");
    let example = std::fs::read_to_string(format!("{root}/.env.example")).expect(".env.example");
    let output = metrocloud(&[], &["config", "--example"]);
    assert!(output.status.success());
    assert_eq!(
        example,
        String::from_utf8_lossy(&output.stdout),
        ".env.example is out of step: regenerate it with `metrocloud config --example > .env.example`"
    );
    for setting in SETTINGS {
        assert!(
            example.contains(&format!("\n{}=", setting.name))
                || example.contains(&format!("\n# {}=", setting.name)),
            "{} is missing from .env.example",
            setting.name
        );
    }

    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let output = metrocloud(&[], &["config", "--markdown"]);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        readme.contains(table.as_ref()),
        "the README's settings table is out of step: replace it with `metrocloud config --markdown`"
    );
}

#[test]
fn every_variable_is_printed_by_config_except_the_secret_which_is_only_said_to_be_set() {
    let output = metrocloud(&[("METROCLOUD_CONSOLE_TOKEN", "s3cret")], &["config"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    for setting in SETTINGS.iter().filter(|s| !s.secret) {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{}=", setting.name))),
            "{} is missing from `metrocloud config`:\n{stdout}",
            setting.name
        );
    }
    assert!(!stdout.contains("s3cret"), "{stdout}");
    assert!(
        stdout.contains("# METROCLOUD_CONSOLE_TOKEN is set (not shown)"),
        "{stdout}"
    );
}

#[test]
fn variables_the_console_and_cluster_read_are_checked_like_the_others() {
    for (variable, value, allowed) in [
        ("METROCLOUD_CONSOLE_ADDR", "localhost", "address and port"),
        ("METROCLOUD_KAFKA_HEAP", "", "non-empty"),
    ] {
        let output = metrocloud(&[(variable, value)], &["config"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{variable}: {stderr}");
        assert!(
            stderr.contains(&format!("{variable}=\"{value}\"")) && stderr.contains(allowed),
            "{stderr}"
        );
    }
    let output = metrocloud(
        &[("METROCLOUD_CONSOLE_ADDR", "0.0.0.0:18099")],
        &["console"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("METROCLOUD_CONSOLE_TOKEN"), "{stderr}");
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

#[test]
fn history_piped_into_a_reader_that_stops_early_ends_with_status_0() {
    use std::io::{BufRead, BufReader};
    use std::sync::Arc;
    use std::time::Duration;

    use metrocloud::sensor::simulator::Fleet;
    use metrocloud::store::row::Origin;
    use metrocloud::store::{ParquetStore, StoreSettings, StoreStats};

    // 6,000 stored readings of one device: far more output than a pipe holds.
    let data = tempfile::tempdir().unwrap();
    let config = metrocloud::config::Config::from_vars([("IOT_NUM_DEVICES", "1")]).unwrap();
    let start = chrono::Utc::now() - chrono::TimeDelta::hours(2);
    let mut fleet = Fleet::new(&config.simulator_settings(), start);
    let settings = StoreSettings {
        data_dir: data.path().to_path_buf(),
        ..StoreSettings::default()
    };
    let mut store = ParquetStore::open(
        &settings,
        "iot-sensor-data",
        Arc::new(StoreStats::default()),
    )
    .unwrap();
    let mut device = String::new();
    for offset in 0..6_000 {
        let reading = fleet.next_due(Duration::from_secs(6_000)).unwrap();
        device = reading.device_id.clone();
        store
            .append(
                &reading,
                Origin {
                    partition: 0,
                    offset,
                },
            )
            .unwrap();
    }
    store.roll(true).unwrap();
    drop(store);

    let mut child = Command::new(env!("CARGO_BIN_EXE_metrocloud"))
        .args(["history", &device, "--from", "3h"])
        .env("METROCLOUD_DATA_DIR", data.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(
        first.starts_with(&format!("{device}: 6000 stored readings")),
        "{first}"
    );
    // The reader goes away, as `head -1` does.
    let output = child.wait_with_output().unwrap();
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {errors}", output.status);
    assert!(!errors.contains("panicked"), "{errors}");
}

/// A day of one reading a minute around 20 °C, with a 2 °C shift from row 600 to 659.
fn series_with_a_shift() -> String {
    let mut text = String::from("timestamp,value,label\n");
    for i in 0..1440_i64 {
        let noise = ((i * 7919) % 13) as f64 / 13.0 - 0.5;
        let (value, label) = if (600..660).contains(&i) {
            (22.0 + 0.3 * noise, 1)
        } else {
            (20.0 + 0.3 * noise, 0)
        };
        text.push_str(&format!("{},{value:.2},{label}\n", 1_780_000_000 + 60 * i));
    }
    text
}

#[test]
fn detect_scores_every_row_of_a_csv_file_and_names_the_alerts() {
    let dir = std::env::temp_dir().join(format!("metrocloud-detect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("series.csv");
    std::fs::write(&input, series_with_a_shift()).unwrap();
    let output = metrocloud(&[], &["detect", "--csv", input.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "timestamp,value,anomaly_score");
    assert_eq!(lines.len(), 1 + 1440);
    assert!(
        lines[601].starts_with(&format!("{},", 1_780_000_000 + 60 * 600)),
        "{}",
        lines[601]
    );
    assert!(lines[601].ends_with(",1.0000"), "{}", lines[601]);
    assert!(stderr.contains("1440 rows scored"), "{stderr}");
    // Row 601: the second shifted reading confirms the jump.
    assert!(
        stderr.contains("alert level_shift at 2026-05-29T06:27:40+00:00"),
        "{stderr}"
    );
    assert!(
        stderr.contains("labels: 1 anomalous episodes, 1 found, 0 alerts outside any"),
        "{stderr}"
    );

    // The detector's settings come from the environment, as the pipeline's do.
    let output = metrocloud(
        &[("DETECT_WARMUP_READINGS", "100000")],
        &["detect", "--csv", input.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(", 0 alerts"), "{stderr}");

    std::fs::write(
        &input,
        "2026-06-01T00:00:00Z,20.1\n2026-06-01T00:01:00Z,warm\n",
    )
    .unwrap();
    let output = metrocloud(&[], &["detect", "--csv", input.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("series.csv: line 2: \"warm\" is not a number"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
