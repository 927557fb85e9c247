//! Signing and verification against a real registry on loopback, and in an OCI layout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use greentic_registry::testing::{Registry, component};
use greentic_registry::{
    ArtifactRef, OCI_MANIFEST_MEDIA_TYPE, RemoteOptions, Target, push_component,
};
use greentic_signing::{
    KeyPair, SIGNATURE_ANNOTATION, SignError, TrustedKeys, sign, signature_tag, verify,
};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn sign_then_verify_and_every_forgery_fails() {
    let registry = Registry::start();
    let rt = rt();
    let echo_ref = registry.reference("providers/echo:1.0.0");
    let target = Target::open(&echo_ref, &RemoteOptions::default()).unwrap();
    let echo = rt
        .block_on(push_component(&target, &echo_ref, &component("echo")))
        .unwrap();
    let key = KeyPair::generate();
    let trusted = TrustedKeys::from_pems(&[key.public_pem()]).unwrap();

    // Unsigned.
    let e = rt
        .block_on(verify(&target, &echo_ref, &trusted, None))
        .unwrap_err();
    assert!(matches!(e, SignError::Unsigned { .. }), "{e}");

    // Signed: verifies, and names the digest to fetch.
    rt.block_on(sign(&target, &echo_ref, &key)).unwrap();
    let v = rt
        .block_on(verify(
            &target,
            &echo_ref,
            &trusted,
            Some(&[echo_ref.repository().as_str()]),
        ))
        .unwrap();
    assert_eq!(v.digest, echo.digest);
    assert_eq!(v.payload.critical.image.docker_manifest_digest, echo.digest);
    assert_eq!(v.payload.critical.kind, "cosign container image signature");

    // The wrong key.
    let stranger = TrustedKeys::from_pems(&[KeyPair::generate().public_pem()]).unwrap();
    let e = rt
        .block_on(verify(&target, &echo_ref, &stranger, None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not signed by a trusted key"), "{e}");

    // The wrong repository identity, when one is expected.
    let e = rt
        .block_on(verify(
            &target,
            &echo_ref,
            &trusted,
            Some(&["elsewhere/echo"]),
        ))
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected elsewhere/echo"), "{e}");

    // A second signer appends; both verify.
    let second = KeyPair::generate();
    rt.block_on(sign(&target, &echo_ref, &second)).unwrap();
    for k in [&key, &second] {
        let t = TrustedKeys::from_pems(&[k.public_pem()]).unwrap();
        rt.block_on(verify(&target, &echo_ref, &t, None)).unwrap();
    }

    // A signature manifest copied from another artifact's .sig tag does not verify this one.
    let panic_ref = registry.reference("providers/panicker:1.0.0");
    let panicker = rt
        .block_on(push_component(&target, &panic_ref, &component("panicker")))
        .unwrap();
    let sig_manifest = rt
        .block_on(
            target.fetch_manifest(
                &echo_ref.with_tag(&signature_tag(&echo.digest)),
                &rt.block_on(target.resolve(&echo_ref.with_tag(&signature_tag(&echo.digest))))
                    .unwrap(),
                &[OCI_MANIFEST_MEDIA_TYPE],
            ),
        )
        .unwrap();
    let copied = panic_ref.with_tag(&signature_tag(&panicker.digest));
    let manifest: serde_json::Value = serde_json::from_slice(&sig_manifest).unwrap();
    // Copy the blobs across repositories, then the manifest.
    for layer in manifest["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        let blob = rt
            .block_on(target.fetch_blob(&echo_ref, d, "payload", 1 << 20))
            .unwrap();
        rt.block_on(target.put_blob(&copied, d, &blob)).unwrap();
    }
    let cd = manifest["config"]["digest"].as_str().unwrap();
    let config = rt
        .block_on(target.fetch_blob(&echo_ref, cd, "config", 1 << 20))
        .unwrap();
    rt.block_on(target.put_blob(&copied, cd, &config)).unwrap();
    rt.block_on(target.put_manifest(&copied, &sig_manifest, OCI_MANIFEST_MEDIA_TYPE))
        .unwrap();
    let e = rt
        .block_on(verify(&target, &panic_ref, &trusted, None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("copied from another artifact"), "{e}");

    // A tampered payload blob in the registry's storage is refused.
    let payload_digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let data = registry.blob_data(&payload_digest);
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    std::fs::write(&data, bytes).unwrap();
    let only_first = TrustedKeys::from_pems(&[key.public_pem()]).unwrap();
    let e = rt
        .block_on(verify(&target, &echo_ref, &only_first, None))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("does not match its digest") || e.contains("digest"),
        "{e}"
    );
}

#[test]
fn signatures_work_inside_an_oci_layout_too() {
    let dir = tempfile::tempdir().unwrap();
    let r: ArtifactRef = format!("oci:{}:v1", dir.path().join("layout").display())
        .parse()
        .unwrap();
    let rt = rt();
    let target = Target::open(&r, &RemoteOptions::default()).unwrap();
    let pushed = rt
        .block_on(push_component(&target, &r, &component("echo")))
        .unwrap();
    let key = KeyPair::generate();
    rt.block_on(sign(&target, &r, &key)).unwrap();
    let index = std::fs::read_to_string(dir.path().join("layout/index.json")).unwrap();
    assert!(index.contains(&signature_tag(&pushed.digest)), "{index}");
    let trusted = TrustedKeys::from_pems(&[key.public_pem()]).unwrap();
    assert_eq!(
        rt.block_on(verify(&target, &r, &trusted, None))
            .unwrap()
            .digest,
        pushed.digest
    );
    // The layer carries the signature annotation the way cosign writes it.
    let sig = r.with_tag(&signature_tag(&pushed.digest));
    let d = rt.block_on(target.resolve(&sig)).unwrap();
    let m: serde_json::Value = serde_json::from_slice(
        &rt.block_on(target.fetch_manifest(&sig, &d, &[OCI_MANIFEST_MEDIA_TYPE]))
            .unwrap(),
    )
    .unwrap();
    assert!(m["layers"][0]["annotations"][SIGNATURE_ANNOTATION].is_string());
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
}

#[test]
fn skopeo_mirrors_our_signatures_as_sigstore_attachments() {
    // containers/image reads cosign's `.sig` scheme when use-sigstore-attachments is on; if our
    // signature manifest were not in cosign's format, skopeo would not carry it across.
    let a = Registry::start();
    let b = Registry::start();
    let rt = rt();
    let src = a.reference("providers/echo:1.0.0");
    let target_a = Target::open(&src, &RemoteOptions::default()).unwrap();
    rt.block_on(push_component(&target_a, &src, &component("echo")))
        .unwrap();
    let key = KeyPair::generate();
    rt.block_on(sign(&target_a, &src, &key)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.yaml"),
        "default-docker:\n  use-sigstore-attachments: true\n",
    )
    .unwrap();
    let out = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--registries.d",
        ])
        .arg(dir.path())
        .arg(format!("docker://{}/providers/echo:1.0.0", a.addr))
        .arg(format!("docker://{}/mirror/echo:1.0.0", b.addr))
        .output()
        .expect("skopeo is installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dst = b.reference("mirror/echo:1.0.0");
    let target_b = Target::open(&dst, &RemoteOptions::default()).unwrap();
    let trusted = TrustedKeys::from_pems(&[key.public_pem()]).unwrap();
    let verified = rt
        .block_on(verify(&target_b, &dst, &trusted, None))
        .unwrap();
    // The identity is still the repository it was signed in.
    assert_eq!(
        verified.payload.critical.identity.docker_reference,
        src.repository()
    );
}

#[test]
fn oversized_payloads_and_too_many_layers_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let r: ArtifactRef = format!("oci:{}:v1", dir.path().join("layout").display())
        .parse()
        .unwrap();
    let rt = rt();
    let target = Target::open(&r, &RemoteOptions::default()).unwrap();
    let pushed = rt
        .block_on(push_component(&target, &r, &component("echo")))
        .unwrap();
    let sig = r.with_tag(&signature_tag(&pushed.digest));
    // Every layer points at a payload just over the cap, and there are more layers than are
    // read: no payload is read past the cap, and only the first layers are examined.
    let key = KeyPair::generate();
    let big = vec![b' '; (greentic_signing::MAX_SIGNATURE_PAYLOAD_BYTES + 1) as usize];
    let big_digest = greentic_registry::sha256_digest(&big);
    rt.block_on(target.put_blob(&sig, &big_digest, &big))
        .unwrap();
    let layer = |digest: &str, size: usize| {
        serde_json::json!({
            "mediaType": greentic_signing::SIMPLESIGNING_MEDIA_TYPE,
            "digest": digest,
            "size": size,
            "annotations": { SIGNATURE_ANNOTATION: "MEUCIQ==" },
        })
    };
    let mut layers = vec![layer(&big_digest, big.len())];
    for _ in 0..greentic_signing::MAX_SIGNATURE_LAYERS + 5 {
        layers.push(layer(&big_digest, big.len()));
    }
    let config = b"{}".to_vec();
    let config_digest = greentic_registry::sha256_digest(&config);
    rt.block_on(target.put_blob(&sig, &config_digest, &config))
        .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    rt.block_on(target.put_manifest(&sig, &manifest, OCI_MANIFEST_MEDIA_TYPE))
        .unwrap();
    let trusted = TrustedKeys::from_pems(&[key.public_pem()]).unwrap();
    let e = rt
        .block_on(verify(&target, &r, &trusted, None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("larger than 65536 bytes"), "{e}");
    assert!(
        e.contains(&format!(
            "has {} layers; only the first {} were examined",
            greentic_signing::MAX_SIGNATURE_LAYERS + 6,
            greentic_signing::MAX_SIGNATURE_LAYERS
        )),
        "{e}"
    );
    assert!(
        e.matches("layer ").count() <= greentic_signing::MAX_SIGNATURE_LAYERS + 1,
        "{e}"
    );
}
