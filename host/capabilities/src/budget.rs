//! What one call may make the host hold or do on its behalf, outside the guest's own memory.
//!
//! A guest's linear memory and tables are capped by the tenant's `memory_bytes` (the
//! engine's instance limiter). Everything the host allocates *for* the
//! guest lives outside that cap: `wasi:http` requests, their headers and buffered bodies,
//! connections in flight, telemetry. [`HostBudget`] counts those bytes against the tenant's
//! `host_memory_bytes` per call: each host resource the guest owns carries a charge (set when it
//! is created or grows, given back when it is dropped or consumed), and a connection in flight
//! carries a [`Charge`] that is given back when the connection ends, on whichever thread that
//! happens. A charge that would pass the budget ends the call with `resource-limit`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What a call tried to take past one of its host-side budgets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceLimitHit {
    /// Host memory held for the call (`host_memory_bytes`).
    #[error(
        "the call made the host hold more than {limit} bytes on its behalf ({what}); raise the tenant's host_memory_bytes if this is expected"
    )]
    HostMemory {
        /// The budget.
        limit: u64,
        /// What was being allocated.
        what: &'static str,
    },
    /// Host resources (handles) alive at once (`max_resources`).
    #[error(
        "the call held more than {limit} host resources (handles) at once; raise the tenant's max_resources if this is expected"
    )]
    Resources {
        /// The cap.
        limit: usize,
    },
}

/// Counts the host memory one call holds, against its budget. Lives in the call's store.
#[derive(Debug)]
pub struct HostBudget {
    shared: SharedBudget,
    /// Charges of host resources the guest holds, by resource representation.
    charges: HashMap<u32, u64>,
}

/// The part of a [`HostBudget`] other threads may charge (connections in flight).
#[derive(Debug, Clone)]
pub struct SharedBudget {
    limit: u64,
    used: Arc<AtomicU64>,
    hit: Arc<AtomicBool>,
}

/// Bytes taken from a [`SharedBudget`], given back on drop.
#[derive(Debug)]
pub struct Charge {
    used: Arc<AtomicU64>,
    bytes: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl SharedBudget {
    /// Takes `bytes` for `what`, or fails (and remembers that the budget was hit).
    pub fn try_charge(&self, bytes: u64, what: &'static str) -> Result<Charge, ResourceLimitHit> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let next = used.saturating_add(bytes);
            if next > self.limit {
                self.hit.store(true, Ordering::Relaxed);
                return Err(ResourceLimitHit::HostMemory {
                    limit: self.limit,
                    what,
                });
            }
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Ok(Charge {
                        used: self.used.clone(),
                        bytes,
                    });
                }
                Err(now) => used = now,
            }
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether a charge was ever refused.
    pub fn was_hit(&self) -> bool {
        self.hit.load(Ordering::Relaxed)
    }
}

impl HostBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> HostBudget {
        HostBudget {
            shared: SharedBudget {
                limit,
                used: Arc::new(AtomicU64::new(0)),
                hit: Arc::new(AtomicBool::new(false)),
            },
            charges: HashMap::new(),
        }
    }

    /// The handle connections in flight charge through.
    pub fn shared(&self) -> &SharedBudget {
        &self.shared
    }

    /// Sets the charge of the host resource `rep` to `bytes` (replacing what it carried), or
    /// fails, leaving its old charge, when the budget would be passed.
    pub fn set(
        &mut self,
        rep: u32,
        bytes: u64,
        what: &'static str,
    ) -> Result<(), ResourceLimitHit> {
        let old = self.charges.get(&rep).copied().unwrap_or(0);
        if bytes > old {
            let grow = bytes - old;
            let used = self.shared.used.load(Ordering::Relaxed);
            if used.saturating_add(grow) > self.shared.limit {
                self.shared.hit.store(true, Ordering::Relaxed);
                return Err(ResourceLimitHit::HostMemory {
                    limit: self.shared.limit,
                    what,
                });
            }
            self.shared.used.fetch_add(grow, Ordering::Relaxed);
        } else {
            self.shared.used.fetch_sub(old - bytes, Ordering::Relaxed);
        }
        self.charges.insert(rep, bytes);
        Ok(())
    }

    /// Gives back the charge of `rep` (dropped or consumed); returns what it carried.
    pub fn release(&mut self, rep: u32) -> u64 {
        let bytes = self.charges.remove(&rep).unwrap_or(0);
        self.shared.used.fetch_sub(bytes, Ordering::Relaxed);
        bytes
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.shared.used()
    }

    /// Whether a charge was ever refused in this call.
    pub fn was_hit(&self) -> bool {
        self.shared.was_hit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_set_replaced_and_given_back() {
        let mut b = HostBudget::new(1000);
        b.set(1, 400, "a").unwrap();
        b.set(2, 500, "b").unwrap();
        assert_eq!(b.used(), 900);
        let e = b.set(3, 200, "fields").unwrap_err();
        assert!(e.to_string().contains("1000 bytes"), "{e}");
        assert!(e.to_string().contains("fields"), "{e}");
        assert!(b.was_hit());
        // Shrinking and replacing adjust the total; the refused charge left nothing behind.
        b.set(1, 100, "a").unwrap();
        assert_eq!(b.used(), 600);
        assert_eq!(b.release(2), 500);
        assert_eq!(b.used(), 100);
        assert_eq!(b.release(2), 0, "a second release gives nothing back");
        b.set(3, 900, "c").unwrap();
        assert_eq!(b.used(), 1000);
    }

    #[test]
    fn shared_charges_come_back_when_dropped_on_any_thread() {
        let b = HostBudget::new(100);
        let shared = b.shared().clone();
        let c = shared.try_charge(60, "connection").unwrap();
        assert!(shared.try_charge(60, "connection").is_err());
        std::thread::spawn(move || drop(c)).join().unwrap();
        assert_eq!(b.used(), 0);
        let _again = shared.try_charge(60, "connection").unwrap();
        assert_eq!(b.used(), 60);
    }
}
