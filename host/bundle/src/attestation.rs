//! The kinds of attestation a bundle can require of a provider, and the in-toto predicate
//! types that satisfy each.

use serde::{Deserialize, Serialize};

/// Predicate type of a greentic conformance report.
pub const CONFORMANCE_PREDICATE: &str = "https://greentic.ai/attestations/conformance/v1";
/// Predicate type of a CycloneDX SBOM (as `cosign attest --type cyclonedx` writes it).
pub const CYCLONEDX_PREDICATE: &str = "https://cyclonedx.org/bom";
/// Predicate type of an SPDX SBOM (as `cosign attest --type spdxjson` writes it).
pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";

/// A kind of attestation a bundle can require.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A conformance report in which every case passed.
    Conformance,
    /// A software bill of materials (CycloneDX or SPDX).
    Sbom,
}

impl Kind {
    /// Its name in bundles and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Conformance => "conformance",
            Kind::Sbom => "sbom",
        }
    }

    /// The predicate types that satisfy it.
    pub fn predicate_types(self) -> &'static [&'static str] {
        match self {
            Kind::Conformance => &[CONFORMANCE_PREDICATE],
            Kind::Sbom => &[CYCLONEDX_PREDICATE, SPDX_PREDICATE],
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "conformance" => Ok(Kind::Conformance),
            "sbom" => Ok(Kind::Sbom),
            other => Err(format!(
                "`{other}` is not a kind of attestation; use `conformance` or `sbom`"
            )),
        }
    }
}
