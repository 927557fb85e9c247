//! Kept-alive upstream connections of one provider revision, never shared between tenants.
//!
//! Most providers call the same few upstreams (a chat API, a ticketing system) on every call;
//! a new TCP (and TLS) connection per request costs both sides a handshake and the host a
//! socket per call in flight. A connection whose response was read to its end goes back here
//! and the next request of the **same tenant** to the **same checked address** (and, over
//! HTTPS, the same server name) reuses it. The key holds the tenant, so no connection ever
//! carries two tenants' requests: whatever one tenant's provider did to a connection (a
//! header, a half-read body) cannot reach another tenant's call. A connection is only kept
//! when its response body was read to its end and the upstream did not ask to close it; it
//! is dropped after [`IDLE_TIMEOUT`] unused, and at most [`MAX_IDLE_PER_KEY`] per key and
//! [`MAX_IDLE`] in all are kept. The pool belongs to the provider revision's
//! [`OutboundPolicy`](super::OutboundPolicy), so a reload or a removed provider drops its
//! connections with it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;
use wasmtime_wasi_http::WasiBody;

/// How long an unused connection is kept: under the idle timeout of common servers and load
/// balancers (60–75 s), so the upstream rarely closes one just as it is reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most idle connections kept for one tenant to one address.
pub const MAX_IDLE_PER_KEY: usize = 256;
/// Most idle connections one provider revision keeps in all.
pub const MAX_IDLE: usize = 16_384;

/// Who a connection may serve: one tenant, to one checked address, under one TLS server name
/// (`None`: plain HTTP).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The tenant whose calls the connection carries.
    pub tenant: Arc<str>,
    /// The address it is connected to (checked against the grant when it was resolved).
    pub addr: SocketAddr,
    /// The server name its TLS session verified, for HTTPS.
    pub tls: Option<Arc<str>>,
}

struct Idle {
    sender: SendRequest<WasiBody>,
    since: Instant,
}

#[derive(Default)]
struct Idles {
    by_key: HashMap<PoolKey, Vec<Idle>>,
    count: usize,
    swept: Option<Instant>,
}

/// The idle connections of one provider revision (see the module's documentation).
pub struct ConnectionPool {
    idle: Mutex<Idles>,
    idle_timeout: Duration,
}

impl Default for ConnectionPool {
    fn default() -> Self {
        ConnectionPool::with_idle_timeout(IDLE_TIMEOUT)
    }
}

impl std::fmt::Debug for ConnectionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPool")
            .field("idle", &self.idle_count())
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl ConnectionPool {
    /// An empty pool whose connections are dropped after `idle_timeout` unused.
    pub fn with_idle_timeout(idle_timeout: Duration) -> ConnectionPool {
        ConnectionPool {
            idle: Mutex::new(Idles::default()),
            idle_timeout,
        }
    }

    /// How many idle connections the pool holds.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).count
    }

    /// The most recently used idle connection for `key` that is still open and ready, if any;
    /// expired or closed ones met on the way are dropped.
    pub fn checkout(&self, key: &PoolKey) -> Option<SendRequest<WasiBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let idle = &mut *idle;
        let list = idle.by_key.get_mut(key)?;
        let mut found = None;
        while let Some(c) = list.pop() {
            idle.count -= 1;
            if c.since.elapsed() < self.idle_timeout && c.sender.is_ready() {
                found = Some(c.sender);
                break;
            }
        }
        if list.is_empty() {
            idle.by_key.remove(key);
        }
        found
    }

    /// Keeps `sender` for `key` once its connection is ready for another request (at once if
    /// it is; otherwise when the connection has finished the response). A connection that
    /// closes instead, or a full pool, drops it.
    pub fn give_back(self: &Arc<Self>, key: PoolKey, mut sender: SendRequest<WasiBody>) {
        if sender.is_closed() {
            return;
        }
        if sender.is_ready() {
            self.keep(key, sender);
            return;
        }
        // Outside a Tokio runtime (a store dropped on a plain thread) the connection is
        // simply closed.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.clone();
        runtime.spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(5), sender.ready()).await {
                pool.keep(key, sender);
            }
        });
    }

    fn keep(&self, key: PoolKey, sender: SendRequest<WasiBody>) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let idle = &mut *idle;
        if idle
            .swept
            .is_none_or(|at| now.duration_since(at) >= self.idle_timeout / 2)
        {
            self.sweep(idle, now);
        }
        if idle.count >= MAX_IDLE {
            return;
        }
        let list = idle.by_key.entry(key).or_default();
        if list.len() >= MAX_IDLE_PER_KEY {
            return;
        }
        list.push(Idle { sender, since: now });
        idle.count += 1;
    }

    /// Drops every expired or closed idle connection (keys of tenants no longer calling
    /// included).
    fn sweep(&self, idle: &mut Idles, now: Instant) {
        idle.swept = Some(now);
        let timeout = self.idle_timeout;
        let mut count = 0;
        idle.by_key.retain(|_, list| {
            list.retain(|c| now.duration_since(c.since) < timeout && !c.sender.is_closed());
            count += list.len();
            !list.is_empty()
        });
        idle.count = count;
    }
}
