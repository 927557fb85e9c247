//! Hostile test provider: recurses without bound; the wasm stack overflows and traps.

use greentic_provider_sdk::messaging::exports::greentic::messaging::outbound::{
    Guest, Message, SendResult,
};
use greentic_provider_sdk::types::{ProviderError, TenantCtx};

greentic_provider_sdk::provider_manifest!();

struct Deep;

#[inline(never)]
#[allow(unconditional_recursion)] // the point of this component
fn descend(depth: u64, pad: [u64; 8]) -> u64 {
    let next = std::hint::black_box([pad[0].wrapping_add(depth); 8]);
    descend(depth + 1, next).wrapping_add(next[7])
}

impl Guest for Deep {
    fn send(_ctx: TenantCtx, msg: Message) -> Result<SendResult, ProviderError> {
        let n = descend(msg.text.len() as u64, [0; 8]);
        Ok(SendResult {
            id: n.to_string(),
            delivered_at_ms: 0,
        })
    }
}

greentic_provider_sdk::export_messaging_provider!(Deep);
