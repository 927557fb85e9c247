//! In-toto attestations in DSSE envelopes, stored the way `cosign attest` stores them.
//!
//! - The statement is an in-toto Statement v1 whose one subject is the artifact's OCI manifest
//!   digest (`{"name": REPOSITORY, "digest": {"sha256": HEX}}`) and whose predicate is what is
//!   attested (a conformance report, an SBOM).
//! - It is wrapped in a DSSE envelope (`payloadType` `application/vnd.in-toto+json`) signed with
//!   ECDSA P-256 over DSSE's pre-authentication encoding (`PAE`); the signature's `keyid` is
//!   the SHA-256 of the signer's public key.
//! - The envelope is a layer (`application/vnd.dsse.envelope.v1+json`, annotation
//!   `predicateType`) of the manifest tagged `sha256-<hex>.att` beside the artifact, appended to
//!   the attestations already there.
//!
//! [`verify_attestations`] resolves the reference once and accepts an attestation only if a
//! trusted key signed the envelope, the payload is an in-toto statement of the requested
//! predicate type, and a subject names exactly the resolved digest. The layer's annotation is a
//! hint for readers, never trusted.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use greentic_registry::{ArtifactRef, Target, sha256_digest};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::keys::{KeyPair, TrustedKeys};
use crate::sigstore_oci::{
    SIGNATURE_ANNOTATION, SignError, attachment_manifest, put_attachment_manifest,
};

/// Media type of a layer holding a DSSE envelope.
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// DSSE `payloadType` of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The layer annotation naming the statement's predicate type (as cosign writes it).
pub const PREDICATE_ANNOTATION: &str = "predicateType";
/// The largest envelope read.
pub const MAX_ENVELOPE_BYTES: u64 = 4 << 20;
/// Attestation layers examined per artifact: the newest ones.
pub const MAX_ATTESTATION_LAYERS: usize = 64;
/// Signatures checked per envelope.
pub const MAX_ENVELOPE_SIGNATURES: usize = 8;
/// Reasons kept for refused layers.
const MAX_REASONS: usize = 8;

/// DSSE's pre-authentication encoding: what is signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    /// `payloadType`.
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// The base64 payload.
    pub payload: String,
    /// Signatures over `PAE(payloadType, payload)`.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of an envelope.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnvelopeSignature {
    /// The signer's key id (a hint).
    #[serde(default)]
    pub keyid: String,
    /// The base64 DER signature.
    pub sig: String,
}

impl Envelope {
    /// Signs `payload` of `payload_type` with `key`.
    pub fn sign(payload_type: &str, payload: &[u8], key: &KeyPair) -> Envelope {
        Envelope {
            payload_type: payload_type.to_string(),
            payload: B64.encode(payload),
            signatures: vec![EnvelopeSignature {
                keyid: key.key_id(),
                sig: B64.encode(key.sign(&pae(payload_type, payload))),
            }],
        }
    }

    /// The payload, if a trusted key signed it: `(payload, id of the key that verified)`.
    pub fn verify(&self, keys: &TrustedKeys) -> Result<(Vec<u8>, String), String> {
        let payload = B64
            .decode(&self.payload)
            .map_err(|e| format!("the envelope's payload is not base64: {e}"))?;
        let signed = pae(&self.payload_type, &payload);
        for signature in self.signatures.iter().take(MAX_ENVELOPE_SIGNATURES) {
            let Ok(sig) = B64.decode(&signature.sig) else {
                continue;
            };
            if let Some(key) = keys.verifier(&signed, &sig) {
                return Ok((payload, key));
            }
        }
        Err(format!(
            "none of its {} signature(s) is by a trusted key{}",
            self.signatures.len(),
            if self.signatures.len() > MAX_ENVELOPE_SIGNATURES {
                format!(" (only the first {MAX_ENVELOPE_SIGNATURES} were checked)")
            } else {
                String::new()
            }
        ))
    }
}

/// An in-toto Statement v1.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Statement {
    /// [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// What the statement is about.
    pub subject: Vec<Subject>,
    /// What kind of claim `predicate` is.
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The claim.
    pub predicate: Value,
}

/// A statement's subject: a name and its digests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Subject {
    /// The artifact's name (its repository).
    pub name: String,
    /// Algorithm → hex digest.
    pub digest: std::collections::BTreeMap<String, String>,
}

impl Statement {
    /// A statement about the artifact `repository@digest` (`sha256:<hex>`).
    pub fn new(repository: &str, digest: &str, predicate_type: &str, predicate: Value) -> Self {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        Statement {
            statement_type: STATEMENT_TYPE.to_string(),
            subject: vec![Subject {
                name: repository.to_string(),
                digest: [("sha256".to_string(), hex.to_string())].into(),
            }],
            predicate_type: predicate_type.to_string(),
            predicate,
        }
    }

    /// Whether a subject names `digest` (`sha256:<hex>`).
    pub fn is_about(&self, digest: &str) -> bool {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.subject
            .iter()
            .any(|s| s.digest.get("sha256").is_some_and(|d| d == hex))
    }
}

/// The tag cosign stores attestations of `digest` under: `sha256-<hex>.att`.
pub fn attestation_tag(digest: &str) -> String {
    format!("{}.att", digest.replace(':', "-"))
}

/// Attests `predicate` (of `predicate_type`) about the artifact `reference` resolves to,
/// signed with `key`, appended to the attestations already there. Returns the attested
/// manifest digest.
pub async fn attest(
    target: &Target,
    reference: &ArtifactRef,
    key: &KeyPair,
    predicate_type: &str,
    predicate: Value,
) -> Result<String, SignError> {
    let digest = target.resolve(reference).await?;
    let statement = Statement::new(&reference.identity(), &digest, predicate_type, predicate);
    let payload = serde_json::to_vec(&statement).expect("JSON");
    let envelope =
        serde_json::to_vec(&Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &payload, key)).expect("JSON");
    let envelope_digest = sha256_digest(&envelope);
    let att_ref = reference.with_tag(&attestation_tag(&digest));
    let mut layers: Vec<Value> = match attachment_manifest(target, &att_ref).await? {
        Some(m) => m["layers"].as_array().cloned().unwrap_or_default(),
        None => Vec::new(),
    };
    layers.retain(|l| l["digest"] != envelope_digest);
    target
        .put_blob(&att_ref, &envelope_digest, &envelope)
        .await?;
    layers.push(json!({
        "mediaType": DSSE_MEDIA_TYPE,
        "digest": envelope_digest,
        "size": envelope.len(),
        "annotations": { SIGNATURE_ANNOTATION: "", PREDICATE_ANNOTATION: predicate_type },
    }));
    put_attachment_manifest(target, &att_ref, layers).await?;
    Ok(digest)
}

/// A verified attestation.
#[derive(Debug, Clone)]
pub struct VerifiedAttestation {
    /// The statement.
    pub statement: Statement,
    /// The id of the trusted key that signed it.
    pub key_id: String,
    /// The envelope's digest (where it is stored).
    pub envelope_digest: String,
}

/// What [`verify_attestations`] found.
#[derive(Debug, Clone)]
pub struct Attestations {
    /// The manifest digest the reference resolved to.
    pub digest: String,
    /// Verified statements of the requested type, oldest first.
    pub verified: Vec<VerifiedAttestation>,
    /// Why each other layer was not accepted.
    pub refused: Vec<String>,
}

impl Attestations {
    /// The newest verified statement.
    pub fn latest(&self) -> Option<&VerifiedAttestation> {
        self.verified.last()
    }
}

/// Reads and verifies the attestations of any of `predicate_types` about the artifact
/// `reference` resolves to. An artifact with no `.att` manifest has none (not an error); callers that
/// require one check [`Attestations::verified`].
pub async fn verify_attestations(
    target: &Target,
    reference: &ArtifactRef,
    keys: &TrustedKeys,
    predicate_types: &[&str],
) -> Result<Attestations, SignError> {
    let digest = target.resolve(reference).await?;
    let att_ref = reference.with_tag(&attestation_tag(&digest));
    let mut found = Attestations {
        digest: digest.clone(),
        verified: Vec::new(),
        refused: Vec::new(),
    };
    let Some(manifest) = attachment_manifest(target, &att_ref).await? else {
        return Ok(found);
    };
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    if layers.len() > MAX_ATTESTATION_LAYERS {
        found.refused.push(format!(
            "the attestation manifest has {} layers; only the newest {MAX_ATTESTATION_LAYERS} were examined",
            layers.len()
        ));
    }
    let skip = layers.len().saturating_sub(MAX_ATTESTATION_LAYERS);
    for (i, layer) in layers.iter().enumerate().skip(skip) {
        if layer["mediaType"] != DSSE_MEDIA_TYPE {
            continue;
        }
        let Some(envelope_digest) = layer["digest"]
            .as_str()
            .filter(|d| greentic_registry::is_sha256_digest(d))
        else {
            found.refused.push(format!("layer {i}: no sha256 digest"));
            continue;
        };
        let checked = async {
            let bytes = target
                .fetch_blob(
                    &att_ref,
                    envelope_digest,
                    "an attestation",
                    MAX_ENVELOPE_BYTES,
                )
                .await
                .map_err(|e| e.to_string())?;
            let envelope: Envelope =
                serde_json::from_slice(&bytes).map_err(|e| format!("not a DSSE envelope: {e}"))?;
            if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
                return Err(format!(
                    "payload type `{}`, not {IN_TOTO_PAYLOAD_TYPE}",
                    clip(&envelope.payload_type)
                ));
            }
            let (payload, key_id) = envelope.verify(keys)?;
            let statement: Statement = serde_json::from_slice(&payload)
                .map_err(|e| format!("not an in-toto statement: {e}"))?;
            if statement.statement_type != STATEMENT_TYPE {
                return Err(format!(
                    "statement type `{}`, not {STATEMENT_TYPE}",
                    clip(&statement.statement_type)
                ));
            }
            if !statement.is_about(&digest) {
                return Err(format!(
                    "it is about {}, not {digest}",
                    clip(
                        &statement
                            .subject
                            .iter()
                            .take(4)
                            .filter_map(|s| s.digest.get("sha256").map(|d| format!("sha256:{d}")))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                ));
            }
            Ok((statement, key_id))
        }
        .await;
        match checked {
            Ok((statement, key_id))
                if predicate_types.contains(&statement.predicate_type.as_str()) =>
            {
                found.verified.push(VerifiedAttestation {
                    statement,
                    key_id,
                    envelope_digest: envelope_digest.to_string(),
                });
            }
            // A valid attestation of another kind: not refused, just not asked for.
            Ok(_) => {}
            Err(why) if found.refused.len() < MAX_REASONS => {
                found.refused.push(format!("layer {i}: {why}"));
            }
            Err(_) => {}
        }
    }
    Ok(found)
}

/// Text from an unverified document, cut to a length fit for a message.
fn clip(text: &str) -> String {
    const MAX: usize = 160;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_specification() {
        // The example from the DSSE protocol description.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn envelopes_verify_only_with_a_trusted_key_and_unchanged() {
        let key = KeyPair::generate();
        let other = KeyPair::generate();
        let trusted = TrustedKeys::from_pems(&[key.public_pem()]).unwrap();
        let envelope = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, b"{\"a\":1}", &key);
        assert_eq!(envelope.signatures[0].keyid, key.key_id());
        let (payload, by) = envelope.verify(&trusted).unwrap();
        assert_eq!(payload, b"{\"a\":1}");
        assert_eq!(by, key.key_id());

        let mut edited = envelope.clone();
        edited.payload = B64.encode(b"{\"a\":2}");
        assert!(edited.verify(&trusted).is_err());
        let mut retyped = envelope.clone();
        retyped.payload_type = "application/json".into();
        assert!(retyped.verify(&trusted).is_err());
        let foreign = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, b"{\"a\":1}", &other);
        assert!(foreign.verify(&trusted).is_err());
    }

    #[test]
    fn statements_name_their_subject_digest() {
        let s = Statement::new("r/p", "sha256:abcd", "https://x/y", json!({}));
        assert!(s.is_about("sha256:abcd"));
        assert!(!s.is_about("sha256:abce"));
        let text = serde_json::to_value(&s).unwrap();
        assert_eq!(text["_type"], STATEMENT_TYPE);
        assert_eq!(text["subject"][0]["digest"]["sha256"], "abcd");
        assert_eq!(text["predicateType"], "https://x/y");
    }
}
