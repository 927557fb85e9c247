//! One provider, two forms: the full-path invoke of the `echo` behaviour as a WASM component
//! and as a gRPC sidecar (examples/sidecar-rust, served on loopback on a runtime of its own, as
//! a sidecar process next to the host would be), through the same `Runtime::invoke`. Each call
//! reads the tenant's config (`/label`): an import for the component, a callback over the
//! host's callback service for the sidecar. Interleaved single calls; p50/p99/p999 and the
//! sidecar/component ratios are printed. (The native form is not built yet.)

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::sync::Arc;

use greentic_host::loader::{LoadOptions, load_bundle};
use greentic_host::runtime::{Caller, Runtime};

fn runtime(bundle: &std::path::Path) -> Arc<Runtime> {
    let loaded = load_bundle(bundle, LoadOptions::default()).unwrap();
    Arc::new(Runtime::new(
        &loaded.bundle,
        loaded.engine,
        loaded.loaded.providers,
        loaded.backends,
    ))
}

async fn call(runtime: &Runtime) {
    let caller = Caller {
        tenant: "acme".into(),
        team: None,
        user: None,
    };
    let input = serde_json::json!({"to": "#ops", "text": "hello"});
    let out = runtime.invoke(&caller, "send", input, None).await.unwrap();
    black_box(out);
}

fn main() {
    let cache = tempfile::tempdir().unwrap();
    let label = "config.echo = { label = \"blue\" }";
    let wasm_bundle = common::bundle(&[("echo", "echo", "")], cache.path());
    // The sidecar: a real gRPC server on loopback, on its own thread.
    let sidecar = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = sidecar
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    sidecar.spawn(
        tonic::transport::Server::builder()
            .add_service(greentic_sidecar_echo::service())
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let remote_bundle = tempfile::tempdir().unwrap();
    let toml = std::fs::read_to_string(wasm_bundle.path().join("greentic.toml"))
        .unwrap()
        .replace(
            &format!(
                "source = \"{}\"\nallow_unsigned = true",
                common::component("echo").display()
            ),
            &format!(
                "form = \"remote\"\nsource = \"grpc://127.0.0.1:{port}\"\nallow_plaintext = true"
            ),
        );
    for (dir, text) in [
        (
            wasm_bundle.path(),
            std::fs::read_to_string(wasm_bundle.path().join("greentic.toml")).unwrap(),
        ),
        (remote_bundle.path(), toml),
    ] {
        let text = text.replace("[tenants.acme]\n", &format!("[tenants.acme]\n{label}\n"));
        std::fs::write(dir.join("greentic.toml"), text).unwrap();
        std::fs::write(dir.join("jwt.secret"), "bench-secret-0123456789abcdef0123").unwrap();
    }
    let wasm = runtime(wasm_bundle.path());
    let remote = runtime(remote_bundle.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let n: usize = std::env::var("FORMS_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let mut times = [Vec::new(), Vec::new()];
    for round in 0..(n + n / 10) {
        for k in 0..2 {
            let path = (round + k) % 2;
            let t = match path {
                0 => common::time(|| rt.block_on(call(&wasm))),
                _ => common::time(|| rt.block_on(call(&remote))),
            };
            if round >= n / 10 {
                times[path].push(t);
            }
        }
    }
    let [w, r] = times.map(common::quantiles);
    println!(
        "\nforms: the echo behaviour through the full invoke path, {n} single calls each, interleaved (µs)"
    );
    println!("{:<22} {:>10} {:>10} {:>10}", "form", "p50", "p99", "p999");
    for (name, q) in [("wasm-component", w), ("grpc-sidecar", r)] {
        println!(
            "{name:<22} {:>10.2} {:>10.2} {:>10.2}",
            common::us(q.0),
            common::us(q.1),
            common::us(q.2)
        );
    }
    println!(
        "grpc-sidecar / wasm-component: p50 {:.2}x, p99 {:.2}x",
        r.0.as_secs_f64() / w.0.as_secs_f64(),
        r.1.as_secs_f64() / w.1.as_secs_f64()
    );
}
