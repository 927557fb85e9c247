//! What a request may be: how long its client may take to send it, and how large its body may
//! be; a body is read in full within those bounds before any handler sees it.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::json;

/// How long a client may take to send a request, and how large its body may be.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Time to send the headers (the connection is closed after it).
    pub header_timeout: Duration,
    /// Time to send the body once the headers are in (408 after it).
    pub body_timeout: Duration,
    /// Largest body (413 above it).
    pub max_body_bytes: usize,
}

impl RequestLimits {
    /// The limits a bundle's `[host]` section sets.
    pub fn from_host(host: &greentic_bundle::HostSection) -> RequestLimits {
        RequestLimits {
            header_timeout: Duration::from_millis(host.header_timeout_ms),
            body_timeout: Duration::from_millis(host.body_timeout_ms),
            max_body_bytes: host.max_body_bytes,
        }
    }
}

/// `router` with every request body read in full, within `limits` (408 / 413 otherwise),
/// before any handler sees the request.
pub fn bounded(router: Router, limits: RequestLimits) -> Router {
    router
        .layer(axum::middleware::from_fn_with_state(limits, buffer_body))
        .layer(DefaultBodyLimit::disable())
}

/// Reads the whole body within `body_timeout` and `max_body_bytes` (408 / 413 otherwise).
async fn buffer_body(
    State(limits): State<RequestLimits>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let limited = http_body_util::Limited::new(body, limits.max_body_bytes);
    match tokio::time::timeout(limits.body_timeout, limited.collect()).await {
        Err(_) => error(
            408,
            "request-timeout",
            format!(
                "the request body did not arrive within {} ms",
                limits.body_timeout.as_millis()
            ),
        ),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => error(
            413,
            "too-large",
            format!(
                "the request body is larger than {} bytes ([host].max_body_bytes)",
                limits.max_body_bytes
            ),
        ),
        Ok(Err(e)) => error(400, "bad-request", format!("reading the request body: {e}")),
        Ok(Ok(collected)) => {
            let request = Request::from_parts(parts, Body::from(collected.to_bytes()));
            next.run(request).await
        }
    }
}

/// Whether an answer the HTTP layer gives with `status` is worth retrying: the host could not
/// serve it now (503) or asked the caller to slow down (429).
pub fn retryable(status: u16) -> bool {
    matches!(status, 429 | 503)
}

pub(crate) fn error(status: u16, code: &str, message: String) -> Response {
    let retryable = retryable(status);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        axum::Json(json!({"code": code, "message": message, "retryable": retryable})),
    )
        .into_response()
}

/// A request path as an answer quotes it: at most 256 bytes (cut on a character boundary).
pub(crate) fn clip_path(path: &str) -> String {
    if path.len() <= 256 {
        return path.to_string();
    }
    let mut end = 256;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
}
