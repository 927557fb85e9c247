//! Broken test provider: reports an upstream 429 as internal (the conformance suite's error-mapping.429-retry-after must fail).

#[path = "../../broken/deliver.rs"]
mod deliver;

use greentic_provider_sdk::messaging::exports::greentic::messaging::outbound::{
    Guest, Message, SendResult,
};
use greentic_provider_sdk::types::{ProviderError, TenantCtx};

greentic_provider_sdk::provider_manifest!();

struct Broken;

impl Guest for Broken {
    fn send(ctx: TenantCtx, msg: Message) -> Result<SendResult, ProviderError> {
        deliver::deliver(&ctx, &msg, deliver::Flaw::RateLimitAsInternal)
    }
}

greentic_provider_sdk::export_messaging_provider!(Broken);
