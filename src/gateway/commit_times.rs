//! How long each group commit takes to write out and fsync the buffer's
//! appends: the disk's share of every acknowledgement's wait.
//!
//! A device waits for the group commit running when its reading came in and
//! then for its own, so a PUBACK's latency is one to two commits plus the
//! network. When acknowledgements are slow, this histogram tells whether the
//! disk is why (an edge box's flash card, or brokers writing to the same
//! disk) or the CPU is. A commit is timed from asking for the buffer's lock
//! to the end of its fsync, so a segment switch holding that lock (it fsyncs
//! the full segment) counts too. Recording one is a few atomic additions,
//! once per commit, not per reading.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The metric's name on `/metrics` (after `metrocloud_`).
pub const METRIC: &str = "gateway_group_commit_seconds";

/// The buckets' upper bounds, seconds: from an idle SSD's fsync (well under
/// a millisecond) to a stalled disk's.
pub const BOUNDS_SECONDS: [f64; 17] = [
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25,
    0.5, 1.0, 2.5,
];

/// Commit durations counted per bucket.
#[derive(Debug, Default)]
pub struct CommitTimes {
    /// One count per bound, and a last one for longer commits.
    counts: [AtomicU64; BOUNDS_SECONDS.len() + 1],
    sum_micros: AtomicU64,
}

/// The histogram at one moment, as Prometheus has it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitHistogram {
    /// Each bound with the commits that took at most that long (cumulative).
    pub buckets: Vec<(f64, u64)>,
    /// Every commit.
    pub count: u64,
    /// Their durations added up, seconds.
    pub sum_seconds: f64,
}

impl CommitTimes {
    /// Counts one commit that took `took`.
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
    pub fn snapshot(&self) -> CommitHistogram {
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
        CommitHistogram {
            buckets,
            count: cumulative + longer,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

impl CommitHistogram {
    /// The histogram on a gateway's `/metrics` page, if it has one.
    pub fn parse(metrics: &str) -> Option<CommitHistogram> {
        let name = format!("metrocloud_{METRIC}");
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
        Some(CommitHistogram {
            buckets,
            count: count?,
            sum_seconds: sum_seconds?,
        })
    }

    /// The bound under which at least `quantile` of the commits fell
    /// (`None` without commits; infinity when they lie past every bound).
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_commit_falls_in_the_first_bucket_whose_bound_it_does_not_pass() {
        let times = CommitTimes::default();
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
        let times = CommitTimes::default();
        for micros in [700, 2_000, 40_000, 3_000_000] {
            times.record(Duration::from_micros(micros));
        }
        let written = times.snapshot();
        let mut page = crate::exposition::Exposition::new();
        page.counter("gateway_readings_accepted_total", "Readings.", 4);
        page.histogram(
            METRIC,
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
        assert_eq!(CommitHistogram::parse(&text), Some(written));
        assert_eq!(CommitHistogram::parse("metrocloud_other_total 1\n"), None);
    }

    #[test]
    fn quantiles_are_the_bound_of_the_bucket_that_reaches_them() {
        let times = CommitTimes::default();
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
        assert_eq!(histogram.count, 100);
    }
}
