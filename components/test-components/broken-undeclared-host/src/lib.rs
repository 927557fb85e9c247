//! Broken test provider: also calls a host its manifest does not declare (the conformance suite's manifest-truth.behaviour must fail).

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
        deliver::deliver(&ctx, &msg, deliver::Flaw::CallsUndeclaredHost)
    }
}

greentic_provider_sdk::export_messaging_provider!(Broken);
