//! The greentic provider manifest (`provider.json`): parsing, validation and extraction.
//!
//! Every provider describes itself with a manifest — name, version, domain, capabilities, the
//! JSON Schema of its per-tenant configuration, the secrets it reads, the WIT world it targets
//! and the hosts it calls. The manifest travels *inside* the component, in the custom section
//! [`MANIFEST_SECTION`], so the component's digest (and any signature over it) covers it.
//!
//! [`ProviderManifest::from_json`] checks a manifest in three layers, each error naming the file,
//! the field (a JSON Pointer) and the fix:
//! 1. the document against the manifest's own JSON Schema ([`MANIFEST_SCHEMA`]);
//! 2. `config_schema` against the JSON Schema 2020-12 meta-schema (and that it compiles);
//! 3. the semantics: `compat.wit` is `namespace:package/world@RANGE`, the domain agrees with a
//!    greentic world, names are unique.
//!
//! [`extract_manifest`] reads the embedded manifest out of a component without running it.
//!
//! ```
//! use greentic_manifest::ProviderManifest;
//!
//! let manifest = ProviderManifest::from_json("provider.json", r#"{
//!     "name": "messaging-echo",
//!     "version": "1.0.0",
//!     "domain": "messaging",
//!     "capabilities": ["send"],
//!     "compat": { "wit": "greentic:messaging/provider@1.0.x" }
//! }"#)?;
//! assert_eq!(manifest.compat.wit.world, "provider");
//! assert!(manifest.compat.wit.range.matches(&semver::Version::new(1, 0, 3)));
//! # Ok::<(), greentic_manifest::ManifestError>(())
//! ```

mod compat;
mod error;
mod extract;
mod manifest;
mod outbound;
mod signature;

pub use compat::{WitTarget, WitTargetError};
pub use error::{FieldProblem, ManifestError, clip_middle, nearest};
pub use extract::{ExtractError, MANIFEST_SECTION, extract_manifest, extract_manifest_bytes};
pub use manifest::{Compat, Instances, ProviderManifest, SecretSpec};
pub use outbound::{HostMatch, HostPattern, is_restricted};
pub use signature::{SIGNATURE_ALGORITHMS, SignatureScheme};

/// The JSON Schema (2020-12) of `provider.json` itself, as shipped in `schemas/provider.schema.json`.
pub const MANIFEST_SCHEMA: &str = include_str!("../../schemas/provider.schema.json");
