//! The echo provider as a Rust crate written against the messaging contract's trait
//! ([`greentic_interfaces::native::messaging::Provider`]): the same behaviour as the `echo`
//! test component, in the two forms a Rust crate can take.
//!
//! - **native**: linked into a host binary, it is registered as `echo`
//!   (`[providers.X] form = "native"`, `source = "native:echo"`); the `greentic-host` binary
//!   links it with its `native-echo` feature (on by default).
//! - **sidecar**: `greentic-sidecar --provider echo` serves [`Echo`] over gRPC with
//!   `greentic_remote::sidecar::serve`.
//!
//! The id is `{tenant}/{team}/{user}:{to}:{text}`, followed by `@{label}` when the tenant's
//! configuration has a `label`; an empty `to` is `invalid-input`; sent to `@deployment`, the id
//! is what the host says of where it runs. Each send is a span `echo.send` (attribute `to`)
//! and an `info` record `echoed`, as the component's.

use std::sync::Arc;

use greentic_interfaces::native::messaging::{Message, Provider, SendResult};
use greentic_interfaces::native::{
    Attribute, Cloud, ConfigError, Exports, Host, Level, Platform, ProviderError, SpanStatus,
    TenantCtx, async_trait,
};

/// The manifest, as a component embeds it.
pub const MANIFEST: &str = include_str!("../provider.json");

/// The provider.
pub struct Echo;

/// What this crate exports, for a host or a sidecar.
pub fn exports() -> Exports {
    Exports::Messaging(Arc::new(Echo))
}

greentic_interfaces::register_native!("echo", MANIFEST, exports);

#[async_trait]
impl Provider for Echo {
    async fn send(
        &self,
        host: &dyn Host,
        ctx: TenantCtx,
        msg: Message,
    ) -> Result<SendResult, ProviderError> {
        let span = host.span_new("echo.send", None).await?;
        host.span_set_attribute(span, "to", &msg.to).await?;
        let sent = answer(host, &ctx, &msg).await;
        let status = match &sent {
            Ok(_) => SpanStatus::Ok,
            Err(e) => SpanStatus::Error(format!("{e:?}")),
        };
        host.span_set_status(span, status).await?;
        host.span_end(span).await?;
        sent
    }
}

async fn answer(
    host: &dyn Host,
    ctx: &TenantCtx,
    msg: &Message,
) -> Result<SendResult, ProviderError> {
    if msg.to.is_empty() {
        return Err(ProviderError::InvalidInput("`to` is empty".into()));
    }
    if msg.to == "@deployment" {
        return Ok(SendResult {
            id: deployment(ctx),
            delivered_at_ms: now_ms(),
        });
    }
    let mut id = format!(
        "{}/{}/{}:{}:{}",
        ctx.tenant,
        ctx.team.as_deref().unwrap_or("-"),
        ctx.user.as_deref().unwrap_or("-"),
        msg.to,
        msg.text
    );
    match host.config_get("/label").await? {
        Ok(json) => {
            let label: String = serde_json::from_str(&json).map_err(|e| {
                ProviderError::InvalidInput(format!("tenant configuration /label: {e}"))
            })?;
            id.push('@');
            id.push_str(&label);
        }
        Err(ConfigError::NotFound(_)) => {}
        Err(ConfigError::InvalidKey(key)) => {
            return Err(ProviderError::Internal(format!(
                "`{key}` is not a JSON Pointer"
            )));
        }
    }
    host.log(Level::Info, "echoed", vec![Attribute::new("to", &msg.to)])
        .await?;
    Ok(SendResult {
        id,
        delivered_at_ms: now_ms(),
    })
}

fn deployment(ctx: &TenantCtx) -> String {
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
