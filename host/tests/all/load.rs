//! `greentic-host check`: load-time refusals, each naming the provider, what was expected and
//! what was found — before anything is instantiated.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;
use crate::common::built;

use common::{TestBundle, run_host, text};

fn bundle(providers: &str, tenants: &str, routes: &str) -> String {
    format!(
        r#"

{providers}

{tenants}

{routes}
"#
    )
}

fn check(b: &TestBundle) -> (bool, String, String) {
    let out = run_host(&["check", b.path().to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    (out.status.success(), stdout, stderr)
}

const ECHO_ROUTE: &str = "[[routes]]\ntenant = \"acme\"\ncapability = \"send\"\nprovider = \"p\"\n";

#[test]
fn a_valid_bundle_checks_and_reports_each_provider() {
    let b = TestBundle::new(
        &bundle(
            "[providers.p]\nsource = \"{components}/echo.wasm\"\nallow_unsigned = true",
            "[tenants.acme]",
            ECHO_ROUTE,
        ),
        &[],
    );
    let (ok, stdout, stderr) = check(&b);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("greentic:messaging/provider@1.0.0"),
        "{stdout}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    assert!(
        !b.path().join("greentic.lock").exists(),
        "check must not write the lock"
    );
}

#[test]
fn an_ungranted_import_is_refused_at_load() {
    // undeclared-secret imports greentic:secrets/store; the bundle grants no secrets.
    let b = TestBundle::new(
        &bundle(
            "[providers.p]\nsource = \"{components}/undeclared_secret.wasm\"\nallow_unsigned = true",
            "[tenants.acme]",
            ECHO_ROUTE,
        ),
        &[],
    );
    let (ok, _, stderr) = check(&b);
    assert!(!ok);
    assert!(stderr.contains("provider `p`"), "{stderr}");
    assert!(
        stderr.contains("imports `greentic:secrets/store` but the bundle grants it no secrets"),
        "{stderr}"
    );
    assert!(
        stderr.contains("grants.secrets = [\"DECLARED_TOKEN\"]"),
        "{stderr}"
    );

    // Outbound HTTP likewise.
    let b = TestBundle::new(
        &bundle(
            "[providers.p]\nsource = \"{components}/messaging_webhook.wasm\"\nallow_unsigned = true",
            "[tenants.acme]\nconfig.p = { url = \"http://127.0.0.1:9/x\" }",
            ECHO_ROUTE,
        ),
        &[],
    );
    let (ok, _, stderr) = check(&b);
    assert!(!ok);
    assert!(stderr.contains("imports `wasi:http/outgoing-handler` (outbound HTTP) but the bundle grants it no outbound hosts"), "{stderr}");
}

/// A component built from `wit` (its world `provider`) with `manifest` embedded.
fn synth_component(wit: &str, manifest: &str) -> Vec<u8> {
    use greentic_interfaces::{Contracts, synth};
    let world = synth::World::extra(Contracts::embedded().unwrap(), wit, "provider").unwrap();
    world
        .componentize(world.dummy_module(), Some(manifest))
        .unwrap()
}

/// A component of `greentic:messaging@2.0.0`, built from WIT, with a manifest claiming 2.x.
fn v2_component() -> Vec<u8> {
    synth_component(
        "package greentic:messaging@2.0.0;\n\
         interface outbound { use greentic:types/types@1.0.0.{tenant-ctx}; send: func(ctx: tenant-ctx) -> string; }\n\
         world provider { export outbound; }\n",
        r#"{"name":"v2","version":"2.0.0","domain":"messaging","capabilities":["send"],"compat":{"wit":"greentic:messaging/provider@2.x"}}"#,
    )
}

/// Bytes that are not a loadable component, each refused at load with a reason and no panic.
#[test]
fn malformed_artifacts_are_refused_at_load_with_a_reason() {
    let echo = std::fs::read(common::component("wasip2", built::ECHO)).unwrap();
    // Valid, but over the bundle's cap: a custom section of 300 kB.
    let mut giant = echo.clone();
    greentic_interfaces::synth::append_custom_section(&mut giant, "padding", &[7u8; 300_000]);
    let unknown_import = synth_component(
        "package acme:evil@1.0.0;\n\
         interface backdoor { open: func() -> string; }\n\
         world provider { import backdoor; export greentic:messaging/outbound@1.0.0; }\n",
        r#"{"name":"evil","version":"1.0.0","domain":"messaging","capabilities":["send"],"compat":{"wit":"greentic:messaging/provider@1.0.x"}}"#,
    );
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "empty file",
            Vec::new(),
            &["provider `p`", "not a WebAssembly file"],
        ),
        (
            "random bytes",
            (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
            &["provider `p`", "not a WebAssembly file"],
        ),
        (
            "truncated component",
            echo[..echo.len() / 2].to_vec(),
            &["provider `p`", "malformed component"],
        ),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            &["provider `p`", "core wasm module, not a component"],
        ),
        (
            "unknown import",
            unknown_import,
            &["provider `p`", "acme:evil/backdoor"],
        ),
        (
            "over max_component_bytes",
            giant,
            &[
                "provider `p`",
                "over the bundle's max_component_bytes (200000)",
            ],
        ),
    ];
    for (what, bytes, needles) in cases {
        let b = TestBundle::new(
            &bundle(
                "[providers.p]\nsource = \"p.wasm\"\nallow_unsigned = true",
                "[tenants.acme]",
                ECHO_ROUTE,
            ),
            &[],
        );
        let path = b.path().join("greentic.toml");
        let text = std::fs::read_to_string(&path).unwrap().replacen(
            "[host]\n",
            "[host]\nmax_component_bytes = 200000\n",
            1,
        );
        std::fs::write(&path, text).unwrap();
        std::fs::write(b.path().join("p.wasm"), &bytes).unwrap();
        let (ok, _, stderr) = check(&b);
        assert!(!ok, "{what} was accepted");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{what}: no `{needle}` in: {stderr}"
            );
        }
    }
}

#[test]
fn a_wit_major_version_mismatch_is_refused_with_a_readable_message() {
    let b = TestBundle::new(
        &bundle(
            "[providers.p]\nsource = \"v2.wasm\"\nallow_unsigned = true",
            "[tenants.acme]",
            ECHO_ROUTE,
        ),
        &[],
    );
    std::fs::write(b.path().join("v2.wasm"), v2_component()).unwrap();
    let (ok, _, stderr) = check(&b);
    assert!(!ok);
    assert!(stderr.contains("provider `p`"), "{stderr}");
    assert!(
        stderr.contains("no host world matches `greentic:messaging/provider@2.x`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("greentic:messaging/provider@1.0.0"),
        "{stderr}"
    );
}

#[test]
fn tenant_config_and_secret_bindings_are_checked_per_tenant() {
    let b = TestBundle::new(
        &bundle(
            "[providers.p]\nsource = \"{components}/echo.wasm\"\nallow_unsigned = true\n\n[providers.s]\nsource = \"{components}/undeclared_secret.wasm\"\nallow_unsigned = true\ngrants = { secrets = [\"DECLARED_TOKEN\"] }",
            "[tenants.acme]\nconfig.p = { label = 42 }\n\n[tenants.globex]\nsecrets = [\"DECLARED_TOKEN\"]",
            "[[routes]]\ntenant = \"*\"\ncapability = \"send\"\nprovider = \"p\"\n\n[[routes]]\ntenant = \"*\"\nteam = \"s\"\ncapability = \"send\"\nprovider = \"s\"\n",
        ),
        &[],
    );
    let (ok, _, stderr) = check(&b);
    assert!(!ok);
    assert!(
        stderr.contains("tenant `acme`, provider `p`: config field `/label`"),
        "{stderr}"
    );
    // acme does not list the secret; globex lists it but no value exists.
    assert!(
        stderr.contains(
            "tenant `acme`, provider `s`: required secret `DECLARED_TOKEN` is not bound (not listed"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("tenant `globex`, provider `s`: required secret `DECLARED_TOKEN` is not bound (listed, no value found)"), "{stderr}");
    assert!(stderr.contains("secrets/globex/DECLARED_TOKEN"), "{stderr}");
}

#[test]
fn bad_bundles_name_the_key_and_the_fix() {
    let b = TestBundle::new(
        &bundle(
            "[providers.p]\nsource = \"{components}/echo.wasm\"\nallow_unsigned = true\ncolour = \"red\"",
            "[tenants.acme]",
            ECHO_ROUTE,
        ),
        &[],
    );
    let (ok, _, stderr) = check(&b);
    assert!(!ok);
    assert!(stderr.contains("greentic.toml"), "{stderr}");
    assert!(stderr.contains("unknown field `colour`"), "{stderr}");

    let b = TestBundle::new(
        &bundle(
            "[providers.p]\nsource = \"{components}/echo.wasm\"\nallow_unsigned = true",
            "[tenants.acme]",
            "[[routes]]\ntenant = \"acme\"\ncapability = \"fly\"\nprovider = \"p\"\n",
        ),
        &[],
    );
    let (ok, _, stderr) = check(&b);
    assert!(!ok);
    assert!(
        stderr.contains("does not offer capability `fly` (it offers: send)"),
        "{stderr}"
    );
}

#[test]
fn a_component_that_changed_after_locking_is_refused() {
    let b = TestBundle::new(
        &bundle(
            "[providers.p]\nsource = \"p.wasm\"\nallow_unsigned = true",
            "[tenants.acme]",
            ECHO_ROUTE,
        ),
        &[],
    );
    let dir = common::components_dir().join("wasip2");
    std::fs::copy(dir.join("echo.wasm"), b.path().join("p.wasm")).unwrap();
    // `run` writes the lock on its first start.
    let host = common::Host::start(b.path());
    drop(host);
    let lock = std::fs::read_to_string(b.path().join("greentic.lock")).unwrap();
    assert!(lock.contains("sha256:"), "{lock}");
    // Swap the component under the same path.
    std::fs::copy(dir.join("panicker.wasm"), b.path().join("p.wasm")).unwrap();
    let (ok, _, stderr) = check(&b);
    assert!(!ok);
    assert!(stderr.contains("recorded in greentic.lock"), "{stderr}");
    assert!(stderr.contains("--update-lock"), "{stderr}");
}

#[test]
fn a_corrupt_cache_entry_is_discarded_and_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let toml = bundle(
        "[providers.p]\nsource = \"{components}/echo.wasm\"\nallow_unsigned = true",
        "[tenants.acme]",
        ECHO_ROUTE,
    );
    let b = TestBundle::new(&toml, &[]);
    // This test needs a cache of its own.
    let file = b.path().join("greentic.toml");
    let text = std::fs::read_to_string(&file).unwrap().replace(
        &common::shared_cache().display().to_string(),
        &cache.path().display().to_string(),
    );
    std::fs::write(&file, text).unwrap();
    let (ok, stdout, stderr) = check(&b);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("cache: Compiled"), "{stdout}");
    let (_, stdout, _) = check(&b);
    assert!(stdout.contains("cache: Hit"), "{stdout}");
    // Flip a byte in the middle of every entry.
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let (ok, stdout, stderr) = check(&b);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("cache: Recompiled"), "{stdout}");
    let (_, stdout, _) = check(&b);
    assert!(stdout.contains("cache: Hit"), "{stdout}");
    // No temporary files are left behind.
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(name.ends_with(".cwasm"), "stray file {name}");
    }
}

#[test]
fn huge_bundle_values_are_refused_with_bounded_messages() {
    for (what, tenants, needle) in [
        (
            "a 100 000-character tenant id",
            format!("[tenants.{}]", "a".repeat(100_000)),
            "tenant ids are 1-64",
        ),
        (
            "a fuel budget beyond u64",
            "[tenants.acme]\nlimits = { fuel_per_call = 99999999999999999999999 }".to_string(),
            "fuel_per_call",
        ),
        (
            "a limit of the wrong type",
            "[tenants.acme]\nlimits = { deadline_ms = \"soon\" }".to_string(),
            "deadline_ms",
        ),
        (
            "a megabyte string where a number belongs",
            format!(
                "[tenants.acme]\nlimits = {{ deadline_ms = \"{}\" }}",
                "s".repeat(1_000_000)
            ),
            "characters cut",
        ),
        (
            "a 100 000-character unknown key",
            format!("[tenants.acme]\nlimits = {{ {} = 1 }}", "k".repeat(100_000)),
            "expected one of `fuel_per_call`",
        ),
    ] {
        let b = TestBundle::new(
            &bundle(
                "[providers.p]\nsource = \"{components}/echo.wasm\"\nallow_unsigned = true",
                &tenants,
                "",
            ),
            &[],
        );
        let (ok, _, stderr) = check(&b);
        assert!(!ok, "{what} was accepted");
        assert!(stderr.contains(needle), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert!(
            stderr.lines().all(|l| l.len() < 1024),
            "{what}: a {}-byte line",
            stderr.lines().map(str::len).max().unwrap_or(0)
        );
    }
}
