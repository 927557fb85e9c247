//! Components: arbitrary guests through the loader and one call under a tenant's limits.
//!
//! Most inputs drive `wasm-smith`: it generates a core module with exactly the exports of a
//! `greentic:messaging/provider` guest (same names and types) and any subset of that world's
//! imports, with arbitrary bodies; `wit-component` makes it a component, the manifest declares
//! what it imports, and a bundle grants that. The loader runs every load-time check and compiles
//! it; if it loads, one `send` runs through [`Runtime::invoke`] under small limits, arbitrary
//! code calling the host's imports with arbitrary arguments. Inputs with an odd first byte are
//! handed to the loader as the component's bytes directly.
//!
//! Properties: nothing panics, loading ends in a component or a reason, and a call ends in the
//! guest's answer or a typed error that blames the guest or its limits, never the host.

use std::path::Path;
use std::sync::OnceLock;

use arbitrary::Unstructured;
use greentic_host::errors::CallError;
use greentic_host::loader::{LoadOptions, load_bundle};
use greentic_host::runtime::{Caller, Runtime};
use greentic_interfaces::{Contracts, synth};

const WORLD: &str = "greentic:messaging/provider@1.0.0";

struct Shape {
    world: synth::World,
    /// A module with the world's exports (and imports): what `wasm-smith` must export and may
    /// import.
    dummy: Vec<u8>,
}

fn shape() -> &'static Shape {
    static SHAPE: OnceLock<Shape> = OnceLock::new();
    SHAPE.get_or_init(|| {
        let contracts = Contracts::embedded().expect("the host's WIT");
        let world = synth::World::host(contracts, WORLD).expect("the messaging world");
        let dummy = world.dummy_module();
        Shape { world, dummy }
    })
}

/// What a generated guest imports, which the manifest must declare and the bundle grant.
#[derive(Debug, Default)]
struct Needs {
    secrets: bool,
    http: bool,
}

fn needs(core: &[u8]) -> Needs {
    let mut needs = Needs::default();
    for payload in wasmparser::Parser::new(0).parse_all(core) {
        if let Ok(wasmparser::Payload::ImportSection(reader)) = payload {
            for import in reader.into_imports().flatten() {
                needs.secrets |= import.module.starts_with("greentic:secrets/");
                needs.http |= import.module.starts_with("wasi:http/outgoing-handler");
            }
        }
    }
    needs
}

fn config(u: &mut Unstructured<'_>) -> arbitrary::Result<wasm_smith::Config> {
    let shape = shape();
    let mut config = wasm_smith::Config {
        exports: Some(shape.dummy.clone()),
        available_imports: Some(shape.dummy.clone()),
        // What the host's engine runs (Wasmtime's defaults); the rest would only be refused.
        gc_enabled: false,
        exceptions_enabled: false,
        threads_enabled: false,
        shared_everything_threads_enabled: false,
        memory64_enabled: false,
        custom_page_sizes_enabled: false,
        wide_arithmetic_enabled: false,
        max_memory32_bytes: 64 << 20,
        max_table_elements: 10_000,
        ..wasm_smith::Config::default()
    };
    config.max_funcs = u.int_in_range(0..=50)?;
    config.max_instructions = u.int_in_range(0..=200)?;
    config.canonicalize_nans = u.arbitrary()?;
    Ok(config)
}

/// How far an input got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reached {
    /// `wasm-smith` could not make a module of it, or `wit-component` a component.
    Nothing,
    /// A component the loader refused.
    Refused,
    /// A loaded component, called once.
    Called,
}

/// Runs one input (see the module documentation).
pub fn run(data: &[u8]) {
    reach(data);
}

/// Runs one input and says how far it got.
pub fn reach(data: &[u8]) -> Reached {
    let Some((&mode, rest)) = data.split_first() else {
        return Reached::Nothing;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (component, needs) = if mode % 2 == 1 {
        (rest.to_vec(), Needs::default())
    } else {
        let mut u = Unstructured::new(rest);
        let Ok(module) = config(&mut u).and_then(|c| wasm_smith::Module::new(c, &mut u)) else {
            return Reached::Nothing;
        };
        let core = module.to_bytes();
        let needs = needs(&core);
        let manifest = manifest(&needs);
        match shape().world.componentize(core, Some(&manifest)) {
            Ok(component) => (component, needs),
            // wasm-smith may make exports whose bodies wit-component rejects (e.g. a start
            // function that is not allowed); that is a refusal, not a finding.
            Err(_) => return Reached::Nothing,
        }
    };
    write_bundle(dir.path(), &component, &needs);
    let loaded = match load_bundle(dir.path(), LoadOptions::default()) {
        Ok(loaded) => loaded,
        Err(e) => {
            crate::assert_bounded("load", &format!("{e:#}"));
            return Reached::Refused;
        }
    };
    let runtime = Runtime::new(
        &loaded.bundle,
        loaded.engine,
        loaded.loaded.providers,
        loaded.backends,
    );
    let caller = Caller {
        tenant: "fuzz".into(),
        team: None,
        user: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcome = rt.block_on(runtime.invoke(
        &caller,
        "send",
        serde_json::json!({"to": "#fuzz", "text": "hello"}),
        None,
    ));
    match outcome {
        Ok(_) => {}
        Err(
            CallError::Provider(_)
            | CallError::FuelExhausted(_)
            | CallError::DeadlineExceeded(_)
            | CallError::MemoryLimit(_)
            | CallError::ResourceLimit(_)
            | CallError::GuestTrap(_)
            | CallError::ResultTooLarge { .. },
        ) => {}
        Err(other) => panic!(
            "a guest caused a host-side error: {} ({other})",
            other.code()
        ),
    }
    Reached::Called
}

fn manifest(needs: &Needs) -> String {
    let mut m = serde_json::json!({
        "name": "fuzz",
        "version": "1.0.0",
        "domain": "messaging",
        "capabilities": ["send"],
        "compat": { "wit": "greentic:messaging/provider@1.0.x" },
    });
    if needs.secrets {
        m["secrets"] = serde_json::json!([{ "name": "FUZZ_TOKEN", "required": false }]);
    }
    if needs.http {
        // Port 9 on loopback: nothing listens, so a generated request fails at once.
        m["outbound_hosts"] = serde_json::json!(["127.0.0.1:9"]);
    }
    m.to_string()
}

fn write_bundle(dir: &Path, component: &[u8], needs: &Needs) {
    let mut grants = vec!["config = true".to_string(), "telemetry = true".to_string()];
    if needs.secrets {
        grants.push("secrets = [\"FUZZ_TOKEN\"]".into());
    }
    if needs.http {
        grants.push("outbound_hosts = [\"127.0.0.1:9\"]".into());
    }
    let toml = format!(
        r#"[host]
cache_dir = "cache"

[auth]
algorithm = "HS256"
issuer = "fuzz"
audience = "greentic-host"
secret_file = "jwt.secret"

[providers.guest]
source = "guest.wasm"
allow_unsigned = true
grants = {{ {grants} }}

[tenants.fuzz]
secrets = {secrets}
limits = {{ fuel_per_call = 2000000, deadline_ms = 500, memory_bytes = 8388608, max_concurrent = 1 }}

[[routes]]
tenant = "fuzz"
capability = "send"
provider = "guest"
"#,
        grants = grants.join(", "),
        secrets = if needs.secrets {
            "[\"FUZZ_TOKEN\"]"
        } else {
            "[]"
        },
    );
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("a directory");
        std::fs::write(path, bytes).expect("a file in the temporary directory");
    };
    write("greentic.toml", toml.as_bytes());
    write("jwt.secret", b"fuzz-secret-0123456789abcdef0123456789");
    write("guest.wasm", component);
    write("secrets/fuzz/FUZZ_TOKEN", b"fuzz-token-value");
}
