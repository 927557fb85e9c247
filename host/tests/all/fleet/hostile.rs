//! Hostile input to a fleet: floods of durable deliveries, old records written back, restarts,
//! reused idempotency keys, and a publisher's key used to run unsigned code.

use super::*;
use crate::common::built;
use crate::common::run_host;

/// The sum of `greentic_deliveries_total` for `tenant`, `provider` and `outcome` over `hosts`.
fn deliveries(hosts: &[&Host], tenant: &str, provider: &str, outcome: &str) -> f64 {
    let all: Vec<String> = hosts
        .iter()
        .map(|h| h.admin("GET", "/metrics").text())
        .collect();
    metric_sum(
        &all,
        &format!(
            "greentic_deliveries_total{{tenant=\"{tenant}\",provider=\"{provider}\",outcome=\"{outcome}\"}}"
        ),
    )
}

/// The state of a stream (messages, bytes) on the fleet's server.
fn stream_state(nats: &str, name: &str) -> (u64, u64) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = async_nats::connect(nats).await.unwrap();
        let mut stream = async_nats::jetstream::new(client)
            .get_stream(name)
            .await
            .unwrap();
        let info = stream.info().await.unwrap();
        (info.state.messages, info.state.bytes)
    })
}

/// The p99 (nearest rank) of `samples`.
fn p99(samples: &mut [Duration]) -> Duration {
    samples.sort();
    let rank = ((samples.len() as f64) * 0.99).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

const GITHUB_SECRET: &str = "globex-hook-secret-0123456789";

/// One signed delivery of globex's, then how long until a host handled it.
fn globex_delivery(hosts: &[&Host], n: usize) -> Duration {
    let before = deliveries(hosts, "globex", "hello", "handled");
    let body = format!("{{\"globex\": {n}}}");
    let signature = common::github_signature(GITHUB_SECRET.as_bytes(), body.as_bytes());
    let sent = Instant::now();
    let r = hosts[n % hosts.len()].request(
        "POST",
        "/webhooks/globex/hello/slow/100",
        &[
            ("x-hub-signature-256", &signature),
            ("x-delivery", &format!("g-{n}-{}", fastrand::u64(..))),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(60);
    while deliveries(hosts, "globex", "hello", "handled") <= before {
        assert!(
            Instant::now() < deadline,
            "globex's delivery {n} was not handled within 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    sent.elapsed()
}

#[test]
fn a_flood_of_durable_deliveries_is_bounded_and_delays_no_other_tenant() {
    let cluster = Cluster::start_with(
        &|reg| {
            format!(
                r#"
[providers.refuser]
source = "{reg}/providers/refuser:1.0.0"
trusted_keys = ["ci"]

[providers.hello]
source = "{reg}/providers/hello:1.0.0"
trusted_keys = ["ci"]

[tenants.acme]
limits = {{ queued_deliveries = 400, queued_delivery_bytes = 1048576, queued_deliveries_per_route = 400, deliveries_per_second = 150 }}

[tenants.globex]
secrets = ["GITHUB_WEBHOOK_SECRET"]

[[routes]]
tenant = "acme"
capability = "receive"
provider = "refuser"
durable = true

[[routes]]
tenant = "globex"
capability = "receive"
provider = "hello"
durable = true
delivery_id_header = "x-delivery"
verify = {{ algorithm = "hmac-sha256", header = "X-Hub-Signature-256", prefix = "sha256=", secret = "GITHUB_WEBHOOK_SECRET" }}
"#
            )
        },
        &[
            ("refuser:1.0.0", built::SLOW_REFUSER),
            ("hello:1.0.0", built::HTTP_HELLO),
        ],
        2,
        &[("globex/GITHUB_WEBHOOK_SECRET", GITHUB_SECRET)],
    );
    let hosts: Vec<&Host> = cluster.hosts.iter().flatten().collect();

    // The route's own check: unsigned and forged deliveries are refused before they are
    // queued, and never reach the provider.
    for (headers, why) in [
        (vec![], "no `X-Hub-Signature-256` header"),
        (
            vec![("x-hub-signature-256", "sha256=00ff")],
            "does not match",
        ),
    ] {
        let r = hosts[0].request("POST", "/webhooks/globex/hello/x", &headers, b"{}");
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.json()["code"], "signature-invalid", "{}", r.text());
        assert!(r.text().contains(why), "{}", r.text());
    }

    // globex alone: its delivery latency, end to end.
    let mut solo: Vec<Duration> = (0..30).map(|n| globex_delivery(&hosts, n)).collect();
    let solo_p99 = p99(&mut solo);

    // acme's flood: unsigned 4 KiB deliveries, each distinct, from 8 senders over both
    // hosts, for 8 seconds; acme's provider takes 250 ms to refuse each.
    let stop = Arc::new(AtomicBool::new(false));
    let statuses = Arc::new(Mutex::new(BTreeMap::<u16, usize>::new()));
    let mut senders = Vec::new();
    for s in 0..8 {
        let (stop, statuses) = (stop.clone(), statuses.clone());
        let addrs: Vec<String> = hosts.iter().map(|h| h.addr.clone()).collect();
        senders.push(std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut body = format!("{{\"sender\": {s}, \"n\": {n}, \"pad\": \"").into_bytes();
                body.resize(4096 - 2, b'x');
                body.extend_from_slice(b"\"}");
                let r = common::try_http(
                    &addrs[n % 2],
                    "POST",
                    "/webhooks/acme/refuser/x",
                    &[],
                    &body,
                );
                let status = r.map_or(0, |r| {
                    if r.status == 429 {
                        assert!(
                            r.text().contains("queue-full") && r.text().contains("retry_after_ms"),
                            "{}",
                            r.text()
                        );
                    }
                    r.status
                });
                *statuses.lock().unwrap().entry(status).or_default() += 1;
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(1));
    // globex meanwhile.
    let mut flooded: Vec<Duration> = (30..60).map(|n| globex_delivery(&hosts, n)).collect();
    let (mut peak_messages, mut peak_bytes) = (0, 0);
    let flood_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < flood_until {
        let (m, b) = stream_state(
            &cluster.nats.url,
            &format!("GREENTIC_DQ_{}", hex::encode("acme")),
        );
        peak_messages = peak_messages.max(m);
        peak_bytes = peak_bytes.max(b);
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    let statuses = statuses.lock().unwrap().clone();
    let accepted = statuses.get(&202).copied().unwrap_or(0);
    let refused = statuses.get(&429).copied().unwrap_or(0);
    let flooded_p99 = p99(&mut flooded);
    eprintln!(
        "flood: {statuses:?} ({accepted} accepted, {refused} refused 429); acme's queue peaked at {peak_messages} messages / {peak_bytes} bytes; globex p99 {solo_p99:?} alone, {flooded_p99:?} during the flood ({:.2}x)",
        flooded_p99.as_secs_f64() / solo_p99.as_secs_f64()
    );
    assert!(refused > 0, "the flood was never refused: {statuses:?}");
    assert!(accepted > 0, "nothing of acme's was accepted: {statuses:?}");
    assert_eq!(
        statuses.keys().filter(|s| ![202, 429].contains(*s)).count(),
        0,
        "answers other than 202 and 429: {statuses:?}"
    );
    // The queue stays inside acme's bounds (the server enforces them).
    assert!(peak_messages <= 400, "{peak_messages} messages queued");
    assert!(peak_bytes <= 1_048_576, "{peak_bytes} bytes queued");
    // globex was not held up behind acme's backlog: its p99 stays within 2x of its solo run.
    assert!(
        flooded_p99 <= solo_p99 * 2,
        "globex's delivery p99 went from {solo_p99:?} alone to {flooded_p99:?} during acme's flood"
    );

    // Every delivery acknowledged 202 reaches acme's provider (which refuses each, 401, as
    // unsigned), none is dropped or given up.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let handled = deliveries(&hosts, "acme", "refuser", "handled");
        if handled >= accepted as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{handled} of {accepted} accepted deliveries handled"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for outcome in ["dropped", "given-up"] {
        assert_eq!(
            deliveries(&hosts, "acme", "refuser", outcome),
            0.0,
            "{outcome}"
        );
    }
    assert_eq!(
        stream_state(
            &cluster.nats.url,
            &format!("GREENTIC_DQ_{}", hex::encode("acme"))
        )
        .0,
        0,
        "acme's queue drained"
    );
}

/// Writes `value` at `key` of the fleet's revisions bucket (what anyone with write access to
/// the bucket can do), after purging the key's history if `purge`.
fn write_back(nats: &str, key: &str, value: bytes::Bytes, purge: bool) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = async_nats::connect(nats).await.unwrap();
        let kv = async_nats::jetstream::new(client)
            .get_key_value("greentic_revisions")
            .await
            .unwrap();
        if purge {
            kv.purge(key).await.unwrap();
        }
        kv.put(key, value).await.unwrap();
    })
}

/// The oldest record of `key` still in the revisions bucket's history.
fn oldest(nats: &str, key: &str) -> bytes::Bytes {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use futures_util::StreamExt;
        let client = async_nats::connect(nats).await.unwrap();
        let kv = async_nats::jetstream::new(client)
            .get_key_value("greentic_revisions")
            .await
            .unwrap();
        kv.history(key)
            .await
            .unwrap()
            .next()
            .await
            .unwrap()
            .unwrap()
            .value
    })
}

#[test]
fn a_restarted_host_refuses_an_old_record_and_serves_the_newest_or_stays_unready() {
    let mut cluster = Cluster::start(
        &|reg| echo_bundle(reg, "one"),
        &[("echo:1.0.0", built::ECHO)],
        2,
    );
    let reg = cluster.registry.clone();
    let one_record = oldest(&cluster.nats.url, "stable");
    let two = cluster.publish(&echo_bundle(&reg, "two"), &[]);
    cluster.wait_converged(&two);
    let token = cluster.publisher.token("acme", None);

    // The first revision's signed record, written back: the running hosts refuse it.
    write_back(&cluster.nats.url, "stable", one_record.clone(), false);
    cluster.wait_for("both hosts refusing the old record", |v| {
        v["hosts"].as_array().is_some_and(|h| {
            h.len() == 2
                && h.iter().all(|h| {
                    h["revision"] == two.as_str()
                        && h["refused"]["problems"]
                            .to_string()
                            .contains("published before")
                })
        })
    });

    // A host restarted in its own directory (it kept its high-water mark), and a new host in
    // a fresh one (it has only the fleet's): each refuses the old record and serves the
    // newest revision it can verify, from the bucket's history, saying so.
    let old = cluster.hosts[0].take().unwrap();
    old.terminate();
    let kept = cluster._dirs.remove(0);
    cluster.start_host_in("h0", kept);
    cluster.add_host("h-new");
    let view = cluster.wait_for("the restarted and the new host serving two", |v| {
        v["hosts"]
            .as_array()
            .is_some_and(|h| h.len() == 3 && h.iter().all(|h| h["revision"] == two.as_str()))
    });
    for h in view["hosts"].as_array().unwrap() {
        if h["host"] == "h0" || h["host"] == "h-new" {
            assert_eq!(h["serving_from"], "history", "{view:#}");
            assert!(h["waiting"].is_null(), "{view:#}");
            assert_eq!(h["high_water"]["digest"], two.as_str(), "{view:#}");
        }
    }
    for host in cluster.hosts.iter().flatten() {
        let ready = host.admin("GET", "/readyz");
        assert_eq!(ready.status, 200, "{}", ready.text());
        let r = host.send(&token, json!({"to": "a", "text": "b"}));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["revision"], two.as_str());
    }

    // With nothing newer to be had (the key's history purged, the old record alone under
    // `stable`), a new host stays unready and says why; a call is told to retry, not refused.
    write_back(&cluster.nats.url, "stable", one_record, true);
    cluster.add_host("h-late");
    let late = cluster.hosts.last().unwrap().as_ref().unwrap();
    let ready = late.admin("GET", "/readyz");
    assert_eq!(ready.status, 503, "{}", ready.text());
    let why = ready.json()["fleet"]["waiting"].to_string();
    assert!(why.contains("published before"), "{}", ready.text());
    let r = late.send(&token, json!({"to": "a", "text": "b"}));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["code"], "not-served-yet", "{}", r.text());
    assert_eq!(r.json()["retryable"], true, "{}", r.text());
    assert!(r.text().contains("published before"), "{}", r.text());
    // The hosts that served two keep serving it.
    let r = cluster.hosts[1]
        .as_ref()
        .unwrap()
        .send(&token, json!({"to": "a", "text": "b"}));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn one_idempotency_key_is_one_request_whichever_way_it_comes() {
    let upstream = Upstream::start(Duration::from_millis(5));
    let up = upstream.addr.clone();
    let cluster = Cluster::start(
        &|reg| hook_bundle(reg, &up, &[("acme", "max_concurrent = 8")]),
        &[("hook:1.0.0", built::MESSAGING_WEBHOOK)],
        2,
    );
    let token = cluster.publisher.token("acme", None);
    let (a, b) = (
        cluster.hosts[0].as_ref().unwrap(),
        cluster.hosts[1].as_ref().unwrap(),
    );
    let send = |host: &Host, key_header: Option<&str>, body: serde_json::Value| {
        let auth = format!("Bearer {token}");
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(k) = key_header {
            headers.push(("idempotency-key", k));
        }
        host.request(
            "POST",
            "/v1/invoke/send",
            &headers,
            body.to_string().as_bytes(),
        )
    };

    // The key in the body, sent to two hosts: one call.
    let first = send(
        a,
        None,
        json!({"to": "#ops", "text": "hi", "idempotency_key": "k-body"}),
    );
    assert_eq!(first.status, 200, "{}", first.text());
    let again = send(
        b,
        None,
        json!({"to": "#ops", "text": "hi", "idempotency_key": "k-body"}),
    );
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["replayed"], true, "{}", again.text());
    assert_eq!(again.json()["trace_id"], first.json()["trace_id"]);
    // The same key in the header, same message: the same request, answered from the record.
    let header = send(a, Some("k-body"), json!({"to": "#ops", "text": "hi"}));
    assert_eq!(header.status, 200, "{}", header.text());
    assert_eq!(header.json()["replayed"], true, "{}", header.text());
    assert_eq!(upstream.keys.lock().unwrap().get("k-body"), Some(&1));

    // Reused with a different request: refused, on either host.
    for host in [a, b] {
        let r = send(
            host,
            None,
            json!({"to": "#ops", "text": "other", "idempotency_key": "k-body"}),
        );
        assert_eq!(r.status, 422, "{}", r.text());
        assert_eq!(r.json()["code"], "idempotency-key-reused", "{}", r.text());
    }
    // Two different keys at once: which was meant cannot be known.
    let r = send(
        a,
        Some("k-header"),
        json!({"to": "#ops", "text": "hi", "idempotency_key": "k-other"}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("differ"), "{}", r.text());
    assert_eq!(
        upstream.keys.lock().unwrap().len(),
        1,
        "one key reached the upstream"
    );
}

#[test]
fn a_publisher_key_alone_cannot_make_hosts_run_unsigned_code() {
    let cluster = Cluster::start(
        &|reg| echo_bundle(reg, "one"),
        &[("echo:1.0.0", built::ECHO)],
        2,
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
    let dir = cluster.publisher.path();
    // What the attacker brings: a component file the hosts can read, an unsigned OCI layout,
    // and a component signed with the publisher's key.
    let wasm = common::component("wasip2", built::ECHO);
    let layout = format!("oci:{}:evil", dir.join("evil-layout").display());
    assert!(
        run_in(dir, &["push", wasm.to_str().unwrap(), &layout])
            .status
            .success()
    );
    let by_publisher = format!("{reg}/providers/evil:1.0.0");
    assert!(
        run_in(dir, &["push", wasm.to_str().unwrap(), &by_publisher])
            .status
            .success()
    );
    assert!(
        run_in(dir, &["sign", "--key", "publisher.key", &by_publisher])
            .status
            .success()
    );
    let evil = |provider: &str| {
        format!(
            "{}\n[providers.evil]\n{provider}\n[tenants.mallory]\n\n[[routes]]\ntenant = \"mallory\"\ncapability = \"send\"\nprovider = \"evil\"\n",
            echo_bundle(&reg, "one")
        )
    };
    for (provider, words) in [
        (
            format!("source = \"{}\"\nallow_unsigned = true", wasm.display()),
            "is a file; a fleet's published revision runs only providers from a registry or OCI layout",
        ),
        (
            format!("source = \"{layout}\"\nallow_unsigned = true"),
            "`allow_unsigned = true` is refused in a fleet's published revision",
        ),
        (
            format!("source = \"{by_publisher}\""),
            "not signed by a trusted key",
        ),
        (
            format!("source = \"{by_publisher}\"\ntrusted_keys = [\"publisher\"]"),
            "key `publisher` is trusted for publisher only, not for providers",
        ),
    ] {
        let body = evil(&provider);
        cluster.publisher.rewrite(&format!("{FLEET}{body}"));
        let publish = |extra: &[&str]| {
            let mut args = vec![
                "publish",
                dir.to_str().unwrap(),
                "--cluster",
                cluster.nats.url.as_str(),
                "--key",
                "publisher.key",
            ];
            args.extend_from_slice(extra);
            run_in(dir, &args)
        };
        // `publish` checks first, as the hosts will, and refuses in the same words...
        let out = publish(&[]);
        assert!(!out.status.success(), "publish accepted: {provider}");
        assert!(text(&out).1.contains(words), "{provider}: {}", text(&out).1);
        if words.contains("trusted for publisher only") {
            // A bundle that names a publisher's key for a provider does not even parse: there is
            // nothing to publish.
            continue;
        }
        // ...and published anyway (--no-check), every host refuses it and keeps serving.
        let out = publish(&["--no-check"]);
        assert!(out.status.success(), "{}", text(&out).1);
        let published = text(&out).0.split_whitespace().nth(1).unwrap().to_string();
        let view = cluster.wait_for("both hosts refusing the revision", |v| {
            v["hosts"].as_array().is_some_and(|h| {
                h.len() == 2
                    && h.iter()
                        .all(|h| h["refused"]["digest"] == published.as_str())
            })
        });
        for h in view["hosts"].as_array().unwrap() {
            assert_eq!(h["revision"], one.as_str(), "{view:#}");
            assert!(
                h["refused"]["problems"].to_string().contains(words),
                "{provider}: {view:#}"
            );
        }
        let token = cluster.publisher.token("mallory", None);
        let r = cluster.hosts[0]
            .as_ref()
            .unwrap()
            .send(&token, json!({"to": "a", "text": "b"}));
        assert_ne!(r.status, 200, "mallory was served: {}", r.text());
    }
}

#[test]
fn a_bootstrap_bundle_naming_no_providers_runs_with_the_cluster_on_the_command_line() {
    let nats = Nats::start();
    let b = TestBundle::new(
        "[trust.keys]\npublisher = { file = \"publisher.pub\", roles = [\"publisher\"] }\n\n[cluster]\npublishers = [\"publisher\"]\nheartbeat_ms = 200\n",
        &[],
    );
    assert!(
        run_in(b.path(), &["keygen", "--output-key-prefix", "publisher"])
            .status
            .success()
    );
    // No [cluster].url in the bundle: the URL comes from the command line, as the README says.
    let host = Host::start_with_args(b.path(), &["--cluster", &nats.url, "--host-id", "boot"]);
    let ready = host.admin("GET", "/readyz");
    assert_eq!(ready.status, 503, "waiting for the fleet: {}", ready.text());
    assert_eq!(ready.json()["waiting_for_fleet"], true, "{}", ready.text());
    // Without --cluster the same bundle is not something to serve, and says why.
    let out = run_host(&["check", b.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("names no providers") && text(&out).1.contains("--cluster URL"),
        "{}",
        text(&out).1
    );
}

#[test]
fn a_flood_of_refused_deliveries_does_not_dilute_a_failing_canarys_error_rate() {
    let cluster = canary_cluster(2);
    let reg = cluster.registry.clone();
    // Anyone can send acme's webhook deliveries: a steady flood of unsigned ones, each refused
    // 401 by the provider, tens of them for every call of acme's.
    let (stop, refused) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let flood = unsigned_flood(cluster.addrs(), stop.clone(), refused.clone());
    while refused.load(Ordering::Relaxed) < 300 {
        std::thread::sleep(Duration::from_millis(20));
    }
    // acme's own calls: ten a second.
    let token = cluster.publisher.token("acme", None);
    let (addrs, calls, quiet) = (cluster.addrs(), Arc::new(AtomicUsize::new(0)), stop.clone());
    let counting = calls.clone();
    let invoker = std::thread::spawn(move || {
        let mut n = 0;
        while !quiet.load(Ordering::Relaxed) {
            n += 1;
            let _ = common::try_http(
                &addrs[n % addrs.len()],
                "POST",
                "/v1/invoke/send",
                &[("authorization", &format!("Bearer {token}"))],
                json!({"to": "a", "text": "b"}).to_string().as_bytes(),
            );
            counting.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
        }
    });

    // A version that fails every call of acme's, judged with a 10-point allowance over a
    // 20-second window: refused deliveries counted as calls would hide its failures under it.
    let bad = cluster.publish(
        &canary_bundle(&reg, "2.0.0", "one"),
        &[
            "--canary",
            "acme",
            "--window",
            "20s",
            "--min-calls",
            "10",
            "--max-error-rate",
            "10%",
        ],
    );
    let view = cluster.wait_for("a verdict on the failing canary", |v| {
        v["verdicts"]
            .as_array()
            .is_some_and(|all| all.iter().any(|x| x["digest"] == bad.as_str()))
    });
    stop.store(true, Ordering::Relaxed);
    for t in flood {
        t.join().unwrap();
    }
    invoker.join().unwrap();
    let verdict = view["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["digest"] == bad.as_str())
        .unwrap()
        .clone();
    eprintln!(
        "{} refused deliveries, {} calls of acme's; verdict: {verdict}",
        refused.load(Ordering::Relaxed),
        calls.load(Ordering::Relaxed)
    );
    assert_eq!(verdict["verdict"], "rolled-back", "{view:#}");
    let reason = verdict["reason"].as_str().unwrap();
    let rate: f64 = reason
        .strip_prefix("error rate ")
        .and_then(|r| r.split('%').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("{reason}"));
    assert!(rate >= 50.0, "judged on a diluted error rate: {reason}");
}
