//! Typed events for the calling tenant, through `greentic:events/publish`.
//!
//! An event is a name (`order.shipped`: `a-z`, `0-9`, `.`, `_`, `-`, starting with a letter)
//! and a JSON payload. The host stamps the tenant, this provider, the operation and the trace,
//! and hands the event to the sink the bundle configures; a provider cannot publish for another
//! tenant. Import it only where the bundle grants `events = true`; the host refuses a provider
//! that imports it ungranted.
//!
//! ```text
//! events::publish("order.shipped", &serde_json::json!({"order": id}))?;
//! ```

use serde::Serialize;

use crate::imports::greentic::events::publish as wit;
use crate::types::{ProviderError, UnavailableInfo};

pub use crate::imports::greentic::events::publish::EventError;

/// Publishes event `name` with `payload` (serialized to JSON); returns once the sink has it.
pub fn publish<T: Serialize + ?Sized>(name: &str, payload: &T) -> Result<(), EventError> {
    let json = serde_json::to_string(payload)
        .map_err(|e| EventError::InvalidPayload(format!("the payload does not serialize: {e}")))?;
    wit::publish(name, &json)
}

/// Publishes event `name` whose payload is already JSON text.
pub fn publish_json(name: &str, payload: &str) -> Result<(), EventError> {
    wit::publish(name, payload)
}

/// An event error as a provider error: a sink outage may be retried, anything else is the
/// provider's own mistake.
pub fn provider_error(e: EventError) -> ProviderError {
    match e {
        EventError::Unavailable(message) => ProviderError::Unavailable(UnavailableInfo {
            retry_after_ms: None,
            message,
        }),
        other => ProviderError::Internal(format!("publishing an event: {other:?}")),
    }
}
