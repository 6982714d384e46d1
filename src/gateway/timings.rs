//! Histograms of the gateway's waits, as `/metrics` shows them: how long
//! each group commit takes, and how long a device waits for its PUBACK
//! inside the gateway.
//!
//! A device waits for the group commit running when its reading came in and
//! then for its own, so a PUBACK's latency is one to two commits plus the
//! gateway's own work plus the network. When acknowledgements are slow, the
//! two histograms tell where the time went: the commits' says whether the
//! disk is why (an edge box's flash card, or brokers writing to the same
//! disk); the acknowledgements' (from a PUBLISH read off the socket to its
//! PUBACK written back) holds everything the gateway does, so what a device
//! measures beyond it was spent before the gateway read the packet or after
//! it wrote the answer (the network, the device, a busy machine). A commit
//! is timed from asking for the buffer's lock to the end of its fsync, a
//! segment switch included. Recording is a few atomic additions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The group commits' metric on `/metrics` (after `metrocloud_`).
pub const COMMIT_METRIC: &str = "gateway_group_commit_seconds";

/// The acknowledgements' metric on `/metrics` (after `metrocloud_`).
pub const ACK_METRIC: &str = "gateway_ack_seconds";

/// The buckets' upper bounds, seconds: from an idle SSD's fsync (well under
/// a millisecond) to a stalled disk's.
pub const BOUNDS_SECONDS: [f64; 17] = [
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25,
    0.5, 1.0, 2.5,
];

/// Durations counted per bucket.
#[derive(Debug, Default)]
pub struct Timings {
    /// One count per bound, and a last one for longer ones.
    counts: [AtomicU64; BOUNDS_SECONDS.len() + 1],
    sum_micros: AtomicU64,
}

/// The histogram at one moment, as Prometheus has it.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Each bound with the waits that took at most that long (cumulative).
    pub buckets: Vec<(f64, u64)>,
    /// Every wait counted.
    pub count: u64,
    /// Their durations added up, seconds.
    pub sum_seconds: f64,
}

impl Timings {
    /// Counts one wait that took `took`.
    pub fn record(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = BOUNDS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BOUNDS_SECONDS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> Histogram {
        let mut cumulative = 0;
        let buckets = BOUNDS_SECONDS
            .iter()
            .zip(&self.counts)
            .map(|(bound, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (*bound, cumulative)
            })
            .collect();
        let longer = self.counts[BOUNDS_SECONDS.len()].load(Ordering::Relaxed);
        Histogram {
            buckets,
            count: cumulative + longer,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

impl Histogram {
    /// The histogram `metric` ([`COMMIT_METRIC`], [`ACK_METRIC`]) on a
    /// gateway's `/metrics` page, if it has it.
    pub fn parse(metrics: &str, metric: &str) -> Option<Histogram> {
        let name = format!("metrocloud_{metric}");
        let value = |line: &str| line.rsplit(' ').next()?.parse::<f64>().ok();
        let mut buckets = Vec::new();
        let (mut count, mut sum_seconds) = (None, None);
        for line in metrics.lines() {
            let Some(rest) = line.strip_prefix(name.as_str()) else {
                continue;
            };
            if let Some(bound) = rest.strip_prefix("_bucket{le=\"") {
                let bound = bound.split('"').next()?;
                if bound != "+Inf" {
                    buckets.push((bound.parse().ok()?, value(rest)? as u64));
                }
            } else if rest.starts_with("_count ") {
                count = Some(value(rest)? as u64);
            } else if rest.starts_with("_sum ") {
                sum_seconds = Some(value(rest)?);
            }
        }
        Some(Histogram {
            buckets,
            count: count?,
            sum_seconds: sum_seconds?,
        })
    }

    /// The bound under which at least `quantile` of the waits fell
    /// (`None` without any; infinity when they lie past every bound).
    pub fn quantile_bound(&self, quantile: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let needed = (quantile * self.count as f64).ceil().max(1.0) as u64;
        Some(
            self.buckets
                .iter()
                .find(|(_, cumulative)| *cumulative >= needed)
                .map_or(f64::INFINITY, |(bound, _)| *bound),
        )
    }

    /// [`Histogram::quantile_bound`] in milliseconds, `None` also when the
    /// waits lie past every bound.
    pub fn quantile_ms(&self, quantile: f64) -> Option<f64> {
        self.quantile_bound(quantile)
            .filter(|bound| bound.is_finite())
            .map(|bound| bound * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_commit_falls_in_the_first_bucket_whose_bound_it_does_not_pass() {
        let times = Timings::default();
        for micros in [300, 500, 501, 2_500, 9_000] {
            times.record(Duration::from_micros(micros));
        }
        let histogram = times.snapshot();
        let at = |bound: f64| {
            histogram
                .buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map(|(_, n)| *n)
        };
        assert_eq!(at(0.0005), Some(2));
        assert_eq!(at(0.001), Some(3));
        assert_eq!(at(0.003), Some(4));
        assert_eq!(at(0.01), Some(5));
        assert_eq!(histogram.count, 5);
        assert!((histogram.sum_seconds - 0.012_801).abs() < 1e-9);
    }

    #[test]
    fn the_histogram_reads_back_from_the_metrics_page_it_is_written_into() {
        let times = Timings::default();
        for micros in [700, 2_000, 40_000, 3_000_000] {
            times.record(Duration::from_micros(micros));
        }
        let written = times.snapshot();
        let mut page = crate::exposition::Exposition::new();
        page.counter("gateway_readings_accepted_total", "Readings.", 4);
        page.histogram(
            COMMIT_METRIC,
            "Commits.",
            &written.buckets,
            written.count,
            written.sum_seconds,
        );
        let text = page.into_text();
        assert!(
            text.contains("metrocloud_gateway_group_commit_seconds_bucket{le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert_eq!(Histogram::parse(&text, COMMIT_METRIC), Some(written));
        assert_eq!(Histogram::parse(&text, ACK_METRIC), None);
        assert_eq!(
            Histogram::parse("metrocloud_other_total 1\n", COMMIT_METRIC),
            None
        );
    }

    #[test]
    fn quantiles_are_the_bound_of_the_bucket_that_reaches_them() {
        let times = Timings::default();
        assert_eq!(times.snapshot().quantile_bound(0.99), None);
        for _ in 0..98 {
            times.record(Duration::from_micros(400));
        }
        times.record(Duration::from_millis(12));
        times.record(Duration::from_secs(4));
        let histogram = times.snapshot();
        assert_eq!(histogram.quantile_bound(0.5), Some(0.0005));
        assert_eq!(histogram.quantile_bound(0.99), Some(0.015));
        assert_eq!(histogram.quantile_bound(1.0), Some(f64::INFINITY));
        assert_eq!(histogram.quantile_ms(0.99), Some(15.0));
        assert_eq!(histogram.quantile_ms(1.0), None, "past every bound");
        assert_eq!(histogram.count, 100);
    }
}
