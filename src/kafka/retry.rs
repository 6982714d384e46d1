//! How long to wait between attempts, and when to stop attempting.
//!
//! The two questions are kept apart on purpose: [`Backoff`] only says how long
//! the next pause is (exponential, with jitter so that many clients do not
//! retry in step), and [`Deadline`] says when no more pauses are allowed.
//! Whether an error is worth retrying at all is decided by the caller, which
//! knows what the error means.

use std::time::Duration;

use rand::RngExt;
use tokio::time::Instant;

/// Exponential backoff with full jitter, capped.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `initial` and doubles up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// The pause before the next attempt: random between half and all of the
    /// current step, which then doubles.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = step / 2;
        let jitter = rand::rng().random_range(0..=half.as_micros() as u64);
        half + Duration::from_micros(jitter)
    }

    /// Starts again from the initial step (after a success).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// A point in time after which an operation gives up.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// A deadline `limit` from now.
    pub fn after(limit: Duration) -> Self {
        Deadline {
            at: Instant::now() + limit,
        }
    }

    /// Time left, zero once passed.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn has_passed(&self) -> bool {
        self.remaining().is_zero()
    }

    /// Sleeps for `pause`, or until the deadline if that is sooner.
    /// Returns false, without sleeping, when the deadline has already passed.
    pub async fn sleep(&self, pause: Duration) -> bool {
        let remaining = self.remaining();
        if remaining.is_zero() {
            return false;
        }
        tokio::time::sleep(pause.min(remaining)).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_stops_at_its_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<Duration> = (0..5).map(|_| backoff.next_delay()).collect();
        let steps = [100, 200, 400, 400, 400];
        for (delay, step) in delays.iter().zip(steps) {
            let step = Duration::from_millis(step);
            assert!(
                *delay >= step / 2 && *delay <= step,
                "{delay:?} vs {step:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_passed_deadline_refuses_to_sleep() {
        let deadline = Deadline::after(Duration::ZERO);
        assert!(deadline.has_passed());
        assert!(!deadline.sleep(Duration::from_secs(10)).await);
    }
}
