//! One connection to the real server's TLS listener, fed any bytes: the handshake has the
//! header deadline, and a session's requests keep every other deadline.
//!
//! The first byte chooses how the rest reaches the server. Even: the bytes go straight to the
//! TLS listener, split where the input has `\xff\xfe` with a pause between pieces — a
//! ClientHello in pieces, garbage, half a record, a plain-HTTP request to a TLS port. Odd: a
//! real TLS client completes the handshake first, then sends the pieces inside the session —
//! partial requests, HTTP/2 prefaces, silence. Either way the server must end the connection
//! within its deadlines (plus its closing grace) and must not panic.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use greentic_host::server::{Tls, serve_connection_tls};
use greentic_host::tls::dev_ca::DevCa;
use greentic_host::tls::{ClientAuth, ClientFiles, MinVersion, ServerTls, TlsFiles, client_config};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::connection::{BODY, IDLE, PAUSE, routes_and_limits, split};

/// A handshake and the first request's headers are due within this (a little more than the
/// plain target's: a handshake comes first).
const HEADER: Duration = Duration::from_millis(150);

/// The listener's configuration and a client's, made once (a dev CA in a temp dir that lives
/// as long as the process).
struct Keys {
    _dir: tempfile::TempDir,
    server: Arc<ServerTls>,
    client: Arc<rustls::ClientConfig>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temp dir");
        let ca = DevCa::new("fuzz").expect("a CA");
        let (ca_cert, _) = ca.write(dir.path()).expect("the CA written");
        let (cert, key) = ca
            .server(&["localhost"])
            .expect("a server pair")
            .write(dir.path(), "server")
            .expect("the server pair written");
        let server = ServerTls::load(TlsFiles {
            cert,
            key,
            client_ca: Some(ca_cert.clone()),
            client_auth: ClientAuth::Optional,
            min_version: MinVersion::Tls12,
        })
        .expect("the listener's TLS");
        let client = client_config(
            &ClientFiles {
                ca: Some(ca_cert),
                ..ClientFiles::default()
            },
            &[b"h2", b"http/1.1"],
        )
        .expect("a client configuration");
        Keys {
            _dir: dir,
            server: Arc::new(server),
            client,
        }
    })
}

/// Writes `data`'s pieces with a pause between them, then stays connected, silent, draining
/// what the server answers.
async fn feed<W>(mut to: W, data: &[u8])
where
    W: AsyncWrite + tokio::io::AsyncRead + Unpin,
{
    for piece in split(data) {
        if to.write_all(piece).await.is_err() || to.flush().await.is_err() {
            break;
        }
        tokio::time::sleep(PAUSE).await;
    }
    let mut sink = tokio::io::sink();
    let _ = tokio::io::copy(&mut to, &mut sink).await;
}

/// One input: a mode byte, then the bytes a client sends.
pub fn run(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let keys = keys();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let (client, server) = tokio::io::duplex(64 << 10);
        let (router, limits, connections) = routes_and_limits(HEADER);
        let tls = Tls {
            server: keys.server.clone(),
            listener: "fuzz",
            metrics: Arc::new(greentic_host::metrics::Metrics::default()),
        };
        let served = tokio::spawn(serve_connection_tls(
            server,
            router,
            limits,
            connections,
            Some(tls),
        ));
        let connector = tokio_rustls::TlsConnector::from(keys.client.clone());
        let writer = async move {
            if mode % 2 == 0 {
                feed(client, data).await;
            } else {
                let name = rustls::pki_types::ServerName::try_from("localhost")
                    .expect("a server name");
                // The handshake can only fail here by the server's deadline.
                if let Ok(session) = connector.connect(name, client).await {
                    feed(session, data).await;
                }
            }
        };
        // The handshake has the header deadline; then each piece may start a request that
        // runs to its body deadline and idles.
        let pieces = split(data).count() as u32;
        let bound =
            HEADER + (HEADER + BODY + IDLE + PAUSE + Duration::from_millis(300)) * (pieces + 1);
        tokio::select! {
            ended = tokio::time::timeout(bound, served) => {
                let ended = ended.unwrap_or_else(|_| panic!("the connection was still open after {bound:?}"));
                assert!(ended.is_ok(), "the connection task panicked");
            }
            () = async { writer.await; std::future::pending::<()>().await } => unreachable!(),
        }
    });
}
