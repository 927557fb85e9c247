//! Broken test provider: a correct incoming-webhook sender with one flaw — chosen by the
//! tenant's configuration (`flaw`) — switched in; with `flaw = "none"` it passes every case.
//! The conformance suite must fail exactly the cases that catch each flaw (see `deliver::Flaw`).

mod deliver;

use greentic_provider_sdk::messaging::exports::greentic::messaging::outbound::{
    Guest, Message, SendResult,
};
use greentic_provider_sdk::types::{ProviderError, TenantCtx};

greentic_provider_sdk::provider_manifest!();

struct Broken;

impl Guest for Broken {
    fn send(ctx: TenantCtx, msg: Message) -> Result<SendResult, ProviderError> {
        deliver::deliver(&ctx, &msg)
    }
}

greentic_provider_sdk::export_messaging_provider!(Broken);
