//! Generates the names of the components `components/` builds (every `cdylib` member of its
//! workspace), as constants for the integration tests: a test names a component through a
//! constant, and a test fails when a built component has no test or a test names one that is
//! not built.

use std::path::PathBuf;
use std::{env, fs};

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("..");
    let workspace = root.join("components").join("Cargo.toml");
    println!("cargo:rerun-if-changed={}", workspace.display());
    let text = fs::read_to_string(&workspace).expect("components/Cargo.toml");
    let doc: toml::Table = text.parse().expect("components/Cargo.toml parses");
    let members = doc["workspace"]["members"]
        .as_array()
        .expect("workspace.members")
        .iter()
        .filter_map(|m| m.as_str());
    let mut names = Vec::new();
    for member in members {
        let manifest = root.join("components").join(member).join("Cargo.toml");
        println!("cargo:rerun-if-changed={}", manifest.display());
        let text = fs::read_to_string(&manifest).expect("a member's Cargo.toml");
        let doc: toml::Table = text.parse().expect("a member's Cargo.toml parses");
        let cdylib = doc
            .get("lib")
            .and_then(|l| l.get("crate-type"))
            .and_then(|t| t.as_array())
            .is_some_and(|t| t.iter().any(|k| k.as_str() == Some("cdylib")));
        if cdylib {
            let name = doc["package"]["name"].as_str().expect("package.name");
            names.push(name.replace('-', "_"));
        }
    }
    names.sort();
    let mut code = String::from(
        "/// The components `components/` builds, by crate name (underscores): the file stem of\n/// each built `.wasm`.\n",
    );
    for name in &names {
        code.push_str(&format!(
            "pub const {}: &str = {name:?};\n",
            name.to_uppercase()
        ));
    }
    code.push_str("/// Every one of them.\npub const ALL: &[&str] = &[");
    for name in &names {
        code.push_str(&format!("{}, ", name.to_uppercase()));
    }
    code.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it")).join("test_components.rs");
    fs::write(out, code).expect("write test_components.rs");
}
