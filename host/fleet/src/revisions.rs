//! Published revisions: a bundle's text and lock, signed with a publisher's key.
//!
//! The record in the revisions bucket is an [`Envelope`]: the exact bytes of the [`Published`]
//! JSON (`payload`) and an ECDSA P-256 signature over them (`signature`, hex; the key format is
//! cosign's). A host accepts a record only when a key its active revision names in
//! `[cluster].publishers` verifies the signature and the payload's digest is the digest of the
//! bundle text it carries. Keys: `stable` (every tenant's revision), `canary` (a revision for
//! some tenants, while it is judged), `verdict.<hex>` (what became of a canary).

use greentic_bundle::{Bundle, Lock};
use serde::{Deserialize, Serialize};

use crate::canary::CanaryPlan;

/// The key of every tenant's revision.
pub const STABLE: &str = "stable";
/// The key of the canary revision.
pub const CANARY: &str = "canary";

/// The prefix of the verdicts on the canary `digest`.
pub fn verdict_prefix(digest: &str) -> String {
    format!(
        "verdict.{}.",
        digest.strip_prefix("sha256:").unwrap_or(digest)
    )
}

/// The key of the verdict on the canary `digest` published as `canary` entry `revision` (the
/// same digest published again is judged again).
pub fn verdict_key(digest: &str, revision: u64) -> String {
    format!("{}{revision}", verdict_prefix(digest))
}

/// A published revision's digest: of its bundle text and its lock, so a lock that changed
/// under the same text (a provider re-tagged) is a new revision.
pub fn published_digest(bundle: &str, lock: &Lock) -> String {
    let lock = serde_json::to_string(lock).expect("a lock always serialises");
    greentic_bundle::digest_of(format!("{bundle}\n{lock}").as_bytes())
}

/// A revision as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Published {
    /// `sha256:<hex>` of `bundle` and `lock` ([`published_digest`]).
    pub digest: String,
    /// The text of `greentic.toml`; relative paths in it resolve against each host's bundle
    /// directory (its keys, secret files).
    pub bundle: String,
    /// The lock: the digest each provider must resolve to.
    pub lock: Lock,
    /// When it was published (ms since the epoch).
    pub published_at_ms: u64,
    /// Who published it (free text: user, CI job).
    #[serde(default)]
    pub publisher: String,
    /// A canary plan: the revision serves these tenants first.
    #[serde(default)]
    pub canary: Option<CanaryPlan>,
}

/// A signed record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The JSON of a [`Published`], exactly as signed.
    pub payload: String,
    /// ECDSA P-256 / SHA-256 signature over `payload`, ASN.1 DER, hex.
    pub signature: String,
}

impl Envelope {
    /// Signs `published` with `key`.
    pub fn sign(published: &Published, key: &greentic_signing::KeyPair) -> Envelope {
        let payload = serde_json::to_string(published).expect("a revision always serialises");
        let signature = hex::encode(key.sign(payload.as_bytes()));
        Envelope { payload, signature }
    }

    /// The revision inside `bytes` (an envelope), if one of `keys` signed it and it is whole.
    pub fn open(bytes: &[u8], keys: &greentic_signing::TrustedKeys) -> Result<Published, String> {
        let envelope: Envelope = serde_json::from_slice(bytes)
            .map_err(|e| format!("the published record is not a signed revision: {e}"))?;
        let signature = hex::decode(&envelope.signature)
            .map_err(|_| "the published record's signature is not hex".to_string())?;
        // Read the digest only to name the record in the refusal; nothing else is trusted yet.
        let claimed = serde_json::from_str::<serde_json::Value>(&envelope.payload)
            .ok()
            .and_then(|v| v["digest"].as_str().map(str::to_string))
            .unwrap_or_else(|| "?".into());
        if !keys.verifies(envelope.payload.as_bytes(), &signature) {
            return Err(format!(
                "revision {claimed}: no key in [cluster].publishers signed it; refused (publish it with a publisher's key)"
            ));
        }
        let published: Published = serde_json::from_str(&envelope.payload)
            .map_err(|e| format!("revision {claimed}: the signed payload is malformed: {e}"))?;
        let actual = published_digest(&published.bundle, &published.lock);
        if actual != published.digest {
            return Err(format!(
                "revision {claimed}: its bundle and lock digest to {actual}, not the one signed"
            ));
        }
        Ok(published)
    }
}

/// The keys `bundle` trusts to publish revisions: its `[cluster].publishers`, read from
/// `[trust.keys]`.
pub fn publisher_keys(bundle: &Bundle) -> Result<greentic_signing::TrustedKeys, String> {
    let names = &bundle.file.cluster.publishers;
    if names.is_empty() {
        return Err("[cluster].publishers names no key; a fleet host applies no published revision without a publisher's signature: add the key's name from [trust.keys]".into());
    }
    let mut pems = Vec::new();
    for name in names {
        let key = bundle.file.trust.keys.get(name).ok_or_else(|| {
            format!("[cluster].publishers names `{name}`, which [trust.keys] does not have")
        })?;
        if !bundle
            .file
            .key_roles(name)
            .contains(&greentic_bundle::KeyRole::Publisher)
        {
            return Err(format!(
                "[cluster].publishers names `{name}`, which [trust.keys] does not trust to publish; add the `publisher` role to it"
            ));
        }
        let full = bundle.path(key.file());
        pems.push(
            std::fs::read_to_string(&full)
                .map_err(|e| format!("publisher key `{name}` ({}): {e}", full.display()))?,
        );
    }
    greentic_signing::TrustedKeys::from_pems(&pems).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(text: &str) -> Published {
        Published {
            digest: published_digest(text, &Lock::default()),
            bundle: text.into(),
            lock: Lock::default(),
            published_at_ms: 1,
            publisher: "test".into(),
            canary: None,
        }
    }

    #[test]
    fn only_a_trusted_key_opens_a_whole_record() {
        let key = greentic_signing::KeyPair::generate();
        let other = greentic_signing::KeyPair::generate();
        let trusted = greentic_signing::TrustedKeys::from_pems(&[key.public_pem()]).unwrap();
        let p = published("[tenants.acme]\n");
        let good = serde_json::to_vec(&Envelope::sign(&p, &key)).unwrap();
        assert_eq!(Envelope::open(&good, &trusted).unwrap(), p);

        let forged = serde_json::to_vec(&Envelope::sign(&p, &other)).unwrap();
        let e = Envelope::open(&forged, &trusted).unwrap_err();
        assert!(e.contains("no key in [cluster].publishers"), "{e}");

        // A payload changed after signing.
        let mut envelope = Envelope::sign(&p, &key);
        envelope.payload = envelope.payload.replace("acme", "evil");
        let e = Envelope::open(&serde_json::to_vec(&envelope).unwrap(), &trusted).unwrap_err();
        assert!(e.contains("no key"), "{e}");

        // Signed, but the digest does not match the text.
        let mut lying = published("[tenants.acme]\n");
        lying.digest = greentic_bundle::digest_of(b"something else");
        // (The same text with another lock is another revision.)
        let mut relocked = published("[tenants.acme]\n");
        relocked.lock.providers.insert(
            "p".into(),
            greentic_bundle::LockEntry {
                source: "x".into(),
                digest: "sha256:00".into(),
                manifest_digest: None,
            },
        );
        assert_ne!(
            published_digest(&relocked.bundle, &relocked.lock),
            published("[tenants.acme]\n").digest
        );
        let e = Envelope::open(
            &serde_json::to_vec(&Envelope::sign(&lying, &key)).unwrap(),
            &trusted,
        )
        .unwrap_err();
        assert!(e.contains("not the one signed"), "{e}");
        assert!(Envelope::open(b"{}", &trusted).is_err());
    }
}
