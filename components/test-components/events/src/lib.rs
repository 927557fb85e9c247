//! Test provider for `greentic:events`: a message's `to` is `NAME` or `NAME*COUNT`, its `text`
//! the payload (JSON text, published as it is). The provider publishes the event COUNT times
//! (default once) and answers with how many it published; the first refusal is its error, with
//! the host's reason (`TooMany`, `TooLarge`, `InvalidName`, ...) in the message.

use greentic_provider_sdk::events::{self, EventError};
use greentic_provider_sdk::messaging::exports::greentic::messaging::outbound::{
    Guest, Message, SendResult,
};
use greentic_provider_sdk::types::{ProviderError, TenantCtx};

greentic_provider_sdk::provider_manifest!();

struct Events;

impl Guest for Events {
    fn send(_ctx: TenantCtx, msg: Message) -> Result<SendResult, ProviderError> {
        let (name, count) = match msg.to.split_once('*') {
            Some((name, n)) => (name, n.parse::<u32>().unwrap_or(1)),
            None => (msg.to.as_str(), 1),
        };
        for published in 0..count {
            if let Err(e) = events::publish_json(name, &msg.text) {
                let refused = match &e {
                    EventError::Unavailable(_) => return Err(events::provider_error(e)),
                    other => format!("{other:?}"),
                };
                return Err(ProviderError::InvalidInput(format!(
                    "published {published}, then refused: {refused}"
                )));
            }
        }
        Ok(SendResult {
            id: format!("published {count}"),
            delivered_at_ms: 0,
        })
    }
}

greentic_provider_sdk::export_messaging_provider!(Events);
