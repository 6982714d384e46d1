//! Where processing's decisions go: alerts, and records refused as dead letters.
//!
//! Processing decides; a [`Sink`] makes the decisions durable. The consumer
//! commits a record's offset only after [`Sink::flush`] has returned `Ok`, so a
//! committed offset never hides an alert or a dead letter that was lost. A
//! sink is one file under `sinks/`: Kafka topics today ([`super::sinks::kafka`]),
//! memory for tests and tools ([`super::sinks::memory`]).

use std::collections::HashMap;
use std::future::Future;

use chrono::{DateTime, Utc};

use crate::kafka::consumer::ConsumedRecord;
use crate::sensor::rules::{Alert, SourceRecord};
use crate::sensor::validate::RejectReason;

/// A record that is not a valid reading, with why and where it came from.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The record as it was consumed: key, value and headers untouched.
    pub record: ConsumedRecord,
    /// Why it was refused, as a code.
    pub reason: RejectReason,
    /// What exactly was wrong, for people.
    pub detail: String,
    /// When it was refused.
    pub refused_at: DateTime<Utc>,
}

/// Why a sink could not make what it took durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Some alerts or dead letters were refused or timed out.
    #[error("{0} alert(s) or dead letter(s) were not acknowledged")]
    NotDelivered(u64),
    /// The sink cannot say what it holds (for example, its store does not answer).
    #[error("{0}")]
    Unavailable(String),
}

/// The destination of alerts and dead letters; see the module documentation.
pub trait Sink: Send {
    /// Takes an alert. It may be durable only after [`Sink::flush`].
    fn alert(&mut self, alert: Alert) -> impl Future<Output = ()> + Send;

    /// Takes a dead letter. It may be durable only after [`Sink::flush`].
    fn dead_letter(&mut self, letter: DeadLetter) -> impl Future<Output = ()> + Send;

    /// Waits until everything taken so far is durable, or says what was lost
    /// since the last flush.
    fn flush(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// For each `(partition, start)` of `source_topic`, the highest offset at
    /// or after `start` that an alert in this sink names: proof that a previous
    /// owner of the partition processed the records up to it. A sink that
    /// keeps no such record knows nothing.
    fn processed_through(
        &self,
        source_topic: &str,
        starts: &[(i32, i64)],
    ) -> impl Future<Output = Result<HashMap<i32, i64>, SinkError>> + Send {
        let _ = (source_topic, starts);
        async { Ok(HashMap::new()) }
    }

    /// Delivers what it holds and stops.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// Per partition of a source topic, the highest offset an alert names at or
/// after the partition's start: what [`Sink::processed_through`] answers.
#[derive(Debug)]
pub struct ProcessedThrough<'a> {
    source_topic: &'a str,
    starts: &'a [(i32, i64)],
    found: HashMap<i32, i64>,
}

impl<'a> ProcessedThrough<'a> {
    /// Nothing found yet, for these partitions and start offsets of `source_topic`.
    pub fn new(source_topic: &'a str, starts: &'a [(i32, i64)]) -> Self {
        ProcessedThrough {
            source_topic,
            starts,
            found: HashMap::new(),
        }
    }

    /// Takes in one alert's source record.
    pub fn note(&mut self, source: &SourceRecord) {
        let after_start = self
            .starts
            .iter()
            .any(|&(p, start)| source.partition == p && source.offset >= start);
        if source.topic == self.source_topic && after_start {
            let highest = self.found.entry(source.partition).or_insert(source.offset);
            *highest = (*highest).max(source.offset);
        }
    }

    /// The highest offset found per partition.
    pub fn into_map(self) -> HashMap<i32, i64> {
        self.found
    }
}
