//! Durable webhook deliveries: admitted, then accepted into a JetStream work queue of the
//! tenant's own, handled by whichever host pulls them, acknowledged only once the provider
//! succeeded.
//!
//! **Admission, before anything is stored.** A delivery on a route with `durable = true` is
//! checked first against the route's signature scheme, if it names one (`verify`; an unsigned
//! or forged delivery is refused `401` and never queued), then against the tenant's rate
//! (`deliveries_per_second`, fleet-wide: a counter per tenant and second in the
//! `<PREFIX>_DELIVERY_RATES` stream, with each host's own count refusing the excess before it
//! asks). Past the rate the sender gets `429 queue-full` with `Retry-After`, and nothing is
//! stored.
//!
//! **One queue per tenant.** Each tenant's deliveries go to a stream of its own,
//! `<PREFIX>_DQ_<hex(tenant)>` (work-queue retention, subject `<prefix>.dq.hex(tenant).
//! hex(provider)`), created on its first delivery with the tenant's bounds as the server's own
//! limits, new messages refused past them: `queued_deliveries` messages and
//! `queued_delivery_bytes` bytes in all, `queued_deliveries_per_route` for one provider. A full
//! queue refuses the publish, and the sender gets `429 queue-full` (or `507 storage-full` when
//! the server has no room for the queue at all) — an acknowledged delivery is never dropped to
//! make room. The delivery id rides as `Nats-Msg-Id`, so a delivery sent twice within the
//! duplicate window (10 minutes) is queued once; the sender gets `202 Accepted` once JetStream
//! has stored it.
//!
//! **Handling.** Every host keeps a worker per tenant queue that holds deliveries (started when
//! a host queues one — every host hears of it — or when a periodic look at the queues finds one
//! waiting), pulling from the queue's durable consumer with at most the tenant's
//! `webhook_max_concurrent` deliveries in hand, so one tenant's backlog never delays another
//! tenant's deliveries. A 2xx or 4xx answer (the provider accepted or refused it for good)
//! acknowledges a delivery; a 5xx, 408 or 429 answer, a failure that may pass, or a route this
//! host's revision does not have (yet) is retried later (negative acknowledgement with a
//! growing delay); a host that dies mid-delivery never acknowledges it, so it is redelivered
//! to another host once `[cluster].delivery_ack_wait_ms` passes. The last of
//! `[cluster].delivery_max_attempts` attempts that fails gives it up (terminated, counted as
//! `given-up`). Deliveries left in the one shared `<PREFIX>_DELIVERIES` stream of earlier
//! versions are still handled until it is empty.
//!
//! The delivery id is the route's `delivery_id_header` (e.g. `X-GitHub-Delivery`) when the
//! request has it, else the SHA-256 of the method, path and body.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer};
use bytes::Bytes;
use futures_util::StreamExt as _;
use greentic_bundle::{Limits, Route};
use greentic_engine::errors::CallError;
use greentic_engine::runtime::Runtime;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, watch};

use crate::{Fleet, within};

/// Deliveries one host handles at once, over every tenant.
const HOST_CONCURRENCY: usize = 64;
/// The most deliveries of one tenant one host handles at once.
const TENANT_CONCURRENCY_CAP: u32 = 32;
/// How often a host looks for tenant queues holding deliveries it has no worker for.
const DISCOVER_EVERY: Duration = Duration::from_secs(3);
/// How long a worker waits on its queue per pull.
const PULL_WAIT: Duration = Duration::from_secs(1);
/// How long one admission request to the fleet's server may take.
const REQUEST: Duration = Duration::from_secs(2);
/// The duplicate window of a tenant queue.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);
/// What a queued delivery carries besides its body, at most (the frame's metadata).
const META_ALLOWANCE: i32 = 64 << 10;

/// The fleet's delivery queues.
pub struct Deliveries {
    js: jetstream::Context,
    client: async_nats::Client,
    /// `<prefix>.dq`.
    subject: String,
    /// `<PREFIX>_DQ_`.
    stream_prefix: String,
    /// The shared stream of earlier versions, drained until empty.
    legacy: String,
    /// `<prefix>.dq-notify`: "a tenant queue has work".
    notify: String,
    /// `<prefix>.delivery-rate`.
    rate_subject: String,
    ack_wait: Duration,
    max_attempts: i64,
    max_age: Duration,
    replicas: usize,
    /// Tenant queues known to exist, with the bounds they were given.
    queues: Mutex<HashMap<String, QueueBounds>>,
    /// This host's own count of each tenant's deliveries in the current second.
    local_rate: Mutex<HashMap<String, (u64, u32)>>,
}

/// A tenant queue's bounds, as the server enforces them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QueueBounds {
    max_msgs: i64,
    max_bytes: i64,
    max_per_route: i64,
    max_msg_size: i32,
}

impl QueueBounds {
    fn of(limits: &Limits, max_body_bytes: usize) -> QueueBounds {
        QueueBounds {
            max_msgs: i64::from(limits.queued_deliveries),
            max_bytes: i64::try_from(limits.queued_delivery_bytes).unwrap_or(i64::MAX),
            max_per_route: i64::from(limits.queued_deliveries_per_route),
            max_msg_size: i32::try_from(max_body_bytes)
                .unwrap_or(i32::MAX - META_ALLOWANCE)
                .saturating_add(META_ALLOWANCE),
        }
    }
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
    /// When it was accepted (ms since the epoch; 0 in deliveries of earlier versions).
    #[serde(default)]
    accepted_ms: u64,
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

fn now_ms() -> u64 {
    greentic_capabilities::state::now_ms()
}

/// The message of an error a full queue or server answers, classified for the sender.
fn refusal(tenant: &str, provider: &str, e: &dyn std::fmt::Display) -> Option<CallError> {
    let text = e.to_string().to_ascii_lowercase();
    let full = |why: String| CallError::QueueFull {
        tenant: tenant.to_string(),
        why,
        retry_after_ms: 5_000,
    };
    if text.contains("maximum messages per subject") {
        Some(full(format!(
            "as many deliveries to `{provider}` queued as queued_deliveries_per_route allows"
        )))
    } else if text.contains("maximum messages") {
        Some(full(
            "as many deliveries queued as queued_deliveries allows".into(),
        ))
    } else if text.contains("maximum bytes") {
        Some(full(
            "as many bytes of deliveries queued as queued_delivery_bytes allows".into(),
        ))
    } else if text.contains("insufficient") || text.contains("resource") {
        Some(CallError::StorageFull {
            what: format!("tenant `{tenant}`'s delivery queue"),
            retry_after_ms: 30_000,
        })
    } else {
        None
    }
}

impl Deliveries {
    /// The delivery queues of `fleet` (the rate counters' stream created if missing).
    pub async fn open(fleet: &Fleet) -> anyhow::Result<Arc<Deliveries>> {
        let section = &fleet.section;
        let prefix = &section.prefix;
        let upper = prefix.to_ascii_uppercase();
        let rates = format!("{upper}_DELIVERY_RATES");
        let rate_subject = format!("{prefix}.delivery-rate");
        let max_bytes = i64::try_from(section.max_bytes.delivery_rates).unwrap_or(i64::MAX);
        let stream = fleet
            .js
            .get_or_create_stream(jetstream::stream::Config {
                name: rates.clone(),
                description: Some(
                    "greentic durable deliveries accepted, per tenant and second".into(),
                ),
                subjects: vec![format!("{rate_subject}.>")],
                allow_message_counter: true,
                max_age: Duration::from_secs(120),
                max_bytes,
                num_replicas: section.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("opening the JetStream stream `{rates}`: {e}"))?;
        greentic_jetstream::bound_stream(
            &fleet.js,
            stream.cached_info().config.clone(),
            max_bytes,
            None,
        )
        .await?;
        Ok(Arc::new(Deliveries {
            js: fleet.js.clone(),
            client: fleet.client.clone(),
            subject: format!("{prefix}.dq"),
            stream_prefix: format!("{upper}_DQ_"),
            legacy: format!("{upper}_DELIVERIES"),
            notify: format!("{prefix}.dq-notify"),
            rate_subject,
            ack_wait: Duration::from_millis(section.delivery_ack_wait_ms),
            max_attempts: section.delivery_max_attempts as i64,
            max_age: Duration::from_secs(section.delivery_max_age_secs),
            replicas: section.replicas,
            queues: Mutex::new(HashMap::new()),
            local_rate: Mutex::new(HashMap::new()),
        }))
    }

    /// The name of `tenant`'s queue.
    fn stream_of(&self, tenant: &str) -> String {
        format!("{}{}", self.stream_prefix, hex::encode(tenant))
    }

    /// The tenant whose queue `stream` is.
    fn tenant_of(&self, stream: &str) -> Option<String> {
        let raw = hex::decode(stream.strip_prefix(&self.stream_prefix)?).ok()?;
        String::from_utf8(raw).ok()
    }

    /// Counts one delivery of `tenant` against its rate; a refusal past it.
    async fn admit_rate(&self, tenant: &str, limits: &Limits) -> Result<(), CallError> {
        let rate = limits.deliveries_per_second;
        let second = now_ms() / 1000;
        let until_next = 1000 - now_ms() % 1000;
        let refused = || CallError::QueueFull {
            tenant: tenant.to_string(),
            why: format!("{rate} deliveries a second accepted already (deliveries_per_second)"),
            retry_after_ms: until_next,
        };
        // This host alone past the rate: refused without asking the fleet.
        {
            let mut local = self.local_rate.lock().unwrap_or_else(|e| e.into_inner());
            if local.len() > 100_000 {
                local.retain(|_, (s, _)| *s == second);
            }
            let entry = local.entry(tenant.to_string()).or_insert((second, 0));
            if entry.0 != second {
                *entry = (second, 0);
            }
            if entry.1 >= rate {
                return Err(refused());
            }
            entry.1 += 1;
        }
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Incr", "+1");
        let subject = format!("{}.{}.{second}", self.rate_subject, hex::encode(tenant));
        let unavailable = |e: String| {
            CallError::Provider(greentic_engine::errors::ProviderFailure::Unavailable {
                retry_after_ms: Some(1_000),
                message: format!("the delivery could not be admitted: {e}"),
            })
        };
        let ack = within(
            REQUEST,
            self.js.publish_with_headers(subject, headers, Bytes::new()),
        )
        .await
        .map_err(|e| unavailable(e.to_string()))?;
        let ack = within(REQUEST, ack)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let total: u64 = ack
            .value
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if total > u64::from(rate) {
            return Err(refused());
        }
        Ok(())
    }

    /// Makes sure `tenant`'s queue exists with `bounds` (created, or its bounds updated when
    /// the tenant's limits changed).
    async fn ensure_queue(&self, tenant: &str, bounds: QueueBounds) -> Result<(), CallError> {
        let known = self
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .copied();
        if known == Some(bounds) {
            return Ok(());
        }
        let name = self.stream_of(tenant);
        let config = jetstream::stream::Config {
            name: name.clone(),
            description: Some(format!(
                "greentic durable webhook deliveries of tenant `{tenant}`"
            )),
            subjects: vec![format!("{}.{}.>", self.subject, hex::encode(tenant))],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            discard: jetstream::stream::DiscardPolicy::New,
            discard_new_per_subject: true,
            max_messages: bounds.max_msgs,
            max_bytes: bounds.max_bytes,
            max_messages_per_subject: bounds.max_per_route,
            max_message_size: bounds.max_msg_size,
            duplicate_window: DUPLICATE_WINDOW,
            max_age: self.max_age,
            num_replicas: self.replicas,
            ..Default::default()
        };
        let failed = |e: String| {
            refusal(tenant, "", &e).unwrap_or_else(|| {
                CallError::Provider(greentic_engine::errors::ProviderFailure::Unavailable {
                    retry_after_ms: Some(1_000),
                    message: format!(
                        "the delivery queue of tenant `{tenant}` cannot be opened: {e}"
                    ),
                })
            })
        };
        let stream = within(REQUEST, self.js.get_or_create_stream(config.clone()))
            .await
            .map_err(|e| failed(e.to_string()))?;
        let current = &stream.cached_info().config;
        let stale = current.max_messages != config.max_messages
            || current.max_bytes != config.max_bytes
            || current.max_messages_per_subject != config.max_messages_per_subject
            || current.max_message_size != config.max_message_size;
        if stale {
            within(REQUEST, self.js.update_stream(config))
                .await
                .map_err(|e| failed(e.to_string()))?;
        }
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant.to_string(), bounds);
        Ok(())
    }

    /// Admits `request` for `provider` of `tenant` (its route: `route`, its limits: `limits`),
    /// queues it, and answers the sender `202 Accepted` once JetStream stored it.
    pub async fn accept(
        &self,
        tenant: &str,
        provider: &str,
        route: &Route,
        limits: &Limits,
        max_body_bytes: usize,
        request: hyper::Request<Bytes>,
    ) -> Result<hyper::Response<Bytes>, CallError> {
        self.admit_rate(tenant, limits).await?;
        self.ensure_queue(tenant, QueueBounds::of(limits, max_body_bytes))
            .await?;
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
            accepted_ms: now_ms(),
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
        let failed = |e: String| {
            refusal(tenant, provider, &e).unwrap_or_else(|| {
                CallError::Provider(greentic_engine::errors::ProviderFailure::Unavailable {
                    retry_after_ms: Some(1_000),
                    message: format!("the delivery could not be queued: {e}"),
                })
            })
        };
        let ack = within(
            REQUEST,
            self.js
                .publish_with_headers(subject, headers, frame(&meta, &body)),
        )
        .await
        .map_err(|e| failed(e.to_string()))?;
        let ack = within(REQUEST, ack)
            .await
            .map_err(|e| failed(e.to_string()))?;
        // Every host hears that the queue has work (best effort: a periodic look finds it too).
        let _ = self
            .client
            .publish(self.notify.clone(), Bytes::from(self.stream_of(tenant)))
            .await;
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

    /// Pulls deliveries from every tenant queue that holds some and hands them to `runtime`'s
    /// providers until `stop`.
    pub async fn work(self: Arc<Self>, runtime: Arc<Runtime>, mut stop: watch::Receiver<bool>) {
        let host_slots = Arc::new(Semaphore::new(HOST_CONCURRENCY));
        let mut workers: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut notified = match self.client.subscribe(self.notify.clone()).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "subscribing to delivery notices; queues are looked at every few seconds only");
                None
            }
        };
        let legacy = tokio::spawn(self.clone().drain_legacy(runtime.clone(), stop.clone()));
        let mut tick = tokio::time::interval(DISCOVER_EVERY);
        loop {
            let mut wake: Vec<String> = Vec::new();
            tokio::select! {
                _ = stop.changed() => break,
                notice = async {
                    match notified.as_mut() {
                        Some(s) => s.next().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some(notice) = notice
                        && let Ok(name) = std::str::from_utf8(&notice.payload)
                        && name.starts_with(&self.stream_prefix)
                    {
                        wake.push(name.to_string());
                    }
                }
                _ = tick.tick() => match self.waiting_queues().await {
                    Ok(names) => wake = names,
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "looking for durable deliveries"),
                },
            }
            workers.retain(|_, w| !w.is_finished());
            for name in wake {
                if workers.contains_key(&name) {
                    continue;
                }
                let Some(tenant) = self.tenant_of(&name) else {
                    continue;
                };
                let worker = self.clone().tenant_worker(
                    name.clone(),
                    tenant,
                    runtime.clone(),
                    host_slots.clone(),
                    stop.clone(),
                );
                workers.insert(name, tokio::spawn(worker));
            }
        }
        for (_, w) in workers {
            w.abort();
        }
        legacy.abort();
    }

    /// The tenant queues that hold deliveries.
    async fn waiting_queues(&self) -> anyhow::Result<Vec<String>> {
        let mut streams = self.js.streams();
        let mut out = Vec::new();
        while let Some(info) = streams.next().await {
            let info = info?;
            if info.config.name.starts_with(&self.stream_prefix) && info.state.messages > 0 {
                out.push(info.config.name);
            }
        }
        Ok(out)
    }

    /// Handles `tenant`'s queue `name` while it holds deliveries: at most the tenant's
    /// `webhook_max_concurrent` (capped) at once, each also holding one of the host's slots.
    async fn tenant_worker(
        self: Arc<Self>,
        name: String,
        tenant: String,
        runtime: Arc<Runtime>,
        host_slots: Arc<Semaphore>,
        mut stop: watch::Receiver<bool>,
    ) {
        let run = async {
            let stream = self.js.get_stream(&name).await?;
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
            let concurrency = runtime
                .revision_for(&tenant)
                .tenants
                .get(&tenant)
                .map_or(4, |t| t.gate.limits().webhook_max_concurrent)
                .clamp(1, TENANT_CONCURRENCY_CAP) as usize;
            let mine = Arc::new(Semaphore::new(concurrency));
            loop {
                // Wait for a free slot of the tenant, then pull as many as are free.
                let first = mine.clone().acquire_owned().await?;
                let free = 1 + mine.available_permits();
                let mut permits = vec![first];
                while permits.len() < free {
                    match mine.clone().try_acquire_owned() {
                        Ok(p) => permits.push(p),
                        Err(_) => break,
                    }
                }
                let mut batch = consumer
                    .batch()
                    .max_messages(permits.len())
                    .expires(PULL_WAIT)
                    .messages()
                    .await?;
                let mut got = 0;
                while let Some(message) = batch.next().await {
                    let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
                    got += 1;
                    let Some(permit) = permits.pop() else {
                        // More than asked for: leave it to be redelivered.
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                        continue;
                    };
                    let host = host_slots.clone().acquire_owned().await?;
                    let (runtime, max_attempts) = (runtime.clone(), self.max_attempts);
                    tokio::spawn(async move {
                        handle(&runtime, message, max_attempts).await;
                        drop((permit, host));
                    });
                }
                drop(permits);
                if got == 0 && mine.available_permits() == concurrency {
                    // Nothing came and nothing is in hand here: done once the queue holds
                    // nothing (a delivery held by another host, or waiting for its retry,
                    // keeps this worker looking).
                    let info = consumer.get_info().await?;
                    if info.num_pending == 0 && info.num_ack_pending == 0 {
                        return anyhow::Ok(());
                    }
                }
            }
        };
        tokio::select! {
            _ = stop.changed() => {}
            ended = run => if let Err(e) = ended {
                tracing::warn!(tenant = %tenant, error = %format!("{e:#}"), "handling a tenant's durable deliveries; retried shortly");
            },
        }
    }

    /// Handles what is left in the shared stream of earlier versions, until it is empty (or
    /// does not exist).
    async fn drain_legacy(self: Arc<Self>, runtime: Arc<Runtime>, mut stop: watch::Receiver<bool>) {
        let run = async {
            let Ok(stream) = self.js.get_stream(&self.legacy).await else {
                return anyhow::Ok(());
            };
            let consumer: consumer::PullConsumer = stream
                .get_consumer("workers")
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            loop {
                let mut batch = consumer
                    .batch()
                    .max_messages(4)
                    .expires(PULL_WAIT)
                    .messages()
                    .await?;
                let mut got = 0;
                while let Some(message) = batch.next().await {
                    got += 1;
                    handle(
                        &runtime,
                        message.map_err(|e| anyhow::anyhow!("{e}"))?,
                        self.max_attempts,
                    )
                    .await;
                }
                if got == 0 {
                    let info = consumer.get_info().await?;
                    if info.num_pending == 0 && info.num_ack_pending == 0 {
                        tracing::info!(stream = %self.legacy, "the shared delivery stream of earlier versions is empty");
                        return Ok(());
                    }
                }
            }
        };
        tokio::select! {
            _ = stop.changed() => {}
            ended = run => if let Err(e) = ended {
                tracing::warn!(error = %format!("{e:#}"), "handling deliveries left in the shared stream");
            },
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
    let started = Instant::now();
    let queued_ms = match meta.accepted_ms {
        0 => 0,
        at => now_ms().saturating_sub(at),
    };
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
    if queued_ms > 0 {
        runtime.metrics.observe(
            "greentic_delivery_queued_seconds",
            &[("tenant", meta.tenant.as_str())],
            queued_ms as f64 / 1000.0,
        );
    }
    tracing::info!(
        tenant = %meta.tenant, provider = %meta.provider, delivery = %meta.id, attempt,
        outcome, queued_ms, handled_ms = started.elapsed().as_millis() as u64, "durable delivery"
    );
    count(outcome);
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(error = %e, "acknowledging a durable delivery");
    }
}

#[async_trait::async_trait]
impl greentic_engine::shared::DeliveryQueue for Deliveries {
    async fn accept(
        &self,
        tenant: &str,
        provider: &str,
        route: &Route,
        limits: &Limits,
        max_body_bytes: usize,
        request: hyper::Request<Bytes>,
    ) -> Result<hyper::Response<Bytes>, CallError> {
        Deliveries::accept(
            self,
            tenant,
            provider,
            route,
            limits,
            max_body_bytes,
            request,
        )
        .await
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
            accepted_ms: 7,
        };
        let body = [0u8, 1, 2, 255];
        let (back, bytes) = unframe(&frame(&meta, &body)).unwrap();
        assert_eq!(back.uri, "/x?y=1");
        assert_eq!(back.headers[0].1, "ff00");
        assert_eq!(back.accepted_ms, 7);
        assert_eq!(&bytes[..], &body);
        assert!(unframe(&[0, 0, 0, 9, b'{']).is_none());
        assert!(unframe(&[]).is_none());
    }

    #[test]
    fn a_full_queue_or_server_is_the_senders_to_retry() {
        let e = refusal("acme", "hook", &"maximum messages per subject exceeded").unwrap();
        assert_eq!(
            (e.code(), e.status(), e.retryable()),
            ("queue-full", 429, true)
        );
        assert!(e.to_string().contains("queued_deliveries_per_route"), "{e}");
        let e = refusal("acme", "hook", &"maximum bytes exceeded").unwrap();
        assert!(e.to_string().contains("queued_delivery_bytes"), "{e}");
        let e = refusal("acme", "hook", &"insufficient resources").unwrap();
        assert_eq!((e.code(), e.status()), ("storage-full", 507));
        assert!(refusal("acme", "hook", &"timed out").is_none());
    }
}
