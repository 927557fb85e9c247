use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::digest::hex_of;
use crate::error::RegistryError;

/// Where an artifact lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactRef {
    /// In a registry: `HOST[:PORT]/REPO:TAG` or `HOST/REPO@sha256:…`.
    Remote(oci_client::Reference),
    /// In a local OCI image layout: `oci:DIR:TAG` or `oci:DIR@sha256:…`.
    Layout {
        /// The layout directory.
        dir: PathBuf,
        /// The tag (`org.opencontainers.image.ref.name`).
        tag: Option<String>,
        /// The manifest digest.
        digest: Option<String>,
    },
}

impl ArtifactRef {
    /// The tag, if the reference names one.
    pub fn tag(&self) -> Option<&str> {
        match self {
            ArtifactRef::Remote(r) => r.tag(),
            ArtifactRef::Layout { tag, .. } => tag.as_deref(),
        }
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        match self {
            ArtifactRef::Remote(r) => r.digest(),
            ArtifactRef::Layout { digest, .. } => digest.as_deref(),
        }
    }

    /// The same repository, pinned to `digest`.
    pub fn with_digest(&self, digest: &str) -> ArtifactRef {
        match self {
            ArtifactRef::Remote(r) => ArtifactRef::Remote(oci_client::Reference::with_digest(
                r.registry().to_string(),
                r.repository().to_string(),
                digest.to_string(),
            )),
            ArtifactRef::Layout { dir, .. } => ArtifactRef::Layout {
                dir: dir.clone(),
                tag: None,
                digest: Some(digest.to_string()),
            },
        }
    }

    /// The same repository with tag `tag`.
    pub fn with_tag(&self, tag: &str) -> ArtifactRef {
        match self {
            ArtifactRef::Remote(r) => ArtifactRef::Remote(oci_client::Reference::with_tag(
                r.registry().to_string(),
                r.repository().to_string(),
                tag.to_string(),
            )),
            ArtifactRef::Layout { dir, .. } => ArtifactRef::Layout {
                dir: dir.clone(),
                tag: Some(tag.to_string()),
                digest: None,
            },
        }
    }

    /// The name signatures and attestations made for this reference bind to: a registry's
    /// `registry/repository`; for an OCI layout, `oci-layout:TAG` — the name the artifact was
    /// pushed under, the same wherever the layout directory is copied (air-gapped transfer is
    /// what layouts are for). A layout reference by digest alone has no such name and binds to
    /// its directory (see [`ArtifactRef::repository`]).
    pub fn identity(&self) -> String {
        match self {
            ArtifactRef::Layout { tag: Some(tag), .. } => format!("oci-layout:{tag}"),
            _ => self.repository(),
        }
    }

    /// Every identity a valid signature for this reference may name: its
    /// [`identity`](ArtifactRef::identity), and for a layout also the directory-bound name
    /// earlier versions signed with (so layouts signed before keep verifying where they are).
    pub fn accepted_identities(&self) -> Vec<String> {
        let mut out = vec![self.identity()];
        if matches!(self, ArtifactRef::Layout { .. }) {
            let dir = self.repository();
            if !out.contains(&dir) {
                out.push(dir);
            }
        }
        out
    }

    /// `registry/repository` (or `oci:DIR`, the directory's canonical path when it exists):
    /// where the artifact is kept (caches key tags by it).
    pub fn repository(&self) -> String {
        match self {
            ArtifactRef::Remote(r) => format!("{}/{}", r.registry(), r.repository()),
            ArtifactRef::Layout { dir, .. } => format!("oci:{}", stable_path(dir).display()),
        }
    }
}

/// `dir` as one absolute path whether or not it still exists: canonical while it does, and —
/// once it was moved away (an offline run from the cache) — its canonical parent joined with
/// its name, so the cache's tags, recorded online under the canonical path, are found again.
fn stable_path(dir: &std::path::Path) -> std::path::PathBuf {
    if let Ok(canonical) = dir.canonicalize() {
        return canonical;
    }
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => stable_path(parent).join(name),
        _ => absolute,
    }
}

impl FromStr for ArtifactRef {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| RegistryError::BadReference {
            reference: s.to_string(),
            why: why.to_string(),
        };
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag, digest) = if let Some((dir, digest)) = rest.split_once('@') {
                if hex_of(digest).is_none() {
                    return Err(bad("the digest is not sha256:<64 lowercase hex>"));
                }
                (dir, None, Some(digest.to_string()))
            } else if let Some((dir, tag)) = rest.rsplit_once(':') {
                (dir, Some(tag.to_string()), None)
            } else {
                return Err(bad("an OCI layout reference needs :TAG or @sha256:…"));
            };
            if dir.is_empty() {
                return Err(bad("no directory"));
            }
            if tag
                .as_deref()
                .is_some_and(|t| t.is_empty() || t.contains('/'))
            {
                return Err(bad("the tag is empty or has a `/`"));
            }
            return Ok(ArtifactRef::Layout {
                dir: PathBuf::from(dir),
                tag,
                digest,
            });
        }
        let host = s.split('/').next().unwrap_or_default();
        if !s.contains('/') || !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(bad(
                "name the registry host explicitly (e.g. 127.0.0.1:5000/repo:tag)",
            ));
        }
        let last = s.rsplit('/').next().unwrap_or_default();
        if !last.contains(':') && !last.contains('@') {
            return Err(bad("add :TAG or @sha256:… (no implicit `latest`)"));
        }
        let r: oci_client::Reference = s.parse().map_err(|e| bad(&format!("{e}")))?;
        // The distribution spec's parser takes any hex; digests are compared as strings
        // (pins, locks, signatures), so only the canonical lowercase form is accepted.
        if r.digest().is_some_and(|d| hex_of(d).is_none()) {
            return Err(bad("the digest is not sha256:<64 lowercase hex>"));
        }
        Ok(ArtifactRef::Remote(r))
    }
}

impl fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArtifactRef::Remote(r) => write!(f, "{}", r.whole()),
            ArtifactRef::Layout { dir, tag, digest } => {
                write!(f, "oci:{}", dir.display())?;
                if let Some(t) = tag {
                    write!(f, ":{t}")?;
                }
                if let Some(d) = digest {
                    write!(f, "@{d}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layouts_identity_is_its_tag_wherever_it_lies() {
        let a: ArtifactRef = "oci:/tmp/a/layout:echo-1.0.0".parse().unwrap();
        let b: ArtifactRef = "oci:/srv/x/y/z/layout:echo-1.0.0".parse().unwrap();
        assert_eq!(a.identity(), "oci-layout:echo-1.0.0");
        assert_eq!(a.identity(), b.identity());
        assert_ne!(a.repository(), b.repository());
        assert!(a.accepted_identities().contains(&a.repository()));
        let other: ArtifactRef = "oci:/tmp/a/layout:hook-1.0.0".parse().unwrap();
        assert_ne!(a.identity(), other.identity());
        let pinned = a.with_digest(&format!("sha256:{}", "a".repeat(64)));
        assert_eq!(pinned.identity(), pinned.repository());
        let remote: ArtifactRef = "127.0.0.1:5000/providers/echo:1.0.0".parse().unwrap();
        assert_eq!(remote.identity(), "127.0.0.1:5000/providers/echo");
        assert_eq!(remote.accepted_identities(), [remote.identity()]);
    }

    #[test]
    fn parses_the_three_forms() {
        let r: ArtifactRef = "127.0.0.1:5000/providers/echo:1.0.0".parse().unwrap();
        assert_eq!(r.tag(), Some("1.0.0"));
        assert_eq!(r.repository(), "127.0.0.1:5000/providers/echo");
        let d = format!("sha256:{}", "a".repeat(64));
        let r: ArtifactRef = format!("registry.example.com/p/echo@{d}").parse().unwrap();
        assert_eq!(r.digest(), Some(d.as_str()));
        let r: ArtifactRef = "oci:/tmp/layout:v1".parse().unwrap();
        assert_eq!(
            r,
            ArtifactRef::Layout {
                dir: "/tmp/layout".into(),
                tag: Some("v1".into()),
                digest: None
            }
        );
        assert_eq!(r.to_string(), "oci:/tmp/layout:v1");
        assert_eq!(r.with_digest(&d).digest(), Some(d.as_str()));
    }

    #[test]
    fn refuses_ambiguous_references() {
        for bad in [
            "echo:1.0",
            "providers/echo:1.0",
            "127.0.0.1:5000/echo",
            "oci:/tmp/x",
            "oci:/tmp/x@sha256:12",
        ] {
            let e = bad.parse::<ArtifactRef>().unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        // Found by the `oci` fuzz target: an upper-case digest parsed, then matched nothing.
        let upper = format!("registry.example.com/p/echo@sha256:{}", "A".repeat(64));
        let e = upper.parse::<ArtifactRef>().unwrap_err().to_string();
        assert!(e.contains("64 lowercase hex"), "{e}");
    }
}
