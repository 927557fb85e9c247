//! A fleet: hosts that serve one bundle, coordinated through NATS JetStream.
//!
//! The data plane stays HTTP — any host serves any call. JetStream carries what the hosts
//! must agree on:
//!
//! - **revisions** ([`revisions`]): `greentic-host publish` puts a bundle revision (its text
//!   and lock, signed with a publisher's key) in the `<prefix>_revisions` bucket; every host
//!   watches it, verifies the signature against the keys its own active revision trusts, builds
//!   the revision (providers fetched, verified, compiled) and swaps it in; a canary serves a
//!   set of tenants first and is promoted or rolled back by the fleet's leader ([`canary`]);
//! - **membership** ([`member`]): each host's heartbeat (revision, canary, last refusal) lives
//!   in `<prefix>_hosts`, whose entries expire, so a dead host disappears;
//! - **limits** ([`limits`]): a tenant's `max_concurrent` and `fuel_per_second` hold across
//!   the fleet — slots are keys with a TTL in `<prefix>_slots`, fuel is leased from a
//!   server-side counter per tenant and second in the `<PREFIX>_FUEL` stream;
//! - **idempotency** ([`idempotency`]): a call with an `Idempotency-Key` runs at most once to
//!   completion fleet-wide; a retry on another host gets the first result.
//!
//! Nothing unsigned changes what a host runs: a revision is applied only with a valid
//! publisher signature, and what the leader writes (a verdict, a promotion) can only choose
//! between the two signed revisions already published.

pub mod canary;
pub mod deliveries;
pub mod idempotency;
pub mod limits;
pub mod member;
pub mod revisions;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};

/// `[cluster]`: joining a fleet (`greentic-host run --cluster URL` overrides `url`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// The NATS server: `nats://HOST:PORT`, or `tls://HOST:PORT` for TLS. Unset: no fleet.
    #[serde(default)]
    pub url: Option<String>,
    /// A NATS `.creds` file (user JWT and NKey seed), relative to the bundle.
    #[serde(default)]
    pub credentials: Option<PathBuf>,
    /// Prefix of the buckets and streams the fleet keeps (letters, digits, `-`, `_`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Names of `[trust.keys]` whose signatures a published revision may carry. A host
    /// applies no published revision without one.
    #[serde(default)]
    pub publishers: Vec<String>,
    /// Milliseconds between heartbeats.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// Seconds after its last heartbeat that a host is gone from `fleet status` (and its
    /// leadership free).
    #[serde(default = "default_host_ttl")]
    pub host_ttl_secs: u64,
    /// Copies of each bucket the fleet creates (an existing one is left as it is).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Seconds an idempotency record (and the result it keeps) lives.
    #[serde(default = "default_idempotency_ttl")]
    pub idempotency_ttl_secs: u64,
    /// Whether tenants' `max_concurrent` and `fuel_per_second` hold fleet-wide (on) or per
    /// host.
    #[serde(default = "default_true")]
    pub fleet_limits: bool,
    /// Milliseconds a host may hold a durable delivery without acknowledging it before it is
    /// redelivered to another host (longer than a delivery's deadline and queue time).
    #[serde(default = "default_ack_wait")]
    pub delivery_ack_wait_ms: u64,
    /// Attempts at a durable delivery before it is given up.
    #[serde(default = "default_attempts")]
    pub delivery_max_attempts: u32,
    /// Where a host keeps what it must remember across restarts — the newest revision it
    /// applied (its high-water mark) and that revision's signed record — relative to the
    /// bundle (default `.greentic/fleet`). It must be writable.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Seconds a durable delivery may wait in its queue before it is dropped unhandled.
    #[serde(default = "default_delivery_max_age")]
    pub delivery_max_age_secs: u64,
    /// The byte bound of each bucket and stream the fleet keeps (`[cluster.max_bytes]`).
    #[serde(default)]
    pub max_bytes: StorageBounds,
}

/// `[cluster.max_bytes]`: what each bucket and stream the fleet creates may hold, in bytes.
/// A bucket or stream found without a bound (made by an earlier version) is given it; one an
/// operator bounded is left as it is. A write past a bound is refused (`507 storage-full` to
/// a caller whose call needed it), never made room for by dropping what was acknowledged.
/// Each tenant's durable delivery queue is bounded by the tenant's own limits
/// (`queued_deliveries`, `queued_delivery_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageBounds {
    /// Published revisions and canary verdicts (default 64 MiB).
    #[serde(default = "default_revisions_bytes")]
    pub revisions: u64,
    /// Heartbeats and the leader's lease (default 16 MiB).
    #[serde(default = "default_hosts_bytes")]
    pub hosts: u64,
    /// Fleet-wide concurrency slots (default 64 MiB).
    #[serde(default = "default_counter_bytes")]
    pub slots: u64,
    /// Fleet-wide fuel counters (default 64 MiB).
    #[serde(default = "default_counter_bytes")]
    pub fuel: u64,
    /// Idempotency records and the results they keep (default 1 GiB).
    #[serde(default = "default_idempotency_bytes")]
    pub idempotency: u64,
    /// Durable deliveries accepted per tenant and second (default 64 MiB).
    #[serde(default = "default_counter_bytes")]
    pub delivery_rates: u64,
}

fn default_revisions_bytes() -> u64 {
    64 << 20
}
fn default_hosts_bytes() -> u64 {
    16 << 20
}
fn default_counter_bytes() -> u64 {
    64 << 20
}
fn default_idempotency_bytes() -> u64 {
    1 << 30
}
fn default_delivery_max_age() -> u64 {
    7 * 24 * 3600
}

impl Default for StorageBounds {
    fn default() -> StorageBounds {
        StorageBounds {
            revisions: default_revisions_bytes(),
            hosts: default_hosts_bytes(),
            slots: default_counter_bytes(),
            fuel: default_counter_bytes(),
            idempotency: default_idempotency_bytes(),
            delivery_rates: default_counter_bytes(),
        }
    }
}

/// `bytes` as JetStream's signed bound.
pub(crate) fn bound(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

fn default_prefix() -> String {
    "greentic".into()
}
fn default_heartbeat() -> u64 {
    2_000
}
fn default_host_ttl() -> u64 {
    10
}
fn default_replicas() -> usize {
    1
}
fn default_idempotency_ttl() -> u64 {
    24 * 3600
}
fn default_true() -> bool {
    true
}
fn default_ack_wait() -> u64 {
    60_000
}
fn default_attempts() -> u32 {
    10
}

impl Default for ClusterSection {
    fn default() -> ClusterSection {
        ClusterSection {
            url: None,
            credentials: None,
            prefix: default_prefix(),
            publishers: Vec::new(),
            heartbeat_ms: default_heartbeat(),
            host_ttl_secs: default_host_ttl(),
            replicas: default_replicas(),
            idempotency_ttl_secs: default_idempotency_ttl(),
            fleet_limits: true,
            delivery_ack_wait_ms: default_ack_wait(),
            delivery_max_attempts: default_attempts(),
            state_dir: None,
            delivery_max_age_secs: default_delivery_max_age(),
            max_bytes: StorageBounds::default(),
        }
    }
}

impl ClusterSection {
    /// What is wrong with the section, each naming the field.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.prefix.is_empty()
            || self.prefix.len() > 32
            || !self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            out.push(format!(
                "[cluster].prefix `{}` must be 1 to 32 letters, digits, `-` or `_`",
                greentic_manifest::clip_middle(&self.prefix, 64)
            ));
        }
        if self.heartbeat_ms < 100 || self.heartbeat_ms > 60_000 {
            out.push("[cluster].heartbeat_ms must be between 100 and 60000".into());
        }
        if self.host_ttl_secs * 1000 < self.heartbeat_ms * 2 {
            out.push(
                "[cluster].host_ttl_secs must be at least two heartbeats, or live hosts vanish"
                    .into(),
            );
        }
        if self.replicas == 0 || self.replicas > 5 {
            out.push("[cluster].replicas must be between 1 and 5".into());
        }
        if self.delivery_ack_wait_ms < 1_000 {
            out.push("[cluster].delivery_ack_wait_ms must be at least 1000".into());
        }
        if self.delivery_max_attempts == 0 {
            out.push("[cluster].delivery_max_attempts must be positive".into());
        }
        if self.idempotency_ttl_secs == 0 {
            out.push("[cluster].idempotency_ttl_secs must be positive".into());
        }
        if self.delivery_max_age_secs < 60 {
            out.push("[cluster].delivery_max_age_secs must be at least 60".into());
        }
        let b = &self.max_bytes;
        for (key, value) in [
            ("revisions", b.revisions),
            ("hosts", b.hosts),
            ("slots", b.slots),
            ("fuel", b.fuel),
            ("idempotency", b.idempotency),
            ("delivery_rates", b.delivery_rates),
        ] {
            if value < 1 << 20 {
                out.push(format!(
                    "[cluster].max_bytes.{key} is {value}; a bucket that small fills at once: give it at least 1048576 (1 MiB)"
                ));
            }
        }
        out
    }
}

/// A connection to the fleet's JetStream, with its buckets.
pub struct Fleet {
    /// `[cluster]` as the host started with it.
    pub section: ClusterSection,
    /// The server.
    pub url: String,
    /// This host's id in the fleet.
    pub host_id: String,
    /// The client.
    pub client: async_nats::Client,
    /// Its JetStream context.
    pub js: jetstream::Context,
    /// Published revisions (`stable`, `canary`, `verdict.*`).
    pub revisions: kv::Store,
    /// Heartbeats (`host.<id>`) and the leader's lease (`leader`).
    pub hosts: kv::Store,
}

/// A bucket, created with `config` (which names its byte bound) when missing; an existing one
/// is used as it is, but given `config`'s byte bound if it has none.
pub(crate) async fn bucket(
    js: &jetstream::Context,
    config: kv::Config,
) -> anyhow::Result<kv::Store> {
    let name = config.bucket.clone();
    let max_bytes = config.max_bytes;
    let store = match js.get_key_value(&name).await {
        Ok(store) => store,
        Err(e) if e.kind() == jetstream::context::KeyValueErrorKind::GetBucket => {
            return js
                .create_key_value(config)
                .await
                .with_context(|| format!("creating the JetStream bucket `{name}`"));
        }
        Err(e) => return Err(e).with_context(|| format!("opening the JetStream bucket `{name}`")),
    };
    let mut stream = store.stream.clone();
    let info = stream
        .info()
        .await
        .with_context(|| format!("reading the JetStream bucket `{name}`"))?
        .config
        .clone();
    crate::jetstream::bound_stream(js, info, max_bytes, None).await?;
    Ok(store)
}

/// `request`, or an error once `limit` passed without an answer: a fleet request that hangs
/// must not hold a call until its deadline.
pub(crate) async fn within<T, E: std::fmt::Display>(
    limit: Duration,
    request: impl std::future::IntoFuture<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, request).await {
        Ok(answer) => answer.map_err(|e| anyhow::anyhow!("{e}")),
        Err(_) => Err(anyhow::anyhow!(
            "the fleet's NATS server did not answer within {limit:?}"
        )),
    }
}

/// The keys of `store` under `prefix` (`host.`), from the stream's subjects: one request, no
/// consumer (listing keys through a consumer on every heartbeat would pile up consumers).
pub async fn keys_under(store: &kv::Store, prefix: &str) -> anyhow::Result<Vec<String>> {
    use futures_util::StreamExt as _;
    let filter = format!("{}{prefix}>", store.prefix);
    let mut subjects = store.stream.info_with_subjects(filter).await?;
    let mut out = Vec::new();
    while let Some(subject) = subjects.next().await {
        let (subject, _) = subject?;
        if let Some(key) = subject.strip_prefix(store.prefix.as_str()) {
            out.push(key.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// A host id usable as a key: letters, digits, `-` and `_` of `raw` (others become `-`).
pub fn key_safe(raw: &str) -> String {
    let id: String = raw
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if id.is_empty() { "host".into() } else { id }
}

/// This host's default id: `$HOSTNAME` (a pod's name) and the process id.
pub fn default_host_id() -> String {
    let name = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    key_safe(&format!("{name}-{}", std::process::id()))
}

impl Fleet {
    /// Connects to `url` as `host_id` (credentials resolved against `dir`) and opens the
    /// revisions and hosts buckets.
    pub async fn connect(
        section: &ClusterSection,
        url: &str,
        dir: &Path,
        host_id: &str,
    ) -> anyhow::Result<Fleet> {
        let client = connect(section, url, dir, host_id).await?;
        let js = jetstream::new(client.clone());
        let revisions = bucket(
            &js,
            kv::Config {
                bucket: format!("{}_revisions", section.prefix),
                description: "greentic bundle revisions: stable, canary, verdicts".into(),
                history: 16,
                num_replicas: section.replicas,
                max_bytes: bound(section.max_bytes.revisions),
                ..Default::default()
            },
        )
        .await?;
        let hosts = bucket(
            &js,
            kv::Config {
                bucket: format!("{}_hosts", section.prefix),
                description: "greentic host heartbeats and the fleet's leader".into(),
                history: 1,
                max_age: Duration::from_secs(section.host_ttl_secs),
                num_replicas: section.replicas,
                max_bytes: bound(section.max_bytes.hosts),
                ..Default::default()
            },
        )
        .await?;
        Ok(Fleet {
            section: section.clone(),
            url: url.to_string(),
            host_id: key_safe(host_id),
            client,
            js,
            revisions,
            hosts,
        })
    }
}

/// A NATS client for `url`, named after the host, with `[cluster].credentials` if set.
pub(crate) async fn connect(
    section: &ClusterSection,
    url: &str,
    dir: &Path,
    host_id: &str,
) -> anyhow::Result<async_nats::Client> {
    let mut options = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .name(format!("greentic-host {host_id}"));
    if let Some(creds) = &section.credentials {
        let path = if creds.is_absolute() {
            creds.clone()
        } else {
            dir.join(creds)
        };
        options = options
            .credentials_file(&path)
            .await
            .with_context(|| format!("reading NATS credentials {}", path.display()))?;
    }
    options
        .connect(url)
        .await
        .with_context(|| format!("connecting to the fleet's NATS server at {url}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::bundle::Limits;
    use crate::fleet::idempotency::{Claim, Records};
    use crate::fleet::limits::FleetLimits;
    use greentic_jetstream::test_server as nats_server;

    async fn member(url: &str, id: &str) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        Fleet::connect(&ClusterSection::default(), url, dir.path(), id)
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_keyed_call_runs_once_and_a_lapsed_claim_is_taken_over() {
        let server = nats_server::Nats::start();
        let (a, b) = (
            member(&server.url, "a").await,
            member(&server.url, "b").await,
        );
        let (ra, rb) = (
            Records::open(&a).await.unwrap(),
            Records::open(&b).await.unwrap(),
        );
        let soon = || Instant::now() + Duration::from_millis(300);
        let who = |tenant: &str, user: Option<&str>| crate::runtime::Caller {
            tenant: tenant.into(),
            team: None,
            user: user.map(str::to_string),
        };
        let (acme, globex) = (who("acme", None), who("globex", None));

        let started = Instant::now();
        let Claim::Run(running) = ra.claim(&acme, "send", "k1", "f", soon()).await.unwrap() else {
            panic!("a fresh key runs");
        };
        eprintln!("claim took {:?}", started.elapsed());
        // Another host meanwhile waits, and is told the call is still running.
        let e = rb
            .claim(&acme, "send", "k1", "f", soon())
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), "in-progress");
        // Another tenant's same key is another call.
        assert!(matches!(
            rb.claim(&globex, "send", "k1", "f", soon()).await.unwrap(),
            Claim::Run(_)
        ));
        running.finish(Ok(&serde_json::json!({"id": 7}))).await;
        // Another user of the tenant reusing the key is another call.
        assert!(matches!(
            rb.claim(&who("acme", Some("ann")), "send", "k1", "f", soon())
                .await
                .unwrap(),
            Claim::Run(_)
        ));
        match rb.claim(&acme, "send", "k1", "f", soon()).await.unwrap() {
            Claim::Done(result) => assert_eq!(result["id"], 7),
            Claim::Run(_) => panic!("a finished call ran again"),
        }
        // The same key with another request is refused, not answered with the first result.
        let e = rb
            .claim(&acme, "send", "k1", "g", soon())
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), "idempotency-key-reused");

        // A claim whose host stops renewing it (died) lapses and is taken over.
        let Claim::Run(dying) = ra.claim(&acme, "send", "k2", "f", soon()).await.unwrap() else {
            panic!()
        };
        drop(dying);
        let until = Instant::now() + Duration::from_secs(10);
        assert!(matches!(
            rb.claim(&acme, "send", "k2", "f", until).await.unwrap(),
            Claim::Run(_)
        ));

        // A failed call gives its record up: the retry runs.
        let Claim::Run(failing) = ra.claim(&acme, "send", "k3", "f", soon()).await.unwrap() else {
            panic!()
        };
        failing
            .finish(Err(&crate::errors::CallError::GuestTrap("x".into())))
            .await;
        assert!(matches!(
            rb.claim(&acme, "send", "k3", "f", soon()).await.unwrap(),
            Claim::Run(_)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slots_hold_across_hosts_and_fuel_grants_stay_within_the_budget() {
        let server = nats_server::Nats::start();
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let (a, b) = (
            member(&server.url, "a").await,
            member(&server.url, "b").await,
        );
        let la = FleetLimits::open(&a, metrics.clone()).await.unwrap();
        let lb = FleetLimits::open(&b, metrics.clone()).await.unwrap();
        let limits = Limits {
            max_concurrent: 3,
            fuel_per_call: 10,
            fuel_per_second: 1_000_000,
            ..Limits::default()
        };
        let soon = || Instant::now() + Duration::from_millis(200);
        let started = Instant::now();
        let first = la.admit("acme", "acme", &limits, soon()).await.unwrap();
        eprintln!("admit took {:?}", started.elapsed());
        let second = lb.admit("acme", "acme", &limits, soon()).await.unwrap();
        let third = la.admit("acme", "acme", &limits, soon()).await.unwrap();
        let e = lb
            .admit("acme", "acme", &limits, soon())
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("across the fleet"), "{e}");
        // The tenant's deliveries to a webhook provider have slots of their own.
        lb.admit("acme/webhook/hook", "acme", &limits, soon())
            .await
            .unwrap()
            .settle(0)
            .await;
        // Another tenant has slots of its own.
        lb.admit("globex", "globex", &limits, soon())
            .await
            .unwrap()
            .settle(0)
            .await;
        let started = Instant::now();
        second.settle(5).await;
        eprintln!("settle took {:?}", started.elapsed());
        lb.admit("acme", "acme", &limits, soon())
            .await
            .unwrap()
            .settle(5)
            .await;
        first.settle(5).await;
        third.settle(5).await;
        // Host a keeps its two free slots for a while, then gives them back: b gets all three.
        let later = Instant::now() + Duration::from_secs(5);
        let mut on_b = Vec::new();
        for _ in 0..3 {
            on_b.push(lb.admit("acme", "acme", &limits, later).await.unwrap());
        }
        for a in on_b {
            a.settle(1).await;
        }
        assert_eq!(
            metrics.counter("greentic_fleet_limits_degraded_total", &[("what", "slots")]),
            0.0
        );

        // Fuel: two hosts asking for a budget of 100 a second get at most 100 between them.
        let fuel = Limits {
            max_concurrent: 100,
            fuel_per_call: 10,
            fuel_per_second: 100,
            queue_timeout_ms: 1,
            ..Limits::default()
        };
        let (mut admitted, mut busy) = (0, 0);
        let started = Instant::now();
        for i in 0..30 {
            let host = if i % 2 == 0 { &la } else { &lb };
            match host
                .admit("metered", "metered", &fuel, Instant::now())
                .await
            {
                Ok(admission) => {
                    admitted += 1;
                    admission.settle(10).await;
                }
                Err(e) => {
                    assert_eq!(e.code(), "tenant-busy", "{e}");
                    busy += 1;
                }
            }
        }
        // Calls of 10 against 100 a second: ten a second, fleet-wide (plus, at the boundary,
        // the next second's ten).
        let seconds = started.elapsed().as_secs() + 2;
        assert!(admitted <= 10 * seconds as usize, "{admitted} admitted");
        assert!(admitted >= 10, "{admitted} admitted");
        assert!(busy >= 10, "{busy} refused");
    }
}
