//! A fleet: three real `greentic-host run --cluster` processes, a real `nats-server` with
//! JetStream, a real registry and real signatures, each host in its own bundle directory.

use crate::common;
use crate::common::built;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Host, Nats, TestBundle, run_in, text};
use serde_json::json;

/// What every fleet bundle starts with: providers are signed with `ci` (cosign.key), revisions
/// with `publisher` (publisher.key) — a key does one job.
const FLEET: &str = r#"
[trust.keys]
ci = "cosign.pub"
publisher = { file = "publisher.pub", roles = ["publisher"] }

[cluster]
publishers = ["publisher"]
heartbeat_ms = 200
host_ttl_secs = 2
delivery_ack_wait_ms = 2000
"#;

/// Copies the files of `from` a host needs (not the publisher's private keys).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".key") || name.starts_with('.') || name == "greentic.lock" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

/// NATS, a registry, a publisher's bundle directory, and hosts in directories of their own.
struct Cluster {
    nats: Nats,
    registry: String,
    _registry: greentic_registry::testing::Registry,
    publisher: TestBundle,
    hosts: Vec<Option<Host>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// Pushes and signs `components` (`(name:tag, component)`), publishes the bundle `body`
    /// makes (`{registry}` substituted) and starts `n` hosts following it.
    fn start(
        body: &dyn Fn(&str) -> String,
        components: &[(&str, built::Component)],
        n: usize,
    ) -> Cluster {
        Cluster::start_with(body, components, n, &[])
    }

    /// [`Cluster::start`] with secret files (`tenant/NAME` → value) in every bundle directory.
    fn start_with(
        body: &dyn Fn(&str) -> String,
        components: &[(&str, built::Component)],
        n: usize,
        secrets: &[(&str, &str)],
    ) -> Cluster {
        let nats = Nats::start();
        let registry = greentic_registry::testing::Registry::start();
        let reg = registry.addr.clone();
        let publisher = TestBundle::new(&format!("{FLEET}{}", body(&reg)), secrets);
        let dir = publisher.path();
        assert!(run_in(dir, &["keygen"]).status.success());
        assert!(
            run_in(dir, &["keygen", "--output-key-prefix", "publisher"])
                .status
                .success()
        );
        for (name, component) in components {
            let reference = format!("{reg}/providers/{name}");
            let wasm = common::component("wasip2", *component);
            let out = run_in(dir, &["push", wasm.to_str().unwrap(), &reference]);
            assert!(out.status.success(), "{}", text(&out).1);
            let out = run_in(dir, &["sign", "--key", "cosign.key", &reference]);
            assert!(out.status.success(), "{}", text(&out).1);
        }
        let mut cluster = Cluster {
            nats,
            registry: reg,
            _registry: registry,
            publisher,
            hosts: Vec::new(),
            _dirs: Vec::new(),
        };
        let first = cluster.publish(&body(&cluster.registry.clone()), &[]);
        for i in 0..n {
            cluster.add_host(&format!("h{i}"));
        }
        cluster.wait_converged(&first);
        cluster
    }

    /// Starts one more host, `id`, in a bundle directory of its own.
    fn add_host(&mut self, id: &str) {
        let host_dir = tempfile::tempdir().unwrap();
        copy_dir(self.publisher.path(), host_dir.path());
        self.start_host_in(id, host_dir);
    }

    /// Starts host `id` in `host_dir` (a directory a host of the fleet ran in before keeps
    /// what it remembered).
    fn start_host_in(&mut self, id: &str, host_dir: tempfile::TempDir) {
        let host = Host::start_with_args(
            host_dir.path(),
            &["--cluster", &self.nats.url, "--host-id", id],
        );
        self.hosts.push(Some(host));
        self._dirs.push(host_dir);
    }

    /// Publishes the bundle `body` makes (after [`FLEET`]) with `args`; the revision's digest.
    fn publish(&self, body: &str, args: &[&str]) -> String {
        self.publish_with_key(body, "publisher.key", args)
    }

    fn publish_with_key(&self, body: &str, key: &str, args: &[&str]) -> String {
        self.publisher.rewrite(&format!("{FLEET}{body}"));
        let dir = self.publisher.path().to_str().unwrap().to_string();
        let mut all = vec![
            "publish",
            dir.as_str(),
            "--cluster",
            self.nats.url.as_str(),
            "--key",
            key,
        ];
        all.extend_from_slice(args);
        let out = run_in(self.publisher.path(), &all);
        assert!(out.status.success(), "publish: {:?}", text(&out));
        // "published sha256:… [as a canary …]": the revision's digest (of the text and lock).
        let stdout = text(&out).0;
        let digest = stdout.split_whitespace().nth(1).unwrap_or_default();
        assert!(digest.starts_with("sha256:"), "{stdout}");
        digest.to_string()
    }

    /// `fleet status --json` (and whether it says converged).
    fn status(&self, wait: u64) -> (bool, serde_json::Value) {
        let out = run_in(
            self.publisher.path(),
            &[
                "fleet",
                "status",
                "--cluster",
                &self.nats.url,
                "--json",
                "--wait",
                &wait.to_string(),
            ],
        );
        let (stdout, stderr) = text(&out);
        let view = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("fleet status ({e}): {stdout}{stderr}"));
        (out.status.success(), view)
    }

    /// Waits until every live host runs `digest` (and `fleet status` says converged).
    fn wait_converged(&self, digest: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (converged, view) = self.status(5);
            let live = self.hosts.iter().flatten().count();
            let hosts = view["hosts"].as_array().cloned().unwrap_or_default();
            if converged && hosts.len() == live && hosts.iter().all(|h| h["revision"] == digest) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the fleet never converged on {digest}: {view:#}"
            );
        }
    }

    /// Waits until `check` holds for the `fleet status` view.
    fn wait_for(
        &self,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (_, view) = self.status(0);
            if check(&view) {
                return view;
            }
            assert!(Instant::now() < deadline, "never saw {what}: {view:#}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn addrs(&self) -> Vec<String> {
        self.hosts
            .iter()
            .flatten()
            .map(|h| h.addr.clone())
            .collect()
    }

    fn metrics(&self) -> Vec<String> {
        self.hosts
            .iter()
            .flatten()
            .map(|h| h.admin("GET", "/metrics").text())
            .collect()
    }
}

/// The sum over hosts of the metric line that starts with `prefix`.
fn metric_sum(all: &[String], prefix: &str) -> f64 {
    all.iter()
        .flat_map(|m| m.lines())
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One answer a driver got.
#[derive(Debug, Clone)]
struct Answer {
    tenant: String,
    status: u16,
    body: serde_json::Value,
    at: Instant,
}

/// Threads sending `{"to": "a", "text": "b"}` for each (tenant, token), round robin over the
/// hosts, until stopped.
struct Driver {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Driver {
    fn start(addrs: Vec<String>, tokens: Vec<(String, String)>) -> Driver {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for (i, (tenant, token)) in tokens.into_iter().enumerate() {
            let (stop, answers, addrs) = (stop.clone(), answers.clone(), addrs.clone());
            threads.push(std::thread::spawn(move || {
                let mut n = i;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let reply = common::http(
                        &addrs[n % addrs.len()],
                        "POST",
                        "/v1/invoke/send",
                        &[("authorization", &format!("Bearer {token}"))],
                        json!({"to": "a", "text": "b"}).to_string().as_bytes(),
                    );
                    let body = serde_json::from_slice(&reply.body).unwrap_or(json!(reply.text()));
                    answers.lock().unwrap().push(Answer {
                        tenant: tenant.clone(),
                        status: reply.status,
                        body,
                        at: Instant::now(),
                    });
                }
            }));
        }
        Driver {
            stop,
            answers,
            threads,
        }
    }

    fn count(&self) -> usize {
        self.answers.lock().unwrap().len()
    }

    /// Waits until `n` more answers came.
    fn wait(&self, n: usize) {
        let start = self.count();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.count() < start + n {
            assert!(Instant::now() < deadline, "the driver stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.answers.lock().unwrap().clone()
    }
}

/// Tenants acme and globex routed to provider `name` (`{reg}/providers/NAME:TAG`), each
/// configured with `label`.
fn labelled(reg: &str, name: &str, tag: &str, label: &str) -> String {
    format!(
        r#"
[providers.{name}]
source = "{reg}/providers/{name}:{tag}"
trusted_keys = ["ci"]

[tenants.acme]
config.{name} = {{ label = "{label}" }}

[tenants.globex]
config.{name} = {{ label = "{label}" }}

[[routes]]
tenant = "*"
capability = "send"
provider = "{name}"
"#
    )
}

fn echo_bundle(reg: &str, label: &str) -> String {
    labelled(reg, "echo", "1.0.0", label)
}

mod hostile;

#[test]
fn a_published_revision_converges_under_load_and_a_badly_signed_one_is_refused_everywhere() {
    let cluster = Cluster::start(
        &|reg| echo_bundle(reg, "one"),
        &[("echo:1.0.0", built::ECHO)],
        3,
    );
    let reg = cluster.registry.clone();
    let one = cluster.hosts[0]
        .as_ref()
        .unwrap()
        .admin("GET", "/readyz")
        .json()["revision"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let tokens = ["acme", "globex", "acme", "globex"]
        .iter()
        .map(|t| (t.to_string(), cluster.publisher.token(t, None)))
        .collect();
    let driver = Driver::start(cluster.addrs(), tokens);
    driver.wait(30);

    // A new revision, published under load, converges on every host.
    let publishing = Instant::now();
    let two = cluster.publish(&echo_bundle(&reg, "two"), &[]);
    cluster.wait_converged(&two);
    let converged_at = Instant::now();
    eprintln!(
        "three hosts converged {:?} after `publish` started (its own check included)",
        converged_at - publishing
    );
    driver.wait(30);

    // One signed with a key no host trusts is refused by every host; two keeps serving.
    assert!(
        run_in(
            cluster.publisher.path(),
            &["keygen", "--output-key-prefix", "intruder"]
        )
        .status
        .success()
    );
    let three = cluster.publish_with_key(&echo_bundle(&reg, "three"), "intruder.key", &[]);
    let view = cluster.wait_for("every host refusing the intruder's revision", |v| {
        v["hosts"].as_array().is_some_and(|hosts| {
            hosts.len() == 3
                && hosts
                    .iter()
                    .all(|h| h["refused"]["digest"] == three.as_str())
        })
    });
    for h in view["hosts"].as_array().unwrap() {
        assert_eq!(h["revision"], two.as_str(), "{view:#}");
        assert!(
            h["refused"]["problems"]
                .to_string()
                .contains("no key in [cluster].publishers"),
            "{view:#}"
        );
    }
    let (converged, _) = cluster.status(0);
    assert!(
        !converged,
        "a fleet refusing the published revision is not converged"
    );

    // The first revision's signed record, written back by anyone who can write to the bucket,
    // is an old record: refused everywhere too.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use futures_util::StreamExt;
        let client = async_nats::connect(&cluster.nats.url).await.unwrap();
        let kv = async_nats::jetstream::new(client)
            .get_key_value("greentic_revisions")
            .await
            .unwrap();
        let first = kv
            .history("stable")
            .await
            .unwrap()
            .next()
            .await
            .unwrap()
            .unwrap();
        kv.put("stable", first.value).await.unwrap();
    });
    let view = cluster.wait_for("every host refusing the replayed revision", |v| {
        v["hosts"].as_array().is_some_and(|hosts| {
            hosts.len() == 3 && hosts.iter().all(|h| h["refused"]["digest"] == one.as_str())
        })
    });
    for h in view["hosts"].as_array().unwrap() {
        assert_eq!(h["revision"], two.as_str(), "{view:#}");
        assert!(
            h["refused"]["problems"]
                .to_string()
                .contains("published before"),
            "{view:#}"
        );
    }
    driver.wait(30);
    let answers = driver.finish();

    let labels: BTreeMap<&str, &str> = [(one.as_str(), "one"), (two.as_str(), "two")].into();
    let mut seen = BTreeSet::new();
    for a in &answers {
        assert_eq!(a.status, 200, "{} failed: {}", a.tenant, a.body);
        let revision = a.body["revision"].as_str().unwrap();
        let label = labels
            .get(revision)
            .unwrap_or_else(|| panic!("answered by revision {revision}: {}", a.body));
        assert_eq!(a.body["id"], format!("{}/-/-:a:b@{label}", a.tenant));
        if a.at > converged_at {
            assert_eq!(
                revision, two,
                "an answer after convergence came from {revision}"
            );
        }
        seen.insert(revision);
    }
    assert_eq!(seen.len(), 2, "the load did not span the rollout");
}

/// An upstream on loopback that answers every POST after `delay`, counting requests per
/// idempotency key and the most requests running at once per path.
struct Upstream {
    addr: String,
    keys: Arc<Mutex<HashMap<String, u32>>>,
    peak: Arc<Mutex<HashMap<String, usize>>>,
}

impl Upstream {
    fn start(delay: Duration) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let keys = Arc::new(Mutex::new(HashMap::new()));
        let peak = Arc::new(Mutex::new(HashMap::new()));
        let running = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let (k, p) = (keys.clone(), peak.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (keys, peak, running) = (k.clone(), p.clone(), running.clone());
                std::thread::spawn(move || {
                    let Some(req) = common::read_request(&mut stream) else {
                        return;
                    };
                    {
                        let mut r = running.lock().unwrap();
                        let now = r.entry(req.path.clone()).or_default();
                        *now += 1;
                        let mut p = peak.lock().unwrap();
                        let top: &mut usize = p.entry(req.path.clone()).or_default();
                        *top = (*top).max(*now);
                    }
                    if let Some(key) = req.headers.get("idempotency-key") {
                        *keys.lock().unwrap().entry(key.clone()).or_default() += 1;
                    }
                    std::thread::sleep(delay);
                    *running.lock().unwrap().get_mut(&req.path).unwrap() -= 1;
                    use std::io::Write;
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    );
                });
            }
        });
        Upstream { addr, keys, peak }
    }
}

fn hook_bundle(reg: &str, upstream: &str, tenants: &[(&str, &str)]) -> String {
    let mut t = format!(
        r#"
[providers.hook]
source = "{reg}/providers/hook:1.0.0"
trusted_keys = ["ci"]
grants = {{ outbound_hosts = ["http://127.0.0.1:*"], secrets = ["WEBHOOK_BEARER_TOKEN"] }}

[[routes]]
tenant = "*"
capability = "send"
provider = "hook"
"#
    );
    for (tenant, limits) in tenants {
        t.push_str(&format!(
            "\n[tenants.{tenant}]\nlimits = {{ {limits} }}\nconfig.hook = {{ url = \"http://{upstream}/{tenant}\" }}\n"
        ));
    }
    t
}

#[test]
fn a_host_killed_mid_load_loses_no_keyed_call_and_runs_none_twice_to_completion() {
    let upstream = Upstream::start(Duration::from_millis(15));
    let up = upstream.addr.clone();
    let mut cluster = Cluster::start(
        &|reg| hook_bundle(reg, &up, &[("acme", "max_concurrent = 16")]),
        &[("hook:1.0.0", built::MESSAGING_WEBHOOK)],
        3,
    );
    let token = cluster.publisher.token("acme", None);
    let addrs = cluster.addrs();
    const CALLS: usize = 2000;
    const CLIENTS: usize = 8;
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(BTreeMap::<usize, serde_json::Value>::new()));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (next, done, results, addrs, token) = (
            next.clone(),
            done.clone(),
            results.clone(),
            addrs.clone(),
            token.clone(),
        );
        clients.push(std::thread::spawn(move || {
            loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= CALLS {
                    return;
                }
                let key = format!("key-{k}");
                let mut host = k;
                let deadline = Instant::now() + Duration::from_secs(60);
                // The client's part: on a cut connection or a retryable answer, retry the same
                // key on another host.
                let body = loop {
                    assert!(Instant::now() < deadline, "{key} never succeeded");
                    let reply = common::try_http(
                        &addrs[host % addrs.len()],
                        "POST",
                        "/v1/invoke/send",
                        &[
                            ("authorization", &format!("Bearer {token}")),
                            ("idempotency-key", &key),
                        ],
                        json!({"to": "#ops", "text": key}).to_string().as_bytes(),
                    );
                    match reply {
                        Ok(r) if r.status == 200 => break r.json(),
                        Ok(r) if [409, 429, 503].contains(&r.status) => {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        Ok(r) => panic!("{key}: {} {}", r.status, r.text()),
                        Err(_) => host += 1,
                    }
                };
                results.lock().unwrap().insert(k, body);
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    // A third of the way in, one host dies without a chance to finish anything.
    while done.load(Ordering::SeqCst) < CALLS / 3 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let victim = cluster.hosts[0].take().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-9", &victim.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    for c in clients {
        c.join().unwrap();
    }
    drop(victim);
    let results = results.lock().unwrap();
    assert_eq!(results.len(), CALLS, "every call succeeded");

    // Each key's effect reached the upstream; only calls cut off by the kill were sent twice,
    // with the same key.
    let keys = upstream.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), CALLS, "distinct keys the upstream saw");
    let duplicates: u32 = keys.values().map(|n| n - 1).sum();
    eprintln!("{duplicates} of {CALLS} keys reached the upstream twice (the kill cut them off)");
    assert!(
        duplicates as usize <= CLIENTS,
        "{duplicates} keys reached the upstream twice; at most the {CLIENTS} calls in flight on the killed host may"
    );

    // A retry of a finished call, on another host, gets the first result and runs nothing.
    let before: u32 = keys.values().sum();
    let survivor = cluster.hosts[1].as_ref().unwrap();
    for k in [0usize, 1, CALLS - 1] {
        let key = format!("key-{k}");
        let r = survivor.request(
            "POST",
            "/v1/invoke/send",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("idempotency-key", &key),
            ],
            json!({"to": "#ops", "text": key}).to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["replayed"], true, "{}", r.text());
        assert_eq!(r.json()["trace_id"], results[&k]["trace_id"]);
    }
    let after: u32 = upstream.keys.lock().unwrap().values().sum();
    assert_eq!(before, after, "a replayed call reached the upstream");
}

#[test]
fn a_tenants_limits_hold_across_the_fleet_and_another_tenant_is_unaffected() {
    let upstream = Upstream::start(Duration::from_millis(100));
    let up = upstream.addr.clone();
    let cluster = Cluster::start(
        &|reg| {
            hook_bundle(
                reg,
                &up,
                &[
                    (
                        "busy",
                        "max_concurrent = 4, queue_timeout_ms = 60000, deadline_ms = 10000",
                    ),
                    ("calm", "max_concurrent = 8, queue_timeout_ms = 60000"),
                ],
            )
        },
        &[("hook:1.0.0", built::MESSAGING_WEBHOOK)],
        3,
    );
    let addrs = cluster.addrs();
    let mut calls = Vec::new();
    for (tenant, n) in [("busy", 50usize), ("calm", 20)] {
        let token = cluster.publisher.token(tenant, None);
        for i in 0..n {
            let (addr, token) = (addrs[i % addrs.len()].clone(), token.clone());
            calls.push(std::thread::spawn(move || {
                let r = common::http(
                    &addr,
                    "POST",
                    "/v1/invoke/send",
                    &[("authorization", &format!("Bearer {token}"))],
                    json!({"to": "#ops", "text": i.to_string()})
                        .to_string()
                        .as_bytes(),
                );
                (tenant, r)
            }));
        }
    }
    for c in calls {
        let (tenant, r) = c.join().unwrap();
        assert_eq!(r.status, 200, "{tenant}: {}", r.text());
    }
    let peak = upstream.peak.lock().unwrap().clone();
    // 50 calls over three hosts, each of which alone would run 4: never more than 4 at once.
    assert!(
        peak["/busy"] <= 4,
        "busy ran {} at once across the fleet",
        peak["/busy"]
    );
    assert!(peak["/busy"] >= 2, "busy never ran concurrently: {peak:?}");
    // The other tenant was not held to busy's slots.
    assert!(
        peak["/calm"] > 4,
        "calm ran at most {} at once",
        peak["/calm"]
    );
    let metrics = cluster.metrics();
    assert_eq!(
        metric_sum(&metrics, "greentic_fleet_limits_degraded_total"),
        0.0,
        "the fleet limits fell back to per-host limits"
    );
}

#[test]
pub(crate) fn fuel_per_second_holds_across_the_fleet_within_the_documented_bound() {
    // A call (collatz 5000) consumes about 8 M of its F; the fleet grants at most B a second:
    // over T seconds the fuel consumed stays within B × (T + 1) + max_concurrent × F (see
    // fleet::limits), where three hosts on their own would each allow B.
    const F: u64 = 20_000_000;
    const B: u64 = 40_000_000;
    const MAX_CONCURRENT: u64 = 4;
    let cluster = Cluster::start(
        &|reg| {
            format!(
                r#"
[providers.work]
source = "{reg}/providers/work:1.0.0"
trusted_keys = ["ci"]

[tenants.metered]
limits = {{ fuel_per_call = {F}, fuel_per_second = {B}, max_concurrent = {MAX_CONCURRENT}, queue_timeout_ms = 200 }}

[[routes]]
tenant = "metered"
capability = "send"
provider = "work"
"#
            )
        },
        &[("work:1.0.0", built::WORKLOADS)],
        3,
    );
    let token = cluster.publisher.token("metered", None);
    let addrs = cluster.addrs();
    let stop = Arc::new(AtomicBool::new(false));
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut threads = Vec::new();
    for i in 0..6 {
        let (addr, token, stop, statuses) = (
            addrs[i % addrs.len()].clone(),
            token.clone(),
            stop.clone(),
            statuses.clone(),
        );
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = common::http(
                    &addr,
                    "POST",
                    "/v1/invoke/send",
                    &[("authorization", &format!("Bearer {token}"))],
                    json!({"to": "collatz", "text": "5000"})
                        .to_string()
                        .as_bytes(),
                );
                statuses
                    .lock()
                    .unwrap()
                    .push((r.status, r.json()["code"].clone()));
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let consumed = metric_sum(
        &cluster.metrics(),
        "greentic_fuel_consumed_total{tenant=\"metered\"",
    );
    let statuses = statuses.lock().unwrap();
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
    let busy = statuses
        .iter()
        .filter(|(_, code)| code == "tenant-busy")
        .count();
    let other: Vec<_> = statuses
        .iter()
        .filter(|(s, code)| *s != 200 && code != "tenant-busy")
        .take(5)
        .collect();
    assert!(other.is_empty(), "calls failed otherwise: {other:?}");
    assert!(ok > 0, "no call ran ({busy} refused)");
    let bound = B as f64 * (elapsed + 1.0) + (MAX_CONCURRENT * F) as f64;
    eprintln!(
        "fuel: consumed {consumed:.0} in {elapsed:.2} s ({ok} calls, {busy} refused); budget {} a second, bound {bound:.0}",
        B
    );
    assert!(
        consumed <= bound,
        "consumed {consumed} fuel in {elapsed:.1} s; the bound is {bound}"
    );
    // The budget bound the tenant, fleet-wide: three hosts alone would each have allowed B.
    assert!(busy > 0, "the fleet's budget never stopped a call");
}

/// Provider `up` (`{reg}/providers/up:TAG`, configured with `label`) for acme and globex, and
/// acme's GitHub webhook (`github`), which refuses every unsigned delivery.
fn canary_bundle(reg: &str, tag: &str, label: &str) -> String {
    format!(
        r#"
[providers.up]
source = "{reg}/providers/up:{tag}"
trusted_keys = ["ci"]

[providers.github]
source = "{reg}/providers/github:1.0.0"
trusted_keys = ["ci"]
grants = {{ secrets = ["GITHUB_WEBHOOK_SECRET"], state = true }}

[tenants.acme]
secrets = ["GITHUB_WEBHOOK_SECRET"]
config.up = {{ label = "{label}" }}

[tenants.globex]
config.up = {{ label = "{label}" }}

[[routes]]
tenant = "*"
capability = "send"
provider = "up"

[[routes]]
tenant = "acme"
capability = "receive"
provider = "github"
"#
    )
}

/// `n` hosts serving [`canary_bundle`] `1.0.0` ("one"), with `up:2.0.0` (a provider that fails
/// every call) pushed for a canary, and acme's GitHub secret bound.
fn canary_cluster(n: usize) -> Cluster {
    Cluster::start_with(
        &|reg| canary_bundle(reg, "1.0.0", "one"),
        &[
            ("up:1.0.0", built::ECHO),
            ("up:2.0.0", built::PANICKER),
            ("github:1.0.0", built::WEBHOOK_GITHUB),
        ],
        n,
        &[(
            "acme/GITHUB_WEBHOOK_SECRET",
            "acme-github-secret-0123456789",
        )],
    )
}

/// Sends unsigned deliveries to acme's GitHub webhook from 4 threads, round robin over
/// `addrs`, until stopped; counts the answers.
fn unsigned_flood(
    addrs: Vec<String>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..4)
        .map(|t| {
            let (addrs, stop, sent) = (addrs.clone(), stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut n = t;
                while !stop.load(Ordering::Relaxed) {
                    n += 4;
                    let r = common::try_http(
                        &addrs[n % addrs.len()],
                        "POST",
                        "/webhooks/acme/github/",
                        &[
                            ("x-github-event", "push"),
                            ("x-github-delivery", &format!("d{n}")),
                        ],
                        b"{\"unsigned\": true}",
                    );
                    if r.is_ok_and(|r| r.status == 401) {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect()
}

#[test]
fn a_failing_canary_rolls_back_by_itself_and_a_healthy_one_is_promoted() {
    let cluster = canary_cluster(3);
    let reg = cluster.registry.clone();
    let tokens = ["acme", "globex", "acme", "globex"]
        .iter()
        .map(|t| (t.to_string(), cluster.publisher.token(t, None)))
        .collect();
    let driver = Driver::start(cluster.addrs(), tokens);
    // The baseline: the canary tenant on the stable revision.
    driver.wait(100);

    // Anyone can send acme's webhook deliveries; unsigned ones are refused (401) by the
    // provider. A flood of them runs through the canary's window: they must not dilute the
    // failing canary's error rate (they say nothing about its revision).
    let (stop_flood, refused) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let flood = unsigned_flood(cluster.addrs(), stop_flood.clone(), refused.clone());
    while refused.load(Ordering::Relaxed) < 300 {
        std::thread::sleep(Duration::from_millis(20));
    }

    // A version that fails every call, for acme only.
    let published = Instant::now();
    let bad = cluster.publish(
        &canary_bundle(&reg, "2.0.0", "one"),
        &["--canary", "acme", "--window", "10m", "--min-calls", "10"],
    );
    let view = cluster.wait_for("the failing canary rolled back", |v| {
        v["canary"].is_null()
            && v["verdicts"]
                .as_array()
                .is_some_and(|all| all.iter().any(|x| x["digest"] == bad.as_str()))
            && v["hosts"]
                .as_array()
                .is_some_and(|h| h.len() == 3 && h.iter().all(|h| h["canary"].is_null()))
    });
    let rolled_back = Instant::now();
    let verdict = view["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["digest"] == bad.as_str())
        .unwrap();
    assert_eq!(verdict["verdict"], "rolled-back", "{view:#}");
    let reason = verdict["reason"].as_str().unwrap();
    assert!(reason.contains("error rate"), "{verdict}");
    // Judged on acme's invokes alone (every one of which failed), not on the refused
    // deliveries sent meanwhile.
    let rate: f64 = reason
        .strip_prefix("error rate ")
        .and_then(|r| r.split('%').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("{reason}"));
    assert!(rate >= 50.0, "the error rate was diluted: {reason}");
    stop_flood.store(true, Ordering::Relaxed);
    for t in flood {
        t.join().unwrap();
    }
    eprintln!(
        "{} unsigned deliveries refused during the canary; verdict: {reason}",
        refused.load(Ordering::Relaxed)
    );
    assert!(refused.load(Ordering::Relaxed) >= 300);
    // The rolled-back canary's record written back under `canary` is never served again.
    let bad_record = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use futures_util::StreamExt;
        let client = async_nats::connect(&cluster.nats.url).await.unwrap();
        let kv = async_nats::jetstream::new(client)
            .get_key_value("greentic_revisions")
            .await
            .unwrap();
        let mut history = kv.history("canary").await.unwrap();
        let mut last_put = None;
        while let Some(Ok(e)) = history.next().await {
            if e.operation == async_nats::jetstream::kv::Operation::Put {
                last_put = Some(e.value);
            }
        }
        let record = last_put.expect("the canary's record is in the bucket's history");
        kv.put("canary", record.clone()).await.unwrap();
        record
    });
    assert!(!bad_record.is_empty());
    let view = cluster.wait_for("the replayed canary withdrawn and refused", |v| {
        v["canary"].is_null()
            && v["hosts"].as_array().is_some_and(|h| {
                h.len() == 3
                    && h.iter().all(|h| {
                        h["canary"].is_null()
                            && h["refused"]["problems"]
                                .to_string()
                                .contains("rolled back already")
                    })
            })
    });
    assert!(
        view["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["reason"]
                .as_str()
                .unwrap_or("")
                .contains("rolled back already")),
        "{view:#}"
    );
    let replay_ended = Instant::now();
    driver.wait(100);

    // A healthy version, for acme first: promoted when its window passes. Its latency is not
    // judged here: over a few dozen calls p99 is the slowest call, and on a 2-core machine
    // running the other tests beside this one single calls took 2x and 18x the baseline's (the
    // latency rule itself is tested in `fleet::canary`); what this checks is promotion.
    let good = cluster.publish(
        &canary_bundle(&reg, "1.0.0", "three"),
        &[
            "--canary",
            "acme",
            "--window",
            "3s",
            "--min-calls",
            "5",
            "--max-p99-ratio",
            "1000",
        ],
    );
    cluster.wait_converged(&good);
    let promoted = Instant::now();
    let (_, view) = cluster.status(0);
    let verdict = view["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["digest"] == good.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no verdict on {good}: {view:#}"));
    assert_eq!(verdict["verdict"], "promoted", "{view:#}");
    driver.wait(60);
    let answers = driver.finish();

    // Only the canary tenant's calls failed, and only while the bad canary served it.
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(!failed.is_empty(), "the bad canary never served acme");
    for a in &failed {
        assert_eq!(
            a.tenant, "acme",
            "a tenant outside the canary failed: {}",
            a.body
        );
        assert!(
            a.at >= published && a.at <= rolled_back,
            "acme failed outside the canary: {}",
            a.body
        );
        assert!(a.at <= replay_ended);
    }
    // After the promotion every tenant is answered by the new revision.
    let late: Vec<&Answer> = answers.iter().filter(|a| a.at > promoted).collect();
    assert!(!late.is_empty());
    for a in late {
        assert_eq!(a.body["revision"], good.as_str(), "{}", a.body);
        assert_eq!(a.body["id"], format!("{}/-/-:a:b@three", a.tenant));
    }
}

#[test]
fn durable_deliveries_are_queued_once_and_outlive_a_host_that_dies_mid_delivery() {
    let cluster = Cluster::start(
        &|reg| {
            format!(
                r#"
[providers.hello]
source = "{reg}/providers/hello:1.0.0"
trusted_keys = ["ci"]

[providers.slowhello]
source = "{reg}/providers/hello:1.0.0"
trusted_keys = ["ci"]

[tenants.acme]

[[routes]]
tenant = "acme"
capability = "receive"
provider = "hello"
durable = true
delivery_id_header = "x-delivery"

[[routes]]
tenant = "acme"
team = "slow"
capability = "receive"
provider = "slowhello"
durable = true
"#
            )
        },
        &[("hello:1.0.0", built::HTTP_HELLO)],
        2,
    );
    let ok_calls = |provider: &str, hosts: &[&Host]| {
        let all: Vec<String> = hosts
            .iter()
            .map(|h| h.admin("GET", "/metrics").text())
            .collect();
        metric_sum(
            &all,
            &format!(
                "greentic_calls_total{{tenant=\"acme\",provider=\"{provider}\",capability=\"webhook\",code=\"ok\"}}"
            ),
        )
    };
    let both: Vec<&Host> = cluster.hosts.iter().flatten().collect();

    // 30 deliveries, 5 of them sent twice: every one is accepted, the copies are queued once.
    for i in 0..35 {
        let id = format!("d-{}", i % 30);
        let r = both[i % 2].request(
            "POST",
            "/webhooks/acme/hello/event",
            &[("x-delivery", &id)],
            format!("{{\"n\": {i}}}").as_bytes(),
        );
        assert_eq!(r.status, 202, "{}", r.text());
        assert_eq!(r.json()["delivery"], id.as_str());
        assert_eq!(r.json()["duplicate"], i >= 30, "{}", r.text());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while ok_calls("hello", &both) < 30.0 {
        assert!(
            Instant::now() < deadline,
            "the deliveries were not all handled:\n{}\n{}",
            both[0].output(),
            both[1].output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ok_calls("hello", &both), 30.0, "a copy was handled too");

    // Deliveries that take 1.5 s each; the host handling them dies half-way.
    for i in 0..6 {
        let r = both[0].request(
            "POST",
            "/webhooks/acme/slowhello/slow/1500",
            &[],
            format!("{{\"slow\": {i}}}").as_bytes(),
        );
        assert_eq!(r.status, 202, "{}", r.text());
    }
    // Whichever host pulled them holds them now (in flight): kill it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let victim = loop {
        let busy = both.iter().position(|h| {
            h.admin("GET", "/metrics").text().lines().any(|l| {
                l.starts_with("greentic_calls_in_flight{tenant=\"acme\"}") && !l.ends_with(" 0")
            })
        });
        if let Some(i) = busy {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no host took the slow deliveries"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = std::process::Command::new("kill")
        .args(["-9", &both[victim].pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let survivor = both[1 - victim];
    // Never acknowledged by the dead host, each is redelivered and handled by the survivor.
    let deadline = Instant::now() + Duration::from_secs(60);
    while ok_calls("slowhello", &[survivor]) < 6.0 {
        assert!(
            Instant::now() < deadline,
            "the survivor handled {} of 6:\n{}",
            ok_calls("slowhello", &[survivor]),
            survivor.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = survivor.admin("GET", "/metrics").text();
    assert!(
        metric_sum(
            &[metrics],
            "greentic_deliveries_total{tenant=\"acme\",provider=\"slowhello\",outcome=\"redelivered\"}"
        ) >= 1.0,
        "nothing was redelivered"
    );
}
