//! `messaging-telegram`: sends a message through the Telegram Bot API.
//!
//! `POST https://api.telegram.org/bot<TOKEN>/sendMessage` with `chat_id` (the message's `to`),
//! `text`, and `reply_to_message_id` when the message names a thread. The API has no
//! idempotency key, so this provider de-duplicates keyed sends itself through `greentic:state`
//! (the host scopes the store to the tenant): a send first claims its key, a delivered key
//! records the result, and every later send of the key returns that result without calling
//! Telegram; a failed send gives the claim back so a retry can deliver. A send whose outcome
//! is unknown (the connection dropped after Telegram received it) may still be delivered
//! twice — no client of an API without keys can rule that out.

pub mod logic;

use greentic_provider_sdk::messaging::exports::greentic::messaging::outbound::{
    Guest, Message, SendResult,
};
use greentic_provider_sdk::telemetry::{self, SpanGuard};
use greentic_provider_sdk::types::{ProviderError, TenantCtx, UnavailableInfo};
use greentic_provider_sdk::{config, errors, http, now_ms, secrets, state};

use logic::{Claim, Config};

greentic_provider_sdk::provider_manifest!();

/// The secret holding the bot token.
pub const TOKEN_SECRET: &str = "TELEGRAM_BOT_TOKEN";

/// How long a claim on a key lasts if its send never finishes (the instance died).
const CLAIM_SECS: u64 = 60;

struct Telegram;

impl Guest for Telegram {
    fn send(ctx: TenantCtx, msg: Message) -> Result<SendResult, ProviderError> {
        let span = SpanGuard::start("messaging-telegram.send");
        let result = deliver(&ctx, &msg, &span);
        let outcome = match &result {
            Ok(_) => "delivered",
            Err(e) => errors::code(e),
        };
        span.attr("outcome", outcome);
        telemetry::counter_add("messaging_telegram.sends", 1, &[("outcome", outcome)]);
        span.finish(&result);
        result
    }
}

fn deliver(ctx: &TenantCtx, msg: &Message, span: &SpanGuard) -> Result<SendResult, ProviderError> {
    let config: Config = config::load()?;
    logic::validate(msg)?;
    let key = msg
        .idempotency_key
        .as_deref()
        .or(ctx.idempotency_key.as_deref())
        .map(logic::state_key);
    if let Some(key) = &key {
        match claim(key)? {
            Claim::Delivered(result) => {
                span.attr("dedupe", "delivered-before");
                return Ok(result);
            }
            Claim::InFlight => {
                return Err(ProviderError::Unavailable(UnavailableInfo {
                    retry_after_ms: Some(1000),
                    message: "a send with this idempotency key is in progress".into(),
                }));
            }
            Claim::Mine => span.attr("dedupe", "first"),
        };
    }
    let sent = send_once(msg, &config, span);
    if let Some(key) = &key {
        let recorded = match &sent {
            Ok(result) => state::set(
                key,
                &logic::encode_result(result),
                Some(std::time::Duration::from_secs(config.dedupe_window_secs)),
            )
            .map(drop),
            // Not delivered: give the claim back, so a retry can deliver.
            Err(_) => state::delete(key).map(drop),
        };
        if let Err(e) = recorded {
            telemetry::warn(
                "the idempotency record could not be written",
                &[("error", &format!("{e:?}"))],
            );
        }
    }
    sent
}

/// Claims `key` for this send, or finds what an earlier send of it came to.
fn claim(key: &str) -> Result<Claim, ProviderError> {
    for _ in 0..4 {
        if let Some(entry) = state::get(key).map_err(state::provider_error)? {
            return Ok(logic::claimed(&entry.value));
        }
        match state::compare_and_swap(
            key,
            0,
            logic::PENDING,
            Some(std::time::Duration::from_secs(CLAIM_SECS)),
        ) {
            Ok(_) => return Ok(Claim::Mine),
            // Someone claimed it in between: look at what they left.
            Err(state::StateError::Conflict(_)) => continue,
            Err(e) => return Err(state::provider_error(e)),
        }
    }
    Ok(Claim::InFlight)
}

fn send_once(
    msg: &Message,
    config: &Config,
    span: &SpanGuard,
) -> Result<SendResult, ProviderError> {
    let token = secrets::required(TOKEN_SECRET)?;
    let url = format!(
        "https://api.telegram.org/bot{}/sendMessage",
        token.expose_str()?
    );
    let body = logic::payload(msg, config)?.to_string().into_bytes();
    let mut request = http::Request::post_json(&url, body);
    request.timeout_ms = config.timeout_ms;
    drop(token);
    let response = http::send(&request)?;
    span.attr("http.status", &response.status.to_string());
    let now = now_ms();
    if let Some(e) = logic::error(&response, now) {
        return Err(e);
    }
    Ok(logic::result(&msg.to, &response.body, now))
}

greentic_provider_sdk::export_messaging_provider!(Telegram);
