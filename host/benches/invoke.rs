//! Invoke overhead: one call of a trivial provider (`noop`) through the host's full path vs
//! bare Wasmtime (`InstancePre` instantiate + typed call of the same component on the same
//! engine) vs the same work as a native Rust function. After criterion's group, p50/p99 of
//! single calls and the ratios are printed.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::sync::Arc;

use common::Bare;
use criterion::Criterion;
use greentic_host::bindings::greentic::types::types::{self as gtypes, TenantCtx};
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
    bare: ProviderPre<Bare>,
    _bundle: tempfile::TempDir,
    _cache: tempfile::TempDir,
}

fn setup() -> Setup {
    let cache = tempfile::tempdir().unwrap();
    let bundle = common::bundle(&[("noop", "noop", "")], cache.path());
    let loaded = load_bundle(bundle.path(), LoadOptions::default()).unwrap();
    // Bare Wasmtime on the host's own engine (same config: pooling, fuel, epochs).
    let engine = loaded.engine.engine.clone();
    let mut linker = Linker::<Bare>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    gtypes::add_to_linker::<_, HasSelf<Bare>>(&mut linker, |s| s).unwrap();
    let component = Component::from_file(&engine, common::component("noop")).unwrap();
    let bare = ProviderPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    let runtime = Arc::new(Runtime::new(
        &loaded.bundle,
        loaded.engine,
        loaded.loaded.providers,
        loaded.capabilities,
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    Setup {
        rt,
        runtime,
        bare,
        _bundle: bundle,
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
    let n = 5_000;
    let host = common::percentiles(n, || s.rt.block_on(full(&s.runtime)));
    let bare_t = common::percentiles(n, || s.rt.block_on(bare(&s.bare, &ctx, &msg)));
    let native_t = common::percentiles(n * 10, || {
        black_box(native(black_box(&ctx), black_box(&msg)));
    });
    println!("\ninvoke, {n} single calls each (µs)");
    println!("{:<16} {:>10} {:>10}", "path", "p50", "p99");
    for (name, (p50, p99)) in [
        ("host-full-path", host),
        ("bare-wasmtime", bare_t),
        ("native", native_t),
    ] {
        println!(
            "{name:<16} {:>10.2} {:>10.2}",
            common::us(p50),
            common::us(p99)
        );
    }
    println!(
        "ratios: host/bare p50 {:.2}x p99 {:.2}x; host/native p50 {:.0}x",
        host.0.as_secs_f64() / bare_t.0.as_secs_f64(),
        host.1.as_secs_f64() / bare_t.1.as_secs_f64(),
        host.0.as_secs_f64() / native_t.0.as_secs_f64().max(1e-9),
    );
}
