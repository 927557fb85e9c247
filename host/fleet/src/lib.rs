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

pub use greentic_bundle::{ClusterSection, StorageBounds};

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};

/// `bytes` as JetStream's signed bound.
pub(crate) fn bound(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
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
    greentic_jetstream::bound_stream(js, info, max_bytes, None).await?;
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
    if let Some(tls) = &section.tls {
        let files = tls.resolved(|p| dir.join(p));
        let config = greentic_tls::client_config(&files, &[])
            .map_err(|e| anyhow::anyhow!("[cluster].tls: {e}"))?;
        options = options
            .tls_client_config(std::sync::Arc::unwrap_or_clone(config))
            .require_tls(true);
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
    use crate::idempotency::{Claim, Records};
    use crate::limits::FleetLimits;
    use greentic_bundle::Limits;
    use greentic_jetstream::test_server as nats_server;

    async fn member(url: &str, id: &str) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        Fleet::connect(&ClusterSection::default(), url, dir.path(), id)
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_host_reaches_a_nats_server_of_a_private_pki_with_its_client_certificate() {
        use greentic_tls::ClientFiles;
        use greentic_tls::dev_ca::DevCa;
        let pki = tempfile::tempdir().unwrap();
        let ca = DevCa::new("fleet").unwrap();
        let (ca_cert, _) = ca.write(pki.path()).unwrap();
        let (cert, key) = ca
            .server(&["127.0.0.1", "localhost"])
            .unwrap()
            .write(pki.path(), "nats")
            .unwrap();
        ca.client("host-a.fleet.example")
            .unwrap()
            .write(pki.path(), "host")
            .unwrap();
        let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
        let (ca_arg, cert_arg, key_arg) = (path(&ca_cert), path(&cert), path(&key));
        // A server that requires TLS and verifies its clients' certificates.
        let server = nats_server::Nats::start_with(&[
            "--tls",
            "--tlscert",
            &cert_arg,
            "--tlskey",
            &key_arg,
            "--tlscacert",
            &ca_arg,
            "--tlsverify",
        ]);
        let section = |tls: ClientFiles| ClusterSection {
            tls: Some(tls),
            ..ClusterSection::default()
        };
        // Paths relative to the bundle directory, as a bundle names them.
        let good = ClientFiles {
            ca: Some("ca.crt".into()),
            cert: Some("host.crt".into()),
            key: Some("host.key".into()),
        };
        let fleet = Fleet::connect(&section(good.clone()), &server.url, pki.path(), "a")
            .await
            .unwrap();
        // JetStream answers through it: the buckets were made, and a record round-trips.
        fleet.hosts.put("probe", "up".into()).await.unwrap();
        let got = fleet.hosts.get("probe").await.unwrap().unwrap();
        assert_eq!(&got[..], b"up");

        // Without the client certificate the server refuses the host.
        let anonymous = ClientFiles {
            cert: None,
            key: None,
            ..good.clone()
        };
        assert!(
            Fleet::connect(&section(anonymous), &server.url, pki.path(), "b")
                .await
                .is_err()
        );
        // Trusting another CA, the host refuses the server.
        let other = DevCa::new("other").unwrap();
        std::fs::write(pki.path().join("other.crt"), other.cert_pem()).unwrap();
        let stranger = ClientFiles {
            ca: Some("other.crt".into()),
            ..good.clone()
        };
        assert!(
            Fleet::connect(&section(stranger), &server.url, pki.path(), "c")
                .await
                .is_err()
        );
        // A CA file that is not there is named.
        let missing = ClientFiles {
            ca: Some("missing.crt".into()),
            ..good
        };
        let e = Fleet::connect(&section(missing), &server.url, pki.path(), "d")
            .await
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("missing.crt"), "{e:#}");
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
        let who = |tenant: &str, user: Option<&str>| greentic_auth::Caller {
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
            .finish(Err(&greentic_engine::errors::CallError::GuestTrap(
                "x".into(),
            )))
            .await;
        assert!(matches!(
            rb.claim(&acme, "send", "k3", "f", soon()).await.unwrap(),
            Claim::Run(_)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slots_hold_across_hosts_and_fuel_grants_stay_within_the_budget() {
        let server = nats_server::Nats::start();
        let metrics = Arc::new(greentic_metrics::Metrics::default());
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
