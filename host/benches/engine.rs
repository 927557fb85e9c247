//! Engine costs, each against its baseline in the same group:
//! - `instantiate`: pooling vs on-demand allocation (fresh store + instantiate, as every call does);
//! - `interruption/<workload>`: CPU-bound guests with fuel and epoch interruption off, fuel only,
//!   epochs only, both, fuel with fuel-driven yields (the host's default), and CPU-time
//!   metering (epochs and a CPU meter), then a table of overheads and their geometric mean;
//! - `compile-cache/<component>`: compiling vs loading from the compiled-artifact cache.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::hint::black_box;
use std::sync::Arc;

use common::Bare;
use criterion::{BenchmarkId, Criterion};
use greentic_capabilities::CallScope;
use greentic_capabilities::outbound::OutboundPolicy;
use greentic_host::bindings::greentic::types::types::{self as gtypes};
use greentic_host::bundle::Limits;
use greentic_host::compile::{
    CacheKey, CompileCache, EngineOptions, HostEngine, PoolSizing, YIELD_FUEL,
};
use greentic_host::domain::messaging::Messaging;
use greentic_host::domain::messaging::ProviderPre;
use greentic_host::instance::InstanceData;
use greentic_host::loader::{LoadOptions, LoadedBundle, load_bundle_with};
use greentic_host::metering::{CpuMeter, Metered};
use greentic_host::metrics::Metrics;
use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, Linker};

impl gtypes::Host for Bare {}

const POOL: PoolSizing = PoolSizing {
    instances: 72,
    max_memory_bytes: 64 << 20,
    metering: greentic_host::metering::Metering::Fuel,
};

/// The workloads and sizes (each call runs for milliseconds, so the work dominates).
const WORKLOADS: &[(&str, &str)] = &[
    ("sha256", "2048"),
    ("fib", "27"),
    ("collatz", "60000"),
    ("sieve", "4000000"),
];

/// Interruption configurations: (name, fuel, epoch, fuel-driven yields, CPU meter).
/// `fuel+yield` is the host's default; `fuel+epoch` was the previous one; `cpu-time` is
/// `[host] metering = "cpu-time"` (epochs every 1 ms with yields, each poll's CPU time read
/// and the call's budget checked at every tick). Engines without fuel tick every 1 ms.
const CONFIGS: &[(&str, bool, bool, bool, bool)] = &[
    ("none", false, false, false, false),
    ("fuel", true, false, false, false),
    ("epoch", false, true, false, false),
    ("fuel+epoch", true, true, false, false),
    ("fuel+yield", true, false, true, false),
    ("cpu-time", false, true, false, true),
];

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn scope(loaded: &LoadedBundle) -> Arc<CallScope> {
    Arc::new(CallScope {
        tenant: "acme".into(),
        team: None,
        user: None,
        provider: "hook".into(),
        operation: "send".into(),
        trace_id: String::new(),
        granted_secrets: Arc::new(BTreeSet::new()),
        bound_secrets: Arc::new(BTreeSet::new()),
        backends: loaded.backends.clone(),
        config: Arc::new(serde_json::json!({})),
        otel_cx: opentelemetry::Context::new(),
        metrics: Arc::new(Metrics::default()),
    })
}

fn messaging_pre(loaded: &LoadedBundle, name: &str) -> ProviderPre<InstanceData> {
    loaded.loaded.providers[name]
        .pre::<Messaging>()
        .unwrap_or_else(|| panic!("{name} is not a messaging provider"))
        .clone()
}

async fn instantiate(pre: &ProviderPre<InstanceData>, scope: &Arc<CallScope>) {
    let mut store = Store::new(
        pre.engine(),
        InstanceData::new(
            scope.clone(),
            OutboundPolicy::default(),
            Limits::default(),
            std::time::Instant::now() + std::time::Duration::from_secs(60),
        ),
    );
    store.limiter(|s| &mut s.limiter);
    store.set_fuel(u64::MAX).unwrap();
    store.fuel_async_yield_interval(Some(YIELD_FUEL)).unwrap();
    black_box(pre.instantiate_async(&mut store).await.unwrap());
}

fn instantiation(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    let bundle = common::bundle(
        &[
            ("noop", "noop", ""),
            (
                "hook",
                "messaging-webhook",
                "grants = { secrets = [\"WEBHOOK_BEARER_TOKEN\"], outbound_hosts = [\"*\"] }",
            ),
        ],
        cache.path(),
    );
    let pooling = load_bundle_with(bundle.path(), LoadOptions::default(), HostEngine::new).unwrap();
    let on_demand = load_bundle_with(bundle.path(), LoadOptions::default(), |_| {
        HostEngine::with_options(EngineOptions {
            pool: None,
            ..EngineOptions::host(POOL)
        })
    })
    .unwrap();
    let rt = rt();
    let mut group = c.benchmark_group("instantiate");
    for provider in ["noop", "hook"] {
        for (name, loaded) in [("pooling", &pooling), ("on-demand", &on_demand)] {
            let pre = messaging_pre(loaded, provider);
            let scope = scope(loaded);
            group.bench_function(BenchmarkId::new(name, provider), |b| {
                b.to_async(&rt).iter(|| instantiate(&pre, &scope))
            });
        }
    }
    group.finish();
}

fn workload_pre(fuel: bool, epoch: bool) -> (HostEngine, ProviderPre<Bare>) {
    let engine = HostEngine::with_options(EngineOptions {
        pool: Some(POOL),
        fuel,
        epoch,
    })
    .unwrap();
    let mut linker = Linker::<Bare>::new(&engine.engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    gtypes::add_to_linker::<_, HasSelf<Bare>>(&mut linker, |s| s).unwrap();
    let component = Component::from_file(&engine.engine, common::component("workloads")).unwrap();
    let pre = ProviderPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    (engine, pre)
}

/// How a store is set up.
#[derive(Clone, Copy)]
struct Interrupt {
    fuel: bool,
    epoch: bool,
    fuel_yield: bool,
    cpu_meter: bool,
}

/// One workload call in a fresh instance, with the host's store settings for what is enabled.
async fn run_workload(pre: &ProviderPre<Bare>, how: Interrupt, to: &str, size: &str) {
    let Interrupt {
        fuel,
        epoch,
        fuel_yield,
        cpu_meter,
    } = how;
    let mut store = Store::new(pre.engine(), Bare::new());
    if fuel {
        store.set_fuel(u64::MAX).unwrap();
    }
    if fuel_yield {
        store.fuel_async_yield_interval(Some(YIELD_FUEL)).unwrap();
    }
    if epoch {
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
    }
    let meter = cpu_meter.then(|| CpuMeter::new(u64::MAX));
    if let Some(meter) = &meter {
        meter.install(&mut store);
    }
    let call = Box::pin(async {
        let provider = pre.instantiate_async(&mut store).await.unwrap();
        let msg = common::message(to, size);
        provider
            .greentic_messaging_outbound()
            .call_send(&mut store, &common::ctx(), &msg)
            .await
            .unwrap()
            .unwrap()
    });
    black_box(Metered::new(call, meter).await);
}

fn interruption(c: &mut Criterion, pres: &[(&str, Interrupt, ProviderPre<Bare>)]) {
    let rt = rt();
    for (workload, size) in WORKLOADS {
        let mut group = c.benchmark_group(format!("interruption/{workload}"));
        group.sample_size(20);
        for (name, how, pre) in pres {
            group.bench_function(*name, |b| {
                b.to_async(&rt)
                    .iter(|| run_workload(pre, *how, workload, size))
            });
        }
        group.finish();
    }
}

fn compile_cache(c: &mut Criterion) {
    let engine = HostEngine::new(POOL).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = CompileCache::new(dir.path().to_path_buf(), CacheKey::ephemeral());
    for name in ["noop", "messaging-webhook", "webhook-github", "workloads"] {
        let bytes = std::fs::read(common::component(name)).unwrap();
        let digest = format!("bench-{name}");
        cache.load(&engine, &digest, &bytes).unwrap();
        let mut group = c.benchmark_group(format!("compile-cache/{name}"));
        group.sample_size(10);
        group.bench_function("compile", |b| {
            b.iter(|| black_box(Component::new(&engine.engine, &bytes).unwrap()))
        });
        group.bench_function("cache-hit", |b| {
            b.iter(|| black_box(cache.load(&engine, &digest, &bytes).unwrap()))
        });
        group.finish();
    }
}

fn main() {
    let pres: Vec<(&str, Interrupt, ProviderPre<Bare>)> = CONFIGS
        .iter()
        .map(|(name, fuel, epoch, fuel_yield, cpu_meter)| {
            let (engine, pre) = workload_pre(*fuel, *epoch);
            // The engine (and its epoch ticker) lives as long as the benchmark.
            std::mem::forget(engine);
            let how = Interrupt {
                fuel: *fuel,
                epoch: *epoch,
                fuel_yield: *fuel_yield,
                cpu_meter: *cpu_meter,
            };
            (*name, how, pre)
        })
        .collect();
    let mut c = Criterion::default().configure_from_args();
    instantiation(&mut c);
    interruption(&mut c, &pres);
    compile_cache(&mut c);
    c.final_summary();

    // Overheads over the unlimited engine, in one pass with the same settings.
    let rt = rt();
    println!("\ninterruption overhead vs none (median of 15 calls, ms)");
    print!("{:<10}", "workload");
    for (name, ..) in CONFIGS {
        print!(" {name:>12}");
    }
    println!();
    let mut logs = vec![0.0f64; CONFIGS.len()];
    for (workload, size) in WORKLOADS {
        let times: Vec<f64> = pres
            .iter()
            .map(|(_, how, pre)| {
                common::median(15, || rt.block_on(run_workload(pre, *how, workload, size)))
                    .as_secs_f64()
            })
            .collect();
        print!("{workload:<10}");
        for (i, t) in times.iter().enumerate() {
            let ratio = t / times[0];
            logs[i] += ratio.ln();
            print!(" {:>7.2} {:+4.0}%", t * 1e3, (ratio - 1.0) * 100.0);
        }
        println!();
    }
    print!("{:<10}", "geomean");
    for l in &logs {
        print!(
            " {:>12}",
            format!(
                "{:+.1}%",
                ((l / WORKLOADS.len() as f64).exp() - 1.0) * 100.0
            )
        );
    }
    println!();
}
