//! End to end: the real `greentic-host run` binary, real components, two tenants.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::time::Duration;

use common::{Host, JWT_SECRET, TestBundle};
use serde_json::json;

const BUNDLE: &str = r#"

[providers.echo]
source = "{components}/echo.wasm"
allow_unsigned = true

[providers.spin]
source = "{components}/infinite_loop.wasm"
allow_unsigned = true

[providers.grow]
source = "{components}/memory_grower.wasm"
allow_unsigned = true

[providers.deep]
source = "{components}/recursion.wasm"
allow_unsigned = true

[providers.snoop]
source = "{components}/undeclared_secret.wasm"
allow_unsigned = true
grants = { secrets = ["DECLARED_TOKEN"] }

[providers.panic]
source = "{components}/panicker.wasm"
allow_unsigned = true

[tenants.acme]
secrets = ["DECLARED_TOKEN"]
limits = { fuel_per_call = 200000000, deadline_ms = 10000, memory_bytes = 33554432, fuel_per_second = 4000000000 }
config.echo = { label = "acme-label" }

[tenants.globex]
secrets = ["DECLARED_TOKEN"]
limits = { fuel_per_call = 1000000000000, deadline_ms = 1500, fuel_per_second = 10000000000000, max_concurrent = 1, queue_timeout_ms = 100 }
config.echo = { label = "globex-label" }

[[routes]]
tenant = "*"
capability = "send"
provider = "echo"

[[routes]]
tenant = "*"
team = "loop"
capability = "send"
provider = "spin"

[[routes]]
tenant = "acme"
team = "grow"
capability = "send"
provider = "grow"

[[routes]]
tenant = "acme"
team = "deep"
capability = "send"
provider = "deep"

[[routes]]
tenant = "*"
team = "snoop"
capability = "send"
provider = "snoop"

[[routes]]
tenant = "acme"
team = "panic"
capability = "send"
provider = "panic"
"#;

const SECRETS: &[(&str, &str)] = &[
    ("acme/DECLARED_TOKEN", "acme-secret-1"),
    ("globex/DECLARED_TOKEN", "globex-secret-22"),
    ("acme/OTHER_TENANT_TOKEN", "should-never-be-read"),
];

fn msg(to: &str, text: &str) -> serde_json::Value {
    json!({"to": to, "text": text})
}

#[test]
pub(crate) fn two_tenants_are_isolated_and_limits_contain_hostile_guests() {
    let bundle = TestBundle::new(BUNDLE, SECRETS);
    let host = Host::start(bundle.path());
    let acme = bundle.token("acme", None);
    let globex = bundle.token("globex", None);

    // Each tenant's call carries its own context and sees only its own config.
    let r = host.send(&acme, msg("#ops", "hi"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "acme/-/-:#ops:hi@acme-label");
    let r = host.send(&globex, msg("#ops", "hi"));
    assert_eq!(r.json()["id"], "globex/-/-:#ops:hi@globex-label");

    // Each tenant reads only its own secret (the guest reports the length, never the value).
    let r = host.send(
        &bundle.token("acme", Some("snoop")),
        msg("x", "DECLARED_TOKEN"),
    );
    assert_eq!(
        r.json()["id"],
        "read 13 bytes of DECLARED_TOKEN",
        "{}",
        r.text()
    );
    let r = host.send(
        &bundle.token("globex", Some("snoop")),
        msg("x", "DECLARED_TOKEN"),
    );
    assert_eq!(
        r.json()["id"],
        "read 16 bytes of DECLARED_TOKEN",
        "{}",
        r.text()
    );
    // A name the manifest does not declare is denied, even though a value exists on disk.
    let r = host.send(
        &bundle.token("acme", Some("snoop")),
        msg("x", "OTHER_TENANT_TOKEN"),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["code"], "unauthorized");
    assert!(r.text().contains("not granted"), "{}", r.text());

    // Infinite loops for acme — more of them than this machine has cores — end with
    // fuel-exhausted while globex keeps being served: guests yield every few milliseconds of
    // fuel, so spinning guests never hold all executor threads.
    let spinners: Vec<_> = (0..3)
        .map(|_| host.spawn_send(bundle.token("acme", Some("loop")), msg("x", "spin")))
        .collect();
    let mut served = 0;
    while spinners.iter().any(|s| !s.is_finished()) || served < 5 {
        let r = host.send(&globex, msg("#b", "still here"));
        assert_eq!(r.status, 200, "globex was affected: {}", r.text());
        served += 1;
    }
    for spinner in spinners {
        let (r, took) = spinner.join().unwrap();
        assert_eq!(r.status, 500, "{}", r.text());
        assert_eq!(r.json()["code"], "fuel-exhausted", "{}", r.text());
        assert!(
            took < Duration::from_secs(10),
            "fuel should stop the loop well before the deadline"
        );
    }

    // Memory growth stops at the cap; unbounded recursion and panics trap cleanly.
    let r = host.send(&bundle.token("acme", Some("grow")), msg("x", "grow"));
    assert_eq!(r.json()["code"], "memory-limit", "{}", r.text());
    let r = host.send(&bundle.token("acme", Some("deep")), msg("x", "deep"));
    assert_eq!(r.json()["code"], "guest-trap", "{}", r.text());
    // Rust keeps its stack in linear memory: overflowing it is an out-of-bounds access
    // (or, for the wasm call stack, a stack overflow). Either way a clean trap.
    let trap = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        trap.contains("out of bounds") || trap.contains("stack overflow"),
        "{trap}"
    );
    let r = host.send(&bundle.token("acme", Some("panic")), msg("x", "boom"));
    assert_eq!(r.json()["code"], "guest-trap", "{}", r.text());

    // After all that, acme's next call runs in a fresh instance and succeeds.
    let r = host.send(&acme, msg("#ops", "again"));
    assert_eq!(r.status, 200, "{}", r.text());

    // globex: a loop with plenty of fuel hits the 1.5 s deadline instead; a second call
    // while it runs exceeds max_concurrent = 1 and gets 429 after the 100 ms queue timeout.
    let slow = host.spawn_send(bundle.token("globex", Some("loop")), msg("x", "spin"));
    host.wait_in_flight("globex", 1);
    let busy = host.send(&globex, msg("#b", "queued"));
    let (r, _) = slow.join().unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["code"], "deadline-exceeded");
    assert_eq!(busy.status, 429, "{}", busy.text());
    assert_eq!(busy.json()["code"], "tenant-busy");
    assert!(busy.headers.contains_key("retry-after"));

    // Metrics count calls by tenant, provider and code.
    let metrics = host.admin("GET", "/metrics").text();
    assert!(metrics.contains(r#"greentic_calls_total{tenant="acme",provider="spin",capability="send",code="fuel-exhausted"} 3"#), "{metrics}");
    assert!(metrics.contains(r#"greentic_calls_total{tenant="globex",provider="spin",capability="send",code="deadline-exceeded"} 1"#), "{metrics}");
    assert!(
        metrics.contains("greentic_call_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("greentic_fuel_consumed_total"),
        "{metrics}"
    );
    assert_eq!(host.request("GET", "/healthz", &[], b"").status, 200);
    let ready = host.admin("GET", "/readyz").json();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["providers"].as_array().unwrap().len(), 6);

    // No secret value ever reached the logs.
    let out = host.settled_output();
    for value in ["acme-secret-1", "globex-secret-22", "should-never-be-read"] {
        assert!(!out.contains(value), "a secret value was logged");
    }
}

#[test]
fn callers_must_present_a_valid_token_and_cannot_claim_another_tenant() {
    let bundle = TestBundle::new(BUNDLE, SECRETS);
    let host = Host::start(bundle.path());
    let body = msg("#ops", "hi").to_string();
    let post = |headers: &[(&str, &str)]| {
        host.request("POST", "/v1/invoke/send", headers, body.as_bytes())
    };

    let r = post(&[]);
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (401, Some("unauthenticated"))
    );

    let forge = |secret: &str, claims: serde_json::Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |exp: u64, aud: &str| json!({"sub": "x", "iss": "greentic-test", "aud": aud, "exp": exp, "iat": now, "tenant": "acme"});
    let cases = [
        (
            "bad signature",
            forge(
                "another-secret-that-is-long-enough-000",
                claims(now + 600, "greentic-host"),
            ),
        ),
        (
            "expired",
            forge(JWT_SECRET, claims(now - 3600, "greentic-host")),
        ),
        (
            "wrong audience",
            forge(JWT_SECRET, claims(now + 600, "someone-else")),
        ),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (what, token) in cases {
        let r = post(&[("authorization", &format!("Bearer {token}"))]);
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(r.json()["code"], "unauthenticated", "{what}");
    }

    // A correctly signed token works; a header claiming another tenant is refused.
    let acme = bundle.token("acme", None);
    let r = post(&[("authorization", &format!("Bearer {acme}"))]);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(&[
        ("authorization", &format!("Bearer {acme}")),
        ("x-greentic-tenant", "globex"),
    ]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["code"], "tenant-mismatch");

    // Malformed JSON and unknown capabilities are 4xx and never reach a guest.
    let r = host.request(
        "POST",
        "/v1/invoke/send",
        &[("authorization", &format!("Bearer {acme}"))],
        b"{nope",
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("bad-request"))
    );
    let r = host.request(
        "POST",
        "/v1/invoke/teleport",
        &[("authorization", &format!("Bearer {acme}"))],
        body.as_bytes(),
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (404, Some("no-route"))
    );
    let r = host.request(
        "POST",
        "/v1/invoke/send",
        &[("authorization", &format!("Bearer {acme}"))],
        br#"{"to": 1}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn sigterm_lets_in_flight_calls_finish_then_stops() {
    let bundle = TestBundle::new(BUNDLE, SECRETS);
    let host = Host::start(bundle.path());
    // globex's loop runs until its 1.5 s deadline; SIGTERM arrives while it is in flight.
    let in_flight = host.spawn_send(bundle.token("globex", Some("loop")), msg("x", "spin"));
    host.wait_in_flight("globex", 1);
    let status = host.terminate();
    assert!(status.success(), "{status:?}");
    let (r, _) = in_flight.join().unwrap();
    assert_eq!(
        r.status,
        504,
        "the in-flight call was cut off: {}",
        r.text()
    );
    assert_eq!(r.json()["code"], "deadline-exceeded");
}

/// The benchmark handler (`http-hello`, what `scripts/bench.sh` serves under `wasmtime serve`
/// too) answers through the host as a webhook provider: same status, same body.
#[test]
pub(crate) fn the_benchmark_http_handler_answers_through_the_host() {
    let b = TestBundle::new(
        r#"
[providers.hello]
source = "{components}/http_hello.wasm"
allow_unsigned = true

[tenants.acme]

[[routes]]
tenant = "acme"
capability = "receive"
provider = "hello"
"#,
        &[],
    );
    let host = Host::start(b.path());
    let r = host.request("GET", "/webhooks/acme/hello/", &[], b"");
    assert_eq!((r.status, r.text().trim()), (200, "hello"), "{}", r.text());
    // Not routed to another tenant: nothing reaches the guest.
    let r = host.request("GET", "/webhooks/globex/hello/", &[], b"");
    assert_eq!(r.status, 404, "{}", r.text());
}

/// A provider that keeps what one call read in a static (the `broken` provider's
/// `caches-first-token` flaw) keeps it only for that call: each call runs in a fresh instance
/// whose memory the pool has reset — the written pages found by the kernel's page scan where it
/// has one — so the next tenant's call on the same slot sends its own token, never the last
/// caller's.
#[test]
pub(crate) fn a_static_kept_by_one_call_is_gone_at_the_next() {
    let upstream = common::Upstream::start(vec![(200, vec![], "{}".into())]);
    let b = TestBundle::new(
        &format!(
            r#"
[providers.cacher]
source = "{{components}}/broken.wasm"
allow_unsigned = true
grants = {{ outbound_hosts = ["http://127.0.0.1:*"], secrets = ["WEBHOOK_BEARER_TOKEN"] }}

[tenants.acme]
secrets = ["WEBHOOK_BEARER_TOKEN"]
config.cacher = {{ url = "http://{0}/hook", flaw = "caches-first-token" }}

[tenants.globex]
secrets = ["WEBHOOK_BEARER_TOKEN"]
config.cacher = {{ url = "http://{0}/hook", flaw = "caches-first-token" }}

[[routes]]
tenant = "*"
capability = "send"
provider = "cacher"
"#,
            upstream.addr
        ),
        &[
            ("acme/WEBHOOK_BEARER_TOKEN", "acme-token-1"),
            ("globex/WEBHOOK_BEARER_TOKEN", "globex-token-2"),
        ],
    );
    let host = Host::start(b.path());
    let tokens = [
        ("acme", b.token("acme", None)),
        ("globex", b.token("globex", None)),
    ];
    let mut expected = Vec::new();
    for round in 0..6 {
        for (tenant, token) in &tokens {
            let r = host.send(token, msg("#ops", &format!("round {round}")));
            assert_eq!(r.status, 200, "{tenant}: {}", r.text());
            expected.push(format!(
                "Bearer {tenant}-token-{}",
                if *tenant == "acme" { 1 } else { 2 }
            ));
        }
    }
    let sent: Vec<String> = upstream
        .requests()
        .iter()
        .map(|seen| {
            seen.headers
                .get("authorization")
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(sent, expected, "a call sent another call's token");
}

/// Upstream connections are kept alive between calls, and only for the tenant whose call
/// opened them: every connection the upstream saw carried one tenant's requests, never both,
/// while calls of two tenants to the same upstream alternated.
#[test]
pub(crate) fn kept_alive_upstream_connections_never_carry_two_tenants() {
    let upstream = common::Upstream::keep_alive(vec![(200, vec![], "{}".into())]);
    let b = TestBundle::new(
        &format!(
            r#"
[providers.hook]
source = "{{components}}/messaging_webhook.wasm"
allow_unsigned = true
grants = {{ outbound_hosts = ["http://127.0.0.1:*"], secrets = ["WEBHOOK_BEARER_TOKEN"] }}

[tenants.acme]
secrets = ["WEBHOOK_BEARER_TOKEN"]
config.hook = {{ url = "http://{0}/hook" }}

[tenants.globex]
secrets = ["WEBHOOK_BEARER_TOKEN"]
config.hook = {{ url = "http://{0}/hook" }}

[[routes]]
tenant = "*"
capability = "send"
provider = "hook"
"#,
            upstream.addr
        ),
        &[
            ("acme/WEBHOOK_BEARER_TOKEN", "acme-token"),
            ("globex/WEBHOOK_BEARER_TOKEN", "globex-token"),
        ],
    );
    let host = Host::start(b.path());
    let tokens = [
        ("acme", b.token("acme", None)),
        ("globex", b.token("globex", None)),
    ];
    let rounds = 5;
    for round in 0..rounds {
        for (tenant, token) in &tokens {
            let r = host.send(token, msg("#ops", &format!("round {round}")));
            assert_eq!(r.status, 200, "{tenant}: {}", r.text());
        }
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2 * rounds);
    let mut tenant_of: std::collections::BTreeMap<usize, String> = Default::default();
    for s in &seen {
        let auth = s.headers.get("authorization").cloned().unwrap_or_default();
        let first = tenant_of
            .entry(s.connection)
            .or_insert_with(|| auth.clone());
        assert_eq!(
            *first, auth,
            "connection {} carried two tenants' requests",
            s.connection
        );
    }
    // Both tenants were served, and connections were reused (one each, unless a connection
    // was not yet ready again when the tenant's next call came).
    assert_eq!(
        tenant_of
            .values()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        2
    );
    assert!(
        tenant_of.len() <= rounds,
        "{} connections for {} requests: none kept alive",
        tenant_of.len(),
        seen.len()
    );
    // The host's metrics say the same: per tenant, one request per connection opened, the
    // rest on kept ones.
    let metrics = host.admin("GET", "/metrics").text();
    let count = |tenant: &str, connection: &str| -> usize {
        let series = format!(
            "greentic_outbound_requests_total{{tenant=\"{tenant}\",provider=\"hook\",connection=\"{connection}\"}} "
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    let mut opened = 0;
    for tenant in ["acme", "globex"] {
        let (new, reused) = (count(tenant, "new"), count(tenant, "reused"));
        assert_eq!(new + reused, rounds, "{tenant}: {metrics}");
        assert!(
            new >= 1 && reused >= 1,
            "{tenant}: {new} new, {reused} reused"
        );
        opened += new;
    }
    assert_eq!(opened, tenant_of.len(), "connections the upstream saw");
}

/// A call its provider finishes at once still gives its thread back before it answers: a
/// connection task serving request after request cannot keep other connections' requests
/// waiting on its thread. (Without it, with the host on one core, wrk saw p99 above 0.7 s.)
#[test]
pub(crate) fn a_short_call_gives_its_thread_back_before_it_answers() {
    use greentic_host::loader::{LoadOptions, load_bundle};
    use greentic_host::runtime::{Caller, Runtime};
    use std::sync::atomic::{AtomicBool, Ordering};

    for mode in ["fair", "tokio"] {
        let b = TestBundle::new(
            r#"
[providers.noop]
source = "{components}/noop.wasm"
allow_unsigned = true

[tenants.acme]

[[routes]]
tenant = "*"
capability = "send"
provider = "noop"
"#,
            &[],
        );
        b.set_host(&format!("scheduler = {{ mode = \"{mode}\" }}"));
        let loaded = load_bundle(b.path(), LoadOptions::default()).unwrap();
        let runtime = Runtime::new(
            &loaded.bundle,
            std::sync::Arc::new(loaded.engine),
            loaded.loaded.providers,
            loaded.backends,
        );
        // One thread: another task runs only when the call gives the thread back.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let caller = Caller {
                tenant: "acme".into(),
                team: None,
                user: None,
            };
            let body = serde_json::json!({"to": "#ops", "text": "hi"});
            // Warm: the first call of a provider may wait on things a later one does not.
            runtime
                .invoke(&caller, "send", body.clone(), None)
                .await
                .unwrap();
            let other = std::sync::Arc::new(AtomicBool::new(false));
            let ran = other.clone();
            tokio::spawn(async move { ran.store(true, Ordering::SeqCst) });
            runtime.invoke(&caller, "send", body, None).await.unwrap();
            assert!(
                other.load(Ordering::SeqCst),
                "{mode}: the call answered without giving its thread back once"
            );
        });
    }
}

/// The binary allocates with jemalloc, with the background thread that hands freed pages back
/// (what keeps 100 000 idle tenants under their memory target, BENCHMARKS.md): a running host
/// has that thread. Without the compiled-in settings jemalloc starts none.
#[cfg(target_os = "linux")]
#[test]
fn the_host_runs_jemalloc_with_its_page_returning_thread() {
    let b = TestBundle::new(
        "[providers.noop]\nsource = \"{components}/noop.wasm\"\nallow_unsigned = true\n\n[tenants.acme]\n\n[[routes]]\ntenant = \"*\"\ncapability = \"send\"\nprovider = \"noop\"\n",
        &[],
    );
    let host = Host::start(b.path());
    let reply = host.send(&b.token("acme", None), msg("#ops", "hi"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let threads = |pid: u32| -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_string())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let names = threads(host.pid());
        if names.iter().any(|n| n.starts_with("jemalloc_bg_thd")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no jemalloc background thread among {names:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
