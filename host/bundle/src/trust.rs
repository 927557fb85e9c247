//! `[trust]`: the keys the host trusts, each for its roles only, and the attestations every
//! provider must carry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `[trust]`: named cosign public keys (PEM files, relative to the bundle), each trusted for
/// its roles only.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustSection {
    /// Key name → its PEM public key file, alone (`ci = "ci.pub"`) or with the roles it is
    /// trusted for (`ci = { file = "ci.pub", roles = ["provider"] }`).
    #[serde(default)]
    pub keys: BTreeMap<String, TrustKey>,
    /// Attestations every provider must carry (`conformance`, `sbom`), signed by a key trusted
    /// for it and about its exact digest.
    #[serde(default)]
    pub require: Vec<crate::attestation::Kind>,
    /// A PEM file of CA certificates (relative to the bundle) trusted, beside the system's
    /// roots, for the registries providers are pulled from: a registry behind a private PKI.
    /// Loopback registries are then reached over TLS too.
    #[serde(default)]
    pub registry_ca: Option<std::path::PathBuf>,
}

/// What a trusted key may vouch for. A key is trusted for its roles only, so a key that
/// publishes fleet revisions does not also make the hosts run a provider it signed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    /// Signatures of provider components.
    Provider,
    /// Attestations about providers (conformance reports, SBOMs).
    Attestation,
    /// Fleet revisions (`greentic-host publish`): a key named in `[cluster].publishers`.
    Publisher,
    /// Checkpoints of audit logs.
    Audit,
}

impl KeyRole {
    /// The role's name, as a bundle writes it.
    pub fn name(self) -> &'static str {
        match self {
            KeyRole::Provider => "provider",
            KeyRole::Attestation => "attestation",
            KeyRole::Publisher => "publisher",
            KeyRole::Audit => "audit",
        }
    }
}

/// A key of `[trust.keys]`: a PEM file, and the roles it is trusted for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum TrustKey {
    /// A bare file: trusted for provider signatures and attestations — or, if
    /// `[cluster].publishers` names it, for published revisions only.
    File(PathBuf),
    /// A file and its roles, said outright.
    Roles(KeyWithRoles),
}

/// `{ file = "…", roles = [...] }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyWithRoles {
    /// The PEM public key file, relative to the bundle.
    pub file: PathBuf,
    /// What the key is trusted for.
    pub roles: Vec<KeyRole>,
}

impl<'de> Deserialize<'de> for TrustKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TrustKey, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TrustKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key file, or `{ file = \"key.pub\", roles = [\"provider\"] }`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TrustKey, E> {
                Ok(TrustKey::File(PathBuf::from(v)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<TrustKey, A::Error> {
                KeyWithRoles::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(TrustKey::Roles)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl TrustKey {
    /// The PEM file.
    pub fn file(&self) -> &Path {
        match self {
            TrustKey::File(f) => f,
            TrustKey::Roles(k) => &k.file,
        }
    }
}
