//! Canaries: a revision serving a set of tenants first, judged against the same tenants on the
//! revision before it, promoted or rolled back by the fleet itself.
//!
//! Every host records each call's outcome per (revision, tenant) in ten-second slots of a
//! latency histogram ([`Stats`]); heartbeats carry the canary tenants' [`Summary`] on the canary
//! and, as the baseline, on the stable revision over the window before the canary started. The
//! fleet's leader merges them and [`judge`]s: error rate or p99 over the threshold → roll back;
//! the window passed without that → promote.

pub use greentic_engine::outcomes::{Stats, Summary};

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Judged calls the canary and its baseline must each have before their p99s are compared:
/// with fewer, a p99 is little more than the slowest call.
pub const P99_MIN_SAMPLE: u64 = 100;
/// How many windows a canary without enough judged calls is watched before it is rolled back.
pub const WINDOWS_FOR_EVIDENCE: u64 = 3;

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
    use std::time::Duration;

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
