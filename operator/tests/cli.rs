//! `greentic-operator` on bad input: each refusal names the file, the document and what to do,
//! and `crd --out` leaves whole files only.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::Path;
use std::process::{Command, Output};

const BASE: &str = r#"
[auth]
algorithm = "HS256"
issuer = "i"
audience = "a"
secret_env = "JWT"

[cluster]
url = "nats://127.0.0.1:1"
"#;

fn operator(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_greentic-operator"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn reconcile(yaml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("greentic.toml"), BASE).unwrap();
    std::fs::write(dir.path().join("r.yaml"), yaml).unwrap();
    let out = operator(
        &["reconcile", "--base", ".", "--resources", "r.yaml"],
        dir.path(),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn resources_the_api_server_would_refuse_are_refused_with_their_place() {
    let cases = [
        (
            "apiVersion: v1\nkind: Namespace\nmetadata: { name: acme }\n---\napiVersion: greentic.ai/v1alpha1\nkind: ProviderBindng\nmetadata: { name: b, namespace: acme }\nspec: { class: c }\n",
            "r.yaml: document 2 (ProviderBindng `b`): greentic.ai has no kind `ProviderBindng`",
        ),
        (
            "apiVersion: greentic.ai/v1\nkind: ProviderClass\nmetadata: { name: c }\nspec: { source: r/p:1 }\n",
            "apiVersion `greentic.ai/v1` is not served; use `greentic.ai/v1alpha1`",
        ),
        (
            "apiVersion: greentic.ai/v1alpha1\nkind: ProviderBinding\nmetadata: { name: b }\nspec: { class: c }\n",
            "metadata.namespace is missing; the namespace is the tenant",
        ),
        (
            "apiVersion: greentic.ai/v1alpha1\nkind: RoutingPolicy\nmetadata: { name: p, namespace: acme }\nspec: { routes: 3 }\n",
            "document 1 (RoutingPolicy `p`)",
        ),
        ("kind: [unclosed\n", "document 1 is not YAML"),
    ];
    for (yaml, words) in cases {
        let (code, stderr) = reconcile(yaml);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(words), "expected `{words}` in: {stderr}");
    }
}

#[test]
fn crd_out_writes_exactly_the_generated_files_and_nothing_partial() {
    let dir = tempfile::tempdir().unwrap();
    let out = operator(&["crd", "--out", "crds"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "providerbindings.yaml",
            "providerclasses.yaml",
            "routingpolicies.yaml"
        ]
    );
    for (name, text) in greentic_operator::crd::crd_yaml() {
        assert_eq!(
            std::fs::read_to_string(dir.path().join("crds").join(name)).unwrap(),
            text
        );
    }
}
