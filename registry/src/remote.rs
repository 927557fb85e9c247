use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::error::RegistryError;

/// Blobs at least this large get a progress bar (when stderr is a terminal).
const PROGRESS_THRESHOLD: u64 = 1 << 20;

fn progress_bar(len: Option<u64>, what: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    let len = len?;
    if !std::io::stderr().is_terminal() || len < PROGRESS_THRESHOLD {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len).with_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    Some(bar)
}

/// An `AsyncWrite` that collects at most `max` bytes and advances a progress bar; one byte
/// more fails the transfer (and sets `exceeded`).
struct ProgressWriter<'a> {
    inner: &'a mut Vec<u8>,
    bar: Option<indicatif::ProgressBar>,
    max: u64,
    exceeded: &'a mut bool,
}

impl tokio::io::AsyncWrite for ProgressWriter<'_> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.inner.len() as u64 + buf.len() as u64 > self.max {
            *self.exceeded = true;
            return std::task::Poll::Ready(Err(std::io::Error::other(
                "the blob is larger than accepted",
            )));
        }
        self.inner.extend_from_slice(buf);
        if let Some(bar) = &self.bar {
            bar.inc(buf.len() as u64);
        }
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    /// Hosts (`host[:port]`) that may be reached over plain HTTP besides loopback ones.
    /// Loopback registries are reached over plain HTTP unless CA certificates are given.
    pub insecure: Vec<String>,
    /// Basic-auth user; otherwise `GREENTIC_REGISTRY_USERNAME`, then the docker `config.json`.
    pub username: Option<String>,
    /// Basic-auth password; otherwise `GREENTIC_REGISTRY_PASSWORD`, then the docker `config.json`.
    pub password: Option<String>,
    /// Extra CA certificates (PEM) to trust.
    pub ca_certificates: Vec<Vec<u8>>,
    /// Attempts per request for 5xx and connection errors (default 4).
    pub max_attempts: Option<u32>,
    /// Use TLS even for loopback registries.
    pub require_tls: bool,
}

/// The PEM certificates in `pem` (a CA bundle may hold several), each as its own PEM block.
pub fn pem_certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(format!("{}\n", &rest[start..end]).into_bytes());
        rest = &rest[end..];
    }
    out
}

/// A registry speaking the OCI distribution API.
pub struct RemoteRegistry {
    client: Client,
    auth: RegistryAuth,
    registry: String,
    attempts: u32,
}

fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

/// Credentials from a docker credential helper: `docker-credential-<helper> get` with the
/// registry on stdin, answering `{"Username": …, "Secret": …}`.
fn credential_helper(helper: &str, registry: &str) -> Option<(String, String)> {
    use std::io::Write;
    let mut child = std::process::Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| tracing::warn!(helper, error = %e, "credential helper not runnable"))
        .ok()?;
    child.stdin.take()?.write_all(registry.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((
        v["Username"].as_str()?.to_string(),
        v["Secret"].as_str()?.to_string(),
    ))
}

/// Credentials from the docker `config.json`: `credHelpers.<host>`, then `auths.<host>.auth`
/// (base64 `user:password`), then `credsStore`.
fn docker_config_auth(registry: &str) -> Option<(String, String)> {
    use base64::Engine;
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".docker"))
        })?;
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).ok()?).ok()?;
    if let Some(helper) = config["credHelpers"][registry].as_str() {
        return credential_helper(helper, registry);
    }
    let Some(encoded) = config["auths"][registry]["auth"].as_str() else {
        return config["credsStore"]
            .as_str()
            .and_then(|h| credential_helper(h, registry));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

impl RemoteRegistry {
    /// A client for `registry` (`host[:port]`).
    pub fn new(registry: &str, options: &RemoteOptions) -> RemoteRegistry {
        let mut plain: Vec<String> = options.insecure.clone();
        if is_loopback(registry) && options.ca_certificates.is_empty() && !options.require_tls {
            plain.push(registry.to_string());
        }
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(plain),
            // One entry per certificate: a CA bundle file holds several.
            extra_root_certificates: options
                .ca_certificates
                .iter()
                .flat_map(|pem| pem_certificates(pem))
                .map(|data| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data,
                })
                .collect(),
            connect_timeout: Some(Duration::from_secs(5)),
            read_timeout: Some(Duration::from_secs(60)),
            ..ClientConfig::default()
        };
        let username = options
            .username
            .clone()
            .or_else(|| std::env::var("GREENTIC_REGISTRY_USERNAME").ok());
        let password = options
            .password
            .clone()
            .or_else(|| std::env::var("GREENTIC_REGISTRY_PASSWORD").ok());
        let auth = match (username, password) {
            (Some(u), Some(p)) => RegistryAuth::Basic(u, p),
            _ => match docker_config_auth(registry) {
                Some((u, p)) => RegistryAuth::Basic(u, p),
                None => RegistryAuth::Anonymous,
            },
        };
        RemoteRegistry {
            client: Client::new(config),
            auth,
            registry: registry.to_string(),
            attempts: options.max_attempts.unwrap_or(4).max(1),
        }
    }

    fn fail(&self, what: &str, e: &OciDistributionError) -> RegistryError {
        match e {
            OciDistributionError::ImageManifestNotFoundError(m) => RegistryError::NotFound {
                reference: self.registry.clone(),
                why: m.clone(),
            },
            OciDistributionError::RegistryError { envelope, url } => {
                let codes: Vec<String> = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}", e.code))
                    .collect();
                if codes.iter().any(|c| c.contains("Unknown")) {
                    RegistryError::NotFound {
                        reference: url.clone(),
                        why: codes.join(", "),
                    }
                } else {
                    RegistryError::Registry {
                        registry: self.registry.clone(),
                        why: format!("{what}: {e}"),
                    }
                }
            }
            _ => RegistryError::Registry {
                registry: self.registry.clone(),
                why: format!("{what}: {e}"),
            },
        }
    }

    fn retryable(e: &OciDistributionError) -> bool {
        match e {
            OciDistributionError::ServerError { code, .. } => *code >= 500,
            OciDistributionError::RequestError(r) => {
                r.is_connect()
                    || r.is_timeout()
                    || r.is_request()
                    // A connection cut while the body streams in.
                    || r.is_body()
                    || r.is_decode()
                    || r.status().is_some_and(|s| s.is_server_error())
            }
            OciDistributionError::IoError(_) => true,
            _ => false,
        }
    }

    async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, OciDistributionError>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < self.attempts && Self::retryable(&e) => {
                    let delay = Duration::from_millis(100 * (1 << (attempt - 1)));
                    tracing::warn!(registry = %self.registry, attempt, error = %e, "{what} failed; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => {
                    let err = self.fail(what, &e);
                    return Err(match err {
                        RegistryError::Registry { registry, why } if attempt > 1 => {
                            RegistryError::Registry {
                                registry,
                                why: format!("{why} (after {attempt} attempts)"),
                            }
                        }
                        other => other,
                    });
                }
            }
        }
    }

    /// The digest a tag points at (a digest reference resolves to itself).
    pub async fn resolve(&self, reference: &Reference) -> Result<String, RegistryError> {
        if let Some(d) = reference.digest() {
            return Ok(d.to_string());
        }
        self.retry("resolving the tag", || {
            self.client.fetch_manifest_digest(reference, &self.auth)
        })
        .await
    }

    /// The manifest stored under `digest`, not yet verified (the client reads manifests
    /// whole; the caller checks the size before using or caching one).
    pub async fn manifest_unverified(
        &self,
        reference: &Reference,
        digest: &str,
        accepted: &[&str],
    ) -> Result<Vec<u8>, RegistryError> {
        let pinned = Reference::with_digest(
            reference.registry().to_string(),
            reference.repository().to_string(),
            digest.to_string(),
        );
        let (bytes, _) = self
            .retry("fetching the manifest", || {
                self.client.pull_manifest_raw(&pinned, &self.auth, accepted)
            })
            .await?;
        Ok(bytes.to_vec())
    }

    /// The blob stored under `digest`, not yet verified by us (the client checks it too),
    /// read while it streams in and abandoned past `max` bytes (never retried then). `size`
    /// (from the manifest) sizes the progress bar shown on a terminal.
    pub async fn blob_unverified(
        &self,
        reference: &Reference,
        digest: &str,
        size: Option<u64>,
        max: u64,
        what: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        self.client
            .store_auth_if_needed(reference.resolve_registry(), &self.auth)
            .await;
        let short = &digest[..digest.len().min(19)];
        let exceeded = std::sync::atomic::AtomicBool::new(false);
        let result = self
            .retry("fetching a blob", || async {
                if exceeded.load(std::sync::atomic::Ordering::Relaxed) {
                    // Past the cap once: not worth another attempt.
                    return Ok(None);
                }
                let mut out = Vec::new();
                let mut over = false;
                let bar = progress_bar(size, &format!("pulling {short}"));
                let writer = ProgressWriter {
                    inner: &mut out,
                    bar: bar.clone(),
                    max,
                    exceeded: &mut over,
                };
                let result = self.client.pull_blob(reference, digest, writer).await;
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
                if over {
                    exceeded.store(true, std::sync::atomic::Ordering::Relaxed);
                    return Ok(None);
                }
                result.map(|()| Some(out))
            })
            .await?;
        result.ok_or_else(|| RegistryError::TooLarge {
            what: what.to_string(),
            source_name: format!("{}/{}@{digest}", self.registry, reference.repository()),
            limit: max,
            stated: None,
            hint: None,
        })
    }

    /// Uploads a blob (with a spinner on a terminal for large blobs).
    pub async fn put_blob(
        &self,
        reference: &Reference,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        self.client
            .store_auth_if_needed(reference.resolve_registry(), &self.auth)
            .await;
        let bar = progress_bar(Some(bytes.len() as u64), "").map(|_| {
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.set_message(format!(
                "pushing {} ({} bytes)",
                &digest[..digest.len().min(19)],
                bytes.len()
            ));
            spinner.enable_steady_tick(std::time::Duration::from_millis(120));
            spinner
        });
        let result = self
            .retry("uploading a blob", || {
                self.client.push_blob(reference, bytes.to_vec(), digest)
            })
            .await
            .map(|_| ());
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        result
    }

    /// Uploads a manifest under the reference's tag (or digest).
    pub async fn put_manifest(
        &self,
        reference: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), RegistryError> {
        self.client
            .store_auth_if_needed(reference.resolve_registry(), &self.auth)
            .await;
        let content_type = media_type.parse().map_err(|_| RegistryError::Registry {
            registry: self.registry.clone(),
            why: format!("bad media type {media_type}"),
        })?;
        self.retry("uploading the manifest", || {
            self.client.push_manifest_raw(
                reference,
                bytes.to_vec(),
                std::clone::Clone::clone(&content_type),
            )
        })
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_bundle_is_split_into_its_certificates() {
        let a = "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----";
        let b = "-----BEGIN CERTIFICATE-----\nREVG\n-----END CERTIFICATE-----";
        let bundle = format!("# ours\n{a}\n\nsubject=x\n{b}\ntrailing");
        let split = pem_certificates(bundle.as_bytes());
        assert_eq!(
            split,
            vec![format!("{a}\n").into_bytes(), format!("{b}\n").into_bytes()]
        );
        assert!(pem_certificates(b"not a certificate").is_empty());
        assert!(pem_certificates(b"-----BEGIN CERTIFICATE-----\nQUJD").is_empty());
    }
}
