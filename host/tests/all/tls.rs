//! The host's listeners over TLS and mTLS: the real `greentic-host run` binary, certificates
//! from `greentic-host dev-ca`, real handshakes on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Host, Reply, TestBundle};
use greentic_host::tls::dev_ca::DevCa;
use greentic_host::tls::{ClientFiles, client_config};
use serde_json::json;

const BUNDLE: &str = r#"
[host.tls]
cert = "tls/server.crt"
key = "tls/server.key"
client_ca = "tls/ca.crt"
client_auth = "optional"

[[auth.certificates]]
uri = "spiffe://acme.example/team/billing"
tenant = "acme"
team = "billing"

[[auth.certificates]]
dns = "worker.globex.example"
tenant = "globex"
user = "worker"

[providers.echo]
source = "{components}/echo.wasm"
allow_unsigned = true

[tenants.acme]

[tenants.globex]
caller_auth = "both"

[[routes]]
tenant = "*"
capability = "send"
provider = "echo"
"#;

/// Writes a dev CA, the server pair and the clients `billing` (acme) and `worker` (globex)
/// into `BUNDLE/tls` with `greentic-host dev-ca`.
fn dev_ca(bundle: &Path) {
    let out = common::run_host(&[
        "dev-ca",
        "--out",
        bundle.join("tls").to_str().unwrap(),
        "--client",
        "billing=spiffe://acme.example/team/billing",
        "--client",
        "worker=worker.globex.example",
        "--client",
        "stranger=spiffe://elsewhere.example/x",
    ]);
    assert!(out.status.success(), "dev-ca: {}", common::text(&out).1);
}

/// A client trusting the bundle's dev CA, presenting client `name`'s pair if given.
fn client(bundle: &Path, name: Option<&str>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let tls = bundle.join("tls");
    client_config(
        &ClientFiles {
            ca: Some(tls.join("ca.crt")),
            cert: name.map(|n| tls.join(format!("{n}.crt"))),
            key: name.map(|n| tls.join(format!("{n}.key"))),
        },
        alpn,
    )
    .unwrap()
}

/// One HTTP/1.1 request over TLS (a new connection, closed after the answer).
fn https(
    addr: &str,
    config: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn =
        rustls::ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes())?;
    tls.write_all(body)?;
    tls.flush()?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // A server that closes without close_notify after a whole answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the connection closed before a response",
        ));
    }
    Ok(common::parse_response(&raw))
}

fn send(
    host: &Host,
    config: &Arc<rustls::ClientConfig>,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> Reply {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b));
    }
    headers.extend_from_slice(extra);
    https(
        &host.addr,
        config,
        "POST",
        "/v1/invoke/send",
        &headers,
        json!({"to": "#ops", "text": "hi"}).to_string().as_bytes(),
    )
    .unwrap()
}

/// The value of the series `series` (name and labels, as printed) on `/metrics`.
fn metric(host: &Host, series: &str) -> f64 {
    host.admin("GET", "/metrics")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn client_certificates_authenticate_callers_with_the_same_rules_as_tokens() {
    let bundle = TestBundle::new(BUNDLE, &[]);
    dev_ca(bundle.path());
    let host = Host::start(bundle.path());
    let billing = client(bundle.path(), Some("billing"), &[b"http/1.1"]);
    let worker = client(bundle.path(), Some("worker"), &[b"http/1.1"]);
    let anonymous = client(bundle.path(), None, &[b"http/1.1"]);

    // acme's certificate alone is acme, team billing.
    let r = send(&host, &billing, None, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "acme/billing/-:#ops:hi");
    // acme's token alone, without a certificate, is acme too (caller_auth = "either").
    let acme_token = bundle.token("acme", None);
    let r = send(&host, &anonymous, Some(&acme_token), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "acme/-/-:#ops:hi");
    // Token and certificate together, agreeing: the token's team where it says none, the
    // certificate's.
    let r = send(&host, &billing, Some(&acme_token), &[]);
    assert_eq!(r.json()["id"], "acme/billing/-:#ops:hi", "{}", r.text());

    // globex's certificate cannot invoke as acme: not with a header claiming acme …
    let globex_token = bundle.token("globex", None);
    let r = send(
        &host,
        &worker,
        Some(&globex_token),
        &[("x-greentic-tenant", "acme")],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["code"], "tenant-mismatch");
    // … nor with acme's token beside it.
    let r = send(&host, &worker, Some(&acme_token), &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["code"], "credential-mismatch");
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("`acme`") && message.contains("`globex`"),
        "{message}"
    );

    // globex requires both (caller_auth = "both").
    let r = send(&host, &worker, None, &[]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("bearer token"), "{}", r.text());
    let r = send(&host, &anonymous, Some(&globex_token), &[]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("client certificate"), "{}", r.text());
    let r = send(&host, &worker, Some(&globex_token), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "globex/-/worker:#ops:hi");

    // A certificate from the CA that no entry lists names no caller.
    let stranger = client(bundle.path(), Some("stranger"), &[b"http/1.1"]);
    let r = send(&host, &stranger, None, &[]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.text().contains("spiffe://elsewhere.example/x"),
        "{}",
        r.text()
    );
    // Neither credential.
    let r = send(&host, &anonymous, None, &[]);
    assert_eq!(r.status, 401);

    // A certificate from another CA does not get through the handshake.
    let other = DevCa::new("other").unwrap();
    let pair = other.client("spiffe://acme.example/team/billing").unwrap();
    pair.write(&bundle.path().join("tls"), "forged").unwrap();
    let forged = client(bundle.path(), Some("forged"), &[b"http/1.1"]);
    let before = metric(
        &host,
        "greentic_tls_handshake_failures_total{listener=\"public\",reason=\"client-certificate\"}",
    );
    let err = https(&host.addr, &forged, "POST", "/v1/invoke/send", &[], b"{}").unwrap_err();
    assert!(!err.to_string().is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(
        &host,
        "greentic_tls_handshake_failures_total{listener=\"public\",reason=\"client-certificate\"}",
    ) <= before
    {
        assert!(
            Instant::now() < deadline,
            "the refused handshake was not counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Plain HTTP to the TLS listener gets no answer.
    assert!(common::try_http(&host.addr, "GET", "/healthz", &[], b"").is_err());
}

#[test]
fn h2_and_http1_both_serve_over_tls() {
    let bundle = TestBundle::new(BUNDLE, &[]);
    dev_ca(bundle.path());
    let host = Host::start(bundle.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (alpn, version) in [
        (b"h2".as_slice(), hyper::Version::HTTP_2),
        (b"http/1.1".as_slice(), hyper::Version::HTTP_11),
    ] {
        let config = client(bundle.path(), Some("billing"), &[alpn]);
        let addr = host.addr.clone();
        let (status, seen, body) = runtime.block_on(async move {
            use http_body_util::BodyExt;
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .unwrap();
            let io = hyper_util::rt::TokioIo::new(tls);
            let request = hyper::Request::post("https://localhost/v1/invoke/send")
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    json!({"to": "#ops", "text": "hi"}).to_string(),
                )))
                .unwrap();
            let response = if version == hyper::Version::HTTP_2 {
                let (mut sender, conn) =
                    hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                        .await
                        .unwrap();
                tokio::spawn(conn);
                sender.send_request(request).await.unwrap()
            } else {
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(conn);
                sender.send_request(request).await.unwrap()
            };
            let (status, seen) = (response.status().as_u16(), response.version());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, seen, body)
        });
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(seen, version);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], "acme/billing/-:#ops:hi");
    }
}

#[test]
fn certificates_rotate_under_load_without_a_failed_call() {
    let bundle = TestBundle::new(BUNDLE, &[]);
    // The CA stays at hand to sign each new server pair, as cert-manager's issuer would.
    let tls = bundle.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let ca = DevCa::new("rotation").unwrap();
    ca.write(&tls).unwrap();
    ca.server(&["localhost", "127.0.0.1"])
        .unwrap()
        .write(&tls, "server")
        .unwrap();
    ca.client("spiffe://acme.example/team/billing")
        .unwrap()
        .write(&tls, "billing")
        .unwrap();
    let host = Host::start(bundle.path());
    let billing = client(bundle.path(), Some("billing"), &[b"http/1.1"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (addr, config, stop, ok, failed, errors) = (
            host.addr.clone(),
            billing.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            errors.clone(),
        );
        workers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"to": "#ops", "text": "hi"}).to_string();
                match https(
                    &addr,
                    &config,
                    "POST",
                    "/v1/invoke/send",
                    &[],
                    body.as_bytes(),
                ) {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => {
                        errors
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", r.status, r.text()));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        errors.lock().unwrap().push(e.to_string());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    // Each new pair: the key is written first, then the certificate (between the two the pair
    // does not match and is refused), each by rename.
    let replaced = "greentic_tls_reloads_total{listener=\"public\",result=\"replaced\"}";
    let refused = "greentic_tls_reloads_total{listener=\"public\",result=\"refused\"}";
    let mut served = Vec::new();
    let rotations = 3;
    for round in 0..rotations {
        let pair = ca.server(&["localhost", "127.0.0.1"]).unwrap();
        let (part_cert, part_key) = (tls.join("server.crt.part"), tls.join("server.key.part"));
        std::fs::write(&part_key, &pair.key_pem).unwrap();
        std::fs::rename(&part_key, tls.join("server.key")).unwrap();
        if round == 0 {
            // The first time, the host looks at the half-written pair (it refuses it) before
            // the certificate follows; the others follow sooner than the host looks.
            let deadline = Instant::now() + Duration::from_secs(20);
            while metric(&host, refused) < 1.0 {
                assert!(
                    Instant::now() < deadline,
                    "the half-written pair was not refused"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        } else {
            std::thread::sleep(Duration::from_millis(300));
        }
        std::fs::write(&part_cert, &pair.cert_pem).unwrap();
        std::fs::rename(&part_cert, tls.join("server.crt")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while metric(&host, replaced) < f64::from(round + 1) {
            assert!(Instant::now() < deadline, "rotation {round} was not taken");
            std::thread::sleep(Duration::from_millis(50));
        }
        served.push(pair.cert_pem);
    }
    // Give the load a moment on the last pair, then stop it.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "calls failed during rotation: {:?}",
        errors.lock().unwrap().iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        ok.load(Ordering::Relaxed) > 20,
        "too little load to mean anything"
    );
    // The new connections now get the last certificate.
    let last = served.last().unwrap();
    let seen = server_certificate(&host.addr, &billing);
    use rustls::pki_types::pem::PemObject;
    let expected = rustls::pki_types::CertificateDer::from_pem_slice(last.as_bytes()).unwrap();
    assert_eq!(seen, expected.to_vec());
    let log = host.output();
    assert!(log.contains("new TLS files refused"), "{log}");
    assert!(log.contains("TLS certificate reloaded"), "{log}");
}

/// The end-entity certificate `addr` shows a new connection.
fn server_certificate(addr: &str, config: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let tcp = TcpStream::connect(addr).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
    let mut tcp = tcp;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    conn.peer_certificates().unwrap()[0].to_vec()
}

#[test]
fn a_silent_tls_client_is_closed_within_the_header_timeout() {
    let bundle = TestBundle::new(BUNDLE, &[]);
    dev_ca(bundle.path());
    bundle.set_host("header_timeout_ms = 1000");
    let host = Host::start(bundle.path());
    // Silent, and half a ClientHello.
    for bytes in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]] {
        let mut tcp = TcpStream::connect(&host.addr).unwrap();
        tcp.write_all(bytes).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 64];
        // The host closes it (EOF, or a reset): nothing more is read, within the timeout.
        let _ = tcp.read(&mut buf);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "a silent TLS client was held {took:?}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(
        &host,
        "greentic_tls_handshake_failures_total{listener=\"public\",reason=\"timeout\"}",
    ) < 2.0
    {
        assert!(Instant::now() < deadline, "the timeouts were not counted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_admin_listener_can_require_client_certificates() {
    let bundle = TestBundle::new(
        &format!(
            "{BUNDLE}\n[host.admin_tls]\ncert = \"tls/server.crt\"\nkey = \"tls/server.key\"\nclient_ca = \"tls/ca.crt\"\n"
        ),
        &[],
    );
    dev_ca(bundle.path());
    let host = Host::start(bundle.path());
    assert!(
        host.output().contains("greentic-host admin on https://"),
        "{}",
        host.output()
    );
    let anonymous = client(bundle.path(), None, &[b"http/1.1"]);
    assert!(https(&host.admin_addr, &anonymous, "GET", "/readyz", &[], b"").is_err());
    let billing = client(bundle.path(), Some("billing"), &[b"http/1.1"]);
    let r = https(&host.admin_addr, &billing, "GET", "/readyz", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_broken_tls_setup_stops_the_host_before_it_listens_naming_the_file() {
    let bundle = TestBundle::new(BUNDLE, &[]);
    dev_ca(bundle.path());
    // The key of another pair.
    std::fs::copy(
        bundle.path().join("tls/billing.key"),
        bundle.path().join("tls/server.key"),
    )
    .unwrap();
    let out = common::run_in(
        bundle.path(),
        &[
            "run",
            ".",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
    );
    assert!(!out.status.success());
    let (_, err) = common::text(&out);
    assert!(
        err.contains("[host.tls]") && err.contains("server.key") && err.contains("does not belong"),
        "{err}"
    );
    // A client certificate listed while the listener asks for none is a bundle error.
    let text = std::fs::read_to_string(bundle.path().join("greentic.toml")).unwrap();
    std::fs::write(
        bundle.path().join("greentic.toml"),
        text.replace(
            "client_ca = \"tls/ca.crt\"\nclient_auth = \"optional\"\n",
            "",
        ),
    )
    .unwrap();
    let out = common::run_in(bundle.path(), &["check", "."]);
    assert!(!out.status.success());
    let (_, err) = common::text(&out);
    assert!(
        err.contains("auth.certificates") && err.contains("client_ca"),
        "{err}"
    );
}

#[test]
fn providers_are_pulled_from_a_registry_behind_a_private_ca() {
    use greentic_registry::testing::Registry;
    let pki = tempfile::tempdir().unwrap();
    let ca = DevCa::new("greentic-registry-test-ca").unwrap();
    let (cert, key) = ca
        .server(&["127.0.0.1"])
        .unwrap()
        .write(pki.path(), "registry")
        .unwrap();
    let registry = Registry::start_with(&format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        cert.display(),
        key.display()
    ));
    std::fs::write(pki.path().join("ca.crt"), ca.cert_pem()).unwrap();
    let reference = format!("{}/providers/echo:1.0.0", registry.addr);
    let echo = common::component("wasip2", common::built::ECHO);
    let out = common::run_host(&[
        "push",
        "--ca-cert",
        pki.path().join("ca.crt").to_str().unwrap(),
        echo.to_str().unwrap(),
        &reference,
    ]);
    assert!(out.status.success(), "push: {}", common::text(&out).1);

    let toml = |trust: &str| {
        format!(
            "{trust}\n[providers.echo]\nsource = \"{reference}\"\nallow_unsigned = true\n\n[tenants.acme]\n\n[[routes]]\ntenant = \"acme\"\ncapability = \"send\"\nprovider = \"echo\"\n"
        )
    };
    let check = |b: &TestBundle| {
        let out = common::run_host(&["check", b.path().to_str().unwrap()]);
        let (stdout, stderr) = common::text(&out);
        (out.status.success(), format!("{stdout}{stderr}"))
    };
    // Without the CA the registry cannot be trusted: refused, naming the source.
    let b = TestBundle::new(&toml(""), &[]);
    let (ok, log) = check(&b);
    assert!(
        !ok && log.contains("provider `echo`") && log.contains(&registry.addr),
        "{log}"
    );
    // With it — a bundle file whose first certificate is another CA's — it is pulled and runs.
    let b = TestBundle::new(&toml("[trust]\nregistry_ca = \"registry-ca.pem\"\n"), &[]);
    let other = DevCa::new("unrelated-ca").unwrap();
    std::fs::write(
        b.path().join("registry-ca.pem"),
        format!("{}{}", other.cert_pem(), ca.cert_pem()),
    )
    .unwrap();
    let (ok, log) = check(&b);
    assert!(ok, "{log}");
    let host = Host::start(b.path());
    let r = host.send(&b.token("acme", None), json!({"to": "#ops", "text": "hi"}));
    assert_eq!(r.status, 200, "{}", r.text());
    // A file that holds no certificate is named.
    std::fs::write(b.path().join("registry-ca.pem"), "not a certificate").unwrap();
    let (ok, log) = check(&b);
    assert!(
        !ok && log.contains("[trust].registry_ca") && log.contains("no PEM certificate"),
        "{log}"
    );
}
