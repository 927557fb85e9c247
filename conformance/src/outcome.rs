//! What one call through the host came to.

use std::time::{Duration, Instant};

/// The outcome of one call through the host.
#[derive(Debug, Clone)]
pub(crate) struct CallOutcome {
    /// `ok`, or the error body's `code`.
    pub code: String,
    pub retry_after_ms: Option<u64>,
    /// The result's `id`.
    pub id: Option<String>,
    pub message: String,
    pub elapsed: Duration,
}

/// The answer to one webhook delivery.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryOutcome {
    pub status: u16,
    /// The host's error code when the host (not the provider) answered.
    pub host_error: Option<String>,
}

/// Error codes only the host produces (the provider failed to behave, or was not reached).
pub(crate) const HOST_CODES: &[&str] = &[
    "fuel-exhausted",
    "deadline-exceeded",
    "memory-limit",
    "tenant-busy",
    "guest-trap",
    "no-route",
    "bad-request",
    "circuit-open",
    "host-internal",
    "result-too-large",
    "unauthenticated",
];

/// A call the host did not answer.
pub(crate) fn failed(message: String, started: Instant) -> CallOutcome {
    CallOutcome {
        code: "no-answer".into(),
        retry_after_ms: None,
        id: None,
        message,
        elapsed: started.elapsed(),
    }
}
