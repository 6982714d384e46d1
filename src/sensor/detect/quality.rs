//! How well the detector's alerts match the simulator's fault episodes.
//!
//! Judged by event, not by reading: an episode is *found* when an alert for
//! its device is raised between its start and a grace of a few readings
//! after its end (a detector confirms a fault a reading or two in, and the
//! way back from a shift is part of it); an alert is *true* when it falls
//! in such a window of some episode, whatever kind it names. An alert raised
//! before its episode's label has been seen (a silence is labelled by the
//! reading after it) waits for the device's next reading to be judged.
//! Precision per kind counts the alerts that name that kind; recall per kind
//! counts the episodes of that kind. The delay is in the device's readings,
//! from the episode's first affected reading to the first alert.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::sensor::device::DeviceKey;
use crate::sensor::fault::{FaultKind, FaultTruth};

/// Readings after an episode's end in which an alert still belongs to it.
pub const GRACE_READINGS: i64 = 8;
/// Delays the histogram tells apart; longer ones share its last bucket.
const DELAY_BUCKETS: usize = 64;

/// The tally of one fault kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindQuality {
    /// The kind.
    pub kind: FaultKind,
    /// Episodes of this kind.
    pub episodes: u64,
    /// Those an alert was raised for.
    pub found: u64,
    /// Alerts naming this kind.
    pub alerts: u64,
    /// Those that fell inside an episode.
    pub true_alerts: u64,
    /// Delays of the episodes found, in readings: how many took 0, 1, ... 63 or more.
    #[serde(skip)]
    delays: Vec<u64>,
}

impl KindQuality {
    fn new(kind: FaultKind) -> KindQuality {
        KindQuality {
            kind,
            episodes: 0,
            found: 0,
            alerts: 0,
            true_alerts: 0,
            delays: vec![0; DELAY_BUCKETS],
        }
    }

    /// Share of this kind's alerts that were inside an episode (1 when none was raised).
    pub fn precision(&self) -> f64 {
        ratio(self.true_alerts, self.alerts)
    }

    /// Share of this kind's episodes that were found (1 when there were none).
    pub fn recall(&self) -> f64 {
        ratio(self.found, self.episodes)
    }

    /// Harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        f1(self.precision(), self.recall())
    }

    /// Median delay of the episodes found, in readings.
    pub fn median_delay(&self) -> Option<u64> {
        median(&self.delays)
    }
}

/// One line of a quality table: a kind, or `all`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityLine {
    /// The fault kind, or `all`.
    pub kind: String,
    /// Episodes.
    pub episodes: u64,
    /// Episodes an alert was raised for.
    pub found: u64,
    /// Alerts naming the kind.
    pub alerts: u64,
    /// Of those, the share inside an episode.
    pub precision: f64,
    /// Of the episodes, the share found.
    pub recall: f64,
    /// Harmonic mean of the two.
    pub f1: f64,
    /// Median readings from an episode's start to its first alert.
    pub median_delay_readings: Option<u64>,
}

/// The whole tally, per kind and over all.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultQuality {
    kinds: Vec<KindQuality>,
    /// Alerts outside every episode.
    pub false_alarms: u64,
}

impl Default for FaultQuality {
    fn default() -> Self {
        FaultQuality {
            kinds: FaultKind::ALL.into_iter().map(KindQuality::new).collect(),
            false_alarms: 0,
        }
    }
}

impl FaultQuality {
    /// Each kind's tally, in [`FaultKind::ALL`]'s order.
    pub fn kinds(&self) -> &[KindQuality] {
        &self.kinds
    }

    fn kind_mut(&mut self, kind: FaultKind) -> &mut KindQuality {
        let index = FaultKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("every kind is tallied");
        &mut self.kinds[index]
    }

    /// Episodes of every kind.
    pub fn episodes(&self) -> u64 {
        self.kinds.iter().map(|k| k.episodes).sum()
    }

    /// Alerts of every kind.
    pub fn alerts(&self) -> u64 {
        self.kinds.iter().map(|k| k.alerts).sum()
    }

    /// Event-level precision over all kinds.
    pub fn precision(&self) -> f64 {
        ratio(
            self.kinds.iter().map(|k| k.true_alerts).sum(),
            self.alerts(),
        )
    }

    /// Event-level recall over all kinds.
    pub fn recall(&self) -> f64 {
        ratio(self.kinds.iter().map(|k| k.found).sum(), self.episodes())
    }

    /// Event-level F1 over all kinds.
    pub fn f1(&self) -> f64 {
        f1(self.precision(), self.recall())
    }

    /// A line per kind, then one for all of them.
    pub fn lines(&self) -> Vec<QualityLine> {
        let mut lines: Vec<QualityLine> = self
            .kinds
            .iter()
            .map(|k| QualityLine {
                kind: k.kind.as_str().to_string(),
                episodes: k.episodes,
                found: k.found,
                alerts: k.alerts,
                precision: k.precision(),
                recall: k.recall(),
                f1: k.f1(),
                median_delay_readings: k.median_delay(),
            })
            .collect();
        lines.push(QualityLine {
            kind: "all".to_string(),
            episodes: self.episodes(),
            found: self.kinds.iter().map(|k| k.found).sum(),
            alerts: self.alerts(),
            precision: self.precision(),
            recall: self.recall(),
            f1: self.f1(),
            median_delay_readings: self.median_delay(),
        });
        lines
    }

    /// Median delay over every episode found, in readings.
    pub fn median_delay(&self) -> Option<u64> {
        let mut all = vec![0; DELAY_BUCKETS];
        for kind in &self.kinds {
            for (total, count) in all.iter_mut().zip(&kind.delays) {
                *total += count;
            }
        }
        median(&all)
    }
}

/// What the judge remembers of one device.
#[derive(Debug, Default)]
struct DeviceTruth {
    /// The last episode seen, and whether it was found.
    episode: Option<(FaultTruth, bool)>,
    last_at: Option<DateTime<Utc>>,
    /// Usual time between its readings, ms.
    interval_ms: i64,
    /// Alerts not judged yet, waiting for the device's next label.
    waiting: Vec<(DateTime<Utc>, FaultKind)>,
}

/// Tallies alerts against the truth the readings carry, as they come.
#[derive(Debug, Default)]
pub struct FaultJudge {
    devices: HashMap<DeviceKey, DeviceTruth>,
    quality: FaultQuality,
}

impl FaultJudge {
    /// A judge that has seen nothing.
    pub fn new() -> FaultJudge {
        FaultJudge::default()
    }

    /// The tally so far.
    pub fn quality(&self) -> &FaultQuality {
        &self.quality
    }

    /// Takes a reading of `device` at `at` and the episode it belongs to, if
    /// any. A device is remembered from its first episode or alert on: a
    /// fleet without ground truth costs the judge nothing per device.
    pub fn reading(&mut self, device: &str, at: DateTime<Utc>, truth: Option<&FaultTruth>) {
        let state = match self.devices.get_mut(device) {
            Some(state) => state,
            None if truth.is_none() => return,
            None => self.devices.entry(DeviceKey::from(device)).or_default(),
        };
        if let Some(last) = state.last_at {
            let gap = (at - last).num_milliseconds();
            if gap > 0 && (state.interval_ms == 0 || gap < state.interval_ms) {
                state.interval_ms = gap;
            }
        }
        state.last_at = Some(at);
        // A silence's label rides on the reading one interval after its end.
        if let Some(truth) = truth
            && truth.kind == FaultKind::Silence
            && state.interval_ms == 0
        {
            state.interval_ms = (at - truth.ends_at).num_milliseconds().max(0);
        }
        if let Some(truth) = truth
            && state
                .episode
                .as_ref()
                .is_none_or(|(known, _)| known != truth)
        {
            self.quality.kind_mut(truth.kind).episodes += 1;
            state.episode = Some((truth.clone(), false));
        }
        let waiting = std::mem::take(&mut state.waiting);
        for (alert_at, kind) in waiting {
            self.judge(device, alert_at, kind, true);
        }
    }

    /// Takes an alert of `kind` for `device` raised at `at`.
    pub fn alert(&mut self, device: &str, at: DateTime<Utc>, kind: FaultKind) {
        self.judge(device, at, kind, false);
    }

    fn judge(&mut self, device: &str, at: DateTime<Utc>, kind: FaultKind, last_chance: bool) {
        if !self.devices.contains_key(device) {
            // Its label (a silence's comes after it) may still come.
            self.devices
                .insert(DeviceKey::from(device), DeviceTruth::default());
        }
        let state = self.devices.get_mut(device).expect("inserted above");
        let grace = chrono::Duration::milliseconds(state.interval_ms.max(1) * GRACE_READINGS);
        let matched = state
            .episode
            .as_mut()
            .filter(|(truth, _)| truth.started_at <= at && at <= truth.ends_at + grace);
        match matched {
            Some((truth, found)) => {
                let delay = if *found {
                    None
                } else {
                    *found = true;
                    let readings =
                        (at - truth.started_at).num_milliseconds() / state.interval_ms.max(1);
                    Some((truth.kind, readings.max(0) as usize))
                };
                let tally = self.quality.kind_mut(kind);
                tally.alerts += 1;
                tally.true_alerts += 1;
                if let Some((episode_kind, readings)) = delay {
                    let tally = self.quality.kind_mut(episode_kind);
                    tally.found += 1;
                    tally.delays[readings.min(DELAY_BUCKETS - 1)] += 1;
                }
            }
            None if !last_chance => state.waiting.push((at, kind)),
            None => {
                self.quality.kind_mut(kind).alerts += 1;
                self.quality.false_alarms += 1;
            }
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

fn f1(precision: f64, recall: f64) -> f64 {
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

fn median(histogram: &[u64]) -> Option<u64> {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    let middle = total.div_ceil(2);
    let mut seen = 0;
    for (delay, count) in histogram.iter().enumerate() {
        seen += count;
        if seen >= middle {
            return Some(delay as u64);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000 + 60 * minute, 0).unwrap()
    }

    fn episode(kind: FaultKind, from: i64, to: i64) -> FaultTruth {
        FaultTruth {
            kind,
            started_at: at(from),
            ends_at: at(to),
        }
    }

    #[test]
    fn an_alert_inside_an_episode_finds_it_once_and_counts_its_delay() {
        let mut judge = FaultJudge::new();
        let shift = episode(FaultKind::LevelShift, 10, 20);
        for minute in 0..30 {
            let truth = (10..=20).contains(&minute).then_some(&shift);
            judge.reading("t-1", at(minute), truth);
            if minute == 12 || minute == 25 {
                judge.alert("t-1", at(minute), FaultKind::LevelShift);
            }
        }
        judge.alert("t-1", at(40), FaultKind::Spike);
        judge.reading("t-1", at(41), None);
        let quality = judge.quality();
        let shift = &quality.kinds()[4];
        assert_eq!(shift.kind, FaultKind::LevelShift);
        assert_eq!(
            (shift.episodes, shift.found, shift.alerts, shift.true_alerts),
            (1, 1, 2, 2)
        );
        assert_eq!(shift.median_delay(), Some(2));
        let spike = &quality.kinds()[0];
        assert_eq!(
            (spike.alerts, spike.true_alerts, spike.precision()),
            (1, 0, 0.0)
        );
        assert_eq!(quality.false_alarms, 1);
        assert_eq!(quality.recall(), 1.0);
        assert!((quality.precision() - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_silence_alert_is_judged_by_the_label_of_the_reading_after_it() {
        let mut judge = FaultJudge::new();
        for minute in 0..10 {
            judge.reading("m-1", at(minute), None);
        }
        // Silent from minute 10 to 19; the alert comes at minute 13.
        judge.alert("m-1", at(13), FaultKind::Silence);
        judge.reading("m-1", at(20), Some(&episode(FaultKind::Silence, 10, 19)));
        let silence = &judge.quality().kinds()[5];
        assert_eq!(
            (silence.episodes, silence.found, silence.true_alerts),
            (1, 1, 1)
        );
        assert_eq!(silence.median_delay(), Some(3));
        assert_eq!(judge.quality().false_alarms, 0);
    }

    #[test]
    fn with_nothing_to_judge_precision_and_recall_are_one_and_no_delay_is_claimed() {
        let quality = FaultQuality::default();
        assert_eq!(
            (quality.precision(), quality.recall(), quality.f1()),
            (1.0, 1.0, 1.0)
        );
        assert_eq!(quality.median_delay(), None);
    }
}
