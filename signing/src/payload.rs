use serde::{Deserialize, Serialize};

/// The `type` of a cosign signature payload.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

/// Cosign's simple-signing payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimpleSigning {
    /// What is signed.
    pub critical: Critical,
    /// Free-form annotations.
    pub optional: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The critical section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Critical {
    /// The repository.
    pub identity: Identity,
    /// The digest.
    pub image: Image,
    /// Always [`SIGNATURE_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
}

/// `critical.identity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `registry/repository`.
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

/// `critical.image`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The signed manifest digest.
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

impl SimpleSigning {
    /// The payload for `digest` in `repository`.
    pub fn new(repository: &str, digest: &str) -> SimpleSigning {
        SimpleSigning {
            critical: Critical {
                identity: Identity {
                    docker_reference: repository.to_string(),
                },
                image: Image {
                    docker_manifest_digest: digest.to_string(),
                },
                kind: SIGNATURE_TYPE.to_string(),
            },
            optional: None,
        }
    }

    /// Parses a signature payload (the bytes a signature layer points at).
    pub fn parse(payload: &[u8]) -> Result<SimpleSigning, String> {
        serde_json::from_slice(payload)
            .map_err(|e| format!("the payload is not a simple-signing document: {e}"))
    }

    /// Checks that the payload is cosign's, signs `digest`, and (if given) names one of
    /// `identities` (an empty list accepts none); the reason names what differs.
    pub fn check(&self, digest: &str, identities: Option<&[&str]>) -> Result<(), String> {
        let clip = |s: &str| greentic_manifest::clip_middle(s, 160);
        if self.critical.kind != SIGNATURE_TYPE {
            return Err(format!("payload type is `{}`", clip(&self.critical.kind)));
        }
        let signed = &self.critical.image.docker_manifest_digest;
        if signed != digest {
            return Err(format!(
                "the signature is for {}, not {digest} (copied from another artifact?)",
                clip(signed)
            ));
        }
        if let Some(accepted) = identities
            && !accepted
                .iter()
                .any(|r| self.critical.identity.docker_reference == *r)
        {
            return Err(format!(
                "signed for repository {}, expected {} (copied from another repository? a mirror's identity must be accepted explicitly: `identities = [\"{}\"]` in the provider's bundle section, or `greentic-host verify --repository {}`)",
                clip(&self.critical.identity.docker_reference),
                if accepted.is_empty() {
                    "none".to_string()
                } else {
                    accepted
                        .iter()
                        .map(|r| clip(r))
                        .collect::<Vec<_>>()
                        .join(" or ")
                },
                clip(&self.critical.identity.docker_reference),
                clip(&self.critical.identity.docker_reference),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_checked_against_digest_type_and_repository() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let bytes = serde_json::to_vec(&SimpleSigning::new("reg/acme/x", &digest)).unwrap();
        let payload = SimpleSigning::parse(&bytes).unwrap();
        payload.check(&digest, Some(&["reg/acme/x"])).unwrap();
        payload
            .check(&digest, Some(&["mirror/acme/x", "reg/acme/x"]))
            .unwrap();
        assert!(
            payload.check(&digest, Some(&[])).is_err(),
            "an empty list accepts none"
        );
        payload.check(&digest, None).unwrap();
        let other = format!("sha256:{}", "b".repeat(64));
        let e = payload.check(&other, None).unwrap_err();
        assert!(e.contains("copied from another artifact"), "{e}");
        let e = payload.check(&digest, Some(&["reg/evil/x"])).unwrap_err();
        assert!(e.contains("expected reg/evil/x"), "{e}");
        let mut wrong = payload.clone();
        wrong.critical.kind = "x".repeat(10_000);
        let e = wrong.check(&digest, None).unwrap_err();
        assert!(
            e.len() < 400,
            "the reason quotes the whole value: {} bytes",
            e.len()
        );
        assert!(SimpleSigning::parse(b"{}").is_err());
    }
}
