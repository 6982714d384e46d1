use super::*;

fn names() -> PipelineNames {
    PipelineNames {
        readings: "iot-sensor-data".into(),
        alerts: "iot-alerts".into(),
        dead_letters: "iot-sensor-data-dlq".into(),
        aggregates: "iot-sensor-aggregates".into(),
        consumer_group: "iot-data-consumer".into(),
        aggregate_group: "iot-aggregator".into(),
        store_groups: ["iot-storage".into(), "iot-storage-aggregates".into()],
    }
}

fn allowed(user: Principal, resource: AclResource, name: &str, operation: AclOperation) -> bool {
    acl_plan(&names()).iter().any(|e| {
        e.user == user.name()
            && e.resource == resource
            && e.name == name
            && e.operation == operation
    })
}

#[test]
fn the_producer_may_write_and_describe_the_readings_and_nothing_else() {
    let plan = acl_plan(&names());
    let producer: Vec<&AclEntry> = plan.iter().filter(|e| e.user == "producer").collect();
    assert!(
        producer
            .iter()
            .all(|e| e.resource == AclResource::Topic && e.name == "iot-sensor-data")
    );
    assert!(allowed(
        Principal::Producer,
        AclResource::Topic,
        "iot-sensor-data",
        AclOperation::Write
    ));
    assert!(!allowed(
        Principal::Producer,
        AclResource::Topic,
        "iot-sensor-data",
        AclOperation::Read
    ));
}

#[test]
fn the_consumer_reads_readings_in_its_group_and_writes_only_alerts_and_dead_letters() {
    use AclOperation::*;
    assert!(allowed(
        Principal::Consumer,
        AclResource::Topic,
        "iot-sensor-data",
        Read
    ));
    assert!(allowed(
        Principal::Consumer,
        AclResource::Group,
        "iot-data-consumer",
        Read
    ));
    assert!(!allowed(
        Principal::Consumer,
        AclResource::Topic,
        "iot-sensor-data",
        Write
    ));
    assert!(allowed(
        Principal::Consumer,
        AclResource::Topic,
        "iot-alerts",
        Write
    ));
    assert!(allowed(
        Principal::Consumer,
        AclResource::Topic,
        "iot-sensor-data-dlq",
        Write
    ));
    assert!(!allowed(
        Principal::Consumer,
        AclResource::Group,
        "iot-storage",
        Read
    ));
}

#[test]
fn the_console_writes_nothing_and_joins_no_group() {
    let plan = acl_plan(&names());
    let console: Vec<&AclEntry> = plan.iter().filter(|e| e.user == "console").collect();
    assert!(!console.is_empty());
    assert!(console.iter().all(|e| e.operation != AclOperation::Write));
    assert!(
        console
            .iter()
            .filter(|e| e.resource == AclResource::Group)
            .all(|e| e.operation == AclOperation::Describe)
    );
}

#[test]
fn the_gateway_writes_readings_and_dead_letters_and_reads_nothing() {
    let plan = acl_plan(&names());
    let gateway: Vec<&AclEntry> = plan.iter().filter(|e| e.user == "gateway").collect();
    let topics: std::collections::BTreeSet<&str> =
        gateway.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        topics,
        ["iot-sensor-data", "iot-sensor-data-dlq"]
            .into_iter()
            .collect()
    );
    assert!(gateway.iter().all(|e| e.resource == AclResource::Topic));
    assert!(gateway.iter().all(|e| e.operation != AclOperation::Read));
    for topic in topics {
        assert!(allowed(
            Principal::Gateway,
            AclResource::Topic,
            topic,
            AclOperation::Write
        ));
    }
}

#[test]
fn admin_has_no_entries_since_it_is_the_super_user() {
    assert!(acl_plan(&names()).iter().all(|e| e.user != "admin"));
}

#[test]
fn passwords_are_random_letters_and_digits_that_scram_arguments_can_carry() {
    let a = random_password();
    assert_eq!(a.len(), 24);
    assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(a, random_password());
}

#[test]
fn secrets_are_written_for_their_owner_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.password");
    write_private(&file, "secret").unwrap();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(write_private(&file, "again").is_err(), "never overwritten");
}

#[test]
fn every_user_gets_both_scram_hashes_and_the_brokers_speak_sasl_on_both_client_ports() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
    for principal in Principal::ALL {
        write_private(
            &password_file(dir.path(), principal),
            &format!("pw-{}", principal.name()),
        )
        .unwrap();
    }
    write_private(&keystore_password_file(dir.path()), "store").unwrap();
    let args = scram_arguments(dir.path()).unwrap();
    assert_eq!(args.len(), Principal::ALL.len() * 2 * 2);
    assert!(args.contains(&"SCRAM-SHA-256=[name=consumer,password=pw-consumer]".to_string()));
    let node = NodeSpec {
        id: 1,
        client_port: 19092,
        controller_port: Some(19192),
        sasl_port: Some(19292),
    };
    let text = broker_properties(dir.path(), &node, 19292).unwrap();
    assert!(text.contains("listeners=SASL_SSL://127.0.0.1:19092,SASL_PLAINTEXT://127.0.0.1:19292,CONTROLLER://127.0.0.1:19192\n"), "{text}");
    assert!(text.contains("allow.everyone.if.no.acl.found=false"));
    assert!(text.contains("super.users=User:admin\n"));
}
