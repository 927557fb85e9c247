//! Helpers shared by the benchmarks: built components, bundles, a bare WASI store, percentiles.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use greentic_host::bindings::greentic::types::types::{Cloud, DeploymentCtx, Platform, TenantCtx};
use greentic_host::domain::messaging::Message;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Where `scripts/build-components.sh` put the components (`$GREENTIC_COMPONENTS_DIR`, or
/// `greentic-components/` in this benchmark's cargo target directory).
pub fn component(name: &str) -> PathBuf {
    let dir = std::env::var_os("GREENTIC_COMPONENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::current_exe()
                .unwrap()
                .ancestors()
                .nth(3) // target/<profile>/deps/<bench>
                .unwrap()
                .join("greentic-components")
        });
    let path = dir
        .join("wasip2")
        .join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-components.sh first",
        path.display()
    );
    path
}

/// Writes a bundle with `providers` (name, component crate, extra TOML lines), the first routed for `send`, and
/// tenant `acme`; returns its directory. The compiled-artifact cache is `cache`.
pub fn bundle(providers: &[(&str, &str, &str)], cache: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = format!(
        "[host]\ncache_dir = \"{}\"\n\n[auth]\nalgorithm = \"HS256\"\nissuer = \"bench\"\naudience = \"greentic-host\"\nsecret_file = \"jwt.secret\"\n\n[tenants.acme]\nlimits = {{ max_concurrent = 64 }}\n",
        cache.display()
    );
    for (i, (name, crate_name, extra)) in providers.iter().enumerate() {
        toml.push_str(&format!(
            "\n[providers.{name}]\nsource = \"{}\"\nallow_unsigned = true\n{extra}\n",
            component(crate_name).display()
        ));
        if i == 0 {
            toml.push_str(&format!(
                "\n[[routes]]\ntenant = \"*\"\ncapability = \"send\"\nprovider = \"{name}\"\n"
            ));
        }
    }
    std::fs::write(dir.path().join("greentic.toml"), toml).unwrap();
    std::fs::write(
        dir.path().join("jwt.secret"),
        "bench-secret-0123456789abcdef0123",
    )
    .unwrap();
    dir
}

/// The store data of a bare Wasmtime embedding: WASI and nothing else.
pub struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl Bare {
    pub fn new() -> Bare {
        Bare {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        }
    }
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// p50 and p99 of `n` timed runs of `f` (after `n / 10` warm-up runs).
pub fn percentiles(n: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..n / 10 {
        f();
    }
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    (times[n / 2], times[(n * 99) / 100])
}

/// How long one run of `f` takes.
pub fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// p50, p99 and p999 of `times`.
pub fn quantiles(mut times: Vec<Duration>) -> (Duration, Duration, Duration) {
    times.sort();
    let n = times.len();
    (times[n / 2], times[(n * 99) / 100], times[(n * 999) / 1000])
}

/// Median of `n` timed runs of `f` (after one warm-up run).
pub fn median(n: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

/// `d` in microseconds, for tables.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The tenant context the bare-Wasmtime baselines pass (tenant `acme`, local, bare metal).
pub fn ctx() -> TenantCtx {
    TenantCtx {
        tenant: "acme".into(),
        team: None,
        user: None,
        deployment: DeploymentCtx {
            cloud: Cloud::Local,
            region: None,
            platform: Platform::Baremetal,
            runtime: None,
        },
        trace_id: None,
        idempotency_key: None,
    }
}

/// A message to `to` with `text`.
pub fn message(to: &str, text: &str) -> Message {
    Message {
        to: to.into(),
        text: text.into(),
        thread: None,
        idempotency_key: None,
    }
}
