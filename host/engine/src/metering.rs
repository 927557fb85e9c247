//! What bounds a call's and a tenant's CPU (`[host] metering`).
//!
//! - **`fuel`** (the default): one unit per Wasm operator, counted by code the engine compiles
//!   into the guest. A call stops at `fuel_per_call`; a tenant's bucket refills at
//!   `fuel_per_second`. The same call uses the same fuel on every machine and under any load:
//!   budgets are deterministic. Guests yield every [`crate::compile::YIELD_FUEL`] units.
//! - **`cpu-time`**: no fuel; epochs (a tick every [`CPU_TIME_TICK`]) make guests yield and let
//!   deadlines fire, and at every tick the call's CPU time — read from the thread's CPU clock
//!   around each poll of the call, so time spent waiting and time other threads ran is not
//!   counted — is checked against `cpu_ms_per_call`; a tenant's bucket refills at
//!   `cpu_ms_per_second`. Cheaper than fuel (the guest's code carries an epoch check per loop
//!   and call instead of a fuel count per block), but what a budget buys depends on the
//!   machine and on what else runs on its cores, and a call is stopped up to one tick late.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use greentic_bundle::Limits;
pub use greentic_bundle::Metering;
use wasmtime::{Store, UpdateDeadline};

use crate::scheduler::thread_cpu;

/// How often the epoch advances on a `cpu-time` engine: how late a call past its CPU budget
/// (or its deadline) is stopped, and how long a guest runs between yields.
pub const CPU_TIME_TICK: Duration = Duration::from_millis(1);

/// A tenant's CPU budget in the units its host meters: fuel, or CPU nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// What one call may use.
    pub per_call: u64,
    /// What the tenant's calls may use per second together.
    pub per_second: u64,
    /// The units.
    pub metering: Metering,
}

impl Budget {
    /// The budget `limits` give under `metering`.
    pub fn of(limits: &Limits, metering: Metering) -> Budget {
        match metering {
            Metering::Fuel => Budget {
                per_call: limits.fuel_per_call,
                per_second: limits.fuel_per_second,
                metering,
            },
            Metering::CpuTime => Budget {
                per_call: limits.cpu_ms_per_call.saturating_mul(1_000_000),
                per_second: limits.cpu_ms_per_second.saturating_mul(1_000_000),
                metering,
            },
        }
    }

    /// `amount` of these units in words, for messages.
    pub fn describe(&self, amount: u64) -> String {
        match self.metering {
            Metering::Fuel => format!("fuel {amount}"),
            Metering::CpuTime => format!("{} ms of CPU", amount / 1_000_000),
        }
    }
}

/// A call stopped for using its CPU time (`cpu_ms_per_call`).
#[derive(Debug, thiserror::Error)]
#[error("the call used its CPU time ({0} ms)")]
pub struct CpuLimitHit(pub u64);

/// The CPU time one call has used, measured on the threads that poll it.
#[derive(Debug)]
pub struct CpuMeter {
    /// CPU nanoseconds of the call's finished polls.
    total_ns: AtomicU64,
    /// The polling thread's CPU clock when the current poll began.
    poll_start_ns: AtomicU64,
    /// The call's budget, in nanoseconds.
    limit_ns: u64,
}

impl CpuMeter {
    /// A meter for a call that may use `limit_ns` CPU nanoseconds.
    pub fn new(limit_ns: u64) -> Arc<CpuMeter> {
        Arc::new(CpuMeter {
            total_ns: AtomicU64::new(0),
            poll_start_ns: AtomicU64::new(0),
            limit_ns,
        })
    }

    /// CPU time of the call's finished polls.
    pub fn used(&self) -> Duration {
        Duration::from_nanos(self.total_ns.load(Ordering::Relaxed))
    }

    /// CPU nanoseconds used so far, the current poll's included: called on the polling thread.
    pub(crate) fn used_now(&self) -> u64 {
        let now = thread_cpu().as_nanos() as u64;
        self.total_ns.load(Ordering::Relaxed)
            + now.saturating_sub(self.poll_start_ns.load(Ordering::Relaxed))
    }

    /// Makes `store`'s guest yield at every epoch tick, and stop with [`CpuLimitHit`] once the
    /// call is past its budget.
    pub fn install<T: 'static>(self: &Arc<Self>, store: &mut Store<T>) {
        let meter = self.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if meter.used_now() > meter.limit_ns {
                return Err(CpuLimitHit(meter.limit_ns / 1_000_000).into());
            }
            Ok(UpdateDeadline::Yield(1))
        });
    }
}

/// `F`, with the CPU time of each of its polls added to a [`CpuMeter`] (or, without one, just
/// `F`).
pub struct Metered<F> {
    inner: F,
    meter: Option<Arc<CpuMeter>>,
}

impl<F> Metered<F> {
    /// `inner`, measured by `meter` if there is one.
    pub fn new(inner: F, meter: Option<Arc<CpuMeter>>) -> Metered<F> {
        Metered { inner, meter }
    }
}

impl<F: Future + Unpin> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(meter) = self.meter.clone() else {
            return Pin::new(&mut self.inner).poll(cx);
        };
        let start = thread_cpu().as_nanos() as u64;
        meter.poll_start_ns.store(start, Ordering::Relaxed);
        let out = Pin::new(&mut self.inner).poll(cx);
        let used = (thread_cpu().as_nanos() as u64).saturating_sub(start);
        meter.total_ns.fetch_add(used, Ordering::Relaxed);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_in_the_units_of_the_metering() {
        let limits = Limits {
            fuel_per_call: 7,
            fuel_per_second: 70,
            cpu_ms_per_call: 3,
            cpu_ms_per_second: 30,
            ..Limits::default()
        };
        let fuel = Budget::of(&limits, Metering::Fuel);
        assert_eq!((fuel.per_call, fuel.per_second), (7, 70));
        let cpu = Budget::of(&limits, Metering::CpuTime);
        assert_eq!((cpu.per_call, cpu.per_second), (3_000_000, 30_000_000));
        assert_eq!(cpu.describe(3_000_000), "3 ms of CPU");
    }

    #[tokio::test]
    async fn a_metered_future_counts_the_cpu_of_its_polls_not_its_waits() {
        let meter = CpuMeter::new(u64::MAX);
        let work = Box::pin(async {
            let until = thread_cpu() + Duration::from_millis(20);
            while thread_cpu() < until {}
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        Metered::new(work, Some(meter.clone())).await;
        let used = meter.used();
        assert!(
            used >= Duration::from_millis(20) && used < Duration::from_millis(60),
            "{used:?}"
        );
    }
}
