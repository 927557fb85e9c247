//! The conformance suite through `greentic-host conformance`: every provider in `components/`
//! passes; each deliberately broken provider fails exactly the case that catches its flaw; a
//! provider is certified from a registry reference as from a file; bad invocations are named.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;
use crate::common::built;

use std::path::{Path, PathBuf};

use common::{component, run_host, text};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the suite; returns (exit code, stdout, stderr, JSON report, JUnit text).
fn conformance(
    target: &str,
    profile: Option<&Path>,
    extra: &[&str],
) -> (i32, String, String, Value, String) {
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("report.json");
    let junit = out.path().join("report.xml");
    let cache = common::shared_cache();
    let mut args = vec![
        "conformance".to_string(),
        target.to_string(),
        "--json".into(),
        json.display().to_string(),
        "--junit".into(),
        junit.display().to_string(),
        "--cache-dir".into(),
        cache.display().to_string(),
    ];
    if let Some(p) = profile {
        args.push("--profile".into());
        args.push(p.display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run_host(&args);
    let (stdout, stderr) = text(&output);
    let report = std::fs::read_to_string(&json)
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(Value::Null);
    let junit = std::fs::read_to_string(&junit).unwrap_or_default();
    (
        output.status.code().unwrap_or(-1),
        stdout,
        stderr,
        report,
        junit,
    )
}

fn failed(report: &Value) -> Vec<String> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["passed"] == false)
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn groups(report: &Value) -> Vec<String> {
    let mut g: Vec<String> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["group"].as_str().unwrap().to_string())
        .collect();
    g.sort();
    g.dedup();
    g
}

#[test]
pub(crate) fn messaging_webhook_passes_every_case() {
    let profile = repo().join("components/providers/messaging-webhook/conformance.json");
    let wasm = component("wasip2", built::MESSAGING_WEBHOOK);
    let (code, stdout, stderr, report, junit) =
        conformance(wasm.to_str().unwrap(), Some(&profile), &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(failed(&report), Vec::<String>::new(), "{stdout}");
    assert_eq!(report["passed"], true);
    assert_eq!(report["provider"], "messaging-webhook");
    assert_eq!(
        groups(&report),
        [
            "error-mapping",
            "idempotency",
            "manifest-truth",
            "retry",
            "secrets",
            "telemetry",
            "tenancy"
        ]
    );
    assert!(stdout.contains("error-mapping.429-retry-after") && stdout.contains("pass"));
    let cases = report["results"].as_array().unwrap().len();
    assert!(
        junit.contains(&format!("tests=\"{cases}\" failures=\"0\"")),
        "{junit}"
    );
}

#[test]
pub(crate) fn webhook_github_passes_every_case() {
    let profile = repo().join("components/providers/webhook-github/conformance.json");
    let wasm = component("wasip2", built::WEBHOOK_GITHUB);
    let (code, stdout, stderr, report, _) =
        conformance(wasm.to_str().unwrap(), Some(&profile), &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(report["domain"], "webhook");
    assert_eq!(failed(&report), Vec::<String>::new(), "{stdout}");
    for id in [
        "webhook.signature-missing",
        "webhook.replayed-delivery",
        "tenancy.other-tenant-signature",
        "secrets.never-emitted",
    ] {
        assert!(stdout.contains(id), "{id} did not run:\n{stdout}");
    }
}

#[test]
pub(crate) fn timer_heartbeat_passes_every_case_fired_by_the_host() {
    let profile = repo().join("components/providers/timer-heartbeat/conformance.json");
    let wasm = component("wasip2", built::TIMER_HEARTBEAT);
    let (code, stdout, stderr, report, _) =
        conformance(wasm.to_str().unwrap(), Some(&profile), &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(report["domain"], "timer");
    assert_eq!(failed(&report), Vec::<String>::new(), "{stdout}");
    for id in [
        "fire.reaches-upstream",
        "error-mapping.429-retry-after",
        "tenancy.interleaved",
        "telemetry.fire-span",
        "manifest-truth.imports",
    ] {
        assert!(stdout.contains(id), "{id} did not run:\n{stdout}");
    }
}

/// A chat API with no idempotency header: messaging-telegram de-duplicates keyed sends in
/// greentic:state, and passes every case once its profile says so. Judged as if it forwarded
/// keys, it fails exactly the three keyed cases; and a provider that forwards keys (and keeps
/// no state) fails the state profile's demands.
#[test]
pub(crate) fn idempotency_is_checked_the_way_the_profile_says_the_provider_achieves_it() {
    let telegram = component("wasip2", built::MESSAGING_TELEGRAM);
    let own = repo().join("components/providers/messaging-telegram/conformance.json");
    let (code, stdout, stderr, report, _) =
        conformance(telegram.to_str().unwrap(), Some(&own), &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(failed(&report), Vec::<String>::new(), "{stdout}");
    assert!(
        stdout.contains("the key reached the upstream once"),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    let forwarded = dir.path().join("forwarded.json");
    std::fs::write(
        &forwarded,
        r#"{"config": {"timeout_ms": 1000}, "message": {"to": "-100", "text": "t"}}"#,
    )
    .unwrap();
    let (_, stdout, _, report, _) = conformance(telegram.to_str().unwrap(), Some(&forwarded), &[]);
    assert_eq!(
        failed(&report),
        [
            "idempotency.same-key",
            "retry.with-key-honours-retry-after",
            "retry.stays-inside-deadline"
        ],
        "{stdout}"
    );

    let hook = component("wasip2", built::MESSAGING_WEBHOOK);
    let stateful = dir.path().join("stateful.json");
    let mut profile: Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo().join("components/providers/messaging-webhook/conformance.json"),
        )
        .unwrap(),
    )
    .unwrap();
    profile["idempotency"] = "state".into();
    std::fs::write(&stateful, profile.to_string()).unwrap();
    let (_, stdout, _, report, _) = conformance(hook.to_str().unwrap(), Some(&stateful), &[]);
    assert_eq!(
        failed(&report),
        ["idempotency.same-key", "retry.with-key-honours-retry-after"],
        "{stdout}"
    );
}

/// The broken provider passes every case without a flaw, and with each flaw its
/// configuration switches in fails the cases that catch it, and nothing else.
#[test]
pub(crate) fn the_broken_provider_fails_exactly_the_cases_of_its_flaw() {
    let base: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("components/test-components/broken/conformance.json"))
            .unwrap(),
    )
    .unwrap();
    let wasm = component("wasip2", built::BROKEN);
    let dir = tempfile::tempdir().unwrap();
    for (flaw, cases) in [
        ("none", &[][..]),
        (
            "rate-limit-as-internal",
            &["error-mapping.429-retry-after"][..],
        ),
        ("caches-first-token", &["tenancy.interleaved"]),
        ("caches-first-basic-credential", &["tenancy.interleaved"]),
        ("logs-token", &["secrets.never-emitted"]),
        ("logs-basic-authorization", &["secrets.never-emitted"]),
        (
            "drops-idempotency-key",
            &[
                "idempotency.same-key",
                "retry.with-key-honours-retry-after",
                "retry.stays-inside-deadline",
            ],
        ),
        (
            "no-span",
            &["telemetry.success-span", "telemetry.error-span"],
        ),
        ("calls-undeclared-host", &["manifest-truth.behaviour"]),
        (
            "panics-on-connection-error",
            &["error-mapping.connection-dropped"],
        ),
    ] {
        let mut profile = base.clone();
        profile["config"]["flaw"] = flaw.into();
        let path = dir.path().join(format!("{flaw}.json"));
        std::fs::write(&path, profile.to_string()).unwrap();
        let (code, stdout, stderr, report, junit) =
            conformance(wasm.to_str().unwrap(), Some(&path), &[]);
        assert_eq!(
            code,
            i32::from(!cases.is_empty()),
            "flaw {flaw}:\n{stdout}\n{stderr}"
        );
        assert_eq!(failed(&report), cases, "flaw {flaw}:\n{stdout}");
        assert!(
            junit.contains(&format!("failures=\"{}\"", cases.len())),
            "{junit}"
        );
        for case in cases {
            assert!(
                stdout
                    .lines()
                    .any(|l| l.starts_with(case) && l.contains("FAIL")),
                "{stdout}"
            );
        }
        // The report names the leak without repeating the secret.
        if flaw.starts_with("logs-") {
            let detail = report["results"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["id"] == cases[0])
                .unwrap()["detail"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(detail.contains("WEBHOOK_BEARER_TOKEN"), "{detail}");
            assert!(
                !detail.contains("gcsa"),
                "the report repeats a secret: {detail}"
            );
        }
    }
}

/// A provider whose configuration names a fixed HTTPS host still reaches the suite's upstream:
/// the host redirects its requests (grants checked against the named host).
#[test]
fn fixed_upstream_hosts_are_redirected_to_the_scripted_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.json");
    std::fs::write(
        &profile,
        r#"{"config": {"url": "https://hooks.example.invalid/services/{{tenant}}", "timeout_ms": 1000}}"#,
    )
    .unwrap();
    let wasm = component("wasip2", built::MESSAGING_WEBHOOK);
    let (code, stdout, stderr, report, _) =
        conformance(wasm.to_str().unwrap(), Some(&profile), &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(failed(&report), Vec::<String>::new());
}

/// `conformance REF` pulls from a real registry and verifies by digest before running.
#[test]
fn a_registry_reference_is_certified_like_a_file() {
    let registry = greentic_registry::testing::Registry::start();
    let reference = format!("{}/providers/messaging-webhook:1.0.0", registry.addr);
    let wasm = component("wasip2", built::MESSAGING_WEBHOOK);
    let push = run_host(&["push", wasm.to_str().unwrap(), &reference]);
    assert!(push.status.success(), "{:?}", text(&push));
    let profile = repo().join("components/providers/messaging-webhook/conformance.json");
    let (code, stdout, stderr, report, _) = conformance(&reference, Some(&profile), &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let file = report["file"].as_str().unwrap();
    assert!(
        file.starts_with(&format!(
            "{}/providers/messaging-webhook@sha256:",
            registry.addr
        )),
        "the report should name the pinned digest: {file}"
    );
    assert_eq!(
        report["digest"].as_str().unwrap(),
        format!(
            "sha256:{:x}",
            <sha2::Sha256 as sha2::Digest>::digest(std::fs::read(&wasm).unwrap())
        )
    );
}

#[test]
fn bad_invocations_say_what_to_do() {
    let github = component("wasip2", built::WEBHOOK_GITHUB);
    let (code, _, stderr, _, _) = conformance(github.to_str().unwrap(), None, &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("--profile") && stderr.contains("webhook.signature"),
        "{stderr}"
    );

    let hook = component("wasip2", built::MESSAGING_WEBHOOK);
    let (code, _, stderr, _, _) = conformance(
        hook.to_str().unwrap(),
        None,
        &["--domain", "carrier-pigeon"],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("carrier-pigeon") && stderr.contains("messaging, webhook"),
        "{stderr}"
    );

    let (code, _, stderr, _, _) = conformance("/no/such/provider.wasm", None, &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("/no/such/provider.wasm: no such file"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.json");
    std::fs::write(&profile, r#"{"config": {}, "colour": "blue"}"#).unwrap();
    let (code, _, stderr, _, _) = conformance(hook.to_str().unwrap(), Some(&profile), &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("colour") && stderr.contains("profile.json"),
        "{stderr}"
    );
}
