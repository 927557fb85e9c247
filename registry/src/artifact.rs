use serde_json::{Value, json};

use crate::cache::BlobCache;
use crate::digest::sha256_digest;
use crate::error::RegistryError;
use crate::reference::ArtifactRef;
use crate::target::Target;
use crate::{OCI_INDEX_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE};

/// The CNCF Wasm artifact config media type.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The component layer media type.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// `org.opencontainers.image.title`: the provider name.
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
/// `org.opencontainers.image.version`: the provider version.
pub const ANNOTATION_VERSION: &str = "org.opencontainers.image.version";
/// `org.opencontainers.image.description`.
pub const ANNOTATION_DESCRIPTION: &str = "org.opencontainers.image.description";
const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";

/// An artifact ready to push.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The manifest.
    pub manifest: Vec<u8>,
    /// Its digest.
    pub manifest_digest: String,
    /// The config blob.
    pub config: Vec<u8>,
    /// Its digest.
    pub config_digest: String,
    /// The component.
    pub layer: Vec<u8>,
    /// Its digest.
    pub layer_digest: String,
}

fn now_rfc3339() -> String {
    rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    )
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Builds the CNCF Wasm artifact for a component: the config is filled from the component's
/// real WIT world, the annotations from its embedded provider manifest (if it has one).
pub fn build_artifact(name: &str, component: &[u8]) -> Result<Artifact, RegistryError> {
    let world = greentic_interfaces::ComponentWorld::decode(name, component).map_err(|e| {
        RegistryError::NotAComponentArtifact {
            reference: name.to_string(),
            why: e.to_string(),
        }
    })?;
    let manifest = greentic_manifest::extract_manifest(name, component).ok();
    let created = now_rfc3339();
    let layer_digest = sha256_digest(component);
    let config = json!({
        "created": created,
        "author": manifest.as_ref().map(|m| m.name.clone()),
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer_digest],
        "component": {
            "exports": world.exports.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            "imports": world.imports.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            "target": manifest.as_ref().map(|m| m.compat.wit.to_string()),
        },
    });
    let config = serde_json::to_vec(&config).expect("JSON");
    let config_digest = sha256_digest(&config);
    let mut annotations = serde_json::Map::new();
    annotations.insert(ANNOTATION_CREATED.into(), json!(created));
    if let Some(m) = &manifest {
        annotations.insert(ANNOTATION_TITLE.into(), json!(m.name));
        annotations.insert(ANNOTATION_VERSION.into(), json!(m.version.to_string()));
        if let Some(d) = &m.description {
            annotations.insert(ANNOTATION_DESCRIPTION.into(), json!(d));
        }
    }
    let oci_manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": { "mediaType": WASM_CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": WASM_LAYER_MEDIA_TYPE, "digest": layer_digest, "size": component.len() }],
        "annotations": annotations,
    });
    let manifest_bytes = serde_json::to_vec(&oci_manifest).expect("JSON");
    Ok(Artifact {
        manifest_digest: sha256_digest(&manifest_bytes),
        manifest: manifest_bytes,
        config,
        config_digest,
        layer: component.to_vec(),
        layer_digest,
    })
}

/// What a push produced.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The reference pinned to the manifest digest.
    pub reference: String,
    /// The manifest digest.
    pub digest: String,
}

/// Pushes a component to `reference` (which must name a tag).
pub async fn push_component(
    target: &Target,
    reference: &ArtifactRef,
    component: &[u8],
) -> Result<Pushed, RegistryError> {
    if reference.tag().is_none() {
        return Err(RegistryError::BadReference {
            reference: reference.to_string(),
            why: "pushing needs a tag".into(),
        });
    }
    let artifact = build_artifact(&reference.to_string(), component)?;
    target
        .put_blob(reference, &artifact.config_digest, &artifact.config)
        .await?;
    target
        .put_blob(reference, &artifact.layer_digest, &artifact.layer)
        .await?;
    let digest = target
        .put_manifest(reference, &artifact.manifest, OCI_MANIFEST_MEDIA_TYPE)
        .await?;
    Ok(Pushed {
        reference: reference.with_digest(&digest).to_string(),
        digest,
    })
}

/// The descriptors of a validated component manifest.
#[derive(Debug, Clone)]
pub struct Descriptors {
    /// Config digest.
    pub config: String,
    /// Component layer digest.
    pub layer: String,
    /// Component layer size, as the manifest states it.
    pub layer_size: Option<u64>,
}

/// Checks that a manifest is a single-component CNCF Wasm artifact.
pub fn validate_manifest(
    reference: &str,
    bytes: &[u8],
) -> Result<(Value, Descriptors), RegistryError> {
    let bad = |why: String| RegistryError::NotAComponentArtifact {
        reference: reference.to_string(),
        why,
    };
    let m: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("the manifest is not JSON: {e}")))?;
    match m["mediaType"].as_str() {
        Some(OCI_MANIFEST_MEDIA_TYPE) | None => {}
        Some(OCI_INDEX_MEDIA_TYPE) => {
            return Err(bad("it is an image index, not a single artifact".into()));
        }
        Some(other) => return Err(bad(format!("unknown manifest media type `{other}`"))),
    }
    if m["schemaVersion"] != 2 {
        return Err(bad("schemaVersion is not 2".into()));
    }
    let config_type = m["config"]["mediaType"].as_str().unwrap_or_default();
    if config_type != WASM_CONFIG_MEDIA_TYPE {
        return Err(bad(format!(
            "config media type is `{config_type}`, expected `{WASM_CONFIG_MEDIA_TYPE}`"
        )));
    }
    let layers = m["layers"].as_array().cloned().unwrap_or_default();
    let wasm: Vec<&Value> = layers
        .iter()
        .filter(|l| l["mediaType"] == WASM_LAYER_MEDIA_TYPE)
        .collect();
    if let Some(other) = layers
        .iter()
        .find(|l| l["mediaType"] != WASM_LAYER_MEDIA_TYPE)
    {
        return Err(bad(format!(
            "unknown layer media type `{}`",
            other["mediaType"].as_str().unwrap_or("(none)")
        )));
    }
    let layer = match wasm.as_slice() {
        [one] => one,
        [] => return Err(bad("no `application/wasm` layer".into())),
        many => {
            return Err(bad(format!(
                "{} wasm layers; a component artifact has exactly one",
                many.len()
            )));
        }
    };
    let digest = |v: &Value, what: &str| {
        v["digest"]
            .as_str()
            .filter(|d| crate::digest::hex_of(d).is_some())
            .map(str::to_string)
            .ok_or_else(|| bad(format!("the {what} has no sha256 digest")))
    };
    let descriptors = Descriptors {
        config: digest(&m["config"], "config")?,
        layer: digest(layer, "layer")?,
        layer_size: layer["size"].as_u64(),
    };
    Ok((m, descriptors))
}

/// Checks a component artifact's config: a JSON object whose `layerDigests`, when present, name
/// the manifest's layer (a config describing another component is refused).
pub fn validate_config(
    reference: &str,
    bytes: &[u8],
    descriptors: &Descriptors,
) -> Result<Value, RegistryError> {
    let bad = |why: String| RegistryError::NotAComponentArtifact {
        reference: reference.to_string(),
        why,
    };
    let config: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("the config is not JSON: {e}")))?;
    if !config.is_object() {
        return Err(bad("the config is not a JSON object".into()));
    }
    match &config["layerDigests"] {
        Value::Null => {}
        Value::Array(digests) if digests.iter().any(|d| d == &descriptors.layer[..]) => {}
        Value::Array(_) => {
            return Err(bad(format!(
                "the config's layerDigests do not include the layer {}",
                descriptors.layer
            )));
        }
        _ => return Err(bad("the config's layerDigests is not a list".into())),
    }
    Ok(config)
}

fn ensure_component(reference: &str, bytes: &[u8]) -> Result<(), RegistryError> {
    match wasmparser::Parser::new(0).parse_all(bytes).next() {
        Some(Ok(wasmparser::Payload::Version {
            encoding: wasmparser::Encoding::Component,
            ..
        })) => Ok(()),
        _ => Err(RegistryError::NotAComponentArtifact {
            reference: reference.to_string(),
            why: "the layer is not a WebAssembly component".into(),
        }),
    }
}

/// A pulled, verified component.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The manifest digest the reference resolved to.
    pub manifest_digest: String,
    /// The manifest.
    pub manifest: Value,
    /// The config.
    pub config: Value,
    /// The component bytes.
    pub component: Vec<u8>,
    /// Their digest.
    pub component_digest: String,
}

/// The largest artifact config read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The largest component [`pull_component`] reads (what a bundle's `max_component_bytes`
/// defaults to).
pub const DEFAULT_MAX_COMPONENT_BYTES: u64 = 64 << 20;

/// [`pull_component_capped`] with [`DEFAULT_MAX_COMPONENT_BYTES`].
pub async fn pull_component(
    target: &Target,
    reference: &ArtifactRef,
    cache: Option<&BlobCache>,
) -> Result<Pulled, RegistryError> {
    pull_component_capped(target, reference, cache, DEFAULT_MAX_COMPONENT_BYTES).await
}

/// Pulls a component: resolves the reference to a digest once, fetches everything by digest,
/// verifies every byte, validates the artifact, and only then caches it. With a cache, blobs
/// already there are not fetched again. Nothing larger than its cap is read past the cap —
/// the manifest [`MAX_MANIFEST_BYTES`](crate::MAX_MANIFEST_BYTES), the config
/// [`MAX_CONFIG_BYTES`], the component `max_component_bytes` (a layer whose descriptor states
/// more is refused before it is fetched) — and nothing from a refused pull is cached.
pub async fn pull_component_capped(
    target: &Target,
    reference: &ArtifactRef,
    cache: Option<&BlobCache>,
    max_component_bytes: u64,
) -> Result<Pulled, RegistryError> {
    let digest = target.resolve(reference).await?;
    let pinned = reference.with_digest(&digest);
    let name = pinned.to_string();
    let cached = |d: &str| cache.and_then(|c| c.get(d));
    let manifest_bytes = match cached(&digest) {
        Some(b) => b,
        None => {
            target
                .fetch_manifest(
                    &pinned,
                    &digest,
                    &[OCI_MANIFEST_MEDIA_TYPE, OCI_INDEX_MEDIA_TYPE],
                )
                .await?
        }
    };
    let (manifest, d) = validate_manifest(&name, &manifest_bytes)?;
    let config_bytes = match cached(&d.config).filter(|b| b.len() as u64 <= MAX_CONFIG_BYTES) {
        Some(b) => b,
        None => {
            target
                .fetch_blob(&pinned, &d.config, "the config", MAX_CONFIG_BYTES)
                .await?
        }
    };
    let config = validate_config(&name, &config_bytes, &d)?;
    let component = match cached(&d.layer).filter(|b| b.len() as u64 <= max_component_bytes) {
        Some(b) => b,
        None => {
            target
                .fetch_blob_sized(
                    &pinned,
                    &d.layer,
                    "the component layer",
                    d.layer_size,
                    max_component_bytes,
                )
                .await?
        }
    };
    ensure_component(&name, &component)?;
    if let Some(cache) = cache {
        cache.put(&digest, &manifest_bytes)?;
        cache.put(&d.config, &config_bytes)?;
        cache.put(&d.layer, &component)?;
    }
    Ok(Pulled {
        manifest_digest: digest,
        manifest,
        config,
        component,
        component_digest: d.layer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(layers: Value, config_type: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": config_type, "digest": format!("sha256:{}", "c".repeat(64)), "size": 2},
            "layers": layers,
        }))
        .unwrap()
    }

    fn layer(media: &str) -> Value {
        json!({"mediaType": media, "digest": format!("sha256:{}", "a".repeat(64)), "size": 1})
    }

    #[test]
    fn a_config_describing_another_layer_is_refused() {
        let (_, d) = validate_manifest(
            "r",
            &manifest(
                json!([layer(WASM_LAYER_MEDIA_TYPE)]),
                WASM_CONFIG_MEDIA_TYPE,
            ),
        )
        .unwrap();
        let ours = json!({"layerDigests": [d.layer.clone()]}).to_string();
        validate_config("r", ours.as_bytes(), &d).unwrap();
        validate_config("r", b"{}", &d).unwrap();
        let other = json!({"layerDigests": [format!("sha256:{}", "b".repeat(64))]}).to_string();
        for (bytes, expected) in [
            (other.as_bytes(), "do not include the layer"),
            (&b"{\"layerDigests\": 7}"[..], "is not a list"),
            (b"[1, 2]", "not a JSON object"),
            (b"{", "not JSON"),
        ] {
            let e = validate_config("r", bytes, &d).unwrap_err().to_string();
            assert!(e.contains(expected), "{expected}: {e}");
        }
    }

    #[test]
    fn validates_the_artifact_shape() {
        validate_manifest(
            "r",
            &manifest(
                json!([layer(WASM_LAYER_MEDIA_TYPE)]),
                WASM_CONFIG_MEDIA_TYPE,
            ),
        )
        .unwrap();
        let cases = [
            (
                manifest(
                    json!([layer(WASM_LAYER_MEDIA_TYPE), layer(WASM_LAYER_MEDIA_TYPE)]),
                    WASM_CONFIG_MEDIA_TYPE,
                ),
                "2 wasm layers",
            ),
            (
                manifest(
                    json!([layer("application/vnd.oci.image.layer.v1.tar+gzip")]),
                    WASM_CONFIG_MEDIA_TYPE,
                ),
                "unknown layer media type",
            ),
            (
                manifest(json!([]), WASM_CONFIG_MEDIA_TYPE),
                "no `application/wasm` layer",
            ),
            (
                manifest(
                    json!([layer(WASM_LAYER_MEDIA_TYPE)]),
                    "application/vnd.oci.image.config.v1+json",
                ),
                "config media type",
            ),
            (b"nope".to_vec(), "not JSON"),
        ];
        for (bytes, expected) in cases {
            let e = validate_manifest("r", &bytes).unwrap_err().to_string();
            assert!(e.contains(expected), "{expected}: {e}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
