//! Per-device minute aggregates, exact across crashes and rebalances.
//!
//! Each device's readings are summed up per minute of event time: count,
//! min, max, mean, the last value (the latest event time; a tie goes to the
//! later record) and how many were anomalous. A reading's device decides its
//! Kafka partition, so a partition's aggregator sees all of a device's
//! readings, in the order they were written.
//!
//! **When a minute is written.** Each partition keeps a *watermark*: the
//! latest event time it has seen. A minute is closed, and its aggregate
//! written, once the watermark is past the minute's end plus a grace period;
//! a reading that arrives later than that is too late, counted, and left out
//! (it is still stored with the readings). Closing depends on event times
//! alone, never on the wall clock, so the same records always close the same
//! minutes with the same contents. A minute stays open while its partition
//! receives nothing newer.
//!
//! **Why no minute is counted twice or lost.** Every aggregate names the
//! record whose arrival closed it (its *trigger*: partition and offset), its
//! place among the aggregates that record closed, and the watermark just
//! before that record. The consumer commits no further than the first record
//! of the oldest open minute ([`PartitionAggregator::low_water`]), and only
//! once the aggregates written so far are acknowledged. A new owner of the
//! partition starts at that commit and first reads the last aggregate
//! written for it ([`Resume`]). Records before that aggregate's trigger
//! rebuild the minutes that were open when the trigger arrived (those still
//! open at the watermark before it) and close nothing; at the trigger, the
//! aggregates it closed are made again and the ones already written are
//! skipped; from then on everything is as it was. A record's minute is
//! either closed at that watermark, and then already written, or open, and
//! then rebuilt from all its records, which all lie at or after the commit.

use std::collections::{BTreeMap, btree_map::Entry};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::intern::Interner;
use crate::sensor::device::{DeviceKey, DeviceTable, DeviceType};
use crate::sensor::reading::SensorReading;

/// Milliseconds in a minute.
const MINUTE_MS: i64 = 60_000;
/// Distinct units held before the first look for those no open minute uses.
const UNITS_KEPT: usize = 64;

/// What the aggregation stage is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateSettings {
    /// Its consumer group, apart from processing's and storage's.
    pub group_id: String,
    /// How long after a minute's end its readings are still taken.
    pub grace: std::time::Duration,
}

impl Default for AggregateSettings {
    fn default() -> Self {
        AggregateSettings {
            group_id: "iot-aggregator".to_string(),
            grace: std::time::Duration::from_secs(30),
        }
    }
}

/// One device's readings in one minute of event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteAggregate {
    /// The device.
    pub device_id: String,
    /// Its kind of sensor, as readings name it.
    pub device_type: String,
    /// The unit of the values.
    pub unit: String,
    /// The minute's start, UTC.
    #[serde(with = "minute_text")]
    pub minute: DateTime<Utc>,
    /// Readings in the minute.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean value (the sum taken in record order, divided by the count).
    pub mean: f64,
    /// The value with the latest event time.
    pub last: f64,
    /// Readings flagged anomalous.
    pub anomalies: u64,
    /// What made it: see [`AggregateSource`].
    pub source: AggregateSource,
}

/// Where an aggregate came from: what a new owner of the partition resumes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateSource {
    /// The readings' partition.
    pub partition: i32,
    /// The offset of the record whose arrival closed the minute.
    pub offset: i64,
    /// Its place among the minutes that record closed, from 0.
    pub emission: u32,
    /// The partition's watermark just before that record, in Unix milliseconds.
    pub watermark_before_ms: i64,
    /// The watermark after it.
    pub watermark_ms: i64,
}

/// A minute as RFC 3339 text to the second, for serde's `with`.
pub mod minute_text {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the minute.
    pub fn serialize<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Secs, true))
    }

    /// Reads the minute.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

impl MinuteAggregate {
    /// The aggregate as the JSON of its record.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an aggregate always serializes")
    }

    /// The minute as RFC 3339 text.
    pub fn minute_text(&self) -> String {
        self.minute.to_rfc3339_opts(SecondsFormat::Secs, true)
    }
}

/// Where a partition's aggregation picks up: read from the last aggregate
/// written for it, if any (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The record whose arrival closed that aggregate's minute.
    pub trigger: i64,
    /// The aggregates of that record written, up to this place.
    pub emitted: u32,
    /// The watermark just before the trigger.
    pub watermark_before_ms: i64,
    /// The watermark after it.
    pub watermark_ms: i64,
}

impl From<AggregateSource> for Resume {
    fn from(source: AggregateSource) -> Self {
        Resume {
            trigger: source.offset,
            emitted: source.emission,
            watermark_before_ms: source.watermark_before_ms,
            watermark_ms: source.watermark_ms,
        }
    }
}

/// A minute being summed up: a hundred thousand devices keep one or two
/// open each, so it holds no string of its own (the unit is shared).
#[derive(Debug, Clone)]
struct OpenMinute {
    device_type: DeviceType,
    unit: Arc<str>,
    first_offset: i64,
    count: u32,
    min: f64,
    max: f64,
    sum: f64,
    last: f64,
    last_time: i64,
    anomalies: u32,
}

impl OpenMinute {
    fn new(reading: &SensorReading, unit: Arc<str>, offset: i64) -> Self {
        OpenMinute {
            device_type: reading.device_type,
            unit,
            first_offset: offset,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            last: reading.value,
            last_time: i64::MIN,
            anomalies: 0,
        }
    }

    fn add(&mut self, reading: &SensorReading) {
        let time = reading.timestamp.timestamp_millis();
        self.count = self.count.saturating_add(1);
        self.min = self.min.min(reading.value);
        self.max = self.max.max(reading.value);
        self.sum += reading.value;
        if time >= self.last_time {
            self.last_time = time;
            self.last = reading.value;
        }
        self.anomalies += u32::from(reading.is_anomaly);
    }
}

/// Sums up one partition's readings per device and minute; see the module documentation.
#[derive(Debug, Clone)]
pub struct PartitionAggregator {
    partition: i32,
    grace_ms: i64,
    /// The latest event time seen, once a record was.
    watermark: Option<i64>,
    /// Open minutes by minute start, then device: closed minute by minute,
    /// each in device order. A minute's devices share its start, so the start
    /// is held once, not beside every device.
    open: BTreeMap<i64, DeviceTable<OpenMinute>>,
    /// First offsets of the open minutes, with how many minutes start at each.
    first_offsets: BTreeMap<i64, u32>,
    /// Until its trigger has gone by, what the previous owner already wrote.
    resume: Option<Resume>,
    /// Readings that came after their minute was closed.
    late: u64,
    /// The units of the open minutes, one copy each.
    units: Interner,
    /// Units held at which those no open minute uses are looked for next:
    /// twice what was left the last time, so the look is rare however many
    /// units are in use.
    units_limit: usize,
}

impl PartitionAggregator {
    /// An aggregator of `partition` with nothing written for it before.
    pub fn new(partition: i32, grace_ms: i64) -> Self {
        PartitionAggregator {
            partition,
            grace_ms,
            watermark: None,
            open: BTreeMap::new(),
            first_offsets: BTreeMap::new(),
            resume: None,
            late: 0,
            units: Interner::new(),
            units_limit: UNITS_KEPT,
        }
    }

    /// An aggregator of `partition` reading from offset `start`, after a
    /// previous owner whose last aggregate says `resume`.
    pub fn resuming(partition: i32, grace_ms: i64, start: i64, resume: Resume) -> Self {
        let mut aggregator = PartitionAggregator::new(partition, grace_ms);
        if resume.trigger >= start {
            aggregator.watermark = Some(resume.watermark_before_ms);
            aggregator.resume = Some(resume);
        } else {
            aggregator.watermark = Some(resume.watermark_ms);
        }
        aggregator
    }

    /// The offset of the first record of the oldest open minute: the consumer
    /// commits no further. `None` when no minute is open.
    pub fn low_water(&self) -> Option<i64> {
        self.first_offsets.keys().next().copied()
    }

    /// Readings left out so far because their minute had closed.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Minutes open now.
    pub fn open_minutes(&self) -> usize {
        self.open.values().map(|devices| devices.len()).sum()
    }

    fn is_closed(&self, minute: i64, watermark: Option<i64>) -> bool {
        watermark.is_some_and(|mark| minute + MINUTE_MS + self.grace_ms <= mark)
    }

    fn include(&mut self, reading: &SensorReading, minute: i64, offset: i64) {
        let devices = self.open.entry(minute).or_default();
        if let Some(open) = devices.get_mut(reading.device_id.as_str()) {
            open.add(reading);
            return;
        }
        *self.first_offsets.entry(offset).or_default() += 1;
        let mut open = OpenMinute::new(reading, self.units.get(&reading.unit), offset);
        open.add(reading);
        devices.insert(DeviceKey::from(reading.device_id.as_str()), open);
    }

    /// Takes the reading at `offset`; returns the aggregates of the minutes it closed.
    pub fn add(&mut self, reading: &SensorReading, offset: i64) -> Vec<MinuteAggregate> {
        let time = reading.timestamp.timestamp_millis();
        let minute = time.div_euclid(MINUTE_MS) * MINUTE_MS;
        if let Some(resume) = self.resume
            && offset < resume.trigger
        {
            // Read before by the previous owner: only the open minutes are rebuilt.
            if !self.is_closed(minute, Some(resume.watermark_before_ms)) {
                self.include(reading, minute, offset);
            }
            return Vec::new();
        }
        if self.is_closed(minute, self.watermark) {
            self.late += 1;
            return Vec::new();
        }
        self.include(reading, minute, offset);
        let before = self.watermark;
        let after = before.map_or(time, |mark| mark.max(time));
        self.watermark = Some(after);
        let mut closed = if before == Some(after) {
            Vec::new()
        } else {
            self.close(offset, before.unwrap_or(after), after)
        };
        if let Some(resume) = self.resume.take()
            && offset == resume.trigger
        {
            closed.retain(|aggregate| aggregate.source.emission > resume.emitted);
        }
        closed
    }

    /// Closes the minutes the watermark `after` is past, in (minute, device) order.
    fn close(&mut self, trigger: i64, before: i64, after: i64) -> Vec<MinuteAggregate> {
        let mut closed = Vec::new();
        let grace_ms = self.grace_ms;
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() + MINUTE_MS + grace_ms > after {
                break;
            }
            let (minute, mut devices) = entry.remove_entry();
            devices.sort_unstable_keys();
            for (device_id, open) in devices {
                if let Entry::Occupied(mut starts) = self.first_offsets.entry(open.first_offset) {
                    *starts.get_mut() -= 1;
                    if *starts.get() == 0 {
                        starts.remove();
                    }
                }
                closed.push(MinuteAggregate {
                    device_id: device_id.to_string(),
                    device_type: open.device_type.as_str().to_string(),
                    unit: open.unit.to_string(),
                    minute: Utc
                        .timestamp_millis_opt(minute)
                        .single()
                        .expect("a reading's minute is a valid time"),
                    count: u64::from(open.count),
                    min: open.min,
                    max: open.max,
                    mean: open.sum / open.count as f64,
                    last: open.last,
                    anomalies: u64::from(open.anomalies),
                    source: AggregateSource {
                        partition: self.partition,
                        offset: trigger,
                        emission: closed.len() as u32,
                        watermark_before_ms: before,
                        watermark_ms: after,
                    },
                });
            }
        }
        if self.units.len() > self.units_limit {
            // Units only devices of closed minutes used (readings from a
            // gateway may name any) are let go.
            self.units.drop_unused();
            self.units_limit = (2 * self.units.len()).max(UNITS_KEPT);
        }
        closed
    }
}

#[cfg(test)]
mod tests;
