//! Reconciling what the producer had acknowledged with what the consumer processed.
//!
//! The producer reports each reading's fate (acked or failed); the consumer
//! reports each reading it processed. Both are keyed by device, run and
//! sequence. [`DeliveryAudit`] keeps, per device and run, the sequences of each
//! side as sorted ranges — readings of a device arrive mostly in order, so a
//! device costs a range or two however long the run — and answers the
//! question fault-tolerance work asks: was any acknowledged reading never
//! processed?

use std::sync::Arc;

use smallvec::SmallVec;

use crate::intern::Interner;
use crate::sensor::device::{DeviceKey, DeviceTable};

/// Sorted, disjoint, inclusive ranges of sequence numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SequenceRanges {
    /// The first range inline: most devices' sequences are one range.
    ranges: SmallVec<[(u64, u64); 1]>,
}

impl SequenceRanges {
    /// Adds `sequence`; returns false when it was already there.
    pub fn insert(&mut self, sequence: u64) -> bool {
        // The common case: one past the last range.
        if let Some(last) = self.ranges.last_mut() {
            if sequence == last.1 + 1 {
                last.1 = sequence;
                return true;
            }
            if sequence > last.1 + 1 {
                self.ranges.push((sequence, sequence));
                return true;
            }
        } else {
            self.ranges.push((sequence, sequence));
            return true;
        }
        let index = self.ranges.partition_point(|&(_, end)| end < sequence);
        if index < self.ranges.len() && self.ranges[index].0 <= sequence {
            return false;
        }
        let joins_previous = index > 0 && self.ranges[index - 1].1 + 1 == sequence;
        let joins_next = index < self.ranges.len() && sequence + 1 == self.ranges[index].0;
        match (joins_previous, joins_next) {
            (true, true) => {
                self.ranges[index - 1].1 = self.ranges[index].1;
                self.ranges.remove(index);
            }
            (true, false) => self.ranges[index - 1].1 = sequence,
            (false, true) => self.ranges[index].0 = sequence,
            (false, false) => self.ranges.insert(index, (sequence, sequence)),
        }
        true
    }

    /// Whether `sequence` is in the set.
    pub fn contains(&self, sequence: u64) -> bool {
        let index = self.ranges.partition_point(|&(_, end)| end < sequence);
        index < self.ranges.len() && self.ranges[index].0 <= sequence
    }

    /// Number of sequences in the set.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|(start, end)| end - start + 1).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Sequences in `self` but not in `other` (both sorted: one pass over each).
    pub fn count_missing_from(&self, other: &SequenceRanges) -> u64 {
        let mut missing = 0;
        let mut j = 0;
        for &(start, end) in &self.ranges {
            let mut covered = 0;
            while j < other.ranges.len() && other.ranges[j].1 < start {
                j += 1;
            }
            let mut k = j;
            while k < other.ranges.len() && other.ranges[k].0 <= end {
                let (o_start, o_end) = other.ranges[k];
                covered += end.min(o_end) - start.max(o_start) + 1;
                k += 1;
            }
            missing += (end - start + 1) - covered;
        }
        missing
    }

    /// Ranges held (a measure of memory).
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }
}

#[derive(Debug, Default)]
struct DeviceRun {
    acked: SequenceRanges,
    processed: SequenceRanges,
    failed: u64,
    last_processed: Option<u64>,
}

/// The reconciliation of one run of the pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Readings the producer saw acknowledged.
    pub acked: u64,
    /// Readings whose delivery failed (deadline passed or error that cannot succeed).
    pub failed: u64,
    /// Distinct readings processed.
    pub consumed: u64,
    /// Acknowledged but never processed.
    pub lost: u64,
    /// Processed more than once (the extra times).
    pub duplicates: u64,
    /// Processed after a later reading of the same device.
    pub out_of_order: u64,
    /// Processed without an acknowledgement (a failed write that Kafka kept after all).
    pub unacknowledged: u64,
}

/// A device's runs, by run id: one inline, as a device is seldom in two.
type DeviceRuns = SmallVec<[(Arc<str>, DeviceRun); 1]>;

/// Acknowledgements against processing, per device and run; see the module documentation.
#[derive(Debug, Default)]
pub struct DeliveryAudit {
    /// Per device, its runs (one, unless the fleet restarted).
    devices: DeviceTable<DeviceRuns>,
    /// Run ids, each stored once however many devices carry it.
    runs: Interner,
    duplicates: u64,
    out_of_order: u64,
}

impl DeliveryAudit {
    /// An empty audit.
    pub fn new() -> Self {
        DeliveryAudit::default()
    }

    /// The entry of `device_id` in `run_id`. Called twice per reading (acked,
    /// then processed), so it copies nothing for a device and run already known.
    fn device(&mut self, device_id: &str, run_id: &str) -> &mut DeviceRun {
        if !self.devices.contains_key(device_id) {
            self.devices
                .insert(DeviceKey::from(device_id), SmallVec::new());
        }
        let runs = self.devices.get_mut(device_id).expect("inserted above");
        let index = match runs.iter().position(|(run, _)| **run == *run_id) {
            Some(index) => index,
            None => {
                runs.push((self.runs.get(run_id), DeviceRun::default()));
                runs.len() - 1
            }
        };
        &mut runs[index].1
    }

    /// The producer saw this reading acknowledged.
    pub fn acked(&mut self, device_id: &str, run_id: &str, sequence: u64) {
        self.device(device_id, run_id).acked.insert(sequence);
    }

    /// The producer gave up on this reading.
    pub fn failed(&mut self, device_id: &str, run_id: &str, sequence: u64) {
        let _ = sequence;
        self.device(device_id, run_id).failed += 1;
    }

    /// The consumer processed this reading.
    pub fn processed(&mut self, device_id: &str, run_id: &str, sequence: u64) {
        let device = self.device(device_id, run_id);
        let first_time = device.processed.insert(sequence);
        let late = device.last_processed.is_some_and(|last| sequence < last);
        device.last_processed = Some(device.last_processed.map_or(sequence, |l| l.max(sequence)));
        if !first_time {
            self.duplicates += 1;
        } else if late {
            self.out_of_order += 1;
        }
    }

    /// The reconciliation so far.
    pub fn report(&self) -> AuditReport {
        let mut report = AuditReport {
            duplicates: self.duplicates,
            out_of_order: self.out_of_order,
            ..AuditReport::default()
        };
        for device in self.devices.values().flatten().map(|(_, run)| run) {
            report.acked += device.acked.len();
            report.failed += device.failed;
            report.consumed += device.processed.len();
            report.lost += device.acked.count_missing_from(&device.processed);
            report.unacknowledged += device.processed.count_missing_from(&device.acked);
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_in_any_order_and_refuse_repeats() {
        let mut set = SequenceRanges::default();
        for s in [0, 1, 2, 5, 4, 9, 3] {
            assert!(set.insert(s));
        }
        assert!(!set.insert(4));
        assert_eq!(set.len(), 7);
        assert_eq!(set.range_count(), 2, "{set:?}");
        assert!(set.contains(5) && set.contains(9) && !set.contains(6));
        for s in 6..=8 {
            set.insert(s);
        }
        assert_eq!(set.range_count(), 1);
    }

    #[test]
    fn an_in_order_run_costs_one_range_per_device() {
        let mut set = SequenceRanges::default();
        for s in 0..1_000_000 {
            set.insert(s);
        }
        assert_eq!((set.len(), set.range_count()), (1_000_000, 1));
    }

    #[test]
    fn lost_duplicate_late_and_unacknowledged_readings_are_told_apart() {
        let mut audit = DeliveryAudit::new();
        for s in 0..10 {
            audit.acked("d", "r", s);
        }
        audit.failed("d", "r", 10);
        // Processed: 0-4, 4 again, 7, 6 late, 8, 9, and 10 which was reported failed.
        for s in [0, 1, 2, 3, 4, 4, 7, 6, 8, 9, 10] {
            audit.processed("d", "r", s);
        }
        assert_eq!(
            audit.report(),
            AuditReport {
                acked: 10,
                failed: 1,
                consumed: 10,
                lost: 1,
                duplicates: 1,
                out_of_order: 1,
                unacknowledged: 1,
            }
        );
    }

    #[test]
    fn missing_counts_follow_overlaps_of_many_ranges() {
        let mut evens = SequenceRanges::default();
        let mut all = SequenceRanges::default();
        for s in 0..100 {
            all.insert(s);
            if s % 2 == 0 {
                evens.insert(s);
            }
        }
        assert_eq!(all.count_missing_from(&evens), 50);
        assert_eq!(evens.count_missing_from(&all), 0);
        assert_eq!(all.count_missing_from(&SequenceRanges::default()), 100);
    }

    #[test]
    fn runs_of_the_same_device_are_separate() {
        let mut audit = DeliveryAudit::new();
        audit.acked("d", "r1", 0);
        audit.acked("d", "r2", 0);
        audit.processed("d", "r1", 0);
        audit.processed("d", "r2", 0);
        let report = audit.report();
        assert_eq!(
            (
                report.acked,
                report.consumed,
                report.lost,
                report.duplicates
            ),
            (2, 2, 0, 0)
        );
    }
}
