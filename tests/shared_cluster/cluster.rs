//! The local cluster is a real 3-node KRaft cluster, as Kafka's own tools see it.

use crate::common;

#[tokio::test]
async fn cluster_has_three_brokers_and_a_quorum_leader_that_kafka_metadata_quorum_confirms() {
    let cluster = common::shared();
    let admin = cluster.admin();

    let metadata = admin.metadata(Some(&[])).await.expect("metadata");
    let broker_ids: Vec<i32> = metadata.brokers.iter().map(|b| b.id).collect();
    assert_eq!(broker_ids, [1, 2, 3]);

    let quorum = admin.quorum().await.expect("quorum");
    let leader = quorum.leader.expect("the quorum has a leader");
    let mut voters = quorum.voters.clone();
    voters.sort();
    assert_eq!(voters, [1, 2, 3]);

    let output = cluster.kafka_tool("kafka-metadata-quorum", &["describe", "--status"]);
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|rest| rest.trim_start_matches(':').trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    // The leader can move between our request and the tool's; both must name a voter,
    // and a stable quorum (the usual case) names the same one.
    let tool_leader: i32 = field("LeaderId").parse().expect("LeaderId is a number");
    assert!(voters.contains(&tool_leader), "{text}");
    if field("LeaderEpoch") == quorum.epoch.to_string() {
        assert_eq!(tool_leader, leader, "{text}");
    }
    let tool_voters = field("CurrentVoters");
    for id in [1, 2, 3] {
        assert!(
            tool_voters.contains(&format!("\"id\": {id}")),
            "{tool_voters}"
        );
    }
    if let Some(expected) = metadata.cluster_id {
        assert_eq!(field("ClusterId"), expected);
    }
}

/// A local cluster's nodes map the class-data archive of Kafka's classes
/// made on its first start, which lets a node start on about half the CPU.
/// (Brokers in containers are not started by us: nothing to check there.)
#[test]
fn every_local_node_maps_the_class_data_archive_made_on_first_use() {
    let cluster = common::shared();
    let Some(local) = cluster.local.as_ref() else {
        return;
    };
    let archive = local.distribution().class_archive();
    assert!(archive.is_file(), "no class-data archive at {archive:?}");
    let archive = archive.to_str().expect("a UTF-8 cache path");
    for node in local.nodes() {
        let pid = local.node_pid(node.id).expect("every node runs");
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("its memory map");
        assert!(
            maps.contains(archive),
            "node {} (pid {pid}) does not map {archive}",
            node.id
        );
    }
}
