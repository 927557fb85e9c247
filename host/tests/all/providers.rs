//! The real providers under the real host: messaging-webhook against a scripted upstream on
//! loopback (error mapping, retries, backoff, circuit breaker, outbound grants) and
//! webhook-github receiving signed deliveries.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::time::{Duration, Instant};

use common::{Host, TestBundle, Upstream};
use serde_json::json;

fn bundle(url_acme: &str, deadline_ms: u64) -> String {
    format!(
        r#"

[providers.hook]
source = "{{components}}/messaging_webhook.wasm"
allow_unsigned = true
grants = {{ outbound_hosts = ["http://127.0.0.1:*"], secrets = ["WEBHOOK_BEARER_TOKEN"] }}

[providers.github]
source = "{{components}}/webhook_github.wasm"
allow_unsigned = true
grants = {{ secrets = ["GITHUB_WEBHOOK_SECRET"], state = true }}

[tenants.acme]
secrets = ["WEBHOOK_BEARER_TOKEN", "GITHUB_WEBHOOK_SECRET"]
limits = {{ deadline_ms = {deadline_ms} }}
config.hook = {{ url = "{url_acme}", timeout_ms = 2000 }}

[tenants.globex]
config.hook = {{ url = "http://127.0.0.1:9/never" }}

[[routes]]
tenant = "*"
capability = "send"
provider = "hook"

[[routes]]
tenant = "acme"
capability = "receive"
provider = "github"
"#
    )
}

const SECRETS: &[(&str, &str)] = &[
    ("acme/WEBHOOK_BEARER_TOKEN", "acme-bearer-token-xyz"),
    ("acme/GITHUB_WEBHOOK_SECRET", "It's a Secret to Everybody"),
];

/// A scripted answer: status, headers, body.
type Answer<'a> = (u16, &'a [(&'a str, &'a str)], &'a str);

fn scripted(responses: &[Answer<'_>]) -> Upstream {
    Upstream::start(
        responses
            .iter()
            .map(|(s, h, b)| {
                (
                    *s,
                    h.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    b.to_string(),
                )
            })
            .collect(),
    )
}

fn start(upstream: &Upstream, deadline_ms: u64) -> (TestBundle, Host) {
    let b = TestBundle::new(
        &bundle(&format!("http://{}/hook", upstream.addr), deadline_ms),
        SECRETS,
    );
    let host = Host::start(b.path());
    (b, host)
}

#[test]
fn delivers_with_the_tenants_token_and_maps_upstream_errors() {
    let upstream = scripted(&[
        (200, &[], r#"{"ok":true,"ts":"1712.42"}"#),
        (400, &[], "bad channel"),
        (401, &[], ""),
        (404, &[], ""),
        (500, &[], ""),
    ]);
    let (b, host) = start(&upstream, 5000);
    let acme = b.token("acme", None);
    let r = host.send(
        &acme,
        json!({"to": "#ops", "text": "deployed", "thread": "1712.1"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "1712.42");
    let seen = &upstream.requests()[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/hook");
    assert_eq!(
        seen.headers["authorization"],
        "Bearer acme-bearer-token-xyz"
    );
    let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        body,
        json!({"text": "deployed", "channel": "#ops", "thread_ts": "1712.1", "root_id": "1712.1"})
    );

    for (status, code) in [
        (400, "invalid-input"),
        (403, "unauthorized"),
        (404, "not-found"),
        (503, "unavailable"),
    ] {
        let r = host.send(&acme, json!({"to": "#ops", "text": "x"}));
        assert_eq!(
            (r.status, r.json()["code"].as_str().unwrap()),
            (status, code),
            "{}",
            r.text()
        );
    }
    assert!(
        !host.settled_output().contains("acme-bearer-token-xyz"),
        "the token was logged"
    );
}

#[test]
fn idempotent_calls_are_retried_with_backoff_and_others_are_not() {
    let upstream = scripted(&[
        (503, &[], ""),
        (503, &[], ""),
        (200, &[], r#"{"id":"m-1"}"#),
    ]);
    let (b, host) = start(&upstream, 5000);
    let acme = b.token("acme", None);
    let r = host.send(
        &acme,
        json!({"to": "#a", "text": "x", "idempotency_key": "k-1"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["attempts"], 3);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter().all(|s| s.headers["idempotency-key"] == "k-1"),
        "the same key each time"
    );

    // Without a key, no retry.
    let upstream = scripted(&[(503, &[], "")]);
    let (b, host) = start(&upstream, 5000);
    let r = host.send(&b.token("acme", None), json!({"to": "#a", "text": "x"}));
    assert_eq!(r.json()["code"], "unavailable", "{}", r.text());
    assert_eq!(upstream.requests().len(), 1);
}

#[test]
fn retry_after_is_honoured_and_retries_stay_inside_the_deadline() {
    let upstream = scripted(&[
        (429, &[("retry-after", "1")], ""),
        (200, &[], r#"{"id":"m-2"}"#),
    ]);
    let (b, host) = start(&upstream, 5000);
    let r = host.send(
        &b.token("acme", None),
        json!({"to": "#a", "text": "x", "idempotency_key": "k-2"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[1].at - seen[0].at >= Duration::from_millis(1000),
        "retry-after ignored: {:?}",
        seen[1].at - seen[0].at
    );

    // A retry-after beyond the deadline is not waited for: the error comes back at once.
    let upstream = scripted(&[(503, &[("retry-after", "30")], "")]);
    let (b, host) = start(&upstream, 2000);
    let started = Instant::now();
    let r = host.send(
        &b.token("acme", None),
        json!({"to": "#a", "text": "x", "idempotency_key": "k-3"}),
    );
    assert_eq!(r.json()["code"], "unavailable", "{}", r.text());
    assert_eq!(r.json()["retry_after_ms"], 30_000);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited for a retry-after past the deadline"
    );
    assert_eq!(upstream.requests().len(), 1);
}

#[test]
fn the_circuit_opens_after_repeated_failures_for_that_tenant_only() {
    let upstream = scripted(&[(503, &[], "")]);
    let (b, host) = start(&upstream, 5000);
    let acme = b.token("acme", None);
    for _ in 0..5 {
        assert_eq!(
            host.send(&acme, json!({"to": "#a", "text": "x"})).json()["code"],
            "unavailable"
        );
    }
    let r = host.send(&acme, json!({"to": "#a", "text": "x"}));
    assert_eq!(
        (r.status, r.json()["code"].as_str().unwrap()),
        (503, "circuit-open"),
        "{}",
        r.text()
    );
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(
        upstream.requests().len(),
        5,
        "an open circuit must not reach the upstream"
    );
    let metrics = host.admin("GET", "/metrics").text();
    assert!(
        metrics.contains(r#"greentic_circuit_open{tenant="acme",provider="hook"} 1"#),
        "{metrics}"
    );
    // globex's circuit for the same provider is closed (its call fails for its own reasons).
    let r = host.send(&b.token("globex", None), json!({"to": "#a", "text": "x"}));
    assert_ne!(r.json()["code"], "circuit-open", "{}", r.text());
}

#[test]
fn outbound_calls_reach_only_granted_hosts() {
    // `localhost` resolves to the upstream, but only `127.0.0.1` is granted.
    let upstream = scripted(&[(200, &[], "{}")]);
    let port = upstream.addr.rsplit(':').next().unwrap().to_string();
    let b = TestBundle::new(
        &bundle(&format!("http://localhost:{port}/hook"), 5000),
        SECRETS,
    );
    let host = Host::start(b.path());
    let r = host.send(&b.token("acme", None), json!({"to": "#a", "text": "x"}));
    assert_eq!(r.json()["code"], "unauthorized", "{}", r.text());
    assert!(r.text().contains("refused by the host"), "{}", r.text());
    assert!(upstream.requests().is_empty());
}

#[test]
fn wildcard_grants_reach_no_loopback_private_or_metadata_address() {
    // `*` and even `http://*:*` name every host, but not a restricted address: whatever name
    // leads there (`localhost`), or an address literal (`127.0.0.1`, the metadata service).
    let upstream = scripted(&[(200, &[], "{}")]);
    let port = upstream.addr.rsplit(':').next().unwrap().to_string();
    for url in [
        format!("http://localhost:{port}/hook"),
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1:9/internal".to_string(),
    ] {
        let text = bundle(&url, 5000).replace(
            r#"outbound_hosts = ["http://127.0.0.1:*"]"#,
            r#"outbound_hosts = ["*", "http://*:*"]"#,
        );
        let b = TestBundle::new(&text, SECRETS);
        let host = Host::start(b.path());
        let r = host.send(&b.token("acme", None), json!({"to": "#a", "text": "x"}));
        assert_eq!(r.json()["code"], "unauthorized", "{url}: {}", r.text());
        assert!(
            r.text().contains("refused by the host"),
            "{url}: {}",
            r.text()
        );
        host.output_with("outbound request to a restricted address refused");
    }
    assert!(
        upstream.requests().is_empty(),
        "a refused request reached the upstream"
    );

    // A port-less name grant is HTTPS on 443 only: plain HTTP to another port is refused
    // by name, before any address is looked at.
    let text = bundle(&format!("http://localhost:{port}/hook"), 5000).replace(
        r#"outbound_hosts = ["http://127.0.0.1:*"]"#,
        r#"outbound_hosts = ["localhost"]"#,
    );
    let b = TestBundle::new(&text, SECRETS);
    let host = Host::start(b.path());
    let r = host.send(&b.token("acme", None), json!({"to": "#a", "text": "x"}));
    assert_eq!(r.json()["code"], "unauthorized", "{}", r.text());
    host.output_with("outbound request to a host not granted to this provider refused");
    assert!(upstream.requests().is_empty());
}

#[test]
fn webhook_github_verifies_deliveries_for_the_routed_tenant() {
    let upstream = scripted(&[(200, &[], "{}")]);
    let (_b, host) = start(&upstream, 5000);
    let body = br#"{"action":"opened","number":7}"#;
    let good = common::github_signature(b"It's a Secret to Everybody", body);
    let deliver = |tenant: &str, sig: Option<&str>, body: &[u8]| {
        let mut headers = vec![
            ("x-github-event", "pull_request"),
            ("x-github-delivery", "d-42"),
            ("content-type", "application/json"),
        ];
        if let Some(sig) = sig {
            headers.push(("x-hub-signature-256", sig));
        }
        host.request(
            "POST",
            &format!("/webhooks/{tenant}/github/"),
            &headers,
            body,
        )
    };
    let r = deliver("acme", Some(&good), body);
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(r.text().contains("d-42"), "{}", r.text());
    // The same delivery again is a replay: the provider remembers the id (greentic:state)
    // and refuses it rather than processing it twice.
    let r = deliver("acme", Some(&good), body);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("already received"), "{}", r.text());
    // The same signed body under a fresh id is a replay too: the signature is recorded.
    let r = host.request(
        "POST",
        "/webhooks/acme/github/",
        &[
            ("x-github-event", "pull_request"),
            ("x-github-delivery", "d-43-forged"),
            ("content-type", "application/json"),
            ("x-hub-signature-256", &good),
        ],
        body,
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(deliver("acme", None, body).status, 401);
    assert_eq!(
        deliver(
            "acme",
            Some(&common::github_signature(b"wrong", body)),
            body
        )
        .status,
        401
    );
    let junk = b"{not json";
    assert_eq!(
        deliver(
            "acme",
            Some(&common::github_signature(
                b"It's a Secret to Everybody",
                junk
            )),
            junk
        )
        .status,
        400
    );
    let r = host.request("GET", "/webhooks/acme/github/", &[], b"");
    assert_eq!(r.status, 405, "{}", r.text());
    // globex is not routed to the provider: nothing reaches a guest.
    let r = deliver("globex", Some(&good), body);
    assert_eq!(
        (r.status, r.json()["code"].as_str().unwrap()),
        (404, "no-route"),
        "{}",
        r.text()
    );
    let out = host.output_with("github delivery accepted");
    let out = if out.contains("Secret to Everybody") {
        out
    } else {
        host.settled_output()
    };
    assert!(
        !out.contains("Secret to Everybody"),
        "the webhook secret was logged"
    );
    assert!(
        out.contains("github delivery accepted"),
        "the provider's log is missing"
    );
}
