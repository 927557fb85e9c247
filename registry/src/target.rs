use crate::cache::BlobCache;
use crate::digest::sha256_digest;
use crate::error::RegistryError;
use crate::layout::OciLayout;
use crate::reference::ArtifactRef;
use crate::remote::{RemoteOptions, RemoteRegistry};

/// The largest manifest read (the OCI distribution reference registry's own limit is 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// A place artifacts are pushed to and pulled from.
///
/// Reads through a `Target` are always verified: the stores only return unverified bytes, and
/// [`Target::fetch_manifest`] and [`Target::fetch_blob`] check them against the digest asked
/// for before returning them.
pub enum Target {
    /// A registry.
    Remote(RemoteRegistry),
    /// A local OCI image layout.
    Layout(OciLayout),
    /// Another target, with every verified manifest and blob and every resolved tag written
    /// to a cache, and cached blobs served from it.
    Cached(Box<Target>, BlobCache),
    /// Only the cache: no network. Tags resolve to what they resolved to when last online.
    Offline(BlobCache),
}

fn remote(reference: &ArtifactRef) -> &oci_client::Reference {
    match reference {
        ArtifactRef::Remote(r) => r,
        ArtifactRef::Layout { .. } => unreachable!("a layout target only sees layout references"),
    }
}

impl Target {
    /// The target a reference points into.
    pub fn open(reference: &ArtifactRef, options: &RemoteOptions) -> Result<Target, RegistryError> {
        Ok(match reference {
            ArtifactRef::Remote(r) => {
                Target::Remote(RemoteRegistry::new(r.resolve_registry(), options))
            }
            ArtifactRef::Layout { dir, .. } => Target::Layout(OciLayout::new(dir.clone())),
        })
    }

    /// The manifest digest a reference resolves to (once; fetch by digest afterwards).
    pub async fn resolve(&self, reference: &ArtifactRef) -> Result<String, RegistryError> {
        if let Some(d) = reference.digest() {
            return Ok(d.to_string());
        }
        let tag = reference.tag().unwrap_or("latest");
        match self {
            Target::Remote(r) => r.resolve(remote(reference)).await,
            Target::Layout(l) => l.resolve(tag),
            Target::Cached(inner, cache) => {
                let digest = Box::pin(inner.resolve(reference)).await?;
                cache.put_tag(&reference.repository(), tag, &digest)?;
                Ok(digest)
            }
            Target::Offline(cache) => {
                cache
                    .tag(&reference.repository(), tag)
                    .ok_or_else(|| RegistryError::NotFound {
                        reference: reference.to_string(),
                        why: "offline, and the tag was never resolved online".into(),
                    })
            }
        }
    }

    /// This target with a write-through cache.
    pub fn cached(self, cache: BlobCache) -> Target {
        Target::Cached(Box::new(self), cache)
    }

    fn check(
        reference: &ArtifactRef,
        what: &str,
        digest: &str,
        bytes: Vec<u8>,
    ) -> Result<Vec<u8>, RegistryError> {
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                what: what.to_string(),
                source_name: reference.to_string(),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// The manifest with `digest`, verified, at most [`MAX_MANIFEST_BYTES`].
    pub async fn fetch_manifest(
        &self,
        reference: &ArtifactRef,
        digest: &str,
        accepted: &[&str],
    ) -> Result<Vec<u8>, RegistryError> {
        let bytes = match self {
            Target::Remote(r) => {
                let bytes = r
                    .manifest_unverified(remote(reference), digest, accepted)
                    .await?;
                if bytes.len() as u64 > MAX_MANIFEST_BYTES {
                    return Err(RegistryError::TooLarge {
                        what: "the manifest".into(),
                        source_name: reference.to_string(),
                        limit: MAX_MANIFEST_BYTES,
                        stated: None,
                        hint: None,
                    });
                }
                bytes
            }
            Target::Layout(l) => l.blob_unverified(digest, MAX_MANIFEST_BYTES, "the manifest")?,
            Target::Cached(inner, cache) => {
                if let Some(bytes) = cache.get(digest) {
                    return Ok(bytes);
                }
                let bytes = Box::pin(inner.fetch_manifest(reference, digest, accepted)).await?;
                cache.put(digest, &bytes)?;
                return Ok(bytes);
            }
            Target::Offline(cache) => cache.get(digest).ok_or_else(|| RegistryError::Offline {
                digest: digest.to_string(),
            })?,
        };
        Self::check(reference, "the manifest", digest, bytes)
    }

    /// The blob with `digest`, verified, if at most `max` bytes (the transfer stops at the cap,
    /// before anything is verified or cached).
    pub async fn fetch_blob(
        &self,
        reference: &ArtifactRef,
        digest: &str,
        what: &str,
        max: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        self.fetch_blob_sized(reference, digest, what, None, max)
            .await
    }

    /// The blob with `digest` and (from its descriptor) `size`, verified, if at most `max`
    /// bytes: a descriptor stating more is refused before any transfer, and a transfer is
    /// stopped at the cap. Large blobs show a progress bar when stderr is a terminal.
    pub async fn fetch_blob_sized(
        &self,
        reference: &ArtifactRef,
        digest: &str,
        what: &str,
        size: Option<u64>,
        max: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        if let Some(stated) = size.filter(|s| *s > max) {
            return Err(RegistryError::TooLarge {
                what: what.to_string(),
                source_name: reference.to_string(),
                limit: max,
                stated: Some(stated),
                hint: None,
            });
        }
        let bytes = match self {
            Target::Remote(r) => match r
                .blob_unverified(remote(reference), digest, size, max, what)
                .await
            {
                Err(RegistryError::Registry { why, .. })
                    if why.contains("Digest") || why.contains("digest") =>
                {
                    return Err(RegistryError::DigestMismatch {
                        what: what.to_string(),
                        source_name: reference.to_string(),
                        expected: digest.to_string(),
                        actual: format!("other bytes ({why})"),
                    });
                }
                other => other?,
            },
            Target::Layout(l) => l.blob_unverified(digest, max, what)?,
            Target::Cached(inner, cache) => {
                if let Some(bytes) = cache.get(digest).filter(|b| b.len() as u64 <= max) {
                    return Ok(bytes);
                }
                let bytes =
                    Box::pin(inner.fetch_blob_sized(reference, digest, what, size, max)).await?;
                cache.put(digest, &bytes)?;
                return Ok(bytes);
            }
            Target::Offline(cache) => match cache.get(digest) {
                Some(bytes) if bytes.len() as u64 > max => {
                    return Err(RegistryError::TooLarge {
                        what: what.to_string(),
                        source_name: reference.to_string(),
                        limit: max,
                        stated: None,
                        hint: None,
                    });
                }
                Some(bytes) => bytes,
                None => {
                    return Err(RegistryError::Offline {
                        digest: digest.to_string(),
                    });
                }
            },
        };
        Self::check(reference, what, digest, bytes)
    }

    /// Stores a blob.
    pub async fn put_blob(
        &self,
        reference: &ArtifactRef,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        match self {
            Target::Remote(r) => r.put_blob(remote(reference), digest, bytes).await,
            Target::Layout(l) => l.put_blob(digest, bytes),
            Target::Cached(inner, _) => Box::pin(inner.put_blob(reference, digest, bytes)).await,
            Target::Offline(_) => Err(RegistryError::Offline {
                digest: digest.to_string(),
            }),
        }
    }

    /// Stores a manifest under the reference's tag; returns its digest.
    pub async fn put_manifest(
        &self,
        reference: &ArtifactRef,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<String, RegistryError> {
        let digest = sha256_digest(bytes);
        match self {
            Target::Remote(r) => r.put_manifest(remote(reference), bytes, media_type).await?,
            Target::Layout(l) => {
                l.put_blob(&digest, bytes)?;
                if let Some(tag) = reference.tag() {
                    l.tag(tag, &digest, bytes.len(), media_type)?;
                }
            }
            Target::Cached(inner, _) => {
                Box::pin(inner.put_manifest(reference, bytes, media_type)).await?;
            }
            Target::Offline(_) => return Err(RegistryError::Offline { digest }),
        }
        Ok(digest)
    }
}
