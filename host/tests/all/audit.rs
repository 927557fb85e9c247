//! The audit log of a running host: signature and load decisions, the revision activated,
//! every secret read (never its value), admin reloads, in a hash chain with signed checkpoints
//! that `greentic-host audit verify` accepts — and refuses with a record removed, reordered or
//! edited. The same records reach a real OTLP/HTTP receiver as logs.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use serde_json::{Value, json};

use crate::common::{self, Host, TestBundle, Upstream, built, component, run_in, text};

const SECRET_VALUE: &str = "s3cr3t-bearer-value";

fn bundle(layout: &str, upstream: &str, otlp: &str, deadline_ms: u64) -> String {
    format!(
        r#"
[telemetry]
otlp_endpoint = "http://{otlp}"

[audit]
file = "audit/audit.log"
key_file = "audit.key"
checkpoint_every = 5
host = "audit-test-host"

[trust.keys]
dev = "cosign.pub"

[providers.hook]
source = "{layout}"
grants.outbound_hosts = ["http://127.0.0.1:*"]
grants.secrets = ["WEBHOOK_BEARER_TOKEN"]

[tenants.acme]
secrets = ["WEBHOOK_BEARER_TOKEN"]
limits.deadline_ms = {deadline_ms}

[tenants.acme.config.hook]
url = "http://{upstream}/hook"

[[routes]]
tenant = "acme"
capability = "send"
provider = "hook"
"#
    )
}

/// An OTLP/HTTP log receiver: decodes every export request and keeps the records.
fn receiver() -> (String, Arc<Mutex<Vec<LogRecord>>>) {
    let otlp = common::otlp();
    (otlp.addr, otlp.logs)
}

fn attr(record: &LogRecord, key: &str) -> Option<String> {
    record
        .attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            _ => None,
        })
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn verify(dir: &Path, file: &Path, key: &str) -> (bool, String) {
    let out = run_in(
        dir,
        &[
            "audit",
            "verify",
            file.to_str().unwrap(),
            "--key",
            key,
            "--signed-through-end",
        ],
    );
    let (stdout, stderr) = text(&out);
    (out.status.success(), format!("{stdout}{stderr}"))
}

#[test]
fn the_audit_log_records_decisions_secret_reads_and_admin_actions_and_detects_tampering() {
    let upstream = Upstream::start(vec![(200, vec![], r#"{"ok":true,"ts":"1.1"}"#.into())]);
    let (otlp, exported) = receiver();
    let b = TestBundle::new("", &[("acme/WEBHOOK_BEARER_TOKEN", SECRET_VALUE)]);
    let dir = b.path();
    let layout = format!("oci:{}:v1", dir.join("layout").display());
    for args in [
        vec!["keygen"],
        vec!["keygen", "--output-key-prefix", "audit"],
        vec!["keygen", "--output-key-prefix", "stranger"],
        vec![
            "push",
            component("wasip2", built::MESSAGING_WEBHOOK)
                .to_str()
                .unwrap(),
            &layout,
        ],
        vec!["sign", "--key", "cosign.key", &layout],
    ] {
        let out = run_in(dir, &args);
        assert!(out.status.success(), "{args:?}: {}", text(&out).1);
    }
    b.rewrite(&bundle(&layout, &upstream.addr, &otlp, 5000));
    let env = [("GREENTIC_AUDIT_KEY_PASSWORD", "correct horse")];

    let host = Host::start_with_env(dir, &env);
    let token = b.token("acme", None);
    for i in 0..3 {
        let r = host.send(&token, json!({"to": "#ops", "text": format!("m{i}")}));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        upstream.requests()[0]
            .headers
            .get("authorization")
            .map(String::as_str),
        Some(format!("Bearer {SECRET_VALUE}").as_str()),
        "the provider read the secret"
    );
    // A reload through the admin API, and one refused.
    b.rewrite(&bundle(&layout, &upstream.addr, &otlp, 4000));
    assert_eq!(host.admin("POST", "/reload").status, 200);
    b.rewrite("[providers.broken]\nsource = \"nowhere.wasm\"\n");
    assert_eq!(host.admin("POST", "/reload").status, 422);
    assert!(host.terminate().success());

    let log = dir.join("audit/audit.log");
    let all = records(&log);
    let kinds: Vec<&str> = all.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    for kind in [
        "audit.opened",
        "signature.verified",
        "provider.resolved",
        "revision.activated",
        "secret.read",
        "admin.reload",
        "revision.refused",
        "admin.shutdown",
        "audit.closed",
        "audit.checkpoint",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    assert_eq!(
        kinds.last(),
        Some(&"audit.checkpoint"),
        "a clean stop ends signed"
    );
    let reads: Vec<&Value> = all.iter().filter(|r| r["kind"] == "secret.read").collect();
    assert_eq!(reads.len(), 3, "one read per call");
    assert_eq!(
        reads[0]["event"],
        json!({"tenant": "acme", "provider": "hook", "name": "WEBHOOK_BEARER_TOKEN", "result": "ok"})
    );
    let signed = all
        .iter()
        .find(|r| r["kind"] == "signature.verified")
        .unwrap();
    assert_eq!(signed["event"]["provider"], "hook");
    assert!(
        signed["event"]["reference"]
            .as_str()
            .unwrap()
            .contains("@sha256:")
    );
    assert_eq!(
        all.iter()
            .filter(|r| r["kind"] == "revision.activated")
            .count(),
        2,
        "startup and the reload"
    );
    let text_of_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text_of_log.contains(SECRET_VALUE),
        "a secret value reached the audit log"
    );

    let (ok, out) = verify(dir, &log, "audit.pub");
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("{} record(s) verified", all.len())),
        "{out}"
    );
    let (ok, out) = verify(dir, &log, "stranger.pub");
    assert!(!ok);
    assert!(out.contains("not signed by a trusted key"), "{out}");

    // Tampered copies: one record removed, two swapped, one edited.
    let lines: Vec<&str> = text_of_log.lines().collect();
    let secret_line = lines
        .iter()
        .position(|l| l.contains("\"secret.read\""))
        .unwrap();
    let tampered = |name: &str, edit: &dyn Fn(&mut Vec<String>)| {
        let mut copy: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        edit(&mut copy);
        let path = dir.join(name);
        std::fs::write(&path, copy.join("\n") + "\n").unwrap();
        let (ok, out) = verify(dir, &path, "audit.pub");
        assert!(!ok, "{name} verified:\n{out}");
        out
    };
    let out = tampered("removed.log", &|l| {
        l.remove(secret_line);
    });
    assert!(
        out.contains(&format!("line {}", secret_line + 1)) && out.contains("removed"),
        "{out}"
    );
    let out = tampered("reordered.log", &|l| l.swap(secret_line, secret_line + 1));
    assert!(out.contains(&format!("line {}", secret_line + 1)), "{out}");
    let out = tampered("edited.log", &|l| {
        l[secret_line] = l[secret_line].replace("\"tenant\":\"acme\"", "\"tenant\":\"beta\"");
    });
    assert!(out.contains("edited"), "{out}");
    let out = tampered("truncated.log", &|l| {
        l.truncate(l.len() - 1);
    });
    assert!(out.contains("follow the last signed checkpoint"), "{out}");

    // The same records were exported as OTLP logs, carrying the chain's hashes.
    let deadline = Instant::now() + Duration::from_secs(10);
    let exported_read = loop {
        let got = exported.lock().unwrap().clone();
        if let Some(r) = got
            .iter()
            .find(|r| attr(r, "audit.kind").as_deref() == Some("secret.read"))
        {
            break r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no secret.read log exported: {} records",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        attr(&exported_read, "event.name").as_deref(),
        Some("WEBHOOK_BEARER_TOKEN")
    );
    assert_eq!(
        attr(&exported_read, "event.tenant").as_deref(),
        Some("acme")
    );
    let seq: u64 = attr(&exported_read, "audit.seq").unwrap().parse().unwrap();
    let in_file = all.iter().find(|r| r["seq"] == seq).unwrap();
    assert_eq!(
        attr(&exported_read, "audit.hash").as_deref(),
        in_file["hash"].as_str()
    );
    let exported_all = exported.lock().unwrap().clone();
    assert!(
        exported_all
            .iter()
            .all(|r| !format!("{r:?}").contains(SECRET_VALUE)),
        "a secret value was exported"
    );

    // A restart continues the same chain.
    b.rewrite(&bundle(&layout, &upstream.addr, &otlp, 5000));
    let host = Host::start_with_env(dir, &env);
    assert_eq!(
        host.send(&token, json!({"to": "#ops", "text": "again"}))
            .status,
        200
    );
    assert!(host.terminate().success());
    let again = records(&log);
    assert!(again.len() > all.len());
    assert_eq!(again[all.len()]["kind"], "audit.opened");
    assert_eq!(again[all.len()]["prev"], all.last().unwrap()["hash"]);
    let (ok, out) = verify(dir, &log, "audit.pub");
    assert!(ok, "{out}");

    // Checkpoints name the host and the log's first record: `--host` tells this host's log
    // from another's signed with the same key.
    let checkpoint = again
        .iter()
        .find(|r| r["kind"] == "audit.checkpoint")
        .unwrap();
    assert_eq!(checkpoint["event"]["host"], "audit-test-host");
    assert_eq!(checkpoint["event"]["first"], again[0]["hash"]);
    let verify_with = |file: &Path, extra: &[&str]| {
        let mut args = vec![
            "audit",
            "verify",
            file.to_str().unwrap(),
            "--key",
            "audit.pub",
        ];
        args.extend_from_slice(extra);
        let out = run_in(dir, &args);
        let (stdout, stderr) = text(&out);
        (out.status.success(), format!("{stdout}{stderr}"))
    };
    let (ok, out) = verify_with(&log, &["--host", "audit-test-host"]);
    assert!(ok, "{out}");
    assert!(out.contains("host audit-test-host"), "{out}");
    let (ok, out) = verify_with(&log, &["--host", "another-host"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("its checkpoints name host `audit-test-host`"),
        "{out}"
    );

    // Nothing signed vouches for an empty log, or for records no checkpoint covers.
    let empty = dir.join("empty.log");
    std::fs::write(&empty, "").unwrap();
    for extra in [&[][..], &["--signed-through-end"][..]] {
        let (ok, out) = verify_with(&empty, extra);
        assert!(!ok, "an empty log verified: {out}");
        assert!(out.contains("holds no record"), "{out}");
    }
    let (ok, out) = verify_with(&empty, &["--allow-unsigned"]);
    assert!(ok, "{out}");
    let first_checkpoint = again
        .iter()
        .position(|r| r["kind"] == "audit.checkpoint")
        .unwrap();
    let unsigned = dir.join("unsigned.log");
    let text_now = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text_now.lines().take(first_checkpoint).collect();
    std::fs::write(&unsigned, lines.join("\n") + "\n").unwrap();
    let (ok, out) = verify_with(&unsigned, &[]);
    assert!(!ok, "a log without a checkpoint verified: {out}");
    assert!(out.contains("covered by a signed checkpoint"), "{out}");
    let (ok, out) = verify_with(&unsigned, &["--allow-unsigned"]);
    assert!(ok, "{out}");
}

#[test]
fn a_host_without_the_audit_keys_password_does_not_start() {
    let b = TestBundle::new(
        "[audit]\nfile = \"audit.log\"\nkey_file = \"audit.key\"\n\n[providers.echo]\nsource = \"{components}/echo.wasm\"\nallow_unsigned = true\n\n[tenants.acme]\n\n[[routes]]\ntenant = \"acme\"\ncapability = \"send\"\nprovider = \"echo\"\n",
        &[],
    );
    let dir = b.path();
    assert!(
        run_in(dir, &["keygen", "--output-key-prefix", "audit"])
            .status
            .success()
    );
    let out = std::process::Command::new(common::host_bin())
        .args([
            "run",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env_remove("GREENTIC_AUDIT_KEY_PASSWORD")
        .env("GREENTIC_CACHE_KEY_FILE", common::cache_key_file())
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("GREENTIC_AUDIT_KEY_PASSWORD, which is not set"),
        "{stderr}"
    );
    assert!(!dir.join("audit.log").exists());
}
