//! `webhook-github`: receives GitHub webhook deliveries over `wasi:http`.
//!
//! Each delivery must carry `X-Hub-Signature-256: sha256=<hex>`, the HMAC-SHA256 of the raw body
//! under the tenant's `GITHUB_WEBHOOK_SECRET`, compared in constant time. Answers:
//! 202 accepted, 401 missing/bad signature, 400 malformed JSON or no `X-GitHub-Delivery`,
//! 405 not a POST, 409 a delivery id received before, 413 too large, 500 when the tenant has no
//! secret bound, 503 when the delivery cannot be recorded. It logs the event type and delivery
//! id — never the secret or the body.
//!
//! Each accepted delivery id is recorded in `greentic:state` (scoped by the host to the tenant)
//! for `replay_window_secs`, so a replayed delivery is refused rather than processed twice.
//! GitHub's signature covers the body, not the headers, so the signature is recorded beside the
//! id: a captured delivery replayed under a fresh id is refused too (GitHub's bodies differ
//! from one delivery to the next).

pub mod logic;

use greentic_provider_sdk::prelude::*;

use logic::{Config, Outcome};

/// The secret that signs deliveries.
pub const SECRET: &str = "GITHUB_WEBHOOK_SECRET";

struct GithubWebhook;

#[provider]
impl Webhook for GithubWebhook {
    fn max_body_bytes() -> usize {
        config::load::<Config>().map_or(1 << 20, |c| c.max_body_bytes)
    }

    fn handle(ctx: &Ctx, request: Request) -> Response {
        let outcome = process(ctx, &request);
        match &outcome {
            Outcome::Accepted { event, delivery } => telemetry::info(
                "github delivery accepted",
                &[("event", event), ("delivery", delivery)],
            ),
            other => telemetry::warn("github delivery refused", &[("outcome", other.code())]),
        }
        let (status, message) = outcome.response();
        Response::message(status, &message).outcome(outcome.code())
    }
}

fn process(ctx: &Ctx, request: &Request) -> Outcome {
    let Ok(config) = config::load::<Config>() else {
        return Outcome::Misconfigured;
    };
    if request.method != "POST" {
        return Outcome::WrongMethod;
    }
    let event = request
        .header("x-github-event")
        .unwrap_or("unknown")
        .to_string();
    let delivery = request.header("x-github-delivery").map(str::to_string);
    ctx.attr("github.event", &event);
    if let Some(delivery) = &delivery {
        ctx.attr("github.delivery", delivery);
    }
    let Ok(secret) = secrets::get(SECRET) else {
        return Outcome::Misconfigured;
    };
    let signature = request.header("x-hub-signature-256");
    if let Err(e) = logic::verify_signature(secret.expose(), &request.body, signature) {
        return Outcome::BadSignature(e);
    }
    drop(secret);
    let Some(delivery) = delivery else {
        return Outcome::MissingDeliveryId;
    };
    if !logic::valid_delivery_id(&delivery) {
        return Outcome::Malformed("X-GitHub-Delivery is not a delivery id".into());
    }
    let signature = signature.unwrap_or_default();
    match logic::check_payload(&request.body, event, delivery) {
        Outcome::Accepted { event, delivery } => {
            let window = Some(std::time::Duration::from_secs(config.replay_window_secs));
            // The id is not signed, so the (verified) signature, which covers the body, is
            // recorded too: a captured delivery replayed under a fresh id is refused as well.
            let first =
                state::first_time(&format!("delivery/{delivery}"), window).and_then(|new_id| {
                    if new_id {
                        state::first_time(&format!("signature/{signature}"), window)
                    } else {
                        Ok(false)
                    }
                });
            match first {
                Ok(true) => Outcome::Accepted { event, delivery },
                Ok(false) => Outcome::Replayed(delivery),
                Err(state::StateError::InvalidKey(_)) => {
                    Outcome::Malformed("X-GitHub-Delivery is not a delivery id".into())
                }
                Err(_) => Outcome::StateUnavailable,
            }
        }
        other => other,
    }
}
