//! What live changes and a fleet cost, measured in one run against baselines from the same run:
//!
//! - **reload**: invoke latency (p50/p99, four callers) before and while the bundle is reloaded
//!   four times a second, and how long a reload takes from start to swap (its time to converge
//!   on one host);
//! - **fleet limits**: one call's latency on a single host vs a host holding its tenant's
//!   `max_concurrent` and `fuel_per_second` fleet-wide through a real `nats-server`, and with
//!   an idempotency key recorded fleet-wide too;
//! - **delivery admission**: accepting one durable delivery (the tenant's rate counted
//!   fleet-wide, stored in the tenant's bounded queue) vs storing the same message in a plain
//!   work-queue stream with nothing before it (what accepting cost without admission).
//!
//! `scripts/bench.sh fleet` runs it (it installs `nats-server`); results in BENCHMARKS.md.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use greentic_jetstream::test_server as nats_server;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use greentic_host::auth::Authenticator;
use greentic_host::fleet::idempotency::Records;
use greentic_host::fleet::limits::FleetLimits;
use greentic_host::fleet::{ClusterSection, Fleet};
use greentic_host::loader::{LoadOptions, load_bundle};
use greentic_host::reload::{Outcome, Reloader};
use greentic_host::runtime::{Caller, Runtime};

fn caller() -> Caller {
    Caller {
        tenant: "acme".into(),
        team: None,
        user: None,
    }
}

async fn call(runtime: &Runtime, key: Option<String>) {
    let input = serde_json::json!({"to": "#ops", "text": "hello"});
    runtime.invoke(&caller(), "send", input, key).await.unwrap();
}

fn runtime_of(bundle: &std::path::Path) -> (Arc<Runtime>, Arc<ArcSwap<Authenticator>>) {
    let loaded = load_bundle(bundle, LoadOptions::default()).unwrap();
    let auth = Arc::new(ArcSwap::from_pointee(
        Authenticator::from_bundle(&loaded.bundle).unwrap(),
    ));
    let runtime = Arc::new(Runtime::new(
        &loaded.bundle,
        loaded.engine,
        loaded.loaded.providers,
        loaded.backends,
    ));
    (runtime, auth)
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[((sorted.len() * p) / 100).min(sorted.len() - 1)]
}

/// Latencies of calls from `callers` concurrent loops over `span`, while `during` runs.
async fn under_load<F: std::future::Future<Output = ()>>(
    runtime: &Arc<Runtime>,
    callers: usize,
    span: Duration,
    during: F,
) -> Vec<Duration> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (runtime, stop) = (runtime.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                call(&runtime, None).await;
                times.push(t.elapsed());
            }
            times
        }));
    }
    let started = Instant::now();
    during.await;
    if let Some(left) = span.checked_sub(started.elapsed()) {
        tokio::time::sleep(left).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}

fn reload(rt: &tokio::runtime::Runtime) {
    let cache = tempfile::tempdir().unwrap();
    let bundle = common::bundle(&[("noop", "noop", "")], cache.path());
    let (runtime, auth) = runtime_of(bundle.path());
    let _enter = rt.enter();
    let reloader = Reloader::new(runtime.clone(), auth, bundle.path(), LoadOptions::default());
    let file = bundle.path().join("greentic.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let span = Duration::from_secs(3);
    let (before, during, took) = rt.block_on(async {
        let before = under_load(&runtime, 4, span, async {}).await;
        let mut took = Vec::new();
        let during = under_load(&runtime, 4, span, async {
            let started = Instant::now();
            let mut n = 0;
            while started.elapsed() < span {
                tokio::time::sleep(Duration::from_millis(250)).await;
                n += 1;
                // A new revision each time (the same providers: compiled code from the cache).
                std::fs::write(&file, format!("{text}\n# revision {n}\n")).unwrap();
                match reloader.reload().await {
                    Outcome::Applied { took_ms, .. } => took.push(took_ms),
                    other => panic!("reload: {other:?}"),
                }
            }
        })
        .await;
        (before, during, took)
    });
    let mut took = took;
    took.sort();
    let (p50b, p99b) = (pct(&before, 50), pct(&before, 99));
    let (p50d, p99d) = (pct(&during, 50), pct(&during, 99));
    println!(
        "\nreload (noop provider, 4 callers, {} s each phase)",
        span.as_secs()
    );
    println!(
        "  reloads applied: {} (one every 250 ms), time to swap p50 {} ms, max {} ms",
        took.len(),
        took[took.len() / 2],
        took[took.len() - 1]
    );
    println!(
        "  invoke before: {} calls, p50 {:.1} us, p99 {:.1} us",
        before.len(),
        common::us(p50b),
        common::us(p99b)
    );
    println!(
        "  invoke during: {} calls, p50 {:.1} us, p99 {:.1} us",
        during.len(),
        common::us(p50d),
        common::us(p99d)
    );
    println!(
        "  during/before: p50 {:.2}x, p99 {:.2}x",
        p50d.as_secs_f64() / p50b.as_secs_f64(),
        p99d.as_secs_f64() / p99b.as_secs_f64()
    );
}

fn fleet_limits(rt: &tokio::runtime::Runtime) {
    let server = nats_server::Nats::start();
    let cache = tempfile::tempdir().unwrap();
    let bundle = common::bundle(&[("noop", "noop", "")], cache.path());
    let (single, _) = runtime_of(bundle.path());
    let (fleet_host, _) = runtime_of(bundle.path());
    rt.block_on(async {
        let fleet = Fleet::connect(
            &ClusterSection::default(),
            &server.url,
            bundle.path(),
            "bench",
        )
        .await
        .unwrap();
        let limits = FleetLimits::open(&fleet, fleet_host.metrics.clone())
            .await
            .unwrap();
        let _ = fleet_host.fleet_limits.set(limits);
        let _ = fleet_host
            .idempotency
            .set(Records::open(&fleet).await.unwrap());
    });
    let n = 2000;
    let (p50s, p99s) = common::percentiles(n, || rt.block_on(call(&single, None)));
    let (p50f, p99f) = common::percentiles(n, || rt.block_on(call(&fleet_host, None)));
    let mut k = 0u64;
    let (p50k, p99k) = common::percentiles(n, || {
        k += 1;
        rt.block_on(call(&fleet_host, Some(format!("key-{k}"))))
    });
    let degraded = fleet_host
        .metrics
        .counter("greentic_fleet_limits_degraded_total", &[("what", "slots")]);
    assert_eq!(
        degraded, 0.0,
        "the fleet limits fell back to per-host limits"
    );
    println!("\nfleet-wide limits (noop provider, one call at a time, nats-server on loopback)");
    println!(
        "  single host:                p50 {:>8.1} us  p99 {:>8.1} us",
        common::us(p50s),
        common::us(p99s)
    );
    println!(
        "  fleet limits:               p50 {:>8.1} us  p99 {:>8.1} us  ({:.2}x / {:.2}x)",
        common::us(p50f),
        common::us(p99f),
        p50f.as_secs_f64() / p50s.as_secs_f64(),
        p99f.as_secs_f64() / p99s.as_secs_f64()
    );
    println!(
        "  fleet limits + idempotency: p50 {:>8.1} us  p99 {:>8.1} us  ({:.2}x / {:.2}x)",
        common::us(p50k),
        common::us(p99k),
        p50k.as_secs_f64() / p50s.as_secs_f64(),
        p99k.as_secs_f64() / p99s.as_secs_f64()
    );
}

fn delivery_admission(rt: &tokio::runtime::Runtime) {
    use greentic_host::bundle::{Limits, Route};
    use greentic_host::fleet::deliveries::Deliveries;
    let server = nats_server::Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let (fleet, queue) = rt.block_on(async {
        let fleet = Fleet::connect(&ClusterSection::default(), &server.url, dir.path(), "bench")
            .await
            .unwrap();
        let queue = Deliveries::open(&fleet).await.unwrap();
        // The baseline: one work-queue stream, no bound, no admission.
        fleet
            .js
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: "BENCH_PLAIN".into(),
                subjects: vec!["bench.plain.>".into()],
                retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
                duplicate_window: Duration::from_secs(600),
                ..Default::default()
            })
            .await
            .unwrap();
        (fleet, queue)
    });
    let route = Route {
        tenant: "acme".into(),
        team: None,
        user: None,
        cloud: None,
        capability: "receive".into(),
        provider: "hook".into(),
        durable: true,
        delivery_id_header: None,
        verify: None,
    };
    let limits = Limits {
        queued_deliveries: 1_000_000,
        queued_delivery_bytes: 1 << 30,
        queued_deliveries_per_route: 1_000_000,
        deliveries_per_second: 1_000_000,
        ..Limits::default()
    };
    let body = |n: u64| {
        bytes::Bytes::from(format!(
            "{{\"delivery\": {n}, \"pad\": \"{}\"}}",
            "x".repeat(1024)
        ))
    };
    let n = 2000;
    let mut i = 0u64;
    let (p50a, p99a) = common::percentiles(n, || {
        i += 1;
        let request = hyper::Request::post("/webhooks/acme/hook/x")
            .body(body(i))
            .unwrap();
        rt.block_on(queue.accept("acme", "hook", &route, &limits, 1 << 20, request))
            .unwrap();
    });
    let mut j = 0u64;
    let (p50p, p99p) = common::percentiles(n, || {
        j += 1;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("plain-{j}").as_str(),
        );
        rt.block_on(async {
            fleet
                .js
                .publish_with_headers("bench.plain.acme", headers, body(j))
                .await
                .unwrap()
                .await
                .unwrap();
        });
    });
    println!("\ndurable delivery accept (1 KiB bodies, one at a time, nats-server on loopback)");
    println!(
        "  store only (no admission):  p50 {:>8.1} us  p99 {:>8.1} us",
        common::us(p50p),
        common::us(p99p)
    );
    println!(
        "  rate + bounded queue:       p50 {:>8.1} us  p99 {:>8.1} us  ({:.2}x / {:.2}x)",
        common::us(p50a),
        common::us(p99a),
        p50a.as_secs_f64() / p50p.as_secs_f64(),
        p99a.as_secs_f64() / p99p.as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter picks one part.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if "reload".contains(&filter) || filter.is_empty() {
        reload(&rt);
    }
    if "fleet-limits".contains(&filter) || filter.is_empty() {
        fleet_limits(&rt);
    }
    if "delivery-admission".contains(&filter) || filter.is_empty() {
        delivery_admission(&rt);
    }
}
