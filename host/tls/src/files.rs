//! Reading certificate, key and CA files into `rustls` configurations, with refusals that name
//! the file and what is wrong with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only (the default).
    #[default]
    Tls13,
}

/// Whether a listener asks its clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificates.
    #[default]
    None,
    /// A client may present one (verified against the client CA; a bad one is refused), or none.
    Optional,
    /// Every client must present one that chains to the client CA.
    Required,
}

/// The files of a listener's TLS configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM, end-entity certificate first.
    pub cert: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 RSA or SEC1 EC; RSA, ECDSA or Ed25519).
    pub key: PathBuf,
    /// The CA certificates (PEM) client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    /// Whether clients are asked for a certificate.
    pub client_auth: ClientAuth,
    /// The lowest TLS version accepted.
    pub min_version: MinVersion,
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// The contents of the files a configuration was built from, to tell when they change.
pub(crate) type Contents = Vec<(PathBuf, Vec<u8>)>;

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path)
        .map_err(|e| TlsError(format!("{what} {}: cannot be read: {e}", path.display())))
}

/// The certificates in the PEM `bytes` of `path` (`what` names the file's role).
fn certificates(
    bytes: &[u8],
    path: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsError(format!(
                "{what} {}: not PEM certificates ({e})",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{what} {}: holds no certificate (expected `-----BEGIN CERTIFICATE-----` blocks)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The private key in the PEM `bytes` of `path`.
fn private_key(bytes: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| {
        let text = String::from_utf8_lossy(bytes);
        let hint = if text.contains("ENCRYPTED PRIVATE KEY") {
            "it is encrypted; decrypt it with `openssl pkcs8 -in key.pem -out plain.pem`"
                .to_string()
        } else if text.contains("BEGIN CERTIFICATE") && !text.contains("PRIVATE KEY") {
            "it holds a certificate, not a private key (are cert and key swapped?)".to_string()
        } else {
            format!("expected a PKCS#8, RSA or EC private key in PEM ({e})")
        };
        TlsError(format!("key {}: {hint}", path.display()))
    })
}

/// The CA certificates in `path`, as roots.
fn roots(path: &Path, what: &str) -> Result<(RootCertStore, Vec<u8>), TlsError> {
    let bytes = read(path, what)?;
    let mut store = RootCertStore::empty();
    for cert in certificates(&bytes, path, what)? {
        store.add(cert).map_err(|e| {
            TlsError(format!(
                "{what} {}: a certificate is not usable as a trust anchor: {e}",
                path.display()
            ))
        })?;
    }
    Ok((store, bytes))
}

static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
static TLS12_UP: [&rustls::SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];

fn versions(min: MinVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match min {
        MinVersion::Tls13 => &TLS13_ONLY,
        MinVersion::Tls12 => &TLS12_UP,
    }
}

impl ClientFiles {
    /// The same files with each path resolved by `resolve` (e.g. against a bundle directory).
    pub fn resolved(&self, resolve: impl Fn(&Path) -> PathBuf) -> ClientFiles {
        ClientFiles {
            ca: self.ca.as_deref().map(&resolve),
            cert: self.cert.as_deref().map(&resolve),
            key: self.key.as_deref().map(&resolve),
        }
    }
}

impl TlsFiles {
    /// Reads the files and builds the listener's configuration (ALPN `h2`, `http/1.1`;
    /// stateless session tickets, so clients resume without a full handshake). The key must
    /// belong to the chain's first certificate.
    pub(crate) fn load(&self) -> Result<(Arc<rustls::ServerConfig>, Contents), TlsError> {
        let cert_bytes = read(&self.cert, "cert")?;
        let key_bytes = read(&self.key, "key")?;
        let chain = certificates(&cert_bytes, &self.cert, "cert")?;
        let key = private_key(&key_bytes, &self.key)?;
        let provider = crate::provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions(self.min_version))
            .map_err(|e| TlsError(format!("TLS versions: {e}")))?;
        let mut contents = vec![
            (self.cert.clone(), cert_bytes),
            (self.key.clone(), key_bytes),
        ];
        let builder = match (self.client_auth, &self.client_ca) {
            (ClientAuth::None, _) => builder.with_no_client_auth(),
            (_, None) => {
                return Err(TlsError(
                    "client_auth asks for client certificates but no client_ca names the CA they must chain to".into(),
                ));
            }
            (auth, Some(ca)) => {
                let (store, bytes) = roots(ca, "client_ca")?;
                contents.push((ca.clone(), bytes));
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone());
                let verifier = match auth {
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                    _ => verifier,
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .map_err(|e| TlsError(format!("client_ca {}: {e}", ca.display())))?,
                )
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            let why = match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the key does not belong to the certificate (a half-written rotation, or the wrong pair)".to_string()
                }
                other => other.to_string(),
            };
            TlsError(format!(
                "cert {} and key {}: {why}",
                self.cert.display(),
                self.key.display()
            ))
        })?;
        config.alpn_protocols = crate::ALPN.iter().map(|p| p.to_vec()).collect();
        config.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| TlsError(format!("session tickets: {e}")))?;
        Ok((Arc::new(config), contents))
    }
}

/// The files of an outbound connection's TLS: whom to trust and, for mTLS, who we are (in a
/// bundle: `tls = { ca, cert, key }`, paths relative to the bundle).
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct ClientFiles {
    /// CA certificates (PEM) the server's certificate must chain to (only these are trusted).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Our certificate chain (PEM), presented when the server asks.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// A client configuration trusting `files.ca` (and nothing else) and presenting `files.cert`
/// with `files.key` when both are set. `alpn` is offered as given.
pub fn client_config(
    files: &ClientFiles,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let ca = files
        .ca
        .as_ref()
        .ok_or_else(|| TlsError("no CA bundle to verify the server with (ca)".into()))?;
    let (store, _) = roots(ca, "ca")?;
    let builder = rustls::ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(versions(MinVersion::Tls12))
        .map_err(|e| TlsError(format!("TLS versions: {e}")))?
        .with_root_certificates(store);
    with_client_pair(builder, files, alpn)
}

/// A client configuration for a peer that must be `expected`: its chain verified against
/// `files.ca` (and nothing else), then its certificate held to the identity — a URI SAN (a
/// SPIFFE id, which names no host) or a DNS name — instead of the address dialled. A peer
/// whose certificate names someone else is refused at the handshake, and
/// [`IdentityCheck::found`] says whom it named.
pub fn identity_client_config(
    files: &ClientFiles,
    expected: &str,
    alpn: &[&[u8]],
) -> Result<(Arc<rustls::ClientConfig>, IdentityCheck), TlsError> {
    let ca = files
        .ca
        .as_ref()
        .ok_or_else(|| TlsError("no CA bundle to verify the peer with (ca)".into()))?;
    let (store, _) = roots(ca, "ca")?;
    let check = IdentityCheck::default();
    let verifier = Arc::new(IdentityVerifier {
        roots: Arc::new(store),
        expected: expected.to_string(),
        algorithms: crate::provider().signature_verification_algorithms,
        found: check.clone(),
    });
    let builder = rustls::ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(versions(MinVersion::Tls12))
        .map_err(|e| TlsError(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    Ok((with_client_pair(builder, files, alpn)?, check))
}

/// What the last refused peer's certificate named, for the refusal's message.
#[derive(Debug, Clone, Default)]
pub struct IdentityCheck(Arc<std::sync::Mutex<Option<String>>>);

impl IdentityCheck {
    /// The identities of the last peer refused for naming someone else.
    pub fn found(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[derive(Debug)]
struct IdentityVerifier {
    roots: Arc<RootCertStore>,
    expected: String,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
    found: IdentityCheck,
}

impl rustls::client::danger::ServerCertVerifier for IdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let identity = crate::PeerIdentity::from_der(end_entity).unwrap_or_default();
        let matches = if self.expected.contains("://") {
            identity.uris.contains(&self.expected)
        } else {
            identity
                .dns_names
                .iter()
                .any(|d| d.eq_ignore_ascii_case(&self.expected))
        };
        if !matches {
            let found = identity.describe();
            *self.found.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(found.clone());
            return Err(rustls::Error::General(format!(
                "the peer's certificate names {found}, not the expected {}",
                self.expected
            )));
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `builder` finished with the client pair of `files`, if any, offering `alpn`.
fn with_client_pair(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    files: &ClientFiles,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let cert_bytes = read(cert, "cert")?;
            let chain = certificates(&cert_bytes, cert, "cert")?;
            let key_der = private_key(&read(key, "key")?, key)?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                TlsError(format!(
                    "client cert {} and key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError(
                "a client certificate needs both cert and key".into(),
            ));
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
