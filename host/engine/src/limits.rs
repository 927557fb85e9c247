//! Per-tenant admission: a concurrency cap with a bounded wait, and a fuel token bucket.
//!
//! A call first takes one of the tenant's `max_concurrent` slots (waiting at most
//! `queue_timeout_ms`), then waits (for the rest of the queue time) until the tenant's bucket,
//! refilled at `fuel_per_second`, holds fuel. What the call consumed is charged when it ends, and
//! a call that consumed more than was left leaves a debt the next calls wait out — as the
//! fleet's leases do. So a call waiting on an upstream costs its tenant no fuel while it waits
//! (reserving `fuel_per_call` up front let a tenant start only `fuel_per_second /
//! fuel_per_call` waiting calls a second), and over any T seconds a tenant consumes at most
//! `fuel_per_second × (T + 1)` plus what its calls in flight consume before they are charged (at
//! most `max_concurrent × fuel_per_call`). A call dropped before it is charged (its client went
//! away) is charged its whole `fuel_per_call`. One tenant's flood therefore waits on its own
//! limits and cannot take CPU or slots from others.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use greentic_bundle::Limits;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::errors::CallError;
use crate::metering::{Budget, Metering};

/// A tenant's admission state.
#[derive(Debug)]
pub struct TenantGate {
    tenant: String,
    scope: String,
    limits: Limits,
    /// The bucket's units: fuel, or CPU nanoseconds (`[host] metering`).
    budget: Budget,
    slots: Arc<Semaphore>,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Fuel left this second; negative while calls that consumed more are paid for.
    tokens: i64,
    last: Instant,
}

/// An admitted call. Charge what it used with [`Permit::settle`]; dropped unsettled, it is
/// charged its whole per-call budget.
#[derive(Debug)]
pub struct Permit {
    _slot: OwnedSemaphorePermit,
    gate: Arc<TenantGate>,
    charged: bool,
}

impl TenantGate {
    /// A gate for `tenant` with `limits`; the bucket starts full.
    pub fn new(tenant: &str, limits: Limits) -> Arc<TenantGate> {
        TenantGate::scoped(tenant, tenant, limits)
    }

    /// A gate for `tenant` that admits one kind of its calls (`scope`, e.g. its deliveries to
    /// one webhook provider), apart from its others; metered in fuel.
    pub fn scoped(tenant: &str, scope: &str, limits: Limits) -> Arc<TenantGate> {
        TenantGate::metered(tenant, scope, limits, Metering::Fuel)
    }

    /// [`TenantGate::scoped`], its bucket in the units of `metering`.
    pub fn metered(
        tenant: &str,
        scope: &str,
        limits: Limits,
        metering: Metering,
    ) -> Arc<TenantGate> {
        let budget = Budget::of(&limits, metering);
        Arc::new(TenantGate {
            tenant: tenant.to_string(),
            scope: scope.to_string(),
            limits,
            budget,
            slots: Arc::new(Semaphore::new(limits.max_concurrent as usize)),
            bucket: Mutex::new(Bucket {
                tokens: clamp(budget.per_second),
                last: Instant::now(),
            }),
        })
    }

    /// What the gate admits: the tenant's id for its invokes, `TENANT/webhook/PROVIDER` for
    /// its deliveries to one provider. Fleet-wide limits are kept per scope.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The tenant's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The tenant's CPU budget, in the units its bucket counts.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Admits a call, or fails with `tenant-busy` after `queue_timeout_ms`.
    pub async fn acquire(self: &Arc<Self>) -> Result<Permit, CallError> {
        let deadline = Instant::now() + Duration::from_millis(self.limits.queue_timeout_ms);
        let busy = |why: String| CallError::TenantBusy {
            tenant: self.tenant.clone(),
            why,
            retry_after_ms: self.limits.queue_timeout_ms.max(100),
        };
        let slot = match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await
        {
            Ok(Ok(slot)) => slot,
            _ => {
                return Err(busy(format!(
                    "{} calls already running",
                    self.limits.max_concurrent
                )));
            }
        };
        loop {
            let wait = {
                let mut b = self.bucket.lock().expect("bucket lock");
                self.refill(&mut b);
                if b.tokens > 0 {
                    None
                } else {
                    // Until the debt is paid and one unit is back.
                    let missing = 1 - b.tokens;
                    Some(Duration::from_secs_f64(
                        missing as f64 / self.budget.per_second.max(1) as f64,
                    ))
                }
            };
            let Some(wait) = wait else {
                return Ok(Permit {
                    _slot: slot,
                    gate: self.clone(),
                    charged: false,
                });
            };
            let now = Instant::now();
            if now + wait > deadline {
                return Err(busy(match self.budget.metering {
                    Metering::Fuel => format!(
                        "fuel budget of {} per second used up",
                        self.budget.per_second
                    ),
                    Metering::CpuTime => format!(
                        "CPU budget of {} ms per second used up",
                        self.limits.cpu_ms_per_second
                    ),
                }));
            }
            tokio::time::sleep(wait).await;
        }
    }

    fn refill(&self, b: &mut Bucket) {
        let now = Instant::now();
        let elapsed = now.duration_since(b.last).as_secs_f64();
        let add = (elapsed * self.budget.per_second as f64) as i64;
        if add > 0 {
            b.tokens = b
                .tokens
                .saturating_add(add)
                .min(clamp(self.budget.per_second));
            b.last = now;
        }
    }

    fn charge(&self, used: u64) {
        let mut b = self.bucket.lock().expect("bucket lock");
        self.refill(&mut b);
        b.tokens = b.tokens.saturating_sub(clamp(used));
    }

    /// Fuel in the bucket now: negative while a debt is paid (for metrics and tests).
    pub fn available_fuel(&self) -> i64 {
        let mut b = self.bucket.lock().expect("bucket lock");
        self.refill(&mut b);
        b.tokens
    }
}

/// `v` as a signed amount of fuel.
fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Permit {
    /// Charges the tenant's bucket with `used`, what the call consumed (fuel, or CPU
    /// nanoseconds).
    pub fn settle(mut self, used: u64) {
        self.gate.charge(used);
        self.charged = true;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.charged {
            self.gate.charge(self.gate.budget.per_call);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_concurrent: u32, queue_ms: u64, per_call: u64, per_sec: u64) -> Limits {
        Limits {
            max_concurrent,
            queue_timeout_ms: queue_ms,
            fuel_per_call: per_call,
            fuel_per_second: per_sec,
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn excess_calls_wait_then_get_busy() {
        let gate = TenantGate::new("t", limits(1, 50, 10, 1_000));
        let first = gate.acquire().await.unwrap();
        let e = gate.acquire().await.unwrap_err();
        assert_eq!(e.code(), "tenant-busy");
        assert!(e.to_string().contains("1 calls already running"), "{e}");
        first.settle(10);
        gate.acquire().await.unwrap();
    }

    #[tokio::test]
    async fn a_waiting_call_gets_the_slot_when_it_frees() {
        let gate = TenantGate::new("t", limits(1, 2_000, 10, 1_000));
        let first = gate.acquire().await.unwrap();
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.acquire().await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_fuel_bucket_charges_what_calls_use_and_waits_out_a_debt() {
        // Bucket of 100/s, up to 60 a call.
        let gate = TenantGate::new("t", limits(10, 10, 60, 100));
        // Calls that wait use next to nothing: many start at once.
        let waiting: Vec<_> = admit_many(&gate, 8).await;
        assert_eq!(waiting.len(), 8);
        for p in waiting {
            p.settle(1);
        }
        assert!(gate.available_fuel() >= 92, "{}", gate.available_fuel());
        // A call that used more than was left leaves a debt: the next waits it out.
        let a = gate.acquire().await.unwrap();
        a.settle(150);
        assert!(gate.available_fuel() < 0);
        let e = gate.acquire().await.unwrap_err();
        assert!(e.to_string().contains("fuel budget"), "{e}");
        tokio::time::sleep(Duration::from_millis(600)).await;
        gate.acquire().await.unwrap().settle(0);
    }

    #[tokio::test]
    async fn a_call_dropped_before_it_is_charged_costs_its_whole_budget() {
        let gate = TenantGate::new("t", limits(10, 10, 60, 100));
        drop(gate.acquire().await.unwrap());
        let left = gate.available_fuel();
        assert!((40..=45).contains(&left), "{left}");
    }

    async fn admit_many(gate: &Arc<TenantGate>, n: usize) -> Vec<Permit> {
        let mut permits = Vec::new();
        for _ in 0..n {
            permits.push(gate.acquire().await.unwrap());
        }
        permits
    }
}
