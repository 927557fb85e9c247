//! The WIT contracts under `wit/` parse, resolve, and say what the documentation says.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::{Path, PathBuf};

use greentic_interfaces::{Contracts, ItemKind, WitError};
use sha2::{Digest, Sha256};

fn wit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit")
}

#[test]
fn embedded_contracts_resolve_and_have_the_domain_worlds() {
    let contracts = Contracts::embedded().expect("wit/ resolves");
    let worlds = contracts.worlds();
    for world in [
        "greentic:messaging/provider@1.0.0",
        "greentic:webhook/handler@1.0.0",
        "greentic:secrets/imports@1.0.0",
        "greentic:telemetry/imports@1.0.0",
        "greentic:config/imports@1.0.0",
    ] {
        assert!(
            worlds.iter().any(|w| w == world),
            "{world} missing from {worlds:?}"
        );
    }
}

#[test]
fn every_greentic_package_is_versioned_1_0_0() {
    let contracts = Contracts::embedded().unwrap();
    let greentic: Vec<_> = contracts
        .resolve()
        .packages
        .iter()
        .filter(|(_, p)| p.name.namespace == "greentic")
        .map(|(_, p)| (p.name.name.clone(), p.name.version.clone()))
        .collect();
    let names: Vec<_> = greentic.iter().map(|(n, _)| n.as_str()).collect();
    // The shared packages and the first domains; a new domain or capability adds its own.
    for core in [
        "config",
        "messaging",
        "secrets",
        "state",
        "telemetry",
        "types",
        "webhook",
    ] {
        assert!(
            names.contains(&core),
            "greentic:{core} is missing: {names:?}"
        );
    }
    for (name, version) in greentic {
        assert_eq!(
            version,
            Some(semver::Version::new(1, 0, 0)),
            "greentic:{name}"
        );
    }
}

#[test]
fn the_directory_on_disk_and_the_embedded_copy_agree() {
    let from_disk = Contracts::load_dir(&wit_dir()).expect("wit/ on disk resolves");
    assert_eq!(from_disk.worlds(), Contracts::embedded().unwrap().worlds());
}

#[test]
fn messaging_world_has_the_documented_shape() {
    let contracts = Contracts::embedded().unwrap();
    let target = "greentic:messaging/provider@1.0.x".parse().unwrap();
    let world = contracts.describe(contracts.select(&target).unwrap());
    let outbound = world
        .export("greentic:messaging/outbound")
        .expect("exports outbound");
    assert_eq!(
        outbound.kind,
        ItemKind::Interface {
            functions: vec!["send".into()]
        }
    );
    for import in [
        "greentic:secrets/store",
        "greentic:telemetry/logs",
        "greentic:telemetry/tracing",
        "greentic:telemetry/metrics",
        "greentic:config/config",
        "wasi:http/outgoing-handler",
    ] {
        assert!(
            world.import(import).is_some(),
            "messaging world lacks {import}"
        );
    }
    // The store takes no tenant argument: the tenant is ambient.
    let store = contracts
        .resolve()
        .interfaces
        .iter()
        .find(|(_, i)| i.name.as_deref() == Some("store"))
        .unwrap()
        .1;
    let get = &store.functions["get"];
    assert_eq!(get.params.len(), 1);
    assert_eq!(get.params[0].name, "name");
}

#[test]
fn webhook_world_exports_the_incoming_handler_and_cannot_call_out() {
    let contracts = Contracts::embedded().unwrap();
    let target = "greentic:webhook/handler@1".parse().unwrap();
    let world = contracts.describe(contracts.select(&target).unwrap());
    assert!(world.export("wasi:http/incoming-handler").is_some());
    assert!(world.import("wasi:http/outgoing-handler").is_none());
}

#[test]
fn a_range_the_host_lacks_lists_what_it_has() {
    let contracts = Contracts::embedded().unwrap();
    let target = "greentic:messaging/provider@2.x".parse().unwrap();
    let e = contracts.select(&target).unwrap_err().to_string();
    assert!(e.contains("greentic:messaging/provider@2.x"), "{e}");
    assert!(e.contains("greentic:messaging/provider@1.0.0"), "{e}");
}

#[test]
fn vendored_wasi_matches_its_lock() {
    let lock: toml::Table =
        toml::from_str(&std::fs::read_to_string(wit_dir().join("deps.lock")).unwrap()).unwrap();
    let files = lock["files"].as_table().unwrap();
    let mut on_disk: Vec<String> = std::fs::read_dir(wit_dir().join("deps"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut locked: Vec<String> = files.keys().cloned().collect();
    locked.sort();
    assert_eq!(
        on_disk, locked,
        "wit/deps/ and wit/deps.lock list different files"
    );
    for (file, hash) in files {
        let bytes = std::fs::read(wit_dir().join("deps").join(file)).unwrap();
        let actual = format!("sha256:{:x}", Sha256::digest(&bytes));
        assert_eq!(
            hash.as_str().unwrap(),
            actual,
            "wit/deps/{file} was edited by hand; re-run scripts/vendor-wit.sh"
        );
    }
}

#[test]
fn a_parse_error_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.wit"),
        "package acme:broken@1.0.0;\n\ninterface x {\n  f: func(a: u32 -> u32;\n}\n",
    )
    .unwrap();
    let e = Contracts::load_dir(dir.path()).unwrap_err();
    assert!(matches!(e, WitError::Parse { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("broken.wit"), "{text}");
    assert!(text.contains(":4:"), "{text}");
}

#[test]
fn an_unresolvable_reference_is_reported() {
    let e = Contracts::from_sources([(
        "a.wit".to_string(),
        "package acme:a@1.0.0;\nworld w { import acme:missing/thing@1.0.0; }\n".to_string(),
    )])
    .unwrap_err();
    assert!(matches!(e, WitError::Resolve { .. }), "{e}");
    assert!(e.to_string().contains("acme:missing"), "{e}");
}
