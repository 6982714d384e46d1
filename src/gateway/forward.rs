//! From the disk buffer to Kafka, in order, releasing only what Kafka
//! acknowledged.
//!
//! The forwarder reads the buffer with its own cursor and hands each record
//! to a producer (readings to the sensor topic keyed by device, so one
//! device's readings share a partition and keep their order; dead letters to
//! the dead-letter topic). It keeps at most [`WINDOW`] records unacknowledged:
//! as acknowledgements come, the acknowledged prefix leaves the window at
//! once (making room for more), and the buffer is released up to it a few
//! times a second (each release fsyncs a file). Counting acknowledged records
//! until the next release would cap forwarding at a window per release
//! interval: a 300,000-reading backlog drained at 34,000/s that way.
//!
//! Its producer has no delivery deadline: while Kafka is away, it retries
//! (idempotently, so a partition's batches stay in order) for as long as it
//! takes, and the buffer holds what comes meanwhile. A deadline would make
//! the oldest batches of a partition fail while later ones, sent after them,
//! are written once Kafka is back: a device's readings out of order (seen
//! with a 2-minute outage against the 120 s default).
//!
//! When a record is refused anyway (an error no retry can mend), the
//! forwarder stops sending, lets the rest of the window settle, and goes back
//! to the first unacknowledged record, sending everything from there again
//! after a backoff: nothing is skipped, at the price of sending again what
//! Kafka had already taken after it (duplicates a consumer removes by device
//! and sequence).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::GatewayError;
use super::buffer::{Buffer, Spooled};
use super::intake::GatewayStats;
use crate::config::Config;
use crate::kafka::Headers;
use crate::kafka::producer::{Delivery, OutgoingRecord, Producer, ProducerError, ProducerSettings};
use crate::kafka::retry::Backoff;
use crate::kafka::topics::TopicError;
use crate::pipeline::sinks::kafka::{DLQ_DETAIL, DLQ_FAILED_AT, DLQ_REASON};
use crate::pipeline::wiring::ensure_topics;
use crate::spool::Cursor;

/// Records sent and not yet acknowledged, at most.
pub const WINDOW: usize = 20_000;

/// How often the buffer is released up to the acknowledged prefix: each
/// release fsyncs a file, so not once per acknowledgement.
const RELEASE_EVERY: Duration = Duration::from_millis(200);

/// The forwarder's delivery timeout: none, in effect (see the module documentation).
const NO_DEADLINE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The dead-letter header naming where a refused message came from.
pub const DLQ_ORIGIN: &str = "dlq.origin";

type Outcomes = mpsc::UnboundedReceiver<(u64, bool)>;

/// Where each sent record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Waiting,
    Acked,
    Failed,
}

/// A record sent and not yet released.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    sent: Sent,
    is_reading: bool,
    /// When the gateway took it, milliseconds since the epoch.
    at_ms: i64,
}

/// The records sent and not yet released, in order, with how many of them
/// wait for an answer and how many failed (kept as counts: the window is
/// looked at after every batch of answers).
#[derive(Debug, Default)]
struct Window {
    records: BTreeMap<u64, InFlight>,
    waiting: usize,
    failed: usize,
}

impl Window {
    fn len(&self) -> usize {
        self.records.len()
    }

    fn count(&mut self, sent: Sent, by: isize) {
        let counter = match sent {
            Sent::Waiting => &mut self.waiting,
            Sent::Failed => &mut self.failed,
            Sent::Acked => return,
        };
        *counter = counter.saturating_add_signed(by);
    }

    fn insert(&mut self, number: u64, record: InFlight) {
        self.count(record.sent, 1);
        if let Some(before) = self.records.insert(number, record) {
            self.count(before.sent, -1);
        }
    }

    /// Marks a record's answer; the record, if it is in the window.
    fn answer(&mut self, number: u64, sent: Sent) -> Option<InFlight> {
        let record = self.records.get_mut(&number)?;
        let before = record.sent;
        record.sent = sent;
        let record = *record;
        self.count(before, -1);
        self.count(sent, 1);
        Some(record)
    }

    /// Removes the acknowledged records at the front; the number after the last removed.
    fn take_acknowledged(&mut self) -> Option<u64> {
        let mut upto = None;
        while let Some((&number, record)) = self.records.first_key_value() {
            if record.sent != Sent::Acked {
                break;
            }
            self.records.remove(&number);
            upto = Some(number + 1);
        }
        upto
    }

    /// When the oldest record still in the window was taken (0: none).
    fn oldest_ms(&self) -> i64 {
        self.records.first_key_value().map_or(0, |(_, r)| r.at_ms)
    }

    fn first(&self) -> Option<u64> {
        self.records.keys().next().copied()
    }

    fn clear(&mut self) {
        *self = Window::default();
    }
}

/// Connects to Kafka (waiting for it as long as it takes, the buffer
/// holding what comes meanwhile) and forwards until `shutdown`; then waits
/// for what is in flight, releases what was acknowledged, and returns.
pub async fn forward(
    config: &Config,
    buffer: Arc<Buffer>,
    stats: Arc<GatewayStats>,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    let Some((readings, dead_letters, outcomes)) = connect(config, &shutdown).await? else {
        return Ok(());
    };
    let mut forwarder = Forwarder {
        cursor: Cursor::at(buffer.dir(), buffer.released()),
        buffer,
        stats,
        window: Window::default(),
        to_release: None,
        outcomes,
        backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(10)),
    };
    let result = forwarder.run(&readings, &dead_letters, &shutdown).await;
    // What is in flight gets one request timeout to be answered before the
    // buffer is released one last time; what is not stays in the buffer, and
    // is sent again at the next start.
    let grace = config.producer.request_timeout;
    let closed = tokio::time::timeout(grace, async {
        readings.close().await;
        dead_letters.close().await;
    })
    .await;
    if closed.is_err() {
        tracing::warn!(
            "Kafka did not answer for what was in flight within {grace:?}: it stays in the buffer for the next start"
        );
    }
    forwarder.release().await?;
    result
}

/// The two producers and the channel their acknowledgements come back on;
/// `None` if shut down first.
async fn connect(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Option<(Producer<u64>, Producer<u64>, Outcomes)>, GatewayError> {
    let topics = [config.topic.as_str(), config.dlq_topic.as_str()];
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        match ensure_topics(config, &topics, shutdown).await {
            Ok(()) => break,
            Err(e) if shutdown.is_cancelled() => {
                tracing::debug!("stopped while waiting for Kafka: {e}");
                return Ok(None);
            }
            // Only giving up on an absent cluster is worth trying again.
            Err(e) if !matches!(e, TopicError::StartupWait { .. }) => {
                return Err(GatewayError::Topics(e));
            }
            Err(e) => {
                tracing::warn!("Kafka not reachable yet ({e}); readings wait in the buffer");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
    let (tx, outcomes) = mpsc::unbounded_channel();
    let listener = move |number: u64, delivery: Delivery| {
        let acked = matches!(delivery, Delivery::Acked { .. });
        if let Delivery::Failed { reason, .. } = &delivery {
            tracing::warn!(
                "record {number} of the buffer not acknowledged, to be sent again: {reason}"
            );
        }
        let _ = tx.send((number, acked));
    };
    let listener: Arc<dyn Fn(u64, Delivery) + Send + Sync> = Arc::new(listener);
    let settings = ProducerSettings {
        delivery_timeout: NO_DEADLINE,
        request_spacing: config.gateway.forward_spacing,
        ..config.producer.clone()
    };
    let mut producers = Vec::with_capacity(2);
    for topic in topics {
        match Producer::connect(
            config.brokers(),
            topic,
            &settings,
            Arc::clone(&listener),
            shutdown,
        )
        .await
        {
            Ok(producer) => producers.push(producer),
            Err(ProducerError::Cancelled(_)) => return Ok(None),
            Err(e) => return Err(GatewayError::Producer(e)),
        }
    }
    let dead_letters = producers.pop().expect("two producers");
    let readings = producers.pop().expect("two producers");
    Ok(Some((readings, dead_letters, outcomes)))
}

struct Forwarder {
    buffer: Arc<Buffer>,
    cursor: Cursor,
    stats: Arc<GatewayStats>,
    /// Every record sent and not yet acknowledged (with those acknowledged
    /// after the first of them), by number.
    window: Window,
    /// Every record below this number is acknowledged, and the buffer not yet told.
    to_release: Option<u64>,
    outcomes: Outcomes,
    backoff: Backoff,
}

impl Forwarder {
    async fn run(
        &mut self,
        readings: &Producer<u64>,
        dead_letters: &Producer<u64>,
        shutdown: &CancellationToken,
    ) -> Result<(), GatewayError> {
        let mut last_release = Instant::now();
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            self.settle();
            if self.window.failed > 0 {
                if self.window.waiting == 0 {
                    self.rewind(shutdown).await;
                }
            } else if self.window.len() < WINDOW {
                let batch = self.cursor.read(
                    self.buffer.durable(),
                    (WINDOW - self.window.len()).min(1000),
                )?;
                for (number, bytes) in batch {
                    let Some(record) = Spooled::decode(bytes) else {
                        tracing::error!(
                            "record {number} of the buffer is not one this gateway wrote; skipped"
                        );
                        let skipped = InFlight {
                            sent: Sent::Acked,
                            is_reading: false,
                            at_ms: 0,
                        };
                        self.window.insert(number, skipped);
                        continue;
                    };
                    let is_reading = matches!(record, Spooled::Reading { .. });
                    let in_flight = InFlight {
                        sent: Sent::Waiting,
                        is_reading,
                        at_ms: record.at_ms(),
                    };
                    self.window.insert(number, in_flight);
                    let producer = if is_reading { readings } else { dead_letters };
                    let sent = tokio::select! {
                        sent = producer.send(outgoing(number, record)) => sent,
                        _ = shutdown.cancelled() => return Ok(()),
                    };
                    if let Err(e) = sent {
                        if matches!(e, ProducerError::Refused(_)) {
                            return Err(GatewayError::Producer(e));
                        }
                        tracing::warn!(
                            "record {number} of the buffer not taken by the producer: {e}"
                        );
                        self.window.answer(number, Sent::Failed);
                        break;
                    }
                }
            }
            if last_release.elapsed() >= RELEASE_EVERY {
                self.release().await?;
                last_release = Instant::now();
            }
            let next = self.cursor.next_number();
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                outcome = self.outcomes.recv() => if let Some(outcome) = outcome { self.record(outcome) },
                _ = self.buffer.until_durable(next), if self.window.len() < WINDOW => {}
                _ = tokio::time::sleep(RELEASE_EVERY) => {}
            }
        }
    }

    /// Takes every acknowledgement that has come; the acknowledged prefix
    /// leaves the window, to be released at the next [`Forwarder::release`].
    fn settle(&mut self) {
        while let Ok(outcome) = self.outcomes.try_recv() {
            self.record(outcome);
        }
        if let Some(upto) = self.window.take_acknowledged() {
            self.to_release = Some(upto);
        }
    }

    fn record(&mut self, (number, acked): (u64, bool)) {
        let sent = if acked { Sent::Acked } else { Sent::Failed };
        if let Some(record) = self.window.answer(number, sent)
            && acked
        {
            let counter = if record.is_reading {
                &self.stats.forwarded
            } else {
                &self.stats.dead_letters
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Releases the buffer up to the first record not acknowledged.
    async fn release(&mut self) -> Result<(), GatewayError> {
        self.settle();
        self.stats
            .oldest_waiting_ms
            .store(self.window.oldest_ms().max(0) as u64, Ordering::Relaxed);
        if let Some(upto) = self.to_release {
            self.buffer.release(upto).await?;
            self.to_release = None;
            self.backoff.reset();
        }
        Ok(())
    }

    /// After a failure, with nothing left waiting: from the first record not
    /// acknowledged, everything is sent again, after a backoff.
    async fn rewind(&mut self, shutdown: &CancellationToken) {
        let _ = self.release().await;
        let Some(first) = self.window.first() else {
            return;
        };
        let again = self.window.len() as u64;
        self.stats.resent.fetch_add(again, Ordering::Relaxed);
        let delay = self.backoff.next_delay();
        tracing::warn!(
            "Kafka did not acknowledge record {first} of the buffer: sending {again} records from it again in {delay:?}"
        );
        self.window.clear();
        self.cursor = Cursor::at(self.buffer.dir(), first);
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// The Kafka record of a spooled one.
fn outgoing(number: u64, record: Spooled) -> OutgoingRecord<u64> {
    match record {
        Spooled::Reading {
            accepted_at_ms,
            key,
            value,
        } => OutgoingRecord {
            key,
            value,
            headers: Headers::new(),
            timestamp: at(accepted_at_ms),
            meta: number,
        },
        Spooled::DeadLetter {
            refused_at_ms,
            key,
            value,
            reason,
            detail,
            origin,
        } => {
            let mut headers = Headers::new();
            headers.insert(DLQ_REASON, reason);
            headers.insert(DLQ_DETAIL, detail);
            headers.insert(DLQ_ORIGIN, origin);
            headers.insert(
                DLQ_FAILED_AT,
                at(refused_at_ms).to_rfc3339_opts(SecondsFormat::Millis, true),
            );
            OutgoingRecord {
                key,
                value,
                headers,
                timestamp: at(refused_at_ms),
                meta: number,
            }
        }
    }
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_else(Utc::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(at_ms: i64) -> InFlight {
        InFlight {
            sent: Sent::Waiting,
            is_reading: true,
            at_ms,
        }
    }

    #[test]
    fn the_buffer_is_released_only_up_to_the_first_record_not_acknowledged() {
        let mut window = Window::default();
        for number in 10..15 {
            window.insert(number, waiting(number as i64));
        }
        assert_eq!(window.take_acknowledged(), None);
        for number in [10, 11, 13] {
            window.answer(number, Sent::Acked);
        }
        assert_eq!(
            window.take_acknowledged(),
            Some(12),
            "12 still waits; 13 stays held"
        );
        assert_eq!(window.oldest_ms(), 12);
        assert_eq!((window.len(), window.waiting, window.failed), (3, 2, 0));
    }

    #[tokio::test]
    async fn acknowledged_records_leave_the_window_at_once_and_the_buffer_at_the_next_release() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = Buffer::open(dir.path(), 1 << 20).unwrap();
        let shutdown = CancellationToken::new();
        let commit = tokio::spawn(Arc::clone(&buffer).commit(Duration::ZERO, shutdown.clone()));
        let reading = Spooled::Reading {
            accepted_at_ms: 1,
            key: bytes::Bytes::from_static(b"d"),
            value: bytes::Bytes::from_static(b"{}"),
        };
        for _ in 0..4 {
            buffer.append(&reading).unwrap();
        }
        buffer.until_durable(3).await.unwrap();
        let (answers, outcomes) = mpsc::unbounded_channel();
        let mut forwarder = Forwarder {
            cursor: Cursor::at(buffer.dir(), 0),
            buffer: Arc::clone(&buffer),
            stats: Arc::default(),
            window: Window::default(),
            to_release: None,
            outcomes,
            backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(1)),
        };
        for number in 0..4 {
            forwarder.window.insert(number, waiting(number as i64));
        }
        for number in [0, 1, 3] {
            answers.send((number, true)).unwrap();
        }
        forwarder.settle();
        assert_eq!(
            (forwarder.window.len(), forwarder.window.waiting),
            (2, 1),
            "0 and 1 make room at once; 3 stays behind 2, which waits"
        );
        assert_eq!(
            buffer.released(),
            0,
            "the buffer is told at the next release"
        );
        forwarder.release().await.unwrap();
        assert_eq!(buffer.released(), 2);
        assert_eq!(forwarder.stats.forwarded.load(Ordering::Relaxed), 3);
        shutdown.cancel();
        commit.await.unwrap().unwrap();
    }

    #[test]
    fn a_failure_is_counted_until_the_rewind_and_the_window_knows_when_nothing_waits() {
        let mut window = Window::default();
        for number in 0..4 {
            window.insert(number, waiting(0));
        }
        window.answer(1, Sent::Failed);
        assert_eq!(
            (window.waiting, window.failed),
            (3, 1),
            "others still in flight"
        );
        for number in [0, 2, 3] {
            window.answer(number, Sent::Acked);
        }
        assert_eq!(
            (window.waiting, window.failed),
            (0, 1),
            "now it may go back"
        );
        assert_eq!(window.take_acknowledged(), Some(1));
        assert_eq!(window.first(), Some(1), "sent again from the failed one");
        window.clear();
        assert_eq!((window.len(), window.waiting, window.failed), (0, 0, 0));
        assert!(
            window.answer(7, Sent::Acked).is_none(),
            "an answer for a record not in the window"
        );
    }
}
