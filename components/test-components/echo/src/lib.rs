//! Test provider: echoes what it is sent, so tests can see exactly what a call carried.
//!
//! The id is `{tenant}/{team}/{user}:{to}:{text}`, followed by `@{label}` when the tenant's
//! configuration has a `label`; the delivery time is the host's wall clock. Sent to
//! `@deployment`, the id is what the host says of where it runs:
//! `{cloud}/{region}/{platform}/{runtime}` (`-` for none).

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
        if msg.to == "@deployment" {
            span.ok();
            return Ok(SendResult {
                id: deployment(&ctx),
                delivered_at_ms: now_ms(),
            });
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

fn deployment(ctx: &TenantCtx) -> String {
    use greentic_provider_sdk::types::{Cloud, Platform};
    let d = &ctx.deployment;
    let cloud = match &d.cloud {
        Cloud::Aws => "aws",
        Cloud::Gcp => "gcp",
        Cloud::Azure => "azure",
        Cloud::Hetzner => "hetzner",
        Cloud::Local => "local",
        Cloud::Other(s) => s,
    };
    let platform = match &d.platform {
        Platform::K8s => "k8s",
        Platform::Nomad => "nomad",
        Platform::Systemd => "systemd",
        Platform::CfWorkers => "cf-workers",
        Platform::Lambda => "lambda",
        Platform::Baremetal => "baremetal",
        Platform::Other(s) => s,
    };
    format!(
        "{cloud}/{}/{platform}/{}",
        d.region.as_deref().unwrap_or("-"),
        d.runtime.as_deref().unwrap_or("-")
    )
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

greentic_provider_sdk::export_messaging_provider!(Echo);
