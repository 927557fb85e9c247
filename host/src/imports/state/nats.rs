//! The distributed state backend: a NATS JetStream key-value bucket, shared by every host of a
//! fleet.
//!
//! Keys are `hex(tenant).hex(provider).hex(key)` (JetStream keys allow few characters, and hex
//! keeps both prefixes and byte order). A value is stored after 8 bytes of expiry (0: none);
//! a write with a TTL also carries `Nats-TTL`, so the server removes the entry once it expires
//! (the bucket is created with per-message TTLs on). Revisions are the stream's sequence
//! numbers — never reused — and compare-and-swap is a publish expecting the key's last
//! sequence, so it holds across hosts. Each tenant's total is a counter entry beside its keys,
//! moved by compare-and-swap after each write (best effort: a write that happened is never
//! reported failed for its counter); writes racing on one tenant can overshoot the bound by at
//! most their own sizes, and the counter is recounted from the live entries when a write finds
//! it over the bound. The bucket is created when missing (per-message TTLs on, `replicas`
//! from `[state]`) and never changed when it exists — an operator's R3 bucket stays R3 — but
//! one without per-message TTLs is refused. Acknowledged writes are durable as
//! JetStream makes them (fsync every `sync_interval`, 2 min by default: a power loss of every
//! replica inside that window loses them).

use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::OnceCell;

use super::{Namespace, StateBackend, Stored, Sweeps, Write, Written, live, now_ms};

/// Bytes of expiry before each stored value.
const HEADER: usize = 8;
/// How many times a usage counter update is retried against concurrent writers.
const COUNTER_RETRIES: usize = 32;

/// A connection: the client (for inboxes), its JetStream context, the bucket.
type Conn = (async_nats::Client, jetstream::Context, kv::Store);

/// A JetStream key-value bucket holding every tenant's state.
pub struct NatsBackend {
    url: String,
    bucket: String,
    replicas: usize,
    credentials: Option<std::path::PathBuf>,
    /// Connected on first use, in the runtime that serves calls (the client's connection
    /// task lives there).
    conn: OnceCell<Conn>,
    sweeps: Sweeps,
}

impl NatsBackend {
    /// A backend for `bucket` on the server at `url` (`nats://HOST:PORT`, `tls://…`), with an
    /// optional `.creds` file; nothing connects until first use (see [`StateBackend::open`]).
    pub fn new(url: &str, bucket: &str, credentials: Option<std::path::PathBuf>) -> NatsBackend {
        NatsBackend {
            url: url.to_string(),
            bucket: bucket.to_string(),
            replicas: 1,
            credentials,
            conn: OnceCell::new(),
            sweeps: Sweeps::default(),
        }
    }

    async fn connect(&self) -> anyhow::Result<Conn> {
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .name("greentic-host");
        if let Some(creds) = &self.credentials {
            options = options
                .credentials_file(creds)
                .await
                .with_context(|| format!("reading NATS credentials {}", creds.display()))?;
        }
        let client = options
            .connect(&self.url)
            .await
            .with_context(|| format!("connecting to NATS at {}", self.url))?;
        let js = jetstream::new(client.clone());
        let opening = || {
            format!(
                "opening the JetStream key-value bucket `{}` at {} (is JetStream enabled?)",
                self.bucket, self.url
            )
        };
        // An existing bucket is the operator's: used as it is, never reconfigured.
        let store = match js.get_key_value(&self.bucket).await {
            Ok(store) => store,
            Err(e) if e.kind() == jetstream::context::KeyValueErrorKind::GetBucket => js
                .create_key_value(kv::Config {
                    bucket: self.bucket.clone(),
                    description: "greentic provider state, per tenant and provider".into(),
                    history: 1,
                    num_replicas: self.replicas,
                    // Entries written with a TTL are removed by the server when it passes.
                    limit_markers: Some(Duration::from_secs(60)),
                    ..Default::default()
                })
                .await
                .with_context(opening)?,
            Err(e) => return Err(e).with_context(opening),
        };
        let mut stream = store.stream.clone();
        let info = stream.info().await.with_context(opening)?;
        if !info.config.allow_message_ttl {
            anyhow::bail!(
                "the JetStream bucket `{}` does not allow per-message TTLs, which state expiry needs; create it with them (e.g. `nats kv add {} --marker-ttl 1m`) or name another bucket in [state].bucket",
                self.bucket,
                self.bucket
            );
        }
        Ok((client, js, store))
    }

    async fn conn(&self) -> anyhow::Result<&Conn> {
        self.conn.get_or_try_init(|| self.connect()).await
    }

    /// Publishes `value` at `key`, expecting `last` as the key's last sequence (0: none) if
    /// given; `Ok(None)` when another revision was there.
    async fn publish(
        &self,
        key: &str,
        value: Bytes,
        last: Option<u64>,
        ttl: Option<Duration>,
    ) -> anyhow::Result<Option<u64>> {
        let (_, js, store) = self.conn().await?;
        let mut headers = HeaderMap::new();
        if let Some(last) = last {
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                last.to_string(),
            );
        }
        if let Some(ttl) = ttl {
            // Whole seconds, rounded up, at least one: the server's granularity.
            let secs = ttl.as_millis().div_ceil(1000).max(1) as u64;
            headers.insert(async_nats::header::NATS_MESSAGE_TTL, secs.to_string());
        }
        let subject = format!(
            "{}{key}",
            store.put_prefix.as_ref().unwrap_or(&store.prefix)
        );
        let ack = js.publish_with_headers(subject, headers, value).await?;
        match ack.await {
            Ok(ack) => Ok(Some(ack.sequence)),
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                Ok(None)
            }
            Err(e) => Err(e).context("publishing to JetStream"),
        }
    }

    /// The live entry at `key`: its value (after the expiry bytes) and revision; and the
    /// revision of whatever is there, live or expired (0: nothing).
    async fn read(&self, key: &str) -> anyhow::Result<(Option<Stored>, u64, usize)> {
        let (_, _, store) = self.conn().await?;
        let Some(entry) = store.entry(key).await? else {
            return Ok((None, 0, 0));
        };
        if entry.operation != kv::Operation::Put {
            // A delete marker: absent, but the next write must expect its sequence.
            return Ok((None, entry.revision, 0));
        }
        let (expires, value) = split(&entry.value);
        if !live(expires, now_ms()) {
            return Ok((None, entry.revision, entry.value.len()));
        }
        Ok((
            Some(Stored {
                value: value.to_vec(),
                revision: entry.revision,
            }),
            entry.revision,
            entry.value.len(),
        ))
    }

    /// With `replicas` copies of a bucket it creates (an existing one is left as it is).
    pub fn with_replicas(mut self, replicas: usize) -> NatsBackend {
        self.replicas = replicas.max(1);
        self
    }

    /// What the counter at `key` says (a plain read).
    async fn usage(&self, key: &str) -> anyhow::Result<u64> {
        let (_, _, store) = self.conn().await?;
        Ok(match store.entry(key).await? {
            Some(e) if e.operation == kv::Operation::Put => decode_u64(&e.value),
            _ => 0,
        })
    }

    /// Adds `delta` after a write that happened: a counter that cannot be moved is logged
    /// and left to the next recount, never reported as the write's failure.
    async fn account(&self, ns: &Namespace, delta: i64) {
        for key in [usage_key(&ns.tenant), provider_usage_key(ns)] {
            if delta != 0
                && let Err(e) = self.add_usage(&key, delta).await
            {
                tracing::warn!(tenant = %ns.tenant, error = %format!("{e:#}"), "a state usage counter was not updated; the next write over the bound recounts it");
            }
        }
    }

    /// Adds `delta` bytes to the counter at `key` (compare-and-swap, retried).
    async fn add_usage(&self, key: &str, delta: i64) -> anyhow::Result<u64> {
        let key = key.to_string();
        for _ in 0..COUNTER_RETRIES {
            let (_, _, store) = self.conn().await?;
            let (current, revision) = match store.entry(key.as_str()).await? {
                Some(e) if e.operation == kv::Operation::Put => (decode_u64(&e.value), e.revision),
                Some(e) => (0, e.revision),
                None => (0, 0),
            };
            let next = current.saturating_add_signed(delta);
            let value = Bytes::copy_from_slice(&next.to_be_bytes());
            if self
                .publish(&key, value, Some(revision), None)
                .await?
                .is_some()
            {
                return Ok(next);
            }
        }
        anyhow::bail!("the usage counter `{key}` is contended; retry")
    }

    /// What the tenant of `ns` keeps now, and `ns`'s provider of it, counting live entries
    /// only; resets the tenant's and every provider's counter to what was counted.
    async fn recount(&self, ns: &Namespace) -> anyhow::Result<(u64, u64)> {
        let tenant_hex = hex::encode(&ns.tenant);
        let entries = self.scan(&format!("{tenant_hex}.")).await?;
        let now = now_ms();
        let mut per_provider: std::collections::BTreeMap<String, u64> = Default::default();
        let counters = format!("{tenant_hex}.usage.");
        for (key, value) in &entries {
            if let Some(provider) = key.strip_prefix(&counters) {
                // A provider's counter: reset below, to 0 if it keeps nothing live.
                per_provider.entry(provider.to_string()).or_default();
            } else if counted(key) && live(split(value).0, now) {
                let provider = key.split('.').nth(1).unwrap_or_default();
                *per_provider.entry(provider.to_string()).or_default() += weight(key, value.len());
            }
        }
        let tenant_total: u64 = per_provider.values().sum();
        let reset = |key: String, to: u64| async move {
            let current = self.usage(&key).await?;
            self.add_usage(&key, to as i64 - current as i64).await
        };
        reset(usage_key(&ns.tenant), tenant_total).await?;
        for (provider_hex, total) in &per_provider {
            reset(format!("{tenant_hex}.usage.{provider_hex}"), *total).await?;
        }
        let mine = per_provider
            .get(&hex::encode(&ns.provider))
            .copied()
            .unwrap_or(0);
        Ok((tenant_total, mine))
    }

    /// Every current (put) entry whose key starts with `prefix` (ending with `.`).
    async fn scan(&self, prefix: &str) -> anyhow::Result<Vec<(String, Bytes)>> {
        let (client, _, store) = self.conn().await?;
        let filter = format!("{}{prefix}>", store.prefix);
        let consumer = store
            .stream
            .create_consumer(jetstream::consumer::push::OrderedConfig {
                deliver_subject: client.new_inbox(),
                filter_subject: filter,
                deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                replay_policy: jetstream::consumer::ReplayPolicy::Instant,
                ..Default::default()
            })
            .await
            .context("listing keys")?;
        let mut out = Vec::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer.messages().await.context("listing keys")?;
        while let Some(message) = messages.next().await {
            let message = message.context("listing keys")?;
            let pending = message.info().map(|i| i.pending).unwrap_or(0);
            // Deletes, purges, and the markers the server leaves where a TTL ran out (which
            // carry `Nats-Marker-Reason` and no value) are not entries.
            let headers = message.headers.as_ref();
            let deleted = headers
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| op.as_str() != "PUT")
                || headers.and_then(|h| h.get("Nats-Marker-Reason")).is_some()
                || message.payload.len() < HEADER;
            if let Some(key) = message.subject.as_str().strip_prefix(store.prefix.as_str())
                && !deleted
            {
                out.push((key.to_string(), message.payload.clone()));
            }
            if pending == 0 {
                break;
            }
        }
        Ok(out)
    }
}

fn split(raw: &[u8]) -> (u64, &[u8]) {
    if raw.len() < HEADER {
        return (0, raw);
    }
    (decode_u64(&raw[..HEADER]), &raw[HEADER..])
}

fn decode_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map_or(0, u64::from_be_bytes)
}

fn ns_prefix(ns: &Namespace) -> String {
    format!("{}.{}.", hex::encode(&ns.tenant), hex::encode(&ns.provider))
}

fn full_key(ns: &Namespace, key: &str) -> String {
    format!("{}{}", ns_prefix(ns), hex::encode(key))
}

/// Whether an entry counts against its tenant's bound: a provider's, not the host's own
/// records (their provider part names no provider: it holds a `#`).
fn counted(full_key: &str) -> bool {
    let mut parts = full_key.split('.');
    let (Some(_), Some(provider), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    hex::decode(provider).is_ok_and(|p| !p.contains(&b'#'))
}

fn usage_key(tenant: &str) -> String {
    format!("{}.usage", hex::encode(tenant))
}

/// The counter of one provider's share of a tenant (`usage` is no hex, so this never meets a
/// provider's entries or listing).
fn provider_usage_key(ns: &Namespace) -> String {
    format!(
        "{}.usage.{}",
        hex::encode(&ns.tenant),
        hex::encode(&ns.provider)
    )
}

/// What an entry counts against its tenant's total (the key as the caller wrote it, roughly
/// half its hex form, and the stored value).
fn weight(full_key: &str, raw_len: usize) -> u64 {
    (full_key.len() / 2 + raw_len) as u64
}

#[async_trait::async_trait]
impl StateBackend for NatsBackend {
    async fn open(&self) -> anyhow::Result<()> {
        self.conn().await.map(drop)
    }

    async fn get(&self, ns: &Namespace, key: &str) -> anyhow::Result<Option<Stored>> {
        Ok(self.read(&full_key(ns, key)).await?.0)
    }

    async fn put(&self, ns: &Namespace, key: &str, write: Write) -> anyhow::Result<Written> {
        let k = full_key(ns, key);
        for _ in 0..COUNTER_RETRIES {
            let (live_entry, last, old_len) = self.read(&k).await?;
            let current = live_entry.as_ref().map_or(0, |s| s.revision);
            if let Some(expected) = write.expected
                && expected != current
            {
                return Ok(Written::Conflict(current));
            }
            let now = now_ms();
            let expires = write
                .ttl
                .map_or(0, |ttl| now.saturating_add(ttl.as_millis() as u64).max(1));
            let mut raw = Vec::with_capacity(HEADER + write.value.len());
            raw.extend_from_slice(&expires.to_be_bytes());
            raw.extend_from_slice(&write.value);
            let old_weight = if old_len > 0 { weight(&k, old_len) } else { 0 };
            let new_weight = weight(&k, raw.len());
            if let Some(bounds) = write.bounds {
                let after = |used: u64| used.saturating_sub(old_weight) + new_weight;
                let mut would = (
                    after(self.usage(&usage_key(&ns.tenant)).await?),
                    after(self.usage(&provider_usage_key(ns)).await?),
                );
                if bounds.passed(would.0, would.1).is_some() && self.sweeps.due(&ns.tenant) {
                    let (tenant, provider) = self.recount(ns).await?;
                    would = (after(tenant), after(provider));
                }
                if let Some((bound, would_be)) = bounds.passed(would.0, would.1) {
                    return Ok(Written::OverQuota { bound, would_be });
                }
            }
            // Expect exactly what was read: a racing writer makes this a conflict (or, for a
            // plain set, another round), never a lost update.
            match self
                .publish(&k, Bytes::from(raw), Some(last), write.ttl)
                .await?
            {
                Some(revision) => {
                    if write.bounds.is_some() {
                        self.account(ns, new_weight as i64 - old_weight as i64)
                            .await;
                    }
                    return Ok(Written::Ok(revision));
                }
                None if write.expected.is_some() => {
                    let now_current = self.read(&k).await?.0.map_or(0, |s| s.revision);
                    return Ok(Written::Conflict(now_current));
                }
                None => continue,
            }
        }
        anyhow::bail!("key `{key}` is contended; retry")
    }

    async fn delete(&self, ns: &Namespace, key: &str) -> anyhow::Result<bool> {
        let k = full_key(ns, key);
        let (live_entry, _, old_len) = self.read(&k).await?;
        if old_len == 0 {
            return Ok(false);
        }
        let (_, _, store) = self.conn().await?;
        store.delete(k.as_str()).await.context("deleting a key")?;
        if counted(&k) {
            self.account(ns, -(weight(&k, old_len) as i64)).await;
        }
        Ok(live_entry.is_some())
    }

    async fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<(Vec<String>, bool)> {
        let base = ns_prefix(ns);
        let entries = self.scan(&base).await?;
        let now = now_ms();
        let mut keys: Vec<String> = entries
            .into_iter()
            .filter(|(_, value)| live(split(value).0, now))
            .filter_map(|(k, _)| {
                let raw = hex::decode(k.strip_prefix(&base)?).ok()?;
                String::from_utf8(raw).ok()
            })
            .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
            .collect();
        keys.sort();
        let more = keys.len() > limit;
        keys.truncate(limit);
        Ok((keys, more))
    }
}

/// The test server the host's integration tests use too.
#[cfg(test)]
#[path = "../../../tests/all/common/nats_server.rs"]
pub(crate) mod nats_server;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imports::state::{Bounds, contract};

    fn start() -> super::nats_server::Nats {
        super::nats_server::Nats::start()
    }

    #[tokio::test]
    async fn keeps_the_state_contract_on_a_real_jetstream_server() {
        let server = start();
        let db = NatsBackend::new(&server.url, "contract", None);
        db.open().await.unwrap();
        contract::scoping_revisions_and_cas(&db).await;
        contract::expiry_paging_and_the_tenant_bound(&db).await;
        // Another host (another connection) sees the same state.
        let other = NatsBackend::new(&server.url, "contract", None);
        contract::still_there_after_a_restart(&other).await;
    }

    #[tokio::test]
    async fn two_hosts_racing_on_one_key_never_both_win() {
        let server = start();
        let a = NatsBackend::new(&server.url, "race", None);
        let b = NatsBackend::new(&server.url, "race", None);
        let ns = Namespace {
            tenant: "acme".into(),
            provider: "p".into(),
        };
        let claim = |expected| Write {
            value: b"mine".to_vec(),
            ttl: None,
            expected: Some(expected),
            bounds: None,
        };
        for round in 0..20u64 {
            let key = format!("slot/{round}");
            let (x, y) = tokio::join!(a.put(&ns, &key, claim(0)), b.put(&ns, &key, claim(0)));
            let wins = [x.unwrap(), y.unwrap()]
                .iter()
                .filter(|w| matches!(w, Written::Ok(_)))
                .count();
            assert_eq!(wins, 1, "round {round}: exactly one claim wins");
        }
    }

    #[tokio::test]
    async fn entries_the_server_expired_are_neither_listed_nor_counted() {
        let server = start();
        let db = NatsBackend::new(&server.url, "expiry", None);
        let ns = Namespace {
            tenant: "acme".into(),
            provider: "p".into(),
        };
        let write = |ttl, n| Write {
            value: vec![1; n],
            ttl,
            expected: None,
            bounds: Some(Bounds {
                tenant: 1000,
                provider: 1000,
            }),
        };
        db.put(&ns, "short", write(Some(Duration::from_secs(1)), 600))
            .await
            .unwrap();
        db.put(&ns, "kept", write(None, 10)).await.unwrap();
        // Past the TTL the server has removed the entry and left a marker in its place.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let (keys, _) = db.list(&ns, "", None, 10).await.unwrap();
        assert_eq!(keys, ["kept"]);
        // Its 600 bytes no longer count: 700 more fit under the bound of 1000.
        assert!(matches!(
            db.put(&ns, "next", write(None, 700)).await.unwrap(),
            Written::Ok(_)
        ));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let db = NatsBackend::new(&format!("nats://127.0.0.1:{port}"), "x", None);
        let e = format!("{:#}", db.open().await.unwrap_err());
        assert!(e.contains("connecting to NATS at nats://127.0.0.1:"), "{e}");
    }
}
