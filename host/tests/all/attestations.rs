//! Attestations on the artifact, end to end against a real registry: `greentic-host attest`
//! runs the conformance suite on the pushed provider and attaches the signed report; a bundle
//! that requires conformance runs the certified provider and refuses, each with its reason, one
//! that has no attestation, one attested by an untrusted key, and one whose report has a failed
//! case. An SBOM from `cargo cyclonedx` is attested and verified the same way. An independent
//! DSSE/in-toto verifier (securesystemslib + in-toto-attestation, in Python) accepts our
//! envelope and refuses it edited.

use std::path::Path;
use std::process::Output;

use greentic_registry::testing::Registry;
use greentic_registry::{ArtifactRef, Target};
use serde_json::{Value, json};

use crate::common::{self, Host, TestBundle, Upstream, built, component, run_in, text};

const SECRETS: &[(&str, &str)] = &[];

fn bundle(registry: &str, upstream: &str, with_echo: bool) -> String {
    let mut toml = format!(
        r#"
[trust]
require = ["conformance"]

[trust.keys]
dev = "cosign.pub"

[providers.hook]
source = "{registry}/providers/messaging-webhook:1.0.0"
grants.outbound_hosts = ["http://127.0.0.1:*"]
grants.secrets = ["WEBHOOK_BEARER_TOKEN"]

[tenants.acme]

[tenants.acme.config.hook]
url = "http://{upstream}/hook"

[[routes]]
tenant = "acme"
capability = "send"
provider = "hook"
"#
    );
    if with_echo {
        toml.push_str(&format!(
            r#"
[providers.echo]
source = "{registry}/providers/echo:1.0.0"

[tenants.beta]

[[routes]]
tenant = "beta"
capability = "send"
provider = "echo"
"#
        ));
    }
    toml
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run_in(dir, args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{args:?}:\n{stdout}\n{stderr}");
    stdout
}

/// `greentic-host attest --key KEY --type KIND ARGS… REFERENCE` in `dir`.
fn attest(dir: &Path, key: &str, kind: &str, args: &[&str], reference: &str) -> Output {
    let mut all = vec!["attest", "--key", key, "--type", kind];
    all.extend_from_slice(args);
    all.push(reference);
    run_in(dir, &all)
}

/// Asserts that a command failed and said `why` on stderr.
fn refused(out: &Output, why: &str) {
    let (stdout, stderr) = text(out);
    assert!(!out.status.success(), "it succeeded:\n{stdout}\n{stderr}");
    assert!(stderr.contains(why), "`{why}` not in:\n{stderr}");
}

/// What a command that must succeed printed.
fn ok_out(out: Output) -> String {
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    stdout
}

fn check(dir: &Path) -> (bool, String) {
    let out = run_in(dir, &["check", dir.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    (out.status.success(), format!("{stdout}\n{stderr}"))
}

/// The DSSE envelope (the newest attestation layer) beside `reference`.
fn envelope(reference: &str) -> (String, Vec<u8>) {
    let reference: ArtifactRef = reference.parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let target = Target::open(&reference, &Default::default()).unwrap();
        let digest = target.resolve(&reference).await.unwrap();
        let att = reference.with_tag(&greentic_signing::attestation_tag(&digest));
        let att_digest = target.resolve(&att).await.unwrap();
        let manifest: Value = serde_json::from_slice(
            &target
                .fetch_manifest(
                    &att.with_digest(&att_digest),
                    &att_digest,
                    &[greentic_registry::OCI_MANIFEST_MEDIA_TYPE],
                )
                .await
                .unwrap(),
        )
        .unwrap();
        let layer = manifest["layers"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(layer["mediaType"], greentic_signing::DSSE_MEDIA_TYPE);
        assert!(layer["annotations"]["predicateType"].as_str().is_some());
        let blob = target
            .fetch_blob(&att, layer["digest"].as_str().unwrap(), "envelope", 1 << 22)
            .await
            .unwrap();
        (digest, blob)
    })
}

/// Runs the independent Python verifier on an envelope.
fn python_verifies(
    envelope: &[u8],
    key: &Path,
    digest: &str,
    predicate_type: &str,
) -> (bool, String) {
    let python = std::env::var("GREENTIC_DSSE_VERIFIER").expect(
        "GREENTIC_DSSE_VERIFIER (a python with securesystemslib and in-toto-attestation) is not set: run scripts/test.sh, which installs it",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("envelope.json");
    std::fs::write(&file, envelope).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/verify-dsse.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&file)
        .arg(key)
        .arg(digest.strip_prefix("sha256:").unwrap())
        .arg(predicate_type)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    (out.status.success(), format!("{stdout}{stderr}"))
}

#[test]
fn a_bundle_requiring_conformance_runs_certified_providers_and_refuses_the_rest() {
    let registry = Registry::start();
    let upstream = Upstream::start(vec![(200, vec![], r#"{"ok":true,"ts":"1.2"}"#.into())]);
    let b = TestBundle::new(&bundle(&registry.addr, &upstream.addr, true), SECRETS);
    let dir = b.path();
    ok(dir, &["keygen"]);
    ok(dir, &["keygen", "--output-key-prefix", "stranger"]);
    let hook = format!("{}/providers/messaging-webhook:1.0.0", registry.addr);
    let echo = format!("{}/providers/echo:1.0.0", registry.addr);
    for (name, reference) in [(built::MESSAGING_WEBHOOK, &hook), (built::ECHO, &echo)] {
        ok(
            dir,
            &[
                "push",
                component("wasip2", name).to_str().unwrap(),
                reference,
            ],
        );
        ok(dir, &["sign", "--key", "cosign.key", reference]);
    }

    // Nothing attested: both refused, each naming what is missing and what to do.
    let (passed, log) = check(dir);
    assert!(!passed);
    for provider in ["hook", "echo"] {
        assert!(
            log.contains(&format!(
                "provider `{provider}`: requires a `conformance` attestation"
            )) && log.contains("greentic-host attest --type conformance"),
            "{log}"
        );
    }

    // attest runs the suite against the pushed artifact and attaches the passing report.
    let profile = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../components/providers/messaging-webhook/conformance.json");
    let out = ok_out(attest(
        dir,
        "cosign.key",
        "conformance",
        &["--profile", profile.to_str().unwrap()],
        &hook,
    ));
    assert!(
        out.contains("attested conformance") && out.contains("passed"),
        "{out}"
    );
    let out = ok(
        dir,
        &[
            "verify-attestation",
            "--key",
            "cosign.pub",
            "--type",
            "conformance",
            "--json",
            &hook,
        ],
    );
    assert!(
        out.contains("verified conformance attestation") && out.contains("case(s) passed"),
        "{out}"
    );
    let statement: Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(
        statement["predicate"]["provider"]["name"],
        "messaging-webhook"
    );
    assert_eq!(statement["predicate"]["passed"], true);

    // The echo provider attested by a key the bundle does not trust: still refused.
    let echo_wasm = component("wasip2", built::ECHO);
    let report = dir.join("echo-report.json");
    let out = run_in(
        dir,
        &[
            "conformance",
            echo_wasm.to_str().unwrap(),
            "--json",
            report.to_str().unwrap(),
        ],
    );
    assert!(
        !out.status.success(),
        "echo is not a conforming messaging provider: {}",
        text(&out).0
    );
    // A failed run is not attested unless asked.
    let out = attest(
        dir,
        "stranger.key",
        "conformance",
        &["--report", report.to_str().unwrap()],
        &echo,
    );
    refused(&out, "--record-failure");
    ok_out(attest(
        dir,
        "stranger.key",
        "conformance",
        &["--report", report.to_str().unwrap(), "--record-failure"],
        &echo,
    ));
    let (passed, log) = check(dir);
    assert!(!passed);
    assert!(
        log.contains("provider `echo`: requires a `conformance` attestation")
            && log.contains("none of its 1 signature(s) is by a trusted key"),
        "{log}"
    );
    assert!(
        !log.contains("provider `hook`"),
        "the certified provider loads: {log}"
    );

    // Signed by the trusted key, but the report has failed cases: refused, naming them.
    ok_out(attest(
        dir,
        "cosign.key",
        "conformance",
        &["--report", report.to_str().unwrap(), "--record-failure"],
        &echo,
    ));
    let (passed, log) = check(dir);
    assert!(!passed);
    assert!(
        log.contains("provider `echo`: its newest `conformance` attestation")
            && log.contains("failed case(s)"),
        "{log}"
    );
    let out = run_in(
        dir,
        &[
            "verify-attestation",
            "--key",
            "cosign.pub",
            "--type",
            "conformance",
            &echo,
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out).1.contains("failed case(s)"), "{}", text(&out).1);

    // A report for another component cannot be attested about this artifact.
    let hook_report = dir.join("hook-report.json");
    let out = run_in(
        dir,
        &[
            "conformance",
            component("wasip2", built::MESSAGING_WEBHOOK)
                .to_str()
                .unwrap(),
            "--profile",
            profile.to_str().unwrap(),
            "--json",
            hook_report.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let out = attest(
        dir,
        "cosign.key",
        "conformance",
        &["--report", hook_report.to_str().unwrap()],
        &echo,
    );
    refused(&out, "run the suite against this artifact");

    // Without echo, the bundle runs the certified provider and it answers.
    b.rewrite(&bundle(&registry.addr, &upstream.addr, false));
    let (passed, log) = check(dir);
    assert!(passed, "{log}");
    let host = Host::start(dir);
    let r = host.send(
        &b.token("acme", None),
        json!({"to": "#ops", "text": "certified"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        host.output_with("attestation verified")
            .contains("conformance: "),
        "{}",
        host.output()
    );
    drop(host);

    // The independent verifier accepts our envelope, and refuses it edited or under another key.
    let (digest, env) = envelope(&hook);
    let (accepted, why) = python_verifies(
        &env,
        &dir.join("cosign.pub"),
        &digest,
        greentic_host::trust::attestation::CONFORMANCE_PREDICATE,
    );
    assert!(accepted, "{why}");
    assert!(why.contains("messaging-webhook"), "{why}");
    let mut edited: Value = serde_json::from_slice(&env).unwrap();
    let payload = edited["payload"].as_str().unwrap().to_string();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let decoded = String::from_utf8(b64.decode(&payload).unwrap()).unwrap();
    assert!(decoded.contains("\"passed\":true"), "{decoded}");
    let text_payload = String::from_utf8(b64.decode(payload).unwrap()).unwrap();
    edited["payload"] =
        json!(b64.encode(text_payload.replace("\"passed\":true", "\"passed\":false")));
    let (accepted, why) = python_verifies(
        &serde_json::to_vec(&edited).unwrap(),
        &dir.join("cosign.pub"),
        &digest,
        greentic_host::trust::attestation::CONFORMANCE_PREDICATE,
    );
    assert!(!accepted, "an edited payload must be refused: {why}");
    let (accepted, _) = python_verifies(
        &env,
        &dir.join("stranger.pub"),
        &digest,
        greentic_host::trust::attestation::CONFORMANCE_PREDICATE,
    );
    assert!(!accepted);
}

#[test]
fn sboms_from_cargo_cyclonedx_are_attested_in_an_oci_layout_and_required_by_the_bundle() {
    let b = TestBundle::new(
        "[trust.keys]\ndev = \"cosign.pub\"\n\n[providers.echo]\nsource = \"oci:layout:v1\"\nrequire = [\"sbom\"]\n\n[tenants.acme]\n\n[[routes]]\ntenant = \"acme\"\ncapability = \"send\"\nprovider = \"echo\"\n",
        SECRETS,
    );
    let dir = b.path();
    let layout = format!("oci:{}:v1", dir.join("layout").display());
    ok(dir, &["keygen"]);
    ok(
        dir,
        &[
            "push",
            component("wasip2", built::ECHO).to_str().unwrap(),
            &layout,
        ],
    );
    ok(dir, &["sign", "--key", "cosign.key", &layout]);
    let (passed, log) = check(dir);
    assert!(!passed);
    assert!(log.contains("requires a `sbom` attestation"), "{log}");

    let sbom = common::components_dir().join("sbom/echo.cdx.json");
    let bom: Value = serde_json::from_slice(&std::fs::read(&sbom).unwrap()).unwrap();
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert!(
        bom["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "wit-bindgen"),
        "the SBOM lists the component's dependencies"
    );
    // Not an SBOM: refused before anything is attached.
    std::fs::write(dir.join("junk.json"), br#"{"hello": 1}"#).unwrap();
    let out = attest(dir, "cosign.key", "sbom", &["--sbom", "junk.json"], &layout);
    refused(&out, "not a CycloneDX document");

    let out = ok_out(attest(
        dir,
        "cosign.key",
        "sbom",
        &["--sbom", sbom.to_str().unwrap()],
        &layout,
    ));
    assert!(out.contains("CycloneDX"), "{out}");
    let (passed, log) = check(dir);
    assert!(passed, "{log}");
    let out = ok(
        dir,
        &[
            "verify-attestation",
            "--key",
            "cosign.pub",
            "--type",
            "sbom",
            &layout,
        ],
    );
    assert!(out.contains("component(s)"), "{out}");
    // No conformance attestation was made: asking for one fails.
    let out = run_in(
        dir,
        &[
            "verify-attestation",
            "--key",
            "cosign.pub",
            "--type",
            "conformance",
            &layout,
        ],
    );
    assert!(!out.status.success());

    let host = Host::start(dir);
    let r = host.send(&b.token("acme", None), json!({"to": "#a", "text": "sbom"}));
    assert_eq!(r.status, 200, "{}", r.text());
}
