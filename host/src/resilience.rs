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
                )
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
#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long it stays open before one probe call is let through.
    pub cool_down: Duration,
}

impl From<crate::bundle::BreakerSection> for BreakerPolicy {
    fn from(b: crate::bundle::BreakerSection) -> Self {
        BreakerPolicy {
            failure_threshold: if b.failure_threshold == 0 {
                u32::MAX
            } else {
                b.failure_threshold
            },
            cool_down: Duration::from_millis(b.cool_down_ms),
        }
    }
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failure_threshold: 5,
            cool_down: Duration::from_secs(5),
        }
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
}

/// Circuit breakers keyed by `(tenant, provider)`.
#[derive(Debug, Default)]
pub struct Breakers {
    policy: BreakerPolicyCell,
    circuits: Mutex<HashMap<(String, String), Circuit>>,
}

#[derive(Debug, Default)]
struct BreakerPolicyCell(Option<BreakerPolicy>);

impl Breakers {
    /// Breakers with `policy`.
    pub fn new(policy: BreakerPolicy) -> Breakers {
        Breakers {
            policy: BreakerPolicyCell(Some(policy)),
            circuits: Mutex::new(HashMap::new()),
        }
    }

    fn policy(&self) -> BreakerPolicy {
        self.policy.0.unwrap_or_default()
    }

    /// Whether a call may go ahead; `Err` carries the time left until a probe is allowed.
    pub fn admit(&self, tenant: &str, provider: &str) -> Result<(), CallError> {
        let policy = self.policy();
        let mut circuits = self.circuits.lock().expect("breaker lock");
        let c = circuits
            .entry((tenant.to_string(), provider.to_string()))
            .or_insert(Circuit {
                state: BreakerState::Closed,
                failures: 0,
                opened_at: Instant::now(),
            });
        match c.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open => {
                let elapsed = c.opened_at.elapsed();
                if elapsed >= policy.cool_down {
                    c.state = BreakerState::HalfOpen;
                    Ok(())
                } else {
                    Err(CallError::CircuitOpen {
                        provider: provider.to_string(),
                        retry_after_ms: (policy.cool_down - elapsed).as_millis() as u64,
                    })
                }
            }
            BreakerState::HalfOpen => Err(CallError::CircuitOpen {
                provider: provider.to_string(),
                retry_after_ms: 100,
            }),
        }
    }

    /// Records a call's outcome; returns the new state.
    pub fn record(&self, tenant: &str, provider: &str, failed: bool) -> BreakerState {
        let policy = self.policy();
        let mut circuits = self.circuits.lock().expect("breaker lock");
        let Some(c) = circuits.get_mut(&(tenant.to_string(), provider.to_string())) else {
            return BreakerState::Closed;
        };
        if failed {
            c.failures += 1;
            if c.state == BreakerState::HalfOpen || c.failures >= policy.failure_threshold {
                c.state = BreakerState::Open;
                c.opened_at = Instant::now();
            }
        } else {
            c.failures = 0;
            c.state = BreakerState::Closed;
        }
        c.state
    }

    /// The current state (for metrics).
    pub fn state(&self, tenant: &str, provider: &str) -> BreakerState {
        self.circuits
            .lock()
            .expect("breaker lock")
            .get(&(tenant.to_string(), provider.to_string()))
            .map_or(BreakerState::Closed, |c| c.state)
    }
}

/// Whether an outcome counts as a failure of the provider for the breaker.
pub fn counts_as_failure(error: &CallError) -> bool {
    matches!(
        error,
        CallError::Provider(ProviderFailure::Unavailable { .. } | ProviderFailure::Timeout)
            | CallError::DeadlineExceeded(_)
            | CallError::GuestTrap(_)
            | CallError::FuelExhausted(_)
            | CallError::MemoryLimit(_)
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

    #[test]
    fn breaker_opens_half_opens_and_closes() {
        let b = Breakers::new(BreakerPolicy {
            failure_threshold: 2,
            cool_down: Duration::from_millis(30),
        });
        b.admit("t", "p").unwrap();
        assert_eq!(b.record("t", "p", true), BreakerState::Closed);
        assert_eq!(b.record("t", "p", true), BreakerState::Open);
        assert_eq!(b.admit("t", "p").unwrap_err().code(), "circuit-open");
        // Another tenant is not affected.
        b.admit("u", "p").unwrap();
        std::thread::sleep(Duration::from_millis(40));
        b.admit("t", "p").unwrap();
        assert_eq!(b.state("t", "p"), BreakerState::HalfOpen);
        assert!(b.admit("t", "p").is_err(), "only one probe");
        assert_eq!(b.record("t", "p", false), BreakerState::Closed);
        b.admit("t", "p").unwrap();
    }
}
