//! The distributed state backend: a NATS JetStream key-value bucket, shared by every host of a
//! fleet.
//!
//! Keys are `hex(tenant).hex(provider).hex(key)` (JetStream keys allow few characters, and hex
//! keeps both prefixes and byte order). A value is stored after 8 bytes of expiry (0: none),
//! which a write also carries as the `Greentic-Expires` header, so a key can be judged live
//! from its headers alone. Revisions are the stream's sequence numbers — never reused — and
//! every change is a publish expecting the key's last sequence (compare-and-swap across hosts):
//! a write, a delete and the removal of an expired entry each replace exactly the revision
//! they read, or retry.
//!
//! **Usage.** Each tenant's total, and each provider's share of it, is a counter entry beside
//! the keys. The change that replaced a revision moves the counters by exactly the difference
//! in weight it made (compare-and-swap on the counter, retried until it lands), so however
//! writes, deletes and swaps of one key interleave across hosts, the counters end equal to
//! the bytes stored. Expired entries count until they are swept: a write that would pass a
//! bound first removes the tenant's expired entries (each by compare-and-delete, taking off
//! its own weight) — at most once per [`Sweeps::EVERY`] per tenant — and, if still over,
//! measures the tenant from its entries and corrects counters a crashed host left behind (a
//! write whose counter never moved). Counted entries carry no server-side TTL (the server
//! would remove them without moving the counters); the host's own uncounted records may.
//!
//! **Listing** reads keys through a short-lived consumer that delivers headers only (never
//! values), keeps at most a page of keys in memory, and is deleted when the listing ends (its
//! inactivity threshold removes it within seconds even if the host dies first).
//!
//! The bucket is created when missing (per-message TTLs on, `replicas` and `max_bytes` from
//! `[state]`) and never reconfigured when it exists — an operator's R3 bucket stays R3 — except
//! that a bucket without a byte bound gets `[state].max_bucket_bytes`; one without per-message
//! TTLs is refused. Acknowledged writes are durable as JetStream makes them (fsync every
//! `sync_interval`, 2 min by default: a power loss of every replica inside that window loses
//! them).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::OnceCell;

use super::{Namespace, StateBackend, Stored, Sweeps, Write, Written, live, now_ms};

/// Bytes of expiry before each stored value.
const HEADER: usize = 8;
/// The header carrying a value's expiry (ms since the epoch), for listings that read headers
/// only.
const EXPIRES: &str = "Greentic-Expires";
/// How long a change that lost a compare-and-swap keeps trying before it gives up.
const CONTENDED_FOR: Duration = Duration::from_secs(10);
/// Keys fetched per request while listing.
const LIST_BATCH: usize = 256;

/// A connection: the client (for inboxes), its JetStream context, the bucket.
type Conn = (async_nats::Client, jetstream::Context, kv::Store);

/// A JetStream key-value bucket holding every tenant's state.
pub struct NatsBackend {
    url: String,
    bucket: String,
    replicas: usize,
    max_bytes: i64,
    credentials: Option<std::path::PathBuf>,
    /// Connected on first use, in the runtime that serves calls (the client's connection
    /// task lives there).
    conn: OnceCell<Conn>,
    sweeps: Sweeps,
}

/// One stored key as a headers-only listing sees it.
struct Listed {
    /// The bucket key (`hex(tenant).hex(provider).hex(key)`, or a counter's).
    key: String,
    /// Its revision.
    revision: u64,
    /// Bytes of its stored value (expiry included).
    size: usize,
    /// When it expires (0: never).
    expires: u64,
}

/// Pauses between attempts of a contended compare-and-swap: short, growing, jittered.
struct Backoff {
    until: Instant,
    pause: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            until: Instant::now() + CONTENDED_FOR,
            pause: Duration::from_micros(200),
        }
    }

    /// Waits before the next attempt; false once the time is up.
    async fn wait(&mut self) -> bool {
        if Instant::now() >= self.until {
            return false;
        }
        tokio::time::sleep(self.pause.mul_f64(0.5 + fastrand::f64())).await;
        self.pause = (self.pause * 2).min(Duration::from_millis(20));
        true
    }
}

impl NatsBackend {
    /// A backend for `bucket` on the server at `url` (`nats://HOST:PORT`, `tls://…`), with an
    /// optional `.creds` file; nothing connects until first use (see [`StateBackend::open`]).
    pub fn new(url: &str, bucket: &str, credentials: Option<std::path::PathBuf>) -> NatsBackend {
        NatsBackend {
            url: url.to_string(),
            bucket: bucket.to_string(),
            replicas: 1,
            max_bytes: super::default_max_bucket_bytes() as i64,
            credentials,
            conn: OnceCell::new(),
            sweeps: Sweeps::default(),
        }
    }

    /// With `replicas` copies of a bucket it creates (an existing one is left as it is).
    pub fn with_replicas(mut self, replicas: usize) -> NatsBackend {
        self.replicas = replicas.max(1);
        self
    }

    /// With `max_bytes` as the bound of a bucket it creates (or of an existing one that has
    /// none).
    pub fn with_max_bytes(mut self, max_bytes: u64) -> NatsBackend {
        self.max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        self
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
        // An existing bucket is the operator's: used as it is, never reconfigured (but a
        // bucket with no byte bound gets one).
        let store = match js.get_key_value(&self.bucket).await {
            Ok(store) => store,
            Err(e) if e.kind() == jetstream::context::KeyValueErrorKind::GetBucket => js
                .create_key_value(kv::Config {
                    bucket: self.bucket.clone(),
                    description: "greentic provider state, per tenant and provider".into(),
                    history: 1,
                    num_replicas: self.replicas,
                    max_bytes: self.max_bytes,
                    // Entries written with a TTL are removed by the server when it passes.
                    limit_markers: Some(Duration::from_secs(60)),
                    ..Default::default()
                })
                .await
                .with_context(opening)?,
            Err(e) => return Err(e).with_context(opening),
        };
        let mut stream = store.stream.clone();
        let info = stream.info().await.with_context(opening)?.clone();
        if !info.config.allow_message_ttl {
            anyhow::bail!(
                "the JetStream bucket `{}` does not allow per-message TTLs, which state expiry needs; create it with them (e.g. `nats kv add {} --marker-ttl 1m`) or name another bucket in [state].bucket",
                self.bucket,
                self.bucket
            );
        }
        greentic_jetstream::bound_stream(&js, info.config, self.max_bytes, None)
            .await
            .with_context(opening)?;
        Ok((client, js, store))
    }

    async fn conn(&self) -> anyhow::Result<&Conn> {
        self.conn.get_or_try_init(|| self.connect()).await
    }

    /// Publishes `value` at `key`, expecting `last` as the key's last sequence (0: none) if
    /// given, with `headers`; `Ok(None)` when another revision was there.
    async fn publish(
        &self,
        key: &str,
        value: Bytes,
        last: Option<u64>,
        mut headers: HeaderMap,
    ) -> anyhow::Result<Option<u64>> {
        let (_, js, store) = self.conn().await?;
        if let Some(last) = last {
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                last.to_string(),
            );
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

    /// Deletes `key` if its revision is still `last`: whether this delete replaced it.
    async fn delete_if(&self, key: &str, last: u64) -> anyhow::Result<bool> {
        let (_, _, store) = self.conn().await?;
        match store.delete_expect_revision(key, Some(last)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(e).context("deleting a key"),
        }
    }

    /// The live entry at `key`: its value (after the expiry bytes) and revision; and the
    /// revision of whatever is there, live or expired (0: nothing), with its stored size (0:
    /// nothing, or a delete marker).
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

    /// What the counter at `key` says (a plain read; a counter below zero, for a moment,
    /// reads as zero).
    async fn counter(&self, key: &str) -> anyhow::Result<u64> {
        Ok(self.counter_signed(key).await?.max(0) as u64)
    }

    /// What the counter at `key` says, below zero included.
    async fn counter_signed(&self, key: &str) -> anyhow::Result<i64> {
        let (_, _, store) = self.conn().await?;
        Ok(match store.entry(key).await? {
            Some(e) if e.operation == kv::Operation::Put => decode_i64(&e.value),
            _ => 0,
        })
    }

    /// Moves the counters of `ns`'s tenant and provider by `delta`, after the change that
    /// made it landed. A counter that still cannot be moved after [`CONTENDED_FOR`] is logged
    /// and left to the repair at the tenant's bound — never reported as the change's failure.
    async fn account(&self, ns: &Namespace, delta: i64) {
        if delta == 0 {
            return;
        }
        for key in [usage_key(&ns.tenant), provider_usage_key(ns)] {
            if let Err(e) = self.add_usage(&key, delta).await {
                tracing::warn!(tenant = %ns.tenant, error = %format!("{e:#}"), "a state usage counter was not updated; the next write at the tenant's bound repairs it");
            }
        }
    }

    /// Adds `delta` bytes to the counter at `key` (compare-and-swap, retried until it lands).
    async fn add_usage(&self, key: &str, delta: i64) -> anyhow::Result<u64> {
        let mut backoff = Backoff::new();
        loop {
            let (_, _, store) = self.conn().await?;
            // Signed: a change's counter update can land before the update of the change it
            // followed (a delete's before its write's), so a counter may go below zero for a
            // moment; clamping it there would lose the difference for good.
            let (current, revision) = match store.entry(key).await? {
                Some(e) if e.operation == kv::Operation::Put => (decode_i64(&e.value), e.revision),
                Some(e) => (0, e.revision),
                None => (0, 0),
            };
            let next = current.saturating_add(delta);
            let value = Bytes::copy_from_slice(&next.to_be_bytes());
            if self
                .publish(key, value, Some(revision), HeaderMap::new())
                .await?
                .is_some()
            {
                return Ok(next.max(0) as u64);
            }
            if !backoff.wait().await {
                anyhow::bail!("the usage counter `{key}` stayed contended for {CONTENDED_FOR:?}");
            }
        }
    }

    /// Visits every stored (not deleted) key under `prefix` (ending with `.`), reading headers
    /// only, through a consumer deleted when the visit ends.
    async fn each(&self, prefix: &str, mut visit: impl FnMut(Listed)) -> anyhow::Result<()> {
        use jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
        let (_, _, store) = self.conn().await?;
        let consumer: jetstream::consumer::PullConsumer = store
            .stream
            .create_consumer(pull::Config {
                filter_subject: format!("{}{prefix}>", store.prefix),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ack_policy: AckPolicy::None,
                headers_only: true,
                memory_storage: true,
                // Gone within seconds if the host dies before deleting it.
                inactive_threshold: Duration::from_secs(5),
                ..Default::default()
            })
            .await
            .context("listing keys")?;
        let name = consumer.cached_info().name.clone();
        let mut pending = consumer.cached_info().num_pending;
        let visited = async {
            while pending > 0 {
                // Waits for what is pending (a no-wait fetch can come back empty before the
                // server has the new consumer's messages ready).
                let mut batch = consumer
                    .batch()
                    .max_messages(LIST_BATCH)
                    .expires(Duration::from_secs(2))
                    .messages()
                    .await
                    .context("listing keys")?;
                let mut got = 0;
                while let Some(message) = batch.next().await {
                    let message = message.map_err(|e| anyhow::anyhow!("listing keys: {e}"))?;
                    got += 1;
                    let info = message
                        .info()
                        .map_err(|e| anyhow::anyhow!("listing keys: {e}"))?;
                    pending = info.pending;
                    let revision = info.stream_sequence;
                    let headers = message.headers.as_ref();
                    let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
                    // Deletes, purges, and the markers the server leaves where a TTL ran out
                    // are not entries.
                    let deleted = header("KV-Operation").is_some_and(|op| op != "PUT")
                        || header("Nats-Marker-Reason").is_some();
                    let size: usize = header("Nats-Msg-Size")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let key = message.subject.as_str().strip_prefix(store.prefix.as_str());
                    if let (false, true, Some(key)) = (deleted, size >= HEADER, key) {
                        // Written before the header existed: such a value expired on the
                        // server's own TTL, so one still here is live.
                        let expires = header(EXPIRES).and_then(|v| v.parse().ok()).unwrap_or(0);
                        visit(Listed {
                            key: key.to_string(),
                            revision,
                            size,
                            expires,
                        });
                    }
                    if pending == 0 {
                        break;
                    }
                }
                if got == 0 {
                    anyhow::bail!(
                        "listing keys: the server delivered nothing for 2 s with {pending} key(s) pending"
                    );
                }
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = store.stream.delete_consumer(&name).await {
            tracing::debug!(error = %e, "deleting a listing consumer (it lapses by itself)");
        }
        visited
    }

    /// Removes the tenant's expired entries (each by compare-and-delete, taking its own
    /// weight off the counters); the bytes freed.
    async fn sweep(&self, tenant: &str) -> anyhow::Result<u64> {
        let now = now_ms();
        let mut expired = Vec::new();
        self.each(&format!("{}.", hex::encode(tenant)), |entry: Listed| {
            if counted(&entry.key) && !live(entry.expires, now) {
                expired.push(entry);
            }
        })
        .await?;
        let mut freed = 0;
        for entry in expired {
            if self.delete_if(&entry.key, entry.revision).await? {
                let w = weight(&entry.key, entry.size);
                self.account(&namespace_of(tenant, &entry.key), -(w as i64))
                    .await;
                freed += w;
            }
        }
        Ok(freed)
    }

    /// The tenant's bytes and each provider's (by hex name), measured from the entries.
    async fn measure_tenant(&self, tenant: &str) -> anyhow::Result<(u64, BTreeMap<String, u64>)> {
        let mut per_provider: BTreeMap<String, u64> = BTreeMap::new();
        self.each(&format!("{}.", hex::encode(tenant)), |entry: Listed| {
            if counted(&entry.key) {
                let provider = entry.key.split('.').nth(1).unwrap_or_default();
                *per_provider.entry(provider.to_string()).or_default() +=
                    weight(&entry.key, entry.size);
            }
        })
        .await?;
        Ok((per_provider.values().sum(), per_provider))
    }

    /// Sets the tenant's counters to what its entries measure, where they differ (a host that
    /// died between a change and its counter left them off); `ns`'s totals as measured.
    async fn repair(&self, ns: &Namespace) -> anyhow::Result<(u64, u64)> {
        let (total, per_provider) = self.measure_tenant(&ns.tenant).await?;
        let tenant_hex = hex::encode(&ns.tenant);
        let mut counters = vec![(usage_key(&ns.tenant), total)];
        counters.push((provider_usage_key(ns), 0));
        for (provider_hex, bytes) in &per_provider {
            let key = format!("{tenant_hex}.usage.{provider_hex}");
            counters.retain(|(k, _)| *k != key);
            counters.push((key, *bytes));
        }
        for (key, to) in counters {
            let current = self.counter_signed(&key).await?;
            if current != to as i64 {
                tracing::warn!(tenant = %ns.tenant, counter = %key, counted = current, stored = to, "a state usage counter disagreed with the stored entries; corrected");
                self.add_usage(&key, to as i64 - current).await?;
            }
        }
        let mine = per_provider
            .get(&hex::encode(&ns.provider))
            .copied()
            .unwrap_or(0);
        Ok((total, mine))
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

/// A counter: a signed 64-bit big-endian number (earlier versions wrote unsigned ones, never
/// above `i64::MAX`: the same bytes).
fn decode_i64(bytes: &[u8]) -> i64 {
    bytes.try_into().map_or(0, i64::from_be_bytes)
}

fn ns_prefix(ns: &Namespace) -> String {
    format!("{}.{}.", hex::encode(&ns.tenant), hex::encode(&ns.provider))
}

fn full_key(ns: &Namespace, key: &str) -> String {
    format!("{}{}", ns_prefix(ns), hex::encode(key))
}

/// The namespace of a bucket key of `tenant`.
fn namespace_of(tenant: &str, full_key: &str) -> Namespace {
    let provider = full_key
        .split('.')
        .nth(1)
        .and_then(|p| hex::decode(p).ok())
        .map(|p| String::from_utf8_lossy(&p).into_owned())
        .unwrap_or_default();
    Namespace {
        tenant: tenant.to_string(),
        provider,
    }
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
        let mut backoff = Backoff::new();
        loop {
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
                let used = |ns: &Namespace| {
                    let (t, p) = (usage_key(&ns.tenant), provider_usage_key(ns));
                    async move { anyhow::Ok((self.counter(&t).await?, self.counter(&p).await?)) }
                };
                let (t, p) = used(ns).await?;
                let mut would = (after(t), after(p));
                if bounds.passed(would.0, would.1).is_some() && self.sweeps.due(&ns.tenant) {
                    self.sweep(&ns.tenant).await?;
                    let (t, p) = used(ns).await?;
                    would = (after(t), after(p));
                    if bounds.passed(would.0, would.1).is_some() {
                        let (t, p) = self.repair(ns).await?;
                        would = (after(t), after(p));
                    }
                }
                if let Some((bound, would_be)) = bounds.passed(would.0, would.1) {
                    return Ok(Written::OverQuota { bound, would_be });
                }
            }
            let mut headers = HeaderMap::new();
            if expires > 0 {
                headers.insert(EXPIRES, expires.to_string());
                // Only uncounted records may be removed by the server itself: it would not
                // move the counters.
                if let (Some(ttl), None) = (write.ttl, write.bounds) {
                    let secs = ttl.as_millis().div_ceil(1000).max(1) as u64;
                    headers.insert(async_nats::header::NATS_MESSAGE_TTL, secs.to_string());
                }
            }
            // Expect exactly what was read: a racing writer makes this a conflict (or, for a
            // plain set, another round), never a lost update.
            match self
                .publish(&k, Bytes::from(raw), Some(last), headers)
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
                None => {
                    if !backoff.wait().await {
                        anyhow::bail!("key `{key}` stayed contended for {CONTENDED_FOR:?}; retry");
                    }
                }
            }
        }
    }

    async fn delete(&self, ns: &Namespace, key: &str) -> anyhow::Result<bool> {
        let k = full_key(ns, key);
        let mut backoff = Backoff::new();
        loop {
            let (live_entry, last, old_len) = self.read(&k).await?;
            if old_len == 0 {
                return Ok(false);
            }
            // Only the delete that replaces the revision read takes its weight off: two
            // deletes racing on one key never both do.
            if self.delete_if(&k, last).await? {
                if counted(&k) {
                    self.account(ns, -(weight(&k, old_len) as i64)).await;
                }
                return Ok(live_entry.is_some());
            }
            if !backoff.wait().await {
                anyhow::bail!("key `{key}` stayed contended for {CONTENDED_FOR:?}; retry");
            }
        }
    }

    async fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<(Vec<String>, bool)> {
        let base = ns_prefix(ns);
        let now = now_ms();
        // The first `limit + 1` keys in order, and nothing else, are kept while the listing
        // streams by.
        let mut page = std::collections::BTreeSet::new();
        self.each(&base, |entry: Listed| {
            if live(entry.expires, now)
                && let Some(raw) = entry.key.strip_prefix(&base)
                && let Ok(raw) = hex::decode(raw)
                && let Ok(k) = String::from_utf8(raw)
                && k.starts_with(prefix)
                && after.is_none_or(|a| k.as_str() > a)
            {
                page.insert(k);
                if page.len() > limit + 1 {
                    page.pop_last();
                }
            }
        })
        .await?;
        let more = page.len() > limit;
        let mut keys: Vec<String> = page.into_iter().collect();
        keys.truncate(limit);
        Ok((keys, more))
    }

    async fn usage(&self, ns: &Namespace) -> anyhow::Result<(u64, u64)> {
        Ok((
            self.counter(&usage_key(&ns.tenant)).await?,
            self.counter(&provider_usage_key(ns)).await?,
        ))
    }

    async fn measure(&self, ns: &Namespace) -> anyhow::Result<(u64, u64)> {
        let (total, per_provider) = self.measure_tenant(&ns.tenant).await?;
        Ok((
            total,
            per_provider
                .get(&hex::encode(&ns.provider))
                .copied()
                .unwrap_or(0),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Bounds, contract};

    fn start() -> greentic_jetstream::test_server::Nats {
        greentic_jetstream::test_server::Nats::start()
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn usage_stays_exact_under_concurrent_storms_from_two_hosts() {
        let server = start();
        let a: std::sync::Arc<dyn StateBackend> =
            std::sync::Arc::new(NatsBackend::new(&server.url, "storm", None));
        let b: std::sync::Arc<dyn StateBackend> =
            std::sync::Arc::new(NatsBackend::new(&server.url, "storm", None));
        contract::usage_is_exact_under_concurrent_storms(&[a, b]).await;
    }

    /// The consumers the server holds on the bucket's stream.
    async fn consumers(db: &NatsBackend) -> usize {
        let (_, js, _) = db.conn().await.unwrap();
        let mut stream = js.get_stream("KV_listing").await.unwrap();
        stream.info().await.unwrap().state.consumer_count
    }

    #[tokio::test]
    async fn listing_leaves_no_consumer_behind_and_holds_only_a_page() {
        let server = start();
        let db = NatsBackend::new(&server.url, "listing", None);
        let ns = Namespace {
            tenant: "acme".into(),
            provider: "p".into(),
        };
        // An empty namespace, then one of 600 keys with values of 4 KiB.
        let before = consumers(&db).await;
        for _ in 0..50 {
            let (keys, more) = db.list(&ns, "", None, 10).await.unwrap();
            assert!(keys.is_empty() && !more);
        }
        assert_eq!(consumers(&db).await, before, "listing an empty namespace");
        for i in 0..600 {
            let w = Write {
                value: vec![7; 4096],
                ttl: None,
                expected: None,
                bounds: None,
            };
            db.put(&ns, &format!("k{i:04}"), w).await.unwrap();
        }
        db.delete(&ns, "k0001").await.unwrap();
        let mut after = None;
        let mut seen = Vec::new();
        loop {
            let (keys, more) = db.list(&ns, "k", after.as_deref(), 100).await.unwrap();
            assert!(keys.len() <= 100);
            seen.extend(keys.iter().cloned());
            if !more {
                break;
            }
            after = keys.last().cloned();
        }
        assert_eq!(seen.len(), 599);
        assert!(!seen.contains(&"k0001".to_string()));
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order");
        // Many listings in a row (a provider looping on list-keys) leave no consumer behind.
        for _ in 0..30 {
            db.list(&ns, "", None, 5).await.unwrap();
        }
        assert_eq!(consumers(&db).await, before, "after 37 listings");
    }

    #[tokio::test]
    async fn expired_entries_are_neither_listed_nor_counted() {
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
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (keys, _) = db.list(&ns, "", None, 10).await.unwrap();
        assert_eq!(keys, ["kept"]);
        // Its 600 bytes are swept out by the write that needs the room: 700 more fit under the
        // bound of 1000, and the counters say exactly what is stored.
        assert!(matches!(
            db.put(&ns, "next", write(None, 700)).await.unwrap(),
            Written::Ok(_)
        ));
        assert_eq!(db.usage(&ns).await.unwrap(), db.measure(&ns).await.unwrap());
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
