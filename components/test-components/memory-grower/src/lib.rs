//! Hostile test provider: keeps allocating 1 MiB blocks (and touching them) until the host's
//! memory cap makes growth fail.

use greentic_provider_sdk::messaging::exports::greentic::messaging::outbound::{
    Guest, Message, SendResult,
};
use greentic_provider_sdk::types::{ProviderError, TenantCtx};

greentic_provider_sdk::provider_manifest!();

struct Grow;

impl Guest for Grow {
    fn send(_ctx: TenantCtx, _msg: Message) -> Result<SendResult, ProviderError> {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut block = vec![0u8; 1 << 20];
            block[0] = blocks.len() as u8;
            blocks.push(std::hint::black_box(block));
        }
    }
}

greentic_provider_sdk::export_messaging_provider!(Grow);
