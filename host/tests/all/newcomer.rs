//! What a newcomer meets in the first hour: `check` refuses what `run` would, every problem in
//! one pass; `run` checks its flags before compiling; errors say what is wrong in words (tokens,
//! keys, files, upstreams) and each cause once; no command panics on a closed pipe; the CLI
//! tells its version and writes completions and a manual page.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{Host, TestBundle, built, component, run_host, run_in, text};
use serde_json::json;

/// A SEC1 (`BEGIN EC PRIVATE KEY`) P-256 key, made for this test only.
const SEC1_KEY: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEINB4JoLQktsMYDoVB96as0SiIjWhsttXHSTZ0VnGa+qsoAoGCCqGSM49
AwEHoUQDQgAEJtD8BnKrJ5x94DWhbsMHDF/FI0cgbB6F4I8b9cV3BoGDJ06bD3aZ
8rZSQo6u/QPfPsyTAzKke45ERG+FbjCi8A==
-----END EC PRIVATE KEY-----
";
/// Its public key.
const SEC1_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEJtD8BnKrJ5x94DWhbsMHDF/FI0cg
bB6F4I8b9cV3BoGDJ06bD3aZ8rZSQo6u/QPfPsyTAzKke45ERG+FbjCi8A==
-----END PUBLIC KEY-----
";

/// A bundle directory with `auth` as its `[auth]` section, an echo provider (from a file) and
/// tenant acme, with the `files` written beside it.
fn bundle_with_auth(auth: &str, tenant: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let echo = component("wasip2", built::ECHO);
    std::fs::write(
        dir.path().join("greentic.toml"),
        format!(
            "[host]\ncache_dir = \"{}\"\n\n[auth]\n{auth}\n\n[providers.echo]\nsource = \"{}\"\nallow_unsigned = true\n\n[tenants.acme]\n{tenant}\n\n[[routes]]\ntenant = \"acme\"\ncapability = \"send\"\nprovider = \"echo\"\n",
            common::shared_cache().display(),
            echo.display()
        ),
    )
    .unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    dir
}

fn check(dir: &Path, json: bool) -> (Option<i32>, String, String) {
    let mut args = vec!["check", dir.to_str().unwrap()];
    if json {
        args.push("--json");
    }
    let out = run_host(&args);
    let (stdout, stderr) = text(&out);
    (out.status.code(), stdout, stderr)
}

#[test]
fn check_refuses_every_key_problem_run_would_stop_on_together_with_the_others() {
    let hs =
        "algorithm = \"HS256\"\nissuer = \"i\"\naudience = \"a\"\nsecret_file = \"jwt.secret\"";
    // A tenant whose config the provider's schema refuses: a problem of another kind, in the
    // same pass.
    let bad_config = "config.echo = { label = 5 }";
    /// `[auth]`, the files beside the bundle, and the words the refusal must have.
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (hs.into(), vec![], vec!["jwt.secret", "No such file"]),
        (
            hs.into(),
            vec![("jwt.secret", "short")],
            vec!["the HS256 secret is 5 bytes; use at least 32 random bytes"],
        ),
        (
            "algorithm = \"ES256\"\nissuer = \"i\"\naudience = \"a\"\npublic_key_file = \"pub.pem\"\ndev_private_key_file = \"key.pem\"".into(),
            vec![("pub.pem", SEC1_PUBLIC), ("key.pem", SEC1_KEY)],
            vec!["SEC1", "openssl pkcs8 -topk8 -nocrypt"],
        ),
        (
            "algorithm = \"ES256\"\nissuer = \"i\"\naudience = \"a\"\npublic_key_file = \"pub.pem\"".into(),
            vec![("pub.pem", SEC1_KEY)],
            vec!["public_key_file is not a P-256 public key", "openssl ec -in private.pem -pubout"],
        ),
    ];
    for (auth, files, words) in cases {
        let dir = bundle_with_auth(&auth, bad_config, &files);
        let (code, _, stderr) = check(dir.path(), false);
        assert_eq!(code, Some(1), "{auth}: {stderr}");
        assert!(!stderr.contains("all checks passed"), "{stderr}");
        for word in words {
            assert!(
                stderr.contains(word),
                "{auth}: expected `{word}` in:\n{stderr}"
            );
        }
        assert!(
            stderr.contains("tenant `acme`") && stderr.contains("label"),
            "the config problem is reported in the same pass:\n{stderr}"
        );
        assert!(stderr.contains("2 problems"), "{stderr}");
        // The same as JSON, for CI.
        let (code, stdout, _) = check(dir.path(), true);
        assert_eq!(code, Some(1));
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report["ok"], false, "{report}");
        assert_eq!(report["problems"].as_array().unwrap().len(), 2, "{report}");
    }
    // And a sound bundle passes, as JSON too.
    let dir = bundle_with_auth(hs, "", &[("jwt.secret", common::JWT_SECRET)]);
    let (code, stdout, stderr) = check(dir.path(), true);
    assert_eq!(code, Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["providers"][0]["name"], "echo", "{report}");
}

#[test]
fn a_bundle_names_every_problem_of_its_shape_and_suggests_the_key_meant() {
    let dir = tempfile::tempdir().unwrap();
    let check_text = |auth: &str| {
        std::fs::write(
            dir.path().join("greentic.toml"),
            format!("[auth]\nalgorithm = \"HS256\"\n{auth}secret_file = \"jwt.secret\"\n\n[tenants.acme]\nlimits = {{ max_concurent = 4 }}\n"),
        )
        .unwrap();
        check(dir.path(), false)
    };
    let (code, _, stderr) = check_text("");
    assert_eq!(code, Some(1));
    for word in [
        "\"issuer\" is a required property",
        "\"audience\" is a required property",
        "max_concurent",
    ] {
        assert!(stderr.contains(word), "expected `{word}` in:\n{stderr}");
    }
    // Fixed, the misspelt key is named with what was meant, and the list of keys is whole.
    let (code, _, stderr) = check_text("issuer = \"i\"\naudience = \"a\"\n");
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("did you mean `max_concurrent`?"),
        "{stderr}"
    );
    assert!(stderr.contains("`deliveries_per_second`"), "{stderr}");
}

#[test]
fn a_manifest_with_two_problems_reports_both_also_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("provider.json");
    std::fs::write(
        &file,
        json!({"name": "x", "version": "1.0", "domain": "mesaging", "capabilities": ["send"], "compat": {"wit": "greentic:messaging/provider@1.0.x"}}).to_string(),
    )
    .unwrap();
    let out = run_host(&["manifest", "--json", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fields: Vec<&str> = report[0]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["field"].as_str())
        .collect();
    assert!(
        fields.contains(&"/version") && fields.contains(&"/domain"),
        "{report}"
    );
}

#[test]
fn run_checks_its_flags_and_addresses_before_compiling_and_leaves_no_lock() {
    let b = TestBundle::new(
        "[providers.echo]\nsource = \"{components}/echo.wasm\"\nallow_unsigned = true\n\n[tenants.acme]\n\n[[routes]]\ntenant = \"acme\"\ncapability = \"send\"\nprovider = \"echo\"\n",
        &[],
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    for (args, words) in [
        (
            vec!["--listen", "0.0.0.0:99999"],
            "`0.0.0.0:99999` is not an address and port",
        ),
        (
            vec!["--listen", busy_addr.as_str()],
            "is in use by another process",
        ),
        (
            vec!["--listen", "127.0.0.1:0", "--admin-listen", "localhost"],
            "`localhost` is not an address and port",
        ),
    ] {
        let started = std::time::Instant::now();
        let mut all = vec!["run", b.path().to_str().unwrap()];
        all.extend(args.iter().copied());
        let out = run_host(&all);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        assert!(stderr.contains(words), "expected `{words}` in: {stderr}");
        assert!(
            !stdout.contains("provider loaded"),
            "nothing is compiled before the flags are checked: {stdout}"
        );
        assert!(
            !b.path().join("greentic.lock").exists(),
            "a run that never served leaves no lock"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
    }
    drop(busy);
}

#[test]
fn token_refuses_a_zero_lifetime_and_prints_json_on_request() {
    let b = TestBundle::new("[tenants.acme]\n", &[]);
    let dir = b.path().to_str().unwrap();
    let out = run_host(&["token", "--bundle", dir, "--tenant", "acme", "--ttl", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("--ttl"), "{}", text(&out).1);
    let out = run_host(&[
        "token", "--bundle", dir, "--tenant", "acme", "--ttl", "60", "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    let minted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(minted["tenant"], "acme");
    assert!(minted["token"].as_str().unwrap().split('.').count() == 3);
    assert!(minted["expires_at"].as_u64().unwrap() > 0);
}

#[test]
fn no_command_panics_on_a_reader_that_went_away() {
    let wasm = component("wasip2", built::WEBHOOK_GITHUB);
    for args in [
        vec!["inspect", "--json", wasm.to_str().unwrap()],
        vec!["completions", "bash"],
        vec!["man"],
    ] {
        let mut child = Command::new(common::host_bin())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the first line is written: `… | head -0`.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn errors_say_what_is_wrong_in_one_line_and_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    // Not wasm: one line, no dump of magic numbers.
    let notes = dir.path().join("notes.wasm");
    std::fs::write(&notes, "hello").unwrap();
    let out = run_host(&["inspect", notes.to_str().unwrap()]);
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("not a WebAssembly file (it is text"),
        "{stderr}"
    );
    assert!(!stderr.contains("0x"), "{stderr}");
    // A missing bundle: the OS's words once.
    let missing = dir.path().join("nope");
    let out = run_host(&["check", missing.to_str().unwrap()]);
    let stderr = text(&out).1;
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    // `sign` with no password and no terminal says which variable to set.
    let sign = || {
        Command::new(common::host_bin())
            .args(["sign", "--key", "cosign.key", "oci:layout:x"])
            .current_dir(dir.path())
            .env_remove("COSIGN_PASSWORD")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = sign();
    assert!(!out.status.success());
    let stderr = text(&out).1;
    assert!(
        stderr.contains("reading cosign.key") || stderr.contains("COSIGN_PASSWORD is not set"),
        "{stderr}"
    );
    assert!(run_in(dir.path(), &["keygen"]).status.success());
    let out = sign();
    let stderr = text(&out).1;
    assert!(!out.status.success());
    assert!(stderr.contains("COSIGN_PASSWORD is not set"), "{stderr}");
    assert!(!stderr.contains("wrong password"), "{stderr}");
}

#[test]
fn version_completions_and_the_manual_come_from_the_program() {
    let out = run_host(&["version", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        v["wasmtime"]
            .as_str()
            .unwrap()
            .starts_with(char::is_numeric),
        "{v}"
    );
    assert!(!v["commit"].as_str().unwrap().is_empty(), "{v}");
    let packages = v["wit_packages"].to_string();
    assert!(packages.contains("greentic:messaging@1.0.0"), "{v}");
    let out = run_host(&["completions", "bash"]);
    let script = text(&out).0;
    assert!(
        out.status.success()
            && script.contains("greentic-host")
            && script.contains("--update-lock")
    );
    let dir = tempfile::tempdir().unwrap();
    let out = run_host(&["man", "--out", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    let page = std::fs::read_to_string(dir.path().join("greentic-host-run.1")).unwrap();
    assert!(
        page.contains(".TH") && page.contains("update\\-lock"),
        "{page}"
    );
}

/// A token signed with the tests' HS256 secret over `claims`, with header algorithm `alg`.
fn token(claims: serde_json::Value, alg: jsonwebtoken::Algorithm) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(common::JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[test]
fn refusals_name_the_problem_in_words_and_every_answer_has_the_error_shape() {
    // A closed port: the provider's upstream refuses connections.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let b = TestBundle::new(
        &format!(
            "[providers.hook]\nsource = \"{{components}}/messaging_webhook.wasm\"\nallow_unsigned = true\ngrants = {{ outbound_hosts = [\"http://127.0.0.1:*\"], secrets = [\"WEBHOOK_BEARER_TOKEN\"] }}\n\n[tenants.acme]\nconfig.hook = {{ url = \"http://127.0.0.1:{port}/x\" }}\n\n[[routes]]\ntenant = \"*\"\ncapability = \"send\"\nprovider = \"hook\"\n"
        ),
        &[],
    );
    let host = Host::start(b.path());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |extra: serde_json::Value| {
        let mut c = json!({"sub": "x", "iss": "greentic-test", "aud": "greentic-host", "exp": now + 60, "iat": now, "tenant": "acme"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let hs = jsonwebtoken::Algorithm::HS256;
    let body = br##"{"to": "#ops", "text": "hi"}"##;
    let send = |t: &str| {
        host.request(
            "POST",
            "/v1/invoke/send",
            &[("authorization", &format!("Bearer {t}"))],
            body,
        )
    };
    for (t, words) in [
        (
            token(claims(json!({"exp": now - 600, "iat": now - 700})), hs),
            "the token expired at ",
        ),
        (
            token(claims(json!({"aud": "elsewhere"})), hs),
            "the token's audience is \"elsewhere\"; this host expects `greentic-host` (auth.audience)",
        ),
        (
            token(claims(json!({"iss": "someone"})), hs),
            "the token's issuer is \"someone\"; this host expects `greentic-test`",
        ),
        (
            token(claims(json!({})), jsonwebtoken::Algorithm::HS512),
            "the token is signed with HS512; this host accepts HS256 only",
        ),
        (
            token(claims(json!({"tenant": null})), hs),
            "the token names no tenant",
        ),
        ("not-a-token".to_string(), "not a JWT"),
        (
            token(claims(json!({"aud": "x".repeat(20_000)})), hs),
            "the token's audience is \"xxx",
        ),
    ] {
        let r = send(&t);
        assert_eq!(r.status, 401, "{}", r.text());
        let message = r.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains(words), "expected `{words}` in: {message}");
        // A claim the refusal quotes is the caller's own, and cut short.
        assert!(message.len() < 1_024, "{} bytes", message.len());
        for internal in [
            "InvalidToken",
            "ExpiredSignature",
            "InvalidAudience",
            "column",
        ] {
            assert!(!message.contains(internal), "{message}");
        }
    }
    // An upstream that refuses connections, in words.
    let r = send(&token(claims(json!({})), hs));
    assert_eq!(r.status, 503, "{}", r.text());
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains(&format!("connection refused by 127.0.0.1:{port}")),
        "{message}"
    );
    // A tenant the bundle does not serve: the same answer on the invoke and webhook paths.
    let stranger = token(claims(json!({"tenant": "stranger"})), hs);
    let invoke = send(&stranger);
    let webhook = host.request(
        "POST",
        "/webhooks/stranger/hook/",
        &[("authorization", &format!("Bearer {stranger}"))],
        b"{}",
    );
    assert_eq!((invoke.status, webhook.status), (404, 404));
    assert_eq!(invoke.json()["code"], "no-route");
    assert_eq!(webhook.json()["code"], "no-route");
    let words = |m: &serde_json::Value| {
        m["message"]
            .as_str()
            .unwrap()
            .replace("`send`", "X")
            .replace("`webhook hook`", "X")
    };
    assert_eq!(words(&invoke.json()), words(&webhook.json()));
    // Paths and methods the host does not serve answer in the same shape.
    for (method, path, status, code) in [
        ("GET", "/v1/nothing", 404, "unknown-endpoint"),
        ("GET", "/v1/invoke/send", 405, "method-not-allowed"),
    ] {
        let r = host.request(method, path, &[], b"");
        assert_eq!(r.status, status, "{}", r.text());
        let answer = r.json();
        assert_eq!(answer["code"], code, "{answer}");
        assert_eq!(answer["retryable"], false, "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(path),
            "{answer}"
        );
    }
}

#[test]
fn run_logs_as_text_or_json_as_asked() {
    let b = TestBundle::new(
        "[providers.echo]\nsource = \"{components}/echo.wasm\"\nallow_unsigned = true\n\n[tenants.acme]\n\n[[routes]]\ntenant = \"acme\"\ncapability = \"send\"\nprovider = \"echo\"\n",
        &[],
    );
    for (format, json) in [("text", false), ("json", true)] {
        let host = Host::start_with_args(b.path(), &["--log-format", format]);
        let line = host.output_with("provider loaded");
        let line = line
            .lines()
            .find(|l| l.contains("provider loaded"))
            .unwrap()
            .to_string();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&line).is_ok(),
            json,
            "{format}: {line}"
        );
    }
}

#[test]
fn check_refuses_what_run_refuses_before_serving_a_fleet() {
    let webhook = "[providers.gh]\nsource = \"{components}/webhook_github.wasm\"\nallow_unsigned = true\ngrants = { secrets = [\"GITHUB_WEBHOOK_SECRET\"], state = true }\n\n[tenants.acme]\nsecrets = [\"GITHUB_WEBHOOK_SECRET\"]\n\n[[routes]]\ntenant = \"acme\"\ncapability = \"receive\"\nprovider = \"gh\"\ndurable = true\n";
    let secrets = [("acme/GITHUB_WEBHOOK_SECRET", "s3cret")];
    // Durable deliveries without a fleet.
    let b = TestBundle::new(webhook, &secrets);
    let (code, _, stderr) = check(b.path(), false);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("`durable = true`"), "{stderr}");
    // A fleet member that trusts no publisher.
    let b = TestBundle::new(
        &format!("{webhook}\n[cluster]\nurl = \"nats://127.0.0.1:1\"\n"),
        &secrets,
    );
    let (code, _, stderr) = check(b.path(), false);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("[cluster].publishers names no key"),
        "{stderr}"
    );
}
