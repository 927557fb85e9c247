//! OCI: image manifests (is it one component artifact, and which blobs), artifact configs, and
//! artifact references.

use greentic_registry::{ArtifactRef, is_sha256_digest, validate_config, validate_manifest};

/// `data` is a manifest, optionally followed by a NUL and its config; the manifest's text is
/// also tried as a reference.
pub fn run(data: &[u8]) {
    let (manifest, config) = crate::split_at_nul(data);
    match validate_manifest("fuzz", manifest) {
        Ok((value, descriptors)) => {
            // Everything pull fetches next is named by a real digest, from exactly one layer.
            assert!(is_sha256_digest(&descriptors.config), "{descriptors:?}");
            assert!(is_sha256_digest(&descriptors.layer), "{descriptors:?}");
            let wasm_layers = value["layers"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter(|l| l["mediaType"] == "application/wasm")
                        .count()
                })
                .unwrap_or(0);
            assert_eq!(wasm_layers, 1, "accepted with {wasm_layers} wasm layers");
            if let Some(config) = config {
                match validate_config("fuzz", config, &descriptors) {
                    Ok(c) => assert!(c.is_object()),
                    Err(e) => crate::assert_bounded("config", &e.to_string()),
                }
            }
        }
        Err(e) => crate::assert_bounded("manifest", &e.to_string()),
    }
    if let Ok(text) = std::str::from_utf8(manifest) {
        reference(text);
    }
}

/// A reference that parses prints as one that parses to the same thing (locks and logs hold
/// the printed form).
fn reference(text: &str) {
    let Ok(parsed) = text.parse::<ArtifactRef>() else {
        return;
    };
    let printed = parsed.to_string();
    let again: ArtifactRef = printed.parse().unwrap_or_else(|e| {
        panic!("`{text}` parsed, but its printed form `{printed}` does not: {e}")
    });
    assert_eq!(again, parsed, "`{text}` printed as `{printed}`");
    if let Some(d) = parsed.digest() {
        assert!(is_sha256_digest(d), "`{text}` pins `{d}`");
    }
}
