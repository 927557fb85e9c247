//! Test provider: echoes what it is sent, so tests can see exactly what a call carried.
//!
//! The id is `{tenant}/{team}/{user}:{to}:{text}`, followed by `@{label}` when the tenant's
//! configuration has a `label`; the delivery time is the host's wall clock.

use greentic_provider_sdk::config;
use greentic_provider_sdk::messaging::exports::greentic::messaging::outbound::{
    Guest, Message, SendResult,
};
use greentic_provider_sdk::telemetry::{SpanGuard, info};
use greentic_provider_sdk::types::{ProviderError, TenantCtx};

greentic_provider_sdk::provider_manifest!();

struct Echo;

impl Guest for Echo {
    fn send(ctx: TenantCtx, msg: Message) -> Result<SendResult, ProviderError> {
        let span = SpanGuard::start("echo.send");
        span.attr("to", &msg.to);
        if msg.to.is_empty() {
            let e = ProviderError::InvalidInput("`to` is empty".into());
            span.finish::<(), _>(&Err(&e));
            return Err(e);
        }
        let mut id = echo_id(&ctx, &msg);
        if let Some(label) = config::get::<String>("/label")? {
            id.push('@');
            id.push_str(&label);
        }
        info("echoed", &[("to", &msg.to)]);
        span.ok();
        Ok(SendResult {
            id,
            delivered_at_ms: now_ms(),
        })
    }
}

fn echo_id(ctx: &TenantCtx, msg: &Message) -> String {
    format!(
        "{}/{}/{}:{}:{}",
        ctx.tenant,
        ctx.team.as_deref().unwrap_or("-"),
        ctx.user.as_deref().unwrap_or("-"),
        msg.to,
        msg.text
    )
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

greentic_provider_sdk::export_messaging_provider!(Echo);
