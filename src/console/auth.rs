//! The token check: with `METROCLOUD_CONSOLE_TOKEN` set, every request must
//! carry it, as a bearer token, a `?token=` (which sets an HttpOnly cookie),
//! or that cookie.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ConsoleState, MAX_CONCURRENT_REQUESTS};

/// Name of the cookie that carries the token after a `?token=` visit.
const TOKEN_COOKIE: &str = "metrocloud_console_token";

/// The token check and the request bound, before any route.
pub(super) async fn guard(
    State(state): State<Arc<ConsoleState>>,
    request: Request,
    next: Next,
) -> Response {
    let mut set_cookie = None;
    if let Some(token) = &state.token {
        match presented_token(request.headers(), request.uri().query()) {
            Some((given, from_query)) if same(given.as_bytes(), token.as_bytes()) => {
                if from_query {
                    set_cookie = Some(format!(
                        "{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
                    ));
                }
            }
            _ => {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "401 Unauthorized: this console needs its token (Authorization: Bearer <token>, or ?token=<token> once in a browser)\n",
                )
                    .into_response();
            }
        }
    }
    let Ok(_permit) = Arc::clone(&state.requests).try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!("503: more than {MAX_CONCURRENT_REQUESTS} requests at once\n"),
        )
            .into_response();
    };
    let mut response = next.run(request).await;
    if let Some(cookie) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// The token from the Authorization header, the cookie, or `?token=` (true).
fn presented_token(headers: &HeaderMap, query: Option<&str>) -> Option<(String, bool)> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some((bearer.trim().to_string(), false));
    }
    for cookies in headers.get_all(header::COOKIE) {
        for pair in cookies.to_str().unwrap_or_default().split(';') {
            if let Some(value) = pair.trim().strip_prefix(&format!("{TOKEN_COOKIE}=")) {
                return Some((value.to_string(), false));
            }
        }
    }
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(|value| (value.to_string(), true))
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
