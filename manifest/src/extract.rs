use wasmparser::{Encoding, Parser, Payload};

use crate::{ManifestError, ProviderManifest};

/// Name of the custom section that carries `provider.json` inside a component.
///
/// The guest SDK's `provider_manifest!()` macro writes it into the provider's core module; the
/// component encoder keeps it, so it sits inside the component's (first) core module.
pub const MANIFEST_SECTION: &str = "greentic:provider-manifest";

/// Why no manifest could be read from a wasm file.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The bytes are not a WebAssembly binary at all.
    #[error(
        "{file}: not a WebAssembly file ({reason}); pass a `.wasm` component built for wasm32-wasip2"
    )]
    NotWasm {
        /// The file.
        file: String,
        /// What the parser said.
        reason: String,
    },
    /// A core module rather than a component.
    #[error(
        "{file}: is a core wasm module, not a component; build it with `cargo build --target wasm32-wasip2` or `cargo component build`"
    )]
    CoreModule {
        /// The file.
        file: String,
    },
    /// The binary is truncated or malformed.
    #[error("{file}: malformed component: {reason}")]
    Malformed {
        /// The file.
        file: String,
        /// What the parser said.
        reason: String,
    },
    /// No `greentic:provider-manifest` section.
    #[error(
        "{file}: no embedded provider manifest (custom section `{MANIFEST_SECTION}`); add `greentic_provider_sdk::provider_manifest!();` to the provider's lib.rs next to its provider.json"
    )]
    Missing {
        /// The file.
        file: String,
    },
    /// More than one manifest section: ambiguous, so refused.
    #[error(
        "{file}: {count} embedded provider manifests; a component must carry exactly one (invoke `provider_manifest!()` once)"
    )]
    Ambiguous {
        /// The file.
        file: String,
        /// How many were found.
        count: usize,
    },
    /// The section is there but its content is not a valid manifest.
    #[error(transparent)]
    Invalid(#[from] ManifestError),
}

/// Why bytes that should start a WebAssembly file do not, in one line: what they look like
/// instead, never a dump of the magic numbers.
fn not_wasm_reason(bytes: &[u8], parser: &str) -> String {
    let head = &bytes[..bytes.len().min(64)];
    if bytes.is_empty() {
        "the file is empty".into()
    } else if !bytes.starts_with(b"\0asm") {
        let text = head
            .iter()
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
        if text {
            "it is text, not the binary format (which starts with `\\0asm`)".into()
        } else {
            "it does not start with WebAssembly's magic bytes `\\0asm`".into()
        }
    } else {
        parser.lines().next().unwrap_or(parser).to_string()
    }
}

/// Returns the raw bytes of the embedded manifest section of a component, without running it.
pub fn extract_manifest_bytes<'a>(file: &str, wasm: &'a [u8]) -> Result<&'a [u8], ExtractError> {
    let mut found: Vec<&'a [u8]> = Vec::new();
    let mut first = true;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| {
            if first {
                ExtractError::NotWasm {
                    file: file.to_string(),
                    reason: not_wasm_reason(wasm, e.message()),
                }
            } else {
                ExtractError::Malformed {
                    file: file.to_string(),
                    reason: e.to_string(),
                }
            }
        })?;
        match payload {
            Payload::Version { encoding, .. } if first => {
                first = false;
                if encoding != Encoding::Component {
                    return Err(ExtractError::CoreModule {
                        file: file.to_string(),
                    });
                }
            }
            Payload::CustomSection(section) if section.name() == MANIFEST_SECTION => {
                found.push(section.data());
            }
            _ => {}
        }
    }
    match found.len() {
        0 => Err(ExtractError::Missing {
            file: file.to_string(),
        }),
        1 => Ok(found[0]),
        count => Err(ExtractError::Ambiguous {
            file: file.to_string(),
            count,
        }),
    }
}

/// Reads and validates the manifest embedded in a component, without running it.
pub fn extract_manifest(file: &str, wasm: &[u8]) -> Result<ProviderManifest, ExtractError> {
    let bytes = extract_manifest_bytes(file, wasm)?;
    let origin = format!("{file} (embedded {MANIFEST_SECTION})");
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ExtractError::Invalid(ManifestError::Syntax {
            file: origin.clone(),
            line: 1,
            column: e.valid_up_to() + 1,
            message: "the manifest section is not UTF-8".into(),
        })
    })?;
    Ok(ProviderManifest::from_json(&origin, text)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_encoder::{Component, CustomSection, Module, ModuleSection};

    const MANIFEST: &str = r#"{"name":"x","version":"1.0.0","domain":"messaging","capabilities":["send"],"compat":{"wit":"greentic:messaging/provider@1.0.x"}}"#;

    fn module_with(sections: &[&str]) -> Module {
        let mut module = Module::new();
        for data in sections {
            module.section(&CustomSection {
                name: MANIFEST_SECTION.into(),
                data: data.as_bytes().into(),
            });
        }
        module
    }

    fn component_with(sections: &[&str]) -> Vec<u8> {
        let mut component = Component::new();
        component.section(&ModuleSection(&module_with(sections)));
        component.finish()
    }

    #[test]
    fn reads_the_manifest_from_a_nested_core_module() {
        let m = extract_manifest("c.wasm", &component_with(&[MANIFEST])).unwrap();
        assert_eq!(m.name, "x");
    }

    #[test]
    fn missing_manifest_says_how_to_embed_one() {
        let e = extract_manifest("c.wasm", &component_with(&[])).unwrap_err();
        assert!(matches!(e, ExtractError::Missing { .. }));
        assert!(e.to_string().contains("provider_manifest!()"), "{e}");
    }

    #[test]
    fn two_manifests_are_ambiguous() {
        let e = extract_manifest("c.wasm", &component_with(&[MANIFEST, MANIFEST])).unwrap_err();
        assert!(matches!(e, ExtractError::Ambiguous { count: 2, .. }), "{e}");
    }

    #[test]
    fn core_modules_and_garbage_are_refused() {
        let core = module_with(&[MANIFEST]).finish();
        assert!(matches!(
            extract_manifest("m.wasm", &core).unwrap_err(),
            ExtractError::CoreModule { .. }
        ));
        assert!(matches!(
            extract_manifest("t.txt", b"hello world").unwrap_err(),
            ExtractError::NotWasm { .. }
        ));
        let bytes = component_with(&[MANIFEST]);
        let truncated = &bytes[..bytes.len() - 10];
        assert!(matches!(
            extract_manifest("c.wasm", truncated).unwrap_err(),
            ExtractError::Malformed { .. }
        ));
    }

    #[test]
    fn invalid_embedded_manifest_names_the_component() {
        let e = extract_manifest("c.wasm", &component_with(&["{\"name\": 1}"])).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("c.wasm (embedded greentic:provider-manifest)"),
            "{text}"
        );
        assert!(text.contains("/name"), "{text}");
    }
}
