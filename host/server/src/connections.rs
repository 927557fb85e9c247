//! The accept loop: how long a connection may stay without a request, how many may be open,
//! and how each is served (HTTP/1 or HTTP/2) and closed on shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::requests::RequestLimits;

/// A listener's TLS: the configuration (re-read when its files change), the listener's name
/// in metrics, and where handshake failures are counted.
#[derive(Clone)]
pub struct Tls {
    /// The configuration in force.
    pub server: Arc<greentic_tls::ServerTls>,
    /// `public` or `admin`: the `listener` label of
    /// `greentic_tls_handshake_failures_total{listener,reason}`.
    pub listener: &'static str,
    /// Where failed handshakes are counted.
    pub metrics: Arc<greentic_metrics::Metrics>,
}

/// The identities of the client certificate a connection presented (verified against the
/// listener's `client_ca`): a request extension every request on that connection carries.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub Arc<greentic_tls::PeerIdentity>);

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
    pub fn from_host(host: &greentic_bundle::HostSection) -> ConnectionLimits {
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
    peer: Option<ClientCertificate>,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Tracked {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send>,
    >;

    fn call(&self, mut request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let active = Active::enter(&self.activity);
        if let Some(peer) = &self.peer {
            request.extensions_mut().insert(peer.clone());
        }
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
/// their requests in flight. Every phase of a connection has a deadline: the TLS handshake (with
/// `tls`), protocol detection and the first request's headers together (`header_timeout`, for
/// HTTP/1, HTTP/2 and bytes that are neither), later requests (`idle_timeout`), bodies
/// (`body_timeout`, in the router); and at most `max_connections` are open at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: RequestLimits,
    connections: ConnectionLimits,
    tls: Option<Tls>,
    shutdown: impl std::future::Future<Output = ()>,
) {
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
                    Ok((stream, _)) => {
                        // Each write goes out at once: with Nagle's algorithm a response
                        // written after another small write (TLS session tickets, an HTTP/2
                        // frame) waits for the client's delayed ACK, 40 ms on Linux.
                        let _ = stream.set_nodelay(true);
                        stream
                    }
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
                let (builder, router, registry, stopping, tls) = (
                    builder.clone(),
                    router.clone(),
                    registry.clone(),
                    stopping.clone(),
                    tls.clone(),
                );
                tokio::spawn(async move {
                    Connection {
                        builder: &builder,
                        activity: &activity,
                        close: &close,
                        stopping: &stopping,
                        limits: &connections,
                    }
                    .serve(stream, router, tls.as_ref())
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
    serve_connection_tls(io, router, limits, connections, None).await;
}

/// [`serve_connection`] with the TLS handshake first when `tls` is given: what [`serve`] runs
/// for each accepted socket of a TLS listener, without the connection cap.
pub async fn serve_connection_tls<I>(
    io: I,
    router: Router,
    limits: RequestLimits,
    connections: ConnectionLimits,
    tls: Option<Tls>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let builder = http_builder(&limits);
    let (close, stopping) = (Notify::new(), Notify::new());
    Connection {
        builder: &builder,
        activity: &Activity::new(),
        close: &close,
        stopping: &stopping,
        limits: &connections,
    }
    .serve(io, router, tls.as_ref())
    .await;
}

type HttpBuilder = hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>;

/// One accepted connection and what bounds it.
struct Connection<'a> {
    builder: &'a HttpBuilder,
    activity: &'a Arc<Activity>,
    close: &'a Notify,
    stopping: &'a Notify,
    limits: &'a ConnectionLimits,
}

impl Connection<'_> {
    /// Serves the connection `io`, over TLS when the listener has `tls`.
    async fn serve<I>(&self, io: I, router: Router, tls: Option<&Tls>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        match tls {
            None => self.run(io, router, None).await,
            Some(tls) => self.run_tls(io, router, tls).await,
        }
    }

    /// Completes the TLS handshake within `header_timeout` (the same allowance as a first
    /// request's headers: a silent or slow client is closed), then serves the connection.
    async fn run_tls<I>(&self, io: I, router: Router, tls: &Tls)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let handshake = tokio::time::timeout(self.limits.header_timeout, tls.server.accept(io));
        let outcome = tokio::select! {
            outcome = handshake => outcome,
            // Evicted at the connection cap, or the server stops: a handshake is not a call.
            _ = self.close.notified() => return,
            _ = self.stopping.notified() => return,
        };
        match outcome {
            Ok(Ok((stream, peer))) => {
                let peer = peer.map(|p| ClientCertificate(Arc::new(p)));
                self.run(stream, router, peer).await;
            }
            Ok(Err(e)) => {
                tracing::debug!(listener = tls.listener, reason = e.reason, error = %e.error, "TLS handshake failed");
                tls.metrics.inc(
                    "greentic_tls_handshake_failures_total",
                    &[("listener", tls.listener), ("reason", e.reason)],
                );
            }
            Err(_) => {
                tls.metrics.inc(
                    "greentic_tls_handshake_failures_total",
                    &[("listener", tls.listener), ("reason", "timeout")],
                );
            }
        }
    }

    /// Serves `router` on `io` until the connection ends, is idle past its allowance, is asked
    /// to close, or the server is stopping; every request carries `peer`.
    async fn run<I>(&self, io: I, router: Router, peer: Option<ClientCertificate>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let service = Tracked {
            inner: hyper_util::service::TowerToHyperService::new(router),
            activity: self.activity.clone(),
            peer,
        };
        let io = hyper_util::rt::TokioIo::new(io);
        let conn = self.builder.serve_connection_with_upgrades(io, service);
        drive(conn, self.activity, self.close, self.stopping, self.limits).await;
    }
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
