//! Per-call state: what one fresh instance sees (its `Store` data).
//!
//! Process scope (engine, linkers, compiled components) lives in the runtime; tenant scope
//! (limits, bindings, validated config) in [`CallScope`], shared read-only; instance scope here.
//! Nothing in a `CallState` survives the call.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::budget::HostBudget;
use crate::bundle::Limits;
use crate::imports::secrets::SecretBackend;
use crate::imports::telemetry::TelemetryUsage;
use crate::metrics::Metrics;
use crate::outbound::{NextInFlight, OutboundCall, OutboundPolicy};

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
    /// The state capability (used only when the provider is granted it).
    pub state: Arc<crate::imports::state::StateCtx>,
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

/// The data of one instance's `Store`.
pub struct CallState {
    /// WASI: no files, no sockets, no environment, no arguments.
    pub wasi: WasiCtx,
    /// Resources of this instance, at most the tenant's `max_resources` at once.
    pub table: ResourceTable,
    /// `wasi:http` state.
    pub http: WasiHttpCtx,
    /// Outbound grant and hooks.
    pub outbound: OutboundCall,
    /// Outgoing requests of this call in flight.
    pub in_flight: Arc<AtomicUsize>,
    /// The in-flight guard of the request `outgoing-handler.handle` is sending.
    pub next_in_flight: NextInFlight,
    /// Host memory held for this call.
    pub budget: HostBudget,
    /// The calling tenant's limits.
    pub limits: Limits,
    /// Memory and table cap.
    pub limiter: InstanceLimiter,
    /// Who the call is for.
    pub scope: Arc<CallScope>,
    /// Telemetry emitted by this call, against its budgets.
    pub telemetry: TelemetryUsage,
    /// When the call must end; host calls past it trap (see [`CallState::check_deadline`]).
    pub deadline: Instant,
    /// When the call last gave its executor thread back from a host call (see [`HostCalls`]).
    pub last_yield: Instant,
}

/// How long a guest may keep its executor thread busy across host calls before the next
/// host call yields first: the same order as a fuel slice of guest code.
pub const HOST_SLICE: std::time::Duration = std::time::Duration::from_micros(500);

/// The store's call hook: on every call into the host it checks the deadline, and yields to
/// the executor when the call has held its thread for [`HOST_SLICE`].
///
/// Fuel-driven yields only come while the guest runs Wasm; a guest that spends its time in
/// host calls (copying large arguments in, logging) consumes little fuel between them and
/// would otherwise hold an executor thread until it finished, delaying every other tenant's
/// call on that thread, and its deadline with them.
pub struct HostCalls;

#[async_trait::async_trait]
impl wasmtime::CallHookHandler<CallState> for HostCalls {
    async fn handle_call_event(
        &self,
        mut cx: wasmtime::StoreContextMut<'_, CallState>,
        hook: wasmtime::CallHook,
    ) -> wasmtime::Result<()> {
        if !matches!(hook, wasmtime::CallHook::CallingHost) {
            return Ok(());
        }
        let state = cx.data_mut();
        state.check_deadline()?;
        if state.last_yield.elapsed() >= HOST_SLICE {
            tokio::task::yield_now().await;
            cx.data_mut().last_yield = Instant::now();
        }
        Ok(())
    }
}

/// A call ran past its deadline while making host calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the call ran past its deadline")]
pub struct DeadlineHit;

impl CallState {
    /// Fresh state for one call of a provider with `outbound` policy, under `limits`, ending at
    /// `deadline`.
    pub fn new(
        scope: Arc<CallScope>,
        outbound: OutboundPolicy,
        limits: Limits,
        deadline: Instant,
    ) -> CallState {
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.max_resources as usize);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(crate::imports::http::FIELDS_LIMIT_BYTES);
        let next_in_flight = NextInFlight::default();
        CallState {
            wasi: WasiCtx::builder().build(),
            table,
            http,
            outbound: OutboundCall {
                policy: outbound,
                next: next_in_flight.clone(),
            },
            in_flight: Arc::new(AtomicUsize::new(0)),
            next_in_flight,
            budget: HostBudget::new(limits.host_memory_bytes),
            limits,
            limiter: InstanceLimiter::new(limits.memory_bytes),
            scope,
            telemetry: TelemetryUsage::default(),
            deadline,
            last_yield: Instant::now(),
        }
    }

    /// Fails once the call's deadline has passed. Installed as the store's call hook, it runs
    /// on every call into the host, so a guest that keeps the host busy (host calls in a loop)
    /// is stopped at its deadline even when it consumes little fuel between them.
    pub fn check_deadline(&self) -> wasmtime::Result<()> {
        if Instant::now() >= self.deadline {
            return Err(wasmtime::Error::new(DeadlineHit));
        }
        Ok(())
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
    fn limiter_caps_memory_and_tables_together() {
        use wasmtime::ResourceLimiter;
        let mut l = InstanceLimiter::new(1000);
        assert!(l.memory_growing(0, 900, None).unwrap());
        assert!(l.table_growing(0, 6, None).unwrap()); // 96 bytes
        assert!(l.table_growing(6, 7, None).is_err()); // 900 + 112 > 1000
        assert!(l.hit);
    }
}
