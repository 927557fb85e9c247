//! Load-time checks on real (synthesised) components: a component is built from WIT with
//! `wit-component` for each case, with a manifest section appended to its core module.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use greentic_interfaces::{CompatProblem, Contracts, InspectError, inspect_component, synth};

/// Builds a component whose world is `world` of the test package `wit` (resolved against the
/// host's contracts), with `manifest` embedded the way the guest SDK embeds it.
fn component(wit: &str, world: &str, manifest: Option<&str>) -> Vec<u8> {
    let world = synth::World::extra(Contracts::embedded().unwrap(), wit, world).unwrap();
    world.componentize(world.dummy_module(), manifest).unwrap()
}

fn manifest(compat: &str, secrets: &str, hosts: &str) -> String {
    format!(
        r#"{{"name":"case","version":"1.0.0","domain":"messaging","capabilities":["send"],
            "secrets":{secrets},"outbound_hosts":{hosts},"compat":{{"wit":"{compat}"}}}}"#
    )
}

const FULL: &str =
    "package test:cases@1.0.0;\nworld full { include greentic:messaging/provider@1.0.0; }\n";

#[test]
fn a_component_of_the_messaging_world_passes() {
    let wasm = component(
        FULL,
        "full",
        Some(&manifest(
            "greentic:messaging/provider@1.0.x",
            r#"["TOKEN"]"#,
            r#"["*"]"#,
        )),
    );
    let report = inspect_component(Contracts::embedded().unwrap(), "full.wasm", &wasm).unwrap();
    assert_eq!(report.host_world, "greentic:messaging/provider@1.0.0");
    assert_eq!(report.manifest.name, "case");
    assert!(report.digest.starts_with("sha256:") && report.digest.len() == 71);
    assert!(report.world.export("greentic:messaging/outbound").is_some());
}

#[test]
fn a_component_without_a_manifest_is_refused() {
    let wasm = component(FULL, "full", None);
    let e = inspect_component(Contracts::embedded().unwrap(), "bare.wasm", &wasm).unwrap_err();
    assert!(
        e.to_string().contains("no embedded provider manifest"),
        "{e}"
    );
    assert!(e.to_string().contains("bare.wasm"), "{e}");
}

#[test]
fn an_import_the_host_does_not_offer_is_named() {
    let wit = "package test:cases@1.0.0;\n\
        package acme:evil@1.0.0 { interface backdoor { open: func(); } }\n\
        world w { import acme:evil/backdoor@1.0.0; export greentic:messaging/outbound@1.0.0; }\n";
    let wasm = component(
        wit,
        "w",
        Some(&manifest("greentic:messaging/provider@1.0.x", "[]", "[]")),
    );
    let e = inspect_component(Contracts::embedded().unwrap(), "evil.wasm", &wasm).unwrap_err();
    let InspectError::Incompatible { problems, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(
        problems,
        &[CompatProblem::UnknownImport {
            import: "acme:evil/backdoor@1.0.0".into()
        }]
    );
    assert!(e.to_string().contains("evil.wasm"), "{e}");
}

#[test]
fn a_major_version_mismatch_is_refused_with_both_versions() {
    let wit = "package test:cases@1.0.0;\n\
        package greentic:messaging@2.0.0 {\n\
          interface outbound { use greentic:types/types@1.0.0.{tenant-ctx}; send: func(ctx: tenant-ctx) -> string; }\n\
        }\n\
        world w { export greentic:messaging/outbound@2.0.0; }\n";
    // The manifest claims 1.0.x but the component exports 2.0.0.
    let wasm = component(
        wit,
        "w",
        Some(&manifest("greentic:messaging/provider@1.0.x", "[]", "[]")),
    );
    let e = inspect_component(Contracts::embedded().unwrap(), "v2.wasm", &wasm).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("exports `greentic:messaging/outbound@2.0.0`"),
        "{text}"
    );
    assert!(text.contains("greentic:messaging/outbound@1.0.0"), "{text}");
    assert!(text.contains("not semver-compatible"), "{text}");

    // A manifest that asks for 2.x names the worlds the host has.
    let wasm = component(
        wit,
        "w",
        Some(&manifest("greentic:messaging/provider@2.x", "[]", "[]")),
    );
    let e = inspect_component(Contracts::embedded().unwrap(), "v2.wasm", &wasm).unwrap_err();
    assert!(matches!(e, InspectError::NoWorld { .. }), "{e}");
    assert!(e.to_string().contains("/compat/wit"), "{e}");
}

#[test]
fn a_missing_export_is_named() {
    let wit = "package test:cases@1.0.0;\nworld w { import greentic:secrets/store@1.0.0; }\n";
    let wasm = component(
        wit,
        "w",
        Some(&manifest(
            "greentic:messaging/provider@1.0.x",
            r#"["A"]"#,
            "[]",
        )),
    );
    let e = inspect_component(Contracts::embedded().unwrap(), "w.wasm", &wasm).unwrap_err();
    let InspectError::Incompatible { problems, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(
        problems,
        &[CompatProblem::MissingExport {
            export: "greentic:messaging/outbound@1.0.0".into()
        }]
    );
}

#[test]
fn a_manifest_that_lies_about_its_imports_is_refused() {
    // Reads secrets and calls out, but declares neither.
    let wasm = component(
        FULL,
        "full",
        Some(&manifest("greentic:messaging/provider@1.0.x", "[]", "[]")),
    );
    let e = inspect_component(Contracts::embedded().unwrap(), "liar.wasm", &wasm).unwrap_err();
    let InspectError::Disagrees { problems, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("/secrets"));
    assert!(problems[1].contains("/outbound_hosts"));

    // Declares both, but imports neither.
    let wit = "package test:cases@1.0.0;\nworld w { export greentic:messaging/outbound@1.0.0; }\n";
    let wasm = component(
        wit,
        "w",
        Some(&manifest(
            "greentic:messaging/provider@1.0.x",
            r#"["A"]"#,
            r#"["api.example.com"]"#,
        )),
    );
    let e = inspect_component(Contracts::embedded().unwrap(), "liar.wasm", &wasm).unwrap_err();
    let InspectError::Disagrees { problems, .. } = &e else {
        panic!("{e}")
    };
    assert!(
        problems[0].contains("never imports `greentic:secrets/store`"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("never imports `wasi:http/outgoing-handler`"),
        "{problems:?}"
    );
}

#[test]
fn an_older_wasi_patch_release_is_accepted_but_a_newer_one_is_not() {
    // Components built with cargo-component's wasip1 adapter import WASI 0.2.3.
    let wit = "package test:cases@1.0.0;\n\
        package wasi:clocks@0.2.3 { interface wall-clock { record datetime { seconds: u64, nanoseconds: u32 } now: func() -> datetime; } }\n\
        package wasi:clocks@0.2.99 { interface monotonic-clock { now: func() -> u64; } }\n\
        world old { import wasi:clocks/wall-clock@0.2.3; export greentic:messaging/outbound@1.0.0; }\n\
        world new { import wasi:clocks/monotonic-clock@0.2.99; export greentic:messaging/outbound@1.0.0; }\n";
    let m = manifest("greentic:messaging/provider@1.0.x", "[]", "[]");
    let old = component(wit, "old", Some(&m));
    inspect_component(Contracts::embedded().unwrap(), "old.wasm", &old).unwrap();
    let new = component(wit, "new", Some(&m));
    let e = inspect_component(Contracts::embedded().unwrap(), "new.wasm", &new).unwrap_err();
    assert!(
        e.to_string().contains("wasi:clocks/monotonic-clock@0.2.99"),
        "{e}"
    );
}
