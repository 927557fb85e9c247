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

use greentic_provider_sdk::incoming::{self, ReadError, Request};
use greentic_provider_sdk::telemetry::{self, SpanGuard};
use greentic_provider_sdk::webhook::exports::wasi::http::incoming_handler::Guest;
use greentic_provider_sdk::webhook::wasi::http::types::{IncomingRequest, ResponseOutparam};
use greentic_provider_sdk::{config, secrets, state};

use logic::{Config, Outcome};

greentic_provider_sdk::provider_manifest!();

/// The secret that signs deliveries.
pub const SECRET: &str = "GITHUB_WEBHOOK_SECRET";

struct GithubWebhook;

impl Guest for GithubWebhook {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let span = SpanGuard::start("webhook-github.delivery");
        let outcome = process(request, &span);
        let (status, message) = outcome.response();
        span.attr("http.status", &status.to_string());
        span.attr("outcome", outcome.code());
        telemetry::counter_add(
            "webhook_github.deliveries",
            1,
            &[("outcome", outcome.code())],
        );
        match &outcome {
            Outcome::Accepted { event, delivery } => {
                telemetry::info(
                    "github delivery accepted",
                    &[("event", event), ("delivery", delivery)],
                );
                span.ok();
            }
            other => {
                telemetry::warn("github delivery refused", &[("outcome", other.code())]);
                span.fail(other.code());
            }
        }
        incoming::respond_json(response_out, status, &message);
    }
}

fn process(request: IncomingRequest, span: &SpanGuard) -> Outcome {
    let config: Config = match config::load() {
        Ok(config) => config,
        Err(_) => return Outcome::Misconfigured,
    };
    let request = match Request::read(request, config.max_body_bytes) {
        Ok(request) => request,
        Err(ReadError::TooLarge(limit)) => return Outcome::TooLarge(limit),
        Err(ReadError::Stream(_)) => {
            return Outcome::Malformed("the body could not be read".into());
        }
    };
    if request.method != "POST" {
        return Outcome::WrongMethod;
    }
    let event = request
        .header("x-github-event")
        .unwrap_or("unknown")
        .to_string();
    let delivery = request.header("x-github-delivery").map(str::to_string);
    span.attr("github.event", &event);
    if let Some(delivery) = &delivery {
        span.attr("github.delivery", delivery);
    }
    let secret = match secrets::get(SECRET) {
        Ok(secret) => secret,
        Err(_) => return Outcome::Misconfigured,
    };
    if let Err(e) = logic::verify_signature(
        secret.expose(),
        &request.body,
        request.header("x-hub-signature-256"),
    ) {
        return Outcome::BadSignature(e);
    }
    drop(secret);
    let Some(delivery) = delivery else {
        return Outcome::MissingDeliveryId;
    };
    let signature = request
        .header("x-hub-signature-256")
        .unwrap_or_default()
        .to_string();
    if !logic::valid_delivery_id(&delivery) {
        return Outcome::Malformed("X-GitHub-Delivery is not a delivery id".into());
    }
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

greentic_provider_sdk::export_webhook_handler!(GithubWebhook);
