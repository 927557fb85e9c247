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

/// A base bundle with one provider key, and `yaml` reconciled over it: (exit code, stdout,
/// stderr).
fn reconcile_with_key(yaml: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let key = greentic_signing::KeyPair::generate();
    std::fs::write(dir.path().join("providers.pub"), key.public_pem()).unwrap();
    std::fs::write(
        dir.path().join("greentic.toml"),
        format!("{BASE}\n[trust.keys]\nproviders = \"providers.pub\"\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("r.yaml"), yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_greentic-operator"))
        .args(["reconcile", "--base", ".", "--resources", "r.yaml"])
        .env("JWT", "0123456789abcdef0123456789abcdef")
        .current_dir(dir.path())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata: { name: acme }\n---\n";

fn class(spec: &str) -> String {
    format!(
        "{NAMESPACE}apiVersion: greentic.ai/v1alpha1\nkind: ProviderClass\nmetadata: {{ name: hook }}\nspec: {spec}\n---\napiVersion: greentic.ai/v1alpha1\nkind: ProviderBinding\nmetadata: {{ name: hook, namespace: acme }}\nspec: {{ class: hook, secrets: [TOKEN], config: {{ url: 'http://x' }} }}\n"
    )
}

#[test]
fn a_class_trusting_a_key_the_base_bundle_lacks_is_refused_in_words_not_a_panic() {
    let (code, stdout, stderr) = reconcile_with_key(&class(
        "{ source: '127.0.0.1:1/providers/hook:1.0.0', trustedKeys: [nosuchkey] }",
    ));
    assert!(
        matches!(code, Some(0..=2)),
        "exit {code:?}; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stdout.contains(
            "trusted_keys names `nosuchkey` that [trust.keys] does not have (it has: providers)"
        ),
        "{stdout}"
    );
}

/// Classes and bindings a cluster could hold, each odd in its own way: every one ends in a
/// status or a refusal, never a panic.
#[test]
fn odd_resources_never_make_the_operator_panic() {
    let specs = [
        "{ source: '127.0.0.1:1/providers/hook:1.0.0', trustedKeys: [] }",
        "{ source: '127.0.0.1:1/providers/hook:1.0.0', trustedKeys: [providers, providers] }",
        "{ source: '127.0.0.1:1/providers/hook:1.0.0', trustedKeys: [''] }",
        "{ source: '', trustedKeys: [providers] }",
        "{ source: 'not a reference', trustedKeys: [providers] }",
        "{ source: 'oci:/nonexistent:tag', trustedKeys: [providers] }",
        "{ source: '127.0.0.1:1/providers/hook@sha256:00', trustedKeys: [providers] }",
        "{ source: '127.0.0.1:1/providers/hook:1.0.0', compat: 'not semver' }",
        "{ source: '127.0.0.1:1/providers/hook:1.0.0', require: [nonsense] }",
        "{ source: '127.0.0.1:1/providers/hook:1.0.0', grants: { secrets: [TOKEN], outboundHosts: ['::::'] } }",
        "{ source: '127.0.0.1:1/providers/hook:1.0.0', allowedNamespaces: [] }",
    ];
    for spec in specs {
        let (code, _, stderr) = reconcile_with_key(&class(spec));
        assert!(
            matches!(code, Some(0..=2)) && !stderr.contains("panicked"),
            "spec {spec}: exit {code:?}; stderr: {stderr}"
        );
    }
}

/// The operator logs as the host does: `--log-format json` or `text`, JSON by default when
/// its log stream is not a terminal.
#[test]
fn the_operator_takes_the_hosts_log_formats() {
    let yaml = class("{ source: '127.0.0.1:1/providers/hook:1.0.0', trustedKeys: [providers] }");
    for (args, json) in [
        (&["--log-format", "json"][..], true),
        (&["--log-format", "text"][..], false),
        (&[][..], true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("greentic.toml"), BASE).unwrap();
        std::fs::write(dir.path().join("r.yaml"), &yaml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_greentic-operator"))
            .args(args)
            .args(["reconcile", "--base", ".", "--resources", "r.yaml"])
            .env("JWT", "0123456789abcdef0123456789abcdef")
            .env_remove("GREENTIC_LOG_FORMAT")
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr
            .lines()
            .find(|l| l.contains("reconcile pass over the resource files"))
            .unwrap_or_else(|| panic!("{args:?}: no log line in:\n{stderr}"));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            json,
            "{args:?}: {line}"
        );
    }
}

/// The operator's commands and flags, as its `--help` lists them (`--help` and `--version`
/// left out).
fn operator_commands() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_greentic-operator"))
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let top = help(&[]);
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 3, "{top}");
    commands
        .into_iter()
        .map(|command| {
            let flags = help(&[&command])
                .lines()
                .filter_map(|l| {
                    let l = l.trim_start();
                    let l = l.strip_prefix("-o, ").unwrap_or(l);
                    l.strip_prefix("--")
                        .and_then(|f| f.split([' ', '\n']).next())
                        .map(|f| format!("--{f}"))
                })
                .filter(|f| f != "--help" && f != "--version")
                .collect();
            (command, flags)
        })
        .collect()
}

#[test]
fn the_readme_lists_every_operator_command_and_flag_and_nothing_else() {
    let program = operator_commands();
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let mut documented: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    let mut wrong = Vec::new();
    for (i, row) in readme.lines().enumerate() {
        if !row.starts_with("| `greentic-operator ") {
            continue;
        }
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
        let spans = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        };
        let commands: Vec<String> = spans(cells[0])
            .iter()
            .map(|s| s.trim_start_matches("greentic-operator ").to_string())
            .collect();
        let flags: std::collections::BTreeSet<String> = spans(cells.get(1).copied().unwrap_or(""))
            .iter()
            .filter(|s| s.starts_with("--"))
            .filter_map(|s| s.split_whitespace().next().map(str::to_string))
            .collect();
        for command in commands {
            match program.get(&command) {
                None => wrong.push(format!(
                    "README.md:{}: `greentic-operator {command}` is not a command",
                    i + 1
                )),
                Some(has) => {
                    for flag in flags.difference(has) {
                        wrong.push(format!(
                            "README.md:{}: `greentic-operator {command}` has no `{flag}`",
                            i + 1
                        ));
                    }
                    documented.entry(command).or_default().extend(flags.clone());
                }
            }
        }
    }
    for (command, flags) in &program {
        let listed = documented.get(command).cloned().unwrap_or_default();
        for flag in flags.difference(&listed) {
            wrong.push(format!(
                "`greentic-operator {command} {flag}` is missing from the README"
            ));
        }
        if !documented.contains_key(command) {
            wrong.push(format!(
                "`greentic-operator {command}` has no row in the README"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A class of the remote form: the operator asks the provider for its manifest over its link
/// (the Rust sidecar, on loopback), checks it as the hosts will, and publishes a revision that
/// reaches it there, its manifest pinned by digest. One without an endpoint, or with an
/// artifact's fields, is refused naming what to change.
#[test]
fn a_remote_class_is_checked_over_its_link_and_published_with_its_manifest_pinned() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(greentic_sidecar_rust::service("echo").unwrap())
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let resources = |spec: &str| {
        format!(
            "{NAMESPACE}apiVersion: greentic.ai/v1alpha1\nkind: ProviderClass\nmetadata: {{ name: echo }}\nspec: {spec}\n---\napiVersion: greentic.ai/v1alpha1\nkind: ProviderBinding\nmetadata: {{ name: echo, namespace: acme }}\nspec: {{ class: echo, config: {{ label: blue }} }}\n---\napiVersion: greentic.ai/v1alpha1\nkind: RoutingPolicy\nmetadata: {{ name: routes, namespace: acme }}\nspec: {{ routes: [{{ capability: send, binding: echo }}] }}\n"
        )
    };
    let (code, stdout, stderr) = reconcile_with_key(&resources(&format!(
        "{{ form: remote, endpoint: 'grpc://127.0.0.1:{port}', allowPlaintext: true }}"
    )));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("# revision sha256:"), "{stdout}");
    assert!(stdout.contains("form = \"remote\""), "{stdout}");
    assert!(
        stdout.contains(&format!("source = \"grpc://127.0.0.1:{port}\"")),
        "{stdout}"
    );
    // The class's status: the manifest the remote described, by digest.
    let manifest = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/native-echo/provider.json"),
    )
    .unwrap();
    let digest = {
        use sha2::Digest as _;
        format!("sha256:{:x}", sha2::Sha256::digest(&manifest))
    };
    assert!(stdout.contains(&digest), "{digest} not in {stdout}");
    assert!(stdout.contains("echo-rs 1.0.0"), "{stdout}");

    for (spec, words) in [
        (
            "{ form: remote, allowPlaintext: true }".to_string(),
            "spec.endpoint is required for `form: remote`",
        ),
        (
            format!(
                "{{ form: remote, endpoint: 'grpc://127.0.0.1:{port}', allowPlaintext: true, trustedKeys: [providers] }}"
            ),
            "a `form: remote` class is held to spec.identity (mTLS)",
        ),
        (
            "{ source: 'r.example/p/echo:1', identity: 'spiffe://x/y' }".to_string(),
            "spec.identity applies to `form: remote` classes only",
        ),
    ] {
        let (code, stdout, stderr) = reconcile_with_key(&resources(&spec));
        assert_eq!(code, Some(1), "{spec}: {stdout}\n{stderr}");
        assert!(
            stdout.contains(words),
            "{spec}: expected `{words}` in {stdout}"
        );
    }
}
