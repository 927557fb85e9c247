//! OCI distribution of provider components.
//!
//! Components travel as CNCF TAG Runtime *Wasm OCI artifacts*: an OCI image manifest whose
//! config is `application/vnd.wasm.config.v0+json` (filled from the component's real WIT world)
//! and whose single layer is the component, `application/wasm`. This crate pushes and pulls
//! them to and from
//!
//! - registries speaking the OCI distribution API ([`Target::Remote`], on `oci-client`), and
//! - local OCI image-layout directories ([`Target::Layout`], `oci:DIR:TAG`), readable and
//!   writable by `skopeo … oci:DIR:TAG`.
//!
//! Every byte fetched is checked against its digest before it is used or cached: stores only
//! implement *unverified* reads, and the verifying wrappers on [`Target`] are the only way to
//! get bytes out. A pull resolves a tag to a digest once and then fetches by that digest. The
//! [`BlobCache`] keeps verified blobs by digest (temporary file, fsync, rename), so a second pull
//! of a digest needs no network.
//!
//! ```no_run
//! # async fn demo() -> Result<(), greentic_registry::RegistryError> {
//! use greentic_registry::{ArtifactRef, BlobCache, Target, pull_component};
//!
//! let reference: ArtifactRef = "127.0.0.1:5000/providers/echo:1.0.0".parse()?;
//! let target = Target::open(&reference, &Default::default())?;
//! let cache = BlobCache::new("/var/cache/greentic/blobs".into());
//! let pulled = pull_component(&target, &reference, Some(&cache)).await?;
//! println!("{} is {} bytes", pulled.manifest_digest, pulled.component.len());
//! # Ok(()) }
//! ```

mod artifact;
mod cache;
mod digest;
mod error;
mod layout;
mod reference;
mod remote;
mod target;
pub mod testing;

pub use artifact::{
    ANNOTATION_DESCRIPTION, ANNOTATION_TITLE, ANNOTATION_VERSION, DEFAULT_MAX_COMPONENT_BYTES,
    Descriptors, MAX_CONFIG_BYTES, Pulled, Pushed, WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE,
    build_artifact, pull_component, pull_component_capped, push_component, rfc3339,
    validate_config, validate_manifest,
};
pub use cache::BlobCache;
pub use digest::{is_sha256_digest, sha256_digest};
pub use error::RegistryError;
pub use layout::OciLayout;
pub use reference::ArtifactRef;
pub use remote::{RemoteOptions, RemoteRegistry, pem_certificates};
pub use target::{MAX_MANIFEST_BYTES, Target};

/// `application/vnd.oci.image.manifest.v1+json`.
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// `application/vnd.oci.image.index.v1+json`.
pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
