//! The fleet, its alerts and its dead letters, as the console knows them:
//! built by reading the sensor, alert and dead-letter topics (see
//! [`super::follow`]), so it shows the same whether the console runs inside
//! `metrocloud run` or on its own beside a pipeline elsewhere.
//!
//! Every device seen keeps its last reading, when it was seen, a short
//! history of values for a chart, and its sequence audit (gaps, duplicates,
//! out of order) in the same [`SequenceTrack`] the pipeline's ledger keeps per
//! device, held in the device's record rather than a table of its own. Alerts
//! and dead letters are kept as bounded rings with their counts over the
//! last hour, so memory stays flat however long the console runs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rskafka::record::RecordAndOffset;
use std::borrow::Cow;

use serde::Serialize;

pub use super::recent::{RECENT_VALUES, RecentValues};
use crate::intern::Interner;
use crate::pipeline::audit::{AuditTotals, DeviceAudit, SequenceTrack, Verdict};
use crate::sensor::device::{DeviceKey, DeviceTable, DeviceType};
use crate::sensor::reading::{LocationView, ReadingView, SensorReading};
use crate::sensor::rules::Alert;

/// Alerts kept for the feed.
pub const KEPT_ALERTS: usize = 1_000;
/// Dead letters kept with their bytes and headers.
pub const KEPT_DEAD_LETTERS: usize = 500;
/// Devices tracked at most (a bound on memory, far above any fleet here).
pub const MAX_DEVICES: usize = 2_000_000;
/// One minute, the width of the "last hour" counts' buckets.
const MINUTE_MS: i64 = 60_000;

/// A device's connection status, from the time since its last reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Reported within three reading intervals (10 s at least).
    Online,
    /// Quiet for longer, but less than five minutes.
    Stale,
    /// Quiet for five minutes or more.
    Offline,
}

impl Presence {
    /// Lower-case name, as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Online => "online",
            Presence::Stale => "stale",
            Presence::Offline => "offline",
        }
    }

    /// The status for a device last seen `quiet_ms` ago, reporting every `interval`.
    pub fn of(quiet_ms: i64, interval: Duration) -> Presence {
        let online_ms = (interval.as_millis() as i64 * 3).max(10_000);
        if quiet_ms <= online_ms {
            Presence::Online
        } else if quiet_ms < 300_000 {
            Presence::Stale
        } else {
            Presence::Offline
        }
    }
}

/// What the console keeps of one device.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    /// Kind of device.
    pub device_type: DeviceType,
    /// Last value.
    pub value: f64,
    /// Its unit.
    pub unit: Arc<str>,
    /// Last battery level (%).
    pub battery: f64,
    /// Last signal strength (dBm).
    pub signal: i32,
    /// Site and zone of the last reading.
    pub location: Arc<str>,
    /// When the last reading was taken (ms since the epoch).
    pub reading_time_ms: i64,
    /// When Kafka got the last reading (record timestamp, ms since the epoch).
    pub last_seen_ms: i64,
    /// Readings seen, repeats included.
    pub readings: u64,
    /// Repeats the pipeline removed before the console saw them (when it
    /// feeds the console directly; see [`FleetState::repeat_removed`]).
    pub repeats_removed: u32,
    /// The last values.
    pub recent: RecentValues,
    /// Its sequence numbers: gaps, repeats and late readings.
    pub sequence: SequenceTrack,
}

impl DeviceRecord {
    /// Gaps, duplicates and out-of-order readings, summed.
    pub fn problems(&self) -> u32 {
        let audit = self.sequence.audit();
        audit.missing + audit.duplicates + audit.out_of_order + self.repeats_removed
    }

    /// Counts a reading, and keeps it as the latest unless it is a repeat or
    /// older than the latest.
    fn update(
        &mut self,
        reading: &ReadingView<'_>,
        verdict: Verdict,
        reading_ms: i64,
        seen_ms: i64,
        labels: &mut Interner,
    ) {
        self.readings += 1;
        if verdict == Verdict::Duplicate || reading_ms < self.reading_time_ms {
            return;
        }
        self.device_type = reading.device_type;
        self.value = reading.value;
        if *self.unit != *reading.unit {
            self.unit = labels.get(&reading.unit);
        }
        self.battery = reading.battery_level;
        self.signal = reading.signal_strength;
        self.reading_time_ms = reading_ms;
        self.last_seen_ms = self.last_seen_ms.max(seen_ms);
        self.recent.push(reading.value as f32);
    }
}

/// One device, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceView {
    /// Device id.
    pub device_id: String,
    /// Kind of device.
    pub device_type: DeviceType,
    /// Online, stale or offline.
    pub presence: Presence,
    /// Last value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// Last battery level (%).
    pub battery: f64,
    /// Last signal strength (dBm).
    pub signal: i32,
    /// Site and zone.
    pub location: String,
    /// When the last reading was taken (RFC 3339).
    pub last_reading: String,
    /// Seconds since Kafka got the last reading.
    pub seconds_since_seen: f64,
    /// Readings seen.
    pub readings: u64,
    /// Sequence numbers skipped and not seen since.
    pub gaps: u32,
    /// Repeats.
    pub duplicates: u32,
    /// Readings after a later one.
    pub out_of_order: u32,
    /// The last values, oldest first.
    pub recent: Vec<f32>,
}

/// One alert in the feed.
#[derive(Debug, Clone, Serialize)]
pub struct AlertEntry {
    /// When Kafka got it (ms since the epoch).
    pub received_ms: i64,
    /// Its partition and offset in the alert topic.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The alert.
    pub alert: Alert,
}

/// One dead letter with its headers.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterEntry {
    /// When Kafka got it (ms since the epoch).
    pub received_ms: i64,
    /// Partition in the dead-letter topic.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The `dlq.reason` header.
    pub reason: String,
    /// Key, as text (lossy).
    pub key: Option<String>,
    /// Value, as text (lossy, cut at 4 KiB).
    pub value: Option<String>,
    /// Headers, as text (lossy).
    pub headers: BTreeMap<String, String>,
}

/// Counters of what the console read.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct WatchCounters {
    /// Sensor-topic records read.
    pub records: u64,
    /// Valid readings among them.
    pub readings: u64,
    /// Records that are not readings (the pipeline sends them to the dead-letter topic).
    pub invalid: u64,
    /// Alerts read.
    pub alerts: u64,
    /// Dead letters read.
    pub dead_letters: u64,
}

/// Everything the fleet, alert and dead-letter views read; see the module documentation.
#[derive(Debug)]
pub struct FleetState {
    devices: DeviceTable<DeviceRecord>,
    /// Units, locations and run ids, shared by the devices that report them.
    labels: Interner,
    /// Sequence totals over every device (each device's are in its record).
    totals: AuditTotals,
    alerts: VecDeque<AlertEntry>,
    alert_hour: HourCount,
    dead_letters: VecDeque<DeadLetterEntry>,
    dead_letter_hour: HourCount,
    dead_letter_reasons: BTreeMap<String, u64>,
    counters: WatchCounters,
    repeats_removed: u64,
}

impl Default for FleetState {
    fn default() -> Self {
        FleetState {
            devices: DeviceTable::default(),
            labels: Interner::new(),
            totals: AuditTotals::default(),
            alerts: VecDeque::new(),
            alert_hour: HourCount::default(),
            dead_letters: VecDeque::new(),
            dead_letter_hour: HourCount::default(),
            dead_letter_reasons: BTreeMap::new(),
            counters: WatchCounters::default(),
            repeats_removed: 0,
        }
    }
}

/// The state behind a lock, shared by the readers and the pages.
pub type SharedFleet = Arc<Mutex<FleetState>>;

impl FleetState {
    /// Takes a batch of sensor-topic records.
    pub fn on_readings(&mut self, records: &[RecordAndOffset]) {
        for record in records {
            self.counters.records += 1;
            let glance = record
                .record
                .value
                .as_deref()
                .and_then(|v| serde_json::from_slice::<ReadingView<'_>>(v).ok());
            let taken = glance.as_ref().and_then(|g| {
                chrono::DateTime::parse_from_rfc3339(&g.timestamp)
                    .ok()
                    .map(|t| t.timestamp_millis())
            });
            let (Some(glance), Some(reading_ms)) = (glance, taken) else {
                self.counters.invalid += 1;
                continue;
            };
            self.counters.readings += 1;
            self.take(
                &glance,
                reading_ms,
                record.record.timestamp.timestamp_millis(),
            );
        }
    }

    /// Takes one valid reading that Kafka got at `seen_ms`.
    pub fn observe(&mut self, reading: &SensorReading, seen_ms: i64) {
        let glance = ReadingView {
            device_id: Cow::Borrowed(&reading.device_id),
            device_type: reading.device_type,
            run_id: Cow::Borrowed(&reading.run_id),
            sequence: reading.sequence,
            timestamp: Cow::Owned(String::new()),
            value: reading.value,
            unit: Cow::Borrowed(&reading.unit),
            battery_level: reading.battery_level,
            signal_strength: reading.signal_strength,
            location: LocationView {
                site: Cow::Borrowed(&reading.location.site),
                zone: Cow::Borrowed(&reading.location.zone),
            },
        };
        self.take(&glance, reading.timestamp.timestamp_millis(), seen_ms);
    }

    fn take(&mut self, reading: &ReadingView<'_>, reading_ms: i64, seen_ms: i64) {
        // One lookup for a device already known, the common case.
        if let Some(device) = self.devices.get_mut(reading.device_id.as_ref()) {
            let verdict = device.sequence.observe(
                &reading.run_id,
                reading.sequence,
                &mut self.totals,
                &mut self.labels,
            );
            device.update(reading, verdict, reading_ms, seen_ms, &mut self.labels);
            return;
        }
        if self.devices.len() >= MAX_DEVICES {
            return;
        }
        let run_id = self.labels.get(&reading.run_id);
        let mut device = DeviceRecord {
            device_type: reading.device_type,
            value: reading.value,
            unit: self.labels.get(&reading.unit),
            battery: reading.battery_level,
            signal: reading.signal_strength,
            location: self.labels.get(&format!(
                "{}/{}",
                reading.location.site, reading.location.zone
            )),
            reading_time_ms: 0,
            last_seen_ms: 0,
            readings: 0,
            repeats_removed: 0,
            recent: RecentValues::default(),
            sequence: SequenceTrack::first(run_id, reading.sequence, &mut self.totals),
        };
        device.update(reading, Verdict::New, reading_ms, seen_ms, &mut self.labels);
        self.devices
            .insert(DeviceKey::from(reading.device_id.as_ref()), device);
    }

    /// Takes a batch of alert-topic records of `partition`.
    pub fn on_alerts(&mut self, partition: i32, records: &[RecordAndOffset]) {
        for record in records {
            let Some(alert) = record
                .record
                .value
                .as_deref()
                .and_then(|v| serde_json::from_slice::<Alert>(v).ok())
            else {
                continue;
            };
            self.counters.alerts += 1;
            let received_ms = record.record.timestamp.timestamp_millis();
            self.alert_hour.add(received_ms);
            push_bounded(
                &mut self.alerts,
                AlertEntry {
                    received_ms,
                    partition,
                    offset: record.offset,
                    alert,
                },
                KEPT_ALERTS,
            );
        }
    }

    /// Takes a batch of dead-letter records of `partition`.
    pub fn on_dead_letters(&mut self, partition: i32, records: &[RecordAndOffset]) {
        for record in records {
            self.counters.dead_letters += 1;
            let headers: BTreeMap<String, String> = record
                .record
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect();
            let reason = headers
                .get(crate::pipeline::sinks::kafka::DLQ_REASON)
                .cloned()
                .unwrap_or_else(|| "unknown".to_string());
            *self.dead_letter_reasons.entry(reason.clone()).or_default() += 1;
            let received_ms = record.record.timestamp.timestamp_millis();
            self.dead_letter_hour.add(received_ms);
            let text = |bytes: &Option<Vec<u8>>| {
                bytes.as_deref().map(|b| {
                    let cut = &b[..b.len().min(4096)];
                    String::from_utf8_lossy(cut).into_owned()
                })
            };
            push_bounded(
                &mut self.dead_letters,
                DeadLetterEntry {
                    received_ms,
                    partition,
                    offset: record.offset,
                    reason,
                    key: text(&record.record.key),
                    value: text(&record.record.value),
                    headers,
                },
                KEPT_DEAD_LETTERS,
            );
        }
    }

    /// Alerts Kafka got in the hour before `now_ms`.
    pub fn alerts_last_hour(&self, now_ms: i64) -> u64 {
        self.alert_hour.total(now_ms)
    }

    /// Dead letters Kafka got in the hour before `now_ms`.
    pub fn dead_letters_last_hour(&self, now_ms: i64) -> u64 {
        self.dead_letter_hour.total(now_ms)
    }

    /// What was read.
    pub fn counters(&self) -> WatchCounters {
        self.counters
    }

    /// Sequence totals over every device.
    pub fn audit(&self) -> crate::pipeline::audit::AuditTotals {
        let mut totals = self.totals;
        totals.duplicates += self.repeats_removed;
        totals
    }

    /// A repeat of `device_id`'s reading that the pipeline removed (it feeds the
    /// console only new readings, so the ledger here never sees the repeat).
    pub fn repeat_removed(&mut self, device_id: &str) {
        self.repeats_removed += 1;
        if let Some(device) = self.devices.get_mut(device_id) {
            device.repeats_removed += 1;
        }
    }

    /// Devices seen.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// Every device with its id, in no particular order.
    pub fn devices(&self) -> impl Iterator<Item = (&str, &DeviceRecord)> {
        self.devices
            .iter()
            .map(|(id, record)| (id.as_str(), record))
    }

    /// One device's view.
    pub fn device(&self, device_id: &str, now_ms: i64, interval: Duration) -> Option<DeviceView> {
        self.devices
            .get_key_value(device_id)
            .map(|(id, record)| self.view(id, record, now_ms, interval))
    }

    /// The view of `record`.
    pub fn view(
        &self,
        device_id: &str,
        record: &DeviceRecord,
        now_ms: i64,
        interval: Duration,
    ) -> DeviceView {
        let audit: DeviceAudit = record.sequence.audit();
        let quiet_ms = (now_ms - record.last_seen_ms).max(0);
        DeviceView {
            device_id: device_id.to_string(),
            device_type: record.device_type,
            presence: Presence::of(quiet_ms, interval),
            value: record.value,
            unit: record.unit.to_string(),
            battery: record.battery,
            signal: record.signal,
            location: record.location.to_string(),
            last_reading: chrono::DateTime::from_timestamp_millis(record.reading_time_ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default(),
            seconds_since_seen: quiet_ms as f64 / 1000.0,
            readings: record.readings,
            gaps: audit.missing,
            duplicates: audit.duplicates + record.repeats_removed,
            out_of_order: audit.out_of_order,
            recent: record.recent.iter().collect(),
        }
    }

    /// Alerts kept, newest first.
    pub fn alerts(&self) -> impl Iterator<Item = &AlertEntry> {
        self.alerts.iter().rev()
    }

    /// Dead letters kept, newest first.
    pub fn dead_letters(&self) -> impl Iterator<Item = &DeadLetterEntry> {
        self.dead_letters.iter().rev()
    }

    /// Dead letters read, by reason.
    pub fn dead_letter_reasons(&self) -> &BTreeMap<String, u64> {
        &self.dead_letter_reasons
    }
}

fn push_bounded<T>(ring: &mut VecDeque<T>, item: T, limit: usize) {
    if ring.len() >= limit {
        ring.pop_front();
    }
    ring.push_back(item);
}

/// Events per minute over the last hour: sixty counters, whatever the rate.
#[derive(Debug, Default)]
struct HourCount {
    /// (minute since the epoch, events in it), for the last 60 minutes seen.
    minutes: VecDeque<(i64, u64)>,
}

impl HourCount {
    fn add(&mut self, at_ms: i64) {
        let minute = at_ms.div_euclid(MINUTE_MS);
        match self.minutes.iter_mut().find(|(m, _)| *m == minute) {
            Some((_, count)) => *count += 1,
            None => {
                self.minutes.push_back((minute, 1));
                self.minutes
                    .make_contiguous()
                    .sort_unstable_by_key(|(m, _)| *m);
                while self.minutes.len() > 60 {
                    self.minutes.pop_front();
                }
            }
        }
    }

    /// Events in the 60 minutes up to `now_ms` (to the minute).
    fn total(&self, now_ms: i64) -> u64 {
        let now = now_ms.div_euclid(MINUTE_MS);
        self.minutes
            .iter()
            .filter(|(m, _)| *m > now - 60 && *m <= now)
            .map(|(_, count)| count)
            .sum()
    }
}
