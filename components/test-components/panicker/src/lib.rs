//! Hostile test provider: panics in the middle of `send` (a trap for the host).

use greentic_provider_sdk::messaging::exports::greentic::messaging::outbound::{
    Guest, Message, SendResult,
};
use greentic_provider_sdk::types::{ProviderError, TenantCtx};

greentic_provider_sdk::provider_manifest!();

struct Panic;

impl Guest for Panic {
    fn send(ctx: TenantCtx, msg: Message) -> Result<SendResult, ProviderError> {
        let half_done = format!("{}:{}", ctx.tenant, msg.to);
        if std::hint::black_box(true) {
            panic!("provider bug while handling {half_done}");
        }
        Ok(SendResult {
            id: half_done,
            delivered_at_ms: 0,
        })
    }
}

greentic_provider_sdk::export_messaging_provider!(Panic);
