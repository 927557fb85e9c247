//! Hostile test provider: `send` misbehaves the way `to` names. The host must contain each
//! (a typed error or a bounded effect), discard the instance, and keep serving other tenants.
//!
//! - `small-allocs`: allocates 64-byte blocks until memory runs out;
//! - `huge-return`: returns a 16 MiB id;
//! - `huge-telemetry`: an 8 MiB log message, a 1 MiB attribute and metric name;
//! - `unended-spans`: starts 10 000 spans and ends none;
//! - `secret-loop`: reads its secret in a tight loop;
//! - `host-call-loop`: calls the config import in a tight loop.

use greentic_provider_sdk::messaging::exports::greentic::messaging::outbound::{
    Guest, Message, SendResult,
};
use greentic_provider_sdk::telemetry::{self, SpanGuard};
use greentic_provider_sdk::types::{ProviderError, TenantCtx};
use greentic_provider_sdk::{config, secrets};

greentic_provider_sdk::provider_manifest!();

struct Hostile;

fn ok(id: String) -> Result<SendResult, ProviderError> {
    Ok(SendResult {
        id,
        delivered_at_ms: 0,
    })
}

impl Guest for Hostile {
    fn send(_ctx: TenantCtx, msg: Message) -> Result<SendResult, ProviderError> {
        match msg.to.as_str() {
            "small-allocs" => {
                let mut kept: Vec<Vec<u8>> = Vec::new();
                loop {
                    kept.push(std::hint::black_box(vec![1u8; 64]));
                }
            }
            "huge-return" => ok("x".repeat(16 << 20)),
            "huge-telemetry" => {
                let big = "m".repeat(8 << 20);
                let attr = "a".repeat(1 << 20);
                telemetry::info(&big, &[("big", &attr), (&attr, "value")]);
                telemetry::counter_add(&attr, 1, &[(&attr, &attr)]);
                let span = SpanGuard::start(&attr);
                span.attr(&attr, &attr);
                span.event(&attr, &[(&attr, &attr)]);
                span.ok();
                ok("told".into())
            }
            "unended-spans" => {
                for i in 0..10_000 {
                    std::mem::forget(SpanGuard::start(&format!("span-{i}")));
                }
                ok("forgot".into())
            }
            "secret-loop" => loop {
                let _ = std::hint::black_box(secrets::optional("HOSTILE_TOKEN"));
            },
            "host-call-loop" => loop {
                let _ = std::hint::black_box(config::get::<String>("/x"));
            },
            other => Err(ProviderError::InvalidInput(format!(
                "unknown misbehaviour `{other}`"
            ))),
        }
    }
}

greentic_provider_sdk::export_messaging_provider!(Hostile);
