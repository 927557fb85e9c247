//! Attestations in an OCI layout and a registry: attached the way `cosign attest` does, read
//! back verified, and refused when moved to another artifact, signed by another key, or of
//! another predicate type.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use greentic_registry::testing::{Registry, component};
use greentic_registry::{
    ArtifactRef, OCI_MANIFEST_MEDIA_TYPE, RemoteOptions, Target, push_component,
};
use greentic_signing::{
    DSSE_MEDIA_TYPE, KeyPair, PREDICATE_ANNOTATION, TrustedKeys, attest, attestation_tag,
    verify_attestations,
};
use serde_json::{Value, json};

const TYPE: &str = "https://example.com/predicate/v1";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn manifest(rt: &tokio::runtime::Runtime, target: &Target, r: &ArtifactRef) -> (String, Vec<u8>) {
    let d = rt.block_on(target.resolve(r)).unwrap();
    let bytes = rt
        .block_on(target.fetch_manifest(&r.with_digest(&d), &d, &[OCI_MANIFEST_MEDIA_TYPE]))
        .unwrap();
    (d, bytes)
}

fn exercise(target: &Target, a: &ArtifactRef, b: &ArtifactRef) {
    let rt = rt();
    let pushed_a = rt
        .block_on(push_component(target, a, &component("echo")))
        .unwrap();
    let pushed_b = rt
        .block_on(push_component(target, b, &component("noop")))
        .unwrap();
    let key = KeyPair::generate();
    let stranger = KeyPair::generate();
    let trusted = TrustedKeys::from_pems(&[key.public_pem()]).unwrap();

    // None yet: an empty result, not an error.
    let none = rt
        .block_on(verify_attestations(target, a, &trusted, &[TYPE]))
        .unwrap();
    assert!(none.verified.is_empty() && none.refused.is_empty());

    let digest = rt
        .block_on(attest(target, a, &key, TYPE, json!({"n": 1})))
        .unwrap();
    assert_eq!(digest, pushed_a.digest);
    rt.block_on(attest(target, a, &stranger, TYPE, json!({"n": 2})))
        .unwrap();
    rt.block_on(attest(
        target,
        a,
        &key,
        "https://example.com/other",
        json!({"n": 3}),
    ))
    .unwrap();
    rt.block_on(attest(target, a, &key, TYPE, json!({"n": 4})))
        .unwrap();

    let found = rt
        .block_on(verify_attestations(target, a, &trusted, &[TYPE]))
        .unwrap();
    assert_eq!(found.digest, pushed_a.digest);
    let ns: Vec<&Value> = found
        .verified
        .iter()
        .map(|v| &v.statement.predicate["n"])
        .collect();
    assert_eq!(
        ns,
        [&json!(1), &json!(4)],
        "oldest first, only the trusted key's, only TYPE"
    );
    assert_eq!(found.latest().unwrap().statement.predicate["n"], 4);
    assert_eq!(found.latest().unwrap().key_id, key.key_id());
    assert_eq!(found.refused.len(), 1, "{:?}", found.refused);
    assert!(
        found.refused[0].contains("by a trusted key"),
        "{:?}",
        found.refused
    );

    // The layout cosign uses: the manifest tagged sha256-<hex>.att, DSSE layers annotated with
    // their predicate type.
    let att = a.with_tag(&attestation_tag(&pushed_a.digest));
    let (_, bytes) = manifest(&rt, target, &att);
    let m: Value = serde_json::from_slice(&bytes).unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4);
    assert!(layers.iter().all(|l| l["mediaType"] == DSSE_MEDIA_TYPE));
    assert_eq!(layers[0]["annotations"][PREDICATE_ANNOTATION], TYPE);

    // Copied to another artifact, the attestations still verify as signatures but are about
    // another digest: refused, naming both.
    let b_att = b.with_tag(&attestation_tag(&pushed_b.digest));
    for layer in layers {
        let d = layer["digest"].as_str().unwrap();
        let blob = rt
            .block_on(target.fetch_blob(&att, d, "envelope", 1 << 20))
            .unwrap();
        rt.block_on(target.put_blob(&b_att, d, &blob)).unwrap();
    }
    let config = m["config"]["digest"].as_str().unwrap();
    let blob = rt
        .block_on(target.fetch_blob(&att, config, "config", 1 << 20))
        .unwrap();
    rt.block_on(target.put_blob(&b_att, config, &blob)).unwrap();
    rt.block_on(target.put_manifest(&b_att, &bytes, OCI_MANIFEST_MEDIA_TYPE))
        .unwrap();
    let moved = rt
        .block_on(verify_attestations(target, b, &trusted, &[TYPE]))
        .unwrap();
    assert!(moved.verified.is_empty());
    assert!(
        moved.refused.iter().any(|r| r.contains(&format!(
            "it is about {}, not {}",
            pushed_a.digest, pushed_b.digest
        ))),
        "{:?}",
        moved.refused
    );
}

#[test]
fn attestations_in_an_oci_layout() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let a: ArtifactRef = format!("oci:{}:a", layout.display()).parse().unwrap();
    let b: ArtifactRef = format!("oci:{}:b", layout.display()).parse().unwrap();
    let target = Target::open(&a, &RemoteOptions::default()).unwrap();
    exercise(&target, &a, &b);
}

#[test]
fn attestations_in_a_registry() {
    let registry = Registry::start();
    let a = registry.reference("providers/echo:1.0.0");
    let b = registry.reference("providers/noop:1.0.0");
    let target = Target::open(&a, &RemoteOptions::default()).unwrap();
    exercise(&target, &a, &b);
}
