//! Durable webhook deliveries: accepted into a JetStream work queue, handled by whichever host
//! pulls them, acknowledged only once the provider succeeded.
//!
//! A delivery on a route with `durable = true` is published to `<prefix>.deliveries.hex(tenant).
//! hex(provider)` in the `<PREFIX>_DELIVERIES` stream (work-queue retention) with its delivery
//! id as `Nats-Msg-Id`, so the same delivery sent twice within the stream's duplicate window
//! (10 minutes) is queued once; the sender gets `202 Accepted` once JetStream has stored it.
//! Every host pulls from one durable consumer (`workers`) and hands each delivery to the
//! provider as if it had just arrived. A 2xx or 4xx answer (the provider accepted or refused
//! it for good) acknowledges it; a 5xx, 408 or 429 answer, a failure that may pass, or a route
//! this host's revision does not have (yet) is retried later (negative acknowledgement with a
//! growing delay); a host that dies mid-delivery never acknowledges it, so it is redelivered
//! to another host once `[cluster].delivery_ack_wait_ms` passes. The last of
//! `[cluster].delivery_max_attempts` attempts that fails gives it up (terminated, counted as
//! `given-up`).
//!
//! The delivery id is the route's `delivery_id_header` (e.g. `X-GitHub-Delivery`) when the
//! request has it, else the SHA-256 of the method, path and body.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::bundle::Route;
use crate::errors::CallError;
use crate::fleet::Fleet;
use crate::runtime::Runtime;

/// Deliveries handled at once by one host.
const CONCURRENCY: usize = 16;

/// The fleet's delivery queue.
pub struct Deliveries {
    js: jetstream::Context,
    stream: String,
    subject: String,
    ack_wait: Duration,
    max_attempts: i64,
}

/// What travels with a queued delivery's body.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    tenant: String,
    provider: String,
    method: String,
    uri: String,
    /// Header names and hex-encoded values (values may be any bytes).
    headers: Vec<(String, String)>,
    id: String,
}

/// The message: the length of the metadata (4 bytes, big-endian), the metadata, the body.
fn frame(meta: &Meta, body: &[u8]) -> Bytes {
    let meta = serde_json::to_vec(meta).expect("metadata always serialises");
    let mut out = Vec::with_capacity(4 + meta.len() + body.len());
    out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(body);
    Bytes::from(out)
}

fn unframe(payload: &[u8]) -> Option<(Meta, Bytes)> {
    let len = u32::from_be_bytes(payload.get(..4)?.try_into().ok()?) as usize;
    let meta = serde_json::from_slice(payload.get(4..4 + len)?).ok()?;
    Some((meta, Bytes::copy_from_slice(payload.get(4 + len..)?)))
}

impl Deliveries {
    /// Opens (creating if missing) the delivery stream of `fleet`.
    pub async fn open(fleet: &Fleet) -> anyhow::Result<Arc<Deliveries>> {
        let prefix = &fleet.section.prefix;
        let stream = format!("{}_DELIVERIES", prefix.to_ascii_uppercase());
        let subject = format!("{prefix}.deliveries");
        fleet
            .js
            .get_or_create_stream(jetstream::stream::Config {
                name: stream.clone(),
                description: Some("greentic durable webhook deliveries".into()),
                subjects: vec![format!("{subject}.>")],
                retention: jetstream::stream::RetentionPolicy::WorkQueue,
                duplicate_window: Duration::from_secs(600),
                max_age: Duration::from_secs(7 * 24 * 3600),
                num_replicas: fleet.section.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("opening the JetStream stream `{stream}`: {e}"))?;
        Ok(Arc::new(Deliveries {
            js: fleet.js.clone(),
            stream,
            subject,
            ack_wait: Duration::from_millis(fleet.section.delivery_ack_wait_ms),
            max_attempts: fleet.section.delivery_max_attempts as i64,
        }))
    }

    /// Queues `request` for `provider` of `tenant` (its route: `route`) and answers the
    /// sender `202 Accepted` once JetStream stored it.
    pub async fn accept(
        &self,
        tenant: &str,
        provider: &str,
        route: &Route,
        request: hyper::Request<Bytes>,
    ) -> Result<hyper::Response<Bytes>, CallError> {
        let (parts, body) = request.into_parts();
        let uri = parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into());
        let id = route
            .delivery_id_header
            .as_deref()
            .and_then(|h| parts.headers.get(h))
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 256)
            .map(str::to_string)
            .unwrap_or_else(|| {
                let mut h = Sha256::new();
                for part in [parts.method.as_str().as_bytes(), uri.as_bytes(), &body] {
                    h.update((part.len() as u64).to_be_bytes());
                    h.update(part);
                }
                format!("sha256:{}", hex::encode(h.finalize()))
            });
        let meta = Meta {
            tenant: tenant.to_string(),
            provider: provider.to_string(),
            method: parts.method.to_string(),
            uri,
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), hex::encode(v.as_bytes())))
                .collect(),
            id: id.clone(),
        };
        let mut headers = HeaderMap::new();
        let mut dedupe = Sha256::new();
        for part in [tenant, provider, id.as_str()] {
            dedupe.update((part.len() as u64).to_be_bytes());
            dedupe.update(part.as_bytes());
        }
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            hex::encode(dedupe.finalize()),
        );
        let subject = format!(
            "{}.{}.{}",
            self.subject,
            hex::encode(tenant),
            hex::encode(provider)
        );
        let unavailable = |e: String| {
            CallError::Provider(crate::errors::ProviderFailure::Unavailable {
                retry_after_ms: Some(1_000),
                message: format!("the delivery could not be queued: {e}"),
            })
        };
        let ack = self
            .js
            .publish_with_headers(subject, headers, frame(&meta, &body))
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let answer = serde_json::json!({
            "accepted": true,
            "delivery": id,
            "duplicate": ack.duplicate,
        });
        hyper::Response::builder()
            .status(202)
            .header("content-type", "application/json")
            .body(Bytes::from(answer.to_string()))
            .map_err(|e| CallError::Internal(e.to_string()))
    }

    /// Pulls deliveries and hands them to `runtime`'s providers until `stop`.
    pub async fn work(self: Arc<Self>, runtime: Arc<Runtime>, mut stop: watch::Receiver<bool>) {
        loop {
            match self.consume(&runtime, &mut stop).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "pulling durable deliveries; retrying");
                }
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn consume(
        &self,
        runtime: &Arc<Runtime>,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let stream = self.js.get_stream(&self.stream).await?;
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                "workers",
                consumer::pull::Config {
                    durable_name: Some("workers".into()),
                    description: Some("greentic hosts handling durable deliveries".into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_deliver: self.max_attempts,
                    max_ack_pending: 1024,
                    ..Default::default()
                },
            )
            .await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(CONCURRENCY)
            .messages()
            .await?;
        let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        loop {
            let next = tokio::select! {
                _ = stop.changed() => return Ok(()),
                next = messages.next() => next,
            };
            let Some(message) = next else {
                anyhow::bail!("the delivery consumer ended");
            };
            let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
            let permit = slots.clone().acquire_owned().await?;
            let runtime = runtime.clone();
            let max_attempts = self.max_attempts;
            tokio::spawn(async move {
                handle(&runtime, message, max_attempts).await;
                drop(permit);
            });
        }
    }
}

/// Hands one queued delivery to its provider; acknowledges it, retries it later, or gives it
/// up.
async fn handle(runtime: &Runtime, message: jetstream::Message, max_attempts: i64) {
    let attempt = message.info().map(|i| i.delivered).unwrap_or(1);
    let Some((meta, body)) = unframe(&message.payload) else {
        tracing::error!("a queued delivery is malformed; dropped");
        let _ = message.ack_with(AckKind::Term).await;
        return;
    };
    let labels = |outcome: &'static str| {
        [
            ("tenant", meta.tenant.clone()),
            ("provider", meta.provider.clone()),
            ("outcome", outcome.to_string()),
        ]
    };
    let count = |outcome: &'static str| {
        let l = labels(outcome);
        let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        runtime.metrics.inc("greentic_deliveries_total", &l);
    };
    if attempt > 1 {
        count("redelivered");
    }
    let mut builder = hyper::Request::builder()
        .method(meta.method.as_str())
        .uri(format!("http://greentic.local{}", meta.uri));
    for (name, value) in &meta.headers {
        if let Ok(value) = hex::decode(value) {
            builder = builder.header(name.as_str(), value);
        }
    }
    let Ok(request) = builder.body(body) else {
        let _ = message.ack_with(AckKind::Term).await;
        count("dropped");
        return;
    };
    let result = runtime.deliver(&meta.tenant, &meta.provider, request).await;
    let retry = |attempt: i64| {
        AckKind::Nak(Some(Duration::from_millis(
            (250u64 << attempt.clamp(0, 7) as u64).min(30_000),
        )))
    };
    let retryable_status = |s: u16| s >= 500 || s == 408 || s == 429;
    let (kind, outcome) = match &result {
        Ok(response) if !retryable_status(response.status().as_u16()) => (AckKind::Ack, "handled"),
        Ok(_) => (retry(attempt), "retry"),
        // A host behind (or ahead of) the revision that accepted it may not route it yet.
        Err(e) if e.retryable() || e.status() >= 500 || matches!(e, CallError::NoRoute { .. }) => {
            (retry(attempt), "retry")
        }
        // Refused for good (a bad request): nothing to retry.
        Err(_) => (AckKind::Term, "dropped"),
    };
    // The last attempt: stop here, and say so.
    let (kind, outcome) = match kind {
        AckKind::Nak(_) if attempt >= max_attempts => (AckKind::Term, "given-up"),
        other => (other, outcome),
    };
    tracing::info!(
        tenant = %meta.tenant, provider = %meta.provider, delivery = %meta.id, attempt,
        outcome, "durable delivery"
    );
    count(outcome);
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(error = %e, "acknowledging a durable delivery");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_carries_metadata_and_any_body() {
        let meta = Meta {
            tenant: "acme".into(),
            provider: "hook".into(),
            method: "POST".into(),
            uri: "/x?y=1".into(),
            headers: vec![("x-bin".into(), hex::encode([0xff, 0x00]))],
            id: "d1".into(),
        };
        let body = [0u8, 1, 2, 255];
        let (back, bytes) = unframe(&frame(&meta, &body)).unwrap();
        assert_eq!(back.uri, "/x?y=1");
        assert_eq!(back.headers[0].1, "ff00");
        assert_eq!(&bytes[..], &body);
        assert!(unframe(&[0, 0, 0, 9, b'{']).is_none());
        assert!(unframe(&[]).is_none());
    }
}
