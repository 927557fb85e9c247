//! Invoke overhead: one call of a trivial provider (`noop`) through the host's full path vs
//! bare Wasmtime (`InstancePre` instantiate + typed call of the same component on the same
//! engine) vs the same work as a native Rust function; and the full path with the fair
//! scheduler (the default) vs `[host.scheduler] mode = "tokio"`; and the full path when the
//! provider's instance serves the tenant's next call (`"instances": "per-tenant"`, which
//! `noop` declares; the other paths run it with `fresh_instances = true`). After criterion's group,
//! p50/p99/p999 of single calls and the ratios are printed. `INVOKE_AA=1` makes the second
//! runtime fair too (an A/A control for the fair/tokio comparison).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::sync::Arc;

use common::Bare;
use criterion::Criterion;
use greentic_host::bindings::greentic::types::types::{self as gtypes, TenantCtx};
use greentic_host::bundle::SchedulerMode;
use greentic_host::domain::messaging::ProviderPre;
use greentic_host::domain::messaging::{Message, SendResult};
use greentic_host::loader::{LoadOptions, load_bundle};
use greentic_host::runtime::{Caller, Runtime};
use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, Linker};

impl gtypes::Host for Bare {}

struct Setup {
    rt: tokio::runtime::Runtime,
    runtime: Arc<Runtime>,
    /// The same bundle with `[host.scheduler] mode = "tokio"`.
    tokio_mode: Arc<Runtime>,
    /// The same provider with its instances serving the tenant's later calls.
    reused: Arc<Runtime>,
    bare: ProviderPre<Bare>,
    _bundle: tempfile::TempDir,
    _reused_bundle: tempfile::TempDir,
    _cache: tempfile::TempDir,
}

fn setup() -> Setup {
    let cache = tempfile::tempdir().unwrap();
    let bundle = common::bundle(&[("noop", "noop", "fresh_instances = true")], cache.path());
    let reused_bundle = common::bundle(&[("noop", "noop", "")], cache.path());
    let reused_loaded = load_bundle(reused_bundle.path(), LoadOptions::default()).unwrap();
    let reused = Arc::new(Runtime::new(
        &reused_loaded.bundle,
        reused_loaded.engine,
        reused_loaded.loaded.providers,
        reused_loaded.backends,
    ));
    let loaded = load_bundle(bundle.path(), LoadOptions::default()).unwrap();
    // Bare Wasmtime on the host's own engine (same config: pooling, fuel, epochs).
    let engine = loaded.engine.engine.clone();
    let mut linker = Linker::<Bare>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    gtypes::add_to_linker::<_, HasSelf<Bare>>(&mut linker, |s| s).unwrap();
    let component = Component::from_file(&engine, common::component("noop")).unwrap();
    let bare = ProviderPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    let engine = Arc::new(loaded.engine);
    let mut tokio_bundle = loaded.bundle.clone();
    // INVOKE_AA=1: both runtimes fair, a control for what merely being the other runtime
    // (built first, its own metrics and breakers) does to the comparison.
    tokio_bundle.file.host.scheduler.mode = if std::env::var_os("INVOKE_AA").is_some() {
        SchedulerMode::Fair
    } else {
        SchedulerMode::Tokio
    };
    let tokio_mode = Arc::new(Runtime::new(
        &tokio_bundle,
        engine.clone(),
        loaded.loaded.providers.clone(),
        loaded.backends.clone(),
    ));
    let runtime = Arc::new(Runtime::new(
        &loaded.bundle,
        engine,
        loaded.loaded.providers,
        loaded.backends,
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    Setup {
        rt,
        runtime,
        tokio_mode,
        reused,
        bare,
        _bundle: bundle,
        _reused_bundle: reused_bundle,
        _cache: cache,
    }
}

async fn full(runtime: &Runtime) {
    let caller = Caller {
        tenant: "acme".into(),
        team: None,
        user: None,
    };
    let input = serde_json::json!({"to": "#ops", "text": "hello"});
    let out = runtime.invoke(&caller, "send", input, None).await.unwrap();
    black_box(out);
}

async fn bare(pre: &ProviderPre<Bare>, ctx: &TenantCtx, msg: &Message) {
    let mut store = Store::new(pre.engine(), Bare::new());
    store.set_fuel(u64::MAX).unwrap();
    store.set_epoch_deadline(1 << 32);
    let provider = pre.instantiate_async(&mut store).await.unwrap();
    let out = provider
        .greentic_messaging_outbound()
        .call_send(&mut store, ctx, msg)
        .await
        .unwrap()
        .unwrap();
    black_box(out);
}

#[inline(never)]
fn native(_ctx: &TenantCtx, msg: &Message) -> SendResult {
    SendResult {
        id: format!("{}:{}", msg.to, msg.text),
        delivered_at_ms: 0,
    }
}

fn invoke(c: &mut Criterion, s: &Setup) {
    let (ctx, msg) = (common::ctx(), common::message("#ops", "hello"));
    let mut group = c.benchmark_group("invoke");
    group.bench_function("host-full-path", |b| {
        b.to_async(&s.rt).iter(|| full(&s.runtime))
    });
    group.bench_function("host-tokio-scheduler", |b| {
        b.to_async(&s.rt).iter(|| full(&s.tokio_mode))
    });
    group.bench_function("host-reused-instance", |b| {
        b.to_async(&s.rt).iter(|| full(&s.reused))
    });
    group.bench_function("bare-wasmtime", |b| {
        b.to_async(&s.rt).iter(|| bare(&s.bare, &ctx, &msg))
    });
    group.bench_function("native", |b| {
        b.iter(|| native(black_box(&ctx), black_box(&msg)))
    });
    group.finish();
}

fn main() {
    let s = setup();
    let mut c = Criterion::default().configure_from_args();
    invoke(&mut c, &s);
    c.final_summary();

    let (ctx, msg) = (common::ctx(), common::message("#ops", "hello"));
    let n = 20_000;
    // Interleaved, so drift over the run (the machine's other work) hits every path alike,
    // and in a rotating order, so none always runs first (or right after another).
    let mut times = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for round in 0..(n + n / 10) {
        for k in 0..4 {
            let path = (round + k) % 4;
            let t = match path {
                0 => common::time(|| s.rt.block_on(full(&s.runtime))),
                1 => common::time(|| s.rt.block_on(full(&s.tokio_mode))),
                2 => common::time(|| s.rt.block_on(bare(&s.bare, &ctx, &msg))),
                _ => common::time(|| s.rt.block_on(full(&s.reused))),
            };
            if round >= n / 10 {
                times[path].push(t);
            }
        }
    }
    let [host, tokio_mode, bare_t, reused] = times.map(common::quantiles);
    let native_t = common::quantiles(
        (0..n * 10)
            .map(|_| {
                common::time(|| {
                    black_box(native(black_box(&ctx), black_box(&msg)));
                })
            })
            .collect(),
    );
    println!("\ninvoke, {n} single calls each, interleaved (µs)");
    println!("{:<22} {:>10} {:>10} {:>10}", "path", "p50", "p99", "p999");
    for (name, q) in [
        ("host-full-path", host),
        ("host-tokio-scheduler", tokio_mode),
        ("host-reused-instance", reused),
        ("bare-wasmtime", bare_t),
        ("native", native_t),
    ] {
        println!(
            "{name:<22} {:>10.2} {:>10.2} {:>10.2}",
            common::us(q.0),
            common::us(q.1),
            common::us(q.2)
        );
    }
    // What a call's turn costs by itself: an empty future through the scheduler vs polled as is.
    let scheduler = &s.runtime.scheduler;
    let through = common::quantiles(
        (0..n)
            .map(|_| {
                common::time(|| {
                    s.rt.block_on(async { scheduler.run("acme", 1, async {}).await.unwrap() })
                        .answer
                })
            })
            .collect(),
    );
    let as_is = common::quantiles(
        (0..n)
            .map(|_| common::time(|| s.rt.block_on(async {})))
            .collect(),
    );
    println!(
        "an empty future through the scheduler: p50 {:.2} µs vs {:.2} µs polled as is",
        common::us(through.0),
        common::us(as_is.0)
    );
    let r = |a: std::time::Duration, b: std::time::Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "ratios: host/bare p50 {:.2}x p99 {:.2}x p999 {:.2}x; fair/tokio scheduler p50 {:.3}x p99 {:.2}x; host/native p50 {:.0}x",
        r(host.0, bare_t.0),
        r(host.1, bare_t.1),
        r(host.2, bare_t.2),
        r(host.0, tokio_mode.0),
        r(host.1, tokio_mode.1),
        host.0.as_secs_f64() / native_t.0.as_secs_f64().max(1e-9),
    );
    println!(
        "reused instance: host/bare p50 {:.2}x p99 {:.2}x p999 {:.2}x; reused/fresh p50 {:.2}x",
        r(reused.0, bare_t.0),
        r(reused.1, bare_t.1),
        r(reused.2, bare_t.2),
        r(reused.0, host.0),
    );
}
