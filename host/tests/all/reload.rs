//! Live reload: the real `greentic-host run`, a real registry and real signatures, the bundle
//! changed five ways while two tenants' calls keep coming.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Host, TestBundle, run_in, text};
use serde_json::json;

/// One revision of the test bundle.
#[derive(Clone)]
struct Shape {
    /// The tag of provider `up` (acme's provider).
    tag: &'static str,
    /// Tenant `initech` and its fuel per call, once added.
    initech_fuel: Option<u64>,
    /// The provider globex is routed to.
    globex: &'static str,
    /// A tenant the bad revision adds alongside its unsigned provider.
    umbrella: bool,
}

fn toml(registry: &str, s: &Shape) -> String {
    let mut t = format!(
        r#"
[trust.keys]
ci = "cosign.pub"

[providers.up]
source = "{registry}/providers/up:{tag}"
trusted_keys = ["ci"]

[providers.echo]
source = "{{components}}/echo.wasm"
allow_unsigned = true

[providers.mirror]
source = "{{components}}/echo.wasm"
allow_unsigned = true

[providers.spin]
source = "{{components}}/infinite_loop.wasm"
allow_unsigned = true

[tenants.acme]

[tenants.globex]
config.echo = {{ label = "globex-echo" }}
config.mirror = {{ label = "globex-mirror" }}

[[routes]]
tenant = "acme"
capability = "send"
provider = "up"

[[routes]]
tenant = "globex"
capability = "send"
provider = "{globex}"
"#,
        tag = s.tag,
        globex = s.globex,
    );
    if let Some(fuel) = s.initech_fuel {
        t.push_str(&format!(
            r#"
[tenants.initech]
limits = {{ fuel_per_call = {fuel} }}

[[routes]]
tenant = "initech"
capability = "send"
provider = "echo"

[[routes]]
tenant = "initech"
team = "loop"
capability = "send"
provider = "spin"
"#
        ));
    }
    if s.umbrella {
        t.push_str("\n[tenants.umbrella]\n\n[[routes]]\ntenant = \"umbrella\"\ncapability = \"send\"\nprovider = \"echo\"\n");
    }
    t
}

/// `greentic-host reload` against the host's admin listener: exit success and the outcome.
fn reload_cli(host: &Host, dir: &Path) -> (bool, serde_json::Value) {
    let out = run_in(dir, &["reload", "--admin", &host.admin_addr]);
    let (stdout, stderr) = text(&out);
    let outcome = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("reload printed no outcome ({e}): {stdout}{stderr}"));
    (out.status.success(), outcome)
}

fn active(host: &Host) -> String {
    host.admin("GET", "/readyz").json()["revision"]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits (at most 60 s) until the host serves revision `digest`.
fn wait_active(host: &Host, digest: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while active(host) != digest {
        assert!(
            Instant::now() < deadline,
            "revision {digest} never became active:\n{}",
            host.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn hangup(host: &Host) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &host.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// One answered call of the driver.
struct Answer {
    tenant: &'static str,
    status: u16,
    body: serde_json::Value,
}

#[test]
fn the_bundle_changes_five_ways_under_load_and_no_call_fails() {
    let registry = greentic_registry::testing::Registry::start();
    let reg = registry.addr.clone();
    let mut shape = Shape {
        tag: "1.0.0",
        initech_fuel: None,
        globex: "echo",
        umbrella: false,
    };
    let bundle = TestBundle::new(&toml(&reg, &shape), &[]);
    let dir = bundle.path();
    let mut digests: BTreeMap<String, Shape> = BTreeMap::new();
    digests.insert(bundle.rewrite(&toml(&reg, &shape)), shape.clone());
    assert!(run_in(dir, &["keygen"]).status.success());
    // Version 1 of `up` is the echo provider, version 2 the workloads provider (both signed);
    // version 3 (another component: a signature is by digest) is pushed but never signed.
    for (tag, component, sign) in [
        ("1.0.0", common::built::ECHO, true),
        ("2.0.0", common::built::WORKLOADS, true),
        ("3.0.0", common::built::PANICKER, false),
    ] {
        let reference = format!("{reg}/providers/up:{tag}");
        let wasm = common::component("wasip2", component);
        let out = run_in(dir, &["push", wasm.to_str().unwrap(), &reference]);
        assert!(out.status.success(), "{}", text(&out).1);
        if sign {
            let out = run_in(dir, &["sign", "--key", "cosign.key", &reference]);
            assert!(out.status.success(), "{}", text(&out).1);
        }
    }
    let host = Host::start(dir);
    let first = active(&host);
    assert!(digests.contains_key(&first), "readyz names {first}");
    let lock_before = std::fs::read_to_string(dir.join("greentic.lock")).unwrap();

    // Two tenants' calls, continuously, from four threads.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let mut drivers = Vec::new();
    for tenant in ["acme", "globex", "acme", "globex"] {
        let token = bundle.token(tenant, None);
        let (addr, stop, answers) = (host.addr.clone(), stop.clone(), answers.clone());
        drivers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let reply = common::http(
                    &addr,
                    "POST",
                    "/v1/invoke/send",
                    &[("authorization", &format!("Bearer {token}"))],
                    json!({"to": "fib", "text": "18"}).to_string().as_bytes(),
                );
                let body = serde_json::from_slice(&reply.body).unwrap_or(json!(reply.text()));
                answers.lock().unwrap().push(Answer {
                    tenant,
                    status: reply.status,
                    body,
                });
            }
        }));
    }
    let wait_calls = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        let start = answers.lock().unwrap().len();
        while answers.lock().unwrap().len() < start + n {
            assert!(Instant::now() < deadline, "the driver stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_calls(20);

    // 1. A tenant is added (greentic-host reload): it is served at once.
    shape.initech_fuel = Some(1_000_000);
    let added = bundle.rewrite(&toml(&reg, &shape));
    digests.insert(added.clone(), shape.clone());
    let (ok, outcome) = reload_cli(&host, dir);
    assert!(ok, "{outcome}");
    assert_eq!(outcome["outcome"], "applied", "{outcome}");
    assert_eq!(outcome["digest"], added.as_str());
    assert_eq!(outcome["previous"], first.as_str());
    let initech = bundle.token("initech", None);
    let r = host.send(&initech, json!({"to": "#new", "text": "hello"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "initech/-/-:#new:hello");
    let spin = bundle.token("initech", Some("loop"));
    let r = host.send(&spin, json!({"to": "x", "text": "y"}));
    assert_eq!(r.json()["code"], "fuel-exhausted", "{}", r.text());
    assert!(r.text().contains("(1000000 units)"), "{}", r.text());
    wait_calls(20);

    // 2. A tenant's limit changes (SIGHUP).
    shape.initech_fuel = Some(3_000_000);
    let limited = bundle.rewrite(&toml(&reg, &shape));
    digests.insert(limited.clone(), shape.clone());
    hangup(&host);
    wait_active(&host, &limited);
    let r = host.send(&spin, json!({"to": "x", "text": "y"}));
    assert!(r.text().contains("(3000000 units)"), "{}", r.text());
    wait_calls(20);

    // 3. A route changes (SIGHUP): globex moves from `echo` to `mirror`.
    shape.globex = "mirror";
    let rerouted = bundle.rewrite(&toml(&reg, &shape));
    digests.insert(rerouted.clone(), shape.clone());
    hangup(&host);
    wait_active(&host, &rerouted);
    wait_calls(20);

    // 4. A provider is upgraded to a new signed digest (greentic-host reload); the lock
    //    follows once the revision is active.
    shape.tag = "2.0.0";
    let upgraded = bundle.rewrite(&toml(&reg, &shape));
    digests.insert(upgraded.clone(), shape.clone());
    let (ok, outcome) = reload_cli(&host, dir);
    assert!(ok, "{outcome}");
    assert_eq!(outcome["digest"], upgraded.as_str(), "{outcome}");
    eprintln!(
        "the upgrade (pull, signature check, load) took {} ms to swap",
        outcome["took_ms"]
    );
    let lock_after = std::fs::read_to_string(dir.join("greentic.lock")).unwrap();
    assert_ne!(lock_before, lock_after);
    assert!(lock_after.contains("up:2.0.0"), "{lock_after}");
    wait_calls(20);

    // 5. A bad revision (an unsigned provider, and a tenant beside it) is refused whole.
    let bad_shape = Shape {
        tag: "3.0.0",
        umbrella: true,
        ..shape.clone()
    };
    let bad = bundle.rewrite(&toml(&reg, &bad_shape));
    let (ok, outcome) = reload_cli(&host, dir);
    assert!(!ok, "a bad revision was applied: {outcome}");
    assert_eq!(outcome["outcome"], "refused", "{outcome}");
    assert_eq!(outcome["digest"], bad.as_str());
    let problems = outcome["problems"].to_string();
    assert!(problems.contains("provider `up`"), "{problems}");
    assert!(problems.contains("signature"), "{problems}");
    let ready = host.admin("GET", "/readyz").json();
    assert_eq!(ready["revision"]["digest"], upgraded.as_str());
    assert_eq!(ready["last_refused"]["digest"], bad.as_str(), "{ready}");
    assert_eq!(
        std::fs::read_to_string(dir.join("greentic.lock")).unwrap(),
        lock_after,
        "a refused revision touched the lock"
    );
    // The tenant it would have added is not served (the token is minted from the file, which
    // names it).
    let r = host.send(
        &bundle.token("umbrella", None),
        json!({"to": "a", "text": "b"}),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["code"], "no-route", "{}", r.text());
    wait_calls(20);
    stop.store(true, Ordering::Relaxed);
    for d in drivers {
        d.join().unwrap();
    }

    // Not one call failed, and each was answered as the revision it names would answer.
    let answers = answers.lock().unwrap();
    let mut seen: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for a in answers.iter() {
        assert_eq!(a.status, 200, "{} failed: {}", a.tenant, a.body);
        let revision = a.body["revision"].as_str().unwrap();
        let shape = digests
            .get(revision)
            .unwrap_or_else(|| panic!("an answer names revision {revision}: {}", a.body));
        let (provider, id) = match a.tenant {
            "acme" if shape.tag == "1.0.0" => ("up", json!("acme/-/-:fib:18")),
            // fib(18), as the workloads provider computes it.
            "acme" => ("up", json!("2584")),
            _ => (
                shape.globex,
                json!(format!("globex/-/-:fib:18@globex-{}", shape.globex)),
            ),
        };
        assert_eq!(a.body["provider"], provider, "{}", a.body);
        assert_eq!(a.body["id"], id, "{}", a.body);
        seen.entry(a.tenant)
            .or_default()
            .insert(revision.to_string());
    }
    // The load really ran across the changes: each tenant was answered by every revision.
    for (tenant, revisions) in &seen {
        assert_eq!(revisions.len(), 5, "{tenant} saw {revisions:?}");
    }
    assert!(
        !seen.values().any(|r| r.contains(&bad)),
        "the bad revision answered"
    );
    let metrics = host.admin("GET", "/metrics").text();
    assert!(
        metrics.contains("greentic_reloads_total{outcome=\"applied\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("greentic_reloads_total{outcome=\"refused\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "greentic_revision_info{{digest=\"{upgraded}\"}} 1"
        )),
        "{metrics}"
    );
}

#[test]
fn a_watched_bundle_reloads_when_its_file_changes() {
    let base = r#"
[providers.echo]
source = "{components}/echo.wasm"
allow_unsigned = true

[tenants.acme]
config.echo = { label = "LABEL" }

[[routes]]
tenant = "acme"
capability = "send"
provider = "echo"
"#;
    let bundle = TestBundle::new(&base.replace("LABEL", "one"), &[]);
    let host = Host::start_with_args(bundle.path(), &["--watch"]);
    let acme = bundle.token("acme", None);
    let r = host.send(&acme, json!({"to": "a", "text": "b"}));
    assert_eq!(r.json()["id"], "acme/-/-:a:b@one");
    let two = bundle.rewrite(&base.replace("LABEL", "two"));
    wait_active(&host, &two);
    let r = host.send(&acme, json!({"to": "a", "text": "b"}));
    assert_eq!(r.json()["id"], "acme/-/-:a:b@two");
    assert_eq!(r.json()["revision"], two.as_str());
    // A broken file is refused once, and the running revision keeps serving.
    bundle.rewrite("[providers.echo\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = host.admin("GET", "/readyz").json();
        if ready["last_refused"].is_object() {
            assert!(
                ready["last_refused"]["problems"]
                    .to_string()
                    .contains("greentic.toml"),
                "{ready}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broken file was never refused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = host.send(&acme, json!({"to": "a", "text": "b"}));
    assert_eq!(r.json()["id"], "acme/-/-:a:b@two");
}

#[test]
fn a_call_in_flight_finishes_on_its_revision_when_its_tenant_is_removed() {
    let with = |tenants: &str| {
        format!(
            r#"
[providers.hello]
source = "{{components}}/http_hello.wasm"
allow_unsigned = true
{tenants}
[[routes]]
tenant = "*"
capability = "receive"
provider = "hello"
"#
        )
    };
    let bundle = TestBundle::new(
        &with("[tenants.acme]\n[tenants.initech]\nlimits = { deadline_ms = 10000 }\n"),
        &[],
    );
    let host = Host::start(bundle.path());
    // A delivery that takes 1.5 s is in flight for initech…
    let addr = host.addr.clone();
    let slow = std::thread::spawn(move || {
        common::http(
            &addr,
            "POST",
            "/webhooks/initech/hello/slow/1500",
            &[],
            b"{}",
        )
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !host
        .admin("GET", "/metrics")
        .text()
        .contains("greentic_calls_in_flight{tenant=\"initech\"} 1")
    {
        assert!(Instant::now() < deadline, "the slow delivery never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    // …when initech is removed.
    let removed = bundle.rewrite(&with("[tenants.acme]\n"));
    let (ok, outcome) = reload_cli(&host, bundle.path());
    assert!(ok, "{outcome}");
    assert_eq!(outcome["digest"], removed.as_str());
    // New deliveries for initech are refused; acme is served on the new revision.
    let r = common::http(&host.addr, "POST", "/webhooks/initech/hello/", &[], b"{}");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = common::http(&host.addr, "POST", "/webhooks/acme/hello/", &[], b"{}");
    assert_eq!(r.status, 200, "{}", r.text());
    // The one in flight finishes, answered by the revision it started on.
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "hello\n");
}

#[test]
fn a_component_rebuilt_at_the_same_path_is_a_new_revision_under_the_lock_rule() {
    let bundle = TestBundle::new(
        r#"
[providers.echo]
source = "echo.wasm"
allow_unsigned = true

[tenants.acme]

[[routes]]
tenant = "acme"
capability = "send"
provider = "echo"
"#,
        &[],
    );
    let dir = bundle.path();
    let file = dir.join("echo.wasm");
    std::fs::copy(common::component("wasip2", common::built::ECHO), &file).unwrap();
    let host = Host::start(dir);
    let acme = bundle.token("acme", None);
    let r = host.send(&acme, json!({"to": "a", "text": "b"}));
    assert_eq!(r.status, 200, "{}", r.text());

    // Nothing changed: unchanged.
    let (ok, outcome) = reload_cli(&host, dir);
    assert!(ok, "{outcome}");
    assert_eq!(outcome["outcome"], "unchanged", "{outcome}");

    // The same path now holds another component: not "unchanged", but refused by the lock
    // until the operator says the new digest is meant.
    std::fs::copy(common::component("wasip2", common::built::PANICKER), &file).unwrap();
    let (ok, outcome) = reload_cli(&host, dir);
    assert!(!ok, "{outcome}");
    assert_eq!(outcome["outcome"], "refused", "{outcome}");
    assert!(
        outcome["problems"].to_string().contains("update-lock"),
        "{outcome}"
    );
    let r = host.send(&acme, json!({"to": "a", "text": "b"}));
    assert_eq!(
        r.status,
        200,
        "the old component keeps serving: {}",
        r.text()
    );

    let out = run_in(
        dir,
        &["reload", "--admin", &host.admin_addr, "--update-lock"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("\"applied\""), "{stdout}");
    let r = host.send(&acme, json!({"to": "a", "text": "b"}));
    assert_eq!(
        r.json()["code"],
        "guest-trap",
        "the rebuilt component serves: {}",
        r.text()
    );
    let lock = std::fs::read_to_string(dir.join("greentic.lock")).unwrap();
    let panicker = std::fs::read(&file).unwrap();
    use sha2::Digest;
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&panicker)));
    assert!(
        lock.contains(&digest),
        "the lock follows the new digest: {lock}"
    );
}
