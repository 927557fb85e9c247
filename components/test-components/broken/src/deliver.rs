//! A correct incoming-webhook sender (config `url`, optional bearer token, idempotency key, SDK
//! error mapping) with the one [`Flaw`] its configuration names switched in; the conformance
//! suite must fail exactly the cases that catch it.

use greentic_provider_sdk::messaging::exports::greentic::messaging::outbound::{
    Message, SendResult,
};
use greentic_provider_sdk::telemetry::{self, SpanGuard};
use greentic_provider_sdk::types::{ProviderError, TenantCtx};
use greentic_provider_sdk::{config, errors, http, secrets};

/// The secret holding the bearer token.
pub const TOKEN_SECRET: &str = "WEBHOOK_BEARER_TOKEN";

/// The one thing a broken provider gets wrong.
#[derive(Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flaw {
    /// Nothing: a correct provider.
    None,
    /// Reports an upstream 429 as `internal`, dropping the retry-after.
    RateLimitAsInternal,
    /// Keeps the first bearer token it reads in a static and sends it on every later call.
    CachesFirstToken,
    /// Sends the token inside HTTP Basic auth (`base64(account:token)`), keeping the first one
    /// it reads in a static for every later call.
    CachesFirstBasicCredential,
    /// Logs the bearer token.
    LogsToken,
    /// Sends the token inside HTTP Basic auth, and logs the `Authorization` header it sends.
    LogsBasicAuthorization,
    /// Does not forward the idempotency key.
    DropsIdempotencyKey,
    /// Emits no span.
    NoSpan,
    /// Also calls a host its manifest does not declare (and ignores the refusal).
    CallsUndeclaredHost,
    /// Panics when the connection to the upstream fails.
    PanicsOnConnectionError,
}

#[derive(serde::Deserialize)]
struct Config {
    url: String,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    flaw: Flaw,
}

fn default_timeout_ms() -> u64 {
    10_000
}

static CACHED_TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sends `msg` as `{"text": …, "channel": …}` to the configured URL, with the configured flaw.
pub fn deliver(ctx: &TenantCtx, msg: &Message) -> Result<SendResult, ProviderError> {
    let config: Config = config::load()?;
    if config.flaw == Flaw::NoSpan {
        return attempt(ctx, msg, &config);
    }
    let span = SpanGuard::start("broken.send");
    let result = attempt(ctx, msg, &config);
    span.finish(&result);
    result
}

fn attempt(ctx: &TenantCtx, msg: &Message, config: &Config) -> Result<SendResult, ProviderError> {
    let flaw = config.flaw;
    let body = serde_json::json!({"text": msg.text, "channel": msg.to}).to_string();
    let mut request = http::Request::post_json(&config.url, body.into_bytes());
    request.timeout_ms = config.timeout_ms;
    let key = msg
        .idempotency_key
        .as_deref()
        .or(ctx.idempotency_key.as_deref());
    if let Some(key) = key
        && flaw != Flaw::DropsIdempotencyKey
    {
        request = request.header("idempotency-key", key);
    }
    if let Some(secret) = secrets::optional(TOKEN_SECRET)? {
        let mut token = secret.expose_str()?.to_string();
        if flaw == Flaw::CachesFirstToken {
            token = CACHED_TOKEN.get_or_init(|| token.clone()).clone();
        }
        if flaw == Flaw::LogsToken {
            telemetry::info("sending with bearer token", &[("token", &token)]);
        }
        let basic = matches!(
            flaw,
            Flaw::CachesFirstBasicCredential | Flaw::LogsBasicAuthorization
        );
        let authorization = if basic {
            if flaw == Flaw::CachesFirstBasicCredential {
                token = CACHED_TOKEN.get_or_init(|| token.clone()).clone();
            }
            format!(
                "Basic {}",
                base64_encode(format!("account:{token}").as_bytes())
            )
        } else {
            format!("Bearer {token}")
        };
        if flaw == Flaw::LogsBasicAuthorization {
            telemetry::info(
                "sending to the upstream",
                &[("authorization", &authorization)],
            );
        }
        request = request.header("authorization", &authorization);
    }
    if flaw == Flaw::CallsUndeclaredHost {
        let beacon = http::Request::post_json("https://beacon.example.net/collect", Vec::new());
        let _ = http::send(&beacon);
    }
    let response = match http::send(&request) {
        Err(http::HttpError::Connection(e)) if flaw == Flaw::PanicsOnConnectionError => {
            panic!("upstream connection failed: {e}")
        }
        other => other?,
    };
    if flaw == Flaw::RateLimitAsInternal && response.status == 429 {
        return Err(ProviderError::Internal(
            "the upstream refused the message".into(),
        ));
    }
    let now = now_ms();
    if let Some(e) = errors::from_status(response.status, response.header("retry-after"), now, "") {
        return Err(e);
    }
    Ok(SendResult {
        id: key.map_or_else(|| format!("sent-{now}"), str::to_string),
        delivered_at_ms: now,
    })
}

/// Standard base64 with padding (what HTTP Basic auth uses).
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
