//! One provider, three forms: the full-path invoke of the `echo` behaviour as a WASM component,
//! as a native crate in the host (`greentic-native-echo`) and as a gRPC sidecar (the same crate
//! served by examples/sidecar-rust on loopback on a runtime of its own, as a sidecar process
//! next to the host would be), through the same `Runtime::invoke`. Each call reads the tenant's
//! config (`/label`) and makes a span and a log line: imports for the component, the host's
//! functions called in-process for the native crate, callbacks over the host's callback
//! service for the sidecar. Interleaved single calls; p50/p99/p999 and the ratios to the
//! component are printed.

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
            .add_service(
                greentic_sidecar_rust::service("echo").expect("the sidecar links the echo crate"),
            )
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let wasm_toml = std::fs::read_to_string(wasm_bundle.path().join("greentic.toml")).unwrap();
    let as_form = |form: &str| {
        wasm_toml.replace(
            &format!(
                "source = \"{}\"\nallow_unsigned = true",
                common::component("echo").display()
            ),
            form,
        )
    };
    let native_bundle = tempfile::tempdir().unwrap();
    let remote_bundle = tempfile::tempdir().unwrap();
    assert!(greentic_host::native_providers().contains(&"echo"));
    for (dir, text) in [
        (
            native_bundle.path(),
            as_form("form = \"native\"\nsource = \"native:echo\""),
        ),
        (
            remote_bundle.path(),
            as_form(&format!(
                "form = \"remote\"\nsource = \"grpc://127.0.0.1:{port}\"\nallow_plaintext = true"
            )),
        ),
        (wasm_bundle.path(), wasm_toml.clone()),
    ] {
        let text = text.replace("[tenants.acme]\n", &format!("[tenants.acme]\n{label}\n"));
        std::fs::write(dir.join("greentic.toml"), text).unwrap();
        std::fs::write(dir.join("jwt.secret"), "bench-secret-0123456789abcdef0123").unwrap();
    }
    let wasm = runtime(wasm_bundle.path());
    let native = runtime(native_bundle.path());
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
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..(n + n / 10) {
        for k in 0..3 {
            let path = (round + k) % 3;
            let t = match path {
                0 => common::time(|| rt.block_on(call(&wasm))),
                1 => common::time(|| rt.block_on(call(&native))),
                _ => common::time(|| rt.block_on(call(&remote))),
            };
            if round >= n / 10 {
                times[path].push(t);
            }
        }
    }
    let [w, nat, r] = times.map(common::quantiles);
    println!(
        "\nforms: the echo behaviour through the full invoke path, {n} single calls each, interleaved (µs)"
    );
    println!("{:<22} {:>10} {:>10} {:>10}", "form", "p50", "p99", "p999");
    for (name, q) in [("wasm-component", w), ("native", nat), ("grpc-sidecar", r)] {
        println!(
            "{name:<22} {:>10.2} {:>10.2} {:>10.2}",
            common::us(q.0),
            common::us(q.1),
            common::us(q.2)
        );
    }
    for (name, q) in [("native", nat), ("grpc-sidecar", r)] {
        println!(
            "{name} / wasm-component: p50 {:.2}x, p99 {:.2}x",
            q.0.as_secs_f64() / w.0.as_secs_f64(),
            q.1.as_secs_f64() / w.1.as_secs_f64()
        );
    }
}
