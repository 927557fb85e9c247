//! Test provider whose manifest lets an instance serve later calls of the same tenant
//! (`"instances": "per-tenant"`). It remembers, in statics, what its instance has seen and
//! answers with it: the id is `{nonce}:{calls}:{tenants}` — a random nonce drawn by the
//! instance's first call, the calls it has served (this one included), and every tenant it has
//! served, comma-separated in order of first call. A `to` of `trap` traps after counting.

use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use greentic_provider_sdk::messaging::exports::greentic::messaging::outbound::{
    Guest, Message, SendResult,
};
use greentic_provider_sdk::types::{ProviderError, TenantCtx};

greentic_provider_sdk::provider_manifest!();

/// What this instance has seen.
struct Seen {
    nonce: u64,
    calls: u32,
    tenants: Vec<String>,
}

static SEEN: Mutex<Option<Seen>> = Mutex::new(None);

struct Remember;

impl Guest for Remember {
    fn send(ctx: TenantCtx, msg: Message) -> Result<SendResult, ProviderError> {
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        let seen = seen.get_or_insert_with(|| Seen {
            // RandomState is seeded from the host's random source.
            nonce: RandomState::new().hash_one(0u8),
            calls: 0,
            tenants: Vec::new(),
        });
        seen.calls += 1;
        if !seen.tenants.contains(&ctx.tenant) {
            seen.tenants.push(ctx.tenant.clone());
        }
        if msg.to == "trap" {
            panic!("asked to trap");
        }
        Ok(SendResult {
            id: format!(
                "{:016x}:{}:{}",
                seen.nonce,
                seen.calls,
                seen.tenants.join(",")
            ),
            delivered_at_ms: 0,
        })
    }
}

greentic_provider_sdk::export_messaging_provider!(Remember);
