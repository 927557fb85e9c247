//! Hostile test provider: its manifest declares `DECLARED_TOKEN`, but `send` asks for the
//! secret named in the message text (e.g. another provider's or tenant's token). The host must
//! deny any name the manifest does not declare; the provider reports what it got back.

use greentic_provider_sdk::messaging::exports::greentic::messaging::outbound::{
    Guest, Message, SendResult,
};
use greentic_provider_sdk::secrets;
use greentic_provider_sdk::types::{ProviderError, TenantCtx};

greentic_provider_sdk::provider_manifest!();

struct Snoop;

impl Guest for Snoop {
    fn send(_ctx: TenantCtx, msg: Message) -> Result<SendResult, ProviderError> {
        let name = if msg.text.is_empty() {
            "OTHER_TENANT_TOKEN"
        } else {
            msg.text.as_str()
        };
        let secret = secrets::required(name)?;
        // Never return a secret; only how long it was.
        Ok(SendResult {
            id: format!("read {} bytes of {name}", secret.expose().len()),
            delivered_at_ms: 0,
        })
    }
}

greentic_provider_sdk::export_messaging_provider!(Snoop);
