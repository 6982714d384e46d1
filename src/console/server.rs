//! Routes, handlers and the bounds on load.
//!
//! Every page is a GET that reads; there is no route that writes. Each page
//! `/x` has its JSON twin `/api/v1/x`, built from the same value. Requests are
//! bounded ([`MAX_CONCURRENT_REQUESTS`](super::MAX_CONCURRENT_REQUESTS), 503 beyond) and so are live tails
//! ([`MAX_STREAMS`], 429 beyond); pages refresh from the cluster snapshot,
//! which is taken at most every two seconds however many pages are open.

use super::lock;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;

use super::auth::guard;
use super::follow::{self, Start};
use super::messages::{BrowseQuery, MessageView};
use super::views::*;
use super::{ConsoleState, MAX_STREAMS, history, metrics, pages};

type Shared = Arc<ConsoleState>;

/// Records sent at most per fetched batch on a live tail (the newest ones).
const TAIL_PER_BATCH: usize = 20;

/// The console's routes over `state`.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(overview_page))
        .route("/brokers", get(brokers_page))
        .route("/topics", get(topics_page))
        .route("/messages", get(messages_page))
        .route("/groups", get(groups_page))
        .route("/fleet", get(fleet_page))
        .route("/alerts", get(alerts_page))
        .route("/dead-letters", get(dead_letters_page))
        .route("/history", get(history::history_page))
        .route("/assets/console.css", get(css))
        .route("/assets/console.js", get(script))
        .route("/api/v1/overview", get(overview_api))
        .route("/api/v1/brokers", get(brokers_api))
        .route("/api/v1/topics", get(topics_api))
        .route("/api/v1/topics/{topic}", get(topic_api))
        .route("/api/v1/topics/{topic}/messages", get(messages_api))
        .route("/api/v1/topics/{topic}/tail", get(tail_api))
        .route("/api/v1/groups", get(groups_api))
        .route("/api/v1/groups/{group}", get(group_api))
        .route("/api/v1/fleet", get(fleet_api))
        .route("/api/v1/fleet/{device}", get(device_api))
        .route("/api/v1/alerts", get(alerts_api))
        .route("/api/v1/dead-letters", get(dead_letters_api))
        .route("/api/v1/history", get(history::history_api))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&state), guard))
        .with_state(state)
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Html(pages::not_found().into_string()),
    )
}

async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        pages::CSS,
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        pages::SCRIPT,
    )
}

fn html(markup: maud::Markup) -> Html<String> {
    Html(markup.into_string())
}

/// A JSON error body with its status.
fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": message.to_string() })),
    )
        .into_response()
}

// ----- overview -----

async fn overview_page(State(state): State<Shared>) -> Html<String> {
    html(pages::overview(&overview(&state).await))
}

async fn overview_api(State(state): State<Shared>) -> Json<Overview> {
    Json(overview(&state).await)
}

// ----- brokers and topics -----

async fn brokers_page(State(state): State<Shared>) -> Html<String> {
    html(pages::brokers(&*state.cluster.snapshot().await))
}

async fn brokers_api(State(state): State<Shared>) -> Response {
    let cluster = state.cluster.snapshot().await;
    Json(serde_json::json!({
        "reachable": cluster.reachable,
        "active_controller": cluster.active_controller,
        "brokers": cluster.brokers,
        "error": cluster.error,
    }))
    .into_response()
}

async fn topics_page(State(state): State<Shared>) -> Html<String> {
    html(pages::topics(&*state.cluster.snapshot().await))
}

async fn topics_api(State(state): State<Shared>) -> Response {
    let cluster = state.cluster.snapshot().await;
    Json(serde_json::json!({ "topics": cluster.topics, "error": cluster.error })).into_response()
}

async fn topic_api(State(state): State<Shared>, Path(topic): Path<String>) -> Response {
    let cluster = state.cluster.snapshot().await;
    match cluster.topic(&topic) {
        Some(view) => Json(view).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no topic {topic}")),
    }
}

// ----- messages -----

async fn messages_page(
    State(state): State<Shared>,
    Query(query): Query<MessagesQuery>,
) -> Response {
    let topic = query
        .topic
        .clone()
        .unwrap_or_else(|| state.sensor_topic.clone());
    let (view, status) = browse(&state, &topic, &query.browse).await;
    (status, html(pages::messages(&view, &query.browse))).into_response()
}

async fn messages_api(
    State(state): State<Shared>,
    Path(topic): Path<String>,
    Query(query): Query<BrowseQuery>,
) -> Response {
    let (view, status) = browse(&state, &topic, &query).await;
    (status, Json(view)).into_response()
}

async fn tail_api(
    State(state): State<Shared>,
    Path(topic): Path<String>,
    Query(query): Query<TailQuery>,
) -> Response {
    let Ok(permit) = Arc::clone(&state.streams).try_acquire_owned() else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{MAX_STREAMS} live tails are open already; close one"),
        );
    };
    let cluster = state.cluster.snapshot().await;
    let Some(info) = cluster.topic(&topic) else {
        return error(StatusCode::NOT_FOUND, format!("no topic {topic}"));
    };
    let partitions: Vec<i32> = info
        .partitions
        .iter()
        .map(|p| p.partition)
        .filter(|p| query.partition.is_none_or(|q| q == *p))
        .collect();
    let reader = match state.reader().await {
        Ok(reader) => reader,
        Err(e) => return error(StatusCode::BAD_GATEWAY, format!("cannot reach Kafka: {e}")),
    };
    let client = Arc::clone(reader.client());
    let stop = state.shutdown.child_token();
    let (sender, receiver) = tokio::sync::mpsc::channel::<Event>(256);
    tokio::spawn(follow::follow(
        client,
        topic,
        partitions,
        Start::Latest,
        state.request_timeout,
        stop.clone(),
        move |partition, records| {
            let skipped = records.len().saturating_sub(TAIL_PER_BATCH);
            if skipped > 0 {
                let _ =
                    sender.try_send(Event::default().event("skipped").data(skipped.to_string()));
            }
            for record in &records[skipped..] {
                let view = MessageView::of(partition, record);
                if let Ok(event) = Event::default().event("record").json_data(&view) {
                    let _ = sender.try_send(event);
                }
            }
        },
    ));
    // The stream owns the stream permit and stops the readers when the browser goes.
    let guard = (permit, stop.drop_guard());
    let stream =
        futures_util::stream::unfold((receiver, guard), |(mut receiver, guard)| async move {
            let event = receiver.recv().await?;
            Some((Ok::<_, Infallible>(event), (receiver, guard)))
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

// ----- groups -----

async fn groups_page(State(state): State<Shared>) -> Html<String> {
    let (groups, error) = groups(&state).await;
    html(pages::groups(&groups, error.as_deref()))
}

async fn groups_api(State(state): State<Shared>) -> Response {
    let (groups, error) = groups(&state).await;
    Json(serde_json::json!({ "groups": groups, "error": error })).into_response()
}

async fn group_api(State(state): State<Shared>, Path(group): Path<String>) -> Response {
    let cluster = state.cluster.snapshot().await;
    let Some(view) = cluster.group(&group) else {
        return error(StatusCode::NOT_FOUND, format!("no group {group}"));
    };
    let mut view = [view.clone()];
    with_time_behind(&state, &mut view).await;
    let [view] = view;
    Json(view).into_response()
}

// ----- fleet -----

async fn fleet_page(State(state): State<Shared>, Query(query): Query<FleetQuery>) -> Html<String> {
    html(pages::fleet(&fleet(&state, &query), &query))
}

async fn fleet_api(
    State(state): State<Shared>,
    Query(query): Query<FleetQuery>,
) -> Json<FleetView> {
    Json(fleet(&state, &query))
}

async fn device_api(State(state): State<Shared>, Path(device): Path<String>) -> Response {
    let view = lock(&state.fleet).device(&device, now_ms(), state.data_interval);
    match view {
        Some(view) => Json(view).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no device {device} seen")),
    }
}

// ----- alerts and dead letters -----

async fn alerts_page(
    State(state): State<Shared>,
    Query(query): Query<AlertsQuery>,
) -> Html<String> {
    html(pages::alerts(&alerts(&state, &query), &query))
}

async fn alerts_api(
    State(state): State<Shared>,
    Query(query): Query<AlertsQuery>,
) -> Json<AlertsView> {
    Json(alerts(&state, &query))
}

async fn dead_letters_page(
    State(state): State<Shared>,
    Query(query): Query<DeadLettersQuery>,
) -> Html<String> {
    html(pages::dead_letters(&dead_letters(&state, &query), &query))
}

async fn dead_letters_api(
    State(state): State<Shared>,
    Query(query): Query<DeadLettersQuery>,
) -> Json<DeadLettersView> {
    Json(dead_letters(&state, &query))
}

// ----- metrics and health -----

async fn metrics_text(State(state): State<Shared>) -> impl IntoResponse {
    let cluster = state.cluster.snapshot().await;
    let text = {
        let fleet = lock(&state.fleet);
        metrics::render(&state.pipeline, &fleet, Some(&cluster), now_ms())
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// Ready when a broker answered the last look at the cluster.
async fn ready(State(state): State<Shared>) -> Response {
    let cluster = state.cluster.snapshot().await;
    if cluster.reachable {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: {}\n",
                cluster.error.as_deref().unwrap_or("Kafka unreachable")
            ),
        )
            .into_response()
    }
}
