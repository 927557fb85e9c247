use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::OCI_INDEX_MEDIA_TYPE;
use crate::digest::{hex_of, sha256_digest};
use crate::error::RegistryError;

/// The annotation an OCI layout uses for tags.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A local OCI image-layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`), the format
/// `skopeo copy … oci:DIR:TAG` reads and writes.
#[derive(Debug, Clone)]
pub struct OciLayout {
    dir: PathBuf,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> RegistryError + '_ {
    move |error| RegistryError::Io {
        path: path.display().to_string(),
        error,
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let dir = path.parent().expect("layout paths have a parent");
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(path))?;
    tmp.write_all(bytes).map_err(io(path))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    tmp.persist(path).map_err(|e| io(path)(e.error))?;
    Ok(())
}

impl OciLayout {
    /// A layout at `dir` (created on first write).
    pub fn new(dir: PathBuf) -> OciLayout {
        OciLayout { dir }
    }

    fn name(&self) -> String {
        format!("oci:{}", self.dir.display())
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, RegistryError> {
        let hex = hex_of(digest).ok_or_else(|| RegistryError::BadReference {
            reference: digest.to_string(),
            why: "not a sha256 digest".into(),
        })?;
        Ok(self.dir.join("blobs").join("sha256").join(hex))
    }

    fn index(&self) -> Result<Value, RegistryError> {
        let path = self.dir.join("index.json");
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| RegistryError::NotAComponentArtifact {
                    reference: self.name(),
                    why: format!("index.json is not JSON: {e}"),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RegistryError::NotFound {
                reference: self.name(),
                why: "no index.json: not an OCI image layout".into(),
            }),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The manifest digest tagged `tag`.
    pub fn resolve(&self, tag: &str) -> Result<String, RegistryError> {
        let index = self.index()?;
        index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["annotations"][REF_NAME] == tag)
            .and_then(|m| m["digest"].as_str().map(str::to_string))
            .ok_or_else(|| RegistryError::NotFound {
                reference: format!("{}:{tag}", self.name()),
                why: "no manifest with that tag in index.json".into(),
            })
    }

    /// The bytes stored under `digest`, not yet verified, if at most `max` of them (larger
    /// files are refused before they are read).
    pub fn blob_unverified(
        &self,
        digest: &str,
        max: u64,
        what: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        use std::io::Read;
        let path = self.blob_path(digest)?;
        let missing = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::NotFound {
                RegistryError::NotFound {
                    reference: format!("{}@{digest}", self.name()),
                    why: "blob missing from blobs/sha256".into(),
                }
            } else {
                io(&path)(e)
            }
        };
        let file = std::fs::File::open(&path).map_err(missing)?;
        let too_large = || RegistryError::TooLarge {
            what: what.to_string(),
            source_name: format!("{}@{digest}", self.name()),
            limit: max,
            stated: None,
            hint: None,
        };
        if file.metadata().map_err(io(&path))?.len() > max {
            return Err(too_large());
        }
        // Read at most one byte past the cap, in case the file grows meanwhile.
        let mut bytes = Vec::new();
        file.take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(io(&path))?;
        if bytes.len() as u64 > max {
            return Err(too_large());
        }
        Ok(bytes)
    }

    /// Stores a blob (verified against `digest`).
    pub fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), RegistryError> {
        let actual = sha256_digest(bytes);
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                what: "blob".into(),
                source_name: "the writer".into(),
                expected: digest.to_string(),
                actual,
            });
        }
        self.init()?;
        let path = self.blob_path(digest)?;
        if path.exists() {
            return Ok(());
        }
        write_atomic(&path, bytes)
    }

    fn init(&self) -> Result<(), RegistryError> {
        let layout = self.dir.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = self.dir.join("index.json");
        if !index.exists() {
            let body =
                json!({"schemaVersion": 2, "mediaType": OCI_INDEX_MEDIA_TYPE, "manifests": []});
            write_atomic(&index, body.to_string().as_bytes())?;
        }
        Ok(())
    }

    /// Points `tag` at a stored manifest (replacing what the tag pointed at).
    pub fn tag(
        &self,
        tag: &str,
        digest: &str,
        size: usize,
        media_type: &str,
    ) -> Result<(), RegistryError> {
        self.init()?;
        let mut index = self.index()?;
        let manifests = index["manifests"].as_array_mut().ok_or_else(|| {
            RegistryError::NotAComponentArtifact {
                reference: self.name(),
                why: "index.json has no manifests array".into(),
            }
        })?;
        manifests.retain(|m| m["annotations"][REF_NAME] != tag);
        manifests.push(json!({
            "mediaType": media_type,
            "digest": digest,
            "size": size,
            "annotations": { REF_NAME: tag },
        }));
        write_atomic(
            &self.dir.join("index.json"),
            serde_json::to_vec_pretty(&index).expect("JSON").as_slice(),
        )
    }
}
