//! The provider's key-value state, through `greentic:state/store`.
//!
//! The host scopes every key to the calling tenant and this provider, so a key is just the
//! provider's own name for a thing (`delivery/<id>`, `cursor`). Import it only where the
//! bundle grants `state = true`; the host refuses a provider that imports it ungranted.

use std::time::Duration;

use crate::imports::greentic::state::store;
use crate::types::{ProviderError, UnavailableInfo};

pub use crate::imports::greentic::state::store::{Entry, Page, StateError};

/// The value and revision of `key`, if set.
pub fn get(key: &str) -> Result<Option<Entry>, StateError> {
    store::get(key)
}

/// Sets `key`, expiring after `ttl` if given; the new revision.
pub fn set(key: &str, value: &[u8], ttl: Option<Duration>) -> Result<u64, StateError> {
    store::set(key, value, ttl.map(millis))
}

/// Removes `key`; whether it was set.
pub fn delete(key: &str) -> Result<bool, StateError> {
    store::delete(key)
}

/// Sets `key` only if its revision is `expected` (0: only if absent); the new revision, or
/// [`StateError::Conflict`] with the current one.
pub fn compare_and_swap(
    key: &str,
    expected: u64,
    value: &[u8],
    ttl: Option<Duration>,
) -> Result<u64, StateError> {
    store::compare_and_swap(key, expected, value, ttl.map(millis))
}

/// Records `key` if it was not recorded yet: `Ok(true)` the first time, `Ok(false)` for every
/// later call while the record lives (`ttl`). The building block of de-duplication.
pub fn first_time(key: &str, ttl: Option<Duration>) -> Result<bool, StateError> {
    match compare_and_swap(key, 0, &[], ttl) {
        Ok(_) => Ok(true),
        Err(StateError::Conflict(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One page of keys starting with `prefix`, after `after`.
pub fn list_keys(prefix: &str, after: Option<&str>, limit: u32) -> Result<Page, StateError> {
    store::list_keys(prefix, after, limit)
}

/// A state error as a provider error: a backend outage may be retried, anything else is
/// the provider's own mistake.
pub fn provider_error(e: StateError) -> ProviderError {
    match e {
        StateError::Unavailable(message) => ProviderError::Unavailable(UnavailableInfo {
            retry_after_ms: None,
            message,
        }),
        other => ProviderError::Internal(format!("state: {other:?}")),
    }
}

/// The error for state a provider kept losing races on (its compare-and-swap retries spent):
/// `unavailable` with a short retry-after, so the host's retry (for a keyed call) or the
/// caller tries again.
pub fn contended(what: &str) -> ProviderError {
    ProviderError::Unavailable(UnavailableInfo {
        retry_after_ms: Some(100),
        message: format!("{what} is contended; retry"),
    })
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}
