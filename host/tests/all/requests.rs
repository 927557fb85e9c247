//! Bad and hostile requests against the real host: slow clients (headers and bodies), oversized
//! bodies, malformed JSON, unknown capabilities, a tenant's token on another tenant's webhook
//! path. Each gets its 4xx (or its connection closed), no guest runs for any of them, and the
//! host keeps serving everyone else throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Host, TestBundle};
use serde_json::json;

const BUNDLE: &str = r#"
[providers.echo]
source = "{components}/echo.wasm"
allow_unsigned = true

[providers.github]
source = "{components}/webhook_github.wasm"
allow_unsigned = true
grants = { secrets = ["GITHUB_WEBHOOK_SECRET"], state = true }

[tenants.acme]
secrets = ["GITHUB_WEBHOOK_SECRET"]

[tenants.globex]
secrets = ["GITHUB_WEBHOOK_SECRET"]

[[routes]]
tenant = "*"
capability = "send"
provider = "echo"

[[routes]]
tenant = "*"
capability = "receive"
provider = "github"
"#;

fn start() -> (TestBundle, Host) {
    let b = TestBundle::new(
        BUNDLE,
        &[
            ("acme/GITHUB_WEBHOOK_SECRET", "acme-hook-secret"),
            ("globex/GITHUB_WEBHOOK_SECRET", "globex-hook-secret"),
        ],
    );
    // Short client timeouts and a small body cap, so the test sees them quickly.
    let path = b.path().join("greentic.toml");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[host]\n",
        "[host]\nheader_timeout_ms = 500\nbody_timeout_ms = 500\nmax_body_bytes = 4096\n",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let host = Host::start(b.path());
    (b, host)
}

/// Work guests did, from `/metrics`: fuel burnt by calls of every domain (invocations and
/// webhook deliveries). It only grows when a guest runs.
fn guest_work(host: &Host) -> f64 {
    let metrics = host.admin("GET", "/metrics").text();
    metrics
        .lines()
        .filter(|l| l.starts_with("greentic_fuel_consumed_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn still_served(host: &Host, token: &str) {
    let r = host.send(token, json!({"to": "#ops", "text": "still here"}));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn slow_clients_are_cut_off_and_others_keep_being_served() {
    let (bundle, host) = start();
    let token = bundle.token("acme", None);

    // Headers that never finish: the connection is closed after the header timeout, and
    // others are served meanwhile.
    let mut slow = TcpStream::connect(&host.addr).unwrap();
    slow.write_all(b"POST /v1/invoke/send HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    still_served(&host, &token);
    let work = guest_work(&host);
    assert!(work > 0.0, "a served call should show up as guest work");
    let mut buf = [0u8; 512];
    let n = slow.read(&mut buf).unwrap_or(0);
    let closed_after = started.elapsed();
    assert!(
        closed_after < Duration::from_secs(5),
        "a client that never finished its headers was kept for {closed_after:?}"
    );
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        n == 0 || answer.starts_with("HTTP/1.1 408"),
        "expected the connection closed (or a 408), got {answer:?}"
    );

    // A body that never finishes: 408 after the body timeout.
    let mut slow = TcpStream::connect(&host.addr).unwrap();
    slow.write_all(
        format!(
            "POST /v1/invoke/send HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"to\":"
        )
        .as_bytes(),
    )
    .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut raw = Vec::new();
    let _ = slow.read_to_end(&mut raw);
    let answer = String::from_utf8_lossy(&raw).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("request-timeout") && answer.contains("500 ms"),
        "{answer}"
    );

    assert_eq!(guest_work(&host), work, "a slow request reached a guest");
    still_served(&host, &token);
}

#[test]
fn malformed_and_oversized_requests_never_reach_a_guest() {
    let (bundle, host) = start();
    let acme = bundle.token("acme", None);
    let auth = format!("Bearer {acme}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "oversized body",
            "/v1/invoke/send",
            vec![b'x'; 5000],
            413,
            "too-large",
        ),
        (
            "malformed JSON",
            "/v1/invoke/send",
            b"{\"to\": \"#ops\", ".to_vec(),
            400,
            "bad-request",
        ),
        (
            "wrong shape",
            "/v1/invoke/send",
            br#"{"to": 1}"#.to_vec(),
            400,
            "bad-request",
        ),
        (
            "unknown field",
            "/v1/invoke/send",
            br#"{"to": "a", "text": "b", "cc": "c"}"#.to_vec(),
            400,
            "bad-request",
        ),
        (
            "unknown capability",
            "/v1/invoke/teleport",
            br#"{"to": "a", "text": "b"}"#.to_vec(),
            404,
            "no-route",
        ),
    ];
    for (what, path, body, status, code) in cases {
        let r = host.request("POST", path, &headers, &body);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert_eq!(r.json()["code"], code, "{what}: {}", r.text());
    }
    let r = host.request(
        "POST",
        "/v1/invoke/send",
        &[],
        br#"{"to": "a", "text": "b"}"#,
    );
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(guest_work(&host), 0.0, "a bad request reached a guest");

    // A webhook delivery too large for the host is refused before the provider runs.
    let r = host.request("POST", "/webhooks/acme/github/", &[], &vec![b'{'; 5000]);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(guest_work(&host), 0.0);
    still_served(&host, &acme);
}

#[test]
fn a_tenants_token_opens_nothing_on_another_tenants_webhook() {
    let (bundle, host) = start();
    let acme = bundle.token("acme", None);
    // acme's caller token on globex's webhook path: webhooks are authenticated by the
    // provider's signature check with globex's secret, never by a caller token (which the host
    // strips before the provider sees the delivery).
    let r = host.request(
        "POST",
        "/webhooks/globex/github/",
        &[
            ("authorization", &format!("Bearer {acme}")),
            ("x-github-event", "push"),
            ("content-type", "application/json"),
        ],
        br#"{"zen": "hello"}"#,
    );
    assert_eq!(r.status, 401, "{}", r.text());
    // Signed with acme's secret, on globex's path: refused as well.
    let body = br#"{"zen": "hello"}"#;
    let r = host.request(
        "POST",
        "/webhooks/globex/github/",
        &[
            (
                "x-hub-signature-256",
                &common::github_signature(b"acme-hook-secret", body),
            ),
            ("x-github-event", "push"),
        ],
        body,
    );
    assert_eq!(r.status, 401, "{}", r.text());
    // The same delivery signed with globex's secret is accepted.
    let r = host.request(
        "POST",
        "/webhooks/globex/github/",
        &[
            (
                "x-hub-signature-256",
                &common::github_signature(b"globex-hook-secret", body),
            ),
            ("x-github-event", "push"),
            ("x-github-delivery", "globex-1"),
        ],
        body,
    );
    assert_eq!(r.status, 202, "{}", r.text());
}

/// One provider's state is each tenant's own: the same delivery id is new to each tenant, and
/// a replay is refused only where it was seen (the host scopes `greentic:state` by the
/// tenant of the call, never by anything the guest says).
#[test]
fn provider_state_is_scoped_to_the_tenant_of_each_call() {
    let (_bundle, host) = start();
    let body = br#"{"zen": "hello"}"#;
    let deliver = |tenant: &str, secret: &[u8]| {
        host.request(
            "POST",
            &format!("/webhooks/{tenant}/github/"),
            &[
                (
                    "x-hub-signature-256",
                    &common::github_signature(secret, body),
                ),
                ("x-github-event", "push"),
                ("x-github-delivery", "shared-id-1"),
            ],
            body,
        )
    };
    assert_eq!(deliver("acme", b"acme-hook-secret").status, 202);
    assert_eq!(deliver("globex", b"globex-hook-secret").status, 202);
    assert_eq!(deliver("acme", b"acme-hook-secret").status, 409);
    assert_eq!(deliver("globex", b"globex-hook-secret").status, 409);
    // The refusals are the provider's answers: counted as such, not as host errors.
    let metrics = host.admin("GET", "/metrics").text();
    assert!(
        metrics.contains(r#"greentic_calls_total{tenant="acme",provider="github",capability="webhook",code="http-409"} 1"#),
        "{metrics}"
    );
}
