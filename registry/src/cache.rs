use std::io::Write;
use std::path::PathBuf;

use crate::digest::{hex_of, sha256_digest};
use crate::error::RegistryError;

/// A content-addressed cache of verified blobs: `<dir>/sha256/<hex>`.
///
/// Entries are written to a temporary file in the same directory, fsynced, and renamed into
/// place, so a crash never leaves a half-written entry under a digest's name, and concurrent
/// writers of the same digest are harmless (they write the same bytes). Reads re-check the
/// digest; a corrupt entry is deleted and reported as a miss.
#[derive(Debug, Clone)]
pub struct BlobCache {
    dir: PathBuf,
}

impl BlobCache {
    /// A cache rooted at `dir` (created on first write).
    pub fn new(dir: PathBuf) -> BlobCache {
        BlobCache { dir }
    }

    fn path(&self, digest: &str) -> Option<PathBuf> {
        hex_of(digest).map(|hex| self.dir.join("sha256").join(hex))
    }

    /// The verified bytes of `digest`, if cached.
    pub fn get(&self, digest: &str) -> Option<Vec<u8>> {
        let path = self.path(digest)?;
        let bytes = std::fs::read(&path).ok()?;
        if sha256_digest(&bytes) == digest {
            Some(bytes)
        } else {
            tracing::warn!(entry = %path.display(), "discarding corrupt cache entry");
            let _ = std::fs::remove_file(&path);
            None
        }
    }

    /// Stores `bytes` under `digest`, refusing bytes that do not match it.
    pub fn put(&self, digest: &str, bytes: &[u8]) -> Result<(), RegistryError> {
        let actual = sha256_digest(bytes);
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                what: "blob".into(),
                source_name: "the cache writer".into(),
                expected: digest.to_string(),
                actual,
            });
        }
        let path = self
            .path(digest)
            .ok_or_else(|| RegistryError::BadReference {
                reference: digest.to_string(),
                why: "not a sha256 digest".into(),
            })?;
        let dir = path.parent().expect("a digest path has a parent");
        let io = |error| RegistryError::Io {
            path: path.display().to_string(),
            error,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        tmp.write_all(bytes).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        Ok(())
    }

    fn tag_path(&self, repository: &str, tag: &str) -> PathBuf {
        let key = sha256_digest(format!("{repository}\n{tag}").as_bytes());
        self.dir.join("tags").join(&key[7..])
    }

    /// Records that `tag` of `repository` resolved to `digest` (for offline use).
    pub fn put_tag(&self, repository: &str, tag: &str, digest: &str) -> Result<(), RegistryError> {
        if hex_of(digest).is_none() {
            return Err(RegistryError::BadReference {
                reference: digest.to_string(),
                why: "not a sha256 digest".into(),
            });
        }
        let path = self.tag_path(repository, tag);
        let dir = path.parent().expect("a tag path has a parent");
        let io = |error| RegistryError::Io {
            path: path.display().to_string(),
            error,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        tmp.write_all(digest.as_bytes()).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// The digest `tag` of `repository` last resolved to, if recorded.
    pub fn tag(&self, repository: &str, tag: &str) -> Option<String> {
        let digest = std::fs::read_to_string(self.tag_path(repository, tag)).ok()?;
        hex_of(digest.trim()).map(|_| digest.trim().to_string())
    }

    /// Number of cached blobs (for tests and diagnostics).
    pub fn len(&self) -> usize {
        std::fs::read_dir(self.dir.join("sha256"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| {
                        hex_of(&format!("sha256:{}", e.file_name().to_string_lossy())).is_some()
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Whether the cache holds no blobs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_verifies_and_discards_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path().to_path_buf());
        let d = sha256_digest(b"hello");
        assert!(cache.get(&d).is_none());
        assert!(cache.put(&sha256_digest(b"other"), b"hello").is_err());
        assert!(cache.is_empty(), "a mismatching put leaves nothing behind");
        cache.put(&d, b"hello").unwrap();
        assert_eq!(cache.get(&d).unwrap(), b"hello");
        let path = dir.path().join("sha256").join(&d[7..]);
        std::fs::write(&path, b"hellO").unwrap();
        assert!(cache.get(&d).is_none());
        assert!(!path.exists());
    }
}
