/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference does not parse.
    #[error(
        "`{reference}` is not a reference: {why}; use HOST[:PORT]/REPO:TAG, HOST/REPO@sha256:…, or oci:DIR:TAG"
    )]
    BadReference {
        /// The input.
        reference: String,
        /// Why.
        why: String,
    },
    /// Bytes did not match their digest. Nothing was cached.
    #[error(
        "{what} from {source_name} does not match its digest: expected {expected}, got {actual}; the registry or layout returned tampered or corrupt data"
    )]
    DigestMismatch {
        /// Manifest, config or layer.
        what: String,
        /// Where from.
        source_name: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what came back.
        actual: String,
    },
    /// The artifact is not a single-component CNCF Wasm artifact.
    #[error("{reference}: not a Wasm component artifact: {why}")]
    NotAComponentArtifact {
        /// The reference.
        reference: String,
        /// What is wrong.
        why: String,
    },
    /// The tag or digest does not exist.
    #[error("{reference}: not found ({why})")]
    NotFound {
        /// The reference.
        reference: String,
        /// Details.
        why: String,
    },
    /// The registry failed (after retries) or could not be reached.
    #[error("{registry}: {why}")]
    Registry {
        /// The registry.
        registry: String,
        /// What failed.
        why: String,
    },
    /// A local file operation failed.
    #[error("{path}: {error}")]
    Io {
        /// The path.
        path: String,
        /// Why (in the message itself, so it is said once).
        error: std::io::Error,
    },
    /// A manifest or blob is larger than the caller accepts; the transfer was stopped at the
    /// cap and nothing was kept.
    #[error(
        "{what} of {source_name} is larger than {limit} bytes{}; nothing was kept{}",
        stated.map(|s| format!(" (it states {s})")).unwrap_or_default(),
        hint.as_deref().map(|h| format!("; {h}")).unwrap_or_default()
    )]
    TooLarge {
        /// Manifest, config, layer or signature payload.
        what: String,
        /// Where from.
        source_name: String,
        /// The cap.
        limit: u64,
        /// The size its descriptor states, when that is what gave it away.
        stated: Option<u64>,
        /// What to do about it, when there is a setting.
        hint: Option<String>,
    },
    /// Offline mode and the blob is not cached.
    #[error("{digest} is not in the cache and this run is offline; run once online first")]
    Offline {
        /// The digest.
        digest: String,
    },
}
