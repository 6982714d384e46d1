//! The console's History page and its JSON chart what the store holds: a
//! device's stored minutes and the fleet's totals, as SVG drawn by the server.
//! Called by the aggregation test once its store is filled.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use tokio_util::sync::CancellationToken;

use metrocloud::config::Config;
use metrocloud::console::{ConsoleState, PipelineHandles};

use crate::aggregate::Summary;
use crate::console::get;

/// The console's history pages chart what is stored: a device's minutes and the fleet's totals.
pub(crate) async fn charts_the_stored_minutes(
    config: &Config,
    expected: &BTreeMap<(String, i64), Summary>,
) {
    let state = ConsoleState::new(
        config,
        None,
        PipelineHandles::default(),
        CancellationToken::new(),
    );
    let device = &expected.keys().next().unwrap().0;
    let theirs: Vec<&Summary> = expected
        .iter()
        .filter(|((d, _), _)| d == device)
        .map(|(_, s)| s)
        .collect();

    let (status, history) = get(&state, &format!("/api/v1/history?device={device}")).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let minutes = history["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), theirs.len(), "{history}");
    let counts: Vec<u64> = minutes
        .iter()
        .map(|m| m["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, theirs.iter().map(|s| s.0).collect::<Vec<_>>());

    let (status, page) = get(&state, &format!("/history?device={device}")).await;
    assert_eq!(status, StatusCode::OK);
    let page = page.as_str().expect("an HTML page");
    assert!(page.contains(&format!("<h2>{device}</h2>")), "{page}");
    for title in [
        "Last hour: min, mean and max per minute",
        "Last day: mean per minute",
    ] {
        assert!(
            page.contains(&format!("aria-label=\"{title}\"")),
            "{title} missing"
        );
    }
    assert!(
        !page.contains("<script>"),
        "the charts need no script of their own"
    );

    let (status, fleet) = get(&state, "/api/v1/history").await;
    assert_eq!(status, StatusCode::OK, "{fleet}");
    let charted: f64 = fleet["minutes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["readings_per_second"].as_f64().unwrap() * 60.0)
        .sum();
    let stored: u64 = expected.values().map(|s| s.0).sum();
    assert_eq!(charted.round() as u64, stored);
    let (_, page) = get(&state, "/history").await;
    let page = page.as_str().expect("an HTML page");
    assert!(
        page.contains("aria-label=\"Readings per second, per minute\""),
        "{page}"
    );
    assert!(
        page.contains("aria-label=\"Anomalies per minute\""),
        "{page}"
    );
}
