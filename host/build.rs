//! Generates the names of the components `components/` builds (every `cdylib` member of its
//! workspace), as constants for the integration tests: a test names a component through a
//! constant, and a test fails when a built component has no test or a test names one that is
//! not built. And the table of `new provider` templates, one per directory of
//! `templates/provider/` (a domain's name): a domain's template is found, not listed.

use std::path::PathBuf;
use std::{env, fs};

fn main() {
    templates();
    build_info();
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
            "pub const {}: Component = Component({name:?});\n",
            name.to_uppercase()
        ));
    }
    code.push_str("/// Every one of them.\npub const ALL: &[Component] = &[");
    for name in &names {
        code.push_str(&format!("{}, ", name.to_uppercase()));
    }
    code.push_str("];\n");
    code.push_str(
        "/// Calls `$m!(CONSTANT)` for every built component: a check over all of them is a\n/// compile-time one.\nmacro_rules! foreach_component {\n    ($m:ident) => {\n",
    );
    for name in &names {
        code.push_str(&format!("        $m!({});\n", name.to_uppercase()));
    }
    code.push_str("    };\n}\npub(crate) use foreach_component;\n");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it")).join("test_components.rs");
    fs::write(out, code).expect("write test_components.rs");
}

/// `templates.rs`: `(domain, lib.rs, provider.json, conformance.json, notes)` of each directory
/// under `templates/provider/`.
fn templates() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"))
        .join("templates")
        .join("provider");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut domains: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("templates/provider")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    domains.sort();
    let mut code = String::from(
        "/// Each domain's template files: (domain, lib.rs, provider.json, conformance.json, notes).\npub const TEMPLATE_FILES: &[(&str, &str, &str, &str, &str)] = &[\n",
    );
    for path in domains {
        let domain = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a domain directory's name");
        let file = |name: &str| {
            let f = path.join(name);
            assert!(f.is_file(), "templates/provider/{domain}/{name} is missing");
            println!("cargo:rerun-if-changed={}", f.display());
            format!("include_str!({:?})", f.display().to_string())
        };
        code.push_str(&format!(
            "    ({domain:?}, {}, {}, {}, {}),\n",
            file("lib.rs.tmpl"),
            file("provider.json.tmpl"),
            file("conformance.json.tmpl"),
            file("notes.md")
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it")).join("templates.rs");
    fs::write(out, code).expect("write templates.rs");
}

/// `GREENTIC_COMMIT` (the checkout's commit, `$GREENTIC_BUILD_COMMIT` if set, else `unknown`) and
/// `GREENTIC_WASMTIME_VERSION` (from the workspace's `Cargo.lock`), for `greentic-host version`.
fn build_info() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("..");
    println!("cargo:rerun-if-env-changed=GREENTIC_BUILD_COMMIT");
    let git = root.join(".git");
    if git.is_dir() {
        println!("cargo:rerun-if-changed={}", git.join("HEAD").display());
        if let Ok(head) = fs::read_to_string(git.join("HEAD"))
            && let Some(reference) = head.trim().strip_prefix("ref: ")
        {
            println!("cargo:rerun-if-changed={}", git.join(reference).display());
        }
    }
    let commit = env::var("GREENTIC_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .current_dir(&root)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=GREENTIC_COMMIT={commit}");
    let lock = root.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let wasmtime = fs::read_to_string(&lock)
        .ok()
        .and_then(|text| {
            let mut lines = text.lines();
            while let Some(line) = lines.next() {
                if line == "name = \"wasmtime\"" {
                    return lines
                        .next()
                        .and_then(|v| v.strip_prefix("version = \""))
                        .map(|v| v.trim_end_matches('"').to_string());
                }
            }
            None
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=GREENTIC_WASMTIME_VERSION={wasmtime}");
}
