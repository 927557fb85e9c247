//! `greentic-host manifest`: every provider.json in the repository validates, and broken ones
//! are reported with file, field and fix.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::path::{Path, PathBuf};

use common::{run_host, text};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn provider_jsons() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for group in ["providers", "test-components"] {
        for entry in std::fs::read_dir(repo().join("components").join(group)).unwrap() {
            let path = entry.unwrap().path().join("provider.json");
            if path.is_file() {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn every_provider_json_in_the_repository_is_valid() {
    let files = provider_jsons();
    // Every component crate of the components workspace (all members but the SDK and its
    // macros) has one, and so does every core-wasm test component (`provider.wat`, made a
    // component by the tests).
    let workspace: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo().join("components/Cargo.toml")).unwrap())
            .unwrap();
    let members = workspace["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| !m.as_str().unwrap().starts_with("sdk"))
        .count()
        + 1;
    let wat = files
        .iter()
        .filter(|f| f.with_file_name("provider.wat").is_file())
        .count();
    assert_eq!(files.len(), members - 1 + wat, "{files:?}");
    let mut args = vec!["manifest"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let out = run_host(&args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        files.len(),
        "{stdout}"
    );
}

#[test]
fn broken_manifests_name_file_field_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(
        repo().join("components/providers/messaging-webhook/provider.json"),
    )
    .unwrap();
    let cases = [
        (
            "syntax.json",
            good.replacen("\"name\":", "\"name\"", 1),
            "not valid JSON at line 3",
        ),
        (
            "field.json",
            good.replacen("\"1.0.0\"", "\"one\"", 1),
            "field `/version`",
        ),
        (
            "schema.json",
            good.replacen("\"type\": \"integer\"", "\"type\": \"int\"", 1),
            "field `/config_schema",
        ),
        (
            "compat.json",
            good.replacen("provider@1.0.x", "provider", 1),
            "field `/compat/wit`",
        ),
    ];
    let mut args = vec!["manifest".to_string()];
    for (name, body, _) in &cases {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        args.push(path.display().to_string());
    }
    let out = run_host(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    for (name, _, expected) in cases {
        let line = stderr
            .lines()
            .position(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} not reported: {stderr}"));
        let report: String = stderr
            .lines()
            .skip(line)
            .take(3)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            report.contains(expected),
            "{name}: expected `{expected}` in\n{report}"
        );
        if !name.starts_with("syntax") {
            assert!(report.contains("fix:"), "{name}: no fix in\n{report}");
        }
    }
}

#[test]
fn huge_and_mistyped_values_are_refused_with_bounded_messages() {
    let dir = tempfile::tempdir().unwrap();
    let good: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo().join("components/providers/messaging-webhook/provider.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut cases = Vec::new();
    let mut huge = good.clone();
    huge["description"] = serde_json::Value::String("d".repeat(2_000_000));
    cases.push(("huge.json", huge, "/description"));
    let mut name = good.clone();
    name["name"] = serde_json::Value::String("n".repeat(5_000));
    cases.push(("name.json", name, "/name"));
    let mut typed = good.clone();
    typed["capabilities"] = serde_json::json!("send");
    cases.push(("typed.json", typed, "/capabilities"));
    let mut unknown = good;
    unknown["colour"] = serde_json::json!("blue");
    cases.push(("unknown.json", unknown, "colour"));
    for (file, doc, field) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, doc.to_string()).unwrap();
        let out = run_host(&["manifest", path.to_str().unwrap()]);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{file} was accepted");
        let all = format!("{stdout}{stderr}");
        assert!(all.contains(field), "{file}: {all}");
        assert!(!all.contains("panicked"), "{file}: {all}");
        assert!(
            all.lines().all(|l| l.len() < 1024),
            "{file}: a {}-byte line",
            all.lines().map(str::len).max().unwrap_or(0)
        );
    }
}
