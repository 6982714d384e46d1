use super::*;

fn error_for(variable: &str, value: &str) -> String {
    Config::from_vars([(variable, value)])
        .expect_err("value must be refused")
        .to_string()
}

#[test]
fn defaults_are_the_original_designs() {
    let config = Config::from_vars(Vec::<(String, String)>::new()).unwrap();
    assert_eq!(config.topic, "iot-sensor-data");
    assert_eq!(config.consumer_group_id, "iot-data-consumer");
    assert_eq!(config.auto_offset_reset, OffsetReset::Earliest);
    assert_eq!(config.replication_factor, 3);
    assert_eq!(config.partitions, 6);
    assert_eq!(config.min_insync_replicas, 2);
    assert_eq!(config.num_devices, 8);
    assert_eq!(config.data_interval, Duration::from_secs(1));
    assert_eq!(config.device_types, DeviceType::ALL.to_vec());
    assert_eq!(config.anomaly_probability, 0.05);
    assert_eq!(config.log_level, LogLevel::Info);
    assert_eq!(
        config.bootstrap_strings(),
        ["localhost:29092", "localhost:29093", "localhost:29094"]
    );
}

#[test]
fn each_bad_value_names_its_variable_value_and_what_is_allowed() {
    let message = error_for("IOT_ANOMALY_PROBABILITY", "1.5");
    assert!(
        message.contains("IOT_ANOMALY_PROBABILITY=\"1.5\""),
        "{message}"
    );
    assert!(message.contains("between 0.0 and 1.0"), "{message}");

    assert!(error_for("KAFKA_PARTITIONS", "0").contains("KAFKA_PARTITIONS=\"0\""));
    assert!(error_for("IOT_DEVICE_TYPES", "temperature,thermostat").contains("humidity"));
    assert!(error_for("KAFKA_BOOTSTRAP_SERVERS", "localhost").contains("host:port"));
    assert!(error_for("KAFKA_BOOTSTRAP_SERVERS", "a:99999").contains("host:port"));
    assert!(error_for("KAFKA_AUTO_OFFSET_RESET", "sometimes").contains("earliest, latest"));
    assert!(error_for("IOT_DATA_INTERVAL_SEC", "-1").contains("greater than 0"));
    assert!(error_for("LOG_LEVEL", "LOUD").contains("LOG_LEVEL"));
    assert!(error_for("IOT_SIMULATOR_SEED", "-3").contains("random seed"));
    assert!(error_for("KAFKA_PRODUCER_COMPRESSION", "lz4").contains("need C"));
    assert!(error_for("KAFKA_PRODUCER_LINGER_MS", "soon").contains("KAFKA_PRODUCER_LINGER_MS"));
    assert!(error_for("KAFKA_TOPIC_NAME", "a topic").contains("KAFKA_TOPIC_NAME"));
}

#[test]
fn lists_are_trimmed_and_python_level_names_accepted() {
    let config = Config::from_vars([
        ("KAFKA_BOOTSTRAP_SERVERS", " 127.0.0.1:9092 , [::1]:9093 "),
        ("IOT_DEVICE_TYPES", "Light, motion,light"),
        ("LOG_LEVEL", "critical"),
    ])
    .unwrap();
    assert_eq!(config.bootstrap_strings(), ["127.0.0.1:9092", "[::1]:9093"]);
    assert_eq!(
        config.device_types,
        [DeviceType::Light, DeviceType::Motion].to_vec()
    );
    assert_eq!(config.log_level, LogLevel::Error);
}

#[test]
fn a_value_given_is_told_apart_from_the_default_even_when_equal() {
    let defaulted = Config::from_vars(Vec::<(String, String)>::new()).unwrap();
    assert!(!defaulted.is_given("KAFKA_BOOTSTRAP_SERVERS"));
    let given = Config::from_vars([(
        "KAFKA_BOOTSTRAP_SERVERS",
        "localhost:29092,localhost:29093,localhost:29094",
    )])
    .unwrap();
    assert!(given.is_given("KAFKA_BOOTSTRAP_SERVERS"));
    assert_eq!(given.bootstrap_servers, defaulted.bootstrap_servers);
}

#[test]
fn the_dead_letter_topic_follows_the_topic_unless_given() {
    let config = Config::from_vars([("KAFKA_TOPIC_NAME", "plant-7")]).unwrap();
    assert_eq!(config.dlq_topic, "plant-7-dlq");
    let config =
        Config::from_vars([("KAFKA_TOPIC_NAME", "plant-7"), ("KAFKA_DLQ_TOPIC", "bad")]).unwrap();
    assert_eq!(config.dlq_topic, "bad");
}

#[test]
fn every_declared_default_parses_and_prints_back_as_declared() {
    let config = Config::default();
    for setting in SETTINGS {
        if setting.derived.is_some() || setting.secret {
            continue;
        }
        let shown = (setting.show)(&config);
        assert!(
            shown == setting.default,
            "{}: declared {:?}, printed {shown:?}",
            setting.name,
            setting.default
        );
    }
}

#[test]
fn set_checks_the_value_like_the_environment_does() {
    let mut config = Config::default();
    config
        .set("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092,127.0.0.1:9093")
        .unwrap();
    assert!(config.is_given("KAFKA_BOOTSTRAP_SERVERS"));
    assert_eq!(config.bootstrap_strings().len(), 2);
    let error = config
        .set("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1")
        .unwrap_err()
        .to_string();
    assert!(error.contains("host:port"), "{error}");
}

#[test]
fn an_unset_token_is_no_token_and_an_empty_one_is_kept_to_be_refused() {
    assert_eq!(Config::default().console_token, None);
    let config = Config::from_vars([("METROCLOUD_CONSOLE_TOKEN", "")]).unwrap();
    assert_eq!(config.console_token.as_deref(), Some(""));
}
