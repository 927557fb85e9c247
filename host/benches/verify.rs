//! Verification of a 10 MB component as the host does it — resolve the tag once, verify the
//! cosign signature against the trusted key, then fetch manifest, config and component by
//! digest and check every byte — from an OCI layout on disk, against the baseline of hashing the
//! same 10 MB in memory with SHA-256.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;

use criterion::Criterion;
use greentic_registry::{ArtifactRef, RemoteOptions, Target, pull_component, push_component};
use greentic_signing::{KeyPair, TrustedKeys};
use sha2::{Digest, Sha256};

/// The `noop` component grown to `size` bytes with a custom section (still a valid component).
fn big_component(size: usize) -> Vec<u8> {
    let mut wasm = std::fs::read(common::component("noop")).unwrap();
    let padding = size.saturating_sub(wasm.len() + 32);
    let data: Vec<u8> = (0..padding).map(|i| (i * 31 % 251) as u8).collect();
    greentic_interfaces::synth::append_custom_section(&mut wasm, "bench-padding", &data);
    wasm
}

fn main() {
    let wasm = big_component(10 << 20);
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(&wasm)
        .expect("the padded component is valid");
    let dir = tempfile::tempdir().unwrap();
    let reference: ArtifactRef = format!("oci:{}:v1", dir.path().join("layout").display())
        .parse()
        .unwrap();
    let target = Target::open(&reference, &RemoteOptions::default()).unwrap();
    let key = KeyPair::generate();
    let trusted = TrustedKeys::from_pems(&[key.public_pem()]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        push_component(&target, &reference, &wasm).await.unwrap();
        greentic_signing::sign(&target, &reference, &key)
            .await
            .unwrap();
    });

    let verify = || async {
        let verified = greentic_signing::verify(&target, &reference, &trusted, None)
            .await
            .unwrap();
        let pinned = reference.with_digest(&verified.digest);
        let pulled = pull_component(&target, &pinned, None).await.unwrap();
        assert_eq!(pulled.component.len(), wasm.len());
        black_box(pulled);
    };

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("verify-10MB");
    group.sample_size(20);
    group.bench_function("sha256", |b| b.iter(|| black_box(Sha256::digest(&wasm))));
    group.bench_function("signature+digest-fetch", |b| b.to_async(&rt).iter(verify));
    group.finish();
    c.final_summary();

    let base = common::median(21, || {
        black_box(Sha256::digest(&wasm));
    });
    let full = common::median(21, || rt.block_on(verify()));
    println!(
        "\nverify 10 MB: sha256 {:.2} ms, signature + digest-checked fetch {:.2} ms, ratio {:.2}x",
        base.as_secs_f64() * 1e3,
        full.as_secs_f64() * 1e3,
        full.as_secs_f64() / base.as_secs_f64()
    );
}
