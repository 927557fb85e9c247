//! The components in `components/`, built both with `cargo build --target wasm32-wasip2` and with
//! `cargo component build`, are valid components of the expected greentic world, carry their
//! manifest, and pass the host's load-time checks; tampered ones are refused with a clear error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;
use crate::common::built;

use common::{component, run_host, text};
use greentic_interfaces::{Contracts, inspect_component};
use sha2::{Digest, Sha256};

const FLAVOURS: [&str; 2] = ["wasip2", "cargo-component"];

/// (component, expected host world, manifest name)
const EXPECTED: &[(built::Component, &str, &str)] = &[
    (
        built::MESSAGING_WEBHOOK,
        "greentic:messaging/provider@1.0.0",
        "messaging-webhook",
    ),
    (
        built::MESSAGING_TELEGRAM,
        "greentic:messaging/provider@1.0.0",
        "messaging-telegram",
    ),
    (
        built::WEBHOOK_GITHUB,
        "greentic:webhook/handler@1.0.0",
        "webhook-github",
    ),
    (
        built::TIMER_HEARTBEAT,
        "greentic:timer/scheduled@1.0.0",
        "timer-heartbeat",
    ),
    (
        built::ECHO,
        "greentic:messaging/provider@1.0.0",
        "test-echo",
    ),
    (
        built::INFINITE_LOOP,
        "greentic:messaging/provider@1.0.0",
        "test-infinite-loop",
    ),
    (
        built::MEMORY_GROWER,
        "greentic:messaging/provider@1.0.0",
        "test-memory-grower",
    ),
    (
        built::RECURSION,
        "greentic:messaging/provider@1.0.0",
        "test-recursion",
    ),
    (
        built::UNDECLARED_SECRET,
        "greentic:messaging/provider@1.0.0",
        "test-undeclared-secret",
    ),
    (
        built::PANICKER,
        "greentic:messaging/provider@1.0.0",
        "test-panicker",
    ),
    (
        built::BROKEN,
        "greentic:messaging/provider@1.0.0",
        "test-broken",
    ),
];

/// Every component `components/` builds has a test that runs it, by construction: `tested`
/// must name one for each, or this does not compile.
macro_rules! assert_tested {
    ($component:ident) => {
        #[allow(unused_imports)]
        use crate::tested::$component as _;
    };
}
common::built::foreach_component!(assert_tested);

/// Every component `components/` builds is built both ways, and every one a bundle of a test
/// names is built: a test running a component that no longer exists fails here.
#[test]
fn every_built_component_is_built_both_ways_and_every_named_one_is_built() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = String::new();
    for dir in ["tests/all", "tests/all/common", "benches", "benches/common"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    for &name in built::ALL {
        for flavour in FLAVOURS {
            assert!(
                component(flavour, name).is_file(),
                "{name} is not built as {flavour}"
            );
        }
    }
    for named in common::named_components(&sources.replace("{{components}}", "{components}")) {
        assert!(
            built::Component::named(&named).is_some(),
            "a test names `{named}.wasm`, which components/ does not build"
        );
    }
}

#[test]
fn both_build_paths_produce_components_of_the_expected_world() {
    let contracts = Contracts::embedded().unwrap();
    for (name, world, manifest_name) in EXPECTED {
        let mut reports = Vec::new();
        for flavour in FLAVOURS {
            let path = component(flavour, *name);
            let bytes = std::fs::read(&path).unwrap();
            let report = inspect_component(contracts, &path.display().to_string(), &bytes)
                .unwrap_or_else(|e| panic!("{flavour} {name}: {e}"));
            assert_eq!(report.host_world, *world, "{flavour} {name}");
            assert_eq!(report.manifest.name, *manifest_name, "{flavour} {name}");
            reports.push(report);
        }
        // Same manifest and same exports whichever way it was built.
        assert_eq!(reports[0].manifest, reports[1].manifest, "{name}");
        assert_eq!(reports[0].world.exports, reports[1].world.exports, "{name}");
    }
}

#[test]
fn the_manifest_is_embedded_once_and_nowhere_else() {
    // A copy in a data segment would cost memory in every instance and could drift from the
    // section the host reads.
    for flavour in FLAVOURS {
        let bytes = std::fs::read(component(flavour, built::MESSAGING_WEBHOOK)).unwrap();
        let needle = br#""name": "messaging-webhook""#;
        let count = bytes.windows(needle.len()).filter(|w| w == needle).count();
        assert_eq!(
            count, 1,
            "{flavour}: the manifest text appears {count} times"
        );
    }
}

#[test]
fn providers_import_what_their_job_needs_and_nothing_ungranted() {
    let contracts = Contracts::embedded().unwrap();
    let report = |which: built::Component| {
        let path = component("wasip2", which);
        inspect_component(contracts, which.name(), &std::fs::read(path).unwrap()).unwrap()
    };
    let messaging = report(built::MESSAGING_WEBHOOK);
    for import in [
        "wasi:http/outgoing-handler",
        "greentic:secrets/store",
        "greentic:config/config",
    ] {
        assert!(
            messaging.world.import(import).is_some(),
            "messaging-webhook lacks {import}"
        );
    }
    let github = report(built::WEBHOOK_GITHUB);
    assert!(github.world.export("wasi:http/incoming-handler").is_some());
    assert!(github.world.import("wasi:http/outgoing-handler").is_none());
    assert!(github.world.import("greentic:secrets/store").is_some());
    // It keeps delivery ids in state; a provider that keeps none does not import it.
    assert!(github.world.import("greentic:state/store").is_some());
    assert!(messaging.world.import("greentic:state/store").is_none());
    // Hostile guests that need nothing import no secrets and no network.
    let spin = report(built::INFINITE_LOOP);
    assert!(spin.world.import("greentic:secrets/store").is_none());
    assert!(spin.world.import("wasi:http/outgoing-handler").is_none());
    assert!(spin.world.import("wasi:sockets/tcp").is_none());
}

#[test]
fn inspect_prints_world_imports_exports_digest_and_manifest() {
    let path = component("wasip2", built::MESSAGING_WEBHOOK);
    let out = run_host(&["inspect", "--json", path.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let digest = format!("sha256:{:x}", Sha256::digest(std::fs::read(&path).unwrap()));
    assert_eq!(json["digest"], digest.as_str());
    assert_eq!(json["world"], "greentic:messaging/provider@1.0.0");
    assert_eq!(json["manifest"]["name"], "messaging-webhook");
    assert!(
        json["exports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "greentic:messaging/outbound@1.0.0")
    );
    assert!(
        json["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "wasi:http/outgoing-handler@0.2.12")
    );

    let out = run_host(&["inspect", path.to_str().unwrap()]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("world      greentic:messaging/provider@1.0.0"),
        "{stdout}"
    );
    assert!(stdout.contains("\"compat\""), "{stdout}");
}

/// Copies a built component, replacing `from` with `to` (same length) in its embedded manifest.
fn tampered(from: &str, to: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(component("wasip2", built::MESSAGING_WEBHOOK)).unwrap();
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("`{from}` not found in the component"));
    bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tampered.wasm");
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

#[test]
fn an_invalid_embedded_manifest_names_file_field_and_fix() {
    let (_dir, path) = tampered(
        r#""name": "messaging-webhook""#,
        r#""name": "Messaging_Webhook""#,
    );
    let out = run_host(&["inspect", path.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("tampered.wasm"), "{stderr}");
    assert!(stderr.contains("field `/name`"), "{stderr}");
    assert!(stderr.contains("fix: use kebab-case"), "{stderr}");
}

#[test]
fn a_manifest_that_hides_outbound_http_is_refused() {
    let (_dir, path) = tampered(r#""outbound_hosts": ["*"]"#, r#""outbound_hosts": [   ]"#);
    let out = run_host(&["inspect", path.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("disagrees with the component"), "{stderr}");
    assert!(stderr.contains("/outbound_hosts"), "{stderr}");
}

#[test]
fn non_components_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("notes.txt", b"hello".to_vec(), "not a WebAssembly file"),
        (
            "core.wasm",
            b"\0asm\x01\0\0\0".to_vec(),
            "core wasm module, not a component",
        ),
        (
            "truncated.wasm",
            {
                let b = std::fs::read(component("wasip2", built::ECHO)).unwrap();
                b[..b.len() / 2].to_vec()
            },
            "malformed component",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = run_host(&["inspect", path.to_str().unwrap()]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(name), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
    let out = run_host(&["inspect", dir.path().join("absent.wasm").to_str().unwrap()]);
    assert!(text(&out).1.contains("absent.wasm"));
    assert_eq!(out.status.code(), Some(1));
}
