//! The simulated fleet as a source: its readings into Kafka.
//!
//! The fleet's timeline is followed against the wall clock; each due reading
//! is handed to the producer, whose full buffer makes this loop wait, so a slow
//! cluster slows the simulator rather than filling memory. On shutdown the
//! simulator stops first and the producer then delivers everything it holds:
//! every reading generated ends acknowledged or counted as failed.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::kafka::Headers;
use crate::kafka::producer::{
    Delivery, DeliveryListener, OutgoingRecord, Producer, ProducerError, ProducerSnapshot,
};
use crate::sensor::reading::{SCHEMA_VERSION, SensorReading};
use crate::sensor::simulator::Fleet;

/// Header naming the record layout version.
pub const SCHEMA_HEADER: &str = "schema_version";

/// Which reading a delivery is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadingId {
    /// Device id.
    pub device_id: String,
    /// Producer run.
    pub run_id: Arc<str>,
    /// Sequence number within the device and run.
    pub sequence: u64,
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

/// Turns a reading into the record that carries it.
pub fn to_record(reading: &SensorReading, run_id: &Arc<str>) -> OutgoingRecord<ReadingId> {
    OutgoingRecord {
        key: Bytes::copy_from_slice(reading.key()),
        value: Bytes::from(reading.to_json()),
        headers: Headers::one(SCHEMA_HEADER, schema_header(reading.schema_version)),
        timestamp: reading.timestamp,
        meta: ReadingId {
            device_id: reading.device_id.clone(),
            run_id: Arc::clone(run_id),
            sequence: reading.sequence,
        },
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
                device_id = %id.device_id,
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
    let started = Instant::now();
    let result = async {
        loop {
            let elapsed = started.elapsed();
            while let Some(reading) = fleet.next_due(elapsed) {
                // A generated reading is always handed over, even when shutdown
                // comes while the buffer is full: it then ends acked or failed.
                producer.send(to_record(&reading, &run_id)).await?;
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
    fn a_readings_record_is_keyed_by_its_device_and_names_its_schema() {
        let reading = example();
        let record = to_record(&reading, &Arc::from("run-1"));
        assert_eq!(&record.key[..], b"temperature-000042");
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
        let record = to_record(&reading, &Arc::from("run-1"));
        assert_eq!(record.headers.get(SCHEMA_HEADER), Some(&b"7"[..]));
    }
}
