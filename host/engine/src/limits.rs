//! Per-tenant admission: a concurrency cap with a bounded wait, and a fuel token bucket.
//!
//! A call first takes one of the tenant's `max_concurrent` slots (waiting at most
//! `queue_timeout_ms`), then reserves `fuel_per_call` from a bucket that refills at
//! `fuel_per_second` (waiting for the rest of the queue time). After the call the unused part of
//! the reservation goes back. One tenant's flood therefore waits on its own limits and cannot
//! take CPU or slots from others.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use greentic_bundle::Limits;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::errors::CallError;

/// A tenant's admission state.
#[derive(Debug)]
pub struct TenantGate {
    tenant: String,
    scope: String,
    limits: Limits,
    slots: Arc<Semaphore>,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: u64,
    last: Instant,
}

/// An admitted call. Hand back the fuel it used with [`Permit::settle`].
#[derive(Debug)]
pub struct Permit {
    _slot: OwnedSemaphorePermit,
    gate: Arc<TenantGate>,
    reserved: u64,
}

impl TenantGate {
    /// A gate for `tenant` with `limits`; the bucket starts full.
    pub fn new(tenant: &str, limits: Limits) -> Arc<TenantGate> {
        TenantGate::scoped(tenant, tenant, limits)
    }

    /// A gate for `tenant` that admits one kind of its calls (`scope`, e.g. its deliveries to
    /// one webhook provider), apart from its others.
    pub fn scoped(tenant: &str, scope: &str, limits: Limits) -> Arc<TenantGate> {
        Arc::new(TenantGate {
            tenant: tenant.to_string(),
            scope: scope.to_string(),
            limits,
            slots: Arc::new(Semaphore::new(limits.max_concurrent as usize)),
            bucket: Mutex::new(Bucket {
                tokens: limits.fuel_per_second,
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
        let need = self.limits.fuel_per_call;
        loop {
            let wait = {
                let mut b = self.bucket.lock().expect("bucket lock");
                self.refill(&mut b);
                if b.tokens >= need {
                    b.tokens -= need;
                    None
                } else {
                    let missing = need - b.tokens;
                    Some(Duration::from_secs_f64(
                        missing as f64 / self.limits.fuel_per_second as f64,
                    ))
                }
            };
            let Some(wait) = wait else {
                return Ok(Permit {
                    _slot: slot,
                    gate: self.clone(),
                    reserved: need,
                });
            };
            let now = Instant::now();
            if now + wait > deadline {
                return Err(busy(format!(
                    "fuel budget of {} per second used up",
                    self.limits.fuel_per_second
                )));
            }
            tokio::time::sleep(wait).await;
        }
    }

    fn refill(&self, b: &mut Bucket) {
        let now = Instant::now();
        let elapsed = now.duration_since(b.last).as_secs_f64();
        let add = (elapsed * self.limits.fuel_per_second as f64) as u64;
        if add > 0 {
            b.tokens = (b.tokens + add).min(self.limits.fuel_per_second);
            b.last = now;
        }
    }

    /// Fuel currently in the bucket (for metrics and tests).
    pub fn available_fuel(&self) -> u64 {
        let mut b = self.bucket.lock().expect("bucket lock");
        self.refill(&mut b);
        b.tokens
    }
}

impl Permit {
    /// Returns the unused part of the reservation; `used` is the fuel the call consumed.
    pub fn settle(self, used: u64) {
        let refund = self.reserved.saturating_sub(used);
        if refund > 0 {
            let mut b = self.gate.bucket.lock().expect("bucket lock");
            b.tokens = (b.tokens + refund).min(self.gate.limits.fuel_per_second);
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
    async fn the_fuel_bucket_limits_rate_and_refunds_unused_fuel() {
        // Bucket of 100/s, calls reserve 60: the second call cannot start at once.
        let gate = TenantGate::new("t", limits(10, 10, 60, 100));
        let a = gate.acquire().await.unwrap();
        let e = gate.acquire().await.unwrap_err();
        assert!(e.to_string().contains("fuel budget"), "{e}");
        a.settle(5); // used 5 of 60: 55 back
        assert!(gate.available_fuel() >= 95);
        gate.acquire().await.unwrap();
    }
}
