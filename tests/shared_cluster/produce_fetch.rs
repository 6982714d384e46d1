//! Records go through rskafka to every partition of an ensured topic and come back intact.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DurationRound, TimeDelta, Utc};
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

#[tokio::test]
async fn a_record_produced_to_every_partition_is_fetched_back_intact() {
    let cluster = common::shared();
    let topic = common::sensor_topic(cluster, "roundtrip").await;

    let client = ClientBuilder::new(cluster.bootstrap.clone())
        .build()
        .await
        .expect("rskafka client");
    for partition in 0..6 {
        let partition_client = client
            .partition_client(&topic, partition, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        // Kafka keeps timestamps in milliseconds.
        let timestamp = Utc::now()
            .duration_trunc(TimeDelta::milliseconds(1))
            .unwrap();
        let record = Record {
            key: Some(format!("device-{partition}").into_bytes()),
            value: Some(format!(r#"{{"partition":{partition},"value":21.5}}"#).into_bytes()),
            headers: BTreeMap::from([("schema".to_string(), b"1".to_vec())]),
            timestamp,
        };
        let compression = if partition % 2 == 0 {
            Compression::NoCompression
        } else {
            Compression::Gzip
        };
        let offsets = tokio::time::timeout(
            Duration::from_secs(30),
            partition_client.produce(vec![record.clone()], compression),
        )
        .await
        .expect("produce within 30 s")
        .expect("produce acknowledged");
        assert_eq!(offsets.len(), 1);

        let (records, high_watermark) = tokio::time::timeout(
            Duration::from_secs(30),
            partition_client.fetch_records(offsets[0], 1..1_000_000, 1_000),
        )
        .await
        .expect("fetch within 30 s")
        .expect("fetch");
        assert_eq!(high_watermark, offsets[0] + 1);
        assert_eq!(records.len(), 1, "partition {partition}");
        assert_eq!(records[0].offset, offsets[0]);
        assert_eq!(records[0].record, record, "partition {partition}");
    }
}
