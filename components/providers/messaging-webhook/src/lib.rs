//! `messaging-webhook`: delivers a message as an HTTP POST to an incoming webhook.
//!
//! The JSON body is the shape Slack and Mattermost incoming webhooks accept (`text`, and
//! `channel`, `username`, `thread_ts`/`root_id` where given). The URL comes from the tenant's
//! configuration, an optional bearer token from the tenant's secrets, and the idempotency key is
//! sent as the `Idempotency-Key` header. Upstream failures map onto `provider-error` the same
//! way in every greentic provider (see `greentic_provider_sdk::errors`).

pub mod logic;

use greentic_provider_sdk::prelude::*;

use logic::Config;

/// The secret holding the optional bearer token.
pub const TOKEN_SECRET: &str = "WEBHOOK_BEARER_TOKEN";

struct MessagingWebhook;

#[provider]
impl Messaging for MessagingWebhook {
    fn send(ctx: &Ctx, msg: Message) -> Result<SendResult, ProviderError> {
        let config: Config = config::load()?;
        logic::validate_message(&msg)?;
        let body = logic::payload(&msg, &config).to_string().into_bytes();
        let request = http::Request::post_json(&config.url, body)
            .timeout_ms(config.timeout_ms)
            .idempotency_key(ctx.idempotency_key.as_deref())
            .bearer_from_secret(TOKEN_SECRET)?;
        let started = now_ms();
        let response = http::send(&request);
        telemetry::histogram_record(
            "messaging_webhook.upstream_ms",
            now_ms().saturating_sub(started) as f64,
            &[],
        );
        let response = response?;
        ctx.attr("http.status", &response.status.to_string());
        let now = now_ms();
        if let Some(e) = errors::from_status(
            response.status,
            response.header("retry-after"),
            now,
            &logic::excerpt(&response.body),
        ) {
            return Err(e);
        }
        Ok(SendResult {
            id: logic::result_id(&response, ctx.idempotency_key.as_deref(), now),
            delivered_at_ms: now,
        })
    }
}
