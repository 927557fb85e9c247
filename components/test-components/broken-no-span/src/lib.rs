//! Broken test provider: emits no span (the conformance suite's telemetry cases must fail).

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
        deliver::deliver(&ctx, &msg, deliver::Flaw::NoSpan)
    }
}

greentic_provider_sdk::export_messaging_provider!(Broken);
