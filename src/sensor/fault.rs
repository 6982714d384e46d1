//! Sensor faults: the ways real sensors fail that a fixed threshold cannot see.
//!
//! A threshold catches a value no room, air or lamp can have. A failing sensor
//! usually reports values that each look possible: the same value over and
//! over, a slow walk away from the truth, a jump that stays in range, noise,
//! silence, a daytime value at night. The simulator injects these as
//! *episodes* (a kind, a start and an end) and labels the readings inside one
//! with [`FaultTruth`], so that the detector ([`crate::sensor::detect`]) can be
//! scored against the truth; the detector never reads the label.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::sensor::timestamp::{from_rfc3339, rfc3339_millis};

/// A kind of sensor fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// One reading (or two) far from the signal, though inside the normal range.
    Spike,
    /// The same value, reading after reading.
    Stuck,
    /// A calibration drift: an offset that grows reading by reading.
    Drift,
    /// The signal holds its level, but its noise grows several times over.
    NoiseBurst,
    /// A sudden offset that stays (a knocked or re-mounted sensor).
    LevelShift,
    /// No readings at all.
    Silence,
    /// Values normal for another hour of the day (a lamp left on at night,
    /// a clock half a day off).
    WrongTimeOfDay,
}

impl FaultKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Spike,
        FaultKind::Stuck,
        FaultKind::Drift,
        FaultKind::NoiseBurst,
        FaultKind::LevelShift,
        FaultKind::Silence,
        FaultKind::WrongTimeOfDay,
    ];

    /// The name used in records, alerts, settings and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Spike => "spike",
            FaultKind::Stuck => "stuck",
            FaultKind::Drift => "drift",
            FaultKind::NoiseBurst => "noise_burst",
            FaultKind::LevelShift => "level_shift",
            FaultKind::Silence => "silence",
            FaultKind::WrongTimeOfDay => "wrong_time_of_day",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown fault kind {text:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Ground truth carried by a reading inside a fault episode (for a silence,
/// by the first reading after it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultTruth {
    /// What is wrong.
    pub kind: FaultKind,
    /// When the episode's first affected reading was due.
    #[serde(serialize_with = "rfc3339_millis", deserialize_with = "from_rfc3339")]
    pub started_at: DateTime<Utc>,
    /// When its last affected reading is due: the episode is over after it.
    #[serde(serialize_with = "rfc3339_millis", deserialize_with = "from_rfc3339")]
    pub ends_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_name() {
        for kind in FaultKind::ALL {
            assert_eq!(kind.as_str().parse::<FaultKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        let refused = "stuk".parse::<FaultKind>().unwrap_err();
        assert!(
            refused.contains("\"stuk\"") && refused.contains("noise_burst"),
            "{refused}"
        );
    }
}
