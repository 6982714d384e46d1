//! How well the threshold rules match the simulator's ground truth.

/// How well the threshold rules match the simulator's ground truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertQuality {
    /// Anomalous readings a rule fired on.
    pub true_positives: u64,
    /// Normal readings a rule fired on.
    pub false_positives: u64,
    /// Anomalous readings no rule fired on.
    pub false_negatives: u64,
}

impl AlertQuality {
    /// Counts one reading: did a threshold rule fire, and was the reading an injected anomaly.
    pub fn record(&mut self, fired: bool, anomalous: bool) {
        match (fired, anomalous) {
            (true, true) => self.true_positives += 1,
            (true, false) => self.false_positives += 1,
            (false, true) => self.false_negatives += 1,
            (false, false) => {}
        }
    }

    /// Share of firings that were real anomalies (1 when nothing fired).
    pub fn precision(&self) -> f64 {
        let fired = self.true_positives + self.false_positives;
        if fired == 0 {
            1.0
        } else {
            self.true_positives as f64 / fired as f64
        }
    }

    /// Share of real anomalies a rule fired on (1 when there were none).
    pub fn recall(&self) -> f64 {
        let real = self.true_positives + self.false_negatives;
        if real == 0 {
            1.0
        } else {
            self.true_positives as f64 / real as f64
        }
    }
}
