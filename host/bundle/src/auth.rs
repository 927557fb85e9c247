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
