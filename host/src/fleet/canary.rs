//! Canaries: a revision serving a set of tenants first, judged against the same tenants on the
//! revision before it, promoted or rolled back by the fleet itself.
//!
//! Every host records each call's outcome per (revision, tenant) in ten-second slots of a
//! latency histogram ([`Stats`]); heartbeats carry the canary tenants' [`Summary`] on the canary
//! and, as the baseline, on the stable revision over the window before the canary started. The
//! fleet's leader merges them and [`judge`]s: error rate or p99 over the threshold → roll back;
//! the window passed without that → promote.

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

/// Judged calls the canary and its baseline must each have before their p99s are compared:
/// with fewer, a p99 is little more than the slowest call.
pub const P99_MIN_SAMPLE: u64 = 100;
/// The one-sided z of a 95% confidence bound.
const Z95: f64 = 1.645;
/// How many windows a canary without enough judged calls is watched before it is rolled back.
pub const WINDOWS_FOR_EVIDENCE: u64 = 3;

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

    fn record_at(&self, digest: &str, tenant: &str, failed: bool, elapsed: Duration, now: u64) {
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

/// How a canary is judged (`greentic-host publish --canary …`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryPlan {
    /// The tenants the canary serves first.
    pub tenants: BTreeSet<String>,
    /// How long it is watched before it is promoted, in seconds.
    pub window_secs: u64,
    /// Roll back when the canary's error rate exceeds the baseline's by more than this
    /// (0.02: two points).
    pub max_error_rate: f64,
    /// Roll back when the canary's p99 exceeds the baseline's times this.
    pub max_p99_ratio: f64,
    /// Calls the canary must have served before its error rate or p99 can condemn it.
    pub min_calls: u64,
}

/// What the fleet decided about a canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Served to every tenant.
    Promoted {
        /// Why.
        reason: String,
    },
    /// Withdrawn: its tenants are back on the stable revision.
    RolledBack {
        /// Why (which threshold, the figures).
        reason: String,
    },
}

/// The verdict on a canary that has run `elapsed_secs` of its window, given what its tenants
/// saw on it (`canary`) and on the stable revision before it (`baseline`); `None`: keep
/// watching. Only judged calls count (see the runtime: invokes, fires, and deliveries the
/// provider accepted or failed on — never deliveries it refused).
///
/// - Error rate: once the canary has `min_calls` calls, a rate over the baseline's by more
///   than `max_error_rate` rolls it back.
/// - Latency: once the canary and the baseline each have [`P99_MIN_SAMPLE`] calls (and the
///   canary `min_calls`), the canary is rolled back when its p99 is — with 95% confidence —
///   above `max_p99_ratio` times the baseline's: the lower confidence bound of the canary's
///   p99 against the upper one of the baseline's, so one slow call never condemns it.
/// - Promotion: once the window passed with `min_calls` calls and neither rule fired. A
///   canary that has not had `min_calls` calls is watched on, and rolled back after
///   [`WINDOWS_FOR_EVIDENCE`] windows: it is not promoted on no evidence.
pub fn judge(
    plan: &CanaryPlan,
    baseline: &Summary,
    canary: &Summary,
    elapsed_secs: u64,
) -> Option<Verdict> {
    let enough = canary.calls >= plan.min_calls;
    if enough && canary.calls > 0 {
        let (rate, base_rate) = (canary.error_rate(), baseline.error_rate());
        if rate > base_rate + plan.max_error_rate {
            return Some(Verdict::RolledBack {
                reason: format!(
                    "error rate {:.2}% over {} calls, against {:.2}% on the stable revision (allowed: +{:.2} points)",
                    rate * 100.0,
                    canary.calls,
                    base_rate * 100.0,
                    plan.max_error_rate * 100.0
                ),
            });
        }
        let (low, base_high) = (canary.p99_at_least_ms(), baseline.p99_at_most_ms());
        if canary.calls >= P99_MIN_SAMPLE
            && baseline.calls >= P99_MIN_SAMPLE
            && low > base_high * plan.max_p99_ratio
        {
            return Some(Verdict::RolledBack {
                reason: format!(
                    "p99 at least {low:.1} ms (95% confidence) over {} calls, against at most {base_high:.1} ms on the stable revision over {} calls (allowed: {}x)",
                    canary.calls, baseline.calls, plan.max_p99_ratio
                ),
            });
        }
    }
    if elapsed_secs >= plan.window_secs {
        if enough {
            return Some(Verdict::Promoted {
                reason: format!(
                    "{} judged calls in {} s, error rate {:.2}%, p99 {:.1} ms; within the thresholds",
                    canary.calls,
                    elapsed_secs,
                    canary.error_rate() * 100.0,
                    canary.p99_ms()
                ),
            });
        }
        if elapsed_secs >= plan.window_secs.saturating_mul(WINDOWS_FOR_EVIDENCE) {
            return Some(Verdict::RolledBack {
                reason: format!(
                    "only {} judged calls in {} s; promotion needs at least {} (--min-calls): not promoted on too little evidence",
                    canary.calls, elapsed_secs, plan.min_calls
                ),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> CanaryPlan {
        CanaryPlan {
            tenants: ["acme".to_string()].into(),
            window_secs: 60,
            max_error_rate: 0.02,
            max_p99_ratio: 1.5,
            min_calls: 20,
        }
    }

    fn summary(calls: u64, failures: u64, ms: f64) -> Summary {
        let stats = Stats::default();
        for i in 0..calls {
            let elapsed = Duration::from_secs_f64(ms / 1000.0);
            stats.record_at("d", "acme", i < failures, elapsed, 1_000_000);
        }
        stats.summary("d", &plan().tenants, 0, u64::MAX)
    }

    #[test]
    fn buckets_bound_what_they_hold() {
        for ms in [0.05, 0.1, 0.3, 1.0, 7.0, 250.0, 9_000.0] {
            let i = bucket_of(ms);
            assert!(ms <= bound_ms(i) + 1e-9, "{ms} in bucket {i}");
            assert!(i == 0 || ms > bound_ms(i - 1), "{ms} in bucket {i}");
        }
        let s = summary(100, 0, 10.0);
        assert!((10.0..12.5).contains(&s.p99_ms()), "{}", s.p99_ms());
    }

    #[test]
    fn a_failing_canary_is_rolled_back_and_a_healthy_one_promoted() {
        let base = summary(200, 1, 5.0);
        // 10% failing: rolled back before the window ends.
        let bad = summary(50, 5, 5.0);
        assert!(
            matches!(judge(&plan(), &base, &bad, 10), Some(Verdict::RolledBack { reason }) if reason.contains("error rate"))
        );
        // Too few calls to judge yet.
        assert_eq!(judge(&plan(), &base, &summary(5, 5, 5.0), 10), None);
        // Three times slower, over enough calls to tell.
        let slow = summary(150, 0, 15.0);
        assert!(
            matches!(judge(&plan(), &base, &slow, 10), Some(Verdict::RolledBack { reason }) if reason.contains("p99"))
        );
        // Too few calls to compare p99s: watched on, and promoted on its error rate.
        let few_slow = summary(50, 0, 15.0);
        assert_eq!(judge(&plan(), &base, &few_slow, 10), None);
        // Healthy: watched until the window passes, then promoted.
        let good = summary(50, 0, 5.0);
        assert_eq!(judge(&plan(), &base, &good, 10), None);
        assert!(matches!(
            judge(&plan(), &base, &good, 60),
            Some(Verdict::Promoted { .. })
        ));
        // Not enough judged calls by the end of the window: watched on, then rolled back.
        let quiet = summary(5, 0, 5.0);
        assert_eq!(judge(&plan(), &base, &quiet, 60), None);
        assert!(
            matches!(judge(&plan(), &base, &quiet, 180), Some(Verdict::RolledBack { reason }) if reason.contains("only 5 judged calls"))
        );
    }

    #[test]
    fn one_slow_call_does_not_condemn_a_canary() {
        let stats = Stats::default();
        let tenants = plan().tenants;
        for i in 0..200 {
            let ms = if i == 0 { 400.0 } else { 5.0 };
            stats.record_at(
                "canary",
                "acme",
                false,
                Duration::from_secs_f64(ms / 1000.0),
                1_000_000,
            );
        }
        let canary = stats.summary("canary", &tenants, 0, u64::MAX);
        let base = summary(200, 0, 5.0);
        // One call in 200 above 400 ms: the p99 is 5 ms, with confidence.
        assert!(
            canary.p99_at_least_ms() < 6.5,
            "{}",
            canary.p99_at_least_ms()
        );
        assert!(base.p99_at_most_ms() >= 5.0);
        assert_eq!(judge(&plan(), &base, &canary, 10), None);
        // Eight slow calls in 208 (almost 4%) are a p99 that moved, beyond doubt.
        for _ in 0..8 {
            stats.record_at(
                "canary",
                "acme",
                false,
                Duration::from_millis(400),
                1_000_000,
            );
        }
        let canary = stats.summary("canary", &tenants, 0, u64::MAX);
        assert!(
            canary.p99_at_least_ms() > 5.0 * 1.5,
            "{}",
            canary.p99_at_least_ms()
        );
    }

    #[test]
    fn summaries_keep_revisions_and_tenants_apart() {
        let stats = Stats::default();
        stats.record_at("old", "acme", false, Duration::from_millis(1), 1_000);
        stats.record_at("new", "acme", true, Duration::from_millis(1), 1_000);
        stats.record_at("new", "globex", true, Duration::from_millis(1), 1_000);
        let acme: BTreeSet<String> = ["acme".to_string()].into();
        assert_eq!(stats.summary("new", &acme, 0, u64::MAX).failures, 1);
        assert_eq!(stats.summary("old", &acme, 0, u64::MAX).failures, 0);
        // Outside the span asked for: nothing.
        assert_eq!(stats.summary("new", &acme, 20_000, u64::MAX).calls, 0);
        stats.retain(&["old".to_string()].into());
        assert_eq!(stats.summary("new", &acme, 0, u64::MAX).calls, 0);
    }
}
