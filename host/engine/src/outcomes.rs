//! What calls came to, per revision and tenant: counts, failures and a latency histogram in
//! ten-second slots, kept an hour ([`Stats`]), summed over a span as a [`Summary`]. The runtime
//! records every judged call; a fleet compares a canary's summary with its baseline's.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Width of a slot.
const SLOT_MS: u64 = 10_000;
/// How long slots are kept (the longest window judged, and its baseline).
const KEEP_MS: u64 = 60 * 60 * 1000;
/// Latency buckets: upper bounds grow by this factor from [`FIRST_BOUND_MS`].
const GROWTH: f64 = 1.25;
const FIRST_BOUND_MS: f64 = 0.1;
const BUCKETS: usize = 64;

/// The upper bound (ms) of bucket `i` (the last bucket is unbounded).
fn bound_ms(i: usize) -> f64 {
    FIRST_BOUND_MS * GROWTH.powi(i as i32)
}

fn bucket_of(ms: f64) -> usize {
    if ms <= FIRST_BOUND_MS {
        return 0;
    }
    let i = ((ms / FIRST_BOUND_MS).ln() / GROWTH.ln()).ceil() as usize;
    i.min(BUCKETS - 1)
}

/// Calls, failures and a latency histogram over some span.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Calls that ended.
    pub calls: u64,
    /// Of those, failures of the provider (traps, limits, unavailable, timeouts).
    pub failures: u64,
    /// Calls per latency bucket (bounds grow by 1.25× from 0.1 ms); trailing zeroes dropped.
    pub buckets: Vec<u64>,
}

impl Summary {
    /// Adds `other` into this one.
    pub fn merge(&mut self, other: &Summary) {
        self.calls += other.calls;
        self.failures += other.failures;
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
    }

    /// Failures per call (0 without calls).
    pub fn error_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.failures as f64 / self.calls as f64
        }
    }

    /// The 99th percentile latency in ms (the upper bound of its bucket; 0 without calls).
    pub fn p99_ms(&self) -> f64 {
        let total: u64 = self.buckets.iter().sum();
        self.ranked(((total as f64) * 0.99).ceil() as u64).1
    }

    /// The bucket bounds (lower, upper, in ms) of the call of `rank` (1-based, by latency).
    fn ranked(&self, rank: u64) -> (f64, f64) {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return (0.0, 0.0);
        }
        let rank = rank.clamp(1, total);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let lower = if i == 0 { 0.0 } else { bound_ms(i - 1) };
                return (lower, bound_ms(i));
            }
        }
        (
            bound_ms(self.buckets.len() - 1),
            bound_ms(self.buckets.len()),
        )
    }

    /// The ranks around the p99 of `calls` calls that bound it with 95% confidence (the
    /// count above the true p99 is Binomial(n, 0.01)).
    fn p99_ranks(&self) -> (u64, u64) {
        let n = self.buckets.iter().sum::<u64>() as f64;
        let spread = Z95 * (n * 0.99 * 0.01).sqrt();
        (
            (n * 0.99 - spread).floor().max(1.0) as u64,
            (n * 0.99 + spread).ceil().min(n) as u64,
        )
    }

    /// A latency (ms) the p99 is at least, with 95% confidence: the lower bound of the bucket
    /// of the call ranked `⌊0.99 n − 1.645 √(0.0099 n)⌋`. One slow call among a few dozen
    /// does not raise it.
    pub fn p99_at_least_ms(&self) -> f64 {
        self.ranked(self.p99_ranks().0).0
    }

    /// A latency (ms) the p99 is at most, with 95% confidence: the upper bound of the bucket of
    /// the call ranked `⌈0.99 n + 1.645 √(0.0099 n)⌉`.
    pub fn p99_at_most_ms(&self) -> f64 {
        self.ranked(self.p99_ranks().1).1
    }
}

/// The one-sided z of a 95% confidence bound.
const Z95: f64 = 1.645;
#[derive(Debug, Clone)]
struct Slot {
    start_ms: u64,
    calls: u32,
    failures: u32,
    buckets: Vec<u32>,
}

/// Outcomes per revision and tenant, in slots of ten seconds, kept an hour.
#[derive(Debug, Default)]
pub struct Stats {
    series: Mutex<HashMap<String, HashMap<String, VecDeque<Slot>>>>,
}

fn now_ms() -> u64 {
    greentic_capabilities::state::now_ms()
}

impl Stats {
    /// Records one call of `tenant` on revision `digest`.
    pub fn record(&self, digest: &str, tenant: &str, failed: bool, elapsed: Duration) {
        self.record_at(digest, tenant, failed, elapsed, now_ms());
    }

    /// [`Stats::record`] at `now` (milliseconds since the Unix epoch).
    pub fn record_at(&self, digest: &str, tenant: &str, failed: bool, elapsed: Duration, now: u64) {
        let start = now - now % SLOT_MS;
        let bucket = bucket_of(elapsed.as_secs_f64() * 1000.0);
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let tenants = match series.get_mut(digest) {
            Some(t) => t,
            None => series.entry(digest.to_string()).or_default(),
        };
        let slots = match tenants.get_mut(tenant) {
            Some(s) => s,
            None => tenants.entry(tenant.to_string()).or_default(),
        };
        if slots.back().is_none_or(|s| s.start_ms != start) {
            while slots.front().is_some_and(|s| s.start_ms + KEEP_MS < start) {
                slots.pop_front();
            }
            slots.push_back(Slot {
                start_ms: start,
                calls: 0,
                failures: 0,
                buckets: Vec::new(),
            });
        }
        let slot = slots.back_mut().expect("just pushed");
        slot.calls += 1;
        slot.failures += failed as u32;
        if slot.buckets.len() <= bucket {
            slot.buckets.resize(bucket + 1, 0);
        }
        slot.buckets[bucket] += 1;
    }

    /// What `tenants` saw on revision `digest` in slots starting within `[from_ms, to_ms)`.
    pub fn summary(
        &self,
        digest: &str,
        tenants: &BTreeSet<String>,
        from_ms: u64,
        to_ms: u64,
    ) -> Summary {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Summary::default();
        let Some(by_tenant) = series.get(digest) else {
            return out;
        };
        for tenant in tenants {
            for slot in by_tenant.get(tenant).into_iter().flatten() {
                if slot.start_ms + SLOT_MS > from_ms && slot.start_ms < to_ms {
                    out.merge(&Summary {
                        calls: slot.calls as u64,
                        failures: slot.failures as u64,
                        buckets: slot.buckets.iter().map(|&n| n as u64).collect(),
                    });
                }
            }
        }
        out
    }

    /// Drops every revision's series but those in `keep`.
    pub fn retain(&self, keep: &BTreeSet<String>) {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        series.retain(|digest, _| keep.contains(digest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_what_they_hold() {
        for ms in [0.05, 0.1, 0.3, 1.0, 7.0, 250.0, 9_000.0] {
            let i = bucket_of(ms);
            assert!(ms <= bound_ms(i) + 1e-9, "{ms} in bucket {i}");
            assert!(i == 0 || ms > bound_ms(i - 1), "{ms} in bucket {i}");
        }
        let stats = Stats::default();
        for _ in 0..100 {
            stats.record_at("d", "acme", false, Duration::from_millis(10), 1_000_000);
        }
        let s = stats.summary("d", &["acme".to_string()].into(), 0, u64::MAX);
        assert!((10.0..12.5).contains(&s.p99_ms()), "{}", s.p99_ms());
    }
}
