//! Invoke over TLS against plain HTTP: `POST /v1/invoke/send` of the `noop` provider through the
//! host's real server (accept loop, HTTP/1.1, token check, full call path) on loopback, with a
//! hyper client, in five ways, interleaved in one run:
//!
//! - `plain-new`: plain HTTP, a new connection per call;
//! - `plain-keepalive`: plain HTTP, one kept-alive connection;
//! - `tls-full`: TLS 1.3, a new connection and a full handshake (ECDSA P-256) per call;
//! - `tls-resumed`: TLS 1.3, a new connection per call resuming the session (a ticket);
//! - `tls-keepalive`: TLS 1.3, one kept-alive connection.
//!
//! Prints p50/p99 per mode and each against its plain-HTTP counterpart.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use greentic_host::auth::Authenticator;
use greentic_host::loader::{LoadOptions, load_bundle};
use greentic_host::runtime::Runtime;
use greentic_host::server::{self, App};
use greentic_host::tls::dev_ca::DevCa;
use greentic_host::tls::{ClientAuth, ClientFiles, MinVersion, ServerTls, TlsFiles, client_config};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;

type Sender = SendRequest<Full<Bytes>>;

/// A server on loopback, and what a client needs to call it.
struct Served {
    addr: std::net::SocketAddr,
    token: String,
}

async fn serve(runtime: Arc<Runtime>, auth: Authenticator, tls: Option<server::Tls>) -> Served {
    let bundle_host = greentic_host::bundle::HostSection::default();
    let token = auth.mint("acme", None, None, 3600).unwrap();
    let app = Arc::new(App::new(runtime, auth));
    let limits = server::RequestLimits::from_host(&bundle_host);
    let connections = server::ConnectionLimits::from_host(&bundle_host);
    let router = server::router(app, limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(
        listener,
        router,
        limits,
        connections,
        tls,
        std::future::pending(),
    ));
    Served { addr, token }
}

/// A new HTTP/1.1 connection to `addr`, over TLS with `tls`.
async fn connect(addr: std::net::SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> Sender {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    match tls {
        None => {
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender
        }
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let stream = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .unwrap();
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender
        }
    }
}

async fn call(sender: &mut Sender, token: &str) {
    let request = hyper::Request::post("/v1/invoke/send")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br##"{"to":"#ops","text":"hello"}"##,
        )))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    std::hint::black_box(body);
}

fn main() {
    // `cargo bench` passes `--bench`; this bench takes no other argument.
    let cache = tempfile::tempdir().unwrap();
    let bundle = common::bundle(&[("noop", "noop", "")], cache.path());
    let loaded = load_bundle(bundle.path(), LoadOptions::default()).unwrap();
    let runtime = Arc::new(Runtime::new(
        &loaded.bundle,
        loaded.engine,
        loaded.loaded.providers,
        loaded.backends,
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let keys = tempfile::tempdir().unwrap();
    let ca = DevCa::new("bench").unwrap();
    let (ca_cert, _) = ca.write(keys.path()).unwrap();
    let (cert, key) = ca
        .server(&["localhost"])
        .unwrap()
        .write(keys.path(), "server")
        .unwrap();
    let server_tls = Arc::new(
        ServerTls::load(TlsFiles {
            cert,
            key,
            client_ca: None,
            client_auth: ClientAuth::None,
            min_version: MinVersion::Tls13,
        })
        .unwrap(),
    );
    let files = ClientFiles {
        ca: Some(ca_cert),
        ..ClientFiles::default()
    };
    let resuming = client_config(&files, &[b"http/1.1"]).unwrap();
    let mut full = (*client_config(&files, &[b"http/1.1"]).unwrap()).clone();
    full.resumption = rustls::client::Resumption::disabled();
    let full = Arc::new(full);

    let (plain, tls) = rt.block_on(async {
        let plain = serve(
            runtime.clone(),
            Authenticator::from_bundle(&loaded.bundle).unwrap(),
            None,
        )
        .await;
        let tls = serve(
            runtime.clone(),
            Authenticator::from_bundle(&loaded.bundle).unwrap(),
            Some(server::Tls {
                server: server_tls,
                listener: "bench",
                metrics: runtime.metrics.clone(),
            }),
        )
        .await;
        (plain, tls)
    });

    let names = [
        "plain-new",
        "plain-keepalive",
        "tls-full",
        "tls-resumed",
        "tls-keepalive",
    ];
    let n: usize = std::env::var("TLS_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000);
    let mut times: [Vec<Duration>; 5] = Default::default();
    rt.block_on(async {
        let mut plain_kept = connect(plain.addr, None).await;
        let mut tls_kept = connect(tls.addr, Some(&resuming)).await;
        // Interleaved in a rotating order, so drift hits every mode alike; the first tenth
        // warms up (and is not counted).
        for round in 0..(n + n / 10) {
            for k in 0..5 {
                let mode = (round + k) % 5;
                let started = Instant::now();
                match mode {
                    0 => call(&mut connect(plain.addr, None).await, &plain.token).await,
                    1 => call(&mut plain_kept, &plain.token).await,
                    2 => call(&mut connect(tls.addr, Some(&full)).await, &tls.token).await,
                    3 => call(&mut connect(tls.addr, Some(&resuming)).await, &tls.token).await,
                    _ => call(&mut tls_kept, &tls.token).await,
                }
                if round >= n / 10 {
                    times[mode].push(started.elapsed());
                }
            }
        }
    });
    let q: Vec<(Duration, Duration, Duration)> = times.into_iter().map(common::quantiles).collect();
    println!("\ninvoke over TLS and plain HTTP, {n} calls each, interleaved (µs)");
    println!(
        "{:<16} {:>9} {:>9} {:>16}",
        "mode", "p50", "p99", "p50 vs plain"
    );
    for (i, name) in names.iter().enumerate() {
        // Each TLS mode against the plain mode of the same connection pattern.
        let base = match i {
            2 | 3 => Some(q[0].0),
            4 => Some(q[1].0),
            _ => None,
        };
        let ratio = base
            .map(|b| format!("{:.2}x", q[i].0.as_secs_f64() / b.as_secs_f64()))
            .unwrap_or_else(|| "-".into());
        println!(
            "{name:<16} {:>9.1} {:>9.1} {:>16}",
            common::us(q[i].0),
            common::us(q[i].1),
            ratio
        );
    }
}
