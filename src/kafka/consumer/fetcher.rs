//! One task per owned partition, fetching records in order into the consumer's queue.
//!
//! A fetcher long-polls its partition's leader with Fetch requests of its own
//! (kafka-protocol), on a connection of its own: a broker answers one request
//! per connection at a time, and the long poll of a quiet partition would hold
//! up the fetches of every other partition on a shared connection. Records are
//! decoded as slices of the response, so key, value and headers are never
//! copied, and the connection reads its next response into the same memory
//! once the records of the last ones are processed. (Decoding every record
//! into allocations of its own, as rskafka does, made the static musl build
//! read at 0.62x of Kafka's consumer: its allocator, not the network, was the
//! limit.)
//!
//! Each batch goes to the consumer over a bounded channel: when processing is
//! slower than fetching, the channel fills and the fetcher waits, so memory
//! stays bounded. Errors that pass (a leader change, a broker gone) are
//! retried with backoff, with the leader looked up again; a position outside
//! the log is reset as `KAFKA_AUTO_OFFSET_RESET` says.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::DateTime;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ConsumedRecord, OffsetReset};
use crate::kafka::admin::{AdminClient, BrokerConnection, OffsetAt, Timeouts};
use crate::kafka::headers::Headers;
use crate::kafka::retry::Backoff;
use crate::kafka::security::Brokers;

/// The client id fetch connections give.
const CLIENT_ID: &str = "metrocloud-consumer";
/// The highest Fetch version used: version 13 names topics by id instead of name.
const MAX_FETCH_VERSION: i16 = 12;

/// Records fetched from one partition, in offset order.
#[derive(Debug)]
pub struct FetchedBatch {
    /// Partition.
    pub partition: i32,
    /// Which fetcher of this partition sent it; batches of a replaced fetcher are stale.
    pub fetcher_id: u64,
    /// The records.
    pub records: Vec<ConsumedRecord>,
}

/// What a fetcher needs.
pub struct FetcherSpec {
    /// Where to look up the partition's leader and its offsets.
    pub bootstrap: Brokers,
    /// Connect and request time limits (a fetch may take `max_wait` longer).
    pub timeouts: Timeouts,
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Tag for its batches.
    pub fetcher_id: u64,
    /// Where to start.
    pub start: i64,
    /// Where to go when the position is outside the log.
    pub reset: OffsetReset,
    /// Most bytes a fetch returns.
    pub max_bytes: usize,
    /// How long the broker may hold a fetch.
    pub max_wait: Duration,
    /// Where to put batches.
    pub queue: mpsc::Sender<FetchedBatch>,
    /// The partition's high watermark, as last seen (for lag).
    pub high_watermark: Arc<AtomicI64>,
    /// Stops the fetcher.
    pub stop: CancellationToken,
}

/// The offset where reading `partition` starts for `reset`.
pub async fn reset_offset(
    admin: &AdminClient,
    topic: &str,
    partition: i32,
    reset: OffsetReset,
) -> Result<i64, String> {
    let at = match reset {
        OffsetReset::Earliest => OffsetAt::Earliest,
        OffsetReset::Latest => OffsetAt::Latest,
    };
    let metadata = admin
        .metadata(Some(&[topic]))
        .await
        .map_err(|e| e.to_string())?;
    let offsets = admin
        .list_offsets(&metadata, topic, at)
        .await
        .map_err(|e| e.to_string())?;
    offsets
        .get(&partition)
        .copied()
        .ok_or_else(|| format!("{topic}-{partition} has no leader now"))
}

/// The `host:port` of `partition`'s leader.
async fn leader(admin: &AdminClient, topic: &str, partition: i32) -> Result<String, String> {
    let metadata = admin
        .metadata(Some(&[topic]))
        .await
        .map_err(|e| format!("cannot learn {topic}'s leaders: {e}"))?;
    metadata
        .topic(topic)
        .and_then(|t| t.partitions.iter().find(|p| p.partition == partition))
        .filter(|p| p.leader >= 0)
        .and_then(|p| metadata.broker_address(p.leader))
        .ok_or_else(|| format!("{topic}-{partition} has no leader now"))
}

/// Why a fetch gave no records.
enum FetchFailure {
    /// The position is before the log's start or after its end.
    OutOfRange,
    /// Anything else: the connection is dropped and the leader looked up again.
    Other(String),
}

/// One Fetch of `partition` from `offset`, connecting to its leader first if needed.
async fn fetch_once(
    connection: &mut Option<BrokerConnection>,
    admin: &AdminClient,
    spec: &FetcherSpec,
    offset: i64,
) -> Result<PartitionData, FetchFailure> {
    if connection.is_none() {
        let address = leader(admin, &spec.topic, spec.partition)
            .await
            .map_err(FetchFailure::Other)?;
        let timeouts = Timeouts {
            request: spec.timeouts.request + spec.max_wait,
            ..spec.timeouts
        };
        let opened = BrokerConnection::connect(&address, admin.security(), timeouts, CLIENT_ID)
            .await
            .map_err(|e| FetchFailure::Other(e.to_string()))?;
        *connection = Some(opened);
    }
    let open = connection.as_mut().expect("connected above");
    let max_bytes = i32::try_from(spec.max_bytes).unwrap_or(i32::MAX);
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(i32::try_from(spec.max_wait.as_millis()).unwrap_or(i32::MAX))
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(spec.topic.to_string())))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(spec.partition)
                        .with_current_leader_epoch(-1)
                        .with_fetch_offset(offset)
                        .with_last_fetched_epoch(-1)
                        .with_log_start_offset(-1)
                        .with_partition_max_bytes(max_bytes),
                ]),
        ]);
    let response = open
        .send_at_most(&request, MAX_FETCH_VERSION)
        .await
        .map_err(|e| FetchFailure::Other(e.to_string()))?;
    if response.error_code != 0 {
        return Err(FetchFailure::Other(error_name(response.error_code)));
    }
    let data = response
        .responses
        .into_iter()
        .flat_map(|topic| topic.partitions)
        .find(|data| data.partition_index == spec.partition)
        .ok_or_else(|| FetchFailure::Other("the answer left the partition out".to_string()))?;
    match data.error_code {
        0 => Ok(data),
        code if code == ResponseError::OffsetOutOfRange.code() => Err(FetchFailure::OutOfRange),
        code => Err(FetchFailure::Other(error_name(code))),
    }
}

fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(error) => format!("{error:?} (error code {code})"),
        None => format!("error code {code}"),
    }
}

/// The records of `data` (whole record batches; a batch cut off at the end
/// of the answer is left for the next fetch) at `from` or after, and the
/// offset after the last record seen, control records included.
pub fn decode_records(
    mut data: Bytes,
    topic: &Arc<str>,
    partition: i32,
    from: i64,
) -> Result<(Vec<ConsumedRecord>, Option<i64>), String> {
    // A batch starts with its base offset (8 bytes) and its length after that
    // field and itself (4 bytes); its last offset delta is at byte 23.
    const LENGTH_END: usize = 12;
    let mut records = Vec::new();
    let mut next: Option<i64> = None;
    while data.len() >= LENGTH_END {
        let length = i32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        // Anything shorter than a batch header up to its last offset delta is not a batch.
        let Some(length) = usize::try_from(length)
            .ok()
            .filter(|&l| LENGTH_END + l >= 27)
        else {
            return Err(format!("a record batch of length {length}"));
        };
        if data.len() < LENGTH_END + length {
            break;
        }
        let mut batch = data.split_to(LENGTH_END + length);
        let base = i64::from_be_bytes(batch[..8].try_into().expect("eight bytes"));
        let last_delta = i32::from_be_bytes(batch[23..27].try_into().expect("four bytes"));
        next = Some(base + i64::from(last_delta) + 1);
        let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| e.to_string())?;
        records.extend(
            set.records
                .into_iter()
                .filter(|record| !record.control && record.offset >= from)
                .map(|record| ConsumedRecord {
                    topic: Arc::clone(topic),
                    partition,
                    offset: record.offset,
                    key: record.key,
                    value: record.value,
                    headers: Headers::from_wire(record.headers),
                    timestamp: DateTime::from_timestamp_millis(record.timestamp)
                        .unwrap_or_default(),
                }),
        );
    }
    Ok((records, next))
}

/// Fetches until stopped.
pub async fn run_fetcher(spec: FetcherSpec) {
    let admin = AdminClient::new(spec.bootstrap.clone(), spec.timeouts);
    let mut offset = spec.start;
    let mut connection: Option<BrokerConnection> = None;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut failures = 0u32;
    while !spec.stop.is_cancelled() {
        let outcome = tokio::select! {
            _ = spec.stop.cancelled() => return,
            outcome = fetch_once(&mut connection, &admin, &spec, offset) => outcome,
        };
        let failure = match outcome {
            Ok(data) => {
                spec.high_watermark
                    .store(data.high_watermark, Ordering::Relaxed);
                let decoded = decode_records(
                    data.records.unwrap_or_default(),
                    &spec.topic,
                    spec.partition,
                    offset,
                );
                match decoded {
                    Ok((records, next)) => {
                        failures = 0;
                        backoff.reset();
                        if let Some(next) = next {
                            offset = offset.max(next);
                        }
                        if records.is_empty() {
                            continue;
                        }
                        let batch = FetchedBatch {
                            partition: spec.partition,
                            fetcher_id: spec.fetcher_id,
                            records,
                        };
                        tokio::select! {
                            _ = spec.stop.cancelled() => return,
                            sent = spec.queue.send(batch) => if sent.is_err() { return },
                        }
                        continue;
                    }
                    Err(e) => format!("cannot decode the records: {e}"),
                }
            }
            Err(FetchFailure::OutOfRange) => {
                match reset_offset(&admin, &spec.topic, spec.partition, spec.reset).await {
                    Ok(reset) => {
                        tracing::warn!(
                            "{}-{}: offset {offset} is outside the log; continuing from {reset} ({})",
                            spec.topic,
                            spec.partition,
                            spec.reset
                        );
                        offset = reset;
                        continue;
                    }
                    Err(e) => format!("cannot reset the offset: {e}"),
                }
            }
            Err(FetchFailure::Other(reason)) => reason,
        };
        failures += 1;
        connection = None;
        if failures == 1 || failures.is_power_of_two() {
            tracing::warn!(
                "fetch from {}-{} at offset {offset} failed ({failures} in a row): {failure}; retrying",
                spec.topic,
                spec.partition
            );
        }
        tokio::select! {
            _ = spec.stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn record(offset: i64, value: &str, control: bool) -> Record {
        let mut headers = IndexMap::new();
        headers.insert(
            StrBytes::from_static_str("schema"),
            Some(Bytes::from_static(b"1")),
        );
        Record {
            transactional: false,
            control,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: -1,
            timestamp: 1_700_000_000_000 + offset,
            key: Some(Bytes::from(format!("key-{offset}"))),
            value: Some(Bytes::from(value.to_string())),
            headers,
        }
    }

    /// One record batch per slice of `records`, as a broker returns them.
    fn answer(batches: &[&[Record]], compression: Compression) -> BytesMut {
        let mut buffer = BytesMut::new();
        for records in batches {
            let options = RecordEncodeOptions {
                version: 2,
                compression,
            };
            RecordBatchEncoder::encode(&mut buffer, records.iter(), &options).unwrap();
        }
        buffer
    }

    fn values(records: &[ConsumedRecord]) -> Vec<(i64, String)> {
        records
            .iter()
            .map(|r| {
                let value = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
                (r.offset, value)
            })
            .collect()
    }

    #[test]
    fn records_of_compressed_batches_come_out_in_order_with_key_headers_and_time() {
        let topic: Arc<str> = Arc::from("readings");
        for compression in [Compression::None, Compression::Gzip, Compression::Snappy] {
            let first = [record(10, "a", false), record(11, "b", false)];
            let second = [record(12, "c", false)];
            let data = answer(&[&first, &second], compression).freeze();
            let (records, next) = decode_records(data, &topic, 3, 10).unwrap();
            assert_eq!(
                values(&records),
                [(10, "a".into()), (11, "b".into()), (12, "c".into())],
                "{compression:?}"
            );
            assert_eq!(next, Some(13));
            let last = &records[2];
            assert_eq!((&*last.topic, last.partition), ("readings", 3));
            assert_eq!(last.key.as_deref(), Some(&b"key-12"[..]));
            assert_eq!(last.headers.get("schema"), Some(&b"1"[..]));
            assert_eq!(last.timestamp.timestamp_millis(), 1_700_000_000_012);
        }
    }

    #[test]
    fn records_before_the_position_and_control_records_are_skipped_but_passed() {
        let topic: Arc<str> = Arc::from("readings");
        let batch = [record(5, "old", false), record(6, "new", false)];
        let marker = [record(7, "commit marker", true)];
        let data = answer(&[&batch, &marker], Compression::None).freeze();
        let (records, next) = decode_records(data, &topic, 0, 6).unwrap();
        assert_eq!(values(&records), [(6, "new".into())]);
        assert_eq!(next, Some(8), "the position moves past the control record");
    }

    #[test]
    fn a_batch_cut_off_at_the_end_of_the_answer_is_left_for_the_next_fetch() {
        let topic: Arc<str> = Arc::from("readings");
        let whole = [record(0, "whole", false)];
        let cut = [record(1, "cut", false)];
        let mut data = answer(&[&whole, &cut], Compression::None);
        data.truncate(data.len() - 5);
        let (records, next) = decode_records(data.freeze(), &topic, 0, 0).unwrap();
        assert_eq!(values(&records), [(0, "whole".into())]);
        assert_eq!(next, Some(1));
    }

    #[test]
    fn a_batch_whose_length_cannot_hold_its_header_is_an_error_not_an_empty_answer() {
        let topic: Arc<str> = Arc::from("readings");
        let mut data = answer(&[&[record(0, "a", false)]], Compression::None);
        data[8..12].copy_from_slice(&3i32.to_be_bytes());
        assert!(decode_records(data.freeze(), &topic, 0, 0).is_err());
    }

    #[test]
    fn an_empty_answer_has_no_records_and_leaves_the_position() {
        let topic: Arc<str> = Arc::from("readings");
        let (records, next) = decode_records(Bytes::new(), &topic, 0, 42).unwrap();
        assert!(records.is_empty());
        assert_eq!(next, None);
    }
}
