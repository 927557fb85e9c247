//! The HTTP surface: invoke, webhooks, health, readiness and metrics; and the accept loop that
//! bounds how long a client may take to send a request.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http_body_util::BodyExt;
use serde_json::json;

use crate::auth::Authenticator;
use crate::errors::CallError;
use crate::runtime::Runtime;

/// Shared server state.
pub struct App {
    /// The runtime.
    pub runtime: Arc<Runtime>,
    /// Token verification.
    pub auth: Authenticator,
}

/// The header a caller might use to claim a tenant; it must agree with the token.
pub const TENANT_HEADER: &str = "x-greentic-tenant";

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
    pub fn from_host(host: &crate::bundle::HostSection) -> RequestLimits {
        RequestLimits {
            header_timeout: Duration::from_millis(host.header_timeout_ms),
            body_timeout: Duration::from_millis(host.body_timeout_ms),
            max_body_bytes: host.max_body_bytes,
        }
    }
}

/// Builds the router. Every request body is read in full, within the limits, before any handler
/// (and so before any guest) sees the request.
pub fn router(app: Arc<App>, limits: RequestLimits) -> Router {
    Router::new()
        .route("/v1/invoke/{capability}", post(invoke))
        .route("/webhooks/{tenant}/{provider}", any(webhook_root))
        .route("/webhooks/{tenant}/{provider}/", any(webhook_root))
        .route("/webhooks/{tenant}/{provider}/{*path}", any(webhook))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(limits, buffer_body))
        .layer(DefaultBodyLimit::disable())
        .with_state(app)
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

/// Serves `router` on `listener` until `shutdown` completes, then waits for open connections'
/// in-flight requests to finish. A client that does not send its headers within
/// `limits.header_timeout` is disconnected.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: RequestLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let service = hyper_util::service::TowerToHyperService::new(router.clone());
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

fn error(status: u16, code: &str, message: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        axum::Json(json!({"code": code, "message": message, "retryable": false})),
    )
        .into_response()
}

fn call_error(e: &CallError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(e.to_json())).into_response();
    if let Some(ms) = e.retry_after_ms()
        && let Ok(v) = header::HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

async fn invoke(
    State(app): State<Arc<App>>,
    Path(capability): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = match app.auth.verify_header(auth) {
        Ok(caller) => caller,
        Err(e) => return error(401, "unauthenticated", e.to_string()),
    };
    if let Some(claimed) = headers.get(TENANT_HEADER)
        && claimed.as_bytes() != caller.tenant.as_bytes()
    {
        return error(
            403,
            "tenant-mismatch",
            format!(
                "the {TENANT_HEADER} header does not match the token's tenant; the tenant comes from the token only"
            ),
        );
    }
    let input: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(400, "bad-request", format!("the body is not JSON: {e}")),
    };
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match app.runtime.invoke(&caller, &capability, input, key).await {
        Ok(result) => (StatusCode::OK, axum::Json(result)).into_response(),
        Err(e) => call_error(&e),
    }
}

async fn webhook_root(
    state: State<Arc<App>>,
    Path((tenant, provider)): Path<(String, String)>,
    method: Method,
    query: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    deliver(
        state,
        tenant,
        provider,
        String::new(),
        method,
        query,
        headers,
        body,
    )
    .await
}

async fn webhook(
    state: State<Arc<App>>,
    Path((tenant, provider, path)): Path<(String, String, String)>,
    method: Method,
    query: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    deliver(state, tenant, provider, path, method, query, headers, body).await
}

#[allow(clippy::too_many_arguments)]
async fn deliver(
    State(app): State<Arc<App>>,
    tenant: String,
    provider: String,
    path: String,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = match query {
        Some(q) => format!("/{path}?{q}"),
        None => format!("/{path}"),
    };
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(format!("http://greentic.local{path_and_query}"));
    for (name, value) in headers.iter() {
        // The provider sees the delivery's headers, but never the caller's credentials for us.
        if name != header::AUTHORIZATION && name != header::HOST {
            builder = builder.header(name, value);
        }
    }
    let request = match builder.header(header::HOST, "greentic.local").body(body) {
        Ok(r) => r,
        Err(e) => return error(400, "bad-request", e.to_string()),
    };
    match app.runtime.webhook(&tenant, &provider, request).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, axum::body::Body::from(body))
        }
        Err(e) => call_error(&e),
    }
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let ready = app.runtime.ready.load(Ordering::SeqCst);
    let providers: Vec<_> = app
        .runtime
        .providers
        .values()
        .map(|p| json!({"name": p.name, "digest": p.digest, "world": p.world}))
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({"ready": ready, "providers": providers})),
    )
        .into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.runtime.metrics.render(),
    )
        .into_response()
}
