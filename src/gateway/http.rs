//! The HTTP listener: `POST /api/v1/readings` with one reading (JSON) or
//! many (`Content-Type: application/x-ndjson`, one per line).
//!
//! The answer comes once every reading taken is durable in the buffer:
//! - 202 with `accepted` and, for NDJSON, one result per non-empty line;
//! - 400 when nothing was taken because nothing was a valid reading (the
//!   reason, the field at fault and the detail; per line for NDJSON);
//! - 401 without a valid bearer token (when devices need credentials), 403
//!   for a reading of a device the token does not cover;
//! - 503 with `Retry-After` when the buffer is full: the lines before the
//!   one that found it full are taken (listed as accepted), the rest are not;
//! - 500 when the disk failed: nothing is acknowledged.
//!
//! `GET /metrics` gives the gateway's counters and buffer to Prometheus.

use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::{Value, json};

use super::credentials::Identity;
use super::intake::{Intake, Message, Refusal};
use super::view::GatewayView;
use crate::exposition::Exposition;
use crate::idle::Peer;

/// The largest request body taken: about 40,000 readings of NDJSON.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Seconds a client told the buffer is full should wait.
const RETRY_AFTER_SECS: &str = "1";

/// The gateway's HTTP routes.
pub fn router(intake: Arc<Intake>) -> Router {
    Router::new()
        .route("/api/v1/readings", post(post_readings))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(intake)
}

/// What happened to one reading of a request.
enum Outcome {
    Accepted(u64),
    Refused(Refusal),
    /// Not looked at: the buffer was full before its turn.
    NotTaken,
}

/// The identity of the request's bearer token.
fn authenticate(intake: &Intake, headers: &HeaderMap) -> Option<Identity> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    intake.token(token)
}

/// The 401 a request without a valid token gets.
fn unauthorized() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": "not_authorized", "detail": "a device's bearer token is required (Authorization: Bearer <token>)"})),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// `GET /metrics`: the gateway's counters and buffer, for Prometheus (with
/// the same bearer token as readings when devices need credentials).
async fn metrics(State(intake): State<Arc<Intake>>, headers: HeaderMap) -> Response {
    if authenticate(&intake, &headers).is_none() {
        return unauthorized();
    }
    let mut out = Exposition::new();
    GatewayView::new(Arc::clone(intake.stats()), Arc::clone(intake.buffer())).metrics(&mut out);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out.into_text(),
    )
        .into_response()
}

async fn post_readings(
    State(intake): State<Arc<Intake>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(identity) = authenticate(&intake, &headers) else {
        return unauthorized();
    };
    let batch = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("ndjson"));
    // Each reading with its line number (1 for a single reading).
    let readings: Vec<(usize, Bytes)> = if batch {
        let mut lines = Vec::new();
        let mut start = 0;
        for (index, piece) in body.split(|b| *b == b'\n').enumerate() {
            let line = body.slice(start..start + piece.len());
            start += piece.len() + 1;
            if !line.trim_ascii().is_empty() {
                lines.push((index + 1, line));
            }
        }
        lines
    } else {
        vec![(1, body)]
    };

    let mut outcomes = Vec::with_capacity(readings.len());
    let mut full = false;
    for (line, payload) in readings {
        if full {
            outcomes.push((line, Outcome::NotTaken));
            continue;
        }
        let origin = || format!("http line {line} from {peer} ({})", identity.describe());
        let message = Message {
            identity: &identity,
            topic: None,
            payload,
            origin: &origin,
        };
        match intake.offer(&message) {
            Ok(number) => outcomes.push((line, Outcome::Accepted(number))),
            Err(Refusal::Failed(detail)) => return failed(&detail),
            Err(refusal @ Refusal::Full(_)) => {
                full = true;
                outcomes.push((line, Outcome::Refused(refusal)));
            }
            Err(refusal) => outcomes.push((line, Outcome::Refused(refusal))),
        }
    }
    let last = outcomes.iter().rev().find_map(|(_, o)| match o {
        Outcome::Accepted(number) => Some(*number),
        _ => None,
    });
    if let Some(number) = last
        && let Err(refusal) = intake.durable(number).await
    {
        return failed(refusal.detail());
    }
    respond(batch, &outcomes, full)
}

fn failed(detail: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(json!({"error": "buffer_failed", "detail": detail})),
    )
        .into_response()
}

fn respond(batch: bool, outcomes: &[(usize, Outcome)], full: bool) -> Response {
    let accepted = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Accepted(_)))
        .count();
    let refused = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Refused(r) if !matches!(r, Refusal::Full(_))))
        .count();
    let status = if full {
        StatusCode::SERVICE_UNAVAILABLE
    } else if accepted == 0 && refused > 0 {
        match outcomes.first() {
            Some((_, Outcome::Refused(Refusal::NotAuthorized(_)))) if !batch => {
                StatusCode::FORBIDDEN
            }
            _ => StatusCode::BAD_REQUEST,
        }
    } else {
        StatusCode::ACCEPTED
    };
    let body = if batch {
        let results: Vec<Value> = outcomes.iter().map(|(line, o)| result(*line, o)).collect();
        json!({"accepted": accepted, "refused": refused, "results": results})
    } else {
        match outcomes.first() {
            Some((_, Outcome::Refused(refusal))) => refusal_json(refusal),
            _ => json!({"accepted": accepted}),
        }
    };
    let mut response = (status, axum::Json(body)).into_response();
    if full {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
    }
    response
}

fn result(line: usize, outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Accepted(_) => json!({"line": line, "status": "accepted"}),
        Outcome::Refused(refusal) => {
            let mut value = refusal_json(refusal);
            value["line"] = json!(line);
            value["status"] = json!(if matches!(refusal, Refusal::Full(_)) {
                "not_taken"
            } else {
                "refused"
            });
            value
        }
        Outcome::NotTaken => json!({"line": line, "status": "not_taken", "error": "buffer_full"}),
    }
}

fn refusal_json(refusal: &Refusal) -> Value {
    let mut value = json!({"error": refusal.code(), "detail": refusal.detail()});
    if let Refusal::Invalid {
        field: Some(field), ..
    } = refusal
    {
        value["field"] = json!(field);
    }
    value
}
