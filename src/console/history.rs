//! History from the store on the console: the fleet's readings per second and
//! anomalies per minute over the last 24 hours, and one device's last hour and
//! day, all from the minute aggregates in the Parquet store
//! (`METROCLOUD_DATA_DIR/aggregates`).
//!
//! The Kafka topics keep a week and the console's own view of the fleet only
//! what it saw since it started; the store keeps everything, already summed up
//! per minute, so a day of a device is 1,440 rows, not 17,280 readings. Files
//! are read on a blocking thread, a request at a time per page, and the
//! charts are drawn on the server as SVG ([`super::svg`]).

use std::path::PathBuf;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::ConsoleState;
use super::pages::page;
use super::svg::{Chart, Series, Style, chart};
use crate::store::minutes::{StoredMinute, device_minutes, fleet_minutes};

/// `?device=…`: a device's page instead of the fleet's.
#[derive(Debug, Default, Deserialize)]
pub struct HistoryQuery {
    /// The device.
    pub device: Option<String>,
}

/// The fleet per minute over 24 hours.
#[derive(Debug, Serialize)]
pub struct FleetHistory {
    /// Start of the window (RFC 3339).
    pub from: String,
    /// End of the window.
    pub to: String,
    /// Minutes with readings, oldest first.
    pub minutes: Vec<FleetPoint>,
}

/// The fleet in one minute.
#[derive(Debug, Serialize)]
pub struct FleetPoint {
    /// The minute's start.
    pub minute: String,
    /// Readings per second over the minute.
    pub readings_per_second: f64,
    /// Readings flagged anomalous in the minute.
    pub anomalies: u64,
}

/// A device's minutes over 24 hours.
#[derive(Debug, Serialize)]
pub struct DeviceHistory {
    /// The device.
    pub device: String,
    /// Start of the window.
    pub from: String,
    /// End of the window.
    pub to: String,
    /// The unit of its values.
    pub unit: String,
    /// Its stored minutes, oldest first.
    pub minutes: Vec<StoredMinute>,
}

fn text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The last 24 hours, to the next minute.
fn day_window() -> (DateTime<Utc>, DateTime<Utc>) {
    let to = Utc::now() + TimeDelta::minutes(1);
    (to - TimeDelta::hours(24), to)
}

async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(read).await {
        Ok(read) => read.map_err(|e| e.to_string()),
        Err(e) => Err(format!("reading the store stopped: {e}")),
    }
}

async fn fleet_history(data_dir: PathBuf) -> Result<FleetHistory, String> {
    let (from, to) = day_window();
    let totals = blocking(move || fleet_minutes(&data_dir, from, to)).await?;
    let minutes = totals
        .into_iter()
        .map(|(minute, total)| FleetPoint {
            minute: text(minute),
            readings_per_second: total.readings as f64 / 60.0,
            anomalies: total.anomalies,
        })
        .collect();
    Ok(FleetHistory {
        from: text(from),
        to: text(to),
        minutes,
    })
}

async fn device_history(data_dir: PathBuf, device: String) -> Result<DeviceHistory, String> {
    let (from, to) = day_window();
    let wanted = device.clone();
    let stored = blocking(move || device_minutes(&data_dir, &wanted, from, to)).await?;
    let unit = stored.first().map(|m| m.unit.clone()).unwrap_or_default();
    Ok(DeviceHistory {
        device,
        from: text(from),
        to: text(to),
        unit,
        minutes: stored,
    })
}

/// The history page: the fleet's, or a device's with `?device=`.
pub async fn history_page(
    State(state): State<std::sync::Arc<ConsoleState>>,
    Query(query): Query<HistoryQuery>,
) -> Html<String> {
    let data_dir = state.data_dir.clone();
    let body = match query.device.filter(|d| !d.is_empty()) {
        Some(device) => match device_history(data_dir, device.clone()).await {
            Ok(history) => device_body(&history),
            Err(reason) => unreadable(&reason),
        },
        None => match fleet_history(data_dir).await {
            Ok(history) => fleet_body(&history),
            Err(reason) => unreadable(&reason),
        },
    };
    Html(page("History", "/history", false, body).into_string())
}

/// The same as JSON.
pub async fn history_api(
    State(state): State<std::sync::Arc<ConsoleState>>,
    Query(query): Query<HistoryQuery>,
) -> Response {
    let data_dir = state.data_dir.clone();
    let answer = match query.device.filter(|d| !d.is_empty()) {
        Some(device) => device_history(data_dir, device)
            .await
            .map(|history| Json(history).into_response()),
        None => fleet_history(data_dir)
            .await
            .map(|history| Json(history).into_response()),
    };
    answer.unwrap_or_else(|reason| {
        let body = Json(serde_json::json!({ "error": reason }));
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    })
}

fn unreadable(reason: &str) -> Markup {
    html! { p.error { "The store cannot be read: " (reason) } }
}

fn millis(minute: &str) -> i64 {
    DateTime::parse_from_rfc3339(minute).map_or(0, |t| t.timestamp_millis())
}

fn device_form(device: Option<&str>) -> Markup {
    html! {
        form.filters method="get" action="/history" {
            label { "Device " input type="text" name="device" value=[device] placeholder="temperature-000042"; }
            button type="submit" { "Show its history" }
        }
    }
}

fn fleet_body(history: &FleetHistory) -> Markup {
    let (from_ms, to_ms) = (millis(&history.from), millis(&history.to));
    let points = |value: fn(&FleetPoint) -> f64| -> Vec<(i64, f64)> {
        history
            .minutes
            .iter()
            .map(|p| (millis(&p.minute), value(p)))
            .collect()
    };
    html! {
        (device_form(None))
        p.meta { "The last 24 hours, from the minute aggregates in the store (" (history.minutes.len()) " minutes with readings). A minute appears once its aggregate is written and its file rolled." }
        (chart(&Chart {
            title: "Readings per second, per minute",
            unit: "/s",
            from_ms,
            to_ms,
            series: vec![Series { label: "readings/s", class: "rate", style: Style::Line, points: points(|p| p.readings_per_second) }],
        }))
        (chart(&Chart {
            title: "Anomalies per minute",
            unit: "/min",
            from_ms,
            to_ms,
            series: vec![Series { label: "anomalous readings", class: "anomalies", style: Style::Bars, points: points(|p| p.anomalies as f64) }],
        }))
    }
}

fn device_body(history: &DeviceHistory) -> Markup {
    let (from_ms, to_ms) = (millis(&history.from), millis(&history.to));
    let hour_from = to_ms - 61 * 60_000;
    let points = |since: i64, value: fn(&StoredMinute) -> f64| -> Vec<(i64, f64)> {
        history
            .minutes
            .iter()
            .map(|m| (m.minute.timestamp_millis(), value(m)))
            .filter(|(ms, _)| *ms >= since)
            .collect()
    };
    let unit = history.unit.as_str();
    let last_hour: Vec<&StoredMinute> = history
        .minutes
        .iter()
        .rev()
        .take_while(|m| m.minute.timestamp_millis() >= hour_from)
        .collect();
    html! {
        (device_form(Some(&history.device)))
        h2 { (history.device) }
        @if history.minutes.is_empty() {
            p.meta { "No stored minutes of " (history.device) " in the last 24 hours." }
        } @else {
            p.meta { (history.minutes.len()) " stored minutes in the last 24 hours, " (history.minutes.iter().map(|m| m.count).sum::<u64>()) " readings, " (history.minutes.iter().map(|m| m.anomalies).sum::<u64>()) " anomalous." }
            (chart(&Chart {
                title: "Last hour: min, mean and max per minute",
                unit,
                from_ms: hour_from,
                to_ms,
                series: vec![
                    Series { label: "max", class: "max", style: Style::Line, points: points(hour_from, |m| m.max) },
                    Series { label: "mean", class: "mean", style: Style::Line, points: points(hour_from, |m| m.mean) },
                    Series { label: "min", class: "min", style: Style::Line, points: points(hour_from, |m| m.min) },
                ],
            }))
            (chart(&Chart {
                title: "Last day: mean per minute",
                unit,
                from_ms,
                to_ms,
                series: vec![Series { label: "mean", class: "mean", style: Style::Line, points: points(from_ms, |m| m.mean) }],
            }))
            (chart(&Chart {
                title: "Last day: anomalous readings per minute",
                unit: "/min",
                from_ms,
                to_ms,
                series: vec![Series { label: "anomalous readings", class: "anomalies", style: Style::Bars, points: points(from_ms, |m| m.anomalies as f64) }],
            }))
            table.minutes {
                thead { tr { th { "Minute (UTC)" } th.num { "Readings" } th.num { "Min" } th.num { "Mean" } th.num { "Max" } th.num { "Last" } th.num { "Anomalies" } } }
                tbody {
                    @for m in last_hour {
                        tr { td { (text(m.minute)) } td.num { (m.count) } td.num { (format!("{:.2}", m.min)) } td.num { (format!("{:.2}", m.mean)) } td.num { (format!("{:.2}", m.max)) } td.num { (format!("{:.2} {unit}", m.last)) } td.num { (m.anomalies) } }
                    }
                }
            }
        }
    }
}
