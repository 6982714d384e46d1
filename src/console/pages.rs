//! The console's HTML, rendered on the server with maud (which escapes every
//! value it inserts). Each page has the navigation, a filter form when it
//! takes one, and a `#live` region that the script refreshes in place.

use maud::{DOCTYPE, Markup, html};

use super::cluster::{ClusterSnapshot, GroupView, TopicView};
use super::fleet::{DeviceView, RECENT_VALUES};
use super::messages::BrowseQuery;
use super::views::{
    AlertsQuery, AlertsView, DeadLettersQuery, DeadLettersView, FleetQuery, FleetView,
    MessagesView, Overview,
};
use crate::sensor::rules::Severity;

/// The style sheet, compiled in.
pub const CSS: &str = include_str!("assets/console.css");
/// The script: refresh and live tail, compiled in.
pub const SCRIPT: &str = include_str!("assets/console.js");

const NAV: [(&str, &str); 9] = [
    ("/", "Overview"),
    ("/brokers", "Brokers"),
    ("/topics", "Topics"),
    ("/messages", "Messages"),
    ("/groups", "Consumer groups"),
    ("/fleet", "Fleet"),
    ("/alerts", "Alerts"),
    ("/dead-letters", "Dead letters"),
    ("/history", "History"),
];

/// A group partition further behind than this is highlighted.
const BEHIND_WARN_MS: i64 = 30_000;

/// Seconds between refreshes of pages that refresh.
const REFRESH_SECONDS: u32 = 5;

pub(super) fn page(title: &str, current: &str, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · MetroCloud console" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body data-refresh=[refresh.then_some(REFRESH_SECONDS)] {
                header {
                    a.brand href="/" { "MetroCloud" }
                    nav {
                        @for (href, name) in NAV {
                            a href=(href) class=[(href == current).then_some("current")] { (name) }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
                footer { "Read-only. Pages refresh every " (REFRESH_SECONDS) " s. JSON of every page under " code { "/api/v1" } ", metrics at " a href="/metrics" { "/metrics" } "." }
            }
        }
    }
}

fn rate(value: Option<f64>) -> String {
    match value {
        Some(v) => format!("{} /s", thousands(v.round() as i64)),
        None => "measuring…".to_string(),
    }
}

/// 1234567 as "1,234,567".
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn level(ok: bool, warn: bool) -> &'static str {
    if ok {
        "green"
    } else if warn {
        "amber"
    } else {
        "red"
    }
}

fn card(title: &str, value: String, detail: Markup, tone: &str) -> Markup {
    html! {
        section class={ "card " (tone) } {
            h2 { (title) }
            p.value { (value) }
            div.detail { (detail) }
        }
    }
}

fn ids(list: &[i32]) -> String {
    list.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn duration_ms(ms: i64) -> String {
    let seconds = ms as f64 / 1000.0;
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else if seconds < 3600.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

fn time_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn error_box(error: Option<&str>) -> Markup {
    html! {
        @if let Some(e) = error {
            p.error role="alert" { "Kafka: " (e) }
        }
    }
}

/// The overview: one card per question, coloured.
pub fn overview(o: &Overview) -> Markup {
    let headline = match o.health.level {
        "green" => "Healthy: cluster, fleet and pipeline are fine",
        "amber" => "Degraded: still working, but look at the reasons below",
        _ => "Failing: data is not flowing or being lost",
    };
    let loss = o.loss.sequence_gaps + o.loss.delivery_failed.unwrap_or(0);
    let body = html! {
        div #live {
            div class={ "banner " (o.health.level) } data-health=(o.health.level) {
                strong { (headline) }
                @if !o.health.reasons.is_empty() {
                    ul { @for reason in &o.health.reasons { li { (reason) } } }
                }
            }
            div.cards {
                (card("Brokers up", format!("{} / {}", o.brokers_up, o.brokers_total),
                    html! { "Active controller: " (o.active_controller.map(|c| c.to_string()).unwrap_or_else(|| "none".into())) " · " a href="/brokers" { "brokers" } },
                    level(o.reachable && o.brokers_up == o.brokers_total, o.reachable)))
                (card("Under-replicated partitions", thousands(o.under_replicated_partitions as i64),
                    html! { (o.offline_partitions) " offline (no leader) · " (o.topics) " topics · " a href="/topics" { "topics" } },
                    level(o.under_replicated_partitions == 0 && o.offline_partitions == 0, o.offline_partitions == 0)))
                (card("Records written", rate(o.produce_rate),
                    html! { (rate(o.consume_rate)) " committed by consumer groups · averaged over the last minute" }, "neutral"))
                (card("Consumer lag", thousands(o.total_consumer_lag),
                    html! { "records not yet committed, all groups · " a href="/groups" { "groups" } },
                    "neutral"))
                (card("Devices", thousands(o.devices as i64),
                    html! { (o.presence.online) " online · " (o.presence.stale) " stale · " (o.presence.offline) " offline · " a href="/fleet" { "fleet" } },
                    level(o.presence.stale + o.presence.offline == 0, true)))
                (card("Readings missing", thousands(loss as i64),
                    html! {
                        (o.loss.sequence_gaps) " sequence gaps · " (o.loss.duplicates) " duplicates · " (o.loss.out_of_order) " out of order"
                        @if let Some(unprocessed) = o.loss.acked_unprocessed { " · " (unprocessed) " acknowledged, not yet processed" }
                        @if let Some(failed) = o.loss.delivery_failed { " · " (failed) " failed delivery" }
                    },
                    level(loss == 0, o.loss.delivery_failed.unwrap_or(0) == 0)))
                (card("Alerts, last hour", thousands(o.alerts_last_hour as i64),
                    html! { a href="/alerts" { "alert feed" } }, "neutral"))
                (card("Dead letters, last hour", thousands(o.dead_letters_last_hour as i64),
                    html! { "records that failed validation · " a href="/dead-letters" { "dead letters" } },
                    level(o.dead_letters_last_hour == 0, true)))
                @if let Some(g) = &o.gateway {
                    (card("Gateway buffer", thousands(g.buffered_records as i64),
                        html! {
                            "readings waiting for Kafka, oldest " (format!("{:.1}", g.oldest_age_seconds)) " s · "
                            (thousands(g.accepted as i64)) " accepted · " (thousands(g.forwarded as i64)) " forwarded · "
                            (thousands(g.refused as i64)) " refused · " (thousands(g.pushed_back as i64)) " pushed back"
                        },
                        level(g.oldest_age_seconds <= 30.0, g.pushed_back == 0)))
                }
            }
            (error_box(o.error.as_deref()))
        }
    };
    page("Overview", "/", true, body)
}

/// Every broker seen, up or down.
pub fn brokers(c: &ClusterSnapshot) -> Markup {
    let body = html! {
        div #live {
            p { (c.brokers_up()) " of " (c.brokers.len()) " brokers up. A broker is up while the cluster's metadata lists it (registered with the controller and not fenced)." }
            table {
                thead { tr { th { "Id" } th { "Address" } th { "Status" } th { "Controller role" } th.num { "Partitions led" } th.num { "Replicas" } } }
                tbody {
                    @for b in &c.brokers {
                        tr data-broker=(b.id) data-up=(b.up) class=[(!b.up).then_some("bad")] {
                            td { (b.id) }
                            td { (b.address) }
                            td { span class=(if b.up { "pill green" } else { "pill red" }) { (if b.up { "up" } else { "down" }) } }
                            td { (if b.active_controller { "active controller" } else if b.voter { "voter" } else { "—" }) }
                            td.num { (b.partitions_led) }
                            td.num { (b.replicas) }
                        }
                    }
                }
            }
            (error_box(c.error.as_deref()))
        }
    };
    page("Brokers", "/brokers", true, body)
}

fn topic_table(t: &TopicView) -> Markup {
    html! {
        p.meta {
            "Replication factor " (t.replication_factor) " · " (thousands(t.messages as i64)) " messages kept"
            @for (key, value) in &t.configs { " · " code { (key) "=" (value) } }
            " · " a href={ "/messages?topic=" (t.name) } { "browse messages" }
        }
        table {
            thead { tr { th.num { "Partition" } th.num { "Leader" } th { "Replicas" } th { "In-sync replicas" } th.num { "Earliest" } th.num { "Latest" } th { "Status" } } }
            tbody {
                @for p in &t.partitions {
                    tr data-partition=(p.partition) class=[(p.offline).then_some("bad").or((p.under_replicated).then_some("warn"))] {
                        td.num { (p.partition) }
                        td.num { (if p.leader >= 0 { p.leader.to_string() } else { "none".into() }) }
                        td { (ids(&p.replicas)) }
                        td { (ids(&p.isr)) }
                        td.num { (p.earliest.map(thousands).unwrap_or_default()) }
                        td.num { (p.latest.map(thousands).unwrap_or_default()) }
                        td {
                            @if p.offline { span.pill.red { "offline" } }
                            @else if p.under_replicated { span.pill.amber { "under-replicated" } }
                            @else { span.pill.green { "in sync" } }
                        }
                    }
                }
            }
        }
    }
}

/// Topics with partitions, replicas and in-sync replicas.
pub fn topics(c: &ClusterSnapshot) -> Markup {
    let body = html! {
        div #live {
            @for t in c.topics.iter().filter(|t| !t.internal) {
                section.topic data-topic=(t.name) {
                    h2 { (t.name) " "
                        @if t.offline > 0 { span.pill.red { (t.offline) " offline" } }
                        @if t.under_replicated > 0 { span.pill.amber { (t.under_replicated) " under-replicated" } }
                    }
                    (topic_table(t))
                }
            }
            @for t in c.topics.iter().filter(|t| t.internal) {
                details.topic {
                    summary { (t.name) " (Kafka's own, " (t.partitions.len()) " partitions)" }
                    (topic_table(t))
                }
            }
            (error_box(c.error.as_deref()))
        }
    };
    page("Topics", "/topics", true, body)
}

/// Browse a topic, and its live tail.
pub fn messages(v: &MessagesView, q: &BrowseQuery) -> Markup {
    let tail = format!(
        "/api/v1/topics/{}/tail{}",
        v.topic,
        q.partition
            .map(|p| format!("?partition={p}"))
            .unwrap_or_default()
    );
    let body = html! {
        form.filters method="get" action="/messages" {
            label { "Topic " select name="topic" { @for t in &v.topics { option value=(t) selected[*t == v.topic] { (t) } } } }
            label { "Partition " select name="partition" {
                option value="" { "all" }
                @for p in &v.partitions { option value=(p) selected[q.partition == Some(*p)] { (p) } }
            } }
            label { "At or before offset " input type="number" name="offset" value=[q.offset] min="0"; }
            label { "Before time " input type="text" name="time" placeholder="2026-01-31T12:00:00Z" value=[q.time.as_deref()]; }
            label { "Key or value contains " input type="text" name="filter" value=[q.filter.as_deref()]; }
            button type="submit" { "Browse" }
        }
        (error_box(v.error.as_deref()))
        section.tail {
            h2 { "Live tail " span #tail-state.pill.neutral { "connecting" } " " button #tail-toggle type="button" { "Pause" } }
            p.meta { "New records of " code { (v.topic) } " as they are written (at most 20 per fetch are shown; the count of those skipped is kept)." }
            div.scroll {
                table #tail data-src=(tail) {
                    thead { tr { th.num { "Partition" } th.num { "Offset" } th { "Time (UTC)" } th { "Key" } th { "Value" } } }
                    tbody {}
                }
            }
            p #tail-skipped.meta {}
        }
        section {
            h2 { "Newest first (" (v.records.len()) ")" }
            table.records {
                thead { tr { th.num { "Partition" } th.num { "Offset" } th { "Time (UTC)" } th { "Key" } th { "Value" } } }
                tbody {
                    @for r in &v.records {
                        tr data-offset=(r.offset) {
                            td.num { (r.partition) }
                            td.num { (r.offset) }
                            td.time { (r.timestamp.get(..23).unwrap_or(&r.timestamp).replace('T', " ")) }
                            td { code { (r.key.as_deref().unwrap_or("—")) } }
                            td {
                                @if let Some(pretty) = &r.pretty {
                                    details { summary { code { (r.value.as_deref().unwrap_or_default().chars().take(120).collect::<String>()) } } pre { (pretty) } }
                                } @else {
                                    code { (r.value.as_deref().unwrap_or("—")) }
                                }
                                @if !r.headers.is_empty() {
                                    div.headers { @for (k, val) in &r.headers { code { (k) "=" (val) } " " } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Messages", "/messages", false, body)
}

/// Consumer groups with lag per partition.
pub fn groups(groups: &[GroupView], error: Option<&str>) -> Markup {
    let body = html! {
        div #live {
            p.meta { "Lag is the records written and not yet committed; time behind is the age of the first of them. Groups commit every few seconds (MetroCloud's consumer every KAFKA_CONSUMER_COMMIT_INTERVAL_MS, 5 s by default), so a few seconds behind is normal; rows more than 30 s behind are highlighted." }
            @if groups.is_empty() { p { "No consumer groups." } }
            @for g in groups {
                section.group data-group=(g.id) {
                    h2 { (g.id) " " span.pill.neutral { (g.state) } " " span.meta { (g.kind) " protocol · coordinator " (g.coordinator.map(|c| c.to_string()).unwrap_or_else(|| "?".into())) " · " (g.members.len()) " members · lag " (thousands(g.total_lag)) } }
                    @if let Some(e) = &g.error { p.error { (e) } }
                    @if !g.members.is_empty() {
                        table {
                            thead { tr { th { "Member" } th { "Client" } th { "Host" } th { "Partitions" } } }
                            tbody {
                                @for m in &g.members {
                                    tr {
                                        td { code { (m.member_id) } }
                                        td { (m.client_id) }
                                        td { (m.client_host) }
                                        td { @for (topic, ps) in &m.assignment { (topic) ": " (ids(ps)) " " } }
                                    }
                                }
                            }
                        }
                    }
                    table {
                        thead { tr { th { "Topic" } th.num { "Partition" } th.num { "Committed" } th.num { "End" } th.num { "Lag" } th { "Time behind" } th { "Owner" } } }
                        tbody {
                            @for p in &g.partitions {
                                tr data-partition=(p.partition) class=[(p.time_behind_ms.unwrap_or(0) > BEHIND_WARN_MS).then_some("warn")] {
                                    td { (p.topic) }
                                    td.num { (p.partition) }
                                    td.num { (thousands(p.committed)) }
                                    td.num { (p.end.map(thousands).unwrap_or_default()) }
                                    td.num data-lag=[p.lag] { (p.lag.map(thousands).unwrap_or_default()) }
                                    td { (p.time_behind_ms.map(duration_ms).unwrap_or_else(|| "—".into())) }
                                    td { code { (p.owner.as_deref().unwrap_or("—")) } }
                                }
                            }
                        }
                    }
                }
            }
            (error_box(error))
        }
    };
    page("Consumer groups", "/groups", true, body)
}

/// A chart of recent values, as an inline SVG line.
fn sparkline(values: &[f32]) -> Markup {
    let (w, h) = (120.0_f32, 24.0_f32);
    if values.len() < 2 {
        return html! { span.meta { "—" } };
    }
    let min = values.iter().copied().fold(f32::INFINITY, f32::min);
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let span = (max - min).max(f32::EPSILON);
    let step = w / (values.len() - 1) as f32;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f32 * step,
                h - 2.0 - (v - min) / span * (h - 4.0)
            )
        })
        .collect();
    html! {
        svg.spark width=(w) height=(h) viewBox={ "0 0 " (w) " " (h) } role="img" aria-label={ "last " (values.len()) " values, " (min) " to " (max) } {
            polyline points=(points.join(" ")) fill="none" stroke="currentColor" stroke-width="1.5" {}
        }
        span.range { (format!("{min:.1}–{max:.1}")) }
    }
}

fn device_row(d: &DeviceView) -> Markup {
    let presence = d.presence.as_str();
    let tone = match presence {
        "online" => "green",
        "stale" => "amber",
        _ => "red",
    };
    html! {
        tr data-device=(d.device_id) class=[(d.gaps + d.duplicates > 0).then_some("warn")] {
            td { code { (d.device_id) } }
            td { (d.device_type.as_str()) }
            td { span class={ "pill " (tone) } { (presence) } }
            td.num { (format!("{:.2}", d.value)) " " (d.unit) }
            td { (sparkline(&d.recent)) }
            td.time { (d.last_reading.get(..19).unwrap_or(&d.last_reading).replace('T', " ")) }
            td.num { (duration_ms((d.seconds_since_seen * 1000.0) as i64)) " ago" }
            td.num { (format!("{:.0}", d.battery)) "%" }
            td.num { (d.signal) " dBm" }
            td.num { (d.gaps) }
            td.num { (d.duplicates) }
            td { (d.location) }
        }
    }
}

/// Every device seen, a page at a time.
pub fn fleet(v: &FleetView, q: &FleetQuery) -> Markup {
    let link = |page: usize| {
        let mut params = vec![format!("page={page}")];
        for (name, value) in [
            ("type", &q.device_type),
            ("presence", &q.presence),
            ("q", &q.q),
            ("sort", &q.sort),
        ] {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                params.push(format!("{name}={}", value.replace(['&', '#', ' '], "")));
            }
        }
        format!("/fleet?{}", params.join("&"))
    };
    let body = html! {
        form.filters method="get" action="/fleet" {
            label { "Type " select name="type" {
                option value="" { "all" }
                @for t in v.by_type.keys() { option value=(t) selected[q.device_type.as_deref() == Some(t.as_str())] { (t) } }
            } }
            label { "Status " select name="presence" {
                option value="" { "all" }
                @for p in ["online", "stale", "offline"] { option value=(p) selected[q.presence.as_deref() == Some(p)] { (p) } }
            } }
            label { "Device id contains " input type="text" name="q" value=[q.q.as_deref()]; }
            label { "Order " select name="sort" {
                option value="" { "by id" }
                option value="problems" selected[q.sort.as_deref() == Some("problems")] { "gaps and duplicates first" }
            } }
            button type="submit" { "Show" }
        }
        div #live {
            table.summary {
                thead { tr { th { "Type" } th.num { "Online" } th.num { "Stale" } th.num { "Offline" } } }
                tbody {
                    @for (t, counts) in &v.by_type {
                        tr data-type=(t) { td { a href={ "/fleet?type=" (t) } { (t) } } td.num { (counts.online) } td.num { (counts.stale) } td.num { (counts.offline) } }
                    }
                }
            }
            p.meta { (thousands(v.total as i64)) " devices seen on the sensor topic; " (thousands(v.matching as i64)) " match; page " (v.page) " of " (v.pages) ". Online: a reading within three intervals; stale: within five minutes; offline: longer." }
            table.devices {
                thead { tr { th { "Device" } th { "Type" } th { "Status" } th.num { "Last value" } th { "Last " (RECENT_VALUES) " values (min–max)" } th { "Last reading (UTC)" } th.num { "Last seen" } th.num { "Battery" } th.num { "Signal" } th.num { "Gaps" } th.num { "Duplicates" } th { "Location" } } }
                tbody { @for d in &v.devices { (device_row(d)) } }
            }
            nav.pager {
                @if v.page > 1 { a href=(link(v.page - 1)) { "← previous" } " " }
                @if v.page < v.pages { a href=(link(v.page + 1)) { "next →" } }
            }
        }
    };
    page("Fleet", "/fleet", true, body)
}

/// The alert feed.
pub fn alerts(v: &AlertsView, q: &AlertsQuery) -> Markup {
    let body = html! {
        form.filters method="get" action="/alerts" {
            label { "Kind " select name="kind" {
                option value="" { "all" }
                @for k in &v.kinds { option value=(k) selected[q.kind.as_deref() == Some(k.as_str())] { (k) } }
            } }
            label { "Severity " select name="severity" {
                option value="" { "all" }
                @for s in ["warning", "critical"] { option value=(s) selected[q.severity.as_deref() == Some(s)] { (s) } }
            } }
            label { "Device " input type="text" name="device" value=[q.device.as_deref()]; }
            button type="submit" { "Filter" }
        }
        div #live {
            p { (thousands(v.last_hour as i64)) " alerts in the last hour." }
            @match &v.quality {
                Some(quality) => p.quality { "Against the simulator's ground truth: precision " (format!("{:.3}", quality.precision)) ", recall " (format!("{:.3}", quality.recall)) " (" (quality.true_positives) " true, " (quality.false_positives) " false alarms, " (quality.false_negatives) " missed)." },
                None => p.meta { "Alert quality against the simulator's ground truth shows when the console runs inside " code { "metrocloud run" } "." },
            }
            @if let Some(lines) = &v.faults { (super::fault_table::fault_table(lines)) }
            table {
                thead { tr { th { "Received (UTC)" } th { "Severity" } th { "Kind" } th { "Device" } th.num { "Value" } th.num { "Threshold" } th { "Reading time" } th.num { "Repeats suppressed" } } }
                tbody {
                    @for a in &v.alerts {
                        tr data-kind=(a.alert.kind.as_str()) {
                            td { (time_ms(a.received_ms)) }
                            td { span class=(if a.alert.severity == Severity::Critical { "pill red" } else { "pill amber" }) { (if a.alert.severity == Severity::Critical { "critical" } else { "warning" }) } }
                            td { (a.alert.kind.as_str()) @if let Some(fault) = a.alert.fault { " (" (fault.as_str()) ")" } }
                            td { a href={ "/fleet?q=" (a.alert.device_id) } { code { (a.alert.device_id) } } }
                            td.num { (format!("{:.2}", a.alert.value)) }
                            td.num { (format!("{:.2}", a.alert.threshold)) }
                            td { (a.alert.reading_time) }
                            td.num { (a.alert.repeats_suppressed) }
                        }
                    }
                }
            }
        }
    };
    page("Alerts", "/alerts", true, body)
}

/// Dead letters by reason, and the records.
pub fn dead_letters(v: &DeadLettersView, q: &DeadLettersQuery) -> Markup {
    let body = html! {
        div #live {
            p { (thousands(v.last_hour as i64)) " dead letters in the last hour. Each is a record that failed validation, kept with its original key and bytes and headers saying why." }
            table.summary {
                thead { tr { th { "Reason" } th.num { "Records" } } }
                tbody {
                    @for (reason, count) in &v.reasons {
                        tr data-reason=(reason) class=[(q.reason.as_deref() == Some(reason.as_str())).then_some("current")] { td { a href={ "/dead-letters?reason=" (reason) } { (reason) } } td.num { (count) } }
                    }
                }
            }
            table {
                thead { tr { th { "Received (UTC)" } th { "Reason" } th { "Key" } th { "Value" } th { "Headers" } } }
                tbody {
                    @for d in &v.records {
                        tr {
                            td { (time_ms(d.received_ms)) }
                            td { (d.reason) }
                            td { code { (d.key.as_deref().unwrap_or("—")) } }
                            td { code.wrap { (d.value.as_deref().unwrap_or("—")) } }
                            td { @for (k, val) in &d.headers { div { code { (k) } " " (val) } } }
                        }
                    }
                }
            }
        }
    };
    page("Dead letters", "/dead-letters", true, body)
}

/// A page that does not exist.
pub fn not_found() -> Markup {
    page(
        "Not found",
        "",
        false,
        html! { p { "No such page. " a href="/" { "Overview" } } },
    )
}
