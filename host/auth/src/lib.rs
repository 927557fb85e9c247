//! Caller authentication: JWT bearer tokens (HS256 or ES256) with issuer, audience and expiry
//! checks. The tenant, team and user come from the verified claims only.

use std::time::{SystemTime, UNIX_EPOCH};

use std::collections::HashMap;

use greentic_bundle::{Bundle, CallerAuth, CertificateIdentity, JwtAlgorithm};
use greentic_tls::PeerIdentity;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Who is calling: the tenant, team and user of a verified token, and nothing a caller could
/// set otherwise. Calls the host makes itself (a schedule's fire, a queued delivery) name the
/// tenant they are made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Tenant id.
    pub tenant: String,
    /// Team.
    pub team: Option<String>,
    /// User.
    pub user: Option<String>,
}

/// The claims a caller's token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject (who the token was issued to).
    pub sub: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// Tenant id.
    pub tenant: String,
    /// Team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// User.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Why a caller was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token: send `Authorization: Bearer <jwt>`")]
    Missing,
    /// The token did not verify.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The key material could not be loaded.
    #[error("auth configuration: {0}")]
    Config(String),
    /// The credentials verified but do not admit this call: they disagree, name no caller,
    /// or are not the kind the tenant requires.
    #[error("{message}")]
    Refused {
        /// HTTP status: 401 when other credentials would be admitted, 403 when they conflict.
        status: u16,
        /// The error code of the answer.
        code: &'static str,
        /// What was wrong and what to do.
        message: String,
    },
}

impl AuthError {
    /// The HTTP status and error code of the answer to a call refused with this error.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            AuthError::Refused { status, code, .. } => (*status, code),
            _ => (401, "unauthenticated"),
        }
    }
}

/// Whether the verified client certificate `c` carries the identity `entry` names (a URI
/// exactly, a DNS name without regard to case).
fn carries(c: &PeerIdentity, entry: &CertificateIdentity) -> bool {
    match (&entry.uri, &entry.dns) {
        (Some(uri), _) => c.uris.iter().any(|u| u == uri),
        (None, Some(dns)) => c.dns_names.iter().any(|d| d.eq_ignore_ascii_case(dns)),
        (None, None) => false,
    }
}

/// Verifies (and, with the dev key, mints) tokens.
///
/// The keys are built once per `[auth]` configuration and key material and held for as long
/// as it is in force — never per check — and a reload that leaves both unchanged keeps the
/// same keys ([`Authenticator::reuse_or_load`]): the HS256 secret is read into a buffer zeroized
/// on drop, and the one copy `jsonwebtoken` keeps inside its key objects (which it cannot
/// zeroize) exists once per secret for the host's life.
pub struct Authenticator {
    /// SHA-256 of the `[auth]` settings and the key material they resolved to: a reload with
    /// the same fingerprint reuses these keys.
    fingerprint: [u8; 32],
    algorithm: Algorithm,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    validation: Validation,
    issuer: String,
    audience: String,
    max_lifetime_secs: u64,
    leeway_secs: u64,
    /// `[[auth.certificates]]`.
    certificates: Vec<CertificateIdentity>,
    /// Tenants whose `caller_auth` is not the default (`either`).
    policies: HashMap<String, CallerAuth>,
}

/// The HS256 key in a secret file or variable: its raw bytes, without the trailing line break
/// or spaces an editor adds (nothing else is changed: a binary key stays as it is).
fn hs256_secret(mut raw: Vec<u8>) -> Vec<u8> {
    while raw.last().is_some_and(|b| b.is_ascii_whitespace()) {
        if let Some(b) = raw.last_mut() {
            *b = 0;
        }
        raw.pop();
    }
    raw
}

/// What is wrong with the PEM key `pem`, with the command that fixes the usual cases.
fn key_problem(pem: &[u8], e: &jsonwebtoken::errors::Error) -> String {
    let text = String::from_utf8_lossy(pem);
    if text.contains("-----BEGIN EC PRIVATE KEY-----") {
        "it is an EC private key in SEC1 form (`BEGIN EC PRIVATE KEY`); convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt -in sec1.pem -out pkcs8.pem`".into()
    } else if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        "it is encrypted; decrypt it with `openssl pkcs8 -in encrypted.pem -out pkcs8.pem`".into()
    } else if text.contains("-----BEGIN RSA") || text.contains("-----BEGIN CERTIFICATE-----") {
        "it is an RSA key or a certificate, not a P-256 key".into()
    } else if !text.contains("-----BEGIN ") {
        "it is not PEM".into()
    } else {
        format!("it does not parse ({e})")
    }
}

/// The claims the host reads, as the token has them (any JSON type), so that a claim of the
/// wrong type is refused in words rather than with a parser's message; other claims are
/// skipped unread.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    tenant: serde_json::Value,
    #[serde(default)]
    team: serde_json::Value,
    #[serde(default)]
    user: serde_json::Value,
    #[serde(default)]
    iat: serde_json::Value,
    #[serde(default)]
    exp: serde_json::Value,
}

/// The claims the host reads from a verified token, each checked with a refusal in words.
struct ClaimsRead {
    tenant: String,
    team: Option<String>,
    user: Option<String>,
    iat: u64,
    exp: u64,
}

/// A claim as a refusal quotes it: JSON, at most 128 characters (the rest is the caller's).
fn quoted(value: &serde_json::Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(128) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

impl ClaimsRead {
    fn from(claims: RawClaims) -> Result<ClaimsRead, AuthError> {
        use serde_json::Value;
        let invalid = |m: String| AuthError::Invalid(m);
        let optional = |name: &str, value: Value| match value {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            other => Err(invalid(format!(
                "the token's `{name}` claim is {}, not a string",
                quoted(&other)
            ))),
        };
        let tenant = match optional("tenant", claims.tenant)? {
            Some(t) if !t.is_empty() => t,
            _ => {
                return Err(invalid(
                    "the token names no tenant: its `tenant` claim is missing or empty; issue it for the tenant that calls".into(),
                ));
            }
        };
        let seconds = |name: &str, value: &Value| match value {
            Value::Number(n) => n.as_u64().ok_or_else(|| {
                invalid(format!(
                    "the token's `{name}` claim is {n}, not a number of seconds since the epoch"
                ))
            }),
            Value::Null => Err(invalid(format!(
                "the token has no `{name}` claim; this host requires exp, iat, iss, aud and tenant"
            ))),
            other => Err(invalid(format!(
                "the token's `{name}` claim is {}, not a number of seconds since the epoch",
                quoted(other)
            ))),
        };
        Ok(ClaimsRead {
            iat: seconds("iat", &claims.iat)?,
            exp: seconds("exp", &claims.exp)?,
            team: optional("team", claims.team)?,
            user: optional("user", claims.user)?,
            tenant,
        })
    }
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
fn rfc3339(secs: u64) -> String {
    greentic_registry::rfc3339(i64::try_from(secs).unwrap_or(i64::MAX))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The tenants whose `caller_auth` is not the default, in order.
fn policies(bundle: &Bundle) -> Vec<(String, CallerAuth)> {
    bundle
        .file
        .tenants
        .iter()
        .filter(|(_, t)| t.caller_auth != CallerAuth::Either)
        .map(|(id, t)| (id.clone(), t.caller_auth))
        .collect()
}

/// One caller from a token and a certificate that both name one: the same tenant, and the
/// same team and user where both say.
fn agree(
    token: &Caller,
    cert: &Caller,
    certificate: Option<&PeerIdentity>,
) -> Result<Caller, AuthError> {
    let described = certificate.map(|c| c.describe()).unwrap_or_default();
    let conflict = |what: &str, t: &str, c: &str| AuthError::Refused {
        status: 403,
        code: "credential-mismatch",
        message: format!(
            "the token's {what} is `{t}` but the client certificate ({described}) is {what} `{c}`; a call carries one identity — send the token of the certificate's caller, or neither credential of the other"
        ),
    };
    if token.tenant != cert.tenant {
        return Err(conflict("tenant", &token.tenant, &cert.tenant));
    }
    for (what, t, c) in [
        ("team", &token.team, &cert.team),
        ("user", &token.user, &cert.user),
    ] {
        if let (Some(t), Some(c)) = (t, c)
            && t != c
        {
            return Err(conflict(what, t, c));
        }
    }
    Ok(Caller {
        tenant: token.tenant.clone(),
        team: token.team.clone().or_else(|| cert.team.clone()),
        user: token.user.clone().or_else(|| cert.user.clone()),
    })
}

/// The key material `[auth]` names, read into buffers zeroized on drop: the HS256 secret, or
/// the ES256 public key and optional dev private key (PEM).
struct Material {
    primary: zeroize::Zeroizing<Vec<u8>>,
    dev: Option<zeroize::Zeroizing<Vec<u8>>>,
}

impl Material {
    fn read(bundle: &Bundle) -> Result<Material, AuthError> {
        let a = &bundle.file.auth;
        let read = |path: &std::path::Path| {
            let full = bundle.path(path);
            std::fs::read(&full)
                .map(zeroize::Zeroizing::new)
                .map_err(|e| AuthError::Config(format!("reading {}: {e}", full.display())))
        };
        match a.algorithm {
            JwtAlgorithm::HS256 => {
                let raw = match (&a.secret_env, &a.secret_file) {
                    (Some(var), _) => zeroize::Zeroizing::new(
                        std::env::var_os(var)
                            .ok_or_else(|| {
                                AuthError::Config(format!(
                                    "environment variable {var} (auth.secret_env) is not set"
                                ))
                            })?
                            .into_encoded_bytes(),
                    ),
                    (None, Some(file)) => read(file)?,
                    (None, None) => {
                        return Err(AuthError::Config(
                            "HS256 needs secret_env or secret_file".into(),
                        ));
                    }
                };
                let secret = zeroize::Zeroizing::new(hs256_secret(raw.to_vec()));
                if secret.len() < 32 {
                    return Err(AuthError::Config(format!(
                        "the HS256 secret is {} bytes; use at least 32 random bytes",
                        secret.len()
                    )));
                }
                Ok(Material {
                    primary: secret,
                    dev: None,
                })
            }
            JwtAlgorithm::ES256 => {
                let public = a
                    .public_key_file
                    .as_ref()
                    .ok_or_else(|| AuthError::Config("ES256 needs public_key_file".into()))?;
                Ok(Material {
                    primary: read(public)?,
                    dev: a.dev_private_key_file.as_deref().map(read).transpose()?,
                })
            }
        }
    }

    /// The fingerprint of `bundle`'s `[auth]` and tenants' `caller_auth`, resolved to this
    /// material.
    fn fingerprint(&self, bundle: &Bundle) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let settings = serde_json::to_vec(&bundle.file.auth).unwrap_or_default();
        let policies = serde_json::to_vec(&policies(bundle)).unwrap_or_default();
        for part in [
            settings.as_slice(),
            policies.as_slice(),
            self.primary.as_slice(),
            self.dev.as_deref().map_or(&[][..], |d| d.as_slice()),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }
}

impl Authenticator {
    /// Loads the keys named in the bundle's `[auth]`.
    pub fn from_bundle(bundle: &Bundle) -> Result<Authenticator, AuthError> {
        let material = Material::read(bundle)?;
        Self::build(bundle, &material)
    }

    /// `current` when `bundle`'s `[auth]` and the key material it names are unchanged (the
    /// same keys stay in use: no new copy of a secret is made); otherwise the keys `bundle`
    /// names, loaded anew.
    pub fn reuse_or_load(
        bundle: &Bundle,
        current: Option<&std::sync::Arc<Authenticator>>,
    ) -> Result<std::sync::Arc<Authenticator>, AuthError> {
        let material = Material::read(bundle)?;
        if let Some(current) = current
            && current.fingerprint == material.fingerprint(bundle)
        {
            return Ok(current.clone());
        }
        Ok(std::sync::Arc::new(Self::build(bundle, &material)?))
    }

    fn build(bundle: &Bundle, material: &Material) -> Result<Authenticator, AuthError> {
        let a = &bundle.file.auth;
        let (algorithm, decoding, encoding) = match a.algorithm {
            JwtAlgorithm::HS256 => (
                Algorithm::HS256,
                DecodingKey::from_secret(&material.primary),
                Some(EncodingKey::from_secret(&material.primary)),
            ),
            JwtAlgorithm::ES256 => {
                let decoding = DecodingKey::from_ec_pem(&material.primary).map_err(|e| {
                    AuthError::Config(format!(
                        "public_key_file is not a P-256 public key in PEM (`-----BEGIN PUBLIC KEY-----`): {}; derive one from the private key with `openssl ec -in private.pem -pubout -out public.pem`",
                        key_problem(&material.primary, &e)
                    ))
                })?;
                let encoding = match &material.dev {
                    Some(pem) => Some(EncodingKey::from_ec_pem(pem).map_err(|e| {
                        AuthError::Config(format!(
                            "dev_private_key_file is not a P-256 private key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`): {}",
                            key_problem(pem, &e)
                        ))
                    })?),
                    None => None,
                };
                (Algorithm::ES256, decoding, encoding)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&a.issuer]);
        validation.set_audience(&[&a.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = a.leeway_secs;
        Ok(Authenticator {
            fingerprint: material.fingerprint(bundle),
            algorithm,
            decoding,
            encoding,
            validation,
            issuer: a.issuer.clone(),
            audience: a.audience.clone(),
            max_lifetime_secs: a.max_token_lifetime_secs,
            leeway_secs: a.leeway_secs,
            certificates: a.certificates.clone(),
            policies: policies(bundle).into_iter().collect(),
        })
    }

    /// Authenticates a call from its `Authorization` header and the client certificate the
    /// listener verified, if any: each credential names a caller (a token by its claims, a
    /// certificate through `[[auth.certificates]]`); when both do they must agree, and the
    /// tenant's `caller_auth` says which it requires.
    pub fn authenticate(
        &self,
        header: Option<&str>,
        certificate: Option<&PeerIdentity>,
    ) -> Result<Caller, AuthError> {
        let by_token = match header {
            Some(h) if !h.trim().is_empty() => Some(self.verify_header(Some(h))?),
            _ => None,
        };
        let by_cert = match certificate {
            Some(c) => self.certificate_caller(c)?,
            None => None,
        };
        let caller = match (&by_token, &by_cert) {
            (None, None) => {
                return Err(match certificate {
                    Some(c) if !self.certificates.is_empty() => AuthError::Refused {
                        status: 401,
                        code: "unauthenticated",
                        message: format!(
                            "the client certificate ({}) is not listed in [[auth.certificates]]; send `Authorization: Bearer <jwt>`, or present a listed certificate",
                            c.describe()
                        ),
                    },
                    None if !self.certificates.is_empty() => AuthError::Refused {
                        status: 401,
                        code: "unauthenticated",
                        message: "no credentials: send `Authorization: Bearer <jwt>`, or present a client certificate listed in [[auth.certificates]]".into(),
                    },
                    _ => AuthError::Missing,
                });
            }
            (Some(t), None) => t.clone(),
            (None, Some(c)) => c.clone(),
            (Some(t), Some(c)) => agree(t, c, certificate)?,
        };
        let policy = self
            .policies
            .get(&caller.tenant)
            .copied()
            .unwrap_or_default();
        let missing = match policy {
            CallerAuth::Either => None,
            CallerAuth::Token => by_token.is_none().then_some("a bearer token"),
            CallerAuth::Certificate => by_cert
                .is_none()
                .then_some("a client certificate listed for it in [[auth.certificates]]"),
            CallerAuth::Both => match (&by_token, &by_cert) {
                (Some(_), Some(_)) => None,
                (None, _) => Some("a bearer token as well as its client certificate"),
                (_, None) => Some(
                    "a client certificate listed for it in [[auth.certificates]] as well as a bearer token",
                ),
            },
        };
        if let Some(missing) = missing {
            return Err(AuthError::Refused {
                status: 401,
                code: "unauthenticated",
                message: format!(
                    "tenant `{}` is called with {missing} (caller_auth = \"{}\")",
                    caller.tenant,
                    policy.name()
                ),
            });
        }
        Ok(caller)
    }

    /// The caller a verified certificate names, if an `[[auth.certificates]]` entry lists one
    /// of its identities; refused when its identities name different callers.
    fn certificate_caller(&self, c: &PeerIdentity) -> Result<Option<Caller>, AuthError> {
        let mut found: Option<(&CertificateIdentity, Caller)> = None;
        for entry in self.certificates.iter().filter(|e| carries(c, e)) {
            let caller = Caller {
                tenant: entry.tenant.clone(),
                team: entry.team.clone(),
                user: entry.user.clone(),
            };
            match &found {
                Some((first, other)) if *other != caller => {
                    return Err(AuthError::Refused {
                        status: 403,
                        code: "ambiguous-certificate",
                        message: format!(
                            "the client certificate carries {} and {}, which [[auth.certificates]] gives to different callers; issue it one identity",
                            first.describe(),
                            entry.describe()
                        ),
                    });
                }
                Some(_) => {}
                None => found = Some((entry, caller)),
            }
        }
        Ok(found.map(|(_, caller)| caller))
    }

    /// The longest lifetime (`exp - iat`) a token may have, in seconds.
    pub fn max_lifetime_secs(&self) -> u64 {
        self.max_lifetime_secs
    }

    /// Verifies an `Authorization` header value and returns the caller.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        let token = header
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let data = jsonwebtoken::decode::<RawClaims>(token, &self.decoding, &self.validation)
            .map_err(|e| AuthError::Invalid(self.explain(token, &e)))?;
        let c = ClaimsRead::from(data.claims)?;
        if c.iat > now_secs().saturating_add(self.leeway_secs) {
            return Err(AuthError::Invalid(format!(
                "the token was issued in the future, at {} (iat): check the issuer's clock",
                rfc3339(c.iat)
            )));
        }
        let lifetime = c.exp.saturating_sub(c.iat);
        if lifetime > self.max_lifetime_secs {
            return Err(AuthError::Invalid(format!(
                "the token is valid for {lifetime} s (exp - iat), longer than this host accepts ({} s, auth.max_token_lifetime_secs); issue shorter-lived tokens",
                self.max_lifetime_secs
            )));
        }
        Ok(Caller {
            tenant: c.tenant,
            team: c.team,
            user: c.user,
        })
    }

    /// Why `token` was refused, in words: what the token says against what this host expects.
    /// The claims quoted are the caller's own (read without trusting them, only to explain).
    fn explain(&self, token: &str, e: &jsonwebtoken::errors::Error) -> String {
        use jsonwebtoken::errors::ErrorKind;
        let claims = jsonwebtoken::dangerous::insecure_decode_claims::<serde_json::Value>(token)
            .ok()
            .unwrap_or_default();
        let claim = |name: &str| claims.get(name).cloned().unwrap_or(serde_json::Value::Null);
        match e.kind() {
            ErrorKind::ExpiredSignature => {
                let exp = claim("exp").as_u64().unwrap_or(0);
                format!(
                    "the token expired at {} ({} s ago; this host allows {} s of clock skew, auth.leeway_secs): get a new token",
                    rfc3339(exp),
                    now_secs().saturating_sub(exp),
                    self.leeway_secs
                )
            }
            ErrorKind::ImmatureSignature => format!(
                "the token is not valid before {} (nbf): check the issuer's clock, or wait",
                rfc3339(claim("nbf").as_u64().unwrap_or(0))
            ),
            ErrorKind::InvalidIssuer => format!(
                "the token's issuer is {}; this host expects `{}` (auth.issuer)",
                quoted(&claim("iss")),
                self.issuer
            ),
            ErrorKind::InvalidAudience => format!(
                "the token's audience is {}; this host expects `{}` (auth.audience)",
                quoted(&claim("aud")),
                self.audience
            ),
            ErrorKind::InvalidAlgorithm => {
                let alg = jsonwebtoken::decode_header(token)
                    .map(|h| format!("{:?}", h.alg))
                    .unwrap_or_else(|_| "an unknown algorithm".into());
                format!(
                    "the token is signed with {alg}; this host accepts {:?} only (auth.algorithm)",
                    self.algorithm
                )
            }
            ErrorKind::InvalidSignature => {
                "the token's signature does not verify with this host's key (it was signed with another key, or altered)".into()
            }
            ErrorKind::MissingRequiredClaim(name) => {
                format!("the token has no `{name}` claim; this host requires exp, iss, aud and tenant")
            }
            ErrorKind::InvalidClaimFormat(name) => format!(
                "the token's `{name}` claim is {}, not a number of seconds since the epoch",
                quoted(&claim(name))
            ),
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Utf8(_)
            | ErrorKind::Json(_) => {
                "not a JWT: expected three base64url parts (header.claims.signature) with JSON header and claims".into()
            }
            _ => format!("the token does not verify: {e}"),
        }
    }

    /// Mints a token with the bundle's dev key (HS256 secret or ES256 `dev_private_key_file`).
    pub fn mint(
        &self,
        tenant: &str,
        team: Option<&str>,
        user: Option<&str>,
        ttl_secs: u64,
    ) -> Result<String, AuthError> {
        let key = self.encoding.as_ref().ok_or_else(|| {
            AuthError::Config(
                "no signing key: ES256 bundles need auth.dev_private_key_file to mint tokens"
                    .into(),
            )
        })?;
        if ttl_secs > self.max_lifetime_secs {
            return Err(AuthError::Config(format!(
                "a {ttl_secs} s token would be refused: the bundle's auth.max_token_lifetime_secs is {}",
                self.max_lifetime_secs
            )));
        }
        let now = now_secs();
        let claims = Claims {
            sub: user.unwrap_or(tenant).to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + ttl_secs,
            iat: now,
            tenant: tenant.to_string(),
            team: team.map(str::to_string),
            user: user.map(str::to_string),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key)
            .map_err(|e| AuthError::Config(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A P-256 key pair generated for these tests only.
    const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgucrvJ2E4HnuLFTLx
FiQT9Fb+vqpJiFlVDRndsxo0N/mhRANCAATFxtLu4ehflZHP22j4a6im+k6NOiIW
FvenK0qAREe1Zm9lBJzv246buXznEb3xQ0PQlr6VUed1j8jTfYyDw5sB
-----END PRIVATE KEY-----
";
    const PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAExcbS7uHoX5WRz9to+GuopvpOjToi
Fhb3pytKgERHtWZvZQSc79uOm7l85xG98UND0Ja+lVHndY/I032Mg8ObAQ==
-----END PUBLIC KEY-----
";

    fn bundle(dir: &std::path::Path, auth: &str) -> Bundle {
        let text = format!(
            "{auth}\n[providers.p]\nsource = \"p.wasm\"\n[tenants.acme]\n[tenants.globex]\n"
        );
        std::fs::write(dir.join("greentic.toml"), text).unwrap();
        Bundle::load(dir).unwrap()
    }

    #[test]
    fn es256_tokens_round_trip_and_carry_the_claims() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("es.pub"), PUBLIC).unwrap();
        std::fs::write(dir.path().join("es.key"), PRIVATE).unwrap();
        let b = bundle(
            dir.path(),
            "[auth]\nalgorithm = \"ES256\"\nissuer = \"i\"\naudience = \"a\"\npublic_key_file = \"es.pub\"\ndev_private_key_file = \"es.key\"",
        );
        let auth = Authenticator::from_bundle(&b).unwrap();
        let token = auth.mint("acme", Some("ops"), Some("alice"), 60).unwrap();
        let caller = auth
            .verify_header(Some(&format!("Bearer {token}")))
            .unwrap();
        assert_eq!(
            caller,
            Caller {
                tenant: "acme".into(),
                team: Some("ops".into()),
                user: Some("alice".into())
            }
        );
        // A token signed with HS256 is refused by an ES256 host (no algorithm confusion).
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"iss": "i", "aud": "a", "exp": u64::MAX / 2, "tenant": "acme", "sub": "x", "iat": 0}),
            &EncodingKey::from_secret(PUBLIC.as_bytes()),
        )
        .unwrap();
        assert!(auth.verify_header(Some(&format!("Bearer {hs}"))).is_err());
    }

    fn hs256(dir: &std::path::Path, extra: &str) -> Authenticator {
        std::fs::write(dir.join("secret"), "0123456789abcdef0123456789abcdef\n").unwrap();
        let b = bundle(
            dir,
            &format!(
                "[auth]\nalgorithm = \"HS256\"\nissuer = \"i\"\naudience = \"a\"\nsecret_file = \"secret\"\nleeway_secs = 5\n{extra}"
            ),
        );
        Authenticator::from_bundle(&b).unwrap()
    }

    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap()
    }

    #[test]
    fn not_before_and_the_longest_lifetime_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let auth = hs256(dir.path(), "max_token_lifetime_secs = 3600");
        let now = now_secs();
        let claims = |iat: u64, exp: u64, nbf: Option<u64>| {
            let mut c = serde_json::json!({"iss": "i", "aud": "a", "sub": "s", "tenant": "acme", "iat": iat, "exp": exp});
            if let Some(nbf) = nbf {
                c["nbf"] = nbf.into();
            }
            format!("Bearer {}", signed(c))
        };
        auth.verify_header(Some(&claims(now, now + 600, None)))
            .unwrap();
        auth.verify_header(Some(&claims(now, now + 600, Some(now))))
            .unwrap();
        let e = auth
            .verify_header(Some(&claims(now, now + 600, Some(now + 300))))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the token is not valid before "),
            "not yet valid: {e}"
        );
        let e = auth
            .verify_header(Some(&claims(now, now + 7200, None)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("valid for 7200 s") && e.contains("3600"), "{e}");
        let e = auth
            .verify_header(Some(&claims(now + 600, now + 900, None)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("issued in the future"), "{e}");
        // Minting past the limit is refused up front, naming the setting.
        let e = auth.mint("acme", None, None, 7200).unwrap_err().to_string();
        assert!(e.contains("max_token_lifetime_secs"), "{e}");
        auth.mint("acme", None, None, 3600).unwrap();
    }

    #[test]
    fn keys_are_kept_while_the_configuration_and_secret_are_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[auth]\nalgorithm = \"HS256\"\nissuer = \"i\"\naudience = \"a\"\nsecret_file = \"secret\"";
        std::fs::write(
            dir.path().join("secret"),
            "0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        let b = bundle(dir.path(), text);
        let first = Authenticator::reuse_or_load(&b, None).unwrap();
        // A reload that changes nothing of [auth] or its secret keeps the very same keys: no
        // new copy of the secret is made.
        let again = Authenticator::reuse_or_load(&b, Some(&first)).unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &again));
        // A rotated secret, or another setting, makes new keys.
        std::fs::write(
            dir.path().join("secret"),
            "fedcba9876543210fedcba9876543210",
        )
        .unwrap();
        let rotated = Authenticator::reuse_or_load(&b, Some(&first)).unwrap();
        assert!(!std::sync::Arc::ptr_eq(&first, &rotated));
        let other = bundle(
            dir.path(),
            &text.replace("audience = \"a\"", "audience = \"b\""),
        );
        let changed = Authenticator::reuse_or_load(&other, Some(&rotated)).unwrap();
        assert!(!std::sync::Arc::ptr_eq(&rotated, &changed));
    }

    #[test]
    fn an_hs256_secret_file_is_measured_on_its_raw_bytes() {
        let dir = tempfile::tempdir().unwrap();
        // Eleven bytes that are not UTF-8: read lossily they became 33 bytes and passed.
        std::fs::write(dir.path().join("short"), [0xffu8; 11]).unwrap();
        let b = bundle(
            dir.path(),
            "[auth]\nalgorithm = \"HS256\"\nissuer = \"i\"\naudience = \"a\"\nsecret_file = \"short\"",
        );
        let e = Authenticator::from_bundle(&b).err().unwrap().to_string();
        assert!(e.contains("is 11 bytes"), "{e}");
        // A binary key of 32 bytes is used as it is (a trailing newline is not part of it).
        let key: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37) | 0x80).collect();
        let mut file = key.clone();
        file.push(b'\n');
        std::fs::write(dir.path().join("binary"), &file).unwrap();
        let b = bundle(
            dir.path(),
            "[auth]\nalgorithm = \"HS256\"\nissuer = \"i\"\naudience = \"a\"\nsecret_file = \"binary\"",
        );
        let auth = Authenticator::from_bundle(&b).unwrap();
        let now = now_secs();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"iss": "i", "aud": "a", "sub": "s", "tenant": "acme", "iat": now, "exp": now + 60}),
            &EncodingKey::from_secret(&key),
        )
        .unwrap();
        auth.verify_header(Some(&format!("Bearer {token}")))
            .unwrap();
    }

    #[test]
    fn short_hs256_secrets_and_missing_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("short"), "tooshort").unwrap();
        let b = bundle(
            dir.path(),
            "[auth]\nalgorithm = \"HS256\"\nissuer = \"i\"\naudience = \"a\"\nsecret_file = \"short\"",
        );
        let e = Authenticator::from_bundle(&b).err().unwrap().to_string();
        assert!(e.contains("at least 32"), "{e}");
        let b = bundle(
            dir.path(),
            "[auth]\nalgorithm = \"ES256\"\nissuer = \"i\"\naudience = \"a\"\npublic_key_file = \"missing.pub\"",
        );
        let e = Authenticator::from_bundle(&b).err().unwrap().to_string();
        assert!(e.contains("missing.pub"), "{e}");
    }

    /// An HS256 authenticator for a bundle with `[host.tls]` asking for client certificates,
    /// the `[[auth.certificates]]` entries `certificates` and the tenants `tenants` (TOML).
    fn with_certificates(
        dir: &std::path::Path,
        certificates: &str,
        tenants: &str,
    ) -> Authenticator {
        std::fs::write(dir.join("secret"), "0123456789abcdef0123456789abcdef\n").unwrap();
        let text = format!(
            "[host.tls]\ncert = \"s.crt\"\nkey = \"s.key\"\nclient_ca = \"ca.crt\"\nclient_auth = \"optional\"\n\n[auth]\nalgorithm = \"HS256\"\nissuer = \"i\"\naudience = \"a\"\nsecret_file = \"secret\"\n\n{certificates}\n[providers.p]\nsource = \"p.wasm\"\n{tenants}\n"
        );
        std::fs::write(dir.join("greentic.toml"), text).unwrap();
        Authenticator::from_bundle(&Bundle::load(dir).unwrap()).unwrap()
    }

    const CERTS: &str = "[[auth.certificates]]\nuri = \"spiffe://acme.example/team/billing\"\ntenant = \"acme\"\nteam = \"billing\"\n\n[[auth.certificates]]\ndns = \"worker.globex.example\"\ntenant = \"globex\"\nuser = \"worker\"\n";

    fn presented(uris: &[String], dns: &[String]) -> Option<PeerIdentity> {
        Some(PeerIdentity {
            uris: uris.to_vec(),
            dns_names: dns.to_vec(),
        })
    }

    #[test]
    fn a_listed_certificate_is_a_caller_and_must_agree_with_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let auth = with_certificates(dir.path(), CERTS, "[tenants.acme]\n[tenants.globex]\n");
        let billing = ["spiffe://acme.example/team/billing".to_string()];
        let worker = ["WORKER.globex.example".to_string()];
        // The certificate alone: its entry's caller (DNS names compare without case).
        let c = auth
            .authenticate(None, presented(&billing, &[]).as_ref())
            .unwrap();
        assert_eq!(
            (c.tenant.as_str(), c.team.as_deref()),
            ("acme", Some("billing"))
        );
        let c = auth
            .authenticate(None, presented(&[], &worker).as_ref())
            .unwrap();
        assert_eq!(
            (c.tenant.as_str(), c.user.as_deref()),
            ("globex", Some("worker"))
        );
        // With a token of the same tenant: one caller, the token's fields first.
        let acme = format!(
            "Bearer {}",
            auth.mint("acme", None, Some("ann"), 60).unwrap()
        );
        let c = auth
            .authenticate(Some(&acme), presented(&billing, &[]).as_ref())
            .unwrap();
        assert_eq!(
            (c.tenant.as_str(), c.team.as_deref(), c.user.as_deref()),
            ("acme", Some("billing"), Some("ann"))
        );
        // globex's certificate with acme's token: refused, both named.
        let e = auth
            .authenticate(Some(&acme), presented(&[], &worker).as_ref())
            .unwrap_err();
        assert_eq!(e.status_and_code(), (403, "credential-mismatch"));
        assert!(
            e.to_string().contains("`acme`") && e.to_string().contains("`globex`"),
            "{e}"
        );
        // Same tenant, another team.
        let ops = format!(
            "Bearer {}",
            auth.mint("acme", Some("ops"), None, 60).unwrap()
        );
        let e = auth
            .authenticate(Some(&ops), presented(&billing, &[]).as_ref())
            .unwrap_err();
        assert_eq!(e.status_and_code(), (403, "credential-mismatch"));
        // A certificate nobody listed, without a token: refused, naming what it carries.
        let stranger = ["spiffe://elsewhere.example/x".to_string()];
        let e = auth
            .authenticate(None, presented(&stranger, &[]).as_ref())
            .unwrap_err();
        assert_eq!(e.status_and_code(), (401, "unauthenticated"));
        assert!(
            e.to_string().contains("uri:spiffe://elsewhere.example/x"),
            "{e}"
        );
        // … with a token: the token is the caller.
        let c = auth
            .authenticate(Some(&acme), presented(&stranger, &[]).as_ref())
            .unwrap();
        assert_eq!(c.tenant, "acme");
        // A bad token is refused even beside a good certificate.
        let e = auth
            .authenticate(Some("Bearer nope"), presented(&billing, &[]).as_ref())
            .unwrap_err();
        assert!(matches!(e, AuthError::Invalid(_)), "{e}");
        // Nothing at all: both ways to authenticate are named.
        let e = auth.authenticate(None, None).unwrap_err();
        assert_eq!(e.status_and_code(), (401, "unauthenticated"));
        assert!(e.to_string().contains("client certificate"), "{e}");
    }

    #[test]
    fn a_certificate_naming_two_callers_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let auth = with_certificates(dir.path(), CERTS, "[tenants.acme]\n[tenants.globex]\n");
        let e = auth
            .authenticate(
                None,
                presented(
                    &["spiffe://acme.example/team/billing".to_string()],
                    &["worker.globex.example".to_string()],
                )
                .as_ref(),
            )
            .unwrap_err();
        assert_eq!(e.status_and_code(), (403, "ambiguous-certificate"));
    }

    #[test]
    fn a_tenant_says_which_credentials_its_calls_carry() {
        let dir = tempfile::tempdir().unwrap();
        let auth = with_certificates(
            dir.path(),
            CERTS,
            "[tenants.acme]\ncaller_auth = \"certificate\"\n[tenants.globex]\ncaller_auth = \"both\"\n[tenants.initech]\ncaller_auth = \"token\"\n",
        );
        let billing = ["spiffe://acme.example/team/billing".to_string()];
        let worker = ["worker.globex.example".to_string()];
        let token = |t: &str| format!("Bearer {}", auth.mint(t, None, None, 60).unwrap());
        // certificate: a token alone is refused, the certificate admitted.
        let e = auth.authenticate(Some(&token("acme")), None).unwrap_err();
        assert_eq!(e.status_and_code(), (401, "unauthenticated"));
        assert!(
            e.to_string().contains("caller_auth = \"certificate\""),
            "{e}"
        );
        assert!(
            auth.authenticate(None, presented(&billing, &[]).as_ref())
                .is_ok()
        );
        // both: either alone is refused.
        assert!(auth.authenticate(Some(&token("globex")), None).is_err());
        assert!(
            auth.authenticate(None, presented(&[], &worker).as_ref())
                .is_err()
        );
        assert!(
            auth.authenticate(Some(&token("globex")), presented(&[], &worker).as_ref())
                .is_ok()
        );
        // token: fine with a token (no certificate is listed for initech at all).
        assert!(auth.authenticate(Some(&token("initech")), None).is_ok());
    }

    #[test]
    fn a_changed_caller_auth_makes_a_new_authenticator() {
        let dir = tempfile::tempdir().unwrap();
        let first = std::sync::Arc::new(with_certificates(
            dir.path(),
            CERTS,
            "[tenants.acme]\n[tenants.globex]\n",
        ));
        let text = std::fs::read_to_string(dir.path().join("greentic.toml"))
            .unwrap()
            .replace(
                "[tenants.acme]\n",
                "[tenants.acme]\ncaller_auth = \"certificate\"\n",
            );
        std::fs::write(dir.path().join("greentic.toml"), text).unwrap();
        let bundle = Bundle::load(dir.path()).unwrap();
        let second = Authenticator::reuse_or_load(&bundle, Some(&first)).unwrap();
        assert!(!std::sync::Arc::ptr_eq(&first, &second));
        let acme = format!("Bearer {}", second.mint("acme", None, None, 60).unwrap());
        assert!(first.authenticate(Some(&acme), None).is_ok());
        assert!(second.authenticate(Some(&acme), None).is_err());
    }
}
