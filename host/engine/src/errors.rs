//! The stable errors a call can end with, and how they map to HTTP.

pub use greentic_capabilities::text::{MAX_GUEST_TEXT, clip, clip_guest};

use serde_json::json;

/// A provider error as the host sees it (mirror of `greentic:types/provider-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderFailure {
    /// `invalid-input`.
    InvalidInput(String),
    /// `unauthorized`.
    Unauthorized(String),
    /// `not-found`.
    NotFound(String),
    /// `rate-limited`.
    RateLimited {
        /// Delay the upstream asked for.
        retry_after_ms: u64,
    },
    /// `unavailable`.
    Unavailable {
        /// Delay the upstream asked for, if any.
        retry_after_ms: Option<u64>,
        /// What failed.
        message: String,
    },
    /// `timeout`.
    Timeout,
    /// `internal`.
    Internal(String),
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The provider returned an error.
    #[error("provider error: {0:?}")]
    Provider(ProviderFailure),
    /// The call used its fuel budget.
    #[error(
        "the call used all of its fuel ({0} units); the provider is looping or the tenant's fuel_per_call is too low"
    )]
    FuelExhausted(u64),
    /// The call used its CPU time (`[host] metering = "cpu-time"`).
    #[error(
        "the call used all of its CPU time ({0} ms); the provider is looping or the tenant's cpu_ms_per_call is too low"
    )]
    CpuExhausted(u64),
    /// The call ran past its deadline.
    #[error("the call ran past its {0} ms deadline")]
    DeadlineExceeded(u64),
    /// The instance tried to grow memory or tables past the cap.
    #[error("the instance tried to use more than {0} bytes of memory and tables")]
    MemoryLimit(u64),
    /// The call tried to make the host hold more for it than its budgets allow (host memory,
    /// resources); the message names which.
    #[error("{0}")]
    ResourceLimit(String),
    /// The tenant is at its concurrency or fuel-rate limit.
    #[error("tenant `{tenant}` is at its limit ({why}); retry later")]
    TenantBusy {
        /// The tenant.
        tenant: String,
        /// Which limit.
        why: String,
        /// Suggested delay.
        retry_after_ms: u64,
    },
    /// The guest trapped (panic, stack overflow, ...).
    #[error("the provider trapped: {0}")]
    GuestTrap(String),
    /// No route for the capability.
    #[error("no route for capability `{capability}` for this tenant/team/user/cloud")]
    NoRoute {
        /// The capability.
        capability: String,
    },
    /// The request body is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// The circuit breaker for this tenant and provider is open.
    #[error(
        "provider `{provider}` is failing for this tenant; calls are paused for {retry_after_ms} ms"
    )]
    CircuitOpen {
        /// The provider.
        provider: String,
        /// Until it half-opens.
        retry_after_ms: u64,
    },
    /// A host-side failure.
    #[error("internal host error: {0}")]
    Internal(String),
    /// A call with the same idempotency key is running (on this or another host of the fleet).
    #[error(
        "a call with this idempotency key is still running; retry in {retry_after_ms} ms for its result"
    )]
    InProgress {
        /// Suggested delay.
        retry_after_ms: u64,
    },
    /// The provider returned more than the host passes on.
    #[error("the provider returned a {bytes}-byte result; at most {limit} bytes are passed on")]
    ResultTooLarge {
        /// What it returned.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A durable delivery was not queued: the tenant (or the route) has as many deliveries
    /// queued, or accepted this second, as its limits allow. Nothing was stored.
    #[error("tenant `{tenant}`'s delivery queue is full ({why}); nothing was queued, retry later")]
    QueueFull {
        /// The tenant.
        tenant: String,
        /// Which bound.
        why: String,
        /// Suggested delay.
        retry_after_ms: u64,
    },
    /// The fleet's server has no room left for what the host had to store (a full stream or
    /// bucket, or no storage for a new one). Nothing was stored.
    #[error("{what}: the fleet's storage is full; nothing was stored, retry later")]
    StorageFull {
        /// What could not be stored.
        what: String,
        /// Suggested delay.
        retry_after_ms: u64,
    },
    /// A delivery the route's host-side signature check refused (unsigned, or signed with
    /// another key). Nothing was queued or run.
    #[error("{0}")]
    SignatureInvalid(String),
    /// An idempotency key was reused with a different request.
    #[error(
        "idempotency key already used for a different request ({0}); use a new key for a new request"
    )]
    IdempotencyKeyReused(String),
    /// The tenant is not served by this host yet: it is starting, or waiting for the fleet's
    /// revision. Another host (or this one, shortly) serves it.
    #[error("tenant `{tenant}` is not served by this host yet ({why}); retry shortly")]
    NotServedYet {
        /// The tenant.
        tenant: String,
        /// Why (starting, waiting for the fleet).
        why: String,
        /// Suggested delay.
        retry_after_ms: u64,
    },
    /// The host runs as many calls as it was sized for (`[host] max_in_flight`) and none
    /// finished within the tenant's `queue_timeout_ms`: a condition of the host, not of the
    /// provider; another host, or this one shortly, serves the call.
    #[error("the host is at capacity ({detail}); retry, or add hosts")]
    HostAtCapacity {
        /// What ran out: the calls it admits at once, or a resource of its instance pool.
        detail: String,
        /// Suggested delay.
        retry_after_ms: u64,
    },
    /// A remote provider could not be reached: refused, reset, closed mid-answer, its TLS
    /// refused. The call may not have reached it.
    #[error("{0}")]
    RemoteUnreachable(String),
    /// A remote provider answered outside the wire contract: undecodable, a field missing, an
    /// error that is not a provider error.
    #[error("{0}")]
    RemoteProtocol(String),
}

impl CallError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::Provider(p) => match p {
                ProviderFailure::InvalidInput(_) => "invalid-input",
                ProviderFailure::Unauthorized(_) => "unauthorized",
                ProviderFailure::NotFound(_) => "not-found",
                ProviderFailure::RateLimited { .. } => "rate-limited",
                ProviderFailure::Unavailable { .. } => "unavailable",
                ProviderFailure::Timeout => "timeout",
                ProviderFailure::Internal(_) => "internal",
            },
            CallError::FuelExhausted(_) => "fuel-exhausted",
            CallError::CpuExhausted(_) => "cpu-exhausted",
            CallError::DeadlineExceeded(_) => "deadline-exceeded",
            CallError::MemoryLimit(_) => "memory-limit",
            CallError::ResourceLimit(_) => "resource-limit",
            CallError::TenantBusy { .. } => "tenant-busy",
            CallError::GuestTrap(_) => "guest-trap",
            CallError::NoRoute { .. } => "no-route",
            CallError::BadRequest(_) => "bad-request",
            CallError::CircuitOpen { .. } => "circuit-open",
            CallError::Internal(_) => "host-internal",
            CallError::ResultTooLarge { .. } => "result-too-large",
            CallError::InProgress { .. } => "in-progress",
            CallError::QueueFull { .. } => "queue-full",
            CallError::StorageFull { .. } => "storage-full",
            CallError::SignatureInvalid(_) => "signature-invalid",
            CallError::IdempotencyKeyReused(_) => "idempotency-key-reused",
            CallError::NotServedYet { .. } => "not-served-yet",
            CallError::HostAtCapacity { .. } => "host-at-capacity",
            CallError::RemoteUnreachable(_) => "remote-unreachable",
            CallError::RemoteProtocol(_) => "remote-protocol",
        }
    }

    /// The HTTP status for the error.
    pub fn status(&self) -> u16 {
        match self {
            CallError::Provider(p) => match p {
                ProviderFailure::InvalidInput(_) => 400,
                ProviderFailure::Unauthorized(_) => 403,
                ProviderFailure::NotFound(_) => 404,
                ProviderFailure::RateLimited { .. } => 429,
                ProviderFailure::Unavailable { .. } => 503,
                ProviderFailure::Timeout => 504,
                ProviderFailure::Internal(_) => 500,
            },
            CallError::FuelExhausted(_)
            | CallError::CpuExhausted(_)
            | CallError::MemoryLimit(_)
            | CallError::ResourceLimit(_)
            | CallError::GuestTrap(_) => 500,
            CallError::DeadlineExceeded(_) => 504,
            CallError::TenantBusy { .. } => 429,
            CallError::NoRoute { .. } => 404,
            CallError::BadRequest(_) => 400,
            CallError::CircuitOpen { .. } => 503,
            CallError::Internal(_) => 500,
            CallError::ResultTooLarge { .. } => 502,
            CallError::InProgress { .. } => 409,
            CallError::QueueFull { .. } => 429,
            CallError::StorageFull { .. } => 507,
            CallError::SignatureInvalid(_) => 401,
            CallError::IdempotencyKeyReused(_) => 422,
            CallError::NotServedYet { .. } => 503,
            CallError::HostAtCapacity { .. } => 503,
            CallError::RemoteUnreachable(_) => 503,
            CallError::RemoteProtocol(_) => 502,
        }
    }

    /// Whether retrying later may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            CallError::Provider(
                ProviderFailure::RateLimited { .. }
                    | ProviderFailure::Unavailable { .. }
                    | ProviderFailure::Timeout
            ) | CallError::TenantBusy { .. }
                | CallError::CircuitOpen { .. }
                | CallError::InProgress { .. }
                | CallError::DeadlineExceeded(_)
                | CallError::QueueFull { .. }
                | CallError::StorageFull { .. }
                | CallError::NotServedYet { .. }
                | CallError::HostAtCapacity { .. }
                | CallError::RemoteUnreachable(_)
        )
    }

    /// The delay to wait before retrying, if known.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            CallError::Provider(ProviderFailure::RateLimited { retry_after_ms }) => {
                Some(*retry_after_ms)
            }
            CallError::Provider(ProviderFailure::Unavailable { retry_after_ms, .. }) => {
                *retry_after_ms
            }
            CallError::TenantBusy { retry_after_ms, .. }
            | CallError::CircuitOpen { retry_after_ms, .. }
            | CallError::InProgress { retry_after_ms }
            | CallError::QueueFull { retry_after_ms, .. }
            | CallError::StorageFull { retry_after_ms, .. }
            | CallError::NotServedYet { retry_after_ms, .. }
            | CallError::HostAtCapacity { retry_after_ms, .. } => Some(*retry_after_ms),
            _ => None,
        }
    }

    /// A human-readable message (never contains secrets: providers' messages are theirs).
    pub fn message(&self) -> String {
        match self {
            CallError::Provider(p) => match p {
                ProviderFailure::InvalidInput(m)
                | ProviderFailure::Unauthorized(m)
                | ProviderFailure::NotFound(m)
                | ProviderFailure::Internal(m) => m.clone(),
                ProviderFailure::RateLimited { retry_after_ms } => {
                    format!("rate limited upstream; retry after {retry_after_ms} ms")
                }
                ProviderFailure::Unavailable { message, .. } => message.clone(),
                ProviderFailure::Timeout => "the upstream timed out".into(),
            },
            other => other.to_string(),
        }
    }

    /// The stable error body `{code, message, retryable, retry_after_ms?}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = json!({
            "code": self.code(),
            "message": self.message(),
            "retryable": self.retryable(),
        });
        if let Some(ms) = self.retry_after_ms() {
            body["retry_after_ms"] = json!(ms);
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_text_is_clipped_and_its_control_characters_replaced() {
        let e = CallError::Provider(ProviderFailure::Internal(clip_guest("\0".repeat(1 << 20))));
        let body = e.to_json().to_string();
        assert!(body.len() < 2 * MAX_GUEST_TEXT, "{} bytes", body.len());
        assert!(!body.contains("\\u0000"));
        let text = clip_guest("é".repeat(MAX_GUEST_TEXT));
        assert!(text.len() <= MAX_GUEST_TEXT && text.len() > MAX_GUEST_TEXT - 2);
        assert_eq!(clip_guest("line\nnext\ttab".into()), "line\nnext\ttab");
    }

    #[test]
    fn error_bodies_are_stable() {
        let e = CallError::Provider(ProviderFailure::RateLimited {
            retry_after_ms: 1500,
        });
        assert_eq!(e.status(), 429);
        assert_eq!(
            e.to_json(),
            json!({"code": "rate-limited", "message": "rate limited upstream; retry after 1500 ms", "retryable": true, "retry_after_ms": 1500})
        );
        let e = CallError::FuelExhausted(10);
        assert_eq!(
            (e.code(), e.status(), e.retryable()),
            ("fuel-exhausted", 500, false)
        );
        assert!(e.to_json().get("retry_after_ms").is_none());
    }
}
