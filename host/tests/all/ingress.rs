//! What reaches the host from the network, against the real host: connections that never send
//! a request (HTTP/1, HTTP/2, or neither) and the connection cap; a flood of unauthenticated
//! webhook deliveries beside the same tenant's calls; a circuit breaker whose probe is
//! abandoned; answers that must not tell which tenants exist; and the admin listener.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Host, TestBundle};
use serde_json::json;

/// Puts `settings` at the top of the bundle's `[host]` section.
fn with_host_settings(b: &TestBundle, settings: &str) {
    let path = b.path().join("greentic.toml");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[host]\n",
        &format!("[host]\n{settings}\n"),
        1,
    );
    std::fs::write(&path, text).unwrap();
}

const ECHO: &str = r#"
[providers.echo]
source = "{components}/echo.wasm"
allow_unsigned = true

[providers.slow]
source = "{components}/slow_refuser.wasm"
allow_unsigned = true

[tenants.acme]
limits = { max_concurrent = 2, webhook_max_concurrent = 2, queue_timeout_ms = 200 }

[tenants.globex]

[[routes]]
tenant = "*"
capability = "send"
provider = "echo"

[[routes]]
tenant = "acme"
capability = "receive"
provider = "slow"
"#;

/// Waits until the server closes `s` (a read returns 0 or fails); how long that took.
fn closed_within(mut s: TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return None,
            Err(_) => return Some(started.elapsed()),
        }
    }
}

#[test]
fn connections_without_a_request_are_closed_and_the_cap_keeps_others_served() {
    let b = TestBundle::new(ECHO, &[]);
    with_host_settings(
        &b,
        "header_timeout_ms = 1000\nidle_timeout_ms = 1500\nmax_connections = 6",
    );
    let host = Host::start(b.path());
    let token = b.token("globex", None);
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let settings_frame = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        ("a silent socket", vec![]),
        ("another silent socket", vec![]),
        ("23 bytes of the HTTP/2 preface", preface[..23].to_vec()),
        ("the HTTP/2 preface and SETTINGS, no request", {
            let mut v = preface.to_vec();
            v.extend_from_slice(&settings_frame);
            v
        }),
        (
            "HTTP/1 headers never finished",
            b"POST /v1/invoke/send HTTP/1.1\r\nhost: x\r\n".to_vec(),
        ),
        (
            "bytes that are no protocol",
            b"\x16\x03\x01\x02\x00".to_vec(),
        ),
    ];
    let opened = Instant::now();
    let sockets: Vec<(&str, TcpStream)> = attacks
        .into_iter()
        .map(|(what, bytes)| {
            let mut s = TcpStream::connect(&host.addr).unwrap();
            s.write_all(&bytes).unwrap();
            (what, s)
        })
        .collect();
    // At the cap (six connections, none with a request): others are still served.
    for _ in 0..10 {
        let r = host.send(&token, json!({"to": "#ops", "text": "at the cap"}));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Every connection that sent no request is closed within the header timeout (evicted
    // earlier, some of them, to make room), whatever protocol it started.
    for (what, s) in sockets {
        let closed = closed_within(s, Duration::from_secs(8));
        assert!(closed.is_some(), "{what}: still open after 8 s");
        let after = opened.elapsed();
        assert!(
            after < Duration::from_secs(5),
            "{what}: closed only after {after:?}"
        );
    }

    // A connection that served a request and then went quiet is closed after the idle
    // timeout, not kept forever.
    let mut s = TcpStream::connect(&host.addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let closed = closed_within(s, Duration::from_secs(8));
    assert!(
        closed.is_some(),
        "an idle keep-alive connection stayed open"
    );
}

#[test]
pub(crate) fn a_flood_of_unsigned_deliveries_leaves_the_tenants_calls_served() {
    let b = TestBundle::new(ECHO, &[]);
    let host = Arc::new(Host::start(b.path()));
    let token = b.token("acme", None);
    // Forty clients deliver unsigned 200 KiB payloads to acme's slow-to-refuse provider (250 ms
    // each) as fast as they can, for as long as acme's calls are being made.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(std::collections::BTreeMap::<u16, usize>::new()));
    let flood: Vec<_> = (0..40)
        .map(|_| {
            let (host, stop, answers) = (host.clone(), stop.clone(), answers.clone());
            std::thread::spawn(move || {
                let body = vec![b'{'; 200 << 10];
                while !stop.load(Ordering::Relaxed) {
                    let r = host.request("POST", "/webhooks/acme/slow/", &[], &body);
                    *answers.lock().unwrap().entry(r.status).or_default() += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // acme's invokes (two slots, 200 ms of queue) keep getting through: deliveries have their
    // own admission, per tenant and provider.
    for i in 0..30 {
        let r = host.send(&token, json!({"to": "#ops", "text": format!("call {i}")}));
        assert_eq!(r.status, 200, "call {i} during the flood: {}", r.text());
    }
    stop.store(true, Ordering::Relaxed);
    for t in flood {
        t.join().unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    // The flood met its own limit (429), and the provider refused what it saw (401).
    assert!(answers.get(&401).copied().unwrap_or(0) > 0, "{answers:?}");
    assert!(answers.get(&429).copied().unwrap_or(0) > 0, "{answers:?}");
    assert!(
        answers.keys().all(|s| [401, 413, 429].contains(s)),
        "{answers:?}"
    );
}

/// An upstream that answers its first connection 503, holds the second without answering,
/// and answers every later one 200; counts connections.
struct Staged {
    addr: String,
    connections: Arc<AtomicUsize>,
}

impl Staged {
    fn start() -> Staged {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let _ = common::read_request(&mut stream);
                let answer: &[u8] = match n {
                    0 => b"HTTP/1.1 503 X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    1 => {
                        held.push(stream);
                        continue;
                    }
                    _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                };
                let _ = stream.write_all(answer);
            }
        });
        Staged { addr, connections }
    }
}

#[test]
fn an_abandoned_probe_does_not_keep_the_circuit_open() {
    let upstream = Staged::start();
    let b = TestBundle::new(
        &format!(
            r#"
[host.breaker]
failure_threshold = 1
cool_down_ms = 200

[providers.hook]
source = "{{components}}/messaging_webhook.wasm"
allow_unsigned = true
grants = {{ outbound_hosts = ["http://127.0.0.1:*"], secrets = ["WEBHOOK_BEARER_TOKEN"] }}

[tenants.acme]
limits = {{ deadline_ms = 10000 }}
config.hook = {{ url = "http://{}/hook", timeout_ms = 8000 }}

[[routes]]
tenant = "acme"
capability = "send"
provider = "hook"
"#,
            upstream.addr
        ),
        &[],
    );
    let host = Host::start(b.path());
    let token = b.token("acme", None);
    let body = json!({"to": "#ops", "text": "x"}).to_string();

    // One failure opens the circuit.
    let r = host.send(&token, json!({"to": "#ops", "text": "x"}));
    assert_eq!(r.json()["code"], "unavailable", "{}", r.text());
    std::thread::sleep(Duration::from_millis(300));

    // The probe: its upstream never answers, and its client goes away while it waits.
    let mut probe = TcpStream::connect(&host.addr).unwrap();
    probe
        .write_all(
            format!(
                "POST /v1/invoke/send HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.connections.load(Ordering::SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "the probe never reached the upstream"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(probe);
    std::thread::sleep(Duration::from_millis(400));

    // The abandoned probe gave its turn back: the next call probes, reaches the upstream and
    // closes the circuit.
    let r = host.send(&token, json!({"to": "#ops", "text": "x"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = host.send(&token, json!({"to": "#ops", "text": "x"}));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn webhook_answers_do_not_tell_which_tenants_exist() {
    let b = TestBundle::new(ECHO, &[]);
    let host = Host::start(b.path());
    let ask = |path: &str| {
        let r = host.request("POST", path, &[], b"{}");
        (r.status, r.text())
    };
    let unknown_tenant = ask("/webhooks/initech/slow/");
    let unrouted = ask("/webhooks/globex/slow/");
    let not_a_webhook = ask("/webhooks/globex/echo/");
    assert_eq!(unknown_tenant.0, 404, "{}", unknown_tenant.1);
    assert_eq!(unknown_tenant, unrouted);
    assert_eq!(
        ask("/webhooks/initech/echo/"),
        not_a_webhook,
        "an unknown tenant and a known one get the same answer"
    );
}

#[test]
fn readiness_and_metrics_are_served_on_the_admin_listener_only() {
    let b = TestBundle::new(ECHO, &[]);
    let host = Host::start(b.path());
    for path in ["/metrics", "/readyz"] {
        assert_eq!(host.request("GET", path, &[], b"").status, 404, "{path}");
        assert_eq!(host.admin("GET", path).status, 200, "{path}");
    }
    assert_eq!(host.request("GET", "/healthz", &[], b"").status, 200);
    assert_eq!(host.admin("GET", "/healthz").status, 200);
    let ready = host.admin("GET", "/readyz").json();
    assert_eq!(ready["ready"], true, "{ready}");
}
