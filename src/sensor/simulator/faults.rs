//! Fault episodes on simulated devices: what each kind does to the signal.
//!
//! Sizes are in units of the device kind's noise (its standard deviation, σ),
//! the scale a detector can learn, and chosen so that a faulty value stays
//! inside the range the threshold rules accept: these are the faults the
//! thresholds miss. Motion sensors report 0 or 1; the only fault they show
//! is silence.

use chrono::{DateTime, Utc};
use rand::RngExt;
use rand::rngs::SmallRng;

use crate::sensor::device::DeviceType;
use crate::sensor::fault::{FaultKind, FaultTruth};

/// How far a faulty value may move from the signal, at most, in σ.
const MAX_OFFSET_SIGMAS: f64 = 15.0;
/// A wrong-time-of-day episode starts only where the other hour's value
/// differs from this hour's by at least this many σ: elsewhere the value
/// would be right, whatever the clock says.
const MIN_WRONG_TIME_SIGMAS: f64 = 8.0;

/// A fault in progress on one device: 16 bytes, kept in the device's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct ActiveFault {
    pub(super) kind: FaultKind,
    /// Affected readings so far.
    pub(super) done: u16,
    /// Affected readings in all.
    pub(super) length: u16,
    /// The device's reading slot the episode started in (its times follow
    /// from the fleet's timeline).
    pub(super) first_slot: u32,
    /// Per kind: the offset or slope (σ, signed), the noise factor, the
    /// stuck value, or the hours of the clock's error.
    pub(super) size: f32,
}

impl ActiveFault {
    /// The label readings of this episode carry; `slot_time` is when the
    /// device's reading slot is due.
    pub(super) fn truth(&self, slot_time: impl Fn(u32) -> DateTime<Utc>) -> FaultTruth {
        FaultTruth {
            kind: self.kind,
            started_at: slot_time(self.first_slot),
            ends_at: slot_time(self.first_slot + u32::from(self.length) - 1),
        }
    }

    /// Whether every affected reading has been made.
    pub(super) fn is_over(&self) -> bool {
        self.done >= self.length
    }
}

/// The kinds a device of `device` can show, among `allowed`.
pub(super) fn possible(
    device: DeviceType,
    allowed: &[FaultKind],
) -> impl Iterator<Item = FaultKind> + '_ {
    allowed
        .iter()
        .copied()
        .filter(move |k| device != DeviceType::Motion || *k == FaultKind::Silence)
}

/// What the simulator needs to know to start an episode.
pub(super) struct Start<'a> {
    pub(super) device: DeviceType,
    pub(super) allowed: &'a [FaultKind],
    /// The device's reading slot now.
    pub(super) slot: u32,
    /// The signal's value now, and `hours` ahead of now.
    pub(super) value_now: f64,
    pub(super) value_at: &'a dyn Fn(f64) -> f64,
}

/// An episode of a kind drawn among the possible ones, or none when the
/// kind drawn cannot start now (a wrong clock that would show the right value).
pub(super) fn start(start: &Start<'_>, rng: &mut SmallRng) -> Option<ActiveFault> {
    let kinds: Vec<FaultKind> = possible(start.device, start.allowed).collect();
    if kinds.is_empty() {
        return None;
    }
    let kind = kinds[rng.random_range(0..kinds.len())];
    let sigma = noise_sigma(start.device);
    // Light cannot go below its night level without the low-light threshold
    // seeing it: its offsets go up.
    let sign = if start.device == DeviceType::Light || rng.random_bool(0.5) {
        1.0
    } else {
        -1.0
    };
    let (length, size): (u16, f64) = match kind {
        FaultKind::Spike => (1, sign * rng.random_range(6.0..10.0)),
        FaultKind::Stuck => (rng.random_range(10..=30), start.value_now),
        FaultKind::Drift => (rng.random_range(20..=60), sign * rng.random_range(0.5..1.0)),
        FaultKind::NoiseBurst => (rng.random_range(10..=30), rng.random_range(5.0..8.0)),
        FaultKind::LevelShift => (
            rng.random_range(10..=60),
            sign * rng.random_range(6.0..12.0),
        ),
        FaultKind::Silence => (rng.random_range(10..=30), 0.0),
        FaultKind::WrongTimeOfDay => {
            let hours = clock_error(start.device);
            let apart = ((start.value_at)(hours) - start.value_now).abs();
            if apart < MIN_WRONG_TIME_SIGMAS * sigma {
                return None;
            }
            (rng.random_range(20..=60), hours)
        }
    };
    Some(ActiveFault {
        kind,
        done: 0,
        length,
        first_slot: start.slot,
        size: size as f32,
    })
}

/// The hours a wrong clock is off by: half a day, or a quarter for pressure,
/// whose tide repeats every twelve hours.
pub(super) fn clock_error(device: DeviceType) -> f64 {
    if device == DeviceType::Pressure {
        6.0
    } else {
        12.0
    }
}

/// The value a device with `fault` reports instead of `value` (the signal
/// with its usual noise), given the signal `hours` away; counts the reading.
pub(super) fn apply(
    fault: &mut ActiveFault,
    device: DeviceType,
    value: f64,
    value_at: &dyn Fn(f64) -> f64,
    rng: &mut SmallRng,
) -> f64 {
    let sigma = noise_sigma(device);
    let size = f64::from(fault.size);
    let step = f64::from(fault.done);
    fault.done += 1;
    match fault.kind {
        FaultKind::Spike | FaultKind::LevelShift => value + size * sigma,
        FaultKind::Stuck => size,
        FaultKind::Drift => {
            let offset = (size * (step + 1.0)).clamp(-MAX_OFFSET_SIGMAS, MAX_OFFSET_SIGMAS);
            value + offset * sigma
        }
        // A lamp's night level is near the low-light threshold: its noise flickers up.
        FaultKind::NoiseBurst if device == DeviceType::Light => {
            value + size * sigma * super::gaussian(rng).abs()
        }
        FaultKind::NoiseBurst => value + size * sigma * super::gaussian(rng),
        FaultKind::WrongTimeOfDay => value_at(size) + sigma * super::gaussian(rng),
        FaultKind::Silence => value,
    }
}

/// The standard deviation of a kind's measurement noise.
pub(super) fn noise_sigma(kind: DeviceType) -> f64 {
    match kind {
        DeviceType::Temperature => 0.15,
        DeviceType::Humidity => 0.8,
        DeviceType::Pressure => 0.3,
        DeviceType::Light => 8.0,
        DeviceType::Motion => 0.0,
    }
}
