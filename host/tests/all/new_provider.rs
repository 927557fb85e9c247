//! `greentic-host new provider` outside this repository: the SDK is packaged with `cargo
//! package` (as it would be published), each domain's generated crate is built against that
//! package alone (a `[patch.crates-io]` stands in for the registry; no path into the checkout),
//! its unit tests pass, its code is formatted, and `greentic-host conformance` certifies it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{host_bin, run_host, text};

/// The repository's `components/` workspace.
fn components() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../components")
}

/// Builds shared between runs (a new machine starts empty): the packaging target and the
/// generated crates' target.
fn work_dir() -> PathBuf {
    host_bin()
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("greentic-new-provider")
}

/// Runs cargo at the lowest CPU priority, one job at a time: the other tests in this binary
/// measure latencies (fleet canaries) that a compiler on every core would distort.
fn cargo(dir: &Path, args: &[&str], target_dir: &Path) -> (bool, String) {
    let out = Command::new("nice")
        .args(["-n", "19"])
        .arg(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .args(if matches!(args[0], "build" | "test" | "package") {
            &["-j", "1"][..]
        } else {
            &[][..]
        })
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    let (stdout, stderr) = text(&out);
    (out.status.success(), format!("{stdout}\n{stderr}"))
}

/// `cargo package` of the SDK and its macros; returns the directory the `.crate` files were
/// unpacked into.
fn package_sdk(into: &Path) -> PathBuf {
    let target = work_dir().join("package-target");
    let (ok, log) = cargo(
        &components(),
        &[
            "package",
            "--offline",
            "--allow-dirty",
            "-p",
            "greentic-provider-sdk-macros",
            "-p",
            "greentic-provider-sdk",
        ],
        &target,
    );
    assert!(ok, "cargo package of the SDK failed:\n{log}");
    let unpacked = into.join("packages");
    std::fs::create_dir_all(&unpacked).unwrap();
    for name in ["greentic-provider-sdk", "greentic-provider-sdk-macros"] {
        let version = env_version();
        let file = target
            .join("package")
            .join(format!("{name}-{version}.crate"));
        let status = Command::new("tar")
            .arg("xzf")
            .arg(&file)
            .arg("-C")
            .arg(&unpacked)
            .status()
            .expect("tar runs");
        assert!(status.success(), "unpacking {}", file.display());
        let crate_dir = unpacked.join(format!("{name}-{version}"));
        assert!(crate_dir.join("Cargo.toml").is_file());
    }
    // The package carries its WIT, and nothing in it points back into the checkout.
    let sdk = unpacked.join(format!("greentic-provider-sdk-{}", env_version()));
    assert!(sdk.join("contracts/messaging.wit").is_file());
    assert!(sdk.join("contracts/deps/http.wit").is_file());
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(sdk.join("Cargo.toml")).unwrap()).unwrap();
    for (dep, spec) in manifest["dependencies"].as_table().unwrap() {
        assert!(
            spec.get("path").is_none(),
            "dependency {dep} is a path: {spec}"
        );
    }
    unpacked
}

/// The SDK's version (the components workspace's).
fn env_version() -> String {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(components().join("Cargo.toml")).unwrap()).unwrap();
    manifest["workspace"]["package"]["version"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn new_providers_build_against_the_packaged_sdk_and_pass_conformance() {
    let tmp = tempfile::tempdir().unwrap();
    let packages = package_sdk(tmp.path());
    let version = env_version();
    // Stands in for crates.io: the generated Cargo.toml asks for `greentic-provider-sdk =
    // "^1.0"` exactly as a user's would (`--sdk-version 1.0`).
    std::fs::create_dir_all(tmp.path().join(".cargo")).unwrap();
    std::fs::write(
        tmp.path().join(".cargo/config.toml"),
        format!(
            "[patch.crates-io]\ngreentic-provider-sdk = {{ path = {:?} }}\ngreentic-provider-sdk-macros = {{ path = {:?} }}\n",
            packages.join(format!("greentic-provider-sdk-{version}")),
            packages.join(format!("greentic-provider-sdk-macros-{version}")),
        ),
    )
    .unwrap();
    let target = work_dir().join("target");

    for domain in ["messaging", "webhook", "timer"] {
        let name = format!("acme-{domain}");
        let dir = tmp.path().join(&name);
        let out = run_host(&[
            "new",
            "provider",
            &name,
            "--domain",
            domain,
            "--dir",
            dir.to_str().unwrap(),
            "--sdk-version",
            "1.0",
        ]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        for file in [
            "Cargo.toml",
            "provider.json",
            "conformance.json",
            "src/lib.rs",
            "README.md",
        ] {
            assert!(dir.join(file).is_file(), "{domain}: no {file}");
        }
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains("greentic-provider-sdk = \"^1.0\""),
            "{manifest}"
        );

        let (ok, log) = cargo(&dir, &["fmt", "--check"], &target);
        assert!(ok, "{domain}: the generated code is not formatted:\n{log}");
        let (ok, log) = cargo(&dir, &["test", "--offline"], &target);
        assert!(ok, "{domain}: cargo test failed:\n{log}");
        assert!(log.contains("test result: ok"), "{log}");
        let (ok, log) = cargo(
            &dir,
            &[
                "build",
                "--offline",
                "--release",
                "--target",
                "wasm32-wasip2",
            ],
            &target,
        );
        assert!(ok, "{domain}: the component does not build:\n{log}");
        let wasm = target
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let report = dir.join("report.json");
        let out = Command::new(host_bin())
            .args(["conformance"])
            .arg(&wasm)
            .args(["--profile", "conformance.json", "--json"])
            .arg(&report)
            .current_dir(&dir)
            .env("GREENTIC_CACHE_KEY_FILE", crate::common::cache_key_file())
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "{domain}: conformance failed:\n{stdout}\n{stderr}"
        );
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(report["provider"], name.as_str());
        assert_eq!(report["domain"], domain);
        let results = report["results"].as_array().unwrap();
        assert!(results.len() >= 10, "{domain}: {} cases", results.len());
        assert!(
            results.iter().all(|r| r["passed"] == true),
            "{domain}: {report}"
        );
    }
}

#[test]
fn new_refuses_bad_names_unknown_domains_and_existing_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let out = run_host(&["new", "provider", "Bad_Name", "--domain", "messaging"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("is not a provider name"), "{stderr}");

    let out = run_host(&[
        "new",
        "provider",
        "ok",
        "--domain",
        "fax",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("messaging, webhook, timer"), "{stderr}");
    assert!(!dir.exists());

    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("mine.txt"), "keep").unwrap();
    let out = run_host(&[
        "new",
        "provider",
        "ok",
        "--domain",
        "timer",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("not empty"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.join("mine.txt")).unwrap(),
        "keep"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}
