use crate::digest::sha256_digest;
use crate::error::RegistryError;
use crate::layout::OciLayout;
use crate::reference::ArtifactRef;
use crate::remote::{RemoteOptions, RemoteRegistry};

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
        match self {
            Target::Remote(r) => r.resolve(remote(reference)).await,
            Target::Layout(l) => l.resolve(reference.tag().unwrap_or("latest")),
        }
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

    /// The manifest with `digest`, verified.
    pub async fn fetch_manifest(
        &self,
        reference: &ArtifactRef,
        digest: &str,
        accepted: &[&str],
    ) -> Result<Vec<u8>, RegistryError> {
        let bytes = match self {
            Target::Remote(r) => {
                r.manifest_unverified(remote(reference), digest, accepted)
                    .await?
            }
            Target::Layout(l) => l.blob_unverified(digest)?,
        };
        Self::check(reference, "the manifest", digest, bytes)
    }

    /// The blob with `digest`, verified.
    pub async fn fetch_blob(
        &self,
        reference: &ArtifactRef,
        digest: &str,
        what: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        self.fetch_blob_sized(reference, digest, what, None).await
    }

    /// The blob with `digest` and (from its descriptor) `size`, verified; large blobs show a
    /// progress bar when stderr is a terminal.
    pub async fn fetch_blob_sized(
        &self,
        reference: &ArtifactRef,
        digest: &str,
        what: &str,
        size: Option<u64>,
    ) -> Result<Vec<u8>, RegistryError> {
        let bytes = match self {
            Target::Remote(r) => match r.blob_unverified(remote(reference), digest, size).await {
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
            Target::Layout(l) => l.blob_unverified(digest)?,
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
        }
        Ok(digest)
    }
}
