use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use greentic_registry::{
    ArtifactRef, OCI_MANIFEST_MEDIA_TYPE, RegistryError, Target, sha256_digest,
};
use serde_json::{Value, json};

use crate::keys::{KeyError, KeyPair, TrustedKeys};
use crate::payload::SimpleSigning;

/// The largest signature payload read (cosign's are a few hundred bytes).
pub const MAX_SIGNATURE_PAYLOAD_BYTES: u64 = 64 << 10;
/// Signature layers examined per artifact; past these a manifest's layers are not read.
pub const MAX_SIGNATURE_LAYERS: usize = 32;

/// Media type of cosign signature payload layers.
pub const SIMPLESIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const OCI_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// Why signing or verification failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Talking to the registry or layout failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Key material problem.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// No signature manifest exists for the digest.
    #[error(
        "{reference} is not signed (no {tag} in the repository); sign it with `greentic-host sign`"
    )]
    Unsigned {
        /// The pinned reference.
        reference: String,
        /// The signature tag looked for.
        tag: String,
    },
    /// Signatures exist but none satisfies every constraint.
    #[error("{reference}: no valid signature by a trusted key:\n{}", reasons.iter().map(|r| format!("  - {r}")).collect::<Vec<_>>().join("\n"))]
    NoValidSignature {
        /// The pinned reference.
        reference: String,
        /// Why each signature was rejected.
        reasons: Vec<String>,
    },
}

/// A layer of a cosign signature manifest that may hold a signature: where its payload is, and
/// the signature over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLayer {
    /// Digest of the payload blob.
    pub digest: String,
    /// The signature (ASN.1 DER), decoded from the layer's annotation.
    pub signature: Vec<u8>,
}

/// The layers of a signature manifest, each a [`SignatureLayer`] or why it is not one. Nothing
/// is fetched or verified here.
pub fn signature_layers(manifest: &Value) -> Vec<Result<SignatureLayer, String>> {
    manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|layer| {
            if layer["mediaType"] != SIMPLESIGNING_MEDIA_TYPE {
                return Err("not a simple-signing payload".to_string());
            }
            let digest = layer["digest"]
                .as_str()
                .filter(|d| greentic_registry::is_sha256_digest(d))
                .ok_or("no sha256 digest")?;
            let signature = layer["annotations"][SIGNATURE_ANNOTATION]
                .as_str()
                .and_then(|s| B64.decode(s).ok())
                .ok_or("no base64 signature annotation")?;
            Ok(SignatureLayer {
                digest: digest.to_string(),
                signature,
            })
        })
        .collect()
}

/// The tag cosign stores signatures of `digest` under: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

/// A verified signature.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The manifest digest the reference resolved to; fetch by this digest.
    pub digest: String,
    /// The verified payload.
    pub payload: SimpleSigning,
    /// The id of the trusted key that signed it ([`crate::KeyPair::key_id`]).
    pub key_id: String,
}

/// The manifest cosign keeps an artifact's attachments in (`sha256-<hex>.sig`, `.att`), if
/// there is one.
pub(crate) async fn attachment_manifest(
    target: &Target,
    sig_ref: &ArtifactRef,
) -> Result<Option<Value>, SignError> {
    let digest = match target.resolve(sig_ref).await {
        Ok(d) => d,
        Err(RegistryError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let bytes = target
        .fetch_manifest(
            &sig_ref.with_digest(&digest),
            &digest,
            &[OCI_MANIFEST_MEDIA_TYPE],
        )
        .await?;
    let manifest: Value =
        serde_json::from_slice(&bytes).map_err(|e| RegistryError::NotAComponentArtifact {
            reference: sig_ref.to_string(),
            why: format!("the attachment manifest is not JSON: {e}"),
        })?;
    Ok(Some(manifest))
}

/// Signs the artifact `reference` resolves to, appending to existing signatures.
/// Returns the signed manifest digest.
pub async fn sign(
    target: &Target,
    reference: &ArtifactRef,
    key: &KeyPair,
) -> Result<String, SignError> {
    let digest = target.resolve(reference).await?;
    let payload =
        serde_json::to_vec(&SimpleSigning::new(&reference.identity(), &digest)).expect("JSON");
    let signature = B64.encode(key.sign(&payload));
    let payload_digest = sha256_digest(&payload);
    let sig_ref = reference.with_tag(&signature_tag(&digest));

    let mut layers: Vec<Value> = match attachment_manifest(target, &sig_ref).await? {
        Some(m) => m["layers"].as_array().cloned().unwrap_or_default(),
        None => Vec::new(),
    };
    // Keep other signers' layers; ours replaces an identical earlier one.
    layers.retain(|l| {
        !(l["digest"] == payload_digest && l["annotations"][SIGNATURE_ANNOTATION] == signature)
    });
    target.put_blob(&sig_ref, &payload_digest, &payload).await?;
    layers.push(json!({
        "mediaType": SIMPLESIGNING_MEDIA_TYPE,
        "digest": payload_digest,
        "size": payload.len(),
        "annotations": { SIGNATURE_ANNOTATION: signature },
    }));
    put_attachment_manifest(target, &sig_ref, layers).await?;
    Ok(digest)
}

/// Writes cosign's attachment manifest for `layers` (whose blobs are already pushed) under
/// `tag_ref`: an OCI image manifest with a config naming the layers.
pub(crate) async fn put_attachment_manifest(
    target: &Target,
    tag_ref: &ArtifactRef,
    layers: Vec<Value>,
) -> Result<(), SignError> {
    let diff_ids: Vec<Value> = layers.iter().map(|l| l["digest"].clone()).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("JSON");
    let config_digest = sha256_digest(&config);
    target.put_blob(tag_ref, &config_digest, &config).await?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": OCI_CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len()},
        "layers": layers,
    }))
    .expect("JSON");
    target
        .put_manifest(tag_ref, &manifest, OCI_MANIFEST_MEDIA_TYPE)
        .await?;
    Ok(())
}

/// Verifies the artifact `reference` resolves to. Resolves once; every constraint must hold for
/// at least one signature: payload blob matches its digest, a trusted key verifies the
/// signature, the type is cosign's, the signed digest is the resolved digest, and (if given)
/// the signed identity (`docker-reference`) is one of `identities`. Fetch the artifact by the
/// returned digest.
pub async fn verify(
    target: &Target,
    reference: &ArtifactRef,
    keys: &TrustedKeys,
    identities: Option<&[&str]>,
) -> Result<Verified, SignError> {
    let digest = target.resolve(reference).await?;
    let pinned = reference.with_digest(&digest).to_string();
    let sig_ref = reference.with_tag(&signature_tag(&digest));
    let Some(manifest) = attachment_manifest(target, &sig_ref).await? else {
        return Err(SignError::Unsigned {
            reference: pinned,
            tag: signature_tag(&digest),
        });
    };
    let mut reasons = Vec::new();
    let layers = signature_layers(&manifest);
    if layers.len() > MAX_SIGNATURE_LAYERS {
        reasons.push(format!(
            "the signature manifest has {} layers; only the first {MAX_SIGNATURE_LAYERS} were examined",
            layers.len()
        ));
    }
    for (i, layer) in layers.into_iter().take(MAX_SIGNATURE_LAYERS).enumerate() {
        let layer = match layer {
            Ok(layer) => layer,
            Err(why) => {
                reasons.push(format!("layer {i}: {why}"));
                continue;
            }
        };
        let payload = match target
            .fetch_blob(
                &sig_ref,
                &layer.digest,
                "a signature payload",
                MAX_SIGNATURE_PAYLOAD_BYTES,
            )
            .await
        {
            Ok(p) => p,
            Err(e) => {
                reasons.push(format!("layer {i}: {e}"));
                continue;
            }
        };
        let Some(key_id) = keys.verifier(&payload, &layer.signature) else {
            reasons.push(format!("layer {i}: not signed by a trusted key"));
            continue;
        };
        let checked = SimpleSigning::parse(&payload)
            .and_then(|parsed| parsed.check(&digest, identities).map(|()| parsed));
        match checked {
            Ok(payload) => {
                return Ok(Verified {
                    digest,
                    payload,
                    key_id,
                });
            }
            Err(why) => reasons.push(format!("layer {i}: {why}")),
        }
    }
    if reasons.is_empty() {
        reasons.push("the signature manifest has no layers".into());
    }
    Err(SignError::NoValidSignature {
        reference: pinned,
        reasons,
    })
}
