//! One attempt's store — the call's scope, the tenant's limits, regular yields, the deadline
//! checked on every host call — and what its outcome means.

use std::sync::Arc;
use std::time::Instant;

use greentic_bundle::Limits;
use greentic_capabilities::CallScope;
use greentic_capabilities::budget::ResourceLimitHit;
use greentic_capabilities::outbound::OutboundPolicy;
use wasmtime::{Store, Trap};

use super::Runtime;
use crate::compile::{EngineOptions, HostEngine, MAPS_PER_CALL, YIELD_FUEL};
use crate::domain::Output;
use crate::errors::{CallError, clip_guest};
use crate::instance::{DeadlineHit, InstanceData, MemoryLimitHit};
use crate::metering::{CpuLimitHit, CpuMeter};

impl Runtime {
    /// A fresh store for one call: the call's scope and outbound policy, the tenant's limits
    /// (memory cap, host budgets, fuel), regular yields, and the deadline checked on every
    /// call into the host.
    pub(super) fn call_store(
        engine: &HostEngine,
        scope: Arc<CallScope>,
        outbound: &OutboundPolicy,
        limits: &Limits,
        deadline: Instant,
        meter: Option<&Arc<CpuMeter>>,
    ) -> Result<Store<InstanceData>, CallError> {
        let mut store = Store::new(
            &engine.engine,
            InstanceData::new(scope, outbound.clone(), *limits, deadline),
        );
        store.limiter(|s| &mut s.limiter);
        store.call_hook_async(crate::instance::HostCalls);
        if engine.options.fuel {
            store
                .set_fuel(limits.fuel_per_call)
                .map_err(|e| CallError::Internal(e.to_string()))?;
        }
        yield_regularly(&mut store, &engine.options);
        if let Some(meter) = meter {
            meter.install(&mut store);
        }
        Ok(store)
    }

    /// The store of an instance kept from an earlier call of the same tenant, made ready for
    /// the next: the call's scope and outbound policy, its fuel and deadline, regular yields.
    /// The memory cap stays (same tenant, same revision, same limits).
    pub(super) fn rebound_store(
        engine: &HostEngine,
        store: &mut Store<InstanceData>,
        scope: Arc<CallScope>,
        outbound: &OutboundPolicy,
        limits: &Limits,
        deadline: Instant,
        meter: Option<&Arc<CpuMeter>>,
    ) -> Result<(), CallError> {
        store.data_mut().rebind(scope, outbound.clone(), deadline);
        if engine.options.fuel {
            store
                .set_fuel(limits.fuel_per_call)
                .map_err(|e| CallError::Internal(e.to_string()))?;
        }
        yield_regularly(store, &engine.options);
        if let Some(meter) = meter {
            meter.install(store);
        }
        Ok(())
    }
}

/// What one attempt in `store` came to, and what it used: fuel, or (metered by `meter`) CPU
/// nanoseconds.
pub(super) fn outcome(
    result: Result<wasmtime::Result<Result<Output, CallError>>, tokio::time::error::Elapsed>,
    store: &Store<InstanceData>,
    limits: &Limits,
    meter: Option<&Arc<CpuMeter>>,
) -> (Result<Output, CallError>, u64) {
    let used = match meter {
        Some(meter) => meter.used_now(),
        None => limits
            .fuel_per_call
            .saturating_sub(store.get_fuel().unwrap_or(0)),
    };
    greentic_capabilities::report_usage(&store.data().imports);
    let mapped = match result {
        Err(_elapsed) => Err(CallError::DeadlineExceeded(limits.deadline_ms)),
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => Err(classify(&e, store.data())),
    };
    (mapped, used)
}

/// Makes the guest yield to the async executor every [`YIELD_FUEL`] units of fuel (and at
/// every epoch tick on engines built with epochs).
///
/// A CPU-bound guest then never holds an executor thread for long, so other tenants' calls
/// (and health checks) keep being served; the call's deadline is enforced by the
/// `tokio::time::timeout` around it, which drops the call at its next yield.
pub(super) fn yield_regularly(store: &mut Store<InstanceData>, options: &EngineOptions) {
    if options.fuel {
        // Only fails when fuel is off, which `options.fuel` rules out.
        let _ = store.fuel_async_yield_interval(Some(YIELD_FUEL));
    }
    if options.epoch {
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
    }
}

/// The operating system refused the host memory or a mapping (`ENOMEM`: `vm.max_map_count`
/// reached — each call in flight holds up to [`MAPS_PER_CALL`] — or memory itself) somewhere
/// in `e`: the host's condition, as a full pool is, and another host may serve the call.
fn refused_by_the_system(e: &wasmtime::Error) -> Option<CallError> {
    let enomem = e.chain().any(|c| {
        c.downcast_ref::<rustix::io::Errno>() == Some(&rustix::io::Errno::NOMEM)
            || c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.raw_os_error() == Some(libc::ENOMEM))
    });
    enomem.then(|| CallError::HostAtCapacity {
        detail: format!(
            "the operating system refused the host memory or a memory mapping (ENOMEM): raise vm.max_map_count (a call in flight holds up to {MAPS_PER_CALL} mappings) or lower [host] max_in_flight"
        ),
        retry_after_ms: 1_000,
    })
}

/// Maps a wasmtime error (trap or limit) of the call in `state` to a call error.
pub(super) fn classify(e: &wasmtime::Error, state: &InstanceData) -> CallError {
    let limits = &state.limits;
    if state.limiter.hit || e.downcast_ref::<MemoryLimitHit>().is_some() {
        return CallError::MemoryLimit(limits.memory_bytes);
    }
    if let Some(hit) = e.downcast_ref::<ResourceLimitHit>() {
        return CallError::ResourceLimit(hit.to_string());
    }
    if state.imports.budget.was_hit() {
        return CallError::ResourceLimit(
            ResourceLimitHit::HostMemory {
                limit: limits.host_memory_bytes,
                what: "wasi:http resources",
            }
            .to_string(),
        );
    }
    if e.chain().any(|c| {
        matches!(
            c.downcast_ref::<wasmtime::component::ResourceTableError>(),
            Some(wasmtime::component::ResourceTableError::Full)
        )
    }) {
        return CallError::ResourceLimit(
            ResourceLimitHit::Resources {
                limit: limits.max_resources as usize,
            }
            .to_string(),
        );
    }
    // A resource of the instance pool ran out (instances, memories, tables, async stacks):
    // the host's condition, never the provider's fault.
    if let Some(limit) = e
        .chain()
        .find_map(|c| c.downcast_ref::<wasmtime::PoolConcurrencyLimitError>())
    {
        return CallError::HostAtCapacity {
            detail: format!("instance pool: {limit}; raise [host] max_in_flight"),
            retry_after_ms: 1_000,
        };
    }
    if let Some(refused) = refused_by_the_system(e) {
        return refused;
    }
    if let Some(CpuLimitHit(ms)) = e.downcast_ref::<CpuLimitHit>() {
        return CallError::CpuExhausted(*ms);
    }
    if e.downcast_ref::<DeadlineHit>().is_some() {
        return CallError::DeadlineExceeded(limits.deadline_ms);
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => CallError::FuelExhausted(limits.fuel_per_call),
        Some(Trap::Interrupt) => CallError::DeadlineExceeded(limits.deadline_ms),
        Some(Trap::StackOverflow) => {
            CallError::GuestTrap("stack overflow (unbounded recursion?)".into())
        }
        Some(trap) => CallError::GuestTrap(trap.to_string()),
        None => CallError::GuestTrap(clip_guest(format!("{e:#}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapping_the_system_refused_is_the_hosts_condition_not_the_guests() {
        // As Wasmtime reports an `mmap`/`mprotect` refused past vm.max_map_count.
        let e = wasmtime::Error::from(rustix::io::Errno::NOMEM).context("making memory accessible");
        let refused = refused_by_the_system(&e).expect("ENOMEM is the host's condition");
        assert_eq!(refused.code(), "host-at-capacity");
        assert!(
            refused.message().contains("vm.max_map_count"),
            "{}",
            refused.message()
        );
        let e = wasmtime::Error::from(std::io::Error::from_raw_os_error(libc::ENOMEM));
        assert!(refused_by_the_system(&e).is_some());
        // Other refusals and traps are not.
        let e = wasmtime::Error::from(rustix::io::Errno::ACCESS);
        assert!(refused_by_the_system(&e).is_none());
        assert!(
            refused_by_the_system(&wasmtime::Error::from(Trap::UnreachableCodeReached)).is_none()
        );
    }
}
