//! The status lines a running pipeline prints every few seconds.
//!
//! Each alert is in the alert topic, and logged only at DEBUG; the log gets
//! one line per status interval that sums up the alerts of the interval by
//! kind, so a fleet in trouble does not drown the log.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::kafka::consumer::ConsumerStats;
use crate::kafka::producer::ProducerStats;
use crate::pipeline::process::ProcessingStats;
use crate::sensor::rules::AlertKind;

/// How often a status line is printed.
pub const STATUS_EVERY: Duration = Duration::from_secs(5);

/// The alerts of the last interval, by kind, as one line.
#[derive(Debug, Default)]
pub struct AlertDigest {
    previous: [u64; AlertKind::ALL.len()],
    previous_suppressed: u64,
}

impl AlertDigest {
    /// The line for the alerts since the last call; `None` when there were none.
    pub fn line(&mut self, stats: &ProcessingStats) -> Option<String> {
        let now = stats.alert_counts();
        let suppressed = stats.alerts_suppressed.load(Ordering::Relaxed);
        let new_suppressed = suppressed.saturating_sub(self.previous_suppressed);
        let by_kind: Vec<String> = AlertKind::ALL
            .iter()
            .zip(now.iter().zip(self.previous))
            .filter(|(_, (now, before))| *now > before)
            .map(|(kind, (now, before))| format!("{} {}", kind.as_str(), now - before))
            .collect();
        let sent: u64 = now.iter().sum::<u64>() - self.previous.iter().sum::<u64>();
        self.previous = now;
        self.previous_suppressed = suppressed;
        (sent > 0).then(|| {
            format!(
                "alerts in the last interval: {sent} ({}), {new_suppressed} repeats suppressed",
                by_kind.join(", ")
            )
        })
    }
}

/// The consumer's status line; returns it with the count to pass next time.
pub fn processing_line(
    stats: &ProcessingStats,
    consumer: &ConsumerStats,
    elapsed: f64,
    previous: u64,
) -> (String, u64) {
    let processed = consumer.processed.load(Ordering::Relaxed);
    let line = format!(
        "consumer: {:.0} records/s, readings {}, duplicates {}, gaps {}, dead letters {}, alerts {}, lag {}, partitions {}",
        (processed - previous) as f64 / elapsed,
        stats.readings.load(Ordering::Relaxed),
        stats.duplicates.load(Ordering::Relaxed),
        stats.sequence_gaps.load(Ordering::Relaxed),
        stats.dead_letters.load(Ordering::Relaxed),
        stats.alerts.load(Ordering::Relaxed),
        consumer.lag.load(Ordering::Relaxed),
        consumer.owned_partitions.load(Ordering::Relaxed),
    );
    (line, processed)
}

/// The status line of `metrocloud run`; returns it with the count to pass next time.
pub fn run_line(
    producer: &ProducerStats,
    stats: &ProcessingStats,
    consumer: &ConsumerStats,
    elapsed: f64,
    previous: u64,
) -> (String, u64) {
    let p = producer.snapshot();
    let line = format!(
        "{:.0} readings/s | acked {}, failed {}, pending {} | consumed {}, lag {}, duplicates {}, gaps {} | alerts {}, dead letters {}",
        (p.sent - previous) as f64 / elapsed,
        p.acked,
        p.failed,
        p.pending(),
        consumer.processed.load(Ordering::Relaxed),
        consumer.lag.load(Ordering::Relaxed),
        stats.duplicates.load(Ordering::Relaxed),
        stats.sequence_gaps.load(Ordering::Relaxed),
        stats.alerts.load(Ordering::Relaxed),
        stats.dead_letters.load(Ordering::Relaxed),
    );
    (line, p.sent)
}

/// Prints `line(seconds since last, previous count)` every [`STATUS_EVERY`]
/// until shutdown, and logs the alert digest of `alerts` when there is one.
pub fn spawn_status(
    shutdown: CancellationToken,
    alerts: Option<Arc<ProcessingStats>>,
    line: impl Fn(f64, u64) -> (String, u64) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut previous = 0;
        let mut last = Instant::now();
        let mut digest = AlertDigest::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(STATUS_EVERY) => {}
            }
            let elapsed = last.elapsed().as_secs_f64().max(0.001);
            last = Instant::now();
            let (text, count) = line(elapsed, previous);
            previous = count;
            println!("{text}");
            if let Some(line) = alerts.as_deref().and_then(|stats| digest.line(stats)) {
                tracing::info!("{line}");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_sums_up_each_interval_by_kind_and_is_silent_without_alerts() {
        let stats = ProcessingStats::default();
        let mut digest = AlertDigest::default();
        assert_eq!(digest.line(&stats), None);
        stats.alerts_by_kind[AlertKind::LowBattery.index()].fetch_add(2, Ordering::Relaxed);
        stats.alerts_by_kind[AlertKind::ExtremeTemperature.index()].fetch_add(1, Ordering::Relaxed);
        stats.alerts_suppressed.store(7, Ordering::Relaxed);
        assert_eq!(
            digest.line(&stats).as_deref(),
            Some(
                "alerts in the last interval: 3 (extreme_temperature 1, low_battery 2), 7 repeats suppressed"
            )
        );
        assert_eq!(digest.line(&stats), None, "nothing new since");
        stats.alerts_by_kind[AlertKind::LowBattery.index()].fetch_add(1, Ordering::Relaxed);
        assert_eq!(
            digest.line(&stats).as_deref(),
            Some("alerts in the last interval: 1 (low_battery 1), 0 repeats suppressed")
        );
    }
}
