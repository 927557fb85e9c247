//! The timer domain end to end: the real host fires `timer-heartbeat` on the bundle's
//! schedules, per tenant, each slot once, and picks up where it was after a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Host, Nats, TestBundle, Upstream, run_host, text};
use serde_json::Value;

/// The timer provider every bundle here runs, as granted.
const BEAT: &str = r#"[providers.beat]
source = "{components}/timer_heartbeat.wasm"
allow_unsigned = true
grants = { outbound_hosts = ["http://127.0.0.1:*"], secrets = ["HEARTBEAT_TOKEN"], state = true }
"#;

fn bundle(upstream: &str) -> String {
    format!(
        r#"
{BEAT}
[tenants.acme]
config.beat = {{ url = "http://{upstream}/beats/acme", timeout_ms = 2000 }}

[tenants.globex]
config.beat = {{ url = "http://{upstream}/beats/globex", timeout_ms = 2000 }}

[[routes]]
tenant = "acme"
capability = "heartbeat"
provider = "beat"

[[schedules]]
name = "acme-beat"
tenant = "acme"
provider = "beat"
every = "1s"
missed = "once"

[[schedules]]
name = "globex-beat"
tenant = "globex"
provider = "beat"
every = "1s"
payload = {{ service = "billing" }}
"#
    )
}

/// The heartbeats `upstream` received for `tenant`, in arrival order.
fn beats(upstream: &Upstream, tenant: &str) -> Vec<(Value, Option<String>)> {
    upstream
        .requests()
        .into_iter()
        .filter(|r| r.path == format!("/beats/{tenant}"))
        .map(|r| {
            (
                serde_json::from_slice(&r.body).unwrap(),
                r.headers.get("idempotency-key").cloned(),
            )
        })
        .collect()
}

fn wait_for(upstream: &Upstream, tenant: &str, n: usize) -> Vec<(Value, Option<String>)> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let got = beats(upstream, tenant);
        if got.len() >= n || Instant::now() > until {
            assert!(
                got.len() >= n,
                "{tenant}: {} beats of {n}: {got:?}",
                got.len()
            );
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every beat is for its tenant and schedule, names its slot in the idempotency key, and no
/// slot comes twice; sequences (kept in each tenant's own state) count up from 1 by one.
fn check(beats: &[(Value, Option<String>)], tenant: &str, schedule: &str) {
    let mut slots = BTreeSet::new();
    for (i, (beat, key)) in beats.iter().enumerate() {
        assert_eq!(beat["tenant"], tenant, "{beat}");
        assert_eq!(beat["schedule"], schedule, "{beat}");
        let slot = beat["scheduled_at_ms"].as_u64().unwrap();
        assert_eq!(
            slot % 1000,
            0,
            "slots of `every = 1s` are whole seconds: {beat}"
        );
        assert!(slots.insert(slot), "slot {slot} fired twice: {beats:?}");
        assert_eq!(
            key.as_deref(),
            Some(format!("schedule:{schedule}:{slot}").as_str())
        );
        assert_eq!(beat["sequence"], i as u64 + 1, "{beats:?}");
    }
}

#[test]
fn schedules_fire_each_slot_once_per_tenant_and_a_restart_resumes() {
    let upstream = Upstream::start(vec![(200, vec![], "{}".into())]);
    let b = TestBundle::new(&bundle(&upstream.addr), &[]);
    let host = Host::start(b.path());
    wait_for(&upstream, "acme", 3);
    let globex = wait_for(&upstream, "globex", 2);
    assert_eq!(globex[0].0["payload"]["service"], "billing");
    // A timer provider is the host's to fire: a caller invoking it, even through a route, is
    // told where it is reached instead.
    let token = b.token("acme", None);
    let r = host.request(
        "POST",
        "/v1/invoke/heartbeat",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", "application/json"),
        ],
        b"{}",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("`timer` provider") && r.text().contains("schedules"),
        "{}",
        r.text()
    );
    // `check` beside the running host: it neither opens nor locks the state the host keeps.
    let out = run_host(&["check", b.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    let metrics = host.admin("GET", "/metrics").text();
    assert!(
        metrics.contains(r#"greentic_calls_total{tenant="acme",provider="beat",capability="acme-beat",code="ok"}"#),
        "{metrics}"
    );
    assert!(host.terminate().success());

    // Down for several slots; restarted on the same bundle (and so the same state file).
    let before = beats(&upstream, "acme").len();
    let last_slot = beats(&upstream, "acme")
        .iter()
        .map(|(b, _)| b["scheduled_at_ms"].as_u64().unwrap())
        .max()
        .unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    let host = Host::start(b.path());
    let acme = wait_for(&upstream, "acme", before + 2);
    let globex = wait_for(&upstream, "globex", globex.len() + 2);
    check(&acme, "acme", "acme-beat");
    check(&globex, "globex", "globex-beat");
    // The first fire after the restart is a later slot, and counts the ones missed meanwhile.
    let resumed = &acme[before].0;
    assert!(resumed["scheduled_at_ms"].as_u64().unwrap() > last_slot);
    assert!(resumed["missed"].as_u64().unwrap() >= 2, "{resumed}");
    let metrics = host.admin("GET", "/metrics").text();
    assert!(
        metrics
            .contains(r#"greentic_timer_missed_slots_total{tenant="acme",schedule="acme-beat"}"#),
        "{metrics}"
    );
}

#[test]
fn two_hosts_sharing_nats_state_fire_each_slot_once_between_them() {
    let nats = Nats::start();
    let upstream = Upstream::start(vec![(200, vec![], "{}".into())]);
    let toml = format!(
        "[state]\ntype = \"nats\"\nurl = \"{}\"\nbucket = \"fleet-test\"\n{}",
        nats.url,
        bundle(&upstream.addr)
    );
    let b = TestBundle::new(&toml, &[]);
    let one = Host::start(b.path());
    let two = Host::start(b.path());
    let acme = wait_for(&upstream, "acme", 5);
    // Every slot once, and one sequence: both hosts claim slots and number beats in the same
    // JetStream bucket.
    check(&acme, "acme", "acme-beat");
    let fired = |host: &Host| {
        host.admin("GET", "/metrics")
            .text()
            .lines()
            .filter(|l| l.starts_with(r#"greentic_calls_total{tenant="acme",provider="beat""#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let (a, b) = (fired(&one), fired(&two));
    assert!(a + b >= 5.0, "{a} + {b}");
    drop((one, two));
}

#[test]
fn schedules_that_cannot_fire_are_refused_at_load_naming_each_problem() {
    let toml = r#"
[providers.beat]
source = "{components}/timer_heartbeat.wasm"
allow_unsigned = true
grants = { outbound_hosts = ["http://127.0.0.1:*"], secrets = ["HEARTBEAT_TOKEN"], state = true }

[providers.echo]
source = "{components}/echo.wasm"
allow_unsigned = true

[tenants.acme]
config.beat = { url = "http://127.0.0.1:9/beats" }

[[schedules]]
name = "to-a-messaging-provider"
tenant = "acme"
provider = "echo"
every = "1m"

[[schedules]]
name = "unknown-tenant"
tenant = "initech"
provider = "beat"
every = "1m"

[[schedules]]
name = "bad-cron"
tenant = "acme"
provider = "beat"
cron = "every tuesday"

[[schedules]]
name = "too-fast"
tenant = "acme"
provider = "beat"
every = "10ms"
"#;
    let b = TestBundle::new(toml, &[]);
    let out = run_host(&["check", b.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let (_, err) = text(&out);
    for needle in [
        "`to-a-messaging-provider`): provider `echo` is a `messaging` provider",
        "`unknown-tenant`): tenant `initech` is not in [tenants]",
        "`bad-cron`): cron `every tuesday` does not parse",
        "`too-fast`): every `10ms` is shorter than one second",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}

/// An upstream whose first request never gets an answer (the fire hangs there) and whose
/// later ones get 200; every request's idempotency key is recorded.
fn hanging_first_upstream() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::Write as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let keys = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = keys.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some(request) = common::read_request(&mut stream) else {
                continue;
            };
            let key = request
                .headers
                .get("idempotency-key")
                .cloned()
                .unwrap_or_default();
            let first = {
                let mut keys = seen.lock().unwrap();
                keys.push(key);
                keys.len() == 1
            };
            if first {
                held.push(stream); // never answered
            } else {
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                );
            }
        }
    });
    (addr, keys)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(40);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A host killed in the middle of a fire leaves its claim unfinished; the next host fires that
/// slot again once the claim's lease runs out, under the same idempotency key, and then goes
/// on with later slots, each once.
#[test]
fn a_slot_whose_host_died_mid_fire_fires_again_under_the_same_key() {
    let (addr, keys) = hanging_first_upstream();
    let toml = format!(
        r#"
{BEAT}
[tenants.acme]
limits = {{ deadline_ms = 3000, queue_timeout_ms = 500 }}
config.beat = {{ url = "http://{addr}/beats/acme", timeout_ms = 10000 }}

[[schedules]]
name = "acme-beat"
tenant = "acme"
provider = "beat"
every = "1s"
"#
    );
    let b = TestBundle::new(&toml, &[]);
    let host = Host::start(b.path());
    wait_until("the first fire", || !keys.lock().unwrap().is_empty());
    let first = keys.lock().unwrap()[0].clone();
    assert!(first.starts_with("schedule:acme-beat:"), "{first}");
    // Killed mid-fire: no grace, no record of the fire's end.
    let killed = std::process::Command::new("kill")
        .args(["-9", &host.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    drop(host);

    let _host = Host::start(b.path());
    wait_until("the slot fired again and a later one", || {
        let keys = keys.lock().unwrap();
        keys.iter().filter(|k| **k == first).count() == 2 && keys.len() >= 3
    });
    let keys = keys.lock().unwrap().clone();
    let mut others: Vec<&String> = keys.iter().filter(|k| **k != first).collect();
    let n = others.len();
    others.sort();
    others.dedup();
    assert_eq!(others.len(), n, "a later slot fired twice: {keys:?}");
    assert_eq!(keys[1], first, "the unfinished slot fires first: {keys:?}");
}
