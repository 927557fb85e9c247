//! `[auth]`: how callers' bearer tokens are verified.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[auth]`: how callers' bearer tokens are verified.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `HS256` (shared secret) or `ES256` (ECDSA P-256 public key).
    pub algorithm: JwtAlgorithm,
    /// Required `iss` claim.
    pub issuer: String,
    /// Required `aud` claim.
    pub audience: String,
    /// HS256: environment variable holding the shared secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// HS256: file holding the shared secret (relative to the bundle).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// ES256: PEM public key file (relative to the bundle).
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// ES256: PEM private key file used only by `greentic-host token` (demos and tests).
    #[serde(default)]
    pub dev_private_key_file: Option<PathBuf>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// The longest lifetime (`exp - iat`) a token may have, in seconds; longer-lived tokens
    /// are refused, however they were signed.
    #[serde(default = "default_max_token_lifetime")]
    pub max_token_lifetime_secs: u64,
    /// `[[auth.certificates]]`: client-certificate identities and whom they authenticate (the
    /// listener verifies the certificate against `[host.tls].client_ca` first). A tenant is
    /// called by certificate only through identities listed here for it.
    #[serde(default)]
    pub certificates: Vec<CertificateIdentity>,
}

/// `[[auth.certificates]]`: a client-certificate identity and the caller it is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateIdentity {
    /// A URI SAN the certificate must carry, such as `spiffe://acme.example/team/billing`.
    #[serde(default)]
    pub uri: Option<String>,
    /// A DNS SAN the certificate must carry (exactly; no wildcards).
    #[serde(default)]
    pub dns: Option<String>,
    /// The tenant its holder calls as.
    pub tenant: String,
    /// The team, as a token's `team` claim.
    #[serde(default)]
    pub team: Option<String>,
    /// The user, as a token's `user` claim.
    #[serde(default)]
    pub user: Option<String>,
}

impl CertificateIdentity {
    /// The identity as refusals name it: `uri:…` or `dns:…`.
    pub fn describe(&self) -> String {
        match (&self.uri, &self.dns) {
            (Some(u), _) => format!("uri:{u}"),
            (None, Some(d)) => format!("dns:{d}"),
            (None, None) => "(no identity)".into(),
        }
    }
}

/// `[tenants.ID].caller_auth`: which credentials a call as the tenant must carry.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum CallerAuth {
    /// A bearer token or a client certificate listed for the tenant (the default; a tenant no
    /// certificate is listed for is called with tokens only).
    #[default]
    Either,
    /// A bearer token; a certificate alone is refused.
    Token,
    /// A client certificate listed for the tenant; a token alone is refused.
    Certificate,
    /// Both, naming the same tenant.
    Both,
}

impl CallerAuth {
    /// Its name in the bundle.
    pub fn name(self) -> &'static str {
        match self {
            CallerAuth::Either => "either",
            CallerAuth::Token => "token",
            CallerAuth::Certificate => "certificate",
            CallerAuth::Both => "both",
        }
    }
}

fn default_max_token_lifetime() -> u64 {
    24 * 3600
}

fn default_leeway() -> u64 {
    30
}

/// Supported token algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    HS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
}
