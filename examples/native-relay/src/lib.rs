//! A messaging provider for a relay API that has no idempotency key, as a Rust crate written
//! against the messaging contract's trait: registered as `relay` in any host binary it is
//! linked into (`form = "native"`, `source = "native:relay"`), or served as a sidecar by
//! `greentic-sidecar --provider relay`. The Python sidecar `examples/sidecar-python` is the
//! same provider in another language.
//!
//! Each send POSTs `{"to", "text", "thread"}` to the tenant's `url` with `Authorization:
//! Bearer RELAY_TOKEN`. A keyed delivery (the message's key, else the call's) is remembered in
//! the host's state for a day under `sent/{key}` and answered from there when repeated, so a
//! retried call never reaches the relay twice. The relay's statuses map onto `provider-error`
//! as every greentic messaging provider's do.
//!
//! A native provider's network is its own: the host cannot hold it to `outbound_hosts`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use greentic_interfaces::native::messaging::{Message, Provider, SendResult};
use greentic_interfaces::native::{
    Attribute, Exports, Host, Level, ProviderError, RateLimit, SecretError, SpanStatus, TenantCtx,
    UnavailableInfo, async_trait,
};

/// The manifest, as a component embeds it.
pub const MANIFEST: &str = include_str!("../provider.json");

/// The secret holding the tenant's bearer token.
pub const TOKEN: &str = "RELAY_TOKEN";

/// How long a keyed delivery is remembered.
const REMEMBER_MS: u64 = 24 * 3600 * 1000;

/// The provider.
pub struct Relay;

/// What this crate exports, for a host or a sidecar.
pub fn exports() -> Exports {
    Exports::Messaging(Arc::new(Relay))
}

greentic_interfaces::register_native!("relay", MANIFEST, exports);

/// One HTTP client for every call (its connections are pooled), with the system's roots.
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        let builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        let builder = match tls {
            Ok(tls) => builder.tls_backend_preconfigured(tls),
            Err(_) => builder,
        };
        builder.build().unwrap_or_default()
    })
}

#[async_trait]
impl Provider for Relay {
    async fn send(
        &self,
        host: &dyn Host,
        ctx: TenantCtx,
        msg: Message,
    ) -> Result<SendResult, ProviderError> {
        let config: serde_json::Value = serde_json::from_str(&host.config_document().await?)
            .map_err(|e| ProviderError::Internal(format!("the tenant's configuration: {e}")))?;
        let url = config
            .get("url")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| ProviderError::InvalidInput("the configuration has no `url`".into()))?
            .to_string();
        let timeout_ms = config
            .get("timeout_ms")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(5_000);
        let token = match host.secret(TOKEN).await? {
            Ok(token) => token,
            Err(SecretError::NotFound(_) | SecretError::Denied(_)) => {
                return Err(ProviderError::Unauthorized(format!(
                    "{TOKEN} is not bound for this tenant"
                )));
            }
            Err(SecretError::InvalidName(m)) => return Err(ProviderError::Internal(m)),
        };
        let key = msg.idempotency_key.clone().or(ctx.idempotency_key.clone());
        if let Some(key) = &key
            && let Ok(Some(seen)) = host.state_get(&format!("sent/{key}")).await?
            && let Ok(done) = serde_json::from_slice::<serde_json::Value>(&seen.value)
        {
            return Ok(SendResult {
                id: done["id"].as_str().unwrap_or_default().to_string(),
                delivered_at_ms: done["delivered_at_ms"].as_u64().unwrap_or_default(),
            });
        }
        // The delivery's own span, a child of the host's span for the call.
        let span = host.span_new("relay.deliver", None).await?;
        host.span_set_attribute(span, "to", &msg.to).await?;
        let token = String::from_utf8_lossy(&token).into_owned();
        let answer = deliver(&url, timeout_ms, &token, &msg, key.as_deref()).await;
        let status = match &answer {
            Ok(_) => SpanStatus::Ok,
            Err(e) => SpanStatus::Error(kind(e).into()),
        };
        host.span_set_status(span, status).await?;
        host.span_end(span).await?;
        let done = answer?;
        host.log(Level::Info, "relayed", vec![Attribute::new("to", &msg.to)])
            .await?;
        if let Some(key) = &key {
            let record =
                serde_json::json!({"id": done.id, "delivered_at_ms": done.delivered_at_ms});
            // A failure to remember is not a failed delivery: the message went out.
            let _ = host
                .state_set(
                    &format!("sent/{key}"),
                    record.to_string().into_bytes(),
                    Some(REMEMBER_MS),
                )
                .await?;
        }
        Ok(done)
    }
}

/// The case of `e`, as the span's status says it.
fn kind(e: &ProviderError) -> &'static str {
    match e {
        ProviderError::InvalidInput(_) => "invalid_input",
        ProviderError::Unauthorized(_) => "unauthorized",
        ProviderError::NotFound(_) => "not_found",
        ProviderError::RateLimited(_) => "rate_limited",
        ProviderError::Unavailable(_) => "unavailable",
        ProviderError::Timeout => "timeout",
        ProviderError::Internal(_) => "internal",
    }
}

/// `Retry-After` in milliseconds, if it is a number of seconds.
fn retry_after_ms(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| s * 1000)
}

async fn deliver(
    url: &str,
    timeout_ms: u64,
    token: &str,
    msg: &Message,
    key: Option<&str>,
) -> Result<SendResult, ProviderError> {
    let body = serde_json::json!({"to": msg.to, "text": msg.text, "thread": msg.thread});
    let sent = client()
        .post(url)
        .timeout(Duration::from_millis(timeout_ms))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Err(ProviderError::Timeout),
        Err(e) if e.is_builder() => {
            return Err(ProviderError::InvalidInput(format!(
                "the configured url `{url}` cannot be requested: {e}"
            )));
        }
        Err(e) => {
            return Err(ProviderError::Unavailable(UnavailableInfo {
                retry_after_ms: None,
                message: format!("the relay is unreachable: {e}"),
            }));
        }
    };
    let status = response.status().as_u16();
    let retry = retry_after_ms(&response);
    match status {
        200..=299 => {}
        429 => {
            return Err(ProviderError::RateLimited(RateLimit {
                retry_after_ms: retry.unwrap_or(1_000),
            }));
        }
        401 | 403 => {
            return Err(ProviderError::Unauthorized(format!(
                "the relay refused the token ({status})"
            )));
        }
        404 => {
            return Err(ProviderError::NotFound(
                "the relay has no such recipient".into(),
            ));
        }
        400..=499 => {
            return Err(ProviderError::InvalidInput(format!(
                "the relay refused the message ({status})"
            )));
        }
        _ => {
            return Err(ProviderError::Unavailable(UnavailableInfo {
                retry_after_ms: retry,
                message: format!("the relay answered {status}"),
            }));
        }
    }
    let reply: serde_json::Value = match response.bytes().await {
        Ok(b) if b.is_empty() => serde_json::json!({}),
        Ok(b) => serde_json::from_slice(&b).unwrap_or(serde_json::json!({})),
        Err(e) if e.is_timeout() => return Err(ProviderError::Timeout),
        Err(e) => {
            return Err(ProviderError::Unavailable(UnavailableInfo {
                retry_after_ms: None,
                message: format!("the relay's answer broke off: {e}"),
            }));
        }
    };
    let id = match reply.get("id") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) if !v.is_null() => v.to_string(),
        _ => key.unwrap_or_default().to_string(),
    };
    Ok(SendResult {
        id,
        delivered_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    })
}
