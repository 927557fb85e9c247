//! Provider manifests: the JSON parser (schema, serde, semantics, `config_schema` compiled),
//! tenant configurations checked against that schema, and the custom-section extractor.

use greentic_manifest::{ProviderManifest, extract_manifest};

/// `data` is a manifest, optionally followed by a NUL and a tenant configuration (JSON); the
/// whole of `data` is also tried as a component carrying a manifest.
pub fn run(data: &[u8]) {
    let (manifest, config) = crate::split_at_nul(data);
    if let Ok(text) = std::str::from_utf8(manifest) {
        match ProviderManifest::from_json("fuzz/provider.json", text) {
            Ok(m) => {
                // The host prints manifests (`greentic-host inspect`); what it prints must parse
                // back to the same manifest.
                let printed = m.to_json_pretty();
                let again = ProviderManifest::from_json("fuzz/printed.json", &printed)
                    .unwrap_or_else(|e| panic!("a printed manifest is refused: {e}\n{printed}"));
                assert_eq!(again, m, "a manifest changed in a print/parse round trip");
                if let Some(config) = config.and_then(|c| serde_json::from_slice(c).ok()) {
                    for problem in m.check_config(&config) {
                        crate::assert_bounded("config", &problem.to_string());
                    }
                }
            }
            Err(e) => crate::assert_bounded("manifest", &e.to_string()),
        }
    }
    if let Err(e) = extract_manifest("fuzz.wasm", data) {
        crate::assert_bounded("extract", &e.to_string());
    }
}
