//! A device's day: its mean value in each hour of the day, learned as it goes.

/// Readings an hour needs before its mean counts.
const LEARNED_AFTER: u8 = 3;
/// Weight of a new reading in its hour's mean, once the hour has this many.
const HOUR_WEIGHT_AFTER: u8 = 50;

/// The running mean of each hour of the day (UTC) and the spread around them.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DayProfile {
    means: [f32; 24],
    /// Readings taken per hour, up to 255: only whether an hour has more than
    /// [`HOUR_WEIGHT_AFTER`] matters, and a fleet keeps one profile a device.
    counts: [u8; 24],
    /// EWMA of the squared distance of a reading from its hour's mean.
    spread: f32,
}

impl Default for DayProfile {
    fn default() -> Self {
        DayProfile {
            means: [0.0; 24],
            counts: [0; 24],
            spread: 0.0,
        }
    }
}

impl DayProfile {
    /// Takes a normal reading `x` at `hour` (0 to 24).
    pub(super) fn learn(&mut self, hour: f32, x: f32) {
        let bin = bin(hour);
        let count = self.counts[bin].saturating_add(1);
        self.counts[bin] = count;
        let weight = 1.0 / f32::from(count.min(HOUR_WEIGHT_AFTER));
        if count > LEARNED_AFTER {
            let distance = x - self.means[bin];
            self.spread += 0.01 * (distance * distance - self.spread);
        }
        self.means[bin] += weight * (x - self.means[bin]);
    }

    /// Whether every hour has been seen enough for the profile to judge.
    pub(super) fn is_learned(&self) -> bool {
        self.counts.iter().all(|&c| c >= LEARNED_AFTER)
    }

    /// Whether `x` is far (6 σ of noise or more) from what this hour shows
    /// and three times closer to what the hour 6, 12 or 18 hours away shows.
    pub(super) fn fits_another_hour(&self, hour: f32, x: f32, sigma: f32) -> bool {
        if !self.is_learned() {
            return false;
        }
        let here = (x - self.means[bin(hour)]).abs();
        let elsewhere = [6.0, 12.0, 18.0]
            .into_iter()
            .map(|shift| (x - self.means[bin(hour + shift)]).abs())
            .fold(f32::INFINITY, f32::min);
        // Slow drifts move the whole day up or down: judged side by side.
        here > 6.0 * sigma && elsewhere < here / 3.0
    }
}

fn bin(hour: f32) -> usize {
    (hour.rem_euclid(24.0) as usize).min(23)
}
