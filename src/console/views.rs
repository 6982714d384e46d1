//! What each page and its JSON twin show, computed once from the console's
//! state: the overview's health policy, browsing, groups, the fleet, alerts
//! and dead letters. Pages render these values; the API serializes them.

use super::lock;
use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::sensor::detect::quality::QualityLine;

use super::ConsoleState;
use super::cluster::GroupView;
use super::fleet::{AlertEntry, DeadLetterEntry, DeviceView, Presence};
use super::messages::{BrowseError, BrowseQuery, MessageView};
use crate::gateway::{GatewaySnapshot, GatewayView};

/// Milliseconds since the epoch, now.
pub(super) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Devices per fleet page.
pub const FLEET_PAGE: usize = 100;

/// Green, amber or red, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `green`, `amber` or `red`.
    pub level: &'static str,
    /// What made it amber or red.
    pub reasons: Vec<String>,
}

/// Devices by presence.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PresenceCounts {
    /// Online.
    pub online: usize,
    /// Stale.
    pub stale: usize,
    /// Offline.
    pub offline: usize,
}

impl PresenceCounts {
    fn add(&mut self, presence: Presence) {
        match presence {
            Presence::Online => self.online += 1,
            Presence::Stale => self.stale += 1,
            Presence::Offline => self.offline += 1,
        }
    }
}

/// Data-loss counters.
#[derive(Debug, Clone, Serialize)]
pub struct LossCounters {
    /// Sequence numbers skipped and not seen since, over the devices on the sensor topic.
    pub sequence_gaps: u64,
    /// Repeated readings on the sensor topic.
    pub duplicates: u64,
    /// Readings after a later one of the same device.
    pub out_of_order: u64,
    /// Of the pipeline in this process: readings acknowledged and not processed yet.
    pub acked_unprocessed: Option<u64>,
    /// Of the pipeline in this process: readings whose delivery failed.
    pub delivery_failed: Option<u64>,
}

/// Readings waiting this long in the gateway's buffer turn the overview amber:
/// Kafka has not taken them for longer than a delivery timeout would explain.
const GATEWAY_WAIT_WARNING_SECS: f64 = 30.0;

/// The overview page.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// At a glance.
    pub health: Health,
    /// Whether a broker answered.
    pub reachable: bool,
    /// Brokers up.
    pub brokers_up: usize,
    /// Brokers known.
    pub brokers_total: usize,
    /// The active controller.
    pub active_controller: Option<i32>,
    /// Under-replicated partitions.
    pub under_replicated_partitions: usize,
    /// Partitions without a leader.
    pub offline_partitions: usize,
    /// Topics, not counting Kafka's own.
    pub topics: usize,
    /// Records written per second (all topics).
    pub produce_rate: Option<f64>,
    /// Offsets committed per second (all groups).
    pub consume_rate: Option<f64>,
    /// Lag over all groups.
    pub total_consumer_lag: i64,
    /// Alerts written in the last hour.
    pub alerts_last_hour: u64,
    /// Dead letters written in the last hour.
    pub dead_letters_last_hour: u64,
    /// Devices seen, and how many are online, stale or offline.
    pub devices: usize,
    /// By presence.
    pub presence: PresenceCounts,
    /// Data loss.
    pub loss: LossCounters,
    /// The device gateway, when it runs in this process.
    pub gateway: Option<GatewaySnapshot>,
    /// What failed while looking, if anything.
    pub error: Option<String>,
}

pub(super) async fn overview(state: &ConsoleState) -> Overview {
    let cluster = state.cluster.snapshot().await;
    let now = now_ms();
    let (alerts, dead, devices, presence, audit) = {
        let fleet = lock(&state.fleet);
        let mut presence = PresenceCounts::default();
        for (_, device) in fleet.devices() {
            presence.add(Presence::of(now - device.last_seen_ms, state.data_interval));
        }
        (
            fleet.alerts_last_hour(now),
            fleet.dead_letters_last_hour(now),
            fleet.device_count(),
            presence,
            fleet.audit(),
        )
    };
    let delivery = state.pipeline.delivery.as_ref().map(|d| lock(d).report());
    let loss = LossCounters {
        sequence_gaps: audit.missing,
        duplicates: audit.duplicates,
        out_of_order: audit.out_of_order,
        acked_unprocessed: delivery.map(|r| r.lost),
        delivery_failed: state
            .pipeline
            .producer
            .as_ref()
            .map(|p| p.snapshot().failed),
    };
    let mut red = Vec::new();
    let mut amber = Vec::new();
    if !cluster.reachable {
        red.push("no broker answers".to_string());
    }
    if cluster.offline() > 0 {
        red.push(format!("{} partitions have no leader", cluster.offline()));
    }
    let down = cluster.brokers.len() - cluster.brokers_up();
    if cluster.reachable && down > 0 {
        amber.push(format!("{down} of {} brokers down", cluster.brokers.len()));
    }
    if cluster.under_replicated() > 0 {
        amber.push(format!(
            "{} partitions under-replicated",
            cluster.under_replicated()
        ));
    }
    if loss.sequence_gaps > 0 {
        amber.push(format!(
            "{} readings missing (sequence gaps)",
            loss.sequence_gaps
        ));
    }
    if loss.delivery_failed.unwrap_or(0) > 0 {
        red.push(format!(
            "{} readings failed delivery",
            loss.delivery_failed.unwrap_or(0)
        ));
    }
    let gateway = state.pipeline.gateway.as_ref().map(GatewayView::snapshot);
    if let Some(g) = &gateway
        && g.oldest_age_seconds > GATEWAY_WAIT_WARNING_SECS
    {
        amber.push(format!(
            "{} readings wait in the gateway's buffer, the oldest for {:.0} s",
            g.buffered_records, g.oldest_age_seconds
        ));
    }
    let level = if !red.is_empty() {
        "red"
    } else if !amber.is_empty() {
        "amber"
    } else {
        "green"
    };
    Overview {
        health: Health {
            level,
            reasons: red.into_iter().chain(amber).collect(),
        },
        reachable: cluster.reachable,
        brokers_up: cluster.brokers_up(),
        brokers_total: cluster.brokers.len(),
        active_controller: cluster.active_controller,
        under_replicated_partitions: cluster.under_replicated(),
        offline_partitions: cluster.offline(),
        topics: cluster.topics.iter().filter(|t| !t.internal).count(),
        produce_rate: cluster.produce_rate,
        consume_rate: cluster.consume_rate,
        total_consumer_lag: cluster.total_lag(),
        alerts_last_hour: alerts,
        dead_letters_last_hour: dead,
        devices,
        presence,
        loss,
        gateway,
        error: cluster.error.clone(),
    }
}

/// The messages page's query: a topic and how to browse it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MessagesQuery {
    /// Topic (default: the sensor topic).
    pub topic: Option<String>,
    /// How to browse.
    #[serde(flatten)]
    pub browse: BrowseQuery,
}

/// What the messages page shows.
#[derive(Debug, Clone, Serialize)]
pub struct MessagesView {
    /// The topic.
    pub topic: String,
    /// Every topic, to choose from.
    pub topics: Vec<String>,
    /// Its partitions.
    pub partitions: Vec<i32>,
    /// The records, newest first.
    pub records: Vec<MessageView>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

pub(super) async fn browse(
    state: &ConsoleState,
    topic: &str,
    query: &BrowseQuery,
) -> (MessagesView, StatusCode) {
    let cluster = state.cluster.snapshot().await;
    let mut view = MessagesView {
        topic: topic.to_string(),
        topics: cluster.topics.iter().map(|t| t.name.clone()).collect(),
        partitions: Vec::new(),
        records: Vec::new(),
        error: None,
    };
    let Some(info) = cluster.topic(topic) else {
        view.error = Some(match &cluster.error {
            Some(e) if !cluster.reachable => e.clone(),
            _ => format!("no topic {topic}"),
        });
        return (view, StatusCode::NOT_FOUND);
    };
    view.partitions = info.partitions.iter().map(|p| p.partition).collect();
    let reader = match state.reader().await {
        Ok(reader) => reader,
        Err(e) => {
            view.error = Some(format!("cannot reach Kafka: {e}"));
            return (view, StatusCode::BAD_GATEWAY);
        }
    };
    match reader.browse(topic, &view.partitions, query).await {
        Ok(records) => {
            view.records = records;
            (view, StatusCode::OK)
        }
        Err(e @ BrowseError::BadRequest(_)) => {
            view.error = Some(e.to_string());
            (view, StatusCode::BAD_REQUEST)
        }
        Err(e) => {
            view.error = Some(e.to_string());
            (view, StatusCode::BAD_GATEWAY)
        }
    }
}

/// The live tail's query.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TailQuery {
    /// One partition, or all.
    pub partition: Option<i32>,
}

/// Fills in how far behind each lagging partition of `groups` is: the age
/// of the first record the group has not committed, read from Kafka.
pub(super) async fn with_time_behind(state: &ConsoleState, groups: &mut [GroupView]) {
    let Ok(reader) = state.reader().await else {
        return;
    };
    let now = now_ms();
    for partition in groups.iter_mut().flat_map(|g| g.partitions.iter_mut()) {
        if partition.time_behind_ms.is_some() || partition.lag.unwrap_or(0) == 0 {
            continue;
        }
        if let Ok(Some(written)) = reader
            .timestamp_at(&partition.topic, partition.partition, partition.committed)
            .await
        {
            partition.time_behind_ms = Some((now - written).max(0));
        }
    }
}

pub(super) async fn groups(state: &ConsoleState) -> (Vec<GroupView>, Option<String>) {
    let cluster = state.cluster.snapshot().await;
    let mut groups = cluster.groups.clone();
    with_time_behind(state, &mut groups).await;
    (groups, cluster.error.clone())
}

/// The fleet page's query.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FleetQuery {
    /// Only this kind of device.
    #[serde(rename = "type")]
    pub device_type: Option<String>,
    /// Only `online`, `stale` or `offline` devices.
    pub presence: Option<String>,
    /// Only devices whose id contains this.
    pub q: Option<String>,
    /// `problems`: devices with gaps or duplicates first.
    pub sort: Option<String>,
    /// Page number, from 1.
    pub page: Option<usize>,
}

/// The fleet page.
#[derive(Debug, Clone, Serialize)]
pub struct FleetView {
    /// Devices seen.
    pub total: usize,
    /// Devices by kind and presence.
    pub by_type: BTreeMap<String, PresenceCounts>,
    /// Devices matching the query.
    pub matching: usize,
    /// This page.
    pub page: usize,
    /// Pages.
    pub pages: usize,
    /// The devices of this page.
    pub devices: Vec<DeviceView>,
}

pub(super) fn fleet(state: &ConsoleState, query: &FleetQuery) -> FleetView {
    let now = now_ms();
    let fleet = lock(&state.fleet);
    let interval = state.data_interval;
    let mut by_type: BTreeMap<String, PresenceCounts> = BTreeMap::new();
    let wanted_type = query.device_type.as_deref().filter(|t| !t.is_empty());
    let wanted_presence = query.presence.as_deref().filter(|p| !p.is_empty());
    let needle = query.q.as_deref().filter(|q| !q.is_empty());
    let mut matching = Vec::new();
    for (id, device) in fleet.devices() {
        let presence = Presence::of(now - device.last_seen_ms, interval);
        by_type
            .entry(device.device_type.as_str().to_string())
            .or_default()
            .add(presence);
        if wanted_type.is_some_and(|t| t != device.device_type.as_str())
            || wanted_presence.is_some_and(|p| p != presence.as_str())
            || needle.is_some_and(|n| !id.contains(n))
        {
            continue;
        }
        matching.push((id, device));
    }
    matching.sort_unstable_by(|a, b| a.0.cmp(b.0));
    if query.sort.as_deref() == Some("problems") {
        let mut scored: Vec<_> = matching
            .iter()
            .map(|(id, d)| (d.problems(), *id, *d))
            .collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        matching = scored.into_iter().map(|(_, id, d)| (id, d)).collect();
    }
    let pages = matching.len().div_ceil(FLEET_PAGE).max(1);
    let page = query.page.unwrap_or(1).clamp(1, pages);
    let devices = matching
        .iter()
        .skip((page - 1) * FLEET_PAGE)
        .take(FLEET_PAGE)
        .map(|(id, device)| fleet.view(id, device, now, interval))
        .collect();
    FleetView {
        total: fleet.device_count(),
        by_type,
        matching: matching.len(),
        page,
        pages,
        devices,
    }
}

/// The alert feed's query.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AlertsQuery {
    /// Only this kind (`threshold_breach`, `low_battery`, ...).
    pub kind: Option<String>,
    /// Only this device.
    pub device: Option<String>,
    /// Only `warning` or `critical`.
    pub severity: Option<String>,
}

/// Alert quality against the simulator's ground truth.
#[derive(Debug, Clone, Serialize)]
pub struct Quality {
    /// Alerts on injected anomalies.
    pub true_positives: u64,
    /// Alerts on normal readings.
    pub false_positives: u64,
    /// Injected anomalies without an alert.
    pub false_negatives: u64,
    /// Of the alerts, the share that were anomalies.
    pub precision: f64,
    /// Of the anomalies, the share alerted.
    pub recall: f64,
}

/// The alerts page.
#[derive(Debug, Clone, Serialize)]
pub struct AlertsView {
    /// Alerts in the last hour.
    pub last_hour: u64,
    /// Alert quality, when the pipeline runs in this process.
    pub quality: Option<Quality>,
    /// The fault detector's quality per kind, when the pipeline runs in this
    /// process with the detector on and readings carry fault episodes.
    pub faults: Option<Vec<QualityLine>>,
    /// Kinds seen, for the filter.
    pub kinds: Vec<String>,
    /// The matching alerts kept, newest first.
    pub alerts: Vec<AlertEntry>,
}

pub(super) fn alerts(state: &ConsoleState, query: &AlertsQuery) -> AlertsView {
    let fleet = lock(&state.fleet);
    let pick = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    let (kind, device, severity) = (
        pick(&query.kind),
        pick(&query.device),
        pick(&query.severity),
    );
    let mut kinds: Vec<String> = fleet
        .alerts()
        .map(|a| a.alert.kind.as_str().to_string())
        .collect();
    kinds.sort();
    kinds.dedup();
    let alerts = fleet
        .alerts()
        .filter(|a| kind.as_deref().is_none_or(|k| a.alert.kind.as_str() == k))
        .filter(|a| device.as_deref().is_none_or(|d| a.alert.device_id == d))
        .filter(|a| {
            severity
                .as_deref()
                .is_none_or(|s| serde_json::to_value(a.alert.severity).ok() == Some(s.into()))
        })
        .cloned()
        .collect();
    let quality = state.pipeline.processing.as_ref().map(|stats| {
        let q = stats.alert_quality();
        Quality {
            true_positives: q.true_positives,
            false_positives: q.false_positives,
            false_negatives: q.false_negatives,
            precision: q.precision(),
            recall: q.recall(),
        }
    });
    let faults = state.pipeline.processing.as_ref().and_then(|stats| {
        let quality = stats.fault_quality();
        (quality.episodes() > 0).then(|| quality.lines())
    });
    AlertsView {
        last_hour: fleet.alerts_last_hour(now_ms()),
        quality,
        faults,
        kinds,
        alerts,
    }
}

/// The dead-letter page's query.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeadLettersQuery {
    /// Only this reason.
    pub reason: Option<String>,
}

/// The dead-letter page.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLettersView {
    /// Dead letters in the last hour.
    pub last_hour: u64,
    /// Dead letters read, by reason.
    pub reasons: BTreeMap<String, u64>,
    /// The matching records kept, newest first.
    pub records: Vec<DeadLetterEntry>,
}

pub(super) fn dead_letters(state: &ConsoleState, query: &DeadLettersQuery) -> DeadLettersView {
    let fleet = lock(&state.fleet);
    let reason = query.reason.as_deref().filter(|r| !r.is_empty());
    DeadLettersView {
        last_hour: fleet.dead_letters_last_hour(now_ms()),
        reasons: fleet.dead_letter_reasons().clone(),
        records: fleet
            .dead_letters()
            .filter(|d| reason.is_none_or(|r| d.reason == r))
            .cloned()
            .collect(),
    }
}
