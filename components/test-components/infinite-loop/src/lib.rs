//! Hostile test provider: `send` never returns. The host must stop it (fuel or deadline)
//! without affecting other tenants.

use greentic_provider_sdk::messaging::exports::greentic::messaging::outbound::{
    Guest, Message, SendResult,
};
use greentic_provider_sdk::types::{ProviderError, TenantCtx};

greentic_provider_sdk::provider_manifest!();

struct Spin;

impl Guest for Spin {
    fn send(_ctx: TenantCtx, msg: Message) -> Result<SendResult, ProviderError> {
        let mut x = msg.text.len() as u64;
        loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

greentic_provider_sdk::export_messaging_provider!(Spin);
