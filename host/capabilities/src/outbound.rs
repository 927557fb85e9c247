//! Outbound HTTP: which hosts and addresses a provider may reach, how many requests one call
//! may have in flight, and the connections themselves.
//!
//! A request is sent only when the host it names matches one of the provider's granted
//! [`HostPattern`]s (scheme and port included) *and* the address the host then connects to is
//! public or named by an address pattern of the grant. The name is resolved here and the
//! connection made to the checked address itself, so there is no window in which DNS could
//! answer differently (rebinding): a `*` grant, or a granted name whose DNS its owner controls,
//! cannot reach loopback, private ranges, link-local metadata services or the host's own ports.
//! Each call may have at most `max_outgoing_requests` requests in flight; each in-flight
//! request carries a charge against the call's host-memory budget until its response ends.
//! Connections are kept alive for later requests of the same tenant ([`pool`]).

pub mod pool;

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use greentic_manifest::HostPattern;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::budget::Charge;
use pool::{ConnectionPool, PoolKey};

/// The most bytes one header-fields resource may hold (names, values and their overhead).
pub const FIELDS_LIMIT_BYTES: usize = 64 << 10;

/// Bytes of a request body the host buffers per write (`check-write` answers at most this).
pub const OUTGOING_CHUNK_BYTES: usize = 64 << 10;
/// Most bytes one outgoing (request or response) body holds in the host at once.
pub const OUTGOING_BODY_BUFFER_BYTES: u64 = 2 * OUTGOING_CHUNK_BYTES as u64;
/// Largest response head (status line and headers) read from an upstream.
pub const RESPONSE_HEAD_BYTES: usize = 64 << 10;
/// What one request in flight is charged against the call's host-memory budget: its
/// connection's read and write buffers and TLS state (besides its request's own charge).
pub const CONNECTION_BYTES: u64 = 192 << 10;
/// Longest host name written into a log line.
const MAX_LOGGED_HOST: usize = 253;

/// The outbound grant of one provider: host patterns, and where requests are redirected.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    patterns: Arc<Vec<HostPattern>>,
    /// Where granted requests really go (`host:port`, plain HTTP), if not where they name.
    ///
    /// The conformance suite points every request of a provider at its scripted upstream this
    /// way, so providers with fixed API hosts can be tested; the grant is still checked against
    /// the host the provider named, and the upstream sees that name in `Host`.
    pub redirect: Option<Arc<str>>,
    /// The revision's kept-alive connections (see [`pool`]).
    pub pool: Arc<ConnectionPool>,
}

impl OutboundPolicy {
    /// A policy of `patterns` (see [`HostPattern`]); the error names the first bad one.
    pub fn new(patterns: &[String]) -> Result<OutboundPolicy, String> {
        let parsed = patterns
            .iter()
            .map(|p| {
                p.parse::<HostPattern>()
                    .map_err(|why| format!("`{p}` is not a host pattern: {why}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OutboundPolicy {
            patterns: Arc::new(parsed),
            redirect: None,
            pool: Arc::default(),
        })
    }

    /// Whether a request naming `host` on `port` over HTTPS (`https`) or plain HTTP matches
    /// a granted pattern.
    pub fn allows(&self, https: bool, host: &str, port: u16) -> bool {
        self.patterns
            .iter()
            .any(|p| p.admits_name(https, host, port))
    }

    /// Whether a connection may go to `ip`: a public address, or one a granted address
    /// pattern names.
    pub fn allows_address(&self, https: bool, ip: IpAddr, port: u16) -> bool {
        !greentic_manifest::is_restricted(ip)
            || self
                .patterns
                .iter()
                .any(|p| p.admits_address(https, ip, port))
    }
}

/// One request in flight: counted against the call's cap, and its host memory against the
/// call's budget, until its connection ends (dropped on whichever thread ends it).
#[derive(Debug)]
pub struct InFlight {
    count: Arc<AtomicUsize>,
    _charge: Option<Charge>,
}

impl InFlight {
    /// Counts one more request in `count` (holding `charge` while it lives).
    pub fn enter(count: &Arc<AtomicUsize>, charge: Option<Charge>) -> InFlight {
        count.fetch_add(1, Ordering::AcqRel);
        InFlight {
            count: count.clone(),
            _charge: charge,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The guard `outgoing-handler.handle` prepared for the request it hands to
/// [`WasiHttpHooks::send_request`] (both run on the call's thread, one inside the other).
pub type NextInFlight = Arc<Mutex<Option<InFlight>>>;

/// The outbound side of one call: the provider's policy, and where `outgoing-handler.handle`
/// leaves the in-flight guard of the request being sent. It is the `wasi:http` hooks of the
/// call's store.
#[derive(Clone, Default)]
pub struct OutboundCall {
    /// The provider's grant.
    pub policy: OutboundPolicy,
    /// The guard of the request being sent.
    pub next: NextInFlight,
    /// Whose requests these are: the tenant's requests reuse only connections its own
    /// requests opened, and each request is counted (new or reused connection).
    pub owner: Option<Arc<dyn RequestOwner>>,
}

/// Whose requests an [`OutboundCall`] sends: the tenant its connections are kept for, and
/// where each request is counted (the call's scope).
pub trait RequestOwner: Send + Sync {
    /// The calling tenant.
    fn tenant(&self) -> &str;
    /// Counts one request answered on a `connection`: `new`, or `reused` from the pool.
    fn count_request(&self, connection: &str);
}

impl std::fmt::Debug for OutboundCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundCall")
            .field("policy", &self.policy)
            .field("tenant", &self.owner.as_ref().map(|o| o.tenant()))
            .finish_non_exhaustive()
    }
}

fn clip_host(host: &str) -> &str {
    crate::text::clip(host, MAX_LOGGED_HOST)
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    hyper::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundCall {
    fn send_request(
        &mut self,
        request: hyper::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let guard = self.next.lock().unwrap_or_else(|e| e.into_inner()).take();
        let uri = request.uri();
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !self.policy.allows(https, &host, port) {
            tracing::warn!(host = %clip_host(&host), port, https, "outbound request to a host not granted to this provider refused");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let policy = self.policy.clone();
        let owner = self.owner.clone();
        Box::new(async move {
            let (request, target) = match &policy.redirect {
                Some(to) => (redirect(request, to)?, Target::Redirect(to.to_string())),
                None => (request, Target::Direct { host, port, https }),
            };
            send(
                request,
                options,
                target,
                &policy,
                owner,
                guard.map(Arc::new),
            )
            .await
        })
    }

    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        1
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        OUTGOING_CHUNK_BYTES
    }
}

/// Where a request's connection goes.
enum Target {
    /// Where it names, after the address check.
    Direct {
        host: String,
        port: u16,
        https: bool,
    },
    /// To the policy's redirect target (plain HTTP; configured by the operator, not checked).
    Redirect(String),
}

/// Sends `request` to `to` over plain HTTP, keeping its path, and its authority as `Host`.
fn redirect(
    request: hyper::Request<WasiBody>,
    to: &str,
) -> Result<hyper::Request<WasiBody>, HttpError> {
    let (mut parts, body) = request.into_parts();
    let named = parts.uri.authority().map(|a| a.to_string());
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = hyper::Uri::builder()
        .scheme("http")
        .authority(to)
        .path_and_query(path)
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;
    if let Some(named) = named
        && !parts.headers.contains_key(hyper::header::HOST)
        && let Ok(v) = hyper::header::HeaderValue::from_str(&named)
    {
        parts.headers.insert(hyper::header::HOST, v);
    }
    Ok(hyper::Request::from_parts(parts, body))
}

/// The addresses a connection may go to, in the order the resolver gave them.
async fn addresses(
    target: &Target,
    policy: &OutboundPolicy,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, HttpError> {
    let (host, port) = match target {
        Target::Redirect(to) => {
            let resolved = tokio::time::timeout(timeout, tokio::net::lookup_host(to.as_str()))
                .await
                .map_err(|_| HttpError::DnsTimeout)?
                .map_err(|_| HttpError::DestinationNotFound)?;
            return Ok(resolved.collect());
        }
        Target::Direct { host, port, .. } => (host.as_str(), *port),
    };
    let resolved: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| HttpError::DnsTimeout)?
            .map_err(|e| HttpError::DnsError {
                rcode: Some(e.to_string()),
                info_code: None,
            })?
            .collect(),
    };
    let Target::Direct { https, .. } = target else {
        return Ok(resolved);
    };
    let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
        .into_iter()
        .partition(|a| policy.allows_address(*https, a.ip(), a.port()));
    if allowed.is_empty() {
        if let Some(first) = refused.first() {
            tracing::warn!(
                host = %clip_host(host), port, address = %first.ip(),
                "outbound request to a restricted address refused: the grant names no address pattern for it"
            );
            return Err(HttpError::DestinationIpProhibited);
        }
        return Err(HttpError::DestinationNotFound);
    }
    Ok(allowed)
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T> Stream for T where T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}

type Connection = (
    hyper::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
);

/// Sends `request` to the first allowed address of `target`: on a kept-alive connection of
/// `tenant` to it if the pool has one, otherwise on a new connection to the first address
/// that answers. `guard` (the request's place in flight) lives until the response body ends.
async fn send(
    mut request: hyper::Request<WasiBody>,
    options: Option<RequestOptions>,
    target: Target,
    policy: &OutboundPolicy,
    owner: Option<Arc<dyn RequestOwner>>,
    guard: Option<Arc<InFlight>>,
) -> Result<Connection, HttpError> {
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);
    let first_byte_timeout = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);
    let between_bytes_timeout = options
        .and_then(|o| o.between_bytes_timeout)
        .unwrap_or(DEFAULT_TIMEOUT)
        .max(Duration::from_nanos(1));

    let addrs = addresses(&target, policy, connect_timeout).await?;
    let tenant: Arc<str> = Arc::from(owner.as_ref().map_or("", |o| o.tenant()));
    let tls: Option<Arc<str>> = match &target {
        Target::Direct {
            host, https: true, ..
        } => Some(Arc::from(host.as_str())),
        _ => None,
    };
    // The request line carries the path only (the authority is in `Host`).
    *request.uri_mut() = hyper::Uri::builder()
        .path_and_query(request.uri().path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;

    // A kept-alive connection to one of the addresses just checked, if the tenant has one.
    let kept = addrs.iter().find_map(|addr| {
        let key = PoolKey {
            tenant: tenant.clone(),
            addr: *addr,
            tls: tls.clone(),
        };
        policy.pool.checkout(&key).map(|sender| (key, sender))
    });
    if let Some((key, mut sender)) = kept {
        match tokio::time::timeout(first_byte_timeout, sender.try_send_request(request)).await {
            Err(_) => return Err(HttpError::ConnectionReadTimeout),
            Ok(Ok(response)) => {
                if let Some(owner) = &owner {
                    owner.count_request("reused");
                }
                return Ok(answered(
                    response,
                    between_bytes_timeout,
                    guard,
                    Kept::new(&policy.pool, key, sender),
                ));
            }
            // The upstream closed it before the request went out: a new connection.
            Ok(Err(mut e)) => match e.take_message() {
                Some(unsent) => request = unsent,
                None => return Err(HttpError::from(e.into_error())),
            },
        }
    }

    let mut last = HttpError::ConnectionRefused;
    let mut connected = None;
    for addr in addrs {
        match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                connected = Some((s, addr));
                break;
            }
            Ok(Err(e)) => last = HttpError::Connect(e),
            Err(_) => last = HttpError::ConnectionTimeout,
        }
    }
    let (tcp, addr) = connected.ok_or(last)?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Stream> = match &tls {
        Some(host) => {
            let name = match host.parse::<IpAddr>() {
                Ok(ip) => rustls::pki_types::ServerName::from(ip),
                Err(_) => rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(HttpError::InvalidDnsNameError)?,
            };
            let tls = tokio_rustls::TlsConnector::from(tls_config())
                .connect(name, tcp)
                .await
                .map_err(HttpError::Tls)?;
            Box::new(tls)
        }
        None => Box::new(tcp),
    };
    let (mut sender, conn) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::Builder::new()
            .max_buf_size(RESPONSE_HEAD_BYTES)
            .handshake(hyper_util::rt::TokioIo::new(stream)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;
    // The connection is driven on its own task: it outlives the response when it is kept.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)?
        .map_err(HttpError::from)?;
    if let Some(owner) = &owner {
        owner.count_request("new");
    }
    let key = PoolKey { tenant, addr, tls };
    Ok(answered(
        response,
        between_bytes_timeout,
        guard,
        Kept::new(&policy.pool, key, sender),
    ))
}

/// The response of a request, its body timed and keeping `guard`, and its connection going
/// back to the pool when the body has been read to its end.
fn answered(
    response: hyper::Response<hyper::body::Incoming>,
    between_bytes_timeout: Duration,
    guard: Option<Arc<InFlight>>,
    kept: Kept,
) -> Connection {
    let mut timer = tokio::time::interval(between_bytes_timeout);
    timer.reset();
    let response = response.map(|incoming| {
        TimedBody {
            incoming,
            timer,
            kept: Some(kept),
            _guard: guard,
        }
        .boxed_unsync()
    });
    // The connection's own task reports its end; nothing is left to drive here.
    (response, Box::new(std::future::ready(Ok(()))))
}

/// A connection that goes back to its pool once its response has been read.
struct Kept {
    pool: Arc<ConnectionPool>,
    key: PoolKey,
    sender: hyper::client::conn::http1::SendRequest<WasiBody>,
}

impl Kept {
    fn new(
        pool: &Arc<ConnectionPool>,
        key: PoolKey,
        sender: hyper::client::conn::http1::SendRequest<WasiBody>,
    ) -> Kept {
        Kept {
            pool: pool.clone(),
            key,
            sender,
        }
    }
}

/// A response body that fails when the upstream pauses longer than the between-bytes timeout,
/// keeps its request's [`InFlight`] guard alive, and gives its connection back to the pool
/// once read to its end (a body dropped before then closes the connection).
struct TimedBody {
    incoming: hyper::body::Incoming,
    timer: tokio::time::Interval,
    kept: Option<Kept>,
    _guard: Option<Arc<InFlight>>,
}

impl TimedBody {
    fn give_back(&mut self) {
        if let Some(kept) = self.kept.take() {
            kept.pool.give_back(kept.key, kept.sender);
        }
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        if self.incoming.is_end_stream() {
            self.give_back();
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => {
                self.give_back();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(if e.is_timeout() {
                HttpError::HttpResponseTimeout
            } else {
                HttpError::from(e)
            }))),
            Poll::Ready(Some(Ok(frame))) => {
                self.timer.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(self.timer.poll_tick(cx));
                Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(patterns: &[&str]) -> OutboundPolicy {
        OutboundPolicy::new(&patterns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn names_and_addresses_are_both_checked() {
        let p = policy(&["*", "http://127.0.0.1:8080"]);
        assert!(p.allows(true, "api.example.com", 443));
        assert!(!p.allows(false, "api.example.com", 80), "`*` is https only");
        assert!(p.allows(true, "localhost", 443), "the name matches `*` ...");
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(
            !p.allows_address(true, lo, 443),
            "... but its address is restricted"
        );
        assert!(
            p.allows_address(false, lo, 8080),
            "named by an address pattern"
        );
        assert!(!p.allows_address(false, lo, 8081));
        let metadata: IpAddr = "169.254.169.254".parse().unwrap();
        assert!(!policy(&["metadata.example"]).allows_address(false, metadata, 80));
        assert!(p.allows_address(true, "93.184.216.34".parse().unwrap(), 443));
        assert!(!OutboundPolicy::default().allows(true, "anything", 443));
        let e = OutboundPolicy::new(&["https://x/y".into()]).unwrap_err();
        assert!(e.contains("`https://x/y`"), "{e}");
    }

    #[test]
    fn in_flight_guards_count_and_give_back() {
        let count = Arc::new(AtomicUsize::new(0));
        let budget = crate::budget::HostBudget::new(1000);
        let a = InFlight::enter(&count, Some(budget.shared().try_charge(600, "x").unwrap()));
        let b = InFlight::enter(&count, None);
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert_eq!(budget.used(), 600);
        drop(a);
        std::thread::spawn(move || drop(b)).join().unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 0);
        assert_eq!(budget.used(), 0);
    }

    /// A keep-alive HTTP/1.1 server on loopback that answers every request with the number of
    /// the connection it came on (from 1). `/close` answers with `connection: close`; `/big`
    /// answers 256 KiB; `/then-close` answers and then closes the connection without saying so.
    async fn numbered_server() -> (u16, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let end = loop {
                            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break p;
                            }
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(r) => buf.extend_from_slice(&chunk[..r]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                        let body = match path.as_str() {
                            "/big" => "x".repeat(256 << 10),
                            _ => n.to_string(),
                        };
                        let close = if path == "/close" {
                            "connection: close\r\n"
                        } else {
                            ""
                        };
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{close}\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(reply.as_bytes()).await.is_err()
                            || path == "/close"
                            || path == "/then-close"
                        {
                            return;
                        }
                    }
                });
            }
        });
        (port, connections)
    }

    /// A tenant's requests, counted by connection.
    struct Owner {
        tenant: String,
        counted: Mutex<std::collections::BTreeMap<String, usize>>,
    }

    impl RequestOwner for Owner {
        fn tenant(&self) -> &str {
            &self.tenant
        }
        fn count_request(&self, connection: &str) {
            *self
                .counted
                .lock()
                .unwrap()
                .entry(connection.to_string())
                .or_default() += 1;
        }
    }

    impl Owner {
        fn counted(&self, connection: &str) -> usize {
            self.counted
                .lock()
                .unwrap()
                .get(connection)
                .copied()
                .unwrap_or(0)
        }
    }

    /// A call of `tenant` under `policy`, and what it counts.
    fn call_of(tenant: &str, policy: &OutboundPolicy) -> (OutboundCall, Arc<Owner>) {
        let owner = Arc::new(Owner {
            tenant: tenant.into(),
            counted: Mutex::default(),
        });
        let call = OutboundCall {
            policy: policy.clone(),
            next: NextInFlight::default(),
            owner: Some(owner.clone() as Arc<dyn RequestOwner>),
        };
        (call, owner)
    }

    /// Sends `GET path` through `call`; reads the whole body unless `read` is false.
    async fn get(call: &mut OutboundCall, port: u16, path: &str, read: bool) -> String {
        let request = hyper::Request::get(format!("http://127.0.0.1:{port}{path}"))
            .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
            .body(
                http_body_util::Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap();
        let sent = call.send_request(request, None, Box::new(async { Ok(()) }));
        let (response, _io) = Box::into_pin(sent).await.expect("the request is answered");
        assert_eq!(response.status(), 200);
        if !read {
            return String::new();
        }
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// Waits (up to 5 s) until `pool` holds `n` idle connections.
    async fn idle(pool: &ConnectionPool, n: usize) {
        for _ in 0..500 {
            if pool.idle_count() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the pool holds {} idle connections, not {n}",
            pool.idle_count()
        );
    }

    #[tokio::test]
    async fn a_tenants_requests_reuse_its_connection_and_only_its_own() {
        let (port, connections) = numbered_server().await;
        let policy = policy(&[&format!("http://127.0.0.1:{port}")]);
        let (mut a, a_counts) = call_of("a", &policy);
        let (mut b, b_counts) = call_of("b", &policy);
        assert_eq!(get(&mut a, port, "/", true).await, "1");
        idle(&policy.pool, 1).await;
        assert_eq!(get(&mut a, port, "/", true).await, "1", "kept alive");
        idle(&policy.pool, 1).await;
        // Tenant b never gets tenant a's connection, even when it is idle.
        assert_eq!(get(&mut b, port, "/", true).await, "2");
        idle(&policy.pool, 2).await;
        assert_eq!(get(&mut b, port, "/", true).await, "2");
        idle(&policy.pool, 2).await;
        assert_eq!(get(&mut a, port, "/", true).await, "1");
        // A new call of tenant a (a new set of imports) reuses it too.
        let (mut a_again, again_counts) = call_of("a", &policy);
        idle(&policy.pool, 2).await;
        assert_eq!(get(&mut a_again, port, "/", true).await, "1");
        assert_eq!(connections.load(Ordering::SeqCst), 2);
        // Each call's metrics count its requests by connection.
        assert_eq!(
            (a_counts.counted("new"), a_counts.counted("reused")),
            (1, 2)
        );
        assert_eq!(
            (b_counts.counted("new"), b_counts.counted("reused")),
            (1, 1)
        );
        assert_eq!(again_counts.counted("reused"), 1);
        // Another provider (another policy) has its own connections.
        let other = super::OutboundPolicy::new(&[format!("http://127.0.0.1:{port}")]).unwrap();
        assert_eq!(get(&mut call_of("a", &other).0, port, "/", true).await, "3");
    }

    #[tokio::test]
    async fn only_a_connection_whose_response_was_read_to_its_end_is_kept() {
        let (port, connections) = numbered_server().await;
        let policy = policy(&[&format!("http://127.0.0.1:{port}")]);
        let (mut a, _) = call_of("a", &policy);
        // A body dropped unread closes its connection.
        get(&mut a, port, "/big", false).await;
        assert_eq!(policy.pool.idle_count(), 0);
        assert_eq!(get(&mut a, port, "/", true).await, "2");
        idle(&policy.pool, 1).await;
        // An upstream that asks to close is not reused either.
        assert_eq!(get(&mut a, port, "/close", true).await, "2");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(policy.pool.idle_count(), 0);
        assert_eq!(get(&mut a, port, "/", true).await, "3");
        // One that closes silently after answering is found closed, and a new one is made.
        idle(&policy.pool, 1).await;
        assert_eq!(get(&mut a, port, "/then-close", true).await, "3");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(get(&mut a, port, "/", true).await, "4");
        assert_eq!(connections.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn an_idle_connection_expires() {
        let (port, connections) = numbered_server().await;
        let mut policy = policy(&[&format!("http://127.0.0.1:{port}")]);
        policy.pool = Arc::new(ConnectionPool::with_idle_timeout(Duration::from_millis(
            100,
        )));
        let (mut a, _) = call_of("a", &policy);
        assert_eq!(get(&mut a, port, "/", true).await, "1");
        idle(&policy.pool, 1).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            get(&mut a, port, "/", true).await,
            "2",
            "an expired connection is not reused"
        );
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }
}
