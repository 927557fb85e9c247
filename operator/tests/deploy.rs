//! What `kubectl apply` would be given, checked without an API server: the committed CRDs are
//! exactly what the Rust types generate; the example resources validate against the CRDs'
//! `openAPIV3Schema` (and their provider configuration against the real providers' schemas);
//! every built-in resource under `deploy/` validates against the Kubernetes API's own schemas
//! (kubernetes-validate, strict), with the policy checks of `scripts/validate-manifests.py`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::{Path, PathBuf};
use std::process::Command;

use greentic_operator::crd;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

#[test]
fn the_committed_crds_are_what_the_types_generate() {
    for (file, text) in crd::crd_yaml() {
        let path = repo().join("deploy/crds").join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == text,
            "{} is not what operator/src/crd.rs generates: run `cargo run -p greentic-operator -- crd --out deploy/crds`",
            path.display()
        );
    }
    let mut files: Vec<_> = std::fs::read_dir(repo().join("deploy/crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "providerbindings.yaml",
            "providerclasses.yaml",
            "routingpolicies.yaml"
        ],
        "no stale CRD file"
    );
}

/// The `openAPIV3Schema` of the CRD for `kind`, as a JSON Schema validator.
fn validator(kind: &str) -> jsonschema::Validator {
    let crd = crd::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"));
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    // OpenAPI's `nullable` has no JSON Schema meaning; the examples never use null.
    jsonschema::draft4::new(&schema).unwrap()
}

fn problems(kind: &str, doc: &Value) -> Vec<String> {
    validator(kind)
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// The example resources of our three kinds, with the file each came from.
fn examples() -> Vec<(String, Value)> {
    let dir = repo().join("examples/kubernetes");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            for doc in yaml_docs(&path) {
                out.push((path.display().to_string(), doc));
            }
        }
    }
    out
}

#[test]
fn the_example_resources_validate_against_the_crd_schemas_and_their_providers() {
    let mut seen = std::collections::BTreeSet::new();
    for (file, doc) in examples() {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        if !["ProviderClass", "ProviderBinding", "RoutingPolicy"].contains(&kind.as_str()) {
            continue;
        }
        assert_eq!(doc["apiVersion"], "greentic.ai/v1alpha1", "{file}");
        let p = problems(&kind, &doc);
        assert!(
            p.is_empty(),
            "{file}: {kind} {}: {p:#?}",
            doc["metadata"]["name"]
        );
        // And the operator reads it as the types say.
        match kind.as_str() {
            "ProviderClass" => {
                serde_json::from_value::<crd::ProviderClass>(doc.clone()).unwrap();
            }
            "ProviderBinding" => {
                let b: crd::ProviderBinding = serde_json::from_value(doc.clone()).unwrap();
                // Its configuration, against the real provider's schema.
                let manifest = repo()
                    .join("components/providers")
                    .join(&b.spec.class)
                    .join("provider.json");
                let m = greentic_manifest::ProviderManifest::from_json(
                    "provider.json",
                    &std::fs::read_to_string(&manifest).unwrap(),
                )
                .unwrap();
                let config = b.spec.config.clone().unwrap_or(json!({}));
                let bad = m.check_config(&config);
                assert!(bad.is_empty(), "{file}: binding config: {bad:?}");
            }
            _ => {
                serde_json::from_value::<crd::RoutingPolicy>(doc.clone()).unwrap();
            }
        }
        seen.insert(kind);
    }
    assert_eq!(seen.len(), 3, "the examples show every kind: {seen:?}");
}

#[test]
fn the_crd_schemas_refuse_what_the_api_server_would() {
    let binding = json!({
        "apiVersion": "greentic.ai/v1alpha1",
        "kind": "ProviderBinding",
        "metadata": { "name": "b", "namespace": "acme" },
        "spec": { "class": "chat", "limits": { "maxConcurrent": 5 } }
    });
    assert!(problems("ProviderBinding", &binding).is_empty());
    let mut over = binding.clone();
    over["spec"]["limits"]["maxConcurrent"] = json!(5000);
    assert!(
        !problems("ProviderBinding", &over).is_empty(),
        "maxConcurrent above its cap"
    );
    let mut classless = binding.clone();
    classless["spec"].as_object_mut().unwrap().remove("class");
    assert!(
        !problems("ProviderBinding", &classless).is_empty(),
        "class is required"
    );
    let class = json!({
        "apiVersion": "greentic.ai/v1alpha1",
        "kind": "ProviderClass",
        "metadata": { "name": "c" },
        "spec": { "source": "r/p:1", "digest": "sha256:nothex", "require": ["provenance"] }
    });
    let p = problems("ProviderClass", &class);
    assert!(p.iter().any(|p| p.contains("/spec/digest")), "{p:?}");
    assert!(p.iter().any(|p| p.contains("/spec/require/0")), "{p:?}");
    let policy = json!({
        "apiVersion": "greentic.ai/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": { "name": "p", "namespace": "acme" },
        "spec": { "routes": [] }
    });
    assert!(
        !problems("RoutingPolicy", &policy).is_empty(),
        "at least one route"
    );
}

#[test]
fn the_external_secret_example_fills_the_secret_the_hosts_mount_for_its_tenant() {
    // No External Secrets Operator CRDs are available offline: check what ties it to greentic.
    let docs = yaml_docs(&repo().join("examples/kubernetes/external-secret.yaml"));
    let store = docs
        .iter()
        .find(|d| d["kind"] == "ClusterSecretStore")
        .unwrap();
    assert!(store["spec"]["provider"]["vault"].is_object());
    let es = docs.iter().find(|d| d["kind"] == "ExternalSecret").unwrap();
    assert_eq!(es["apiVersion"], "external-secrets.io/v1");
    assert_eq!(
        es["spec"]["secretStoreRef"]["name"],
        store["metadata"]["name"]
    );
    let target = es["spec"]["target"]["name"].as_str().unwrap();
    assert_eq!(
        target,
        greentic_operator::reconcile::tenant_secret_name("acme")
    );
    assert_eq!(es["metadata"]["namespace"], "greentic-system");
    // The host Deployment mounts exactly that Secret under the tenant's directory.
    let deployment = yaml_docs(&repo().join("deploy/kubernetes/host-deployment.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == target)
        .expect("a volume of the tenant's Secret");
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("mounted");
    assert_eq!(mount["mountPath"], "/var/run/greentic/secrets/acme");
    assert_eq!(mount["readOnly"], true);
}

/// The bootstrap bundle inside the `greentic-bundle` ConfigMap.
fn bootstrap_bundle() -> String {
    yaml_docs(&repo().join("deploy/kubernetes/host-bundle-configmap.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap")
        .unwrap()["data"]["greentic.toml"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_bootstrap_bundle_parses_as_every_host_will_parse_it() {
    let text = bootstrap_bundle();
    let file =
        greentic_bundle::Bundle::parse("greentic-bundle", &text).unwrap_or_else(|e| panic!("{e}"));
    assert!(file.providers.is_empty() && file.tenants.is_empty());
    assert!(file.cluster.url.is_some(), "it joins the fleet");
    assert!(!file.cluster.publishers.is_empty());
    for p in &file.cluster.publishers {
        assert!(
            file.trust.keys.contains_key(p),
            "publisher key `{p}` is in [trust.keys]"
        );
        // A key does one job: the publisher's is trusted for revisions, never for components.
        let roles = file.key_roles(p);
        assert!(roles.contains(&greentic_bundle::KeyRole::Publisher));
        assert!(!roles.contains(&greentic_bundle::KeyRole::Provider));
    }
    assert!(file.cluster.state_dir.is_some(), "a writable state_dir");
    // Without [cluster].url (or --cluster), a bundle with no providers is not one to serve.
    let (head, cluster) = text.split_once("[cluster]").unwrap();
    let lone = format!(
        "{head}[cluster]{}",
        cluster.replacen("url = \"nats://", "# url = \"nats://", 1)
    );
    let lone = greentic_bundle::Bundle::parse("lone", &lone).unwrap();
    assert!(lone.cluster.url.is_none());
    assert!(!lone.standalone_problems().is_empty());
}

#[test]
fn every_built_in_resource_validates_offline_and_meets_the_policy_checks() {
    let python = std::env::var("GREENTIC_K8S_VALIDATE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/greentic-host/tools/kubernetes-validate-1/bin/python3",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    assert!(
        Path::new(&python).is_file(),
        "kubernetes-validate is not installed at {python}: run scripts/test.sh (ensure_kubernetes_validate)"
    );
    let metrics = tempfile::NamedTempFile::new().unwrap();
    let names: Vec<&str> = greentic_metrics::EXPORTED
        .iter()
        .map(|(n, _, _)| *n)
        .collect();
    std::fs::write(metrics.path(), names.join("\n")).unwrap();
    let run = |dir: &Path| {
        let mut cmd = Command::new(&python);
        cmd.arg(repo().join("scripts/validate-manifests.py"))
            .arg("--dir")
            .arg(dir)
            .arg("--metrics")
            .arg(metrics.path());
        for f in ["providerclasses", "providerbindings", "routingpolicies"] {
            cmd.arg("--also")
                .arg(repo().join(format!("deploy/crds/{f}.yaml")));
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = run(&repo().join("deploy/kubernetes"));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("valid against the Kubernetes 1.33.0 schemas"),
        "{text}"
    );

    // A copy with faults planted is refused, each fault named.
    let copy = tempfile::tempdir().unwrap();
    for entry in walk(&repo().join("deploy/kubernetes")) {
        let rel = entry
            .strip_prefix(repo().join("deploy/kubernetes"))
            .unwrap();
        let to = copy.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    let edit = |file: &str, from: &str, to: &str| {
        let path = copy.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has `{from}`");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    };
    edit(
        "host-deployment.yaml",
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: false",
    );
    edit(
        "operator-deployment.yaml",
        "replicas: 2",
        "replicas: \"two\"",
    );
    // The Components of providers outside the host: the sidecar container patched into the host
    // pod, and who may reach the gateway.
    edit(
        "sidecar/host-sidecar.yaml",
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: false",
    );
    edit(
        "gateway/gateway-networkpolicy.yaml",
        "app.kubernetes.io/name: greentic-operator",
        "app.kubernetes.io/name: anyone",
    );
    let (code, text) = run(copy.path());
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("readOnlyRootFilesystem must be true"),
        "{text}"
    );
    assert!(text.contains("'two' is not of type 'integer'"), "{text}");
    assert!(
        text.contains("sidecar/: greentic-host with its patches: container `relay`: securityContext.readOnlyRootFilesystem must be true"),
        "{text}"
    );
    assert!(
        text.contains("only the hosts and the operator may reach the gateway"),
        "{text}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
