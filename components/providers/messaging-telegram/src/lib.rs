//! `messaging-telegram`: sends a message through the Telegram Bot API.
//!
//! `POST https://api.telegram.org/bot<TOKEN>/sendMessage` with `chat_id` (the message's `to`),
//! `text`, and `reply_to_message_id` when the message names a thread. The API has no
//! idempotency key, so this provider de-duplicates keyed sends itself through `greentic:state`
//! (the host scopes the store to the tenant): a send first claims its key, a delivered key
//! records the result, and every later send of the key returns that result without calling
//! Telegram. A send Telegram refused gives the claim back, so a retry can deliver; a send whose
//! outcome is unknown (no answer: the connection dropped, a timeout) keeps it until it runs out
//! (two minutes), so a retry meanwhile is refused rather than delivered twice. Only the holder
//! of a claim writes the record (compare-and-swap on the claim's revision).

pub mod logic;

use greentic_provider_sdk::prelude::*;
use std::time::Duration;

use logic::{Claim, Config};

/// The secret holding the bot token.
pub const TOKEN_SECRET: &str = "TELEGRAM_BOT_TOKEN";

/// How long a claim on a key lasts if its send never finishes (the instance died, or the
/// send's outcome is unknown): longer than the longest `timeout_ms` and any tenant deadline.
const CLAIM_SECS: u64 = 120;

struct Telegram;

#[provider]
impl Messaging for Telegram {
    fn send(ctx: &Ctx, msg: Message) -> Result<SendResult, ProviderError> {
        deliver(ctx, &msg)
    }
}

fn deliver(ctx: &Ctx, msg: &Message) -> Result<SendResult, ProviderError> {
    let config: Config = config::load()?;
    logic::validate(msg)?;
    let Some(key) = ctx.idempotency_key.as_deref().map(logic::state_key) else {
        return send_once(msg, &config, ctx).map_err(|(e, _)| e);
    };
    let claim_revision = match claim(&key)? {
        Claim::Delivered(result) => {
            ctx.attr("dedupe", "delivered-before");
            return Ok(result);
        }
        Claim::Mine(revision) => revision,
        Claim::InFlight | Claim::Released => {
            return Err(ProviderError::Unavailable(UnavailableInfo {
                retry_after_ms: Some(1000),
                message: "a send with this idempotency key is in progress".into(),
            }));
        }
    };
    ctx.attr("dedupe", "first");
    let sent = send_once(msg, &config, ctx);
    // Only the holder of the claim writes the record (compare-and-swap on its revision): a
    // claim that ran out mid-send is not overwritten under whoever holds it now.
    let recorded = match &sent {
        Ok(result) => Some(state::compare_and_swap(
            &key,
            claim_revision,
            &logic::encode_result(result),
            Some(Duration::from_secs(config.dedupe_window_secs)),
        )),
        // Telegram answered with a failure: nothing was delivered, so a retry may deliver.
        Err((_, Delivery::Refused)) => Some(state::compare_and_swap(
            &key,
            claim_revision,
            logic::RELEASED,
            Some(Duration::from_secs(CLAIM_SECS)),
        )),
        // No answer: Telegram may have delivered it. The claim stays until it runs out, so a
        // retry within it is refused rather than delivered twice.
        Err((_, Delivery::Unknown)) => None,
    };
    if let Some(Err(e)) = recorded {
        telemetry::warn(
            "the idempotency record could not be written",
            &[("error", &format!("{e:?}"))],
        );
    }
    sent.map_err(|(e, _)| e)
}

/// Whether a failed send may have delivered.
enum Delivery {
    /// Telegram answered: it did not deliver.
    Refused,
    /// No answer (connection lost, timeout): it may have.
    Unknown,
}

/// Claims `key` for this send, or finds what an earlier send of it came to.
fn claim(key: &str) -> Result<Claim, ProviderError> {
    let pending = Some(Duration::from_secs(CLAIM_SECS));
    for _ in 0..4 {
        let attempt = match state::get(key).map_err(state::provider_error)? {
            None => state::compare_and_swap(key, 0, logic::PENDING, pending),
            Some(entry) => match logic::claimed(&entry.value) {
                Claim::Released => {
                    state::compare_and_swap(key, entry.revision, logic::PENDING, pending)
                }
                other => return Ok(other),
            },
        };
        match attempt {
            Ok(revision) => return Ok(Claim::Mine(revision)),
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
    ctx: &Ctx,
) -> Result<SendResult, (ProviderError, Delivery)> {
    let refused = |e| (e, Delivery::Refused);
    let token = secrets::required(TOKEN_SECRET).map_err(refused)?;
    let url = format!(
        "https://api.telegram.org/bot{}/sendMessage",
        token.expose_str().map_err(refused)?
    );
    let body = logic::payload(msg, config)
        .map_err(refused)?
        .to_string()
        .into_bytes();
    let mut request = http::Request::post_json(&url, body);
    request.timeout_ms = config.timeout_ms;
    drop(token);
    let response = http::send(&request).map_err(|e| (e.into(), Delivery::Unknown))?;
    ctx.attr("http.status", &response.status.to_string());
    let now = now_ms();
    if let Some(e) = logic::error(&response, now) {
        return Err(refused(e));
    }
    Ok(logic::result(&msg.to, &response.body, now))
}
