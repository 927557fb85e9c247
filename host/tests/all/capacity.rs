//! The host's capacity is its own condition: past `[host] max_in_flight` calls in flight, a call
//! waits up to its tenant's `queue_timeout_ms` and is then answered `503 host-at-capacity`
//! (retryable, with `Retry-After`), counted, warned about once, and `/readyz` says the host is
//! saturated — never a guest trap blamed on the provider.

use crate::common;

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use common::{Host, TestBundle};
use serde_json::json;

/// An upstream that answers every request 200 after `delay`, each on its own thread.
fn slow_upstream(delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                if common::read_request(&mut stream).is_some() {
                    std::thread::sleep(delay);
                    let body = r#"{"ok":true,"id":"slow-1"}"#;
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            });
        }
    });
    port
}

#[test]
fn past_max_in_flight_calls_wait_then_get_a_retryable_503_and_the_host_says_it_is_saturated() {
    let port = slow_upstream(Duration::from_secs(2));
    let b = TestBundle::new(
        &format!(
            "[providers.hook]\nsource = \"{{components}}/messaging_webhook.wasm\"\nallow_unsigned = true\ngrants = {{ outbound_hosts = [\"http://127.0.0.1:*\"], secrets = [\"WEBHOOK_BEARER_TOKEN\"] }}\n\n[tenants.acme]\nlimits = {{ max_concurrent = 16, queue_timeout_ms = 300, deadline_ms = 10000 }}\nconfig.hook = {{ url = \"http://127.0.0.1:{port}/x\" }}\n\n[[routes]]\ntenant = \"*\"\ncapability = \"send\"\nprovider = \"hook\"\n"
        ),
        &[],
    );
    b.set_host("max_in_flight = 4");
    let host = Host::start(b.path());
    let acme = b.token("acme", None);
    let ready = host.admin("GET", "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(
        ready.json()["capacity"]["max_in_flight"],
        4,
        "{}",
        ready.text()
    );

    let calls: Vec<_> = (0..8)
        .map(|i| host.spawn_send(acme.clone(), json!({"to": "#ops", "text": format!("m{i}")})))
        .collect();
    // While four calls wait on the upstream, the host is saturated.
    std::thread::sleep(Duration::from_millis(800));
    let saturated = host.admin("GET", "/readyz");
    assert_eq!(saturated.status, 503, "{}", saturated.text());
    assert_eq!(
        saturated.json()["capacity"]["saturated"],
        true,
        "{}",
        saturated.text()
    );
    assert_eq!(
        saturated.json()["capacity"]["in_flight"],
        4,
        "{}",
        saturated.text()
    );

    let replies: Vec<_> = calls.into_iter().map(|c| c.join().unwrap().0).collect();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let turned_away: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    assert_eq!(
        ok,
        4,
        "{:?}",
        replies.iter().map(|r| r.text()).collect::<Vec<_>>()
    );
    assert_eq!(turned_away.len(), 4);
    for r in &turned_away {
        let answer = r.json();
        assert_eq!(answer["code"], "host-at-capacity", "{answer}");
        assert_eq!(answer["retryable"], true, "{answer}");
        assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
        assert!(!r.text().contains("trap"), "{answer}");
    }
    let metrics = host.admin("GET", "/metrics").text();
    assert!(
        metrics.contains("greentic_host_at_capacity_total{tenant=\"acme\"} 4"),
        "{metrics}"
    );
    assert!(metrics.contains("greentic_max_in_flight 4"), "{metrics}");
    // The host's own count is its own metric: summing the tenants' series counts each call once.
    assert!(
        metrics.contains("# TYPE greentic_host_calls_in_flight gauge"),
        "{metrics}"
    );
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("greentic_calls_in_flight ")),
        "{metrics}"
    );
    // Warned about once, not once per call.
    let warnings = host
        .output()
        .lines()
        .filter(|l| l.contains("calls are turned away"))
        .count();
    assert_eq!(warnings, 1, "{}", host.output());
    // Free again: ready.
    let ready = host.admin("GET", "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["capacity"]["in_flight"], 0, "{}", ready.text());
}

#[test]
fn more_than_a_thousand_calls_wait_at_once_and_all_are_answered() {
    // Wasmtime's pool gives 1 000 async stacks unless told otherwise: the 1 001st call in
    // flight used to fail as a guest trap. 1 100 calls over 11 tenants, each waiting long
    // enough at the upstream (8 s; the provider gives up at 10) for the last to start before
    // the first is answered.
    const CALLS: usize = 1_100;
    const TENANTS: usize = 11;
    let port = slow_upstream(Duration::from_secs(8));
    let mut toml = String::from(
        "[providers.hook]\nsource = \"{components}/messaging_webhook.wasm\"\nallow_unsigned = true\ngrants = { outbound_hosts = [\"http://127.0.0.1:*\"], secrets = [\"WEBHOOK_BEARER_TOKEN\"] }\n\n[[routes]]\ntenant = \"*\"\ncapability = \"send\"\nprovider = \"hook\"\n",
    );
    for t in 0..TENANTS {
        toml.push_str(&format!(
            "\n[tenants.t{t}]\nlimits = {{ max_concurrent = {}, queue_timeout_ms = 30000, deadline_ms = 60000 }}\nconfig.hook = {{ url = \"http://127.0.0.1:{port}/x\" }}\n",
            CALLS / TENANTS
        ));
    }
    let b = TestBundle::new(&toml, &[]);
    // One connection per call.
    b.set_host("max_connections = 4096");
    let host = Host::start(b.path());
    let ready = host.admin("GET", "/readyz").json();
    assert!(
        ready["capacity"]["max_in_flight"].as_u64().unwrap() >= CALLS as u64,
        "{ready}"
    );
    let tokens: Vec<_> = (0..TENANTS)
        .map(|t| b.token(&format!("t{t}"), None))
        .collect();
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            host.spawn_send(
                tokens[i % TENANTS].clone(),
                json!({"to": "#ops", "text": format!("m{i}")}),
            )
        })
        .collect();
    // More than a thousand of them are in flight at once.
    let mut most = 0;
    while most <= 1_000 && !calls.iter().all(|c| c.is_finished()) {
        let ready = host.admin("GET", "/readyz").json();
        most = most.max(ready["capacity"]["in_flight"].as_u64().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    let replies: Vec<_> = calls.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(most > 1_000, "at most {most} calls were in flight at once");
    let failed: Vec<_> = replies
        .iter()
        .filter(|(r, _)| r.status != 200)
        .map(|(r, _)| format!("{} {}", r.status, r.text()))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {CALLS} failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
}

/// A pool larger than the process's memory mappings can hold (`vm.max_map_count`, 9 per
/// call) is warned about at start, naming the setting and what it holds; one that fits is not.
#[test]
fn a_pool_past_what_the_memory_mappings_hold_is_warned_about() {
    let max_map_count: u64 = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let holds = max_map_count.saturating_sub(4096) / 9;
    let warning = "vm.max_map_count holds the memory mappings of";
    let start = |max_in_flight: u32| {
        let b = TestBundle::new(
            "[providers.noop]\nsource = \"{components}/noop.wasm\"\nallow_unsigned = true\n\n[tenants.acme]\n\n[[routes]]\ntenant = \"*\"\ncapability = \"send\"\nprovider = \"noop\"\n",
            &[],
        );
        b.set_host(&format!("max_in_flight = {max_in_flight}"));
        let host = Host::start(b.path());
        let r = host.send(
            &b.token("acme", None),
            json!({"to": "#ops", "text": "still served"}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        host.settled_output()
    };
    // Past it where the machine keeps Linux's default (65 530: 6 826 calls); within it where
    // the count was raised.
    let out = start(7000);
    let warned = out.contains(warning);
    assert_eq!(
        warned,
        7000 >= holds,
        "max_map_count {max_map_count}: {out}"
    );
    if warned {
        assert!(out.contains(&format!("{holds} calls in flight")), "{out}");
        assert!(out.contains("sysctl -w vm.max_map_count"), "{out}");
    }
    // One that fits any machine: no warning.
    let out = start(64);
    assert!(!out.contains(warning), "{out}");
}
