//! What the audit log costs a call: a provider that reads one secret per call (so one
//! `secret.read` record each), through the host's full path, with no audit log and with one
//! (a file, checkpoints every 256 records), in alternating blocks so drift hits both alike.
//! Prints p50/p99 of single calls for each and their ratio, and how many records per second
//! the writer kept up with.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use greentic_host::audit::AuditLog;
use greentic_host::loader::{LoadOptions, load_bundle};
use greentic_host::runtime::{Caller, Runtime};

const BLOCK: usize = 2_000;
const ROUNDS: usize = 8;

fn setup(cache: &std::path::Path) -> (tempfile::TempDir, Arc<Runtime>) {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[host]\ncache_dir = \"{}\"\n\n[auth]\nalgorithm = \"HS256\"\nissuer = \"bench\"\naudience = \"greentic-host\"\nsecret_file = \"jwt.secret\"\n\n[tenants.acme]\nsecrets = [\"DECLARED_TOKEN\"]\nlimits = {{ max_concurrent = 64 }}\n\n[providers.snoop]\nsource = \"{}\"\nallow_unsigned = true\ngrants.secrets = [\"DECLARED_TOKEN\"]\n\n[[routes]]\ntenant = \"*\"\ncapability = \"send\"\nprovider = \"snoop\"\n",
        cache.display(),
        common::component("undeclared_secret").display()
    );
    std::fs::write(dir.path().join("greentic.toml"), toml).unwrap();
    std::fs::write(
        dir.path().join("jwt.secret"),
        "bench-secret-0123456789abcdef0123",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("secrets/acme")).unwrap();
    std::fs::write(dir.path().join("secrets/acme/DECLARED_TOKEN"), "token").unwrap();
    let loaded = load_bundle(dir.path(), LoadOptions::default()).unwrap();
    let runtime = Arc::new(Runtime::new(
        &loaded.bundle,
        Arc::new(loaded.engine),
        loaded.loaded.providers,
        loaded.backends,
    ));
    (dir, runtime)
}

fn main() {
    let cache = tempfile::tempdir().unwrap();
    let (bundle, runtime) = setup(cache.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let caller = Caller {
        tenant: "acme".into(),
        team: None,
        user: None,
    };
    let call = || {
        let input = serde_json::json!({"to": "#ops", "text": "DECLARED_TOKEN"});
        common::time(|| {
            let out = rt
                .block_on(runtime.invoke(&caller, "send", input, None))
                .unwrap();
            black_box(out);
        })
    };
    for _ in 0..BLOCK {
        call();
    }
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let (mut on_time, mut written) = (Duration::ZERO, 0u64);
    for round in 0..ROUNDS {
        // Alternate which goes first.
        for audited in [round % 2 == 0, round % 2 == 1] {
            if audited {
                let log = bundle.path().join(format!("audit-{round}.log"));
                let started = Instant::now();
                let audit = open_log(&log);
                for _ in 0..BLOCK {
                    on.push(call());
                }
                drop(audit); // waits until every record is written
                on_time += started.elapsed();
                written += line_count(&log);
            } else {
                for _ in 0..BLOCK {
                    off.push(call());
                }
            }
        }
    }
    let (off50, off99, _) = common::quantiles(off);
    let (on50, on99, _) = common::quantiles(on);
    println!(
        "\naudit: a call that reads one secret, {} calls each, interleaved",
        BLOCK * ROUNDS
    );
    println!(
        "  no audit log    p50 {:8.1} µs  p99 {:8.1} µs",
        common::us(off50),
        common::us(off99)
    );
    println!(
        "  audit log       p50 {:8.1} µs  p99 {:8.1} µs",
        common::us(on50),
        common::us(on99)
    );
    println!(
        "  ratio           p50 {:8.3}x     p99 {:8.3}x",
        on50.as_secs_f64() / off50.as_secs_f64(),
        on99.as_secs_f64() / off99.as_secs_f64()
    );
    println!(
        "  written         {written} records in {:.2} s of audited calls ({:.0} records/s, every one on disk when the log stopped)",
        on_time.as_secs_f64(),
        written as f64 / on_time.as_secs_f64()
    );
    assert!(written as usize >= BLOCK * ROUNDS, "a record was lost");

    // The writer alone: records handed over as fast as a thread can, then waited for.
    let flood = 200_000u64;
    let log = bundle.path().join("audit-flood.log");
    let audit = open_log(&log);
    let started = Instant::now();
    for i in 0..flood {
        greentic_host::audit::record(
            "secret.read",
            serde_json::json!({"tenant": "acme", "provider": "snoop", "name": "DECLARED_TOKEN", "result": if i % 2 == 0 { "ok" } else { "denied" }}),
        );
    }
    let handed = started.elapsed();
    drop(audit);
    let total = started.elapsed();
    let flooded = line_count(&log);
    println!(
        "  writer alone    {flooded} records: handed over in {:.0} ms ({:.2} µs each), all on disk after {:.0} ms ({:.0} records/s, a signed checkpoint every 256)",
        handed.as_secs_f64() * 1e3,
        handed.as_secs_f64() * 1e6 / flood as f64,
        total.as_secs_f64() * 1e3,
        flooded as f64 / total.as_secs_f64()
    );
    assert!(flooded >= flood, "a record was lost");
}

/// A new audit log at `path`, a file of its own (so each block's count is its own, and no
/// reopening verifies what came before).
fn open_log(path: &std::path::Path) -> AuditLog {
    AuditLog::with_key(
        path,
        greentic_signing::KeyPair::generate(),
        "bench",
        256,
        Duration::from_secs(30),
        None,
    )
    .unwrap()
}

fn line_count(path: &std::path::Path) -> u64 {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64)
        .unwrap_or(0)
}
