//! Providers outside the host (`form = "remote"`): a Python sidecar speaking the wire contract
//! (`proto/greentic.proto`) through the real host, reading the call's config, secret and state
//! back through the callback service; its manifest pinned in greentic.lock; mTLS with its
//! identity checked; and a hostile remote of our own — hanging, slow, answering garbage, a
//! huge message, resetting the stream, dying — each a typed error, the breaker opening on a
//! dead one, another tenant unaffected. And one behaviour in three forms — the echo provider as
//! a component, as a native crate and as that crate in a Rust sidecar — compared line by line:
//! answers, error classes, spans, log lines, metrics series, audit records.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Host, TestBundle, Upstream, free_port, repo};
use serde_json::json;

/// The Python sidecar provider (examples/sidecar-python) on a free loopback port.
struct Sidecar {
    child: Child,
    port: u16,
}

impl Sidecar {
    fn start(extra: &[&str], manifest: Option<&Path>) -> Sidecar {
        let python = common::tool_python("GREENTIC_GRPC_PYTHON", "grpc-python-1");
        let port = free_port();
        let mut cmd = Command::new(&python);
        cmd.arg(repo().join("examples/sidecar-python/provider.py"))
            .arg("--proto")
            .arg(repo().join("proto/greentic.proto"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .env("GRPC_VERBOSITY", "ERROR")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(m) = manifest {
            cmd.arg("--manifest").arg(m);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{python}: {e} (scripts/test.sh installs it)"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("listening on"), "the sidecar said: {line}");
        Sidecar { child, port }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn relay_bundle(provider: &str, acme_url: &str, globex_url: &str) -> String {
    format!(
        r#"
[providers.relay]
{provider}
grants = {{ secrets = ["RELAY_TOKEN"], state = true }}

[tenants.acme]
secrets = ["RELAY_TOKEN"]
config.relay = {{ url = "{acme_url}" }}

[tenants.globex]
secrets = ["RELAY_TOKEN"]
config.relay = {{ url = "{globex_url}" }}

[[routes]]
tenant = "*"
capability = "send"
provider = "relay"
"#
    )
}

const TOKENS: &[(&str, &str)] = &[
    ("acme/RELAY_TOKEN", "acme-relay-token"),
    ("globex/RELAY_TOKEN", "globex-relay-token"),
];

fn plaintext(port: u16) -> String {
    format!("form = \"remote\"\nsource = \"grpc://127.0.0.1:{port}\"\nallow_plaintext = true")
}

fn check(b: &TestBundle) -> (bool, String) {
    let out = common::run_host(&["check", b.path().to_str().unwrap()]);
    let (stdout, stderr) = common::text(&out);
    (out.status.success(), format!("{stdout}{stderr}"))
}

#[test]
fn a_python_sidecar_serves_each_tenant_with_its_own_config_secret_and_state() {
    let sidecar = Sidecar::start(&[], None);
    let acme_up = Upstream::start(vec![(200, vec![], r#"{"id":"r-1"}"#.into())]);
    let globex_up = Upstream::start(vec![(200, vec![], r#"{"id":"g-1"}"#.into())]);
    let b = TestBundle::new(
        &relay_bundle(
            &plaintext(sidecar.port),
            &format!("http://{}/relay", acme_up.addr),
            &format!("http://{}/relay", globex_up.addr),
        ),
        TOKENS,
    );
    let host = Host::start(b.path());
    let acme = b.token("acme", None);
    let r = host.send(&acme, json!({"to": "#ops", "text": "deployed"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "r-1");
    let seen = &acme_up.requests()[0];
    assert_eq!(seen.headers["authorization"], "Bearer acme-relay-token");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&seen.body).unwrap(),
        json!({"to": "#ops", "text": "deployed", "thread": null})
    );
    // Another tenant: its own URL and token, never acme's.
    let r = host.send(&b.token("globex", None), json!({"to": "#x", "text": "y"}));
    assert_eq!(r.json()["id"], "g-1", "{}", r.text());
    assert_eq!(
        globex_up.requests()[0].headers["authorization"],
        "Bearer globex-relay-token"
    );
    assert_eq!(acme_up.requests().len(), 1);

    // A keyed delivery is remembered in the host's state (the relay has no idempotency key):
    // repeated, it is answered from there and not sent again.
    let keyed = |key: &str| {
        common::http(
            &host.addr,
            "POST",
            "/v1/invoke/send",
            &[
                ("authorization", &format!("Bearer {acme}")),
                ("content-type", "application/json"),
                ("idempotency-key", key),
            ],
            br##"{"to":"#ops","text":"once"}"##,
        )
    };
    let first = keyed("k-1");
    assert_eq!(first.status, 200, "{}", first.text());
    let again = keyed("k-1");
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(first.json()["id"], again.json()["id"]);
    assert_eq!(acme_up.requests().len(), 2, "the repeat reached the relay");

    // The reads went through the host's own secret path: counted per tenant and provider.
    let metrics = host.admin("GET", "/metrics").text();
    assert!(
        metrics.contains(
            "greentic_secret_reads_total{tenant=\"acme\",provider=\"relay\",result=\"ok\"}"
        ),
        "{metrics}"
    );
    // Its manifest is pinned by digest.
    let lock = std::fs::read_to_string(b.path().join("greentic.lock")).unwrap();
    assert!(
        lock.contains(&format!("grpc://127.0.0.1:{}", sidecar.port)) && lock.contains("sha256:"),
        "{lock}"
    );
    assert!(!host.settled_output().contains("acme-relay-token"));
}

#[test]
fn a_remote_whose_manifest_changed_is_refused_until_the_lock_is_updated() {
    let sidecar = Sidecar::start(&[], None);
    let b = TestBundle::new(
        &relay_bundle(
            &plaintext(sidecar.port),
            "http://127.0.0.1:9/x",
            "http://127.0.0.1:9/y",
        ),
        TOKENS,
    );
    // A first run writes the lock.
    drop(Host::start(b.path()));
    drop(sidecar);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("provider.json");
    let text = std::fs::read_to_string(repo().join("examples/sidecar-python/provider.json"))
        .unwrap()
        .replace("\"1.0.0\"", "\"1.0.1\"");
    std::fs::write(&manifest, text).unwrap();
    let changed = Sidecar::start(&[], Some(&manifest));
    // The bundle and its lock follow the provider to its new port (same provider, same lock
    // entry, a new manifest).
    let old = std::fs::read_to_string(b.path().join("greentic.toml")).unwrap();
    let port_of = |s: &str| {
        s.split("grpc://127.0.0.1:")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    let old_port = port_of(&old);
    for file in ["greentic.toml", "greentic.lock"] {
        let path = b.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap().replace(
            &format!("grpc://127.0.0.1:{old_port}"),
            &format!("grpc://127.0.0.1:{}", changed.port),
        );
        std::fs::write(&path, text).unwrap();
    }
    let (ok, log) = check(&b);
    assert!(!ok, "{log}");
    assert!(
        log.contains("provider `relay`")
            && log.contains("describes a manifest of digest sha256:")
            && log.contains("--update-lock"),
        "{log}"
    );
}

#[test]
fn mtls_holds_the_remote_to_its_identity_and_presents_the_host() {
    use greentic_host::tls::dev_ca::DevCa;
    let pki = tempfile::tempdir().unwrap();
    let ca = DevCa::new("greentic-remote-test-ca").unwrap();
    let (ca_cert, _) = ca.write(pki.path()).unwrap();
    let (cert, key) = ca
        .server(&["spiffe://acme.example/provider/relay", "127.0.0.1"])
        .unwrap()
        .write(pki.path(), "relay")
        .unwrap();
    let sidecar = Sidecar::start(
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--client-ca",
            ca_cert.to_str().unwrap(),
        ],
        None,
    );
    let upstream = Upstream::start(vec![(200, vec![], r#"{"id":"m-1"}"#.into())]);
    let bundle = |identity: &str, client: bool| {
        let b = TestBundle::new(
            &relay_bundle(
                &format!(
                    "form = \"remote\"\nsource = \"grpcs://127.0.0.1:{}\"\nidentity = \"{identity}\"\ntls = {{ ca = \"pki/ca.crt\"{} }}",
                    sidecar.port,
                    if client {
                        ", cert = \"pki/host.crt\", key = \"pki/host.key\""
                    } else {
                        ""
                    }
                ),
                &format!("http://{}/relay", upstream.addr),
                "http://127.0.0.1:9/y",
            ),
            TOKENS,
        );
        let pki_dir = b.path().join("pki");
        std::fs::create_dir_all(&pki_dir).unwrap();
        ca.write(&pki_dir).unwrap();
        ca.client("spiffe://acme.example/host")
            .unwrap()
            .write(&pki_dir, "host")
            .unwrap();
        b
    };
    // Another identity than the certificate's: refused at load, naming both.
    let (ok, log) = check(&bundle("spiffe://acme.example/provider/other", true));
    assert!(!ok, "{log}");
    assert!(
        log.contains("spiffe://acme.example/provider/other")
            && log.contains("uri:spiffe://acme.example/provider/relay"),
        "{log}"
    );
    // Without the host's client certificate the provider refuses the connection.
    let (ok, log) = check(&bundle("spiffe://acme.example/provider/relay", false));
    assert!(
        !ok && (log.contains("cannot reach") || log.contains("unreachable")),
        "{log}"
    );
    // Both right: served.
    let b = bundle("spiffe://acme.example/provider/relay", true);
    let host = Host::start(b.path());
    let r = host.send(&b.token("acme", None), json!({"to": "#ops", "text": "hi"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "m-1");
    // Plaintext to another machine is refused outright.
    let b = TestBundle::new(
        &relay_bundle(
            "form = \"remote\"\nsource = \"grpc://10.1.2.3:50051\"\nallow_plaintext = true",
            "http://127.0.0.1:9/x",
            "http://127.0.0.1:9/y",
        ),
        TOKENS,
    );
    let (ok, log) = check(&b);
    assert!(!ok && log.contains("in clear"), "{log}");
}

// ---------------------------------------------------------------------------------------------
// A hostile remote provider

mod hostile {
    use std::convert::Infallible;
    use std::time::Duration;

    use bytes::Bytes;
    use greentic_host::remote::pb;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use prost::Message;

    /// gRPC's length-prefixed message.
    fn frame(message: &[u8]) -> Bytes {
        let mut out = vec![0u8];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out.into()
    }

    type Body = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>,
    >;

    fn answer(data: Option<Bytes>, status: u32, message: &str) -> hyper::Response<Body> {
        let mut trailers = hyper::HeaderMap::new();
        trailers.insert("grpc-status", status.to_string().parse().unwrap());
        if !message.is_empty() {
            trailers.insert("grpc-message", message.parse().unwrap());
        }
        let mut frames = Vec::new();
        if let Some(d) = data {
            frames.push(Ok(Frame::data(d)));
        }
        frames.push(Ok(Frame::trailers(trailers)));
        hyper::Response::builder()
            .header("content-type", "application/grpc")
            .body(StreamBody::new(futures_util::stream::iter(frames)))
            .unwrap()
    }

    fn ok(id: String) -> hyper::Response<Body> {
        let sent = pb::MessagingSendResponse {
            result: Some(pb::messaging_send_response::Result::Ok(
                pb::MessagingSendResult {
                    id,
                    delivered_at_ms: 1,
                },
            )),
        };
        answer(Some(frame(&sent.encode_to_vec())), 0, "")
    }

    async fn handle(
        req: hyper::Request<hyper::body::Incoming>,
        manifest: String,
    ) -> Result<hyper::Response<Body>, std::io::Error> {
        let path = req.uri().path().to_string();
        let body = req
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        if path.ends_with("/Describe") {
            let d = pb::DescribeResponse {
                manifest_json: manifest,
            };
            return Ok(answer(Some(frame(&d.encode_to_vec())), 0, ""));
        }
        let request = pb::MessagingSendRequest::decode(body.get(5..).unwrap_or_default())
            .map_err(std::io::Error::other)?;
        let to = request.msg.map(|m| m.to).unwrap_or_default();
        Ok(match to.as_str() {
            "hang" => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                ok(to)
            }
            "slow" => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                ok(format!("ok:{to}"))
            }
            "garbage" => answer(Some(frame(&[0xff; 16])), 0, ""),
            "huge" => ok("x".repeat(2 << 20)),
            "status" => answer(None, 13, "it broke"),
            "reset" => return Err(std::io::Error::other("reset")),
            _ => ok(format!("ok:{to}")),
        })
    }

    /// Serves the hostile provider on `listener` until dropped.
    pub async fn serve(listener: tokio::net::TcpListener, manifest: String) {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let manifest = manifest.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(req, manifest.clone()));
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
            });
        }
    }
}

#[test]
fn a_hostile_remote_gets_a_typed_error_for_each_trick_and_the_breaker_opens_when_it_dies() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (listener, port) = common::loopback(&rt);
    let manifest =
        std::fs::read_to_string(repo().join("examples/sidecar-python/provider.json")).unwrap();
    let server = rt.spawn(hostile::serve(listener, manifest));
    let b = TestBundle::new(
        &format!(
            "{}\n[tenants.acme.limits]\ndeadline_ms = 1000\n",
            relay_bundle(
                &plaintext(port),
                "http://127.0.0.1:9/x",
                "http://127.0.0.1:9/y"
            )
        ),
        TOKENS,
    );
    b.set_host("breaker = { failure_threshold = 3, cool_down_ms = 60000 }");
    let host = Host::start(b.path());
    let acme = b.token("acme", None);
    let globex = b.token("globex", None);
    let send = |token: &str, to: &str| host.send(token, json!({"to": to, "text": "x"}));

    let r = send(&acme, "slow");
    assert_eq!((r.status, r.json()["id"].clone()), (200, json!("ok:slow")));
    let started = Instant::now();
    let r = send(&acme, "hang");
    assert_eq!(r.json()["code"], "deadline-exceeded", "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "{:?}",
        started.elapsed()
    );
    for (to, code) in [
        ("garbage", "remote-protocol"),
        ("status", "remote-protocol"),
        ("huge", "result-too-large"),
    ] {
        let r = send(&globex, to);
        assert_eq!(r.json()["code"], code, "{to}: {}", r.text());
        // Every failure leaves the other tenant served.
        let r = send(&acme, "fine");
        assert_eq!(r.status, 200, "after {to}: {}", r.text());
    }
    let r = send(&globex, "reset");
    assert_eq!(r.json()["code"], "remote-unreachable", "{}", r.text());

    // The remote dies: unreachable, then the breaker opens for it.
    server.abort();
    drop(rt);
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(
            send(&acme, "fine").json()["code"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    assert!(codes.iter().any(|c| c == "remote-unreachable"), "{codes:?}");
    assert_eq!(codes.last().unwrap(), "circuit-open", "{codes:?}");
}

/// The Rust sidecar (examples/sidecar-rust) served on a free loopback port, on a runtime of its
/// own: a real gRPC server, as a sidecar process would run it.
fn rust_sidecar() -> (u16, tokio::runtime::Runtime) {
    let rt = common::server_runtime();
    let port = common::serve_provider(
        &rt,
        greentic_sidecar_rust::service("echo").expect("the sidecar links the echo crate"),
    );
    (port, rt)
}

/// What one host told about its calls, with what differs by nature (times, ids, which bundle)
/// taken out: what the three forms of one provider must agree on line by line.
#[derive(Debug)]
struct Told {
    answers: Vec<(u16, serde_json::Value)>,
    /// The provider's own spans (made through its `greentic:telemetry` capability): name,
    /// attributes, status.
    provider_spans: Vec<String>,
    /// The host's span of each call: name, attributes, status.
    host_spans: Vec<String>,
    /// The provider's log lines, as the host writes them.
    logs: Vec<String>,
    metrics: std::collections::BTreeSet<String>,
    audit: Vec<serde_json::Value>,
}

fn span_line(span: &opentelemetry_proto::tonic::trace::v1::Span, skip: &[&str]) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let mut attrs: Vec<String> = span
        .attributes
        .iter()
        .filter(|kv| !skip.contains(&kv.key.as_str()))
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            format!("{}={v}", kv.key)
        })
        .collect();
    attrs.sort();
    let status = span.status.as_ref().map_or(0, |s| s.code);
    format!("{} [{}] status={status}", span.name, attrs.join(", "))
}

/// `value` without the keys in `volatile`, at any depth.
fn strip(value: &mut serde_json::Value, volatile: &[&str]) {
    match value {
        serde_json::Value::Object(o) => {
            o.retain(|k, _| !volatile.contains(&k.as_str()));
            o.values_mut().for_each(|v| strip(v, volatile));
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|v| strip(v, volatile)),
        _ => {}
    }
}

/// The cases every form answers, and what the host told about them.
fn drive(host: Host, b: &TestBundle, otlp: &common::Otlp) -> Told {
    let cases = [
        ("acme", None, json!({"to": "#ops", "text": "hi"})),
        ("acme", Some("eng"), json!({"to": "#ops", "text": "team"})),
        ("globex", None, json!({"to": "@user", "text": "no label"})),
        ("acme", None, json!({"to": "", "text": "empty"})),
        ("acme", None, json!({"to": "#ops"})),
    ];
    let answers = cases
        .iter()
        .map(|(tenant, team, body)| {
            let r = host.send(&b.token(tenant, *team), body.clone());
            let mut j = r.json();
            for volatile in ["delivered_at_ms", "trace_id", "revision"] {
                j.as_object_mut().map(|o| o.remove(volatile));
            }
            (r.status, j)
        })
        .collect();
    let metrics = host
        .admin("GET", "/metrics")
        .text()
        .lines()
        .filter(|l| l.starts_with("greentic_") && !l.starts_with('#'))
        .filter(|l| l.contains("provider=\"echo\""))
        .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
        .filter(|series| !series.contains("_bucket{"))
        .collect();
    let output = host.settled_output();
    assert!(host.terminate().success());
    // Four calls reached the provider (the fifth is refused by the host before it), each with
    // its span; wait until the exporter sent them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while otlp
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.name == "echo.send")
        .count()
        < 4
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let spans = otlp.spans.lock().unwrap().clone();
    let volatile = [
        "greentic.trace_id",
        "greentic.instance.id",
        "greentic.instance.calls",
    ];
    let mut provider_spans: Vec<String> = spans
        .iter()
        .filter(|s| s.name == "echo.send")
        .map(|s| span_line(s, &volatile))
        .collect();
    let mut host_spans: Vec<String> = spans
        .iter()
        .filter(|s| s.name.starts_with("invoke "))
        .map(|s| span_line(s, &volatile))
        .collect();
    provider_spans.sort();
    host_spans.sort();
    let mut logs: Vec<String> = output
        .lines()
        .filter(|l| l.contains("\"target\":\"greentic::guest\""))
        .map(|l| {
            let mut line: serde_json::Value = serde_json::from_str(l).unwrap();
            strip(
                &mut line,
                &[
                    "timestamp",
                    "trace_id",
                    "threadId",
                    "threadName",
                    "span",
                    "spans",
                ],
            );
            line.to_string()
        })
        .collect();
    logs.sort();
    let audit = std::fs::read_to_string(b.path().join("audit/audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| {
            !["audit.opened", "audit.closed", "audit.checkpoint"]
                .contains(&r["kind"].as_str().unwrap())
        })
        .map(|r| json!({"kind": r["kind"], "event": r["event"]}))
        .collect();
    Told {
        answers,
        provider_spans,
        host_spans,
        logs,
        metrics,
        audit,
    }
}

#[test]
fn one_behaviour_in_three_forms_line_by_line() {
    // The echo provider as a component (examples' SDK), and the Rust crate
    // `greentic-native-echo` in the host (native) and beside it (the Rust sidecar, on loopback).
    let (port, _sidecar) = rust_sidecar();
    let forms = [
        (
            "wasm",
            "source = \"{components}/echo.wasm\"\nallow_unsigned = true".to_string(),
        ),
        (
            "native",
            "form = \"native\"\nsource = \"native:echo\"".to_string(),
        ),
        ("remote", plaintext(port)),
    ];
    let told: Vec<(&str, Told)> = forms
        .iter()
        .map(|(form, provider)| {
            let otlp = common::otlp();
            let b = TestBundle::new(
                &format!(
                    "[telemetry]\notlp_endpoint = \"http://{}\"\n\n[audit]\nfile = \"audit/audit.log\"\nkey_file = \"audit.key\"\nhost = \"forms\"\n\n[providers.echo]\n{provider}\n\n[tenants.acme]\nconfig.echo = {{ label = \"blue\" }}\n\n[tenants.globex]\n\n[[routes]]\ntenant = \"*\"\ncapability = \"send\"\nprovider = \"echo\"\n",
                    otlp.addr
                ),
                &[],
            );
            let out = common::run_in(b.path(), &["keygen", "--output-key-prefix", "audit"]);
            assert!(out.status.success(), "{}", common::text(&out).1);
            let host = Host::start_with_env(
                b.path(),
                &[
                    ("OTEL_BSP_SCHEDULE_DELAY", "100"),
                    ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
                    ("GREENTIC_AUDIT_KEY_PASSWORD", "correct horse"),
                ],
            );
            (*form, drive(host, &b, &otlp))
        })
        .collect();
    let (_, wasm) = &told[0];
    // Evidence, so agreement is not agreement on nothing.
    assert_eq!(wasm.answers[0].0, 200, "{:?}", wasm.answers);
    assert!(
        wasm.answers[0].1["id"]
            .as_str()
            .unwrap()
            .ends_with(":#ops:hi@blue"),
        "{:?}",
        wasm.answers
    );
    assert_eq!(wasm.answers[3].1["code"], "invalid-input");
    assert_eq!(wasm.answers[4].1["code"], "bad-request");
    assert_eq!(wasm.provider_spans.len(), 4, "{:#?}", wasm.provider_spans);
    assert!(
        wasm.provider_spans
            .iter()
            .any(|s| s.contains("greentic.tenant=acme") && s.contains("greentic.team=eng")),
        "{:#?}",
        wasm.provider_spans
    );
    assert_eq!(wasm.logs.len(), 3, "{:#?}", wasm.logs);
    assert!(wasm.audit.iter().any(|r| r["kind"] == "provider.resolved"));
    for (form, other) in &told[1..] {
        assert_eq!(
            wasm.answers, other.answers,
            "answers: wasm and {form} differ"
        );
        assert_eq!(
            wasm.provider_spans, other.provider_spans,
            "provider spans: wasm and {form} differ"
        );
        // The host's span says the form; nothing else differs.
        let unform = |spans: &[String], form: &str| -> Vec<String> {
            spans
                .iter()
                .map(|s| {
                    assert!(s.contains(&format!("greentic.provider.form={form}")), "{s}");
                    s.replace(&format!(", greentic.provider.form={form}"), "")
                })
                .collect()
        };
        assert_eq!(
            unform(&wasm.host_spans, "wasm"),
            unform(&other.host_spans, form),
            "host spans: wasm and {form} differ beyond the form"
        );
        assert_eq!(wasm.logs, other.logs, "logs: wasm and {form} differ");
        // Fuel is counted for components only; every other series is the same.
        let no_fuel = |m: &std::collections::BTreeSet<String>| -> Vec<String> {
            m.iter().filter(|s| !s.contains("fuel")).cloned().collect()
        };
        assert_eq!(
            no_fuel(&wasm.metrics),
            no_fuel(&other.metrics),
            "metrics: wasm and {form} differ beyond fuel"
        );
        // Audit: the same records but the artifact's signature (a provider that is no artifact
        // has none), the provider's resolution saying its form.
        let kinds = |a: &[serde_json::Value]| -> Vec<String> {
            a.iter()
                .map(|r| r["kind"].as_str().unwrap().to_string())
                .filter(|k| !k.starts_with("signature."))
                .collect()
        };
        assert_eq!(
            kinds(&wasm.audit),
            kinds(&other.audit),
            "audit kinds: wasm and {form}"
        );
        assert!(
            !other
                .audit
                .iter()
                .any(|r| r["kind"].as_str().unwrap().starts_with("signature.")),
            "{:?}",
            other.audit
        );
        let resolved = other
            .audit
            .iter()
            .find(|r| r["kind"] == "provider.resolved")
            .unwrap();
        assert_eq!(resolved["event"]["form"], *form, "{resolved}");
        assert_eq!(resolved["event"]["provider"], "echo");
    }
}

/// A remote provider that, during its call, reads config (granted), tries state (not granted),
/// and keeps the call's credential so the test can try it again after the call ended.
mod prober {
    use std::sync::{Arc, Mutex};

    use greentic_host::remote::pb::{
        self, host_client::HostClient, messaging_send_response, provider_server::Provider,
    };
    use greentic_host::remote::{CALL_HEADER, CALLBACK_HEADER};
    use tonic::{Request, Response, Status};

    #[derive(Default, Clone)]
    pub struct Seen {
        pub credential: String,
        pub callback: String,
        pub during: Vec<String>,
    }

    pub struct Prober {
        pub manifest: String,
        pub seen: Arc<Mutex<Seen>>,
    }

    fn with_credential<T>(message: T, credential: &str) -> Request<T> {
        let mut r = Request::new(message);
        r.metadata_mut()
            .insert(CALL_HEADER, credential.parse().unwrap());
        r
    }

    #[tonic::async_trait]
    impl Provider for Prober {
        async fn describe(
            &self,
            _: Request<pb::DescribeRequest>,
        ) -> Result<Response<pb::DescribeResponse>, Status> {
            Ok(Response::new(pb::DescribeResponse {
                manifest_json: self.manifest.clone(),
            }))
        }

        async fn messaging_send(
            &self,
            request: Request<pb::MessagingSendRequest>,
        ) -> Result<Response<pb::MessagingSendResponse>, Status> {
            let get = |n: &str| {
                request
                    .metadata()
                    .get(n)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string()
            };
            let (credential, callback) = (get(CALL_HEADER), get(CALLBACK_HEADER));
            let mut host = HostClient::connect(callback.clone()).await.unwrap();
            let mut during = Vec::new();
            match host
                .config_document(with_credential(pb::ConfigDocumentRequest {}, &credential))
                .await
            {
                Ok(r) => during.push(format!("config:{}", r.into_inner().value)),
                Err(s) => during.push(format!("config:{:?}", s.code())),
            }
            match host
                .state_get(with_credential(
                    pb::StateGetRequest { key: "k".into() },
                    &credential,
                ))
                .await
            {
                Ok(_) => during.push("state:ok".into()),
                Err(s) => during.push(format!("state:{:?}", s.code())),
            }
            *self.seen.lock().unwrap() = Seen {
                credential,
                callback,
                during,
            };
            Ok(Response::new(pb::MessagingSendResponse {
                result: Some(messaging_send_response::Result::Ok(
                    pb::MessagingSendResult {
                        id: "probed".into(),
                        delivered_at_ms: 0,
                    },
                )),
            }))
        }

        async fn timer_on_fire(
            &self,
            _: Request<pb::TimerOnFireRequest>,
        ) -> Result<Response<pb::TimerOnFireResponse>, Status> {
            Err(Status::unimplemented("no timer"))
        }

        async fn webhook_handle(
            &self,
            _: Request<pb::WebhookHandleRequest>,
        ) -> Result<Response<pb::WebhookHandleResponse>, Status> {
            Err(Status::unimplemented("no webhook"))
        }
    }

    pub async fn after_the_call(seen: &Seen, credential: &str) -> tonic::Code {
        let mut host = HostClient::connect(seen.callback.clone()).await.unwrap();
        host.config_document(with_credential(pb::ConfigDocumentRequest {}, credential))
            .await
            .map(|_| tonic::Code::Ok)
            .unwrap_or_else(|s| s.code())
    }
}

#[test]
fn a_calls_credential_opens_its_grants_only_and_only_while_it_runs() {
    let rt = common::server_runtime();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(prober::Seen::default()));
    let manifest =
        std::fs::read_to_string(repo().join("examples/native-echo/provider.json")).unwrap();
    let port = common::serve_provider(
        &rt,
        greentic_host::remote::pb::provider_server::ProviderServer::new(prober::Prober {
            manifest,
            seen: seen.clone(),
        }),
    );
    let b = TestBundle::new(
        &format!(
            "[providers.echo]\n{}\n\n[tenants.acme]\nconfig.echo = {{ label = \"acme-only\" }}\n\n[[routes]]\ntenant = \"acme\"\ncapability = \"send\"\nprovider = \"echo\"\n",
            plaintext(port)
        ),
        &[],
    );
    let host = Host::start(b.path());
    let r = host.send(&b.token("acme", None), json!({"to": "#ops", "text": "x"}));
    assert_eq!(r.json()["id"], "probed", "{}", r.text());
    let seen = seen.lock().unwrap().clone();
    // During the call: the tenant's config, and nothing ungranted.
    assert_eq!(
        seen.during,
        ["config:{\"label\":\"acme-only\"}", "state:PermissionDenied"],
        "{seen:?}",
        seen = seen.during
    );
    assert_eq!(seen.credential.len(), 64);
    // After it: the same credential, and a guessed one, are refused.
    for credential in [seen.credential.as_str(), &"0".repeat(64)] {
        assert_eq!(
            rt.block_on(prober::after_the_call(&seen, credential)),
            tonic::Code::PermissionDenied
        );
    }
}

#[test]
fn the_python_sidecar_passes_the_whole_messaging_suite_as_a_component_would() {
    let sidecar = Sidecar::start(&[], None);
    // Every case passes, its spans (made over the callback service) included.
    let report = common::certified_messaging(
        &format!("grpc://127.0.0.1:{}", sidecar.port),
        &repo().join("examples/sidecar-python/conformance.json"),
        &[],
    );
    // What was certified is the manifest the sidecar describes, by digest.
    assert!(report["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(report["provider"], "messaging-relay-py");
}

#[test]
fn a_remote_that_never_answers_its_calls_is_not_certified() {
    // The hostile remote describes a manifest but fails every call: no evidence that it
    // implements the domain, so manifest-truth fails with the rest.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (listener, port) = common::loopback(&rt);
    let manifest =
        std::fs::read_to_string(repo().join("examples/sidecar-python/provider.json")).unwrap();
    rt.spawn(hostile::serve(listener, manifest));
    // Every call it gets is answered with an error status that is no provider error.
    let profile = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        profile.path(),
        r#"{"config": {"url": "{{upstream}}/x"}, "message": {"to": "status", "text": "x"}, "idempotency": "state"}"#,
    )
    .unwrap();
    let report = tempfile::NamedTempFile::new().unwrap();
    let out = common::run_host(&[
        "conformance",
        &format!("grpc://127.0.0.1:{port}"),
        "--profile",
        profile.path().to_str().unwrap(),
        "--json",
        report.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.path()).unwrap()).unwrap();
    let imports = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "manifest-truth.imports")
        .unwrap()
        .clone();
    assert_eq!(imports["passed"], false, "{imports}");
}

/// A timer provider outside the host: records every slot the host fires at it.
mod ticker {
    use std::sync::{Arc, Mutex};

    use greentic_host::remote::pb::{self, provider_server::Provider, timer_on_fire_response};
    use tonic::{Request, Response, Status};

    pub const MANIFEST: &str = r#"{"name":"ticker","version":"1.0.0","domain":"timer","capabilities":["tick"],"compat":{"wit":"greentic:timer/scheduled@1.0.x"}}"#;

    pub struct Ticker {
        pub fired: Arc<Mutex<Vec<(String, String, String)>>>,
    }

    #[tonic::async_trait]
    impl Provider for Ticker {
        async fn describe(
            &self,
            _: Request<pb::DescribeRequest>,
        ) -> Result<Response<pb::DescribeResponse>, Status> {
            Ok(Response::new(pb::DescribeResponse {
                manifest_json: MANIFEST.into(),
            }))
        }

        async fn messaging_send(
            &self,
            _: Request<pb::MessagingSendRequest>,
        ) -> Result<Response<pb::MessagingSendResponse>, Status> {
            Err(Status::unimplemented("a timer provider sends nothing"))
        }

        async fn webhook_handle(
            &self,
            _: Request<pb::WebhookHandleRequest>,
        ) -> Result<Response<pb::WebhookHandleResponse>, Status> {
            Err(Status::unimplemented("a timer provider has no webhook"))
        }

        async fn timer_on_fire(
            &self,
            request: Request<pb::TimerOnFireRequest>,
        ) -> Result<Response<pb::TimerOnFireResponse>, Status> {
            let r = request.into_inner();
            let (ctx, info) = (r.ctx.unwrap_or_default(), r.info.unwrap_or_default());
            self.fired
                .lock()
                .unwrap()
                .push((ctx.tenant, info.schedule, info.payload));
            Ok(Response::new(pb::TimerOnFireResponse {
                result: Some(timer_on_fire_response::Result::Ok(pb::Unit {})),
            }))
        }
    }
}

#[test]
fn a_remote_timer_provider_gets_each_tenants_slots() {
    let rt = common::server_runtime();
    let fired = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let port = common::serve_provider(
        &rt,
        greentic_host::remote::pb::provider_server::ProviderServer::new(ticker::Ticker {
            fired: fired.clone(),
        }),
    );
    let b = TestBundle::new(
        &format!(
            "[providers.ticker]\n{}\n\n[tenants.acme]\n\n[tenants.globex]\n\n[[schedules]]\nname = \"acme-tick\"\ntenant = \"acme\"\nprovider = \"ticker\"\nevery = \"1s\"\npayload = {{ n = 1 }}\n\n[[schedules]]\nname = \"globex-tick\"\ntenant = \"globex\"\nprovider = \"ticker\"\nevery = \"1s\"\n",
            plaintext(port)
        ),
        &[],
    );
    let _host = Host::start(b.path());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = fired.lock().unwrap().clone();
        let tenants: std::collections::BTreeSet<&str> =
            seen.iter().map(|(t, _, _)| t.as_str()).collect();
        if tenants.len() == 2 {
            // Each slot carries its tenant's own schedule (and payload), never the other's.
            for (tenant, schedule, payload) in &seen {
                assert_eq!(schedule, &format!("{tenant}-tick"));
                if tenant == "acme" {
                    assert!(payload.contains("\"n\":1"), "{payload}");
                }
            }
            break;
        }
        assert!(Instant::now() < deadline, "fired: {seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
