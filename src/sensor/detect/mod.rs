//! A streaming detector per device for the faults thresholds miss.
//!
//! It learns each device's normal behaviour from the readings themselves, as
//! they come: no training pause, no model file. Every reading gets a score
//! from 0 to 1 and, when it looks wrong, the kind of fault it looks like; an
//! episode raises one alert when it is first recognised and stays open, quiet,
//! until the device has been normal again for a few readings.
//!
//! The methods, each a published one kept to a few numbers per device:
//!
//! - **Prediction**: Holt's linear exponential smoothing (C. C. Holt, 1957,
//!   *Forecasting seasonals and trends by exponentially weighted moving
//!   averages*, reprinted in Int. J. Forecasting 20(1), 2004), level weight
//!   0.1 and slope weight 0.1, follows the level and its slope, so the daily
//!   cycle and slow trends are not faults. A residual is clipped at 3 σ before
//!   it updates the level (a Huber-type update), so one outlier barely moves it.
//! - **Noise (σ)**: while the model is young, from the mean absolute
//!   difference of successive values (2σ/√π for Gaussian noise), which a
//!   shift in the first readings hardly disturbs; then a winsorised EWMA of
//!   the squared residuals (at most 2.5 σ each), so that a fault the detector
//!   missed cannot inflate σ and hide the next one. Nothing is learned from
//!   the readings of an open episode.
//! - **Spike and jump**: a standardised residual of 5 or more whose next two
//!   readings are back within 3 is a spike; two in a row of 4 or more on the
//!   same side, within 3 of each other, are a level shift.
//! - **Small and slow shifts**: the two-sided CUSUM of the standardised
//!   residuals (E. S. Page, 1954, *Continuous inspection schemes*,
//!   Biometrika 41), reference 1, decision interval 8, each step at most 4
//!   (a lone spike is no shift). An alarm with no residual beyond 4 on the
//!   way is a drift; otherwise a level shift.
//! - **Drift by its slope**: Holt's slope at 4 times its usual size (an EWMA
//!   of its absolute value) and at least 0.3 σ per reading, two readings in a row.
//! - **Noise burst**: an EWMA of the squared standardised residuals with
//!   weight 0.3 (the EWMA chart of S. W. Roberts, 1959, *Control chart tests
//!   based on geometric moving averages*, Technometrics 1) at 9 or more
//!   (in control: 1), its mean small beside it, and two of the last three
//!   residuals beyond 3.
//! - **Stuck**: a run of identical values longer than the device's own rate
//!   of repeats makes likely (a run of `r` repeats at rate `p` has chance
//!   `p^r`; the run needed keeps that under one in a million, 3 to 12).
//! - **Silence**: no reading for [`DetectorSettings::silence_gaps`] times the
//!   device's usual gap (an EWMA of its gaps, a late one counting twice the
//!   usual at most); see [`DeviceDetector::is_silent`].
//! - **Wrong time of day**: a profile of the device's mean value per hour of
//!   the day (24 running means, in `profile.rs`). A shift whose values are 6 σ or
//!   more from this hour's mean and three times closer to the mean 6, 12 or
//!   18 hours away is named `wrong_time_of_day` once every hour has been seen.
//!
//! An episode stays open until the device has been calm (residual within
//! 3 σ, no repeat, no noise) for [`DetectorSettings::quiet`] readings, the
//! level following it slowly, or for [`DetectorSettings::relearn`] readings
//! at most. The way back from a shift, soon after its episode closed
//! ([`DetectorSettings::rearm`]), belongs to it and raises nothing.
//!
//! The state is [`DeviceDetector`], 240 bytes with no heap behind it; the
//! work per reading is a few dozen arithmetic operations. Motion sensors
//! (0 or 1) are watched for silence only.

pub mod fleet;
mod profile;
pub mod quality;
pub mod series;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Timelike, Utc};

use crate::sensor::device::DeviceType;
use crate::sensor::fault::FaultKind;
use profile::DayProfile;

/// How the detector decides; `DETECT_*` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorSettings {
    /// Readings a device makes before it can raise an alert (its noise is learned by then).
    pub warmup: u32,
    /// Normal readings that close an episode.
    pub quiet: u32,
    /// Readings after which an episode's values count as the device's new normal.
    pub relearn: u32,
    /// Readings after an episode closes during which a new finding belongs
    /// to it (a fault's end looks like a fault too): no second alert.
    pub rearm: u32,
    /// Gaps of the usual length without a reading that make a device silent.
    pub silence_gaps: f64,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        DetectorSettings {
            warmup: 30,
            quiet: 5,
            relearn: 240,
            rearm: 30,
            silence_gaps: 3.0,
        }
    }
}

/// What the detector made of one reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// 0 (as expected) to 1 (a fault for certain): the largest of the
    /// statistics, each divided by the value at which it raises an alert.
    pub score: f64,
    /// The fault the reading looks like, when its score is 1 or an episode is open.
    pub kind: Option<FaultKind>,
    /// Set on the reading that opens an episode: the one alert it raises.
    pub raised: Option<FaultKind>,
}

/// Weight of a new difference in the noise estimate.
const DIFFERENCE_WEIGHT: f32 = 0.01;
/// Weight of a new residual in the noise variance.
const VARIANCE_WEIGHT: f32 = 0.01;
/// Weight of the slope in its usual size.
const SLOPE_HABIT_WEIGHT: f32 = 0.005;
/// A drift: a slope this many times the usual and this many σ per reading
/// or more, for this many readings.
const STEEP_FACTOR: f32 = 4.0;
const STEEP_SIGMAS: f32 = 0.3;
const STEEP_READINGS: u8 = 2;
/// Holt's weights: level and slope.
const LEVEL_WEIGHT: f32 = 0.1;
const SLOPE_WEIGHT: f32 = 0.1;
/// A residual beyond this many σ is an outlier: clipped before it updates the model.
const CLIP: f32 = 3.0;
const SPIKE_Z: f32 = 5.0;
const JUMP_Z: f32 = 4.0;
const CALM_Z: f32 = 3.0;
const CUSUM_REFERENCE: f32 = 1.0;
const CUSUM_LIMIT: f32 = 8.0;
const CUSUM_STEP: f32 = 4.0;
const BURST_WEIGHT: f32 = 0.3;
const BURST_LIMIT: f32 = 9.0;
/// Chance of a false stuck alarm per reading that the run length allows.
const STUCK_CHANCE: f64 = 1e-6;

/// One device's detector.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceDetector {
    seen: u32,
    last_at_ms: i64,
    /// Usual time between readings, ms (EWMA).
    gap_ms: f32,
    last_value: f32,
    level: f32,
    slope: f32,
    /// Mean absolute difference of successive normal values (EWMA): the
    /// noise while the model is young.
    mean_difference: f32,
    /// Winsorised EWMA of the squared residuals: the noise once it has learned.
    variance: f32,
    /// Typical size of the slope (EWMA of its absolute value).
    usual_slope: f32,
    /// Readings in a row with a slope far beyond the usual.
    steep: u8,
    cusum_up: f32,
    cusum_down: f32,
    /// Largest |z| while the CUSUM built up.
    cusum_peak: f32,
    burst_square: f32,
    burst_mean: f32,
    /// The two readings before: their standardised residuals.
    z_before: [f32; 2],
    repeat_rate: f32,
    repeats: u16,
    open: Option<FaultKind>,
    open_for: u32,
    calm: u32,
    /// Readings since the last episode closed.
    since_close: u32,
    /// The side (+1 or -1) the open or last episode's values went, 0 for none.
    side: i8,
    /// Whether its values are judged, or only its silences (a motion
    /// sensor's 0s and 1s have no level, noise or day to learn).
    judges_values: bool,
    profile: DayProfile,
}

impl Default for DeviceDetector {
    fn default() -> Self {
        DeviceDetector {
            seen: 0,
            last_at_ms: 0,
            gap_ms: 0.0,
            last_value: 0.0,
            level: 0.0,
            slope: 0.0,
            mean_difference: 0.0,
            variance: 0.0,
            usual_slope: 0.0,
            steep: 0,
            cusum_up: 0.0,
            cusum_down: 0.0,
            cusum_peak: 0.0,
            burst_square: 1.0,
            burst_mean: 0.0,
            z_before: [0.0; 2],
            repeat_rate: 0.02,
            repeats: 0,
            open: None,
            open_for: 0,
            calm: 0,
            since_close: u32::MAX,
            side: 0,
            judges_values: true,
            profile: DayProfile::default(),
        }
    }
}

impl DeviceDetector {
    /// A detector that has seen nothing yet.
    pub fn new() -> DeviceDetector {
        DeviceDetector::default()
    }

    /// The detector for a device of `kind`: values and silences, or only
    /// silences for motion sensors.
    pub fn for_device(kind: DeviceType) -> DeviceDetector {
        DeviceDetector {
            judges_values: kind != DeviceType::Motion,
            ..DeviceDetector::default()
        }
    }

    /// The episode open now, if any.
    pub fn open_episode(&self) -> Option<FaultKind> {
        self.open
    }

    /// Whether the device has been quiet for longer than its silence limit at
    /// `now` (ms since the epoch); the caller asks this of every device now and then.
    pub fn is_silent(&self, now_ms: i64, settings: &DetectorSettings) -> bool {
        self.seen >= settings.warmup.max(2)
            && (now_ms - self.last_at_ms) as f64 > settings.silence_gaps * f64::from(self.gap_ms)
    }

    /// Records that the device was found silent: opens a silence episode and
    /// says whether this raised its alert (it does once per silence).
    pub fn mark_silent(&mut self) -> bool {
        if self.open == Some(FaultKind::Silence) {
            return false;
        }
        if self.open.is_none() {
            self.open = Some(FaultKind::Silence);
            self.open_for = 0;
            self.calm = 0;
            return true;
        }
        false
    }

    /// Scores the reading of `value` taken at `at`.
    pub fn observe(
        &mut self,
        at: DateTime<Utc>,
        value: f64,
        settings: &DetectorSettings,
    ) -> Verdict {
        let at_ms = at.timestamp_millis();
        let hour = at.num_seconds_from_midnight() as f32 / 3600.0;
        let x = value as f32;
        if self.seen == 0 {
            self.seen = 1;
            self.last_at_ms = at_ms;
            self.last_value = x;
            self.level = x;
            return Verdict {
                score: 0.0,
                kind: None,
                raised: None,
            };
        }
        let gap = (at_ms - self.last_at_ms).max(0) as f32;
        // 0 for a usual gap, 1 at the silence limit.
        let gap_score = if self.seen >= settings.warmup && self.gap_ms > 0.0 {
            ((f64::from(gap) / f64::from(self.gap_ms) - 1.0)
                / (settings.silence_gaps - 1.0).max(0.1))
            .max(0.0)
        } else {
            0.0
        };
        // A device back from a silence: that episode is over.
        let back_from_silence = self.open == Some(FaultKind::Silence);
        if back_from_silence {
            self.open = None;
            self.calm = 0;
        }
        let steps = if self.gap_ms > 0.0 {
            (gap / self.gap_ms).clamp(1.0, 100.0).round()
        } else {
            1.0
        };
        let predicted = self.level + self.slope * steps;
        let residual = x - predicted;
        let sigma = self.sigma();
        let z = if self.seen < 3 { 0.0 } else { residual / sigma };
        let learning = self.seen < settings.warmup;

        // Repeats of the same value.
        let repeated = x == self.last_value;
        self.repeats = if repeated {
            self.repeats.saturating_add(1)
        } else {
            0
        };
        let needed = stuck_run(self.repeat_rate);

        // Noise and shifts.
        let zc = z.clamp(-10.0, 10.0);
        self.burst_square += BURST_WEIGHT * (zc * zc - self.burst_square);
        self.burst_mean += BURST_WEIGHT * (zc - self.burst_mean);
        if self.cusum_up <= 0.0 && self.cusum_down <= 0.0 {
            self.cusum_peak = 0.0;
        }
        // One outlier adds at most CUSUM_STEP: a lone spike is no shift.
        let step = zc.clamp(-CUSUM_STEP, CUSUM_STEP);
        self.cusum_up = (self.cusum_up + step - CUSUM_REFERENCE).max(0.0);
        self.cusum_down = (self.cusum_down - step - CUSUM_REFERENCE).max(0.0);
        self.cusum_peak = self.cusum_peak.max(zc.abs());

        // A slope far beyond the device's usual ones, reading after reading.
        let steep = self.slope.abs() >= (STEEP_FACTOR * self.usual_slope).max(STEEP_SIGMAS * sigma);
        self.steep = if steep {
            self.steep.saturating_add(1)
        } else {
            0
        };

        let [z2, z1] = self.z_before;
        let mut found = None;
        if !learning && self.judges_values {
            if u32::from(self.repeats) >= needed {
                found = Some(FaultKind::Stuck);
            } else if z1.abs() >= JUMP_Z
                && z.abs() >= JUMP_Z
                && z1.signum() == z.signum()
                && (z - z1).abs() < CALM_Z
            {
                found = Some(self.shift_kind(hour, x, sigma));
            } else if z2.abs() >= SPIKE_Z && z1.abs() < CALM_Z && z.abs() < CALM_Z {
                found = Some(FaultKind::Spike);
            } else if self.burst_square >= BURST_LIMIT
                && self.burst_mean.abs() < 0.5 * self.burst_square.sqrt()
                && [z2, z1, z].iter().filter(|z| z.abs() >= CALM_Z).count() >= 2
            {
                found = Some(FaultKind::NoiseBurst);
            } else if self.steep >= STEEP_READINGS {
                found = Some(FaultKind::Drift);
            } else if self.cusum_up.max(self.cusum_down) >= CUSUM_LIMIT {
                found = Some(if self.cusum_peak < JUMP_Z {
                    FaultKind::Drift
                } else {
                    self.shift_kind(hour, x, sigma)
                });
            }
        }
        let score = [
            f64::from(u16::min(self.repeats, 1000)) / f64::from(needed),
            f64::from(z.abs() / SPIKE_Z),
            f64::from(self.cusum_up.max(self.cusum_down) / CUSUM_LIMIT),
            f64::from(self.burst_square / BURST_LIMIT),
            gap_score,
        ]
        .into_iter()
        .fold(0.0_f64, f64::max)
        .min(1.0);
        let score = match (learning, self.judges_values) {
            (true, _) => 0.0,
            (false, true) => score,
            (false, false) => gap_score.min(1.0),
        };

        let mut raised = None;
        match self.open {
            None => {
                self.since_close = self.since_close.saturating_add(1);
                if let Some(kind) = found {
                    let side = match kind {
                        FaultKind::LevelShift | FaultKind::Drift | FaultKind::WrongTimeOfDay => {
                            if z > 0.0 { 1 } else { -1 }
                        }
                        _ => 0,
                    };
                    // The way back from a shift, soon after its episode ended.
                    let return_of_last =
                        self.since_close <= settings.rearm && side != 0 && side == -self.side;
                    self.open = Some(kind);
                    self.open_for = 0;
                    self.calm = 0;
                    self.side = if return_of_last { 0 } else { side };
                    if !return_of_last {
                        raised = Some(kind);
                    }
                }
            }
            Some(_) => {
                self.open_for += 1;
                let calm = z.abs() < CALM_Z && !repeated && self.burst_square < BURST_LIMIT / 2.0;
                self.calm = if calm { self.calm + 1 } else { 0 };
                if self.calm >= settings.quiet || self.open_for >= settings.relearn {
                    if self.open_for >= settings.relearn {
                        // What lasts this long is the device's normal now.
                        self.level = x;
                        self.slope = 0.0;
                    }
                    self.close();
                }
            }
        }

        let open = self.open.is_some();
        if open {
            // The level follows slowly, so that the episode can end when the
            // device settles; the noise is not learned from the fault.
            let clipped = residual.clamp(-CLIP * sigma, CLIP * sigma);
            self.level = predicted + LEVEL_WEIGHT * clipped;
            self.slope *= 0.9;
        } else {
            self.learn(x, residual, sigma, steps, repeated, hour, learning);
        }
        self.z_before = [z1, z];
        if self.gap_ms == 0.0 {
            self.gap_ms = gap;
        } else if !back_from_silence {
            // A late reading counts as twice the usual gap at most.
            self.gap_ms += 0.1 * (gap.min(2.0 * self.gap_ms) - self.gap_ms);
        }
        self.last_at_ms = at_ms;
        self.last_value = x;
        self.seen = self.seen.saturating_add(1);
        let kind = self
            .open
            .or(found)
            .or((score >= 1.0 && back_from_silence).then_some(FaultKind::Silence));
        Verdict {
            score: if self.open.is_some() {
                score.max(0.5)
            } else {
                score
            },
            kind,
            raised,
        }
    }

    fn sigma(&self) -> f32 {
        // A floor for devices whose values barely move: the float's own grain.
        self.variance.sqrt().max(1e-5 * self.level.abs()).max(1e-6)
    }

    /// The noise from the mean absolute difference of successive values:
    /// E|x(t) - x(t-1)| = 2σ/√π for Gaussian noise. Differences hardly see
    /// a level shift or the day's cycle, so a fault in the first readings
    /// does not teach the detector a noise it does not have.
    fn difference_sigma(&self) -> f32 {
        self.mean_difference * (std::f32::consts::PI.sqrt() / 2.0)
    }

    /// A jump that fits another hour of the day better than this one is a
    /// clock's fault, not the sensor's.
    fn shift_kind(&self, hour: f32, x: f32, sigma: f32) -> FaultKind {
        match self.profile.fits_another_hour(hour, x, sigma) {
            true => FaultKind::WrongTimeOfDay,
            false => FaultKind::LevelShift,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn learn(
        &mut self,
        x: f32,
        residual: f32,
        sigma: f32,
        steps: f32,
        repeated: bool,
        hour: f32,
        learning: bool,
    ) {
        let clipped = if self.seen < 3 {
            residual
        } else {
            residual.clamp(-CLIP * sigma, CLIP * sigma)
        };
        let previous = self.level;
        self.level = self.level + self.slope * steps + LEVEL_WEIGHT * clipped;
        if self.seen >= 2 {
            let observed_slope = (self.level - previous) / steps;
            self.slope += SLOPE_WEIGHT * (observed_slope - self.slope);
        }
        let weight = if learning {
            1.0 / self.seen as f32
        } else {
            DIFFERENCE_WEIGHT
        }
        .max(DIFFERENCE_WEIGHT);
        let difference = (x - self.last_value).abs();
        let bounded = if self.seen < 3 {
            difference
        } else {
            difference.min(4.0 * sigma)
        };
        self.mean_difference += weight * (bounded - self.mean_difference);
        if learning {
            self.variance = self.difference_sigma().powi(2);
        } else {
            // Winsorised: a residual counts as 2.5 σ at most, so a fault the
            // model missed cannot inflate σ and hide the next one.
            let bounded = residual.clamp(-2.5 * sigma, 2.5 * sigma);
            self.variance += VARIANCE_WEIGHT * (bounded * bounded - self.variance);
        }
        self.usual_slope += SLOPE_HABIT_WEIGHT * (self.slope.abs() - self.usual_slope);
        self.repeat_rate += 0.01 * (f32::from(u8::from(repeated)) - self.repeat_rate);
        self.profile.learn(hour, x);
    }

    fn close(&mut self) {
        self.open = None;
        self.since_close = 0;
        self.open_for = 0;
        self.calm = 0;
        self.cusum_up = 0.0;
        self.cusum_down = 0.0;
        self.cusum_peak = 0.0;
        self.burst_square = 1.0;
        self.burst_mean = 0.0;
        self.repeats = 0;
    }
}

/// Repeats in a row that a device repeating values at `rate` makes with a
/// chance under [`STUCK_CHANCE`] (3 at least, 12 at most).
fn stuck_run(rate: f32) -> u32 {
    let rate = f64::from(rate).clamp(1e-3, 0.5);
    (STUCK_CHANCE.ln() / rate.ln()).ceil().clamp(3.0, 12.0) as u32
}
