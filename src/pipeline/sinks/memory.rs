//! A sink that keeps what it is given in memory.
//!
//! Memory is as durable as the process that holds it, so `flush` always
//! succeeds. It lets processing run without a cluster: in unit tests, where
//! what processing decided is read back, and in tools that only count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::pipeline::sink::{DeadLetter, ProcessedThrough, Sink, SinkError};
use crate::sensor::rules::Alert;

/// What a [`MemorySink`] has been given, in order.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Alerts.
    pub alerts: Vec<Alert>,
    /// Dead letters.
    pub dead_letters: Vec<DeadLetter>,
    /// Flushes asked for.
    pub flushes: u64,
}

/// Keeps alerts and dead letters in memory; clones share what they keep.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    recorded: Arc<Mutex<Recorded>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        MemorySink::default()
    }

    /// Reads what was recorded so far.
    pub fn read<T>(&self, read: impl FnOnce(&Recorded) -> T) -> T {
        read(&self.recorded.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn record(&self, write: impl FnOnce(&mut Recorded)) {
        write(&mut self.recorded.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

impl Sink for MemorySink {
    async fn alert(&mut self, alert: Alert) {
        self.record(|r| r.alerts.push(alert));
    }

    async fn dead_letter(&mut self, letter: DeadLetter) {
        self.record(|r| r.dead_letters.push(letter));
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        self.record(|r| r.flushes += 1);
        Ok(())
    }

    async fn processed_through(
        &self,
        source_topic: &str,
        starts: &[(i32, i64)],
    ) -> Result<HashMap<i32, i64>, SinkError> {
        let mut found = ProcessedThrough::new(source_topic, starts);
        self.read(|r| {
            for source in r.alerts.iter().filter_map(|a| a.source.as_ref()) {
                found.note(source);
            }
        });
        Ok(found.into_map())
    }

    async fn close(self) {}
}
