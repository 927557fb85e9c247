//! What verifying a caller's token costs on every invoke: `Authenticator::verify_header` (the
//! signature, `iss`/`aud`/`exp`/`nbf`, then the claims read one by one so a wrong one is refused
//! in words), against the baseline of `jsonwebtoken::decode` of the same token into fixed types
//! with the same validation — measured in the same run.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::Criterion;
use greentic_host::auth::{Authenticator, Claims};
use greentic_host::bundle::Bundle;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn main() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let bundle = Bundle::from_text(
        dir.path().to_path_buf(),
        "greentic.toml",
        "[auth]\nalgorithm = \"HS256\"\nissuer = \"i\"\naudience = \"a\"\nsecret_file = \"secret\"\n",
    )
    .unwrap();
    let auth = Authenticator::from_bundle(&bundle).unwrap();
    let token = auth.mint("acme", Some("ops"), Some("ada"), 3600).unwrap();
    let header = format!("Bearer {token}");
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&["i"]);
    validation.set_audience(&["a"]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.validate_nbf = true;
    let key = DecodingKey::from_secret(SECRET.as_bytes());

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("token");
    group.bench_function("jsonwebtoken-decode-fixed-types", |b| {
        b.iter(|| {
            black_box(jsonwebtoken::decode::<Claims>(black_box(&token), &key, &validation).unwrap())
        })
    });
    group.bench_function("verify_header", |b| {
        b.iter(|| black_box(auth.verify_header(Some(black_box(&header))).unwrap()))
    });
    group.finish();
    c.final_summary();
}
