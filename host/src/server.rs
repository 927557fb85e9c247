//! The HTTP surface: invoke, webhooks and liveness on the public listener; readiness and
//! metrics on the admin listener; and the accept loop that bounds how long a connection may
//! stay without a request and how many may be open.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
use tokio::sync::Notify;
use tokio::time::Instant;

use arc_swap::ArcSwap;

use crate::auth::Authenticator;
use crate::errors::CallError;
use crate::fleet::member::Member;
use crate::reload::{Outcome, Reloader};
use crate::runtime::Runtime;

/// Shared server state.
pub struct App {
    /// The runtime.
    pub runtime: Arc<Runtime>,
    /// Token verification (swapped with each new revision).
    pub auth: Arc<ArcSwap<Authenticator>>,
    /// Live reload (`POST /reload` on the admin listener), when the host serves a bundle file.
    pub reloader: Option<Arc<Reloader>>,
    /// The fleet this host follows, if it is a member of one (`POST /reload` then reads the
    /// fleet's published revision).
    pub member: Option<Arc<Member>>,
}

impl App {
    /// The server state of `runtime` with callers verified by `auth`, without live reload.
    pub fn new(runtime: Arc<Runtime>, auth: Authenticator) -> App {
        App {
            runtime,
            auth: Arc::new(ArcSwap::from_pointee(auth)),
            reloader: None,
            member: None,
        }
    }
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

/// Builds the public router: invoke, webhooks and liveness. Every request body is read in
/// full, within the limits, before any handler (and so before any guest) sees the request.
pub fn router(app: Arc<App>, limits: RequestLimits) -> Router {
    finish(public_routes(), app, limits)
}

/// Builds the admin router: liveness, readiness and metrics, for the admin listener only
/// (what providers, digests and tenants a host serves is not for the public side).
pub fn admin_router(app: Arc<App>, limits: RequestLimits) -> Router {
    finish(
        admin_routes().route("/healthz", get(|| async { "ok\n" })),
        app,
        limits,
    )
}

/// Both sets of routes on one router: for a host serving one loopback listener to a test
/// harness (the conformance suite), never for `run`.
pub fn combined_router(app: Arc<App>, limits: RequestLimits) -> Router {
    finish(public_routes().merge(admin_routes()), app, limits)
}

fn public_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/invoke/{capability}", post(invoke))
        .route("/webhooks/{tenant}/{provider}", any(webhook_root))
        .route("/webhooks/{tenant}/{provider}/", any(webhook_root))
        .route("/webhooks/{tenant}/{provider}/{*path}", any(webhook))
        .route("/healthz", get(|| async { "ok\n" }))
}

fn admin_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/reload", post(reload))
}

fn finish(routes: Router<Arc<App>>, app: Arc<App>, limits: RequestLimits) -> Router {
    bounded(routes.with_state(app), limits)
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

/// How long connections may stay open without a request, and how many may be open at once.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A new connection must deliver a request's headers within this, whatever the protocol
    /// (HTTP/1, HTTP/2, or bytes that are neither), or it is closed.
    pub header_timeout: Duration,
    /// A connection that has served requests is closed after this long without one.
    pub idle_timeout: Duration,
    /// Connections open at once. At the cap the connection idle longest is closed to make
    /// room; when every connection has a request in flight, new ones wait in the backlog.
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// The limits a bundle's `[host]` section sets.
    pub fn from_host(host: &crate::bundle::HostSection) -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_millis(host.header_timeout_ms),
            idle_timeout: Duration::from_millis(host.idle_timeout_ms),
            max_connections: host.max_connections,
        }
    }
}

/// When a connection last had something to do, and how much it is doing now.
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
    served: AtomicBool,
}

impl Activity {
    /// A connection accepted now.
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            served: AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long the connection has been without a request in flight (`None`: one is).
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.epoch.elapsed().saturating_sub(last))
    }

    /// How long the connection may stay without a request.
    fn allowance(&self, limits: &ConnectionLimits) -> Duration {
        if self.served.load(Ordering::Relaxed) {
            limits.idle_timeout
        } else {
            limits.header_timeout
        }
    }
}

/// A request in flight on a connection.
struct Active(Arc<Activity>);

impl Active {
    fn enter(activity: &Arc<Activity>) -> Active {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.served.store(true, Ordering::Relaxed);
        activity.touch();
        Active(activity.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router as a connection's service, counting the requests in flight on it.
#[derive(Clone)]
struct Tracked {
    inner: hyper_util::service::TowerToHyperService<Router>,
    activity: Arc<Activity>,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Tracked {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send>,
    >;

    fn call(&self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let active = Active::enter(&self.activity);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(active);
            response
        })
    }
}

/// Each open connection's activity, and how to ask it to close.
type Open = HashMap<u64, (Arc<Activity>, Arc<Notify>)>;

/// The open connections.
#[derive(Default)]
struct Connections {
    open: std::sync::Mutex<Open>,
    closed: Notify,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the connection idle longest to close; false when every one is busy.
    fn evict_idlest(&self) -> bool {
        let open = self.lock();
        let idlest = open
            .values()
            .filter_map(|(a, close)| a.idle_for().map(|idle| (idle, close)))
            .max_by_key(|(idle, _)| *idle);
        match idlest {
            Some((_, close)) => {
                close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// How long a closing connection may take to finish writing before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_millis(200);

/// Serves `router` on `listener` until `shutdown` completes, then lets open connections finish
/// their requests in flight. Every phase of a connection has a deadline: protocol detection
/// and the first request's headers (`header_timeout`, for HTTP/1, HTTP/2 and bytes that are
/// neither), later requests (`idle_timeout`), bodies (`body_timeout`, in the router); and at
/// most `max_connections` are open at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: RequestLimits,
    connections: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::TokioIo;
    let builder = http_builder(&limits);
    let registry = Arc::new(Connections::default());
    let stopping = Arc::new(Notify::new());
    let mut next_id = 0u64;
    tokio::pin!(shutdown);
    loop {
        // At the cap, make room (or wait for it) before accepting: the connection idle
        // longest is closed, so silent or half-sent connections cannot lock others out.
        if registry.lock().len() >= connections.max_connections.max(1) {
            registry.evict_idlest();
            tokio::select! {
                _ = registry.closed.notified() => {}
                _ = tokio::time::sleep(CLOSE_GRACE) => {}
                _ = &mut shutdown => break,
            }
            continue;
        }
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
                let activity = Activity::new();
                let close = Arc::new(Notify::new());
                next_id += 1;
                let id = next_id;
                registry.lock().insert(id, (activity.clone(), close.clone()));
                let (builder, router, registry, stopping) =
                    (builder.clone(), router.clone(), registry.clone(), stopping.clone());
                tokio::spawn(async move {
                    let io = TokioIo::new(stream);
                    run_connection(&builder, io, router, &activity, &close, &stopping, &connections)
                        .await;
                    registry.lock().remove(&id);
                    registry.closed.notify_waiters();
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    // Every connection finishes its requests in flight and closes.
    stopping.notify_waiters();
    loop {
        if registry.lock().is_empty() {
            break;
        }
        let closed = registry.closed.notified();
        tokio::select! {
            _ = closed => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// The HTTP/1 and HTTP/2 settings every connection is served with.
fn http_builder(limits: &RequestLimits) -> HttpBuilder {
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .max_header_list_size(64 << 10)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Serves `router` on one connection (`io`) with every deadline [`serve`] gives its
/// connections, until the connection ends or is closed for idling. What [`serve`] runs for each
/// accepted socket, without the connection cap; tests and fuzzing drive it over in-memory pipes.
pub async fn serve_connection<I>(
    io: I,
    router: Router,
    limits: RequestLimits,
    connections: ConnectionLimits,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let builder = http_builder(&limits);
    let io = hyper_util::rt::TokioIo::new(io);
    let (close, stopping) = (Notify::new(), Notify::new());
    run_connection(
        &builder,
        io,
        router,
        &Activity::new(),
        &close,
        &stopping,
        &connections,
    )
    .await;
}

type HttpBuilder = hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>;

/// Serves `router` on `io`, its requests counted in `activity`, until the connection ends, is
/// idle past its allowance, is asked to `close`, or the server is `stopping`.
async fn run_connection<I>(
    builder: &HttpBuilder,
    io: hyper_util::rt::TokioIo<I>,
    router: Router,
    activity: &Arc<Activity>,
    close: &Notify,
    stopping: &Notify,
    connections: &ConnectionLimits,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let service = Tracked {
        inner: hyper_util::service::TowerToHyperService::new(router),
        activity: activity.clone(),
    };
    let conn = builder.serve_connection_with_upgrades(io, service);
    drive(conn, activity, close, stopping, connections).await;
}

/// Drives one connection until it ends, is idle past its allowance, is evicted, or the server
/// stops (then it finishes its requests in flight first).
async fn drive<C>(
    conn: C,
    activity: &Activity,
    close: &Notify,
    stopping: &Notify,
    limits: &ConnectionLimits,
) where
    C: std::future::Future + GracefulConn,
{
    tokio::pin!(conn);
    let stop = stopping.notified();
    tokio::pin!(stop);
    loop {
        let wait = match activity.idle_for() {
            None => activity.allowance(limits),
            Some(idle) => match activity.allowance(limits).checked_sub(idle) {
                Some(left) if !left.is_zero() => left,
                // Idle past its allowance: nothing is in flight, so close it now.
                _ => break,
            },
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = close.notified() => {
                if activity.idle_for().is_some() {
                    break;
                }
            }
            _ = stop.as_mut() => {
                conn.as_mut().shutdown_gracefully();
                conn.await;
                return;
            }
        }
    }
    conn.as_mut().shutdown_gracefully();
    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
}

/// A connection that can be asked to finish and close.
trait GracefulConn {
    fn shutdown_gracefully(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E, B> GracefulConn for hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper_util::server::conn::auto::HttpServerConnExec<S::Future, B>,
{
    fn shutdown_gracefully(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
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
    let caller = match app.auth.load().verify_header(auth) {
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
    let revision = app.runtime.revision();
    // A fleet host started from a bootstrap bundle (no providers, no tenants) has nothing to
    // serve until the fleet's first revision arrives: not ready, so no traffic reaches it. (A
    // revision the fleet published empty is applied like any other: the host is then ready.)
    // A fleet host whose fleet revision cannot be applied (and nothing earlier could be
    // either) is unready too, saying why.
    let waiting = (app.member.as_ref().is_some_and(|m| !m.has_applied())
        && revision.providers.is_empty()
        && revision.bundle.file.tenants.is_empty())
        || app.runtime.unserved().is_some();
    let ready = app.runtime.ready.load(Ordering::SeqCst) && !waiting;
    let providers: Vec<_> = revision
        .providers
        .values()
        .map(|p| json!({"name": p.name, "digest": p.digest, "world": p.world}))
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let refused = app.reloader.as_ref().and_then(|r| r.last_refused());
    let canary = app.runtime.canary().map(|c| {
        json!({"digest": c.revision.digest, "tenants": c.tenants, "since": c.revision.since_secs()})
    });
    let fleet = app.member.as_ref().map(|m| {
        json!({
            "host": m.fleet().host_id,
            "url": m.fleet().url,
            "serving_from": m.serving_from(),
            "waiting": m.waiting(),
            "high_water": m.high_water(),
        })
    });
    (
        status,
        axum::Json(json!({
            "ready": ready,
            "waiting_for_fleet": waiting,
            "revision": {"digest": revision.digest, "since": revision.since_secs()},
            "last_refused": refused,
            "canary": canary,
            "fleet": fleet,
            "providers": providers,
        })),
    )
        .into_response()
}

/// `POST /reload` (admin listener): reads the bundle file again and applies it; 200 with the
/// outcome when it is active (or was already), 422 with every problem when it was refused.
async fn reload(State(app): State<Arc<App>>) -> Response {
    let Some(reloader) = &app.reloader else {
        return error(
            404,
            "not-found",
            "this host does not serve a bundle file it could reload".into(),
        );
    };
    let outcome = match &app.member {
        Some(member) => match member.sync().await {
            Ok(Some(outcome)) => outcome,
            Ok(None) => Outcome::Unchanged {
                digest: app.runtime.revision().digest.clone(),
            },
            Err(e) => {
                return error(
                    503,
                    "unavailable",
                    format!("the fleet's revisions cannot be read: {e:#}"),
                );
            }
        },
        None => reloader.reload().await,
    };
    crate::audit::record(
        "admin.reload",
        serde_json::json!({ "via": "admin-api", "outcome": outcome.label() }),
    );
    let status = match outcome {
        Outcome::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    (status, axum::Json(outcome)).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut text = app.runtime.metrics.render();
    // Which revision this host serves: one series, its digest the label (a dashboard shows
    // the fleet converging, or not).
    let name = crate::metrics::REVISION_INFO;
    let _ = write!(
        text,
        "# HELP {name} 1, labelled with the digest of the revision this host serves.\n# TYPE {name} gauge\n{name}{{digest=\"{}\"}} 1\n",
        app.runtime.revision().digest
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
