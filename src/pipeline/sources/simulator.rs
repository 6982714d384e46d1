//! The simulated fleet as a source: its readings into Kafka.
//!
//! The fleet's timeline is followed against the wall clock; each due reading
//! is handed to the producer, whose full buffer makes this loop wait, so a slow
//! cluster slows the simulator rather than filling memory. On shutdown the
//! simulator stops first and the producer then delivers everything it holds:
//! every reading generated ends acknowledged or counted as failed.
//!
//! A record's key and value are not allocations of their own: they are
//! written into a chunk of a buffer kept per partition ([`RecordWriter`]),
//! which a hundred or so records share. A heap profile of `metrocloud run`
//! with 100,000 devices found the readings' JSON, each in a vector grown by
//! doubling (512 bytes for a reading of 390), among its largest holders.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::kafka::Headers;
use crate::kafka::partitioner::partition_for_key;
use crate::kafka::producer::{
    Delivery, DeliveryListener, OutgoingRecord, Producer, ProducerError, ProducerSnapshot,
};
use crate::sensor::device::DeviceKey;
use crate::sensor::reading::{SCHEMA_VERSION, SensorReading};
use crate::sensor::simulator::Fleet;

/// Header naming the record layout version.
pub const SCHEMA_HEADER: &str = "schema_version";

/// Which reading a delivery is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadingId {
    /// The device id, held inline: one is kept for every reading waiting for
    /// Kafka, and a share of the record's key would keep the key's chunk in
    /// memory after its batch is encoded.
    device: DeviceKey,
    /// Producer run.
    pub run_id: Arc<str>,
    /// Sequence number within the device and run.
    pub sequence: u64,
}

impl ReadingId {
    /// The reading's device id.
    pub fn device_id(&self) -> &str {
        &self.device
    }
}

/// The schema header's value: the current version's is made once and
/// shared, not written out again for every reading.
fn schema_header(version: u32) -> Bytes {
    static CURRENT: LazyLock<Bytes> = LazyLock::new(|| Bytes::from(SCHEMA_VERSION.to_string()));
    if version == SCHEMA_VERSION {
        CURRENT.clone()
    } else {
        Bytes::from(version.to_string())
    }
}

/// Bytes a partition's buffer takes at a time for the records written into it.
const CHUNK_BYTES: usize = 64 * 1024;
/// Room left in a chunk below which the next record starts a new one (a
/// record that is larger still grows the chunk as it is written).
const RECORD_ROOM: usize = 2 * 1024;

/// Writes readings' records into one buffer per partition, a record's key
/// and value each a slice of the partition's current chunk. A chunk is freed
/// when the last record in it is done with; a partition's records are
/// acknowledged in order, so a partition whose leader is away holds back
/// only its own chunks, never its neighbours'.
#[derive(Debug)]
pub struct RecordWriter {
    chunks: Vec<BytesMut>,
}

impl RecordWriter {
    /// A writer for a topic of `partitions` partitions.
    pub fn new(partitions: i32) -> Self {
        RecordWriter {
            chunks: (0..partitions.max(1)).map(|_| BytesMut::new()).collect(),
        }
    }

    /// The partition a reading's record goes to (its device's, by key), and the record.
    pub fn record(
        &mut self,
        reading: &SensorReading,
        run_id: &Arc<str>,
    ) -> (i32, OutgoingRecord<ReadingId>) {
        let partition = partition_for_key(reading.key(), self.chunks.len() as i32);
        let chunk = &mut self.chunks[partition as usize];
        if chunk.capacity() - chunk.len() < RECORD_ROOM {
            chunk.reserve(CHUNK_BYTES);
        }
        chunk.extend_from_slice(reading.key());
        let key = chunk.split().freeze();
        serde_json::to_writer(chunk.writer(), reading).expect("a reading always serializes");
        let value = chunk.split().freeze();
        let meta = ReadingId {
            device: DeviceKey::from(reading.device_id.as_str()),
            run_id: Arc::clone(run_id),
            sequence: reading.sequence,
        };
        let record = OutgoingRecord {
            key,
            value,
            headers: Headers::one(SCHEMA_HEADER, schema_header(reading.schema_version)),
            timestamp: reading.timestamp,
            meta,
        };
        (partition, record)
    }
}

/// A delivery listener that logs every failed reading with its device and sequence
/// number, then passes each delivery on to `next`.
pub fn logging_listener(
    next: impl Fn(ReadingId, Delivery) + Send + Sync + 'static,
) -> DeliveryListener<ReadingId> {
    Arc::new(move |id: ReadingId, delivery: Delivery| {
        if let Delivery::Failed { partition, reason } = &delivery {
            tracing::error!(
                device_id = %id.device_id(),
                sequence = id.sequence,
                run_id = %id.run_id,
                partition,
                "reading not delivered: {reason}"
            );
        }
        next(id, delivery);
    })
}

/// What the ingest loop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestSummary {
    /// Readings generated.
    pub generated: u64,
    /// The producer's final counters.
    pub producer: ProducerSnapshot,
}

impl std::fmt::Display for IngestSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "producer summary: generated {}, sent {}, acked {}, failed {}, retries {}",
            self.generated,
            self.producer.sent,
            self.producer.acked,
            self.producer.failed,
            self.producer.retries
        )
    }
}

/// Follows the fleet's timeline until `shutdown` (or until `limit` readings, when
/// given), sending each reading; then closes the producer, which delivers or fails
/// everything it holds.
pub async fn run_ingest(
    mut fleet: Fleet,
    producer: Producer<ReadingId>,
    limit: Option<u64>,
    shutdown: CancellationToken,
) -> Result<IngestSummary, ProducerError> {
    let run_id: Arc<str> = Arc::from(fleet.run_id());
    let mut records = RecordWriter::new(producer.partitions());
    let started = Instant::now();
    let result = async {
        loop {
            let elapsed = started.elapsed();
            while let Some(reading) = fleet.next_due(elapsed) {
                // A generated reading is always handed over, even when shutdown
                // comes while the buffer is full: it then ends acked or failed.
                let (partition, record) = records.record(&reading, &run_id);
                producer.send_to(partition, record).await?;
                if shutdown.is_cancelled() || limit.is_some_and(|limit| fleet.emitted() >= limit) {
                    return Ok(());
                }
            }
            let wait = fleet
                .next_due_at()
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(1));
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
    .await;
    let generated = fleet.emitted();
    let snapshot = producer.close().await;
    result.map(|()| IngestSummary {
        generated,
        producer: snapshot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::reading::tests::example;

    #[test]
    fn a_readings_record_is_keyed_by_its_device_and_goes_to_its_partition() {
        let reading = example();
        let (partition, record) = RecordWriter::new(6).record(&reading, &Arc::from("run-1"));
        assert_eq!(&record.key[..], b"temperature-000042");
        assert_eq!(partition, partition_for_key(b"temperature-000042", 6));
        assert_eq!(record.value, reading.to_json());
        assert_eq!(
            record.headers.get(SCHEMA_HEADER),
            Some(SCHEMA_VERSION.to_string().as_bytes())
        );
        assert_eq!(record.meta.sequence, 17);
    }

    #[test]
    fn an_older_schema_version_is_named_as_it_is() {
        let mut reading = example();
        reading.schema_version = 7;
        let (_, record) = RecordWriter::new(6).record(&reading, &Arc::from("run-1"));
        assert_eq!(record.headers.get(SCHEMA_HEADER), Some(&b"7"[..]));
    }

    #[test]
    fn records_sharing_a_chunk_keep_their_own_bytes_whatever_comes_after_them() {
        let mut writer = RecordWriter::new(1);
        let run: Arc<str> = Arc::from("run-1");
        let mut readings = Vec::new();
        let mut records = Vec::new();
        // Enough readings to fill several chunks, one far larger than a
        // record's room, and records dropped on the way (acknowledged ones).
        for sequence in 0..1_000u64 {
            let mut reading = example();
            reading.sequence = sequence;
            reading.device_id = format!("temperature-{sequence:06}");
            if sequence == 500 {
                reading.firmware_version = "x".repeat(3 * CHUNK_BYTES);
            }
            let (_, record) = writer.record(&reading, &run);
            if sequence % 3 == 0 {
                drop(record);
            } else {
                records.push(record);
                readings.push(reading);
            }
        }
        for (reading, record) in readings.iter().zip(&records) {
            assert_eq!(&record.key[..], reading.device_id.as_bytes());
            assert_eq!(record.value, reading.to_json());
            assert_eq!(record.meta.sequence, reading.sequence);
        }
    }
}
