//! The data of one instance's `Store`: the host side of its imports ([`Imports`]), and what the
//! engine bounds it by — memory and tables ([`InstanceLimiter`]), and its deadline, checked on
//! every host call ([`HostCalls`]).
//!
//! Process scope (engine, linkers, compiled components) lives in the runtime; tenant scope
//! (limits, bindings, validated config) in the [`CallScope`], shared read-only; instance scope
//! here. Nothing in an `InstanceData` survives the call, unless the provider lets an instance
//! serve later calls of the same tenant ([`crate::kept`]): its scope is then rebound to each.

use std::sync::Arc;
use std::time::Instant;

use greentic_bundle::Limits;
use greentic_capabilities::outbound::OutboundPolicy;
use greentic_capabilities::{CallScope, HasImports, ImportLimits, Imports};
use wasmtime_wasi::{WasiCtxView, WasiView};

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
pub struct InstanceData {
    /// The host side of its imports, and who the call is for.
    pub imports: Imports,
    /// The calling tenant's limits.
    pub limits: Limits,
    /// Memory and table cap.
    pub limiter: InstanceLimiter,
    /// When the call must end; host calls past it trap (see [`InstanceData::check_deadline`]).
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
impl wasmtime::CallHookHandler<InstanceData> for HostCalls {
    async fn handle_call_event(
        &self,
        mut cx: wasmtime::StoreContextMut<'_, InstanceData>,
        hook: wasmtime::CallHook,
    ) -> wasmtime::Result<()> {
        if !matches!(hook, wasmtime::CallHook::CallingHost) {
            return Ok(());
        }
        let state = cx.data_mut();
        // One clock read for both checks: a guest may make thousands of host calls a call.
        let now = Instant::now();
        state.check_deadline(now)?;
        if now.duration_since(state.last_yield) >= HOST_SLICE {
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

impl InstanceData {
    /// Fresh data for one instance of the call in `scope`, of a provider with `outbound`
    /// policy, under `limits`, ending at `deadline`.
    pub fn new(
        scope: Arc<CallScope>,
        outbound: OutboundPolicy,
        limits: Limits,
        deadline: Instant,
    ) -> InstanceData {
        let bounds = ImportLimits {
            max_resources: limits.max_resources,
            host_memory_bytes: limits.host_memory_bytes,
            max_outgoing_requests: limits.max_outgoing_requests,
        };
        InstanceData {
            imports: Imports::new(scope, outbound, bounds),
            limits,
            limiter: InstanceLimiter::new(limits.memory_bytes),
            deadline,
            last_yield: Instant::now(),
        }
    }

    /// Hands the instance that served an earlier call of the same tenant to the call in
    /// `scope`, of a provider with `outbound` policy, ending at `deadline`.
    pub fn rebind(&mut self, scope: Arc<CallScope>, outbound: OutboundPolicy, deadline: Instant) {
        self.imports.rebind(scope, outbound);
        self.deadline = deadline;
        self.last_yield = Instant::now();
    }

    /// Fails once the call's deadline has passed (as of `now`). Installed as the store's call
    /// hook, it runs on every call into the host, so a guest that keeps the host busy (host
    /// calls in a loop) is stopped at its deadline even when it consumes little fuel between
    /// them.
    pub fn check_deadline(&self, now: Instant) -> wasmtime::Result<()> {
        if now >= self.deadline {
            return Err(wasmtime::Error::new(DeadlineHit));
        }
        Ok(())
    }
}

impl WasiView for InstanceData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.imports.ctx()
    }
}

impl HasImports for InstanceData {
    fn imports(&mut self) -> &mut Imports {
        &mut self.imports
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
