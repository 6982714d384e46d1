//! Per-device bookkeeping of sequence numbers: duplicates removed, gaps and
//! reordering counted.
//!
//! Each device's readings carry a run id and a sequence number. For each device
//! the ledger keeps the run it is in, the highest sequence seen, and a 64-bit
//! window of which of the 64 sequences below it were seen. A reading already in
//! the window is a duplicate (a producer retry, or a record read again after a
//! consumer restart) and is dropped before processing. A jump ahead opens a gap
//! (possible loss); a late reading that fills a gap is counted as out of order
//! and closes it. Memory is a few dozen bytes per device, and the number of
//! devices tracked is capped.

use std::sync::Arc;

use crate::intern::Interner;
use crate::sensor::device::{DeviceKey, DeviceTable};

/// Readings further behind the newest than this are taken as new, not duplicates.
pub const WINDOW: u64 = 64;

/// What the ledger says about one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Seen for the first time: process it.
    New,
    /// Seen before: drop it.
    Duplicate,
}

/// Totals over all devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditTotals {
    /// Distinct readings.
    pub unique: u64,
    /// Repeats removed.
    pub duplicates: u64,
    /// Sequence numbers skipped and not (yet) seen: possible loss.
    pub missing: u64,
    /// Readings that arrived after a later one of the same device.
    pub out_of_order: u64,
    /// Times a device started a new run (a producer restart).
    pub new_runs: u64,
}

/// What is known of one device's sequence numbers: its run, the highest
/// sequence seen and the window below it. The ledger keeps one per device;
/// a table that has an entry per device anyway (the console's) keeps its own
/// in that entry rather than a second table.
#[derive(Debug, Clone)]
pub struct SequenceTrack {
    run_id: Arc<str>,
    highest: u64,
    /// Bit i set: sequence `highest - i` was seen (bit 0 is `highest` itself).
    seen: u64,
    audit: DeviceAudit,
}

/// One device's counters (since the ledger started tracking it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceAudit {
    /// Repeats removed.
    pub duplicates: u32,
    /// Sequence numbers skipped and not seen since.
    pub missing: u32,
    /// Readings that arrived after a later one.
    pub out_of_order: u32,
}

/// The per-device ledger; see the module documentation.
#[derive(Debug)]
pub struct SequenceLedger {
    devices: DeviceTable<SequenceTrack>,
    /// Run ids, each stored once however many devices carry it.
    runs: Interner,
    max_devices: usize,
    totals: AuditTotals,
}

impl SequenceLedger {
    /// A ledger tracking at most `max_devices` devices (beyond that a new
    /// device takes the place of the first in the table, usually the earliest
    /// tracked, whose next reading is then taken as a new run).
    pub fn new(max_devices: usize) -> Self {
        SequenceLedger {
            devices: DeviceTable::default(),
            runs: Interner::new(),
            max_devices: max_devices.max(1),
            totals: AuditTotals::default(),
        }
    }

    /// Totals so far.
    pub fn totals(&self) -> AuditTotals {
        self.totals
    }

    /// Devices tracked.
    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// One device's counters, if it is tracked.
    pub fn device(&self, device_id: &str) -> Option<DeviceAudit> {
        self.devices.get(device_id).map(|track| track.audit)
    }

    /// Forgets devices for which `forget` is true (their partition moved to another member).
    pub fn forget(&mut self, mut forget: impl FnMut(&str) -> bool) {
        self.devices.retain(|device, _| !forget(device));
        self.runs.drop_unused();
    }

    /// Records one reading and says whether it is new.
    pub fn observe(&mut self, device_id: &str, run_id: &str, sequence: u64) -> Verdict {
        let Some(track) = self.devices.get_mut(device_id) else {
            if self.devices.len() >= self.max_devices {
                // The first in the table: the earliest still tracked, unless
                // an eviction since moved the latest into its place.
                self.devices.swap_remove_index(0);
            }
            let track = SequenceTrack::first(self.runs.get(run_id), sequence, &mut self.totals);
            self.devices.insert(DeviceKey::from(device_id), track);
            return Verdict::New;
        };
        track.observe(run_id, sequence, &mut self.totals, &mut self.runs)
    }
}

impl SequenceTrack {
    /// A device's track from its first reading, counted in `totals`.
    pub fn first(run_id: Arc<str>, sequence: u64, totals: &mut AuditTotals) -> Self {
        totals.unique += 1;
        SequenceTrack {
            run_id,
            highest: sequence,
            seen: 1,
            audit: DeviceAudit::default(),
        }
    }

    /// The device's counters.
    pub fn audit(&self) -> DeviceAudit {
        self.audit
    }

    /// Records a later reading, counted in `totals`, and says whether it is
    /// new; a new run's id is shared through `runs`.
    pub fn observe(
        &mut self,
        run_id: &str,
        sequence: u64,
        totals: &mut AuditTotals,
        runs: &mut Interner,
    ) -> Verdict {
        if &*self.run_id != run_id {
            // A restarted producer: its numbering starts again.
            self.run_id = runs.get(run_id);
            self.highest = sequence;
            self.seen = 1;
            totals.unique += 1;
            totals.new_runs += 1;
            return Verdict::New;
        }
        if sequence > self.highest {
            let ahead = sequence - self.highest;
            // Sequences about to leave the window unseen stay missing for good.
            totals.missing += ahead - 1;
            self.audit.missing = self
                .audit
                .missing
                .saturating_add(u32::try_from(ahead - 1).unwrap_or(u32::MAX));
            self.seen = if ahead >= WINDOW {
                1
            } else {
                (self.seen << ahead) | 1
            };
            self.highest = sequence;
            totals.unique += 1;
            return Verdict::New;
        }
        let behind = self.highest - sequence;
        if behind < WINDOW && self.seen & (1u64 << behind) != 0 {
            totals.duplicates += 1;
            self.audit.duplicates = self.audit.duplicates.saturating_add(1);
            return Verdict::Duplicate;
        }
        if behind < WINDOW {
            self.seen |= 1u64 << behind;
        }
        // Filling a gap, or too old to tell: a late arrival, not a repeat.
        totals.unique += 1;
        totals.out_of_order += 1;
        totals.missing = totals.missing.saturating_sub(1);
        self.audit.out_of_order = self.audit.out_of_order.saturating_add(1);
        self.audit.missing = self.audit.missing.saturating_sub(1);
        Verdict::New
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_duplicates_and_everything_else_is_new() {
        let mut ledger = SequenceLedger::new(100);
        for seq in 0..10 {
            assert_eq!(ledger.observe("d", "r1", seq), Verdict::New);
        }
        // A retried batch writes 8 and 9 again.
        assert_eq!(ledger.observe("d", "r1", 8), Verdict::Duplicate);
        assert_eq!(ledger.observe("d", "r1", 9), Verdict::Duplicate);
        assert_eq!(ledger.observe("d", "r1", 10), Verdict::New);
        let totals = ledger.totals();
        assert_eq!(
            (
                totals.unique,
                totals.duplicates,
                totals.missing,
                totals.out_of_order
            ),
            (11, 2, 0, 0)
        );
    }

    #[test]
    fn gaps_are_missing_until_filled_and_late_readings_are_out_of_order() {
        let mut ledger = SequenceLedger::new(100);
        ledger.observe("d", "r1", 0);
        ledger.observe("d", "r1", 4);
        assert_eq!(ledger.totals().missing, 3);
        assert_eq!(ledger.observe("d", "r1", 2), Verdict::New);
        assert_eq!(ledger.observe("d", "r1", 2), Verdict::Duplicate);
        let totals = ledger.totals();
        assert_eq!(
            (totals.missing, totals.out_of_order, totals.duplicates),
            (2, 1, 1)
        );
        assert_eq!(
            ledger.device("d"),
            Some(DeviceAudit {
                duplicates: 1,
                missing: 2,
                out_of_order: 1
            })
        );
        assert_eq!(ledger.device("other"), None);
    }

    #[test]
    fn a_new_run_restarts_the_numbering_without_false_duplicates() {
        let mut ledger = SequenceLedger::new(100);
        for seq in 0..5 {
            ledger.observe("d", "r1", seq);
        }
        for seq in 0..5 {
            assert_eq!(ledger.observe("d", "r2", seq), Verdict::New);
        }
        let totals = ledger.totals();
        assert_eq!(
            (totals.unique, totals.duplicates, totals.new_runs),
            (10, 0, 1)
        );
    }

    #[test]
    fn devices_are_independent_and_their_number_is_capped() {
        let mut ledger = SequenceLedger::new(3);
        for device in ["a", "b", "c", "d"] {
            assert_eq!(ledger.observe(device, "r", 0), Verdict::New);
        }
        assert_eq!(ledger.devices(), 3);
        ledger.forget(|d| d == "d");
        assert!(ledger.devices() <= 2);
    }

    #[test]
    fn a_jump_past_the_window_keeps_counting_right() {
        let mut ledger = SequenceLedger::new(10);
        ledger.observe("d", "r", 0);
        ledger.observe("d", "r", 200);
        assert_eq!(ledger.totals().missing, 199);
        assert_eq!(ledger.observe("d", "r", 200), Verdict::Duplicate);
        assert_eq!(ledger.observe("d", "r", 199), Verdict::New);
        assert_eq!(ledger.totals().missing, 198);
    }
}
