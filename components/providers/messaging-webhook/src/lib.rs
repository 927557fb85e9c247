//! `messaging-webhook`: delivers a message as an HTTP POST to an incoming webhook.
//!
//! The JSON body is the shape Slack and Mattermost incoming webhooks accept (`text`, and
//! `channel`, `username`, `thread_ts`/`root_id` where given). The URL comes from the tenant's
//! configuration, an optional bearer token from the tenant's secrets, and the idempotency key is
//! sent as the `Idempotency-Key` header. Upstream failures map onto `provider-error` the same
//! way in every greentic provider (see `greentic_provider_sdk::errors`).

pub mod logic;

use greentic_provider_sdk::messaging::exports::greentic::messaging::outbound::{
    Guest, Message, SendResult,
};
use greentic_provider_sdk::telemetry::{self, SpanGuard};
use greentic_provider_sdk::types::{ProviderError, TenantCtx};
use greentic_provider_sdk::{config, errors, http, secrets};

use logic::Config;

greentic_provider_sdk::provider_manifest!();

/// The secret holding the optional bearer token.
pub const TOKEN_SECRET: &str = "WEBHOOK_BEARER_TOKEN";

struct MessagingWebhook;

impl Guest for MessagingWebhook {
    fn send(ctx: TenantCtx, msg: Message) -> Result<SendResult, ProviderError> {
        let span = SpanGuard::start("messaging-webhook.send");
        let result = deliver(&ctx, &msg, &span);
        match &result {
            Ok(r) => {
                span.attr("outcome", "delivered");
                span.attr("message.id", &r.id);
            }
            Err(e) => {
                span.attr("outcome", logic::error_code(e));
            }
        }
        telemetry::counter_add(
            "messaging_webhook.sends",
            1,
            &[(
                "outcome",
                result
                    .as_ref()
                    .map_or_else(logic::error_code, |_| "delivered"),
            )],
        );
        span.finish(&result);
        result
    }
}

fn deliver(ctx: &TenantCtx, msg: &Message, span: &SpanGuard) -> Result<SendResult, ProviderError> {
    let config: Config = config::load()?;
    logic::validate_message(msg)?;
    let body = logic::payload(msg, &config).to_string().into_bytes();
    let mut request = http::Request::post_json(&config.url, body);
    request.timeout_ms = config.timeout_ms;
    let key = logic::idempotency_key(ctx, msg);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    if let Some(token) = secrets::optional(TOKEN_SECRET)? {
        request = request.header("authorization", &format!("Bearer {}", token.expose_str()?));
    }
    let started = logic::now_ms();
    let response = http::send(&request);
    telemetry::histogram_record(
        "messaging_webhook.upstream_ms",
        logic::now_ms().saturating_sub(started) as f64,
        &[],
    );
    let response = response?;
    span.attr("http.status", &response.status.to_string());
    let now = logic::now_ms();
    if let Some(e) = errors::from_status(
        response.status,
        response.header("retry-after"),
        now,
        &logic::excerpt(&response.body),
    ) {
        return Err(e);
    }
    Ok(SendResult {
        id: logic::result_id(&response, key, now),
        delivered_at_ms: now,
    })
}

greentic_provider_sdk::export_messaging_provider!(MessagingWebhook);
