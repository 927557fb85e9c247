//! Instances kept between calls of one tenant (`"instances": "per-tenant"` in a provider's
//! manifest): a tenant's later call runs in the instance its earlier call left — never in
//! another tenant's, never in one that trapped, never across a reload — unless the bundle asks
//! for fresh instances; and idle instances give their places to calls that need them.
//!
//! `remember` answers with what its instance has seen: `{nonce}:{calls}:{tenants}`.

use crate::common;

use common::{Host, TestBundle};
use serde_json::json;

/// The bundle: `remember` for tenants a and b (and c), with `extra` in its section.
fn bundle(extra: &str) -> String {
    format!(
        "[providers.remember]\nsource = \"{{components}}/remember.wasm\"\nallow_unsigned = true\n{extra}\n\n[tenants.a]\nlimits = {{ max_concurrent = 8 }}\n\n[tenants.b]\nlimits = {{ max_concurrent = 8 }}\n\n[tenants.c]\nlimits = {{ max_concurrent = 8, queue_timeout_ms = 200 }}\n\n[[routes]]\ntenant = \"*\"\ncapability = \"send\"\nprovider = \"remember\"\n"
    )
}

/// What the instance that served a call had seen: nonce, calls, tenants.
fn seen(host: &Host, token: &str, to: &str) -> (String, u32, Vec<String>) {
    let reply = host.send(token, json!({"to": to, "text": "x"}));
    assert_eq!(reply.status, 200, "{}", reply.text());
    parse(reply.json()["id"].as_str().unwrap())
}

fn parse(id: &str) -> (String, u32, Vec<String>) {
    let mut parts = id.splitn(3, ':');
    let nonce = parts.next().unwrap().to_string();
    let calls = parts.next().unwrap().parse().unwrap();
    let tenants = parts
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    (nonce, calls, tenants)
}

#[test]
pub(crate) fn a_tenants_later_calls_run_in_its_instance_and_no_instance_serves_two_tenants() {
    let b = TestBundle::new(&bundle(""), &[]);
    let host = Host::start(b.path());
    let (ta, tb) = (b.token("a", None), b.token("b", None));

    // One after another: a's calls share one instance, b's another.
    let a1 = seen(&host, &ta, "#x");
    let a2 = seen(&host, &ta, "#x");
    let b1 = seen(&host, &tb, "#x");
    let a3 = seen(&host, &ta, "#x");
    let b2 = seen(&host, &tb, "#x");
    assert_eq!((a1.1, a2.1, a3.1), (1, 2, 3), "{a1:?} {a2:?} {a3:?}");
    assert!(a1.0 == a2.0 && a2.0 == a3.0, "{a1:?} {a2:?} {a3:?}");
    assert_eq!((b1.1, b2.1), (1, 2), "{b1:?} {b2:?}");
    assert_eq!(b1.0, b2.0);
    assert_ne!(a1.0, b1.0, "tenants a and b were served by one instance");
    assert_eq!(a3.2, ["a"]);
    assert_eq!(b2.2, ["b"]);

    // At once, interleaved: however instances are handed round, none serves both tenants.
    let calls: Vec<_> = (0..48)
        .map(|i| {
            let token = if i % 2 == 0 { ta.clone() } else { tb.clone() };
            host.spawn_send(token, json!({"to": "#x", "text": format!("m{i}")}))
        })
        .collect();
    let mut nonces = std::collections::BTreeMap::new();
    for (i, call) in calls.into_iter().enumerate() {
        let (reply, _) = call.join().unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        let (nonce, _, tenants) = parse(reply.json()["id"].as_str().unwrap());
        let tenant = if i % 2 == 0 { "a" } else { "b" };
        assert_eq!(tenants, [tenant], "an instance served {tenants:?}");
        assert_eq!(
            nonces.entry(nonce.clone()).or_insert(tenant),
            &tenant,
            "instance {nonce} served two tenants"
        );
    }

    let metrics = host.admin("GET", "/metrics").text();
    for line in [
        "greentic_instances_total{tenant=\"a\",provider=\"remember\",instance=\"reused\"}",
        "greentic_instances_total{tenant=\"b\",provider=\"remember\",instance=\"new\"}",
    ] {
        assert!(metrics.contains(line), "no `{line}` in\n{metrics}");
    }
}

#[test]
fn an_instance_that_trapped_is_never_used_again() {
    let b = TestBundle::new(&bundle(""), &[]);
    let host = Host::start(b.path());
    let ta = b.token("a", None);
    let first = seen(&host, &ta, "#x");
    let trapped = host.send(&ta, json!({"to": "trap", "text": "x"}));
    assert_eq!(trapped.status, 500, "{}", trapped.text());
    assert_eq!(trapped.json()["code"], "guest-trap", "{}", trapped.text());
    // The trap ran in the kept instance (its second call); the next call gets a new one.
    let after = seen(&host, &ta, "#x");
    assert_eq!(after.1, 1, "{after:?}");
    assert_ne!(after.0, first.0);
}

#[test]
fn the_bundle_can_ask_for_a_fresh_instance_for_every_call() {
    for (extra, host_line) in [("fresh_instances = true", ""), ("", "kept_instances = 0")] {
        let b = TestBundle::new(&bundle(extra), &[]);
        if !host_line.is_empty() {
            b.set_host(host_line);
        }
        let host = Host::start(b.path());
        let ta = b.token("a", None);
        let nonces: std::collections::BTreeSet<_> = (0..3)
            .map(|_| {
                let (nonce, calls, _) = seen(&host, &ta, "#x");
                assert_eq!(
                    calls, 1,
                    "`{extra}{host_line}`: an instance served two calls"
                );
                nonce
            })
            .collect();
        assert_eq!(nonces.len(), 3, "`{extra}{host_line}`");
    }
}

#[test]
fn a_reload_never_hands_an_instance_to_the_new_revision() {
    let b = TestBundle::new(&bundle(""), &[]);
    let host = Host::start(b.path());
    let ta = b.token("a", None);
    let before = seen(&host, &ta, "#x");
    assert_eq!(seen(&host, &ta, "#x").1, 2);
    // The same provider, one more tenant: a new revision.
    b.rewrite(&format!(
        "{}\n[tenants.d]\nlimits = {{ max_concurrent = 2 }}\n",
        bundle("")
    ));
    let out = common::run_in(b.path(), &["reload", "--admin", &host.admin_addr]);
    assert!(out.status.success(), "{:?}", common::text(&out));
    let after = seen(&host, &ta, "#x");
    assert_eq!(after.1, 1, "{after:?}");
    assert_ne!(after.0, before.0);
}

#[test]
fn idle_instances_give_their_places_to_calls_that_need_them() {
    let b = TestBundle::new(&bundle(""), &[]);
    b.set_host("max_in_flight = 2\nkept_instances = 2");
    let host = Host::start(b.path());
    let (ta, tb, tc) = (b.token("a", None), b.token("b", None), b.token("c", None));
    // a's and b's instances stay, each holding one of the host's two places...
    seen(&host, &ta, "#x");
    let b1 = seen(&host, &tb, "#x");
    let ready = host.admin("GET", "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["capacity"]["in_flight"], 0, "{}", ready.text());
    // ... and c's call (which may queue 200 ms) takes the place of the one idle longest.
    let c1 = seen(&host, &tc, "#x");
    assert_eq!(c1.1, 1);
    let b2 = seen(&host, &tb, "#x");
    assert_eq!(
        (b2.0, b2.1),
        (b1.0, 2),
        "b's instance, idle for less long, stayed"
    );
    let a2 = seen(&host, &ta, "#x");
    assert_eq!(a2.1, 1, "a's instance gave its place to c's call");
}
