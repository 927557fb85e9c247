//! Instances kept between calls of one tenant: for providers whose manifest says
//! `"instances": "per-tenant"`, an instance whose call ended cleanly may serve the next call of
//! the same tenant, of the same provider, on the same revision — never another tenant's,
//! never another revision's — instead of a fresh one being made for it.
//!
//! An idle instance keeps its place on the engine (a `CapacityPermit`): the pool slot it
//! occupies is not free for another call. So idle instances are few (`[host] kept_instances`,
//! by default a quarter of `max_in_flight` and at most 256), short-lived ([`IDLE_FOR`] idle,
//! [`LIVE_FOR`] in all, [`CALLS_PER_INSTANCE`] calls), and the first to go: a call that finds
//! the engine full takes the place of the longest-idle one ([`KeptInstances::evict_oldest`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::domains::Kept;

/// A call's place on an engine (the engine's `CapacityPermit`), which an idle instance holds.
type CapacityPermit = tokio::sync::OwnedSemaphorePermit;

/// How long an instance may stay idle before it is dropped.
pub const IDLE_FOR: Duration = Duration::from_secs(10);
/// How long an instance may live in all, however busy: what it caches (a secret it read, a
/// parsed configuration) is at most this old.
pub const LIVE_FOR: Duration = Duration::from_secs(60);
/// How many calls one instance may serve.
pub const CALLS_PER_INSTANCE: u32 = 10_000;
/// The most idle instances by default, whatever the engine's size.
pub const DEFAULT_MAX_IDLE: usize = 256;

/// Who an instance may serve: one revision's provider, for one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeptFor {
    /// The revision's serial ([`crate::revision::Revision::serial`]).
    pub revision: u64,
    /// The provider's name in that revision.
    pub provider: String,
    /// The tenant.
    pub tenant: String,
}

/// What an instance of a reusing provider has served.
#[derive(Debug, Clone, Copy)]
pub struct Book {
    /// Its serial (unique in the process; the call's span carries it as
    /// `greentic.instance.id`).
    pub serial: u64,
    /// When it was made.
    pub born: Instant,
    /// Calls it has served, the one running included.
    pub calls: u32,
}

impl Book {
    /// A new instance's bookkeeping.
    pub fn new() -> Book {
        static SERIAL: AtomicU64 = AtomicU64::new(1);
        Book {
            serial: SERIAL.fetch_add(1, Ordering::Relaxed),
            born: Instant::now(),
            calls: 0,
        }
    }

    /// Whether the instance may serve another call (as of `now`).
    pub fn fresh_enough(&self, now: Instant) -> bool {
        self.calls < CALLS_PER_INSTANCE && now.duration_since(self.born) < LIVE_FOR
    }
}

impl Default for Book {
    fn default() -> Book {
        Book::new()
    }
}

/// An instance of a finished call, and what it has served.
pub struct Reusable {
    /// The store and the instance.
    pub kept: Kept,
    /// What it has served.
    pub book: Book,
}

impl Reusable {
    fn fresh_enough(&self, now: Instant) -> bool {
        self.book.fresh_enough(now)
    }
}

struct Idle {
    instance: Reusable,
    place: CapacityPermit,
    since: Instant,
}

/// The idle instances of an engine, by whom they may serve.
pub struct KeptInstances {
    idle: Mutex<HashMap<KeptFor, Vec<Idle>>>,
    count: AtomicUsize,
    /// Calls waiting for a place on the engine: while there are any, no instance is kept (its
    /// place goes to them).
    waiting: AtomicUsize,
    max: AtomicUsize,
    default_max: usize,
}

impl KeptInstances {
    /// At most `default_max` idle instances until [`KeptInstances::set_max`] says otherwise.
    pub fn new(default_max: usize) -> KeptInstances {
        KeptInstances {
            idle: Mutex::new(HashMap::new()),
            count: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            max: AtomicUsize::new(default_max),
            default_max,
        }
    }

    /// Sets the most idle instances (`None`: the engine's default); `0` keeps none. Idle
    /// instances past the new bound are dropped.
    pub fn set_max(&self, max: Option<u32>) {
        let max = max.map_or(self.default_max, |m| m as usize);
        self.max.store(max, Ordering::Relaxed);
        while self.count.load(Ordering::Relaxed) > max {
            if self.evict_oldest().is_none() {
                break;
            }
        }
    }

    /// Whether instances are kept at all.
    pub fn enabled(&self) -> bool {
        self.max.load(Ordering::Relaxed) > 0
    }

    /// Idle instances now.
    pub fn idle(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// An idle instance for `whom`, with its place on the engine: the most recently used one
    /// (its memory the likeliest to be warm).
    pub fn take(&self, whom: &KeptFor) -> Option<(Reusable, CapacityPermit)> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let now = Instant::now();
        let mut stale = Vec::new();
        let found = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let list = idle.get_mut(whom)?;
            let mut found = None;
            while let Some(entry) = list.pop() {
                self.count.fetch_sub(1, Ordering::Relaxed);
                if now.duration_since(entry.since) < IDLE_FOR && entry.instance.fresh_enough(now) {
                    found = Some(entry);
                    break;
                }
                stale.push(entry);
            }
            // An emptied list stays for the instance's return (no key to copy then); the
            // sweep removes it if none comes.
            found
        };
        // Stores are dropped outside the lock.
        drop(stale);
        found.map(|entry| (entry.instance, entry.place))
    }

    /// Keeps `instance` (whose call ended cleanly) for the next call of `whom`, holding
    /// `place`; dropped instead when it has served its share, or the engine keeps as many
    /// idle instances as it may, or `whom` has `per_key` idle already.
    pub fn put(&self, whom: &KeptFor, instance: Reusable, place: CapacityPermit, per_key: usize) {
        let now = Instant::now();
        if !instance.fresh_enough(now) {
            return;
        }
        let mut stale = Vec::new();
        let mut refused = None;
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let max = if self.waiting.load(Ordering::SeqCst) > 0 {
                0
            } else {
                self.max.load(Ordering::Relaxed)
            };
            if self.count.load(Ordering::Relaxed) >= max {
                // Full: make room from what has been idle too long, else keep none more.
                self.sweep_locked(&mut idle, now, &mut stale);
            }
            if !idle.contains_key(whom) {
                idle.insert(whom.clone(), Vec::new());
            }
            let Some(list) = idle.get_mut(whom) else {
                return;
            };
            if self.count.load(Ordering::Relaxed) >= max || list.len() >= per_key.max(1) {
                refused = Some((instance, place));
            } else {
                list.push(Idle {
                    instance,
                    place,
                    since: now,
                });
                self.count.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(stale);
        drop(refused);
    }

    /// Counts a call waiting for a place on the engine while `wait` runs: meanwhile no instance
    /// is kept, and one kept just before the call began to wait gives its place up to it.
    pub async fn waiting<T>(&self, wait: impl Future<Output = T>) -> T {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        // An instance kept before the count above was seen (under the same lock as this).
        while self.evict_oldest().is_some() {}
        wait.await
    }

    /// Drops the instance idle the longest, giving its place back; `None` when none is idle.
    pub fn evict_oldest(&self) -> Option<()> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let evicted = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let key = idle
                .iter()
                .filter_map(|(k, list)| list.first().map(|e| (k, e.since)))
                .min_by_key(|(_, since)| *since)
                .map(|(k, _)| k.clone())?;
            let list = idle.get_mut(&key)?;
            let entry = list.remove(0);
            if list.is_empty() {
                idle.remove(&key);
            }
            self.count.fetch_sub(1, Ordering::Relaxed);
            entry
        };
        drop(evicted);
        Some(())
    }

    /// Drops the instances idle too long or past their life, and those of revisions for
    /// which `gone` is true.
    pub fn sweep(&self, gone: impl Fn(u64) -> bool) {
        let now = Instant::now();
        let mut stale = Vec::new();
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|whom, list| {
                if gone(whom.revision) {
                    self.count.fetch_sub(list.len(), Ordering::Relaxed);
                    stale.append(list);
                    return false;
                }
                true
            });
            self.sweep_locked(&mut idle, now, &mut stale);
        }
        drop(stale);
    }

    fn sweep_locked(
        &self,
        idle: &mut HashMap<KeptFor, Vec<Idle>>,
        now: Instant,
        stale: &mut Vec<Idle>,
    ) {
        idle.retain(|_, list| {
            let before = list.len();
            let (keep, drop): (Vec<Idle>, Vec<Idle>) =
                std::mem::take(list).into_iter().partition(|e| {
                    now.duration_since(e.since) < IDLE_FOR && e.instance.fresh_enough(now)
                });
            *list = keep;
            self.count.fetch_sub(before - list.len(), Ordering::Relaxed);
            stale.extend(drop);
            !list.is_empty()
        });
    }
}
