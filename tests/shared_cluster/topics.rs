//! `topics ensure` creates the sensor topic durable, once, and refuses or reports what is not.

use crate::common;

use metrocloud::kafka::topics::{Ensured, TopicError, TopicSpec, describe_topic, ensure_topic};

fn spec(name: &str) -> TopicSpec {
    TopicSpec {
        name: name.to_string(),
        partitions: 6,
        replication_factor: 3,
        min_insync_replicas: 2,
    }
}

#[tokio::test]
async fn ensure_twice_gives_one_topic_with_6_partitions_rf_3_and_min_isr_2_as_kafka_topics_shows() {
    let cluster = common::shared();
    let admin = cluster.admin();
    let topic = common::unique_topic("ensure");

    assert_eq!(
        ensure_topic(&admin, &spec(&topic)).await.unwrap(),
        Ensured::Created
    );
    assert_eq!(
        ensure_topic(&admin, &spec(&topic)).await.unwrap(),
        Ensured::AlreadyExisted { notes: vec![] }
    );

    let description = describe_topic(&admin, &topic).await.unwrap();
    assert_eq!(description.info.partitions.len(), 6);
    assert_eq!(description.info.replication_factor(), 3);
    assert_eq!(description.min_insync_replicas(), Some(2));

    let output = cluster.kafka_tool("kafka-topics", &["--describe", "--topic", &topic]);
    let text = String::from_utf8_lossy(&output.stdout);
    let summary = text.lines().next().expect("summary line");
    assert!(summary.contains("PartitionCount: 6"), "{summary}");
    assert!(summary.contains("ReplicationFactor: 3"), "{summary}");
    assert!(summary.contains("min.insync.replicas=2"), "{summary}");
    let partition_lines = text.lines().filter(|l| l.contains("Partition: ")).count();
    assert_eq!(partition_lines, 6, "{text}");

    let listed = cluster.kafka_tool("kafka-topics", &["--list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(listed.lines().filter(|l| *l == topic).count(), 1);
}

#[tokio::test]
async fn unsafe_replication_settings_are_refused_and_create_nothing() {
    let cluster = common::shared();
    let admin = cluster.admin();
    for (replication_factor, min_insync_replicas) in [(1, 1), (2, 2), (2, 1), (3, 4), (3, 1)] {
        let topic = common::unique_topic("unsafe");
        let unsafe_spec = TopicSpec {
            replication_factor,
            min_insync_replicas,
            ..spec(&topic)
        };
        let error = ensure_topic(&admin, &unsafe_spec).await.unwrap_err();
        assert!(
            matches!(error, TopicError::Unsafe { .. }),
            "rf {replication_factor}, min isr {min_insync_replicas}: {error}"
        );
        assert!(error.to_string().contains(&topic));
        let metadata = admin.metadata(Some(&[topic.as_str()])).await.unwrap();
        assert!(
            metadata.topic(&topic).is_none(),
            "{topic} must not be created"
        );
    }
}

#[tokio::test]
async fn existing_topic_with_fewer_partitions_or_weaker_min_isr_is_reported() {
    let cluster = common::shared();
    let admin = cluster.admin();

    let few = common::unique_topic("few-partitions");
    admin.create_topic(&few, 3, 3, &[]).await.unwrap();
    let error = ensure_topic(&admin, &spec(&few)).await.unwrap_err();
    let TopicError::Mismatch { problems, .. } = &error else {
        panic!("expected a mismatch, got {error}");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("3 partitions, 6 configured"),
        "{error}"
    );

    let weak = common::unique_topic("weak-isr");
    admin
        .create_topic(&weak, 6, 3, &[("min.insync.replicas", "1".to_string())])
        .await
        .unwrap();
    let error = ensure_topic(&admin, &spec(&weak)).await.unwrap_err();
    assert!(
        error.to_string().contains("min.insync.replicas is 1"),
        "{error}"
    );

    let wider = common::unique_topic("more-partitions");
    admin.create_topic(&wider, 8, 3, &[]).await.unwrap();
    let Ensured::AlreadyExisted { notes } = ensure_topic(&admin, &spec(&wider)).await.unwrap()
    else {
        panic!("an existing topic is not created again");
    };
    assert!(
        notes.iter().any(|n| n.contains("8 partitions")),
        "{notes:?}"
    );
}

/// `metrocloud health` with only the given variables set besides the bootstrap servers.
fn health(bootstrap: &str, topic: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_metrocloud"))
        .arg("health")
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
        .env("KAFKA_TOPIC_NAME", topic)
        .env_remove("RUST_LOG")
        .output()
        .expect("run metrocloud health")
}

#[tokio::test]
async fn health_passes_once_the_sensor_topic_exists_and_fails_before_and_without_kafka() {
    let cluster = common::shared();
    let topic = common::unique_topic("health");

    let missing = health(&cluster.bootstrap_list(), &topic);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains(&format!("unhealthy: topic {topic} does not exist")),
        "{stderr}"
    );

    ensure_topic(&cluster.admin(), &spec(&topic)).await.unwrap();
    let healthy = health(&cluster.bootstrap_list(), &topic);
    let stdout = String::from_utf8_lossy(&healthy.stdout);
    assert!(
        healthy.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "healthy: 3 brokers, topic {topic} with 6 partitions, all led"
        )),
        "{stdout}"
    );

    // Nothing listens on port 1: a clear failure, not a hang.
    let started = std::time::Instant::now();
    let unreachable = health("127.0.0.1:1", &topic);
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("unhealthy:"));
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}
