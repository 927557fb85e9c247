//! Real TLS handshakes on loopback: trust, client certificates, versions, key types, and files
//! replaced under a running listener.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::{Path, PathBuf};
use std::sync::Arc;

use greentic_tls::dev_ca::{DevCa, KeyKind, Pair};
use greentic_tls::{
    ClientAuth, ClientFiles, MinVersion, PeerIdentity, Reloaded, ServerTls, TlsFiles, client_config,
};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A temp dir with a CA, a server pair and the listener's files.
struct Setup {
    dir: tempfile::TempDir,
    ca: DevCa,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("test CA").unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
        ca.server(&["localhost", "127.0.0.1"])
            .unwrap()
            .write(dir.path(), "server")
            .unwrap();
        Setup { dir, ca }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn files(&self, client_auth: ClientAuth) -> TlsFiles {
        TlsFiles {
            cert: self.path("server.crt"),
            key: self.path("server.key"),
            client_ca: (client_auth != ClientAuth::None).then(|| self.path("ca.crt")),
            client_auth,
            min_version: MinVersion::Tls13,
        }
    }

    /// Client files trusting this CA, presenting `pair` (written as `name`) if given.
    fn client(&self, pair: Option<(&Pair, &str)>) -> ClientFiles {
        let (cert, key) = match pair {
            Some((pair, name)) => {
                let (c, k) = pair.write(self.dir.path(), name).unwrap();
                (Some(c), Some(k))
            }
            None => (None, None),
        };
        ClientFiles {
            ca: Some(self.path("ca.crt")),
            cert,
            key,
        }
    }
}

/// What one connection saw: the client's result and the server's.
struct Outcome {
    client: Result<ClientSaw, String>,
    server: Result<Option<PeerIdentity>, &'static str>,
}

struct ClientSaw {
    alpn: Option<Vec<u8>>,
    /// The server certificate the client was shown.
    server_cert: Vec<u8>,
    version: Option<rustls::ProtocolVersion>,
}

/// One handshake between `server` and a client with `config`, over real TCP on loopback, with
/// a byte echoed each way so both sides finish.
async fn connect(server: &Arc<ServerTls>, config: Arc<rustls::ClientConfig>) -> Outcome {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let srv = server.clone();
    let accepted = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        match srv.accept(stream).await {
            Ok((mut tls, peer)) => {
                let mut b = [0u8; 1];
                if tls.read_exact(&mut b).await.is_ok() {
                    let _ = tls.write_all(&b).await;
                    let _ = tls.flush().await;
                }
                Ok(peer)
            }
            Err(e) => Err(e.reason),
        }
    });
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let client = async {
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        // TLS 1.3: a refused client certificate shows only once the client reads.
        tls.write_all(b"x").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        Ok(ClientSaw {
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            server_cert: conn.peer_certificates().unwrap()[0].to_vec(),
            version: conn.protocol_version(),
        })
    }
    .await;
    let server = accepted.await.unwrap();
    Outcome { client, server }
}

fn der_of(pem_file: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_file(pem_file)
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_client_trusting_the_ca_connects_with_h2_or_http1_as_it_offers() {
    let s = Setup::new();
    let server = Arc::new(ServerTls::load(s.files(ClientAuth::None)).unwrap());
    for (offer, expect) in [
        (
            &[b"h2".as_slice(), b"http/1.1".as_slice()][..],
            b"h2".as_slice(),
        ),
        (&[b"http/1.1".as_slice()][..], b"http/1.1".as_slice()),
    ] {
        let out = connect(&server, client_config(&s.client(None), offer).unwrap()).await;
        let saw = out.client.unwrap();
        assert_eq!(saw.alpn.as_deref(), Some(expect));
        assert_eq!(saw.version, Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(
            out.server.unwrap(),
            None,
            "no client certificate was asked for"
        );
    }
}

#[tokio::test]
async fn a_client_trusting_another_ca_refuses_the_server() {
    let s = Setup::new();
    let server = Arc::new(ServerTls::load(s.files(ClientAuth::None)).unwrap());
    let other = DevCa::new("other CA").unwrap();
    let other_ca = s.path("other-ca.crt");
    std::fs::write(&other_ca, other.cert_pem()).unwrap();
    let files = ClientFiles {
        ca: Some(other_ca),
        ..ClientFiles::default()
    };
    let out = connect(&server, client_config(&files, &[b"h2"]).unwrap()).await;
    let err = out.client.err().expect("the client must refuse");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert_eq!(out.server.err(), Some("alert"));
}

#[tokio::test]
async fn required_client_certificates_must_chain_to_the_client_ca_and_be_valid() {
    let s = Setup::new();
    let server = Arc::new(ServerTls::load(s.files(ClientAuth::Required)).unwrap());
    // None at all.
    let out = connect(&server, client_config(&s.client(None), &[b"h2"]).unwrap()).await;
    assert!(out.client.is_err());
    assert_eq!(out.server.err(), Some("client-certificate"));
    // From another CA.
    let other = DevCa::new("other CA").unwrap();
    let stranger = other.client("spiffe://acme.example/team/billing").unwrap();
    let out = connect(
        &server,
        client_config(&s.client(Some((&stranger, "stranger"))), &[b"h2"]).unwrap(),
    )
    .await;
    assert!(out.client.is_err());
    assert_eq!(out.server.err(), Some("client-certificate"));
    // Expired.
    let expired =
        s.ca.expired_client("spiffe://acme.example/team/billing")
            .unwrap();
    let out = connect(
        &server,
        client_config(&s.client(Some((&expired, "expired"))), &[b"h2"]).unwrap(),
    )
    .await;
    assert!(out.client.is_err());
    assert_eq!(out.server.err(), Some("client-certificate"));
    // Good: its identities reach the server.
    let billing = s.ca.client("spiffe://acme.example/team/billing").unwrap();
    let out = connect(
        &server,
        client_config(&s.client(Some((&billing, "billing"))), &[b"h2"]).unwrap(),
    )
    .await;
    out.client.unwrap();
    let peer = out.server.unwrap().expect("a verified identity");
    assert_eq!(peer.uris, vec!["spiffe://acme.example/team/billing"]);
    let worker = s.ca.client("worker.globex.example").unwrap();
    let out = connect(
        &server,
        client_config(&s.client(Some((&worker, "worker"))), &[b"h2"]).unwrap(),
    )
    .await;
    let peer = out.server.unwrap().expect("a verified identity");
    assert_eq!(peer.dns_names, vec!["worker.globex.example"]);
    assert!(peer.uris.is_empty());
}

#[tokio::test]
async fn optional_client_certificates_admit_clients_without_one_but_not_bad_ones() {
    let s = Setup::new();
    let server = Arc::new(ServerTls::load(s.files(ClientAuth::Optional)).unwrap());
    let out = connect(&server, client_config(&s.client(None), &[b"h2"]).unwrap()).await;
    out.client.unwrap();
    assert_eq!(out.server.unwrap(), None);
    let expired = s.ca.expired_client("spiffe://acme.example/x").unwrap();
    let out = connect(
        &server,
        client_config(&s.client(Some((&expired, "expired"))), &[b"h2"]).unwrap(),
    )
    .await;
    assert_eq!(out.server.err(), Some("client-certificate"));
}

#[tokio::test]
async fn rsa_and_ed25519_server_keys_serve() {
    let s = Setup::new();
    let rsa_key = include_str!("fixtures/rsa-2048.key");
    s.ca.server_for_key(&["localhost"], rsa_key)
        .unwrap()
        .write(s.dir.path(), "server")
        .unwrap();
    let server = Arc::new(ServerTls::load(s.files(ClientAuth::None)).unwrap());
    let out = connect(&server, client_config(&s.client(None), &[b"h2"]).unwrap()).await;
    assert_eq!(
        out.client.unwrap().server_cert,
        der_of(&s.path("server.crt"))
    );
    s.ca.server_with(&["localhost"], KeyKind::Ed25519)
        .unwrap()
        .write(s.dir.path(), "server")
        .unwrap();
    let server = Arc::new(ServerTls::load(s.files(ClientAuth::None)).unwrap());
    let out = connect(&server, client_config(&s.client(None), &[b"h2"]).unwrap()).await;
    assert_eq!(
        out.client.unwrap().server_cert,
        der_of(&s.path("server.crt"))
    );
}

/// A client that speaks TLS 1.2 only.
fn tls12_only(s: &Setup) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_file(s.path("ca.crt")).unwrap())
        .unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(greentic_tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[tokio::test]
async fn tls_1_2_is_refused_unless_the_minimum_is_1_2() {
    let s = Setup::new();
    let server = Arc::new(ServerTls::load(s.files(ClientAuth::None)).unwrap());
    let out = connect(&server, tls12_only(&s)).await;
    assert!(out.client.is_err());
    assert_eq!(out.server.err(), Some("protocol"));
    let mut files = s.files(ClientAuth::None);
    files.min_version = MinVersion::Tls12;
    let server = Arc::new(ServerTls::load(files).unwrap());
    let out = connect(&server, tls12_only(&s)).await;
    assert_eq!(
        out.client.unwrap().version,
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}

#[tokio::test]
async fn new_files_replace_the_pair_and_broken_ones_leave_the_old_serving() {
    let s = Setup::new();
    let server = Arc::new(ServerTls::load(s.files(ClientAuth::None)).unwrap());
    let first = der_of(&s.path("server.crt"));
    assert_eq!(server.reload_if_changed(), Reloaded::Unchanged);
    // The same bytes written again: nothing to do.
    std::fs::write(
        s.path("server.crt"),
        std::fs::read(s.path("server.crt")).unwrap(),
    )
    .unwrap();
    assert_eq!(server.reload_if_changed(), Reloaded::Unchanged);
    // A rotation: a new pair.
    s.ca.server(&["localhost"])
        .unwrap()
        .write(s.dir.path(), "server")
        .unwrap();
    let second = der_of(&s.path("server.crt"));
    assert_ne!(first, second);
    assert_eq!(server.reload_if_changed(), Reloaded::Replaced);
    let out = connect(&server, client_config(&s.client(None), &[b"h2"]).unwrap()).await;
    assert_eq!(out.client.unwrap().server_cert, second);
    // Half a rotation: a new certificate beside the old key. Refused once, then quiet, and the
    // pair in force keeps serving.
    let third = s.ca.server(&["localhost"]).unwrap();
    std::fs::write(s.path("server.crt"), &third.cert_pem).unwrap();
    match server.reload_if_changed() {
        Reloaded::Refused(why) => assert!(why.contains("does not belong"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(server.reload_if_changed(), Reloaded::Unchanged);
    let out = connect(&server, client_config(&s.client(None), &[b"h2"]).unwrap()).await;
    assert_eq!(out.client.unwrap().server_cert, second);
    // The key arrives: the rotation completes.
    std::fs::write(s.path("server.key"), &third.key_pem).unwrap();
    assert_eq!(server.reload_if_changed(), Reloaded::Replaced);
    let out = connect(&server, client_config(&s.client(None), &[b"h2"]).unwrap()).await;
    assert_ne!(out.client.unwrap().server_cert, second);
    // Garbage: refused, the third pair serves.
    std::fs::write(s.path("server.crt"), "not a certificate").unwrap();
    assert!(matches!(server.reload_if_changed(), Reloaded::Refused(_)));
    let out = connect(&server, client_config(&s.client(None), &[b"h2"]).unwrap()).await;
    out.client.unwrap();
}

#[test]
fn bad_files_are_refused_naming_the_file_and_the_fix() {
    let s = Setup::new();
    let mut files = s.files(ClientAuth::None);
    files.cert = s.path("missing.crt");
    let err = ServerTls::load(files).err().unwrap().to_string();
    assert!(
        err.contains("missing.crt") && err.contains("cannot be read"),
        "{err}"
    );
    // Certificate and key swapped.
    let mut files = s.files(ClientAuth::None);
    files.key = s.path("server.crt");
    let err = ServerTls::load(files).err().unwrap().to_string();
    assert!(
        err.contains("holds a certificate, not a private key"),
        "{err}"
    );
    // A key of another pair.
    let other = s.ca.server(&["localhost"]).unwrap();
    let (_, other_key) = other.write(s.dir.path(), "other").unwrap();
    let mut files = s.files(ClientAuth::None);
    files.key = other_key;
    let err = ServerTls::load(files).err().unwrap().to_string();
    assert!(err.contains("does not belong to the certificate"), "{err}");
    // An empty CA file.
    std::fs::write(s.path("empty.crt"), "").unwrap();
    let mut files = s.files(ClientAuth::Required);
    files.client_ca = Some(s.path("empty.crt"));
    let err = ServerTls::load(files).err().unwrap().to_string();
    assert!(
        err.contains("empty.crt") && err.contains("no certificate"),
        "{err}"
    );
}
