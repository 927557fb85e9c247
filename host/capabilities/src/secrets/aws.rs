//! AWS Secrets Manager: `GetSecretValue` over HTTPS, signed with Signature Version 4, one
//! secret per tenant and name (`name_template`, default `greentic/{tenant}/{name}`), cached for
//! `ttl_secs` and refreshed.
//!
//! - **Credentials** are read for every request, so a rotated file is picked up:
//!   `$AWS_ACCESS_KEY_ID` / `$AWS_SECRET_ACCESS_KEY` (`$AWS_SESSION_TOKEN`), else the shared
//!   credentials file (`$AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`; profile
//!   `$AWS_PROFILE`, else `default`) — under systemd, a `LoadCredential=` file named by
//!   `AWS_SHARED_CREDENTIALS_FILE=%d/aws`, so no key is in the environment.
//! - **Errors** map as the local backends' do: a secret that does not exist is absent
//!   (`not-found` to the provider); throttling and server errors are retried three times with
//!   backoff, then the cached value, if any, keeps serving for up to `max_stale_secs` — and
//!   without one the lookup fails like an unreadable file (logged with the reason, `not-found`
//!   to the provider). Refused credentials are never retried.
//! - **Cache**: one entry per tenant and name, so a call reads AWS at most once per `ttl_secs`;
//!   concurrent misses of one secret make one request. A missing secret is remembered for
//!   `ttl_secs` too. Values are kept in buffers zeroized when dropped; nothing is logged but
//!   names.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use zeroize::Zeroizing;

use super::{SecretBackend, SecretsSection, valid_name};

/// What the AWS backend needs to reach the service.
#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// The region, e.g. `eu-west-1`.
    pub region: String,
    /// `https://secretsmanager.<region>.amazonaws.com`, or another endpoint (a VPC endpoint,
    /// an emulator on loopback).
    pub endpoint: String,
    /// The secret's name for a tenant's secret: `{tenant}` and `{name}` are replaced.
    pub name_template: String,
    /// How long a value is served from the cache before it is read again.
    pub ttl: Duration,
    /// How long a cached value keeps serving while AWS cannot be read.
    pub max_stale: Duration,
    /// Where the access key comes from.
    pub credentials: CredentialSource,
}

/// Where the AWS backend's access key comes from.
#[derive(Clone)]
pub enum CredentialSource {
    /// The process's environment or shared credentials file, read for every request
    /// ([`Credentials::load`]).
    Environment,
    /// This key.
    Static(Arc<Credentials>),
}

impl std::fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialSource::Environment => f.write_str("Environment"),
            CredentialSource::Static(c) => write!(f, "Static({})", c.access_key_id),
        }
    }
}

impl AwsConfig {
    /// The configuration `section` describes: its region, else `$AWS_REGION`, else
    /// `$AWS_DEFAULT_REGION`; its endpoint, else the region's.
    pub fn from_section(section: &SecretsSection) -> anyhow::Result<AwsConfig> {
        let region = section
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "[secrets] backend = \"aws-secrets-manager\" needs a region: set [secrets].region, or $AWS_REGION"
                )
            })?;
        let endpoint = section
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://secretsmanager.{region}.amazonaws.com"));
        if let Some(problem) = endpoint_problem(&endpoint) {
            anyhow::bail!("[secrets].endpoint: {problem}");
        }
        Ok(AwsConfig {
            region,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            name_template: section.name_template.clone(),
            ttl: Duration::from_secs(section.ttl_secs),
            max_stale: Duration::from_secs(section.max_stale_secs),
            credentials: CredentialSource::Environment,
        })
    }

    /// The secret's name in AWS for `tenant`'s `name`.
    pub fn secret_id(&self, tenant: &str, name: &str) -> String {
        self.name_template
            .replace("{tenant}", tenant)
            .replace("{name}", name)
    }
}

/// Why `endpoint` cannot be used: not an http(s) URL, or plain HTTP to anything but loopback
/// (secret values would cross the network in clear).
pub fn endpoint_problem(endpoint: &str) -> Option<String> {
    let Ok(url) = url::Url::parse(endpoint) else {
        return Some(format!(
            "`{endpoint}` is not a URL such as https://secretsmanager.eu-west-1.amazonaws.com"
        ));
    };
    match url.scheme() {
        "https" => None,
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            (!loopback).then(|| {
                format!(
                    "`{endpoint}` is plain HTTP to another machine: secret values would cross the network in clear; use https://"
                )
            })
        }
        other => Some(format!(
            "`{endpoint}` has scheme `{other}`; use https:// (or http:// to loopback)"
        )),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// One cached lookup.
struct Entry {
    value: Option<Zeroizing<Vec<u8>>>,
    fetched: Instant,
    /// When the last failed refresh happened: the next try waits [`RETRY_AFTER_FAILURE`].
    failed: Option<Instant>,
}

/// One secret's cache slot: held while it is looked up, so concurrent misses make one request.
type Slot = Arc<tokio::sync::Mutex<Option<Entry>>>;

/// How long a stale value is served before a failed refresh is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Attempts of one request while AWS throttles or fails.
const ATTEMPTS: u32 = 3;

/// The AWS Secrets Manager backend (see the module's documentation).
pub struct AwsSecretsManager {
    config: AwsConfig,
    client: reqwest::Client,
    entries: Mutex<HashMap<(String, String), Slot>>,
}

/// How a request failed.
#[derive(Debug)]
enum Failure {
    /// Worth trying again: throttled, a server error, a broken connection.
    Transient(String),
    /// Not worth it: refused credentials, a malformed request, a value that cannot be read.
    Permanent(String),
}

impl AwsSecretsManager {
    /// A backend for `config`, verifying the endpoint's certificate against the Web PKI.
    pub fn new(config: AwsConfig) -> anyhow::Result<AwsSecretsManager> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(greentic_tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("TLS versions: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| anyhow::anyhow!("building the AWS Secrets Manager client: {e}"))?;
        Ok(AwsSecretsManager {
            config,
            client,
            entries: Mutex::new(HashMap::new()),
        })
    }

    /// Reads `secret_id` from AWS: `Ok(None)` when it does not exist.
    async fn fetch(&self, secret_id: &str) -> Result<Option<Zeroizing<Vec<u8>>>, Failure> {
        let loaded;
        let credentials = match &self.config.credentials {
            CredentialSource::Static(c) => c.as_ref(),
            CredentialSource::Environment => {
                loaded = Credentials::load().map_err(Failure::Permanent)?;
                &loaded
            }
        };
        let body = serde_json::to_vec(&serde_json::json!({ "SecretId": secret_id }))
            .map_err(|e| Failure::Permanent(e.to_string()))?;
        let url = url::Url::parse(&format!("{}/", self.config.endpoint))
            .map_err(|e| Failure::Permanent(e.to_string()))?;
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let mut headers = vec![
            ("content-type".to_string(), JSON_1_1.to_string()),
            ("host".to_string(), host),
            (
                "x-amz-target".to_string(),
                "secretsmanager.GetSecretValue".to_string(),
            ),
        ];
        if let Some(token) = &credentials.session_token {
            headers.push(("x-amz-security-token".into(), token.to_string()));
        }
        let signed = sign(&Request {
            method: "POST",
            path: "/",
            query: "",
            headers,
            body: &body,
            region: &self.config.region,
            service: "secretsmanager",
            credentials,
            time: SystemTime::now(),
        });
        let mut request = self.client.post(url).body(body);
        for (name, value) in &signed {
            if name != "host" {
                request = request.header(name.as_str(), value.as_str());
            }
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Transient(format!("reaching {}: {e}", self.config.endpoint)))?;
        let status = response.status();
        let bytes = Zeroizing::new(
            response
                .bytes()
                .await
                .map_err(|e| Failure::Transient(format!("reading the answer: {e}")))?
                .to_vec(),
        );
        if status.is_success() {
            return decode_value(&bytes).map(Some).map_err(Failure::Permanent);
        }
        let kind = error_type(&bytes);
        let message = error_message(&bytes);
        match kind.as_str() {
            "ResourceNotFoundException" => Ok(None),
            "ThrottlingException"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "InternalServiceError"
            | "InternalServiceErrorException"
            | "ServiceUnavailable" => Err(Failure::Transient(format!("{kind}: {message}"))),
            _ if status.as_u16() == 429 || status.is_server_error() => Err(Failure::Transient(
                format!("HTTP {status}: {kind} {message}"),
            )),
            "" => Err(Failure::Permanent(format!("HTTP {status}"))),
            _ => Err(Failure::Permanent(format!("{kind}: {message}"))),
        }
    }

    /// [`Self::fetch`], tried again with backoff while the failure is transient.
    async fn fetch_with_retries(
        &self,
        secret_id: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, Failure> {
        let mut delay = Duration::from_millis(50);
        let mut attempt = 1;
        loop {
            match self.fetch(secret_id).await {
                Err(Failure::Transient(e)) if attempt < ATTEMPTS => {
                    tracing::debug!(secret = %secret_id, attempt, error = %e, "AWS Secrets Manager: trying again");
                    let jitter = Duration::from_millis(fastrand::u64(0..=delay.as_millis() as u64));
                    tokio::time::sleep(delay + jitter).await;
                    delay *= 4;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn entry(&self, tenant: &str, name: &str) -> Slot {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .entry((tenant.to_string(), name.to_string()))
            .or_default()
            .clone()
    }
}

#[async_trait::async_trait]
impl SecretBackend for AwsSecretsManager {
    async fn get(&self, tenant: &str, name: &str) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
        if !valid_name(name) || !valid_name(tenant) {
            return Ok(None);
        }
        let slot = self.entry(tenant, name);
        // One lookup per secret at a time: callers arriving while it runs wait for its answer.
        let mut entry = slot.lock().await;
        let now = Instant::now();
        if let Some(e) = entry.as_ref() {
            let fresh = now.duration_since(e.fetched) < self.config.ttl;
            let backing_off = e
                .failed
                .is_some_and(|f| now.duration_since(f) < RETRY_AFTER_FAILURE)
                && now.duration_since(e.fetched) < self.config.max_stale;
            if fresh || backing_off {
                return Ok(e.value.clone());
            }
        }
        let secret_id = self.config.secret_id(tenant, name);
        match self.fetch_with_retries(&secret_id).await {
            Ok(value) => {
                *entry = Some(Entry {
                    value: value.clone(),
                    fetched: now,
                    failed: None,
                });
                Ok(value)
            }
            Err(failure) => {
                let (transient, reason) = match failure {
                    Failure::Transient(r) => (true, r),
                    Failure::Permanent(r) => (false, r),
                };
                if let Some(e) = entry.as_mut()
                    && transient
                    && now.duration_since(e.fetched) < self.config.max_stale
                {
                    tracing::warn!(
                        tenant, secret = %secret_id, error = %reason,
                        age_secs = now.duration_since(e.fetched).as_secs(),
                        "AWS Secrets Manager cannot be read: the cached value keeps serving"
                    );
                    e.failed = Some(now);
                    return Ok(e.value.clone());
                }
                Err(std::io::Error::other(format!(
                    "AWS Secrets Manager, secret `{secret_id}` in {}: {reason}",
                    self.config.region
                )))
            }
        }
    }

    fn locate(&self, tenant: &str, name: &str) -> String {
        format!(
            "AWS Secrets Manager secret `{}` in {}",
            self.config.secret_id(tenant, name),
            self.config.region
        )
    }
}

const JSON_1_1: &str = "application/x-amz-json-1.1";

/// The value of a `GetSecretValue` answer: `SecretString` as its bytes, or `SecretBinary`
/// decoded.
fn decode_value(body: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    /// A string moved straight into a zeroizing buffer.
    struct Kept(Zeroizing<String>);
    impl<'de> serde::Deserialize<'de> for Kept {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Kept, D::Error> {
            String::deserialize(d).map(|s| Kept(Zeroizing::new(s)))
        }
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        secret_string: Option<Kept>,
        secret_binary: Option<Kept>,
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| format!("the answer is not GetSecretValue's JSON: {e}"))?;
    if let Some(Kept(s)) = &answer.secret_string {
        return Ok(Zeroizing::new(s.as_bytes().to_vec()));
    }
    if let Some(Kept(b)) = &answer.secret_binary {
        return base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .map(Zeroizing::new)
            .map_err(|e| format!("SecretBinary is not base64: {e}"));
    }
    Err("the answer holds neither SecretString nor SecretBinary".into())
}

/// `__type` of an error answer, without its namespace (`com.amazonaws…#ThrottlingException`).
fn error_type(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let kind = value["__type"]
        .as_str()
        .or_else(|| value["code"].as_str())
        .unwrap_or_default();
    kind.rsplit('#').next().unwrap_or(kind).to_string()
}

fn error_message(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    value["message"]
        .as_str()
        .or_else(|| value["Message"].as_str())
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

/// An access key.
pub struct Credentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Zeroizing<String>,
    /// The session token of temporary credentials.
    pub session_token: Option<Zeroizing<String>>,
}

impl Credentials {
    /// The process's credentials (see the module's documentation).
    pub fn load() -> Result<Credentials, String> {
        if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            return Ok(Credentials {
                access_key_id: id,
                secret_access_key: Zeroizing::new(secret),
                session_token: env("AWS_SESSION_TOKEN").map(Zeroizing::new),
            });
        }
        let path = env("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")))
            .ok_or_else(|| "no AWS credentials: set $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY, or $AWS_SHARED_CREDENTIALS_FILE".to_string())?;
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "no AWS credentials: $AWS_ACCESS_KEY_ID is not set and {} cannot be read ({e})",
                path.display()
            )
        })?);
        Self::parse(&text, &profile).ok_or_else(|| {
            format!(
                "no AWS credentials: {} has no [{profile}] with aws_access_key_id and aws_secret_access_key",
                path.display()
            )
        })
    }

    /// The credentials of `profile` in a shared credentials file's text.
    pub fn parse(text: &str, profile: &str) -> Option<Credentials> {
        let mut section = String::new();
        let (mut id, mut secret, mut token) = (None, None, None);
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.trim().to_string();
                continue;
            }
            if section != profile {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim().to_string();
            match key.trim() {
                "aws_access_key_id" => id = Some(value),
                "aws_secret_access_key" => secret = Some(Zeroizing::new(value)),
                "aws_session_token" => token = Some(Zeroizing::new(value)),
                _ => {}
            }
        }
        Some(Credentials {
            access_key_id: id?,
            secret_access_key: secret?,
            session_token: token,
        })
    }
}

/// What [`sign`] signs.
pub struct Request<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The URI path, already encoded.
    pub path: &'a str,
    /// The canonical query string (sorted, encoded), or empty.
    pub query: &'a str,
    /// Headers to sign (lower-case names); `host` must be among them.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: &'a [u8],
    /// The region.
    pub region: &'a str,
    /// The service, e.g. `secretsmanager`.
    pub service: &'a str,
    /// Who signs.
    pub credentials: &'a Credentials,
    /// When.
    pub time: SystemTime,
}

/// Signs `request` with AWS Signature Version 4: its headers with `x-amz-date` and
/// `authorization` added.
pub fn sign(request: &Request<'_>) -> Vec<(String, String)> {
    let (date, stamp) = amz_date(request.time);
    let mut headers = request.headers.clone();
    headers.push(("x-amz-date".into(), stamp.clone()));
    for (name, value) in headers.iter_mut() {
        *name = name.to_ascii_lowercase();
        *value = value.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    headers.sort();
    let signed_headers = headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        request.path,
        request.query,
        headers
            .iter()
            .map(|(n, v)| format!("{n}:{v}\n"))
            .collect::<String>(),
        signed_headers,
        hex::encode(ring::digest::digest(&ring::digest::SHA256, request.body))
    );
    let scope = format!("{date}/{}/{}/aws4_request", request.region, request.service);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
        hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes()
        ))
    );
    let hmac = |key: &[u8], data: &str| {
        ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
            data.as_bytes(),
        )
    };
    let secret = Zeroizing::new(format!(
        "AWS4{}",
        request.credentials.secret_access_key.as_str()
    ));
    let k_date = hmac(secret.as_bytes(), &date);
    let k_region = hmac(k_date.as_ref(), request.region);
    let k_service = hmac(k_region.as_ref(), request.service);
    let k_signing = hmac(k_service.as_ref(), "aws4_request");
    let signature = hex::encode(hmac(k_signing.as_ref(), &to_sign).as_ref());
    headers.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            request.credentials.access_key_id
        ),
    ));
    headers
}

/// `(YYYYMMDD, YYYYMMDDTHHMMSSZ)` of `time` in UTC.
fn amz_date(time: SystemTime) -> (String, String) {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let date = format!("{year:04}{month:02}{day:02}");
    let stamp = format!(
        "{date}T{:02}{:02}{:02}Z",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    );
    (date, stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_version_4_matches_the_published_example() {
        // The worked example of AWS's Signature Version 4 documentation (IAM ListUsers).
        let credentials = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Zeroizing::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
            session_token: None,
        };
        let signed = sign(&Request {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            headers: vec![
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded; charset=utf-8".into(),
                ),
                ("host".into(), "iam.amazonaws.com".into()),
            ],
            body: b"",
            region: "us-east-1",
            service: "iam",
            credentials: &credentials,
            // 2015-08-30T12:36:00Z
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160),
        });
        let auth = &signed.iter().find(|(n, _)| n == "authorization").unwrap().1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        let at = |secs| amz_date(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0).1, "19700101T000000Z");
        assert_eq!(at(951_782_400).1, "20000229T000000Z");
        assert_eq!(at(1_798_761_599).1, "20261231T235959Z");
    }

    #[test]
    fn the_shared_credentials_file_is_read_by_profile() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n[prod]\n# rotated\naws_access_key_id=C\naws_secret_access_key=D\naws_session_token=E\n";
        let prod = Credentials::parse(text, "prod").unwrap();
        assert_eq!(
            (prod.access_key_id.as_str(), prod.secret_access_key.as_str()),
            ("C", "D")
        );
        assert_eq!(prod.session_token.as_deref().map(String::as_str), Some("E"));
        assert_eq!(
            Credentials::parse(text, "default").unwrap().access_key_id,
            "A"
        );
        assert!(Credentials::parse(text, "staging").is_none());
    }

    #[test]
    fn errors_and_values_are_read_from_the_answer() {
        assert_eq!(
            error_type(br#"{"__type":"com.amazonaws.secretsmanager#ThrottlingException"}"#),
            "ThrottlingException"
        );
        assert_eq!(
            decode_value(br#"{"SecretBinary":"czNjcmV0"}"#)
                .unwrap()
                .as_slice(),
            b"s3cret"
        );
        assert_eq!(
            decode_value(br#"{"Name":"x","SecretString":"v"}"#)
                .unwrap()
                .as_slice(),
            b"v"
        );
        assert!(decode_value(b"{}").is_err());
    }

    #[test]
    fn plain_http_is_for_loopback_only() {
        assert!(endpoint_problem("https://secretsmanager.eu-west-1.amazonaws.com").is_none());
        assert!(endpoint_problem("http://127.0.0.1:4566").is_none());
        assert!(endpoint_problem("http://localhost:4566").is_none());
        assert!(
            endpoint_problem("http://10.0.0.5:4566")
                .unwrap()
                .contains("in clear")
        );
        assert!(endpoint_problem("ftp://x").is_some());
        assert!(endpoint_problem("not a url").is_some());
    }
}
