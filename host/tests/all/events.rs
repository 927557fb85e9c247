//! `greentic:events` under the real host: a provider publishes typed events for the calling
//! tenant; the host stamps tenant, provider, operation and trace, hands them to the bundle's
//! sink (a log line, or a real NATS server on loopback, one subject per tenant), bounds what one
//! call may publish, and links the capability only for providers granted it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::time::Duration;

use common::{Host, Nats, TestBundle, built, run_host, text};
use futures_util::StreamExt as _;
use serde_json::{Value, json};

fn bundle(events: &str, grants: &str) -> String {
    format!(
        r#"
{events}

[providers.ev]
source = "{{components}}/{}.wasm"
allow_unsigned = true
grants = {{ {grants} }}

[tenants.acme]
[tenants.globex]

[[routes]]
tenant = "*"
capability = "send"
provider = "ev"
"#,
        built::EVENTS
    )
}

fn send(host: &Host, b: &TestBundle, tenant: &str, to: &str, text: &str) -> common::Reply {
    host.send(&b.token(tenant, None), json!({"to": to, "text": text}))
}

/// The `greentic::events` log lines the host printed, as JSON.
fn logged_events(host: &Host, needle: &str) -> Vec<Value> {
    host.output_with(needle)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "greentic::events")
        .collect()
}

#[test]
fn events_go_to_the_log_by_default_stamped_by_the_host() {
    let b = TestBundle::new(&bundle("", "events = true"), &[]);
    let host = Host::start(b.path());
    let reply = send(&host, &b, "acme", "order.shipped", r#"{"order": 42}"#);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["id"], "published 1");
    let lines = logged_events(&host, "order.shipped");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let fields = &lines[0]["fields"];
    assert_eq!(fields["tenant"], "acme", "{fields}");
    assert_eq!(fields["provider"], "ev", "{fields}");
    assert_eq!(fields["operation"], "send", "{fields}");
    assert_eq!(fields["name"], "order.shipped", "{fields}");
    assert_eq!(fields["payload"], r#"{"order":42}"#, "{fields}");
    assert!(
        fields["trace_id"].as_str().is_some_and(|t| t.len() == 32),
        "{fields}"
    );
    host.terminate();
}

/// Subscribes to `subject` on `url` and collects what arrives until `n` messages or 10 s.
fn collect(url: &str, subject: &str) -> std::sync::mpsc::Receiver<Value> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (url, subject) = (url.to_string(), subject.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = async_nats::connect(&url).await.unwrap();
            let mut sub = client.subscribe(subject).await.unwrap();
            client.flush().await.unwrap();
            ready_tx.send(()).unwrap();
            while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(30), sub.next()).await
            {
                if tx
                    .send(serde_json::from_slice(&m.payload).unwrap())
                    .is_err()
                {
                    break;
                }
            }
        });
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    rx
}

#[test]
pub(crate) fn a_nats_sink_publishes_each_tenants_events_on_its_own_subject() {
    let nats = Nats::start();
    let acme = collect(&nats.url, "shop.events.acme");
    let all = collect(&nats.url, "shop.events.>");
    let b = TestBundle::new(
        &bundle(
            &format!(
                "[events]\ntype = \"nats\"\nurl = \"{}\"\nprefix = \"shop\"",
                nats.url
            ),
            "events = true",
        ),
        &[],
    );
    let host = Host::start(b.path());
    let reply = send(&host, &b, "acme", "order.shipped*2", r#"{"order": 7}"#);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = send(&host, &b, "globex", "invoice.paid", r#"[1, "two"]"#);
    assert_eq!(reply.status, 200, "{}", reply.text());

    let wait = Duration::from_secs(10);
    for _ in 0..2 {
        let e = acme
            .recv_timeout(wait)
            .expect("acme's event on its subject");
        assert_eq!(e["name"], "order.shipped");
        assert_eq!(e["tenant"], "acme");
        assert_eq!(e["provider"], "ev");
        assert_eq!(e["operation"], "send");
        assert_eq!(e["payload"], json!({"order": 7}));
        assert!(e["trace_id"].as_str().is_some_and(|t| t.len() == 32), "{e}");
        assert!(e["published_at_ms"].as_u64().is_some_and(|t| t > 0), "{e}");
    }
    // globex's event went to globex's subject only.
    let mut seen = Vec::new();
    while let Ok(e) = all.recv_timeout(Duration::from_secs(2)) {
        seen.push((e["tenant"].clone(), e["name"].clone(), e["payload"].clone()));
    }
    assert_eq!(
        seen,
        vec![
            (json!("acme"), json!("order.shipped"), json!({"order": 7})),
            (json!("acme"), json!("order.shipped"), json!({"order": 7})),
            (json!("globex"), json!("invoice.paid"), json!([1, "two"])),
        ]
    );
    assert!(
        acme.recv_timeout(Duration::from_millis(500)).is_err(),
        "globex's event reached acme's subject"
    );
    let metrics = host.admin("GET", "/metrics").text();
    assert!(
        metrics.contains(
            "greentic_events_total{tenant=\"acme\",provider=\"ev\",outcome=\"published\"} 2"
        ),
        "{metrics}"
    );
    host.terminate();
}

#[test]
fn what_one_call_publishes_is_bounded_and_bad_events_are_refused() {
    let nats = Nats::start();
    let acme = collect(&nats.url, "greentic.events.acme");
    let b = TestBundle::new(
        &bundle(
            &format!(
                "[events]\ntype = \"nats\"\nurl = \"{}\"\nmax_per_call = 3\nmax_event_bytes = 100\nmax_call_bytes = 250",
                nats.url
            ),
            "events = true",
        ),
        &[],
    );
    let host = Host::start(b.path());
    let refused = |to: &str, text: &str, want: &str, published: usize| {
        let reply = send(&host, &b, "acme", to, text);
        assert_eq!(reply.status, 400, "{to}: {}", reply.text());
        let message = reply.json()["message"].as_str().unwrap().to_string();
        assert!(
            message.contains(&format!("published {published}, then refused: "))
                && message.contains(want),
            "{to}: {message}"
        );
    };
    // Three events a call, then `too-many`; the three reached the sink, the fourth did not.
    refused("tick*10", "1", "TooMany(3)", 3);
    // One event over max_event_bytes.
    refused(
        "big",
        &format!("\"{}\"", "x".repeat(120)),
        "TooLarge(100)",
        0,
    );
    // Three of 90 bytes would pass max_call_bytes: the third is refused.
    refused(
        "mid*3",
        &format!("\"{}\"", "y".repeat(85)),
        "TooLarge(250)",
        2,
    );
    refused("Not A Name", "1", "InvalidName", 0);
    refused("fine", "{not json", "InvalidPayload", 0);
    let mut names = Vec::new();
    while let Ok(e) = acme.recv_timeout(Duration::from_secs(2)) {
        names.push(e["name"].as_str().unwrap().to_string());
    }
    assert_eq!(names, ["tick", "tick", "tick", "mid", "mid"]);
    // The bounds are per call: the next call publishes again.
    let reply = send(&host, &b, "acme", "tick*3", "1");
    assert_eq!(reply.status, 200, "{}", reply.text());
    host.terminate();
}

#[test]
fn a_sink_that_is_down_fails_the_call_as_unavailable() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b = TestBundle::new(
        &bundle(
            &format!("[events]\ntype = \"nats\"\nurl = \"nats://127.0.0.1:{port}\""),
            "events = true",
        ),
        &[],
    );
    let host = Host::start(b.path());
    let reply = send(&host, &b, "acme", "order.shipped", "{}");
    assert_eq!(reply.status, 503, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["code"], "unavailable", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("events sink")),
        "{body}"
    );
    host.terminate();
}

#[test]
fn a_provider_that_imports_events_without_the_grant_is_refused() {
    let b = TestBundle::new(&bundle("", "events = false"), &[]);
    let out = run_host(&["check", b.path().to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("grants.events is false") && stderr.contains("`grants.events = true`"),
        "{stderr}"
    );
    let b = TestBundle::new(&bundle("[events]\ntype = \"kafka\"", "events = true"), &[]);
    let out = run_host(&["check", b.path().to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("events.type: `kafka`"), "{stderr}");
}
