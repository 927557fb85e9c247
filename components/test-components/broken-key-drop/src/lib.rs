//! Broken test provider: does not forward the idempotency key (the conformance suite's idempotency and keyed retry cases must fail).

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
        deliver::deliver(&ctx, &msg, deliver::Flaw::DropsIdempotencyKey)
    }
}

greentic_provider_sdk::export_messaging_provider!(Broken);
