//! Against a real registry (Debian's `docker-registry`, distribution 2.8) started on loopback
//! by the tests, and `skopeo` as an independent client.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::io::{Read, Write};
use std::net::TcpListener;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use greentic_registry::testing::{Registry, component, free_port};
use greentic_registry::{
    ArtifactRef, BlobCache, OCI_MANIFEST_MEDIA_TYPE, RegistryError, RemoteOptions, Target,
    WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE, pull_component, pull_component_capped,
    push_component, sha256_digest,
};
use serde_json::json;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn push_then_pull_is_byte_identical_and_describes_the_component() {
    let registry = Registry::start();
    let echo = component("echo");
    let r = registry.reference("providers/echo:1.0.0");
    let rt = rt();
    let target = Target::open(&r, &RemoteOptions::default()).unwrap();
    let pushed = rt.block_on(push_component(&target, &r, &echo)).unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::new(cache_dir.path().to_path_buf());
    let pulled = rt
        .block_on(pull_component(&target, &r, Some(&cache)))
        .unwrap();
    assert_eq!(pulled.component, echo);
    assert_eq!(pulled.component_digest, sha256_digest(&echo));
    assert_eq!(pulled.manifest_digest, pushed.digest);
    assert_eq!(pulled.manifest["mediaType"], OCI_MANIFEST_MEDIA_TYPE);
    assert_eq!(
        pulled.manifest["config"]["mediaType"],
        WASM_CONFIG_MEDIA_TYPE
    );
    assert_eq!(
        pulled.manifest["layers"][0]["mediaType"],
        WASM_LAYER_MEDIA_TYPE
    );
    assert_eq!(
        pulled.manifest["annotations"]["org.opencontainers.image.title"],
        "test-echo"
    );
    assert_eq!(
        pulled.manifest["annotations"]["org.opencontainers.image.version"],
        "1.0.0"
    );
    assert_eq!(pulled.config["architecture"], "wasm");
    assert_eq!(pulled.config["os"], "wasip2");
    assert_eq!(pulled.config["layerDigests"][0], pulled.component_digest);
    let exports = pulled.config["component"]["exports"].as_array().unwrap();
    assert!(
        exports
            .iter()
            .any(|e| e == "greentic:messaging/outbound@1.0.0"),
        "{exports:?}"
    );
    assert_eq!(
        pulled.config["component"]["target"],
        "greentic:messaging/provider@1.0.x"
    );
    assert_eq!(cache.len(), 3, "manifest, config and layer are cached");

    // With everything cached, a pull by digest needs no registry at all.
    let mut registry = registry;
    registry.stop();
    let pinned: ArtifactRef = pushed.reference.parse().unwrap();
    let again = rt
        .block_on(pull_component(&target, &pinned, Some(&cache)))
        .unwrap();
    assert_eq!(again.component, echo);
}

#[test]
fn skopeo_reads_what_we_push_and_we_read_what_skopeo_copies() {
    let registry = Registry::start();
    let echo = component("echo");
    let rt = rt();
    let r = registry.reference("providers/echo:1.0.0");
    let target = Target::open(&r, &RemoteOptions::default()).unwrap();
    let pushed = rt.block_on(push_component(&target, &r, &echo)).unwrap();

    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/providers/echo:1.0.0", registry.addr),
    ]);
    assert_eq!(
        sha256_digest(raw.as_bytes()),
        pushed.digest,
        "skopeo sees the exact manifest we pushed"
    );

    // Registry -> OCI layout with skopeo; we pull from the layout.
    let layout = tempfile::tempdir().unwrap();
    let dir = layout.path().join("copy");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/providers/echo:1.0.0", registry.addr),
        &format!("oci:{}:v1", dir.display()),
    ]);
    let from_layout: ArtifactRef = format!("oci:{}:v1", dir.display()).parse().unwrap();
    let lt = Target::open(&from_layout, &RemoteOptions::default()).unwrap();
    let pulled = rt
        .block_on(pull_component(&lt, &from_layout, None))
        .unwrap();
    assert_eq!(pulled.component, echo);
    assert_eq!(pulled.manifest_digest, pushed.digest);

    // We write an OCI layout; skopeo copies it into the registry; we pull it from there.
    let ours: ArtifactRef = format!("oci:{}:v2", layout.path().join("ours").display())
        .parse()
        .unwrap();
    let ot = Target::open(&ours, &RemoteOptions::default()).unwrap();
    let github = component("webhook_github");
    rt.block_on(push_component(&ot, &ours, &github)).unwrap();
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v2", layout.path().join("ours").display()),
        &format!("docker://{}/providers/github:2.0.0", registry.addr),
    ]);
    let r2 = registry.reference("providers/github:2.0.0");
    let pulled = rt.block_on(pull_component(&target, &r2, None)).unwrap();
    assert_eq!(pulled.component, github);
}

#[test]
fn a_tampered_blob_is_refused_and_nothing_is_cached() {
    let registry = Registry::start();
    let echo = component("echo");
    let rt = rt();
    let r = registry.reference("providers/echo:1.0.0");
    let target = Target::open(&r, &RemoteOptions::default()).unwrap();
    rt.block_on(push_component(&target, &r, &echo)).unwrap();
    // Flip one byte of the component layer in the registry's own storage.
    let data = registry.blob_data(&sha256_digest(&echo));
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[1000] ^= 0x01;
    std::fs::write(&data, bytes).unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::new(cache_dir.path().to_path_buf());
    let e = rt
        .block_on(pull_component(&target, &r, Some(&cache)))
        .unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");
    assert!(e.to_string().contains("component layer"), "{e}");
    assert!(cache.is_empty(), "nothing may be cached from a failed pull");
}

#[test]
fn artifacts_that_are_not_one_component_are_refused() {
    let registry = Registry::start();
    let rt = rt();
    let target = Target::open(&registry.reference("x/y:z"), &RemoteOptions::default()).unwrap();
    let echo = component("echo");
    let core = b"\0asm\x01\0\0\0".to_vec();
    let config = br#"{"architecture":"wasm","os":"wasip2"}"#.to_vec();
    let push = |tag: &str, layers: Vec<(&str, Vec<u8>)>| {
        let r = registry.reference(&format!("bad/artifact:{tag}"));
        rt.block_on(target.put_blob(&r, &sha256_digest(&config), &config))
            .unwrap();
        let mut descs = Vec::new();
        for (media, bytes) in &layers {
            rt.block_on(target.put_blob(&r, &sha256_digest(bytes), bytes))
                .unwrap();
            descs.push(
                json!({"mediaType": media, "digest": sha256_digest(bytes), "size": bytes.len()}),
            );
        }
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": WASM_CONFIG_MEDIA_TYPE, "digest": sha256_digest(&config), "size": config.len()},
            "layers": descs,
        }))
        .unwrap();
        rt.block_on(target.put_manifest(&r, &manifest, OCI_MANIFEST_MEDIA_TYPE))
            .unwrap();
        rt.block_on(pull_component(&target, &r, None))
            .unwrap_err()
            .to_string()
    };
    let two = push(
        "two",
        vec![
            (WASM_LAYER_MEDIA_TYPE, echo.clone()),
            (WASM_LAYER_MEDIA_TYPE, component("panicker")),
        ],
    );
    assert!(two.contains("2 wasm layers"), "{two}");
    let odd = push(
        "odd",
        vec![("application/vnd.oci.image.layer.v1.tar", echo.clone())],
    );
    assert!(odd.contains("unknown layer media type"), "{odd}");
    let core_module = push("core", vec![(WASM_LAYER_MEDIA_TYPE, core)]);
    assert!(
        core_module.contains("not a WebAssembly component"),
        "{core_module}"
    );
}

#[test]
fn size_caps_hold_while_streaming_and_nothing_oversized_is_cached() {
    let registry = Registry::start();
    let rt = rt();
    let echo = component("echo");
    let r = registry.reference("providers/echo:1.0.0");
    let target = Target::open(&r, &RemoteOptions::default()).unwrap();
    rt.block_on(push_component(&target, &r, &echo)).unwrap();
    let layer = sha256_digest(&echo);

    // The descriptor states more than the cap: refused before the layer is fetched, through
    // the write-through cache the host uses, which keeps nothing of the layer.
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::new(cache_dir.path().to_path_buf());
    let cached = Target::open(&r, &RemoteOptions::default())
        .unwrap()
        .cached(cache.clone());
    let cap = echo.len() as u64 - 1;
    let e = rt
        .block_on(pull_component_capped(&cached, &r, Some(&cache), cap))
        .unwrap_err();
    assert!(
        matches!(&e, RegistryError::TooLarge { limit, stated: Some(s), .. } if *limit == cap && *s == echo.len() as u64),
        "{e}"
    );
    assert!(e.to_string().contains("nothing was kept"), "{e}");
    assert!(
        cache.get(&layer).is_none(),
        "the oversized layer was cached"
    );

    // A manifest that understates its layer: the transfer is stopped at the cap as it
    // streams in, not read whole and refused after.
    let config = br#"{"architecture":"wasm","os":"wasip2"}"#.to_vec();
    let liar = registry.reference("providers/liar:1.0.0");
    rt.block_on(target.put_blob(&liar, &sha256_digest(&config), &config))
        .unwrap();
    rt.block_on(target.put_blob(&liar, &layer, &echo)).unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": WASM_CONFIG_MEDIA_TYPE, "digest": sha256_digest(&config), "size": config.len()},
        "layers": [{"mediaType": WASM_LAYER_MEDIA_TYPE, "digest": layer, "size": 100}],
    }))
    .unwrap();
    let pushed = rt.block_on(target.put_manifest(&liar, &manifest, OCI_MANIFEST_MEDIA_TYPE));
    if pushed.is_ok() {
        let e = rt
            .block_on(pull_component_capped(&cached, &liar, Some(&cache), 4096))
            .unwrap_err();
        assert!(
            matches!(
                &e,
                RegistryError::TooLarge {
                    limit: 4096,
                    stated: None,
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            cache.get(&layer).is_none(),
            "the oversized layer was cached"
        );
    } else {
        // The registry checks descriptors against what it stores; the stream cap is then
        // shown on an OCI layout, which we can make lie.
        let dir = tempfile::tempdir().unwrap();
        let layout: ArtifactRef = format!("oci:{}:liar", dir.path().display())
            .parse()
            .unwrap();
        let lt = Target::open(&layout, &RemoteOptions::default()).unwrap();
        rt.block_on(lt.put_blob(&layout, &sha256_digest(&config), &config))
            .unwrap();
        rt.block_on(lt.put_blob(&layout, &layer, &echo)).unwrap();
        rt.block_on(lt.put_manifest(&layout, &manifest, OCI_MANIFEST_MEDIA_TYPE))
            .unwrap();
        let e = rt
            .block_on(pull_component_capped(&lt, &layout, None, 4096))
            .unwrap_err();
        assert!(
            matches!(&e, RegistryError::TooLarge { limit: 4096, .. }),
            "{e}"
        );
    }

    // Under the cap, the same pull succeeds.
    let ok = rt
        .block_on(pull_component_capped(
            &cached,
            &r,
            Some(&cache),
            echo.len() as u64,
        ))
        .unwrap();
    assert_eq!(ok.component, echo);
}

#[test]
fn a_registry_that_is_down_or_failing_gives_a_clear_error_after_bounded_retries() {
    let rt = rt();
    // Down: nothing listens.
    let port = free_port();
    let r: ArtifactRef = format!("127.0.0.1:{port}/providers/echo:1.0.0")
        .parse()
        .unwrap();
    let target = Target::open(&r, &RemoteOptions::default()).unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::new(cache_dir.path().to_path_buf());
    let started = Instant::now();
    let e = rt
        .block_on(pull_component(&target, &r, Some(&cache)))
        .unwrap_err();
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(e.to_string().contains("after 4 attempts"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(cache.is_empty());

    // Failing: every request answers 500.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            if buf.starts_with(b"GET /v2/ ") {
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                );
                continue;
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    let r: ArtifactRef = format!("{addr}/providers/echo:1.0.0").parse().unwrap();
    let target = Target::open(&r, &RemoteOptions::default()).unwrap();
    let e = rt
        .block_on(pull_component(&target, &r, Some(&cache)))
        .unwrap_err();
    assert!(e.to_string().contains("after 4 attempts"), "{e}");
    // 4 attempts; the client resolves a tag with HEAD and falls back to GET, so 2 requests each.
    let hits = hits.load(Ordering::SeqCst);
    assert!(
        (4..=8).contains(&hits),
        "retries must be bounded: {hits} requests"
    );
    assert!(cache.is_empty());
}

fn sh(dir: &std::path::Path, cmd: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn basic_auth_and_tls_with_a_ca_the_test_creates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A CA (keyCertSign) and a server certificate for 127.0.0.1 with a SAN, as Go clients need.
    sh(
        d,
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=greentic-test-ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
    );
    sh(
        d,
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1",
    );
    sh(
        d,
        "printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ext && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext",
    );
    sh(d, "htpasswd -Bbn alice s3cret-pass > htpasswd");
    let registry = Registry::start_with(&format!(
        "  tls:\n    certificate: {0}/server.crt\n    key: {0}/server.key\nauth:\n  htpasswd:\n    realm: greentic-test\n    path: {0}/htpasswd\n",
        d.display()
    ));
    let ca = std::fs::read(d.join("ca.crt")).unwrap();
    let options = |user: &str, pass: &str, ca: Option<&Vec<u8>>| RemoteOptions {
        username: Some(user.into()),
        password: Some(pass.into()),
        ca_certificates: ca.into_iter().cloned().collect(),
        max_attempts: Some(1),
        ..RemoteOptions::default()
    };
    let rt = rt();
    let r = registry.reference("private/echo:1.0.0");
    let echo = component("echo");
    let target = Target::open(&r, &options("alice", "s3cret-pass", Some(&ca))).unwrap();
    rt.block_on(push_component(&target, &r, &echo)).unwrap();
    let pulled = rt.block_on(pull_component(&target, &r, None)).unwrap();
    assert_eq!(pulled.component, echo);

    // A wrong password is refused.
    let wrong = Target::open(&r, &options("alice", "nope", Some(&ca))).unwrap();
    let e = rt
        .block_on(pull_component(&wrong, &r, None))
        .unwrap_err()
        .to_string();
    assert!(
        e.to_lowercase().contains("auth") || e.contains("401"),
        "{e}"
    );

    // Without the CA, the server's certificate is not trusted.
    let untrusted = Target::open(
        &r,
        &RemoteOptions {
            require_tls: true,
            ..options("alice", "s3cret-pass", None)
        },
    )
    .unwrap();
    let e = rt
        .block_on(pull_component(&untrusted, &r, None))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&registry.addr), "{e}");
}
