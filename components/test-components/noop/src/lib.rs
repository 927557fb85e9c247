//! Benchmark provider: the least a provider can do — build an id from the message — so that a
//! call's cost is the host's. Its native twin is `greentic_host`'s `invoke` benchmark baseline.

use greentic_provider_sdk::messaging::exports::greentic::messaging::outbound::{
    Guest, Message, SendResult,
};
use greentic_provider_sdk::types::{ProviderError, TenantCtx};

greentic_provider_sdk::provider_manifest!();

struct Noop;

impl Guest for Noop {
    fn send(_ctx: TenantCtx, msg: Message) -> Result<SendResult, ProviderError> {
        Ok(SendResult {
            id: format!("{}:{}", msg.to, msg.text),
            delivered_at_ms: 0,
        })
    }
}

greentic_provider_sdk::export_messaging_provider!(Noop);
