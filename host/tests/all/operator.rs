//! `greentic-operator` as the fleet's publisher: Kubernetes resources (the YAML a cluster
//! holds, read from files since no API server runs here) checked with the host's loader and
//! published, signed, to a real NATS JetStream; a real `greentic-host run --cluster` takes each
//! revision and serves it. An invalid binding holds only its own tenant — at its last published
//! configuration — while another tenant's change is published.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Host, Nats, TestBundle, host_bin, run_in, text};
use serde_json::json;

fn operator_bin() -> PathBuf {
    let bin = host_bin().with_file_name("greentic-operator");
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace (`cargo test --workspace` builds it)",
        bin.display()
    );
    bin
}

/// The resources: class `echo`, tenants acme and globex binding it with `labels`, each routing
/// `send` to its binding.
fn resources(reg: &str, acme: &serde_json::Value, globex: &serde_json::Value) -> String {
    let mut out = format!(
        r#"apiVersion: greentic.ai/v1alpha1
kind: ProviderClass
metadata: {{ name: echo, generation: 1 }}
spec:
  source: {reg}/providers/echo:1.0.0
  trustedKeys: [ci]
  compat: "^1"
"#
    );
    for (ns, config) in [("acme", acme), ("globex", globex)] {
        out.push_str(&format!(
            r#"---
apiVersion: greentic.ai/v1alpha1
kind: ProviderBinding
metadata: {{ name: echo, namespace: {ns}, generation: 1 }}
spec:
  class: echo
  config: {config}
  limits: {{ maxConcurrent: 4 }}
---
apiVersion: greentic.ai/v1alpha1
kind: RoutingPolicy
metadata: {{ name: routes, namespace: {ns}, generation: 1 }}
spec:
  routes:
  - {{ capability: send, binding: echo }}
"#
        ));
    }
    out
}

/// Runs one reconcile pass over `yaml`, publishing; its output.
fn reconcile(base: &Path, nats: &str, yaml: &str) -> Output {
    let file = base.join("resources.yaml");
    std::fs::write(&file, yaml).unwrap();
    Command::new(operator_bin())
        .args(["reconcile", "--base"])
        .arg(base)
        .arg("--resources")
        .arg(&file)
        .args(["--publish", "--cluster", nats, "--key"])
        .arg(base.join("cosign.key"))
        .env("COSIGN_PASSWORD", "correct horse")
        .env("GREENTIC_CACHE_KEY_FILE", common::cache_key_file())
        .output()
        .expect("greentic-operator runs")
}

/// The revision digest a reconcile published (`# published sha256:…`).
fn published(out: &Output) -> String {
    let stdout = text(out).0;
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("# published "))
        .unwrap_or_else(|| panic!("nothing published: {:?}", text(out)))
        .trim()
        .to_string()
}

/// Waits until `host` serves revision `digest`.
fn wait_for(host: &Host, digest: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ready = host.admin("GET", "/readyz").json();
        if ready["revision"]["digest"] == digest {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the host never took revision {digest}: {ready}\n{}",
            host.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_operator_publishes_what_the_resources_ask_and_an_invalid_binding_holds_only_its_tenant() {
    let nats = Nats::start();
    let registry = greentic_registry::testing::Registry::start();
    let reg = registry.addr.clone();
    // The hosts' bundle, as the greentic-bundle ConfigMap holds it: no providers or tenants
    // of its own, the publisher's key, the fleet.
    let base = TestBundle::new(
        &format!(
            r#"
[trust.keys]
# One key for the operator's revisions and the test's components, said outright.
ci = {{ file = "cosign.pub", roles = ["publisher", "provider"] }}

[cluster]
url = "{}"
publishers = ["ci"]
heartbeat_ms = 200
"#,
            nats.url
        ),
        &[],
    );
    let dir = base.path();
    assert!(run_in(dir, &["keygen"]).status.success());
    let reference = format!("{reg}/providers/echo:1.0.0");
    let wasm = common::component("wasip2", common::built::ECHO);
    let out = run_in(dir, &["push", wasm.to_str().unwrap(), &reference]);
    assert!(out.status.success(), "{}", text(&out).1);
    let out = run_in(dir, &["sign", "--key", "cosign.key", &reference]);
    assert!(out.status.success(), "{}", text(&out).1);

    // A host with only the bootstrap bundle, following the fleet.
    let host_dir = tempfile::tempdir().unwrap();
    for f in ["greentic.toml", "cosign.pub", "jwt.secret"] {
        std::fs::copy(dir.join(f), host_dir.path().join(f)).unwrap();
    }
    let host = Host::start_with_args(host_dir.path(), &["--host-id", "h0"]);
    let before = host.admin("GET", "/readyz");
    assert_eq!(
        before.status,
        503,
        "nothing to serve yet: {}",
        before.text()
    );
    assert_eq!(before.json()["waiting_for_fleet"], true);
    // Tokens are minted against a bundle naming both tenants (same JWT secret).
    let minter = TestBundle::new(
        "[providers.echo]\nsource = \"{components}/echo.wasm\"\nallow_unsigned = true\n[tenants.acme]\n[tenants.globex]\n",
        &[],
    );
    let (acme, globex) = (minter.token("acme", None), minter.token("globex", None));
    let call = |token: &str| host.send(token, json!({"to": "a", "text": "b"}));

    // 1. acme is valid; globex's config breaks the provider's schema (a number, not a string).
    let out = reconcile(
        dir,
        &nats.url,
        &resources(&reg, &json!({"label": "one"}), &json!({"label": 42})),
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an invalid binding fails the pass: {stderr}"
    );
    assert!(
        stdout.contains("kind: ProviderBinding")
            && stdout.contains("namespace: globex")
            && stdout.contains("reason: Invalid")
            && stdout.contains("field `/label`"),
        "globex's binding names its config problem: {stdout}"
    );
    assert!(
        stdout.contains("reason: Verified") && stdout.contains("signer:"),
        "the class is verified, with its signer: {stdout}"
    );
    let first = published(&out);
    wait_for(&host, &first);
    assert_eq!(
        host.admin("GET", "/readyz").status,
        200,
        "ready once it serves a revision"
    );
    let r = call(&acme);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "acme/-/-:a:b@one");
    let r = call(&globex);
    assert_ne!(r.status, 200, "globex is not served: {}", r.text());

    // 2. globex fixed and acme relabelled: both change in one revision.
    let out = reconcile(
        dir,
        &nats.url,
        &resources(&reg, &json!({"label": "two"}), &json!({"label": "g"})),
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let second = published(&out);
    assert_ne!(first, second);
    wait_for(&host, &second);
    assert_eq!(call(&acme).json()["id"], "acme/-/-:a:b@two");
    assert_eq!(call(&globex).json()["id"], "globex/-/-:a:b@g");

    // 3. acme's binding breaks while globex changes: globex's change is published, and acme
    //    keeps serving its last published configuration.
    let out = reconcile(
        dir,
        &nats.url,
        &resources(
            &reg,
            &json!({"label": "two", "extra": true}),
            &json!({"label": "g2"}),
        ),
    );
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("reason: Held"),
        "acme's resources say they are held: {stdout}"
    );
    let third = published(&out);
    wait_for(&host, &third);
    assert_eq!(call(&globex).json()["id"], "globex/-/-:a:b@g2");
    assert_eq!(
        call(&acme).json()["id"],
        "acme/-/-:a:b@two",
        "acme keeps its last published configuration"
    );
    let metrics = host.admin("GET", "/metrics").text();
    assert!(
        metrics.contains(&format!("greentic_revision_info{{digest=\"{third}\"}} 1")),
        "the host's metrics name the revision it serves: {metrics}"
    );

    // 4. The same resources again: nothing new to publish.
    let out = reconcile(
        dir,
        &nats.url,
        &resources(
            &reg,
            &json!({"label": "two", "extra": true}),
            &json!({"label": "g2"}),
        ),
    );
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("the fleet already serves this revision")
            && !stdout.contains("# published"),
        "an unchanged cluster publishes nothing: {stdout}"
    );
}
