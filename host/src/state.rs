//! Per-call state: what one fresh instance sees (its `Store` data).
//!
//! Process scope (engine, linkers, compiled components) lives in the runtime; tenant scope
//! (limits, bindings, validated config) in [`CallScope`], shared read-only; instance scope here.
//! Nothing in a `CallState` survives the call.

use std::collections::BTreeSet;
use std::sync::Arc;

use http_body_util::BodyExt;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::metrics::Metrics;
use crate::secrets::SecretBackend;

/// Who a call is for and what it may touch. Shared by every instance of one call.
pub struct CallScope {
    /// Tenant id (from the verified token).
    pub tenant: String,
    /// Team, if the token names one.
    pub team: Option<String>,
    /// User, if the token names one.
    pub user: Option<String>,
    /// Provider name.
    pub provider: String,
    /// Capability being invoked.
    pub capability: String,
    /// Trace id of the call.
    pub trace_id: String,
    /// Secret names the provider declares *and* the bundle grants.
    pub granted_secrets: Arc<BTreeSet<String>>,
    /// Secret names bound for this tenant.
    pub bound_secrets: Arc<BTreeSet<String>>,
    /// Where values come from.
    pub secret_backend: Arc<dyn SecretBackend>,
    /// The tenant's validated configuration of the provider.
    pub config: Arc<serde_json::Value>,
    /// The host's span for this call (parent of guest spans).
    pub otel_cx: opentelemetry::Context,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
}

/// Why a resource limit stopped an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("instance memory and tables would exceed {cap} bytes")]
pub struct MemoryLimitHit {
    /// The cap.
    pub cap: u64,
}

/// Caps the total bytes of all memories and tables of one instance.
#[derive(Debug)]
pub struct InstanceLimiter {
    cap: u64,
    memory: u64,
    tables: u64,
    /// Set when the cap was hit (the trap may surface as something else in the guest).
    pub hit: bool,
}

/// Bytes charged per table element.
const TABLE_ELEMENT_BYTES: u64 = 16;

impl InstanceLimiter {
    /// A limiter with `cap` bytes.
    pub fn new(cap: u64) -> InstanceLimiter {
        InstanceLimiter {
            cap,
            memory: 0,
            tables: 0,
            hit: false,
        }
    }

    fn check(&mut self, memory: u64, tables: u64) -> wasmtime::Result<bool> {
        if memory.saturating_add(tables) > self.cap {
            self.hit = true;
            return Err(wasmtime::Error::new(MemoryLimitHit { cap: self.cap }));
        }
        self.memory = memory;
        self.tables = tables;
        Ok(true)
    }
}

impl wasmtime::ResourceLimiter for InstanceLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let memory = self.memory - (current as u64).min(self.memory) + desired as u64;
        self.check(memory, self.tables)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let current = current as u64 * TABLE_ELEMENT_BYTES;
        let tables = self.tables - current.min(self.tables) + desired as u64 * TABLE_ELEMENT_BYTES;
        self.check(self.memory, tables)
    }

    fn instances(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        16
    }
}

/// Outbound HTTP policy: only hosts the bundle granted the provider.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    /// Granted patterns: `host`, `host:port`, `*.domain`, `*`.
    pub allowed: Arc<Vec<String>>,
    /// Where granted requests really go (`host:port`, plain HTTP), if not where they name.
    ///
    /// The conformance suite points every request of a provider at its scripted upstream this
    /// way, so providers with fixed API hosts can be tested; the grant is still checked against
    /// the host the provider named, and the upstream sees that name in `Host`.
    pub redirect: Option<Arc<str>>,
}

impl OutboundPolicy {
    /// Whether `host` (and `port`) matches a granted pattern. A pattern without a port allows
    /// any port; `*.example.com` allows subdomains of example.com only.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allowed.iter().any(|pattern| {
            if pattern == "*" {
                return true;
            }
            let (p_host, p_port) = match pattern.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, p.parse::<u16>().ok()),
                _ => (pattern.as_str(), None),
            };
            if p_port.is_some_and(|p| p != port) {
                return false;
            }
            let p_host = p_host.to_ascii_lowercase();
            match p_host.strip_prefix("*.") {
                Some(suffix) => host.ends_with(&format!(".{suffix}")),
                None => host == p_host,
            }
        })
    }
}

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: hyper::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        hyper::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        drop(fut);
        let uri = request.uri();
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !self.allows(&host, port) {
            tracing::warn!(host = %host, port, "outbound request to a host not granted to this provider refused");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let request = match &self.redirect {
            Some(to) => match redirect(request, to) {
                Ok(r) => r,
                Err(e) => return Box::new(async move { Err(e) }),
            },
            None => request,
        };
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Sends `request` to `to` over plain HTTP, keeping its path, and its authority as `Host`.
fn redirect(
    request: hyper::Request<wasmtime_wasi_http::WasiBody>,
    to: &str,
) -> Result<hyper::Request<wasmtime_wasi_http::WasiBody>, wasmtime_wasi_http::Error> {
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
        .map_err(|_| wasmtime_wasi_http::Error::HttpRequestUriInvalid)?;
    if let Some(named) = named
        && !parts.headers.contains_key(hyper::header::HOST)
        && let Ok(v) = hyper::header::HeaderValue::from_str(&named)
    {
        parts.headers.insert(hyper::header::HOST, v);
    }
    Ok(hyper::Request::from_parts(parts, body))
}

/// The data of one instance's `Store`.
pub struct CallState {
    /// WASI: no files, no sockets, no environment, no arguments.
    pub wasi: WasiCtx,
    /// Resources of this instance.
    pub table: ResourceTable,
    /// `wasi:http` state.
    pub http: WasiHttpCtx,
    /// Outbound policy.
    pub outbound: OutboundPolicy,
    /// Memory and table cap.
    pub limiter: InstanceLimiter,
    /// Who the call is for.
    pub scope: Arc<CallScope>,
    /// Guest spans started in this call.
    pub spans_started: u32,
}

impl CallState {
    /// Fresh state for one instance.
    pub fn new(scope: Arc<CallScope>, outbound: OutboundPolicy, memory_cap: u64) -> CallState {
        CallState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            outbound,
            limiter: InstanceLimiter::new(memory_cap),
            scope,
            spans_started: 0,
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_patterns() {
        let p = OutboundPolicy {
            allowed: Arc::new(vec![
                "hooks.example.com".into(),
                "127.0.0.1:8080".into(),
                "*.slack.com".into(),
            ]),
            redirect: None,
        };
        assert!(p.allows("hooks.example.com", 443));
        assert!(p.allows("HOOKS.example.com.", 80));
        assert!(p.allows("127.0.0.1", 8080));
        assert!(!p.allows("127.0.0.1", 8081));
        assert!(p.allows("api.slack.com", 443));
        assert!(!p.allows("slack.com", 443));
        assert!(!p.allows("evilslack.com", 443));
        assert!(!p.allows("example.com", 443));
        assert!(!OutboundPolicy::default().allows("anything", 80));
    }

    #[test]
    fn limiter_caps_memory_and_tables_together() {
        use wasmtime::ResourceLimiter;
        let mut l = InstanceLimiter::new(1000);
        assert!(l.memory_growing(0, 900, None).unwrap());
        assert!(l.table_growing(0, 6, None).unwrap()); // 96 bytes
        assert!(l.table_growing(6, 7, None).is_err()); // 900 + 112 > 1000
        assert!(l.hit);
    }
}
