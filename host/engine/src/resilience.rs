//! Retries with exponential backoff and jitter, and a circuit breaker per tenant and provider.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::errors::{CallError, ProviderFailure};

/// Retry policy.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in total (first try included).
    pub max_attempts: u32,
    /// First backoff.
    pub base_delay: Duration,
    /// Largest backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Whether `error` may be retried: only `unavailable` and `rate-limited`, only for calls
    /// with an idempotency key.
    pub fn retryable(error: &CallError, has_idempotency_key: bool) -> bool {
        has_idempotency_key
            && matches!(
                error,
                CallError::Provider(
                    ProviderFailure::Unavailable { .. } | ProviderFailure::RateLimited { .. }
                ) | CallError::RemoteUnreachable(_)
            )
    }

    /// The delay before attempt `attempt + 1` (attempt counts from 1): full-jitter exponential
    /// backoff, but never less than the upstream's `retry-after`.
    pub fn delay(&self, attempt: u32, error: &CallError) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        let jittered = exp.mul_f64(0.5 + fastrand::f64() * 0.5);
        let floor = error
            .retry_after_ms()
            .map(Duration::from_millis)
            .unwrap_or_default();
        jittered.max(floor)
    }
}

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long it stays open before one probe call is let through.
    pub cool_down: Duration,
    /// How long a probe may stay unsettled before another probe is let through. Every probe is
    /// settled when its call ends (or is abandoned), so this only matters for a call that
    /// never ends; it keeps a circuit from staying half-open forever.
    pub probe_timeout: Duration,
}

impl From<greentic_bundle::BreakerSection> for BreakerPolicy {
    fn from(b: greentic_bundle::BreakerSection) -> Self {
        BreakerPolicy {
            failure_threshold: if b.failure_threshold == 0 {
                u32::MAX
            } else {
                b.failure_threshold
            },
            cool_down: Duration::from_millis(b.cool_down_ms),
            probe_timeout: Duration::from_millis(b.probe_timeout_ms),
        }
    }
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy::from(greentic_bundle::BreakerSection::default())
    }
}

/// The state of one circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// One probe call is in flight.
    HalfOpen,
}

#[derive(Debug)]
struct Circuit {
    state: BreakerState,
    failures: u32,
    opened_at: Instant,
    /// When the current probe was let through (half-open only).
    probe_at: Instant,
    /// Which probe is current; a settlement of an older, expired probe is ignored.
    probe: u64,
}

/// Circuit breakers keyed by `(tenant, provider)`.
///
/// [`Breakers::admit`] hands out an [`Admission`], which must be settled with the call's
/// outcome; one that is dropped unsettled (the call returned early, its client went away, its
/// future was cancelled) gives its probe back, so the circuit never stays half-open waiting
/// for a probe that will not report.
#[derive(Debug)]
pub struct Breakers {
    policy: BreakerPolicy,
    circuits: Mutex<HashMap<(String, String), Circuit>>,
}

impl Default for Breakers {
    fn default() -> Self {
        Breakers::new(BreakerPolicy::default())
    }
}

/// A call let through by a breaker. Settle it with [`Admission::settle`]; dropping it unsettled
/// abandons it (a probe is given back and the next call may probe).
#[derive(Debug)]
#[must_use = "an admission must be settled with the call's outcome"]
pub struct Admission<'a> {
    breakers: &'a Breakers,
    tenant: &'a str,
    provider: &'a str,
    /// `Some(probe number)` when this call is the half-open probe.
    probe: Option<u64>,
    settled: bool,
}

impl Breakers {
    /// Breakers with `policy`.
    pub fn new(policy: BreakerPolicy) -> Breakers {
        Breakers {
            policy,
            circuits: Mutex::new(HashMap::new()),
        }
    }

    fn circuits(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Circuit>> {
        // A panic while holding the lock cannot leave a circuit inconsistent (every update is
        // a few plain assignments), so a poisoned lock is used as is.
        self.circuits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may go ahead; `Err` carries the time left until a probe is allowed.
    pub fn admit<'a>(
        &'a self,
        tenant: &'a str,
        provider: &'a str,
    ) -> Result<Admission<'a>, CallError> {
        self.admit_at(tenant, provider, Instant::now())
    }

    /// [`Breakers::admit`] at time `now` (tests drive the clock).
    pub fn admit_at<'a>(
        &'a self,
        tenant: &'a str,
        provider: &'a str,
        now: Instant,
    ) -> Result<Admission<'a>, CallError> {
        let policy = self.policy;
        let mut circuits = self.circuits();
        let c = circuits
            .entry((tenant.to_string(), provider.to_string()))
            .or_insert(Circuit {
                state: BreakerState::Closed,
                failures: 0,
                opened_at: now,
                probe_at: now,
                probe: 0,
            });
        let admission = |probe| Admission {
            breakers: self,
            tenant,
            provider,
            probe,
            settled: false,
        };
        match c.state {
            BreakerState::Closed => Ok(admission(None)),
            BreakerState::HalfOpen
                if now.saturating_duration_since(c.probe_at) < policy.probe_timeout =>
            {
                Err(CallError::CircuitOpen {
                    provider: provider_name(provider),
                    retry_after_ms: 100,
                })
            }
            BreakerState::HalfOpen => {
                // The probe never reported: let another one through.
                c.probe += 1;
                c.probe_at = now;
                Ok(admission(Some(c.probe)))
            }
            BreakerState::Open => {
                let elapsed = now.saturating_duration_since(c.opened_at);
                if elapsed >= policy.cool_down {
                    c.state = BreakerState::HalfOpen;
                    c.probe += 1;
                    c.probe_at = now;
                    Ok(admission(Some(c.probe)))
                } else {
                    Err(CallError::CircuitOpen {
                        provider: provider_name(provider),
                        retry_after_ms: (policy.cool_down - elapsed).as_millis().max(1) as u64,
                    })
                }
            }
        }
    }

    fn settle(
        &self,
        admission: &Admission<'_>,
        outcome: Option<bool>,
        now: Instant,
    ) -> BreakerState {
        let policy = self.policy;
        let mut circuits = self.circuits();
        let Some(c) =
            circuits.get_mut(&(admission.tenant.to_string(), admission.provider.to_string()))
        else {
            return BreakerState::Closed;
        };
        if let Some(probe) = admission.probe
            && (c.state != BreakerState::HalfOpen || c.probe != probe)
        {
            // An expired probe reporting late: a newer probe decides.
            return c.state;
        }
        match (outcome, admission.probe) {
            // Abandoned: nothing learned. A probe goes back to open with its cool-down over,
            // so the next call probes.
            (None, Some(_)) => {
                c.state = BreakerState::Open;
                c.opened_at = now.checked_sub(policy.cool_down).unwrap_or(c.opened_at);
            }
            (None, None) => {}
            // A call admitted before the circuit opened, failing late: the circuit is already
            // open (or probing); it neither restarts the cool-down nor cuts a probe short.
            (Some(true), None) if c.state != BreakerState::Closed => {}
            (Some(true), probe) => {
                c.failures = c.failures.saturating_add(1);
                if probe.is_some() || c.failures >= policy.failure_threshold {
                    c.state = BreakerState::Open;
                    c.opened_at = now;
                }
            }
            (Some(false), _) => {
                c.failures = 0;
                c.state = BreakerState::Closed;
            }
        }
        c.state
    }

    /// The current state (for metrics).
    pub fn state(&self, tenant: &str, provider: &str) -> BreakerState {
        self.circuits()
            .get(&(tenant.to_string(), provider.to_string()))
            .map_or(BreakerState::Closed, |c| c.state)
    }
}

impl Admission<'_> {
    /// Whether this call is the probe of a half-open circuit.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }

    /// Records the call's outcome (`failed`: it counts against the provider); returns the
    /// circuit's new state.
    pub fn settle(self, failed: bool) -> BreakerState {
        self.settle_at(failed, Instant::now())
    }

    /// [`Admission::settle`] at time `now`.
    pub fn settle_at(mut self, failed: bool, now: Instant) -> BreakerState {
        self.settled = true;
        self.breakers.settle(&self, Some(failed), now)
    }

    /// Gives the admission back without an outcome (what dropping it does), at time `now`.
    pub fn abandon_at(mut self, now: Instant) -> BreakerState {
        self.settled = true;
        self.breakers.settle(&self, None, now)
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.breakers.settle(self, None, Instant::now());
        }
    }
}

/// The provider's name in a circuit key (`name@digest`: one circuit per version).
fn provider_name(circuit: &str) -> String {
    circuit.split('@').next().unwrap_or(circuit).to_string()
}

/// Whether an outcome counts as a failure of the provider for the breaker.
pub fn counts_as_failure(error: &CallError) -> bool {
    matches!(
        error,
        CallError::Provider(ProviderFailure::Unavailable { .. } | ProviderFailure::Timeout)
            | CallError::DeadlineExceeded(_)
            | CallError::GuestTrap(_)
            | CallError::FuelExhausted(_)
            | CallError::CpuExhausted(_)
            | CallError::MemoryLimit(_)
            | CallError::ResourceLimit(_)
            | CallError::RemoteUnreachable(_)
            | CallError::RemoteProtocol(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable(retry: Option<u64>) -> CallError {
        CallError::Provider(ProviderFailure::Unavailable {
            retry_after_ms: retry,
            message: "503".into(),
        })
    }

    #[test]
    fn breaker_settings_become_a_policy_and_zero_never_opens() {
        let policy = BreakerPolicy::from(greentic_bundle::BreakerSection::default());
        assert_eq!(policy.failure_threshold, 5);
        let policy = BreakerPolicy::from(greentic_bundle::BreakerSection {
            failure_threshold: 0,
            cool_down_ms: 250,
            ..Default::default()
        });
        assert_eq!(policy.failure_threshold, u32::MAX);
        assert_eq!(policy.cool_down, Duration::from_millis(250));
    }

    #[test]
    fn only_idempotent_unavailable_or_rate_limited_calls_retry() {
        assert!(RetryPolicy::retryable(&unavailable(None), true));
        assert!(!RetryPolicy::retryable(&unavailable(None), false));
        assert!(!RetryPolicy::retryable(
            &CallError::Provider(ProviderFailure::Timeout),
            true
        ));
        assert!(!RetryPolicy::retryable(&CallError::FuelExhausted(1), true));
    }

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        let p = RetryPolicy::default();
        for attempt in 1..6 {
            let d = p.delay(attempt, &unavailable(None));
            let cap = p.base_delay * (1 << (attempt - 1));
            assert!(d <= cap.min(p.max_delay), "{attempt}: {d:?}");
            assert!(d >= cap.min(p.max_delay) / 2, "{attempt}: {d:?}");
        }
        assert!(p.delay(1, &unavailable(Some(700))) >= Duration::from_millis(700));
    }

    fn policy(threshold: u32, cool_ms: u64) -> BreakerPolicy {
        BreakerPolicy {
            failure_threshold: threshold,
            cool_down: Duration::from_millis(cool_ms),
            probe_timeout: Duration::from_millis(10 * cool_ms),
        }
    }

    #[test]
    fn breaker_opens_half_opens_and_closes() {
        let b = Breakers::new(policy(2, 30));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(
            b.admit_at("t", "p", t0).unwrap().settle_at(true, t0),
            BreakerState::Closed
        );
        assert_eq!(
            b.admit_at("t", "p", t0).unwrap().settle_at(true, t0),
            BreakerState::Open
        );
        assert_eq!(
            b.admit_at("t", "p", ms(1)).unwrap_err().code(),
            "circuit-open"
        );
        // Another tenant is not affected.
        b.admit_at("u", "p", ms(1)).unwrap().settle_at(false, ms(1));
        let probe = b.admit_at("t", "p", ms(40)).unwrap();
        assert!(probe.is_probe());
        assert_eq!(b.state("t", "p"), BreakerState::HalfOpen);
        assert!(b.admit_at("t", "p", ms(41)).is_err(), "only one probe");
        assert_eq!(probe.settle_at(false, ms(42)), BreakerState::Closed);
        b.admit_at("t", "p", ms(43))
            .unwrap()
            .settle_at(false, ms(43));
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        // What a probe whose handler returned early, or whose client disconnected, does.
        let b = Breakers::new(policy(1, 200));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        b.admit_at("t", "p", t0).unwrap().settle_at(true, t0);
        let probe = b.admit_at("t", "p", ms(250)).unwrap();
        drop(probe);
        assert_eq!(b.state("t", "p"), BreakerState::Open);
        let next = b
            .admit_at("t", "p", ms(251))
            .expect("the next call probes at once");
        assert!(next.is_probe());
        assert_eq!(next.settle_at(false, ms(252)), BreakerState::Closed);
    }

    #[test]
    fn half_open_expires_and_a_late_probe_does_not_decide() {
        let b = Breakers::new(policy(1, 100));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        b.admit_at("t", "p", t0).unwrap().settle_at(true, t0);
        let stuck = b.admit_at("t", "p", ms(100)).unwrap();
        assert!(
            b.admit_at("t", "p", ms(500)).is_err(),
            "still within the probe timeout"
        );
        let fresh = b.admit_at("t", "p", ms(1_100)).expect("the probe expired");
        // The stuck probe reports a failure late: ignored, the fresh probe decides.
        assert_eq!(stuck.settle_at(true, ms(1_150)), BreakerState::HalfOpen);
        assert_eq!(fresh.settle_at(false, ms(1_200)), BreakerState::Closed);
    }

    #[test]
    fn a_late_failure_does_not_let_a_second_probe_in() {
        // Found by the `breaker` fuzz target: a call admitted while closed failed after the
        // circuit had opened and a probe was in flight; it re-opened the circuit, and a second
        // probe was let through beside the first.
        let b = Breakers::new(policy(1, 50));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let early = b.admit_at("t", "p", t0).unwrap();
        b.admit_at("t", "p", t0).unwrap().settle_at(true, t0);
        let probe = b.admit_at("t", "p", ms(60)).unwrap();
        assert!(probe.is_probe());
        assert_eq!(early.settle_at(true, ms(61)), BreakerState::HalfOpen);
        assert!(
            b.admit_at("t", "p", ms(200)).is_err(),
            "one probe at a time"
        );
        assert_eq!(probe.settle_at(false, ms(201)), BreakerState::Closed);
    }

    #[test]
    fn closed_calls_abandoned_count_nothing() {
        let b = Breakers::new(policy(2, 100));
        let t0 = Instant::now();
        b.admit_at("t", "p", t0).unwrap().settle_at(true, t0);
        for _ in 0..10 {
            drop(b.admit_at("t", "p", t0).unwrap());
        }
        assert_eq!(b.state("t", "p"), BreakerState::Closed);
        assert_eq!(
            b.admit_at("t", "p", t0).unwrap().settle_at(true, t0),
            BreakerState::Open
        );
    }
}
