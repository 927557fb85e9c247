//! Spans reach a real OTLP/HTTP receiver on loopback (protobuf decoded with the OpenTelemetry
//! protocol types) carrying the host-stamped tenant attributes; an unreachable collector does
//! not slow calls down.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Host, TestBundle, run_host, text};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;

const BUNDLE: &str = r#"

[telemetry]
otlp_endpoint = "ENDPOINT"
service_name = "greentic-test-host"

[providers.echo]
source = "{components}/echo.wasm"
allow_unsigned = true

[tenants.acme]

[[routes]]
tenant = "acme"
capability = "send"
provider = "echo"
"#;

/// An OTLP/HTTP trace receiver: decodes every export request and keeps the spans.
fn receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let otlp = common::otlp();
    (otlp.addr, otlp.spans)
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match &kv.value.as_ref()?.value {
            Some(Value::StringValue(s)) => Some(s.clone()),
            Some(Value::BoolValue(b)) => Some(b.to_string()),
            _ => None,
        })
}

#[test]
fn spans_carry_tenant_attributes_and_reach_the_collector() {
    let (addr, spans) = receiver();
    let b = TestBundle::new(&BUNDLE.replace("ENDPOINT", &format!("http://{addr}")), &[]);
    let host = Host::start_with_env(b.path(), &[("OTEL_BSP_SCHEDULE_DELAY", "100")]);
    let out = run_host(&[
        "token",
        "--bundle",
        b.path().to_str().unwrap(),
        "--tenant",
        "acme",
        "--team",
        "ops",
        "--user",
        "alice",
    ]);
    let token = text(&out).0.trim().to_string();
    let r = host.send(&token, json!({"to": "#ops", "text": "traced"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let trace_id = r.json()["trace_id"].as_str().unwrap().to_string();
    let r = host.send(&token, json!({"to": "", "text": "fails"}));
    assert_eq!(r.json()["code"], "invalid-input", "{}", r.text());

    let deadline = Instant::now() + Duration::from_secs(20);
    let (host_span, guest_span, failed) = loop {
        let got = spans.lock().unwrap().clone();
        let find = |pred: &dyn Fn(&Span) -> bool| got.iter().find(|s| pred(s)).cloned();
        let host_span = find(&|s| s.name == "invoke send" && hex(&s.trace_id) == trace_id);
        let guest_span = find(&|s| s.name == "echo.send" && hex(&s.trace_id) == trace_id);
        let failed = find(&|s| {
            s.name == "invoke send"
                && attr(s, "greentic.error.code").as_deref() == Some("invalid-input")
        });
        if let (Some(h), Some(g), Some(f)) = (&host_span, &guest_span, &failed) {
            break (h.clone(), g.clone(), f.clone());
        }
        assert!(
            Instant::now() < deadline,
            "spans did not arrive: {:?}",
            got.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for span in [&host_span, &guest_span] {
        assert_eq!(
            attr(span, "greentic.tenant").as_deref(),
            Some("acme"),
            "{}",
            span.name
        );
        assert_eq!(
            attr(span, "greentic.team").as_deref(),
            Some("ops"),
            "{}",
            span.name
        );
        assert_eq!(
            attr(span, "greentic.user").as_deref(),
            Some("alice"),
            "{}",
            span.name
        );
        assert_eq!(
            attr(span, "greentic.provider").as_deref(),
            Some("echo"),
            "{}",
            span.name
        );
        assert_eq!(
            attr(span, "greentic.capability").as_deref(),
            Some("send"),
            "{}",
            span.name
        );
    }
    // The guest's span is a child of the host's span for the call, with its own attribute.
    assert_eq!(guest_span.parent_span_id, host_span.span_id);
    assert_eq!(attr(&guest_span, "to").as_deref(), Some("#ops"));
    // Errors set the span status.
    let status = failed.status.unwrap();
    assert_eq!(status.code, 2, "STATUS_CODE_ERROR");
}

/// What a receiver keeps, shared with the test.
type Kept<T> = Arc<Mutex<Vec<T>>>;

/// An OTLP/HTTP trace receiver over TLS that requires a client certificate from `pki`'s CA
/// (the collector's pair is `pki/collector.*`): keeps the spans and the DNS names of the client
/// certificates they came with.
fn tls_receiver(pki: &std::path::Path) -> (String, Kept<Span>, Kept<String>) {
    use greentic_host::tls::{ClientAuth, MinVersion, PeerIdentity, ServerTls, TlsFiles};
    let tls = ServerTls::load(TlsFiles {
        cert: pki.join("collector.crt"),
        key: pki.join("collector.key"),
        client_ca: Some(pki.join("ca.crt")),
        client_auth: ClientAuth::Required,
        min_version: MinVersion::Tls13,
    })
    .unwrap();
    let config = tls.config();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (spans, clients) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let (sink, seen) = (spans.clone(), clients.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut session = rustls::StreamOwned::new(conn, stream);
            let Some(req) = common::read_request_from(&mut session) else {
                continue;
            };
            if let Some(peer) = session
                .conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(PeerIdentity::from_der)
            {
                seen.lock().unwrap().extend(peer.dns_names);
            }
            if req.path == "/v1/traces" {
                let export = ExportTraceServiceRequest::decode(req.body.as_slice()).unwrap();
                for rs in export.resource_spans {
                    for ss in rs.scope_spans {
                        sink.lock().unwrap().extend(ss.spans);
                    }
                }
            }
            let _ = session.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            session.conn.send_close_notify();
            let _ = session.flush();
        }
    });
    (addr, spans, clients)
}

#[test]
fn spans_reach_a_collector_of_a_private_pki_over_mtls() {
    use greentic_host::tls::dev_ca::DevCa;
    let pki = tempfile::tempdir().unwrap();
    let ca = DevCa::new("telemetry").unwrap();
    ca.write(pki.path()).unwrap();
    ca.server(&["127.0.0.1"])
        .unwrap()
        .write(pki.path(), "collector")
        .unwrap();
    ca.client("host-a.greentic.example")
        .unwrap()
        .write(pki.path(), "host")
        .unwrap();
    let (addr, spans, clients) = tls_receiver(pki.path());
    let toml = BUNDLE.replace("ENDPOINT", &format!("https://{addr}")).replace(
        "service_name = \"greentic-test-host\"",
        "service_name = \"greentic-test-host\"\ntls = { ca = \"pki/ca.crt\", cert = \"pki/host.crt\", key = \"pki/host.key\" }",
    );
    let b = TestBundle::new(&toml, &[]);
    std::fs::create_dir_all(b.path().join("pki")).unwrap();
    for file in ["ca.crt", "host.crt", "host.key"] {
        std::fs::copy(pki.path().join(file), b.path().join("pki").join(file)).unwrap();
    }
    let host = Host::start_with_env(b.path(), &[("OTEL_BSP_SCHEDULE_DELAY", "100")]);
    let token = b.token("acme", None);
    let r = host.send(&token, json!({"to": "#ops", "text": "traced"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let trace_id = r.json()["trace_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !spans
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.name == "invoke send" && hex(&s.trace_id) == trace_id)
    {
        assert!(
            Instant::now() < deadline,
            "no span reached the collector over mTLS; host output:\n{}",
            host.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every export came with the host's client certificate.
    let seen = clients.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|d| d == "host-a.greentic.example"),
        "{seen:?}"
    );

    // `check` reads the same files: a missing key is named before anything runs.
    std::fs::remove_file(b.path().join("pki/host.key")).unwrap();
    let out = common::run_in(b.path(), &["check", "."]);
    assert!(!out.status.success());
    let (_, err) = text(&out);
    assert!(
        err.contains("[telemetry].tls") && err.contains("host.key"),
        "{err}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn an_unreachable_collector_does_not_slow_calls() {
    // Reserve a port and close it: nothing listens there.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let b = TestBundle::new(&BUNDLE.replace("ENDPOINT", &format!("http://{dead}")), &[]);
    let host = Host::start_with_env(b.path(), &[("OTEL_BSP_SCHEDULE_DELAY", "50")]);
    let token = b.token("acme", None);
    for _ in 0..10 {
        let started = Instant::now();
        let r = host.send(&token, json!({"to": "#ops", "text": "x"}));
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a call waited on telemetry export"
        );
    }
}
