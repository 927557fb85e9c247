//! Where a provider's component comes from.
//!
//! Every source implements only [`ComponentSource::fetch_unverified`]; callers use the provided
//! [`ComponentSource::fetch`], which checks the size cap and the expected digest, so no source
//! can skip verification.

use std::path::{Path, PathBuf};

/// A component's bytes and their digest.
#[derive(Clone)]
pub struct Fetched {
    /// The component.
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("len", &self.bytes.len())
            .field("digest", &self.digest)
            .finish()
    }
}

/// Why a component could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Larger than the bundle allows.
    #[error(
        "{source_name} is {size} bytes, over the bundle's max_component_bytes ({limit}); raise [host].max_component_bytes if this is expected"
    )]
    TooLarge {
        /// The source.
        source_name: String,
        /// Its size.
        size: u64,
        /// The cap.
        limit: usize,
    },
    /// The bytes do not have the expected digest.
    #[error(
        "{source_name}: digest is {actual}, but {expected} was expected ({why}); the component changed — check where it came from, then update the pin"
    )]
    DigestMismatch {
        /// The source.
        source_name: String,
        /// What it should be.
        expected: String,
        /// What it is.
        actual: String,
        /// Where the expectation came from.
        why: String,
    },
    /// Pulling from a registry or OCI layout failed.
    #[error("{message}")]
    Registry {
        /// The source.
        source_name: String,
        /// What failed (names the reference and the reason).
        message: String,
    },
}

/// Where a component comes from.
pub trait ComponentSource: Send + Sync {
    /// A human-readable name for messages.
    fn name(&self) -> String;

    /// Fetches the bytes without any verification. Implement this; call [`Self::fetch`].
    fn fetch_unverified(&self, max_bytes: usize) -> Result<Vec<u8>, SourceError>;

    /// Fetches the bytes, refuses more than `max_bytes`, and checks `expected` digests (each
    /// `(digest, why)` must match).
    fn fetch(&self, max_bytes: usize, expected: &[(&str, &str)]) -> Result<Fetched, SourceError> {
        let bytes = self.fetch_unverified(max_bytes)?;
        if bytes.len() > max_bytes {
            return Err(SourceError::TooLarge {
                source_name: self.name(),
                size: bytes.len() as u64,
                limit: max_bytes,
            });
        }
        let digest = greentic_registry::sha256_digest(&bytes);
        for (want, why) in expected {
            if *want != digest {
                return Err(SourceError::DigestMismatch {
                    source_name: self.name(),
                    expected: (*want).to_string(),
                    actual: digest,
                    why: (*why).to_string(),
                });
            }
        }
        Ok(Fetched { bytes, digest })
    }
}

/// A component file on disk.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    /// A file source for `path`.
    pub fn new(path: PathBuf) -> FileSource {
        FileSource { path }
    }
}

impl ComponentSource for FileSource {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn fetch_unverified(&self, max_bytes: usize) -> Result<Vec<u8>, SourceError> {
        let io = |source| SourceError::Io {
            path: self.name(),
            source,
        };
        let size = std::fs::metadata(&self.path).map_err(io)?.len();
        if size > max_bytes as u64 {
            return Err(SourceError::TooLarge {
                source_name: self.name(),
                size,
                limit: max_bytes,
            });
        }
        std::fs::read(&self.path).map_err(io)
    }
}

/// A component in a registry or a local OCI layout, pulled through a content-addressed cache.
///
/// The pull resolves the reference to a manifest digest once, fetches everything by digest and
/// verifies every byte (see `greentic-registry`); the loader then checks the component digest
/// against the bundle's pin and the lock.
pub struct RegistrySource {
    reference: greentic_registry::ArtifactRef,
    reach: Reach,
}

/// How registry and layout sources are reached: where verified blobs are cached, whether that
/// cache alone may be read, and how registries are spoken to (the CA certificates trusted
/// beside the system's).
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// The content-addressed blob cache.
    pub cache_dir: PathBuf,
    /// Read only the cache (`run --offline`).
    pub offline: bool,
    /// How registries are reached.
    pub remote: greentic_registry::RemoteOptions,
}

impl Reach {
    /// Reaching registries with the system's roots, caching under `cache_dir`.
    pub fn new(cache_dir: PathBuf, offline: bool) -> Reach {
        Reach {
            cache_dir,
            offline,
            remote: Default::default(),
        }
    }
}

/// The target for a registry or layout reference: write-through cached online, the cache
/// alone offline.
pub fn open_target(
    reference: &greentic_registry::ArtifactRef,
    reach: &Reach,
) -> Result<greentic_registry::Target, String> {
    let cache = greentic_registry::BlobCache::new(reach.cache_dir.clone());
    if reach.offline {
        return Ok(greentic_registry::Target::Offline(cache));
    }
    Ok(greentic_registry::Target::open(reference, &reach.remote)
        .map_err(|e| e.to_string())?
        .cached(cache))
}

impl RegistrySource {
    /// A registry source for `reference`, reached as `reach` says.
    pub fn new(reference: greentic_registry::ArtifactRef, reach: Reach) -> RegistrySource {
        RegistrySource { reference, reach }
    }
}

impl ComponentSource for RegistrySource {
    fn name(&self) -> String {
        self.reference.to_string()
    }

    fn fetch_unverified(&self, max_bytes: usize) -> Result<Vec<u8>, SourceError> {
        greentic_capabilities::blocking::run("the pull", |rt| {
            let target = open_target(&self.reference, &self.reach)?;
            // The cap applies while the layer streams in, before anything is cached.
            rt.block_on(greentic_registry::pull_component_capped(
                &target,
                &self.reference,
                None,
                max_bytes as u64,
            ))
            .map(|pulled| pulled.component)
            .map_err(|e| match e {
                greentic_registry::RegistryError::TooLarge { .. } => format!(
                    "{e}; raise [host].max_component_bytes ({max_bytes}) if this is expected"
                ),
                e => e.to_string(),
            })
        })
        .map_err(|message| SourceError::Registry {
            source_name: self.name(),
            message,
        })
    }
}

/// A source string that names nothing usable.
struct Invalid {
    reference: String,
    why: String,
}

impl ComponentSource for Invalid {
    fn name(&self) -> String {
        self.reference.clone()
    }

    fn fetch_unverified(&self, _: usize) -> Result<Vec<u8>, SourceError> {
        Err(SourceError::Registry {
            source_name: self.reference.clone(),
            message: self.why.clone(),
        })
    }
}

/// What a `source = "…"` string names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRef {
    /// A file, relative to the bundle.
    File(PathBuf),
    /// `oci:DIR:TAG`, a local OCI image layout.
    OciLayout(String),
    /// `HOST[:PORT]/REPO:TAG` or `HOST/REPO@sha256:…`.
    Registry(String),
}

impl SourceRef {
    /// Classifies a source string.
    pub fn parse(bundle_dir: &Path, source: &str) -> SourceRef {
        if source.starts_with("oci:") {
            return SourceRef::OciLayout(source.to_string());
        }
        let looks_like_registry = source.split_once('/').is_some_and(|(host, _)| {
            host.contains('.') || host.contains(':') || host == "localhost"
        }) && !source.ends_with(".wasm")
            && !bundle_dir.join(source).exists();
        if looks_like_registry {
            SourceRef::Registry(source.to_string())
        } else {
            SourceRef::File(bundle_dir.join(source))
        }
    }
}

/// The artifact reference of a registry or layout source (layout directories are relative to
/// the bundle).
pub fn artifact_reference(
    bundle_dir: &Path,
    source: &str,
) -> Result<greentic_registry::ArtifactRef, greentic_registry::RegistryError> {
    let r = match source.strip_prefix("oci:") {
        Some(rest) if !Path::new(rest).is_absolute() => {
            format!("oci:{}", bundle_dir.join(rest).display())
        }
        _ => source.to_string(),
    };
    r.parse()
}

/// The source for a `source = "…"` string of a bundle in `bundle_dir`; registry and layout
/// pulls are reached as `reach` says.
pub fn resolve_source(bundle_dir: &Path, source: &str, reach: &Reach) -> Box<dyn ComponentSource> {
    match SourceRef::parse(bundle_dir, source) {
        SourceRef::File(path) => Box::new(FileSource::new(path)),
        SourceRef::OciLayout(r) | SourceRef::Registry(r) => {
            match artifact_reference(bundle_dir, &r) {
                Ok(reference) => Box::new(RegistrySource::new(reference, reach.clone())),
                Err(e) => Box::new(Invalid {
                    reference: r,
                    why: e.to_string(),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_sources() {
        let dir = Path::new("/nonexistent-bundle");
        assert_eq!(
            SourceRef::parse(dir, "echo.wasm"),
            SourceRef::File(dir.join("echo.wasm"))
        );
        assert_eq!(
            SourceRef::parse(dir, "oci:layout:v1"),
            SourceRef::OciLayout("oci:layout:v1".into())
        );
        assert_eq!(
            SourceRef::parse(dir, "127.0.0.1:5000/providers/echo:1.0"),
            SourceRef::Registry("127.0.0.1:5000/providers/echo:1.0".into())
        );
        assert_eq!(
            SourceRef::parse(dir, "components/x.wasm"),
            SourceRef::File(dir.join("components/x.wasm"))
        );
    }

    #[test]
    fn fetch_checks_size_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.wasm");
        std::fs::write(&path, b"abc").unwrap();
        let src = FileSource::new(path);
        let ok = src.fetch(10, &[]).unwrap();
        assert_eq!(
            ok.digest,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(matches!(
            src.fetch(2, &[]),
            Err(SourceError::TooLarge { .. })
        ));
        let e = src
            .fetch(
                10,
                &[(
                    &format!("sha256:{}", "0".repeat(64)),
                    "pinned in greentic.toml",
                )],
            )
            .unwrap_err();
        assert!(e.to_string().contains("pinned in greentic.toml"), "{e}");
        let e = resolve_source(
            dir.path(),
            "oci:x:y",
            &Reach::new(dir.path().join("cache"), false),
        )
        .fetch(10, &[])
        .unwrap_err();
        assert!(e.to_string().contains("not an OCI image layout"), "{e}");
    }
}
