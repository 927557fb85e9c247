//! `greentic-host push` / `pull` through a local OCI image layout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;
use crate::common::built;

use common::{component, run_host, text};

#[test]
fn push_and_pull_through_an_oci_layout() {
    let dir = tempfile::tempdir().unwrap();
    let layout = format!("oci:{}:1.0.0", dir.path().join("layout").display());
    let echo = component("wasip2", built::ECHO);
    let out = run_host(&["push", echo.to_str().unwrap(), &layout]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.trim().contains("@sha256:"), "{stdout}");
    assert!(dir.path().join("layout/oci-layout").is_file());
    assert!(dir.path().join("layout/index.json").is_file());

    let pulled = dir.path().join("pulled.wasm");
    let out = run_host(&["pull", &layout, "-o", pulled.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(
        std::fs::read(&pulled).unwrap(),
        std::fs::read(&echo).unwrap()
    );

    // A bad reference is refused with the accepted forms.
    let out = run_host(&["pull", "echo:latest"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("HOST[:PORT]/REPO:TAG"),
        "{}",
        text(&out).1
    );
}

#[test]
fn bundles_run_only_signed_providers_from_an_oci_layout() {
    let b = common::TestBundle::new(
        "[trust.keys]\ndev = \"cosign.pub\"\n\n[providers.echo]\nsource = \"oci:layout:v1\"\n\n[tenants.acme]\n\n[[routes]]\ntenant = \"acme\"\ncapability = \"send\"\nprovider = \"echo\"\n",
        &[],
    );
    let dir = b.path();
    let layout = format!("oci:{}:v1", dir.join("layout").display());
    assert!(run_in(dir, &["keygen"]).status.success());
    assert!(
        run_in(dir, &["keygen", "--output-key-prefix", "stranger"])
            .status
            .success()
    );
    let push = |name: built::Component| {
        let out = run_in(
            dir,
            &["push", component("wasip2", name).to_str().unwrap(), &layout],
        );
        assert!(out.status.success(), "{}", text(&out).1);
    };
    let check = || {
        let out = run_host(&["check", dir.to_str().unwrap()]);
        (out.status.success(), text(&out).1)
    };

    push(built::ECHO);
    let (ok, stderr) = check();
    assert!(!ok, "an unsigned provider must be refused");
    assert!(
        stderr.contains("provider `echo`: signature check failed")
            && stderr.contains("is not signed"),
        "{stderr}"
    );

    assert!(
        run_in(dir, &["sign", "--key", "cosign.key", &layout])
            .status
            .success()
    );
    let (ok, stderr) = check();
    assert!(ok, "{stderr}");
    let host = common::Host::start(dir);
    let r = host.send(
        &b.token("acme", None),
        serde_json::json!({"to": "#a", "text": "signed"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "acme/-/-:#a:signed");
    drop(host);

    // Offline: with the source gone, the lock's digest and the cache (artifact and signature)
    // are enough; online, the same bundle fails.
    std::fs::rename(dir.join("layout"), dir.join("layout.away")).unwrap();
    let out = run_host(&["check", "--offline", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    // The same from inside the bundle directory, named `.`: the layout's path is relative then,
    // and must still find what was cached under its absolute one.
    let out = run_in(dir, &["check", "--offline", "."]);
    assert!(out.status.success(), "{}", text(&out).1);
    let (ok, stderr) = check();
    assert!(!ok, "without --offline the missing layout must fail");
    assert!(stderr.contains("provider `echo`"), "{stderr}");
    std::fs::rename(dir.join("layout.away"), dir.join("layout")).unwrap();

    // The tag moves to a component signed by a key the bundle does not trust.
    push(built::PANICKER);
    assert!(
        run_in(dir, &["sign", "--key", "stranger.key", &layout])
            .status
            .success()
    );
    let (ok, stderr) = check();
    assert!(!ok);
    assert!(stderr.contains("not signed by a trusted key"), "{stderr}");

    // Even validly signed, a tag that moved after locking is refused: the lock pins the digest.
    let lock = std::fs::read_to_string(dir.join("greentic.lock")).unwrap();
    assert!(lock.contains("manifest_digest"), "{lock}");
    assert!(
        run_in(dir, &["sign", "--key", "cosign.key", &layout])
            .status
            .success()
    );
    let (ok, stderr) = check();
    assert!(!ok);
    assert!(stderr.contains("(the tag moved)"), "{stderr}");
}

#[test]
fn a_file_source_must_be_explicitly_allowed_to_run_unsigned() {
    let b = common::TestBundle::new(
        "[providers.echo]\nsource = \"{components}/echo.wasm\"\n\n[tenants.acme]\n\n[[routes]]\ntenant = \"acme\"\ncapability = \"send\"\nprovider = \"echo\"\n",
        &[],
    );
    let out = run_host(&["check", b.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out).1;
    assert!(stderr.contains("cannot carry a signature"), "{stderr}");
    assert!(stderr.contains("allow_unsigned = true"), "{stderr}");
}

fn run_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::host_bin())
        .args(args)
        .current_dir(dir)
        .env("COSIGN_PASSWORD", "correct horse")
        .output()
        .unwrap()
}

#[test]
fn keygen_sign_and_verify_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let layout = format!("oci:{}:1.0.0", dir.path().join("layout").display());
    assert!(run_in(dir.path(), &["keygen"]).status.success());
    assert!(
        run_in(dir.path(), &["keygen", "--output-key-prefix", "other"])
            .status
            .success()
    );
    let key = std::fs::read_to_string(dir.path().join("cosign.key")).unwrap();
    assert!(
        key.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"),
        "{key}"
    );
    // keygen never overwrites a private key.
    assert!(!run_in(dir.path(), &["keygen"]).status.success());

    let echo = component("wasip2", built::ECHO);
    assert!(
        run_in(dir.path(), &["push", echo.to_str().unwrap(), &layout])
            .status
            .success()
    );
    let unsigned = run_in(dir.path(), &["verify", "--key", "cosign.pub", &layout]);
    assert_eq!(unsigned.status.code(), Some(1));
    assert!(
        text(&unsigned).1.contains("is not signed"),
        "{}",
        text(&unsigned).1
    );

    let out = run_in(dir.path(), &["sign", "--key", "cosign.key", &layout]);
    assert!(out.status.success(), "{}", text(&out).1);
    let out = run_in(dir.path(), &["verify", "--key", "cosign.pub", &layout]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("verified oci:"), "{stdout}");
    assert!(
        stdout.contains("cosign container image signature"),
        "{stdout}"
    );

    // inspect REF shows the artifact and the signatures found for it.
    let out = run_in(dir.path(), &["inspect", &layout]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["config"]["architecture"], "wasm");
    assert_eq!(
        report["annotations"]["org.opencontainers.image.title"],
        "test-echo"
    );
    assert_eq!(report["signatures"]["count"], 1);

    let wrong = run_in(dir.path(), &["verify", "--key", "other.pub", &layout]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        text(&wrong).1.contains("not signed by a trusted key"),
        "{}",
        text(&wrong).1
    );

    // A wrong password cannot sign.
    let out = std::process::Command::new(common::host_bin())
        .args(["sign", "--key", "cosign.key", &layout])
        .current_dir(dir.path())
        .env("COSIGN_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("wrong password"), "{}", text(&out).1);
}

#[test]
fn registry_credentials_come_from_a_docker_credential_helper() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = std::process::Command::new("htpasswd")
        .args(["-Bbn", "ci-user", "ci-pass"])
        .output()
        .unwrap();
    std::fs::write(d.join("htpasswd"), out.stdout).unwrap();
    let registry = greentic_registry::testing::Registry::start_with(&format!(
        "auth:\n  htpasswd:\n    realm: greentic-test\n    path: {}/htpasswd\n",
        d.display()
    ));
    // A credential helper, as `docker login` with credHelpers would use.
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-greentic-test");
    std::fs::write(&helper, "#!/bin/sh\nread registry\necho \"{\\\"ServerURL\\\":\\\"$registry\\\",\\\"Username\\\":\\\"ci-user\\\",\\\"Secret\\\":\\\"ci-pass\\\"}\"\n").unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&helper)
        .status()
        .unwrap();
    let config = d.join("docker");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.json"),
        serde_json::json!({"credHelpers": {registry.addr.clone(): "greentic-test"}}).to_string(),
    )
    .unwrap();
    let reference = format!("{}/private/echo:1.0.0", registry.addr);
    let echo = component("wasip2", built::ECHO);
    let push = |docker_config: &std::path::Path| {
        std::process::Command::new(common::host_bin())
            .args(["push", echo.to_str().unwrap(), &reference])
            .env("DOCKER_CONFIG", docker_config)
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .env_remove("GREENTIC_REGISTRY_USERNAME")
            .env_remove("GREENTIC_REGISTRY_PASSWORD")
            .output()
            .unwrap()
    };
    let without = push(&d.join("no-docker-config"));
    assert!(
        !without.status.success(),
        "pushing without credentials must fail"
    );
    let with = push(&config);
    assert!(with.status.success(), "{}", text(&with).1);
    assert!(text(&with).0.contains("@sha256:"), "{}", text(&with).0);
}

#[test]
fn a_signed_provider_from_a_real_registry_runs_and_a_moved_tag_is_refused() {
    let registry = greentic_registry::testing::Registry::start();
    let reference = format!("{}/providers/echo:1.0.0", registry.addr);
    let b = common::TestBundle::new(
        &format!(
            "[trust.keys]\nci = \"cosign.pub\"\n\n[providers.echo]\nsource = \"{reference}\"\ntrusted_keys = [\"ci\"]\n\n[tenants.acme]\n\n[[routes]]\ntenant = \"acme\"\ncapability = \"send\"\nprovider = \"echo\"\n"
        ),
        &[],
    );
    let dir = b.path();
    assert!(run_in(dir, &["keygen"]).status.success());
    let push = |name: built::Component| {
        let out = run_in(
            dir,
            &[
                "push",
                component("wasip2", name).to_str().unwrap(),
                &reference,
            ],
        );
        assert!(out.status.success(), "{}", text(&out).1);
    };
    push(built::ECHO);
    assert!(
        run_in(dir, &["sign", "--key", "cosign.key", &reference])
            .status
            .success()
    );
    let host = common::Host::start(dir);
    let r = host.send(
        &b.token("acme", None),
        serde_json::json!({"to": "#r", "text": "from a registry"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    drop(host);

    // Someone re-tags and signs another component: the lock's digest no longer matches.
    push(built::PANICKER);
    assert!(
        run_in(dir, &["sign", "--key", "cosign.key", &reference])
            .status
            .success()
    );
    let out = run_host(&["check", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("(the tag moved)"), "{}", text(&out).1);
}

/// Copies the directory tree `from` to `to`, leaving out the host's own `.greentic` (caches).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == ".greentic" {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

#[test]
pub(crate) fn a_bundle_and_its_layout_verify_wherever_they_are_copied_and_tags_stay_apart() {
    let b = common::TestBundle::new(
        "[trust.keys]\ndev = \"cosign.pub\"\n\n[providers.echo]\nsource = \"oci:layout:echo-1.0.0\"\n\n[tenants.acme]\n\n[[routes]]\ntenant = \"acme\"\ncapability = \"send\"\nprovider = \"echo\"\n",
        &[],
    );
    let dir = b.path();
    assert!(run_in(dir, &["keygen"]).status.success());
    // Pushed and signed by the layout's absolute path, as an air-gapped workflow would.
    let layout = dir.join("layout");
    for (name, tag) in [(built::ECHO, "echo-1.0.0"), (built::NOOP, "noop-1.0.0")] {
        let reference = format!("oci:{}:{tag}", layout.display());
        let out = run_in(
            dir,
            &[
                "push",
                component("wasip2", name).to_str().unwrap(),
                &reference,
            ],
        );
        assert!(out.status.success(), "{}", text(&out).1);
        let out = run_in(dir, &["sign", "--key", "cosign.key", &reference]);
        assert!(out.status.success(), "{}", text(&out).1);
    }
    let out = run_host(&["check", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);

    // The bundle and its layout, copied to another directory at another depth: the
    // signatures name what the artifacts were pushed as, not where the layout was.
    let elsewhere = tempfile::tempdir().unwrap();
    for depth in ["copy", "a/b/c/copy"] {
        let to = elsewhere.path().join(depth);
        copy_tree(dir, &to);
        let out = run_host(&["check", to.to_str().unwrap()]);
        assert!(out.status.success(), "copied to {depth}: {}", text(&out).1);
    }

    // Within a layout, tags stay apart: noop's validly signed manifest tagged as echo's (what
    // anyone who can write the layout's index.json can do) carries a signature naming
    // `noop-1.0.0`, and is refused as echo.
    let to = elsewhere.path().join("retagged");
    copy_tree(dir, &to);
    let index_path = to.join("layout/index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let name = "org.opencontainers.image.ref.name";
    let manifests = index["manifests"].as_array_mut().unwrap();
    let noop = manifests
        .iter()
        .find(|m| m["annotations"][name] == "noop-1.0.0")
        .cloned()
        .unwrap();
    for m in manifests.iter_mut() {
        if m["annotations"][name] == "echo-1.0.0" {
            *m = noop.clone();
            m["annotations"][name] = "echo-1.0.0".into();
        }
    }
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let out = run_host(&["check", to.to_str().unwrap()]);
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("signed for repository oci-layout:noop-1.0.0")
            && stderr.contains("oci-layout:echo-1.0.0"),
        "{stderr}"
    );
    // The way to accept a mirror is named: the bundle key and the verify flag.
    assert!(
        stderr.contains("`identities = [\"oci-layout:noop-1.0.0\"]`")
            && stderr.contains("greentic-host verify --repository oci-layout:noop-1.0.0"),
        "{stderr}"
    );
}

#[test]
fn a_signed_component_copied_under_another_providers_name_is_refused() {
    // Write access to the registry, no key: skopeo copies provider `debug-tool`'s validly
    // signed component, signature attachments included, under `payments`' tag.
    let registry = greentic_registry::testing::Registry::start();
    let tool = format!("{}/providers/debug-tool:1.0.0", registry.addr);
    let payments = format!("{}/providers/payments:1.0.0", registry.addr);
    let bundle = |extra: &str| {
        format!(
            "[trust.keys]
ci = \"cosign.pub\"\n\n[providers.payments]\nsource = \"{payments}\"\n{extra}\n[tenants.acme]\n\n[[routes]]\ntenant = \"acme\"\ncapability = \"send\"\nprovider = \"payments\"\n"
        )
    };
    let b = common::TestBundle::new(&bundle(""), &[]);
    let dir = b.path();
    assert!(run_in(dir, &["keygen"]).status.success());
    let out = run_in(
        dir,
        &[
            "push",
            component("wasip2", built::ECHO).to_str().unwrap(),
            &tool,
        ],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(
        run_in(dir, &["sign", "--key", "cosign.key", &tool])
            .status
            .success()
    );
    std::fs::write(
        dir.join("registries.yaml"),
        "default-docker:\n  use-sigstore-attachments: true\n",
    )
    .unwrap();
    let copy = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--registries.d",
        ])
        .arg(dir)
        .arg(format!("docker://{tool}"))
        .arg(format!("docker://{payments}"))
        .output()
        .expect("skopeo is installed (scripts/test.sh installs it)");
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );

    // The signature is valid, by a trusted key, for exactly that digest — but it names
    // debug-tool's repository, not the one payments comes from.
    let out = run_host(&["check", dir.to_str().unwrap()]);
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("signed for repository")
            && stderr.contains("providers/debug-tool")
            && stderr.contains("providers/payments"),
        "{stderr}"
    );
    // `verify` says the same unless told which identity to accept.
    let out = run_in(dir, &["verify", "--key", "cosign.pub", &payments]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out).0);
    let tool_repo = tool.rsplit_once(':').unwrap().0;
    let out = run_in(
        dir,
        &[
            "verify",
            "--key",
            "cosign.pub",
            "--repository",
            tool_repo,
            &payments,
        ],
    );
    assert!(out.status.success(), "{}", text(&out).1);

    // A bundle that accepts the identity explicitly (a mirror it trusts) runs it.
    std::fs::write(
        dir.join("greentic.toml"),
        format!(
            "{}{}",
            common::HEADER.replace("{cache}", &common::shared_cache().display().to_string()),
            bundle(&format!("identities = [\"{tool_repo}\"]\n"))
        ),
    )
    .unwrap();
    let out = run_host(&["check", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
}

#[test]
fn a_compiled_cache_entry_written_by_someone_else_is_not_run() {
    // Whoever can write the cache directory replaces echo's compiled code with panicker's,
    // framed with a correct checksum: without the host's key its MAC cannot verify.
    let b = common::TestBundle::new(
        "[host.breaker]\nfailure_threshold = 0\n[providers.echo]\nsource = \"{components}/echo.wasm\"\nallow_unsigned = true\n\n[tenants.acme]\n\n[[routes]]\ntenant = \"acme\"\ncapability = \"send\"\nprovider = \"echo\"\n",
        &[],
    );
    let dir = b.path();
    let cache = dir.join("cache");
    let toml = std::fs::read_to_string(dir.join("greentic.toml"))
        .unwrap()
        .replace(
            &format!("cache_dir = \"{}\"", common::shared_cache().display()),
            &format!("cache_dir = \"{}\"", cache.display()),
        );
    std::fs::write(dir.join("greentic.toml"), toml).unwrap();
    let out = run_host(&["check", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the cache directory is private: {mode:o}");
    }

    // Compile panicker with the same engine settings: a second bundle, its own cache.
    let other = common::TestBundle::new(
        "[providers.p]\nsource = \"{components}/panicker.wasm\"\nallow_unsigned = true\n\n[tenants.acme]\n\n[[routes]]\ntenant = \"acme\"\ncapability = \"send\"\nprovider = \"p\"\n",
        &[],
    );
    let other_cache = other.path().join("cache");
    let toml = std::fs::read_to_string(other.path().join("greentic.toml"))
        .unwrap()
        .replace(
            &format!("cache_dir = \"{}\"", common::shared_cache().display()),
            &format!("cache_dir = \"{}\"", other_cache.display()),
        );
    std::fs::write(other.path().join("greentic.toml"), toml).unwrap();
    assert!(
        run_host(&["check", other.path().to_str().unwrap()])
            .status
            .success()
    );
    let foreign = std::fs::read_dir(&other_cache)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .unwrap();
    // Re-frame panicker's code with a correct SHA-256 where the MAC goes, as an attacker
    // who can write but not read the key would.
    let bytes = std::fs::read(&foreign).unwrap();
    let payload = &bytes[40..];
    let mut swapped = bytes[..8].to_vec();
    swapped.extend_from_slice(&sha256_raw(payload));
    swapped.extend_from_slice(payload);
    std::fs::write(entry, &swapped).unwrap();

    // The host discards it, recompiles echo, and echo answers as echo.
    let host = common::Host::start(dir);
    let r = host.send(
        &b.token("acme", None),
        serde_json::json!({"to": "#x", "text": "me"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["id"].as_str().unwrap().ends_with(":#x:me"),
        "{}",
        r.text()
    );
    host.output_with("discarding a compiled-artifact cache entry");
    assert_ne!(
        std::fs::read(entry).unwrap(),
        swapped,
        "the swapped entry was kept"
    );
}

fn sha256_raw(bytes: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).to_vec()
}

/// A TCP proxy in front of `upstream` that cuts every connection once it has passed
/// `cut_after` bytes towards the client (manifests and configs pass; a component blob does
/// not). Returns its address and a counter of the connections it accepted.
fn cutting_proxy(
    upstream: String,
    cut_after: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    cutting_proxy_then(upstream, cut_after, || {})
}

/// [`cutting_proxy`] that also calls `on_cut` the first time it cuts a connection.
fn cutting_proxy_then(
    upstream: String,
    cut_after: usize,
    on_cut: impl Fn() + Send + Sync + 'static,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let on_cut = std::sync::Arc::new(on_cut);
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::Ordering;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let Ok(mut server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let on_cut = on_cut.clone();
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
                let _ = s2.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let mut sent = 0;
                let mut buf = [0u8; 8192];
                while let Ok(n) = server.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let n = n.min(cut_after.saturating_sub(sent));
                    if n == 0 {
                        on_cut();
                        break;
                    }
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                }
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            });
        }
    });
    (addr, connections)
}

/// A connection cut half-way through the component blob: the pull fails after a bounded
/// number of retries, says what failed, and leaves neither a cache entry nor an output file.
#[test]
fn a_blob_cut_half_way_is_retried_a_bounded_number_of_times_and_nothing_is_kept() {
    let registry = greentic_registry::testing::Registry::start();
    let wasm = component("wasip2", built::MESSAGING_WEBHOOK);
    let size = std::fs::metadata(&wasm).unwrap().len() as usize;
    let direct = format!("{}/providers/cut:1.0.0", registry.addr);
    let out = run_host(&["push", wasm.to_str().unwrap(), &direct]);
    assert!(out.status.success(), "{}", text(&out).1);

    let (proxy, connections) = cutting_proxy(registry.addr.clone(), size / 2);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let output = dir.path().join("cut.wasm");
    let through_proxy = format!("{proxy}/providers/cut:1.0.0");
    let out = pull(&through_proxy, &output, &cache);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.to_lowercase().contains("blob"), "{stderr}");
    // Retried, but not forever: a handful of connections, not one per byte of patience.
    let used = connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=12).contains(&used), "{used} connections");
    assert!(!output.exists(), "a partial component was written");
    let digest = sha256_hex(&wasm);
    let kept: Vec<_> = walk(&cache)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&digest))
        .collect();
    assert!(kept.is_empty(), "the cut blob was cached: {kept:?}");
    assert!(
        walk(dir.path())
            .iter()
            .all(|p| !p.to_string_lossy().ends_with(".partial")),
        "a partial file was left behind"
    );

    // The same pull straight from the registry succeeds and fills the cache.
    let out = pull(&direct, &output, &cache);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(
        std::fs::read(&output).unwrap(),
        std::fs::read(&wasm).unwrap()
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A cache write that cannot finish (the file-size limit stands in for a full disk: with
/// SIGXFSZ ignored, writes past it fail with EFBIG as they would with ENOSPC): the pull fails
/// once, clearly, and neither the cache nor the output keeps a partial file; once there is room
/// the same pull succeeds.
#[test]
fn a_full_disk_during_a_cache_write_loses_nothing() {
    let registry = greentic_registry::testing::Registry::start();
    let wasm = component("wasip2", built::MESSAGING_WEBHOOK);
    let reference = format!("{}/providers/full:1.0.0", registry.addr);
    let out = run_host(&["push", wasm.to_str().unwrap(), &reference]);
    assert!(out.status.success(), "{}", text(&out).1);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let output = dir.path().join("full.wasm");
    let host = common::host_bin();
    let script = format!(
        "trap '' XFSZ; exec prlimit --fsize=65536 '{}' pull '{reference}' -o '{}' --cache '{}'",
        host.display(),
        output.display(),
        cache.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("File too large"), "{stderr}");
    assert_eq!(
        stderr.matches("File too large").count(),
        1,
        "the reason should be said once: {stderr}"
    );
    assert!(!output.exists(), "a partial component was written");
    let digest = sha256_hex(&wasm);
    let files = walk(dir.path());
    assert!(
        files.iter().all(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !name.contains(&digest) && !name.starts_with(".tmp") && !name.ends_with(".partial")
        }),
        "something partial was kept: {files:?}"
    );

    let out = pull(&reference, &output, &cache);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(
        std::fs::read(&output).unwrap(),
        std::fs::read(&wasm).unwrap()
    );
    assert!(
        walk(&cache)
            .iter()
            .any(|p| p.to_string_lossy().contains(&digest))
    );
}

/// The registry goes away in the middle of a pull (killed as the component blob starts to
/// flow): the pull fails after bounded retries with a clear error and keeps nothing partial; a
/// host that already loaded its providers keeps serving them, and `check --offline` still
/// loads them from the lock and the verified cache, while an online check says the registry is
/// unreachable.
#[test]
fn a_registry_that_stops_mid_pull_fails_cleanly_and_running_hosts_keep_serving() {
    let registry = std::sync::Arc::new(std::sync::Mutex::new(
        greentic_registry::testing::Registry::start(),
    ));
    let addr = registry.lock().unwrap().addr.clone();
    let reference = format!("{addr}/providers/echo:1.0.0");
    let b = common::TestBundle::new(
        &format!(
            "[trust.keys]\nci = \"cosign.pub\"\n\n[providers.echo]\nsource = \"{reference}\"\ntrusted_keys = [\"ci\"]\n\n[tenants.acme]\n\n[[routes]]\ntenant = \"acme\"\ncapability = \"send\"\nprovider = \"echo\"\n"
        ),
        &[],
    );
    let dir = b.path();
    assert!(run_in(dir, &["keygen"]).status.success());
    let wasm = component("wasip2", built::ECHO);
    let out = run_in(dir, &["push", wasm.to_str().unwrap(), &reference]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(
        run_in(dir, &["sign", "--key", "cosign.key", &reference])
            .status
            .success()
    );
    let host = common::Host::start(dir);
    let token = b.token("acme", None);

    // A pull through a proxy that kills the registry as the blob starts to flow.
    let size = std::fs::metadata(&wasm).unwrap().len() as usize;
    let killer = registry.clone();
    let (proxy, connections) = cutting_proxy_then(addr.clone(), size / 2, move || {
        killer.lock().unwrap().stop();
    });
    let pulled = tempfile::tempdir().unwrap();
    let output = pulled.path().join("echo.wasm");
    let cache = pulled.path().join("cache");
    let out = pull(&format!("{proxy}/providers/echo:1.0.0"), &output, &cache);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("attempts"), "{stderr}");
    let used = connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=12).contains(&used), "{used} connections");
    assert!(!output.exists());
    let digest = sha256_hex(&wasm);
    assert!(
        walk(pulled.path())
            .iter()
            .all(|p| !p.to_string_lossy().contains(&digest)),
        "the blob was cached"
    );

    // The running host does not need the registry for what it loaded.
    let r = host.send(
        &token,
        serde_json::json!({"to": "#r", "text": "registry gone"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    drop(host);
    let out = run_host(&["check", "--offline", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    let out = run_host(&["check", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains(&addr), "{}", text(&out).1);
}

/// `greentic-host pull REFERENCE -o OUTPUT --cache CACHE`.
fn pull(
    reference: &str,
    output: &std::path::Path,
    cache: &std::path::Path,
) -> std::process::Output {
    run_host(&[
        "pull",
        reference,
        "-o",
        output.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ])
}

/// Lower-case hex SHA-256 of a file.
fn sha256_hex(path: &std::path::Path) -> String {
    format!(
        "{:x}",
        <sha2::Sha256 as sha2::Digest>::digest(std::fs::read(path).unwrap())
    )
}
