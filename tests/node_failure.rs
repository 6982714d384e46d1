//! A crashed node shows as down, a restarted one catches up with no partition left behind,
//! and a node restarts while another is still down.
//! This binary breaks its cluster on purpose, so it has one of its own.

mod common;

use std::time::Duration;

use metrocloud::cluster::ProcessState;
use metrocloud::kafka::topics::{TopicSpec, ensure_topic};

#[tokio::test]
async fn killed_node_shows_down_restarted_node_catches_up_and_paused_node_shows_paused() {
    let cluster = common::dedicated();
    let local = cluster.local();
    let admin = cluster.admin();
    let spec = TopicSpec {
        name: common::unique_topic("failover"),
        partitions: 6,
        replication_factor: 3,
        min_insync_replicas: 2,
    };
    ensure_topic(&admin, &spec).await.expect("topic created");

    let before = local.status().await;
    assert!(
        before
            .nodes
            .iter()
            .all(|n| n.process == ProcessState::Running && n.registered)
    );
    assert!(before.under_replicated.is_empty());

    local.kill_node(2).await.expect("kill node 2");

    common::eventually(
        Duration::from_secs(60),
        "node 2 is down and unregistered",
        || async {
            let status = local.status().await;
            let node = |id: i32| {
                status
                    .nodes
                    .iter()
                    .find(|n| n.spec.id == id)
                    .cloned()
                    .unwrap()
            };
            node(2).process == ProcessState::Down
                && !node(2).registered
                && [1, 3]
                    .iter()
                    .all(|&id| node(id).process == ProcessState::Running && node(id).registered)
        },
    )
    .await;
    let during = local.status().await;
    let leader = during.quorum.as_ref().and_then(|q| q.leader);
    assert!(
        matches!(leader, Some(1) | Some(3)),
        "quorum leader {leader:?}"
    );
    assert!(
        during
            .under_replicated
            .iter()
            .any(|(topic, _)| *topic == spec.name),
        "with a replica gone, the topic's partitions are under-replicated"
    );

    local
        .start_node(2, Duration::from_secs(120))
        .await
        .expect("start node 2");

    common::eventually(
        Duration::from_secs(120),
        "no partition is under-replicated",
        || async {
            let status = local.status().await;
            status.unreachable.is_none()
                && status
                    .nodes
                    .iter()
                    .all(|n| n.process == ProcessState::Running && n.registered)
                && status.under_replicated.is_empty()
        },
    )
    .await;
    let metadata = admin
        .metadata(Some(&[spec.name.as_str()]))
        .await
        .expect("metadata");
    for partition in &metadata.topic(&spec.name).expect("topic").partitions {
        let mut isr = partition.isr.clone();
        isr.sort();
        assert_eq!(isr, [1, 2, 3], "partition {}", partition.partition);
    }

    // A frozen node (SIGSTOP), as a hung broker is, shows as paused until resumed.
    local.pause_node(3).await.expect("pause node 3");
    assert_eq!(local.process_state(3).unwrap(), ProcessState::Paused);
    local.resume_node(3).await.expect("resume node 3");
    assert_eq!(local.process_state(3).unwrap(), ProcessState::Running);

    // Two nodes down: one of them restarts while the other is still down
    // (the quorum needs only the two running voters), then the other.
    local.kill_node(1).await.expect("kill node 1");
    local.kill_node(3).await.expect("kill node 3");
    local
        .start_node(1, Duration::from_secs(120))
        .await
        .expect("node 1 starts while node 3 is still down");
    assert_eq!(local.process_state(3).unwrap(), ProcessState::Down);
    local
        .start_node(3, Duration::from_secs(120))
        .await
        .expect("start node 3");
    let status = local.status().await;
    assert!(
        status
            .nodes
            .iter()
            .all(|n| n.process == ProcessState::Running && n.registered),
        "{:?}",
        status.nodes
    );
}
