//! `greentic.lock`: the digest each provider resolved to, written by the host.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One locked provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockEntry {
    /// The source string as written in `greentic.toml`.
    pub source: String,
    /// `sha256:<hex>` of the component it resolved to.
    pub digest: String,
    /// The OCI manifest digest, for registry and layout sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
}

/// The lock file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// Lock format version.
    #[serde(default = "one")]
    pub version: u32,
    /// Locked providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, LockEntry>,
}

fn one() -> u32 {
    1
}

/// Why the lock could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not a lock file.
    #[error(
        "{path}: not a valid greentic.lock ({message}); delete it to re-lock from greentic.toml"
    )]
    Invalid {
        /// The path.
        path: String,
        /// The parser's message.
        message: String,
    },
}

impl Lock {
    /// The lock path of a bundle directory.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("greentic.lock")
    }

    /// Reads the lock of a bundle directory (empty if there is none).
    pub fn load(dir: &Path) -> Result<Lock, LockError> {
        let path = Self::path(dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| LockError::Invalid {
                path: path.display().to_string(),
                message: e.to_string().trim_end().to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Lock {
                version: 1,
                providers: BTreeMap::new(),
            }),
            Err(source) => Err(LockError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Writes the lock atomically (temporary file, fsync, rename).
    pub fn save(&self, dir: &Path) -> Result<(), LockError> {
        let path = Self::path(dir);
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        let body = format!(
            "# Written by greentic-host: the digest each provider resolved to. Do not edit;\n# delete an entry to re-resolve it.\n{}",
            toml::to_string_pretty(self).expect("a lock always serialises")
        );
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        tmp.write_all(body.as_bytes()).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Lock::load(dir.path()).unwrap().providers.is_empty());
        let mut lock = Lock::default();
        lock.providers.insert(
            "echo".into(),
            LockEntry {
                source: "echo.wasm".into(),
                digest: format!("sha256:{}", "a".repeat(64)),
                manifest_digest: None,
            },
        );
        lock.save(dir.path()).unwrap();
        assert_eq!(Lock::load(dir.path()).unwrap().providers, lock.providers);
        std::fs::write(Lock::path(dir.path()), "nonsense = [").unwrap();
        assert!(matches!(
            Lock::load(dir.path()),
            Err(LockError::Invalid { .. })
        ));
    }
}
