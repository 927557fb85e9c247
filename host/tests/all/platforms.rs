//! The platforms beside Kubernetes, each as its example in deploy/ says: the systemd units
//! (checked by `systemd-analyze`, and the host run the way systemd runs it — socket-activated,
//! notifying readiness, reloads and a watchdog, reading its secrets from credentials and
//! writing only its state and cache directories), the Nomad job (parsed by a real HCL parser,
//! its structure checked; no Nomad server can run here), AWS Secrets Manager against moto's
//! emulator of the API (which checks SigV4 signatures), and the deployment context a provider
//! sees on each platform.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Host, TestBundle, Upstream, free_port, repo};
use serde_json::json;

/// The `Environment=` assignments of a unit file (commented lines are not).
fn unit_environment(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What `echo` says of where it runs: `cloud/region/platform/runtime`.
fn deployment_seen(host: &Host, b: &TestBundle) -> String {
    let r = host.send(
        &b.token("acme", None),
        json!({"to": "@deployment", "text": ""}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

const ECHO: &str = r#"
[providers.echo]
source = "{components}/echo.wasm"
allow_unsigned = true

[tenants.acme]

[[routes]]
tenant = "acme"
capability = "send"
provider = "echo"
"#;

// ---------------------------------------------------------------------------------------------
// systemd

/// A root directory `systemd-analyze --root` can check the units in: the system's own units
/// (for the targets they name), `kill` for ExecReload=, and the built host as both binaries.
fn systemd_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let copy_dir = |from: &Path, to: &Path| {
        let status = Command::new("cp")
            .arg("-r")
            .arg(from)
            .arg(to)
            .status()
            .unwrap();
        assert!(status.success());
    };
    std::fs::create_dir_all(root.path().join("usr/lib/systemd")).unwrap();
    copy_dir(
        Path::new("/usr/lib/systemd/system"),
        &root.path().join("usr/lib/systemd/system"),
    );
    std::fs::create_dir_all(root.path().join("bin")).unwrap();
    std::fs::create_dir_all(root.path().join("usr/local/bin")).unwrap();
    let kill = ["/bin/kill", "/usr/bin/kill"]
        .iter()
        .find(|p| Path::new(p).exists())
        .expect("kill(1)");
    std::fs::copy(kill, root.path().join("bin/kill")).unwrap();
    for bin in ["greentic-host", "nats-server"] {
        std::fs::copy(
            common::host_bin(),
            root.path().join("usr/local/bin").join(bin),
        )
        .unwrap();
    }
    let units = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for entry in std::fs::read_dir(repo().join("deploy/systemd")).unwrap() {
        let path = entry.unwrap().path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("service" | "socket")
        ) {
            std::fs::copy(&path, units.join(path.file_name().unwrap())).unwrap();
        }
    }
    root
}

#[test]
fn the_systemd_units_verify_and_stay_within_the_documented_exposure() {
    let root = systemd_root();
    let units = [
        "greentic-host.service",
        "greentic-host.socket",
        "greentic-host-admin.socket",
        "greentic-nats.service",
    ];
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .args(units)
        .output()
        .expect("systemd-analyze (scripts/test.sh installs it)");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // The README states the ceiling the units are held to.
    let readme = std::fs::read_to_string(repo().join("deploy/systemd/README.md")).unwrap();
    let ceiling: f64 = readme
        .split("exposure at or below ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|n| n.trim_end_matches(['.', ',']).parse().unwrap())
        .expect("deploy/systemd/README.md states `exposure at or below N`");
    for unit in ["greentic-host.service", "greentic-nats.service"] {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes"])
            .arg(format!("--root={}", root.path().display()))
            .arg(unit)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| {
                l.split(&format!("Overall exposure level for {unit}: "))
                    .nth(1)
            })
            .and_then(|rest| rest.split_whitespace().next())
            .map(|n| n.parse().unwrap())
            .unwrap_or_else(|| panic!("no exposure score for {unit}:\n{text}"));
        assert!(
            score <= ceiling,
            "{unit}: exposure {score} is above the documented {ceiling}:\n{text}"
        );
        for must in [
            "✓ PrivateUsers=",
            "✓ NoNewPrivileges=",
            "✓ SystemCallFilter=~@privileged",
        ] {
            assert!(text.contains(must), "{unit}: `{must}` not held:\n{text}");
        }
    }
    // The host's unit says what the issue of running it needs: notify, watchdog, credentials,
    // directories, an empty capability bounding set.
    let unit =
        std::fs::read_to_string(repo().join("deploy/systemd/greentic-host.service")).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "StateDirectory=greentic-host",
        "CacheDirectory=greentic-host",
        "LoadCredential=",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(line), "greentic-host.service lacks `{line}`");
    }
    // The example bundle is a bundle, reads credentials, and each secret it binds has its
    // LoadCredential= line.
    let text = std::fs::read_to_string(repo().join("deploy/systemd/greentic.toml")).unwrap();
    let file: greentic_host::bundle::BundleFile = toml::from_str(&text).unwrap();
    assert_eq!(
        file.secrets.backend,
        greentic_host::capabilities::secrets::SecretBackendKind::SystemdCredentials
    );
    for (tenant, section) in &file.tenants {
        for name in &section.secrets {
            let line = format!("\nLoadCredential={tenant}.{name}:");
            assert!(unit.contains(&line), "no `{line}` in the unit");
        }
    }
}

/// The datagrams a service manager would receive on `NOTIFY_SOCKET`.
struct Notifications {
    path: PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Notifications {
    fn listen(dir: &Path) -> Notifications {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        Notifications { path, seen }
    }

    fn all(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits for a message, after the first `after`, that `wanted` accepts.
    fn wait(&self, after: usize, wanted: impl Fn(&str) -> bool) -> (usize, String) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some((i, m)) = self
                .all()
                .into_iter()
                .enumerate()
                .skip(after)
                .find(|(_, m)| wanted(m))
            {
                return (i, m);
            }
            assert!(
                Instant::now() < deadline,
                "no such notification; seen: {:?}",
                self.all()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Service {
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl Service {
    fn spawn(mut cmd: Command) -> Service {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        Service { child, output }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "did not stop:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn under_systemd_the_host_is_socket_activated_notifies_and_reads_its_credentials() {
    let upstream = Upstream::start(vec![(200, vec![], r#"{"ok":true,"ts":"1.2"}"#.into())]);
    let b = TestBundle::new(
        &format!(
            r#"
[secrets]
backend = "systemd-credentials"

[providers.hook]
source = "{{components}}/messaging_webhook.wasm"
allow_unsigned = true
grants = {{ outbound_hosts = ["http://127.0.0.1:*"], secrets = ["WEBHOOK_BEARER_TOKEN"] }}

[providers.echo]
source = "{{components}}/echo.wasm"
allow_unsigned = true

[tenants.acme]
secrets = ["WEBHOOK_BEARER_TOKEN"]
config.hook = {{ url = "http://{}/hook" }}

[tenants.globex]

[[routes]]
tenant = "acme"
capability = "send"
provider = "hook"

[[routes]]
tenant = "globex"
capability = "send"
provider = "echo"
"#,
            upstream.addr
        ),
        &[],
    );
    // No cache_dir: the unit's CacheDirectory= is where compiled components go.
    let file = b.path().join("greentic.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("cache_dir"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&file, text).unwrap();

    let run = tempfile::tempdir().unwrap();
    let credentials = run.path().join("credentials");
    let state = run.path().join("state");
    let cache = run.path().join("cache");
    for d in [&credentials, &state, &cache] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(
        credentials.join("acme.WEBHOOK_BEARER_TOKEN"),
        "token-from-a-credential",
    )
    .unwrap();
    let notify = Notifications::listen(run.path());
    let (public, admin) = (free_port(), free_port());

    // As systemd starts it: the units' sockets passed in (systemd-socket-activate starts the
    // host on the first connection, with LISTEN_FDS and the names), and the unit's environment.
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg(format!("--listen=127.0.0.1:{public}"))
        .arg(format!("--listen=127.0.0.1:{admin}"))
        .arg("--fdname=public:admin");
    let unit =
        std::fs::read_to_string(repo().join("deploy/systemd/greentic-host.service")).unwrap();
    let mut env: Vec<(String, String)> = unit_environment(&unit);
    assert!(
        env.contains(&("GREENTIC_PLATFORM".into(), "systemd".into())),
        "{env:?}"
    );
    env.extend([
        ("NOTIFY_SOCKET".into(), notify.path.display().to_string()),
        ("WATCHDOG_USEC".into(), "400000".into()),
        (
            "INVOCATION_ID".into(),
            "0123456789abcdef0123456789abcdef".into(),
        ),
        (
            "CREDENTIALS_DIRECTORY".into(),
            credentials.display().to_string(),
        ),
        ("STATE_DIRECTORY".into(), state.display().to_string()),
        ("CACHE_DIRECTORY".into(), cache.display().to_string()),
        ("GREENTIC_LOG_FORMAT".into(), "text".into()),
    ]);
    for (k, v) in &env {
        cmd.arg(format!("--setenv={k}={v}"));
    }
    cmd.arg(common::host_bin()).arg("run").arg(b.path());
    let mut service = Service::spawn(cmd);

    // The first connection starts it; the request waits in the socket's queue meanwhile.
    let public_addr = format!("127.0.0.1:{public}");
    let admin_addr = format!("127.0.0.1:{admin}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        match common::try_http(&public_addr, "GET", "/healthz", &[], b"") {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("{e}: {}", service.output()),
        }
    };
    assert_eq!(health.status, 200, "{}", service.output());
    let (ready_at, ready) = notify.wait(0, |m| m.contains("READY=1"));
    assert!(
        ready.contains("STATUS=serving revision sha256:")
            && ready.contains(&format!("http://{public_addr}")),
        "{ready}"
    );
    assert!(
        notify.all()[..ready_at]
            .iter()
            .any(|m| m.contains("STATUS=loading")),
        "{:?}",
        notify.all()
    );
    assert_eq!(
        common::http(&admin_addr, "GET", "/readyz", &[], b"").status,
        200
    );
    assert!(
        service
            .output()
            .contains(&format!("listening on http://{public_addr}")),
        "the passed socket is the one served: {}",
        service.output()
    );

    // The secret comes from the credential, and reaches the upstream only.
    let r = common::http(
        &public_addr,
        "POST",
        "/v1/invoke/send",
        &[
            (
                "authorization",
                &format!("Bearer {}", b.token("acme", None)),
            ),
            ("content-type", "application/json"),
        ],
        br##"{"to":"#ops","text":"hi"}"##,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        upstream.requests()[0].headers["authorization"],
        "Bearer token-from-a-credential"
    );
    // The provider sees where it runs.
    let r = common::http(
        &public_addr,
        "POST",
        "/v1/invoke/send",
        &[
            (
                "authorization",
                &format!("Bearer {}", b.token("globex", None)),
            ),
            ("content-type", "application/json"),
        ],
        br#"{"to":"@deployment","text":""}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["id"]
            .as_str()
            .unwrap()
            .starts_with("local/-/systemd/wasmtime"),
        "{}",
        r.text()
    );
    // Written where the unit lets it write: the cache key in the state directory, compiled
    // components in the cache directory; nothing beside the bundle but the lock.
    assert!(state.join("cache.key").is_file());
    assert!(
        std::fs::read_dir(cache.join("compiled")).unwrap().count() > 0,
        "nothing compiled into $CACHE_DIRECTORY/compiled"
    );
    assert!(!b.path().join(".greentic").exists());

    // The watchdog hears from it every WATCHDOG_USEC / 2.
    let before = notify.all().iter().filter(|m| *m == "WATCHDOG=1").count();
    std::thread::sleep(Duration::from_millis(1_000));
    let pings = notify.all().iter().filter(|m| *m == "WATCHDOG=1").count() - before;
    assert!((3..=7).contains(&pings), "{pings} watchdog pings in 1 s");

    // `systemctl reload`: RELOADING=1 with the monotonic time, then READY=1 once done.
    let mark = notify.all().len();
    service.signal("HUP");
    let (at, reloading) = notify.wait(mark, |m| m.starts_with("RELOADING=1"));
    let usec = reloading
        .split("MONOTONIC_USEC=")
        .nth(1)
        .expect("MONOTONIC_USEC beside RELOADING=1");
    assert!(usec.trim().parse::<u64>().unwrap() > 0);
    let (_, done) = notify.wait(at + 1, |m| m.contains("READY=1"));
    assert!(done.contains("(unchanged)"), "{done}");

    // `systemctl stop`: STOPPING=1, and a clean exit.
    let mark = notify.all().len();
    service.signal("TERM");
    notify.wait(mark, |m| m.starts_with("STOPPING=1"));
    assert!(service.wait().success(), "{}", service.output());
    assert!(
        !service.output().contains("token-from-a-credential"),
        "a secret was logged"
    );
}

#[test]
fn systemd_credentials_outside_systemd_is_a_clear_error() {
    let b = TestBundle::new(
        "[secrets]\nbackend = \"systemd-credentials\"\n\n[tenants.acme]\n",
        &[],
    );
    let out = Command::new(common::host_bin())
        .args(["check", b.path().to_str().unwrap()])
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("GREENTIC_CACHE_KEY_FILE", common::cache_key_file())
        .output()
        .unwrap();
    let (_, err) = common::text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("$CREDENTIALS_DIRECTORY") && err.contains("LoadCredential="),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Nomad

/// The job file as JSON, parsed by python-hcl2 (scripts/hcl-to-json.py).
fn nomad_job() -> serde_json::Value {
    let python = common::tool_python("GREENTIC_PLATFORM_TOOLS", "platform-tools-1");
    let out = Command::new(&python)
        .arg(repo().join("scripts/hcl-to-json.py"))
        .arg(repo().join("deploy/nomad/greentic.nomad.hcl"))
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (scripts/test.sh installs it)"));
    assert!(
        out.status.success(),
        "the job is not valid HCL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The one block labelled `label` of kind `kind` in `parent`.
fn block<'a>(parent: &'a serde_json::Value, kind: &str, label: &str) -> &'a serde_json::Value {
    parent[kind]
        .as_array()
        .unwrap_or_else(|| panic!("no `{kind}` in {parent}"))
        .iter()
        .find_map(|b| b.get(label))
        .unwrap_or_else(|| panic!("no {kind} \"{label}\""))
}

/// The one unlabelled block `kind` in `parent`.
fn only<'a>(parent: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    let all = parent[kind]
        .as_array()
        .unwrap_or_else(|| panic!("no `{kind}` in {parent}"));
    assert_eq!(all.len(), 1, "one `{kind}`");
    &all[0]
}

#[test]
fn the_nomad_job_parses_and_has_the_shape_an_operator_expects() {
    let doc = nomad_job();
    let job = block(&doc, "job", "greentic-host");
    assert_eq!(job["type"], "service");
    // Canaries that revert themselves, judged by the health checks.
    let update = only(job, "update");
    assert!(update["canary"].as_u64().unwrap() >= 1, "{update}");
    assert_eq!(update["auto_revert"], true);
    assert_eq!(update["health_check"], "checks");
    let group = block(job, "group", "host");
    let task = block(group, "task", "greentic-host");
    // Readiness on the admin port's /readyz.
    let service = only(group, "service");
    let checks = service["check"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["path"] == "/readyz" && c["port"] == "admin" && c["type"] == "http"),
        "{service}"
    );
    let ports = &only(group, "network")["port"];
    let admin_port = ports
        .as_array()
        .unwrap()
        .iter()
        .find_map(|p| p.get("admin"))
        .expect("an admin port")["to"]
        .as_u64()
        .unwrap();
    // The bundle is rendered into the task, reloaded by SIGHUP, and is a valid bundle whose
    // admin listener is that port.
    let templates = task["template"].as_array().unwrap();
    let bundle = templates
        .iter()
        .find(|t| t["destination"] == "local/bundle/greentic.toml")
        .expect("a template rendering the bundle");
    assert_eq!(bundle["change_mode"], "signal");
    assert_eq!(bundle["change_signal"], "SIGHUP");
    let text = bundle["data"].as_str().unwrap();
    let file: greentic_host::bundle::BundleFile =
        toml::from_str(text).unwrap_or_else(|e| panic!("the job's bundle: {e}\n{text}"));
    assert!(
        file.host.admin_listen.ends_with(&format!(":{admin_port}")),
        "{}",
        file.host.admin_listen
    );
    // kill_timeout covers the bundle's shutdown grace.
    let kill: u64 = task["kill_timeout"]
        .as_str()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(kill > file.host.shutdown_grace_secs);
    // Every secret every tenant binds is rendered from Vault into the file backend's layout,
    // in the task's secrets directory, readable by the task alone.
    assert!(task.get("vault").is_some(), "a vault block");
    let dir = file.secrets.dir.display().to_string();
    assert_eq!(dir, "/secrets/tenants");
    assert!(!file.tenants.is_empty());
    for (tenant, section) in &file.tenants {
        for name in &section.secrets {
            let want = format!("secrets/tenants/{tenant}/{name}");
            let t = templates
                .iter()
                .find(|t| t["destination"] == want.as_str())
                .unwrap_or_else(|| panic!("no template renders {want}"));
            assert!(
                t["data"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("secret \"kv/data/greentic/{tenant}\"")),
                "{t}"
            );
            assert_eq!(t["perms"], "0400");
        }
    }
    let env = only(task, "env");
    assert_eq!(env["GREENTIC_PLATFORM"], "nomad");
}

// ---------------------------------------------------------------------------------------------
// The deployment context on each platform

/// Starts `echo` with the environment a platform's example gives, and `bundle_deployment` as
/// the bundle's `[host] deployment`; returns what the provider sees.
fn seen_with(env: &[(String, String)], bundle_deployment: Option<&str>) -> String {
    let b = TestBundle::new(ECHO, &[]);
    if let Some(line) = bundle_deployment {
        b.set_host(line);
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let host = Host::start_with_env(b.path(), &env);
    deployment_seen(&host, &b)
}

#[test]
fn each_platform_example_gives_providers_its_deployment_context() {
    // Kubernetes: the Deployment's env (the downward API's region label resolved as the
    // kubelet would) and the ConfigMap bundle's `deployment`.
    let python = common::tool_python("GREENTIC_PLATFORM_TOOLS", "platform-tools-1");
    let out = Command::new(&python)
        .arg("-c")
        .arg("import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))")
        .arg(repo().join("deploy/kubernetes/host-deployment.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let pod_labels = [("topology.kubernetes.io/region", "eu-central-1")];
    let mut env = vec![(
        "KUBERNETES_SERVICE_HOST".to_string(),
        "10.96.0.1".to_string(),
    )];
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        if let Some(v) = e["value"].as_str() {
            env.push((name, v.to_string()));
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            let label = path
                .strip_prefix("metadata.labels['")
                .and_then(|l| l.strip_suffix("']"))
                .unwrap_or_else(|| panic!("a fieldRef this test does not resolve: {path}"));
            let value = pod_labels
                .iter()
                .find(|(k, _)| *k == label)
                .map(|(_, v)| v.to_string())
                .unwrap_or_default();
            env.push((name, value));
        }
    }
    env.retain(|(k, _)| k != "OTEL_EXPORTER_OTLP_ENDPOINT" && k != "GREENTIC_CACHE_KEY_FILE");
    let configmap =
        std::fs::read_to_string(repo().join("deploy/kubernetes/host-bundle-configmap.yaml"))
            .unwrap();
    let line = configmap
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("deployment = "))
        .expect("the ConfigMap's bundle sets [host] deployment");
    assert!(
        seen_with(&env, Some(line)).starts_with("local/eu-central-1/k8s/wasmtime"),
        "kubernetes"
    );

    // Nomad: the job's env stanza (its variables at their defaults) and what Nomad sets.
    let doc = nomad_job();
    let job = block(&doc, "job", "greentic-host");
    let task = block(block(job, "group", "host"), "task", "greentic-host");
    let cloud_default = block(&doc, "variable", "cloud")["default"]
        .as_str()
        .unwrap()
        .to_string();
    let mut env: Vec<(String, String)> = only(task, "env")
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .unwrap()
                .replace("${var.cloud}", &cloud_default)
                .replace("${NOMAD_ALLOC_ID}", "5b0c9c4e-1f1a-4d8e-9d6e-0c2b9f0a7e11");
            (k.clone(), v)
        })
        .collect();
    env.extend([
        (
            "NOMAD_ALLOC_ID".to_string(),
            "5b0c9c4e-1f1a-4d8e-9d6e-0c2b9f0a7e11".to_string(),
        ),
        ("NOMAD_REGION".into(), "eu-west".into()),
    ]);
    assert_eq!(
        seen_with(&env, None).split('/').take(3).collect::<Vec<_>>(),
        ["local", "eu-west", "nomad"],
        "nomad"
    );

    // systemd: the unit's Environment= and what systemd sets for a notify service.
    let unit =
        std::fs::read_to_string(repo().join("deploy/systemd/greentic-host.service")).unwrap();
    let mut env = unit_environment(&unit);
    env.retain(|(k, _)| k != "GREENTIC_LOG_FORMAT");
    env.push(("INVOCATION_ID".into(), "0123456789abcdef".into()));
    assert!(
        seen_with(
            &env,
            Some("deployment = { cloud = \"hetzner\", region = \"fsn1\" }")
        )
        .starts_with("hetzner/fsn1/systemd/wasmtime"),
        "systemd"
    );

    // Bare metal: the bundle alone says where; nothing is detected.
    assert!(
        seen_with(
            &[],
            Some("deployment = { cloud = \"hetzner\", region = \"fsn1\" }")
        )
        .starts_with("hetzner/fsn1/baremetal/wasmtime"),
        "bare metal"
    );
    // The platform's word beats the shared bundle's; and a route for a cloud follows it.
    assert!(
        seen_with(
            &[("GREENTIC_REGION".into(), "nbg1".into())],
            Some("deployment = { cloud = \"hetzner\", region = \"fsn1\" }")
        )
        .starts_with("hetzner/nbg1/baremetal/"),
    );
}

// ---------------------------------------------------------------------------------------------
// AWS Secrets Manager, against moto's emulator of the API

/// moto in server mode on loopback, checking every request's SigV4 signature once the setup's
/// first three (unsigned) IAM calls are done, with an IAM user allowed Secrets Manager.
struct Moto {
    child: Child,
    url: String,
    python: String,
    access_key: String,
    secret_key: String,
}

impl Moto {
    fn start() -> Moto {
        let python = common::tool_python("GREENTIC_PLATFORM_TOOLS", "platform-tools-1");
        let server = Path::new(&python).with_file_name("moto_server");
        let port = free_port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (scripts/test.sh installs it)", server.display()));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = Moto::boto(
            &python,
            &url,
            None,
            r#"
iam = client("iam", "AKIDROOT", "root")
iam.create_user(UserName="greentic-host")
key = iam.create_access_key(UserName="greentic-host")["AccessKey"]
iam.put_user_policy(UserName="greentic-host", PolicyName="secrets", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"}]}))
print(json.dumps([key["AccessKeyId"], key["SecretAccessKey"]]))
"#,
        );
        let [access_key, secret_key]: [String; 2] = serde_json::from_str(&out).unwrap();
        Moto {
            child,
            url,
            python,
            access_key,
            secret_key,
        }
    }

    /// Runs `code` with boto3 (`client(service, key, secret)`, `json`), signed as the host's
    /// user when `keys` are given; returns its stdout.
    fn boto(python: &str, url: &str, keys: Option<(&str, &str)>, code: &str) -> String {
        let (key, secret) = keys.unwrap_or(("", ""));
        let prelude = format!(
            "import json, boto3\ndef client(service, key={key:?}, secret={secret:?}):\n    return boto3.client(service, endpoint_url={url:?}, region_name='eu-west-1', aws_access_key_id=key, aws_secret_access_key=secret)\nsm = lambda: client('secretsmanager')\n"
        );
        let out = Command::new(python)
            .arg("-c")
            .arg(format!("{prelude}{code}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn put(&self, name: &str, value: &str) {
        Moto::boto(
            &self.python,
            &self.url,
            Some((&self.access_key, &self.secret_key)),
            &format!(
                "s = sm()\ntry:\n    s.create_secret(Name={name:?}, SecretString={value:?})\nexcept s.exceptions.ResourceExistsException:\n    s.put_secret_value(SecretId={name:?}, SecretString={value:?})\n"
            ),
        );
    }

    fn put_binary(&self, name: &str, value: &[u8]) {
        Moto::boto(
            &self.python,
            &self.url,
            Some((&self.access_key, &self.secret_key)),
            &format!("sm().create_secret(Name={name:?}, SecretBinary=bytes({value:?}))\n"),
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A proxy in front of moto that answers the next `throttle` requests itself with AWS's
/// `ThrottlingException` (moto never throttles), and counts the requests it forwards.
struct Throttler {
    url: String,
    throttle: Arc<AtomicUsize>,
    forwarded: Arc<AtomicUsize>,
}

impl Throttler {
    fn start(upstream: &str) -> Throttler {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let throttle = Arc::new(AtomicUsize::new(0));
        let forwarded = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.trim_start_matches("http://").to_string();
        let (t, f) = (throttle.clone(), forwarded.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (t, f, upstream) = (t.clone(), f.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let Some(req) = common::read_request(&mut stream) else {
                        return;
                    };
                    let throttled = t
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if throttled {
                        let body = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
                        let _ = write!(
                            stream,
                            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        return;
                    }
                    f.fetch_add(1, Ordering::SeqCst);
                    let mut up = TcpStream::connect(&upstream).unwrap();
                    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
                    for (k, v) in &req.headers {
                        if k != "connection" {
                            head.push_str(&format!("{k}: {v}\r\n"));
                        }
                    }
                    head.push_str("connection: close\r\n\r\n");
                    up.write_all(head.as_bytes()).unwrap();
                    up.write_all(&req.body).unwrap();
                    let mut answer = Vec::new();
                    up.read_to_end(&mut answer).unwrap();
                    let _ = stream.write_all(&answer);
                });
            }
        });
        Throttler {
            url,
            throttle,
            forwarded,
        }
    }
}

fn aws_backend(
    moto: &Moto,
    endpoint: &str,
    secret_key: &str,
    ttl: Duration,
) -> greentic_host::capabilities::secrets::AwsSecretsManager {
    use greentic_host::capabilities::secrets::aws::{AwsConfig, CredentialSource, Credentials};
    greentic_host::capabilities::secrets::AwsSecretsManager::new(AwsConfig {
        region: "eu-west-1".into(),
        endpoint: endpoint.into(),
        name_template: "greentic/{tenant}/{name}".into(),
        ttl,
        max_stale: Duration::from_secs(600),
        credentials: CredentialSource::Static(Arc::new(Credentials {
            access_key_id: moto.access_key.clone(),
            secret_access_key: secret_key.to_string().into(),
            session_token: None,
        })),
    })
    .unwrap()
}

#[test]
fn aws_secrets_manager_reads_caches_refreshes_and_rides_out_throttling() {
    use greentic_host::capabilities::secrets::SecretBackend;
    let moto = Moto::start();
    moto.put("greentic/acme/TOKEN", "v1");
    moto.put_binary("greentic/acme/KEY", &[0, 159, 146, 150]);
    let proxy = Throttler::start(&moto.url);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ttl = Duration::from_millis(800);
    let aws = aws_backend(&moto, &proxy.url, &moto.secret_key, ttl);
    let get = |tenant: &str, name: &str| {
        rt.block_on(aws.get(tenant, name))
            .map(|v| v.map(|v| v.to_vec()))
    };

    assert_eq!(get("acme", "TOKEN").unwrap().unwrap(), b"v1");
    assert_eq!(get("acme", "KEY").unwrap().unwrap(), [0, 159, 146, 150]);
    // A secret that does not exist is absent, as a missing file is.
    assert_eq!(get("globex", "TOKEN").unwrap(), None);
    // Cached: the same read again does not reach AWS.
    let before = proxy.forwarded.load(Ordering::SeqCst);
    assert_eq!(get("acme", "TOKEN").unwrap().unwrap(), b"v1");
    assert_eq!(proxy.forwarded.load(Ordering::SeqCst), before);

    // Rotated in AWS: seen once the TTL has passed — through two throttled answers, retried.
    moto.put("greentic/acme/TOKEN", "v2");
    std::thread::sleep(ttl);
    proxy.throttle.store(2, Ordering::SeqCst);
    assert_eq!(get("acme", "TOKEN").unwrap().unwrap(), b"v2");
    assert_eq!(proxy.throttle.load(Ordering::SeqCst), 0);

    // Throttled for good: the cached value keeps serving past its TTL.
    std::thread::sleep(ttl);
    proxy.throttle.store(1_000, Ordering::SeqCst);
    assert_eq!(get("acme", "TOKEN").unwrap().unwrap(), b"v2");
    // Nothing cached and throttled: an error naming why (the provider sees not-found, as for
    // an unreadable file).
    let e = get("acme", "NEVER_READ").unwrap_err().to_string();
    assert!(
        e.contains("ThrottlingException") && e.contains("greentic/acme/NEVER_READ"),
        "{e}"
    );
    proxy.throttle.store(0, Ordering::SeqCst);

    // Concurrent misses of one secret make one request.
    moto.put("greentic/acme/BURST", "b");
    let before = proxy.forwarded.load(Ordering::SeqCst);
    let got = rt.block_on(async {
        let all = (0..32).map(|_| aws.get("acme", "BURST"));
        futures_util::future::join_all(all).await
    });
    assert!(
        got.iter()
            .all(|v| v.as_ref().unwrap().as_ref().map(|v| v.as_slice()) == Some(&b"b"[..]))
    );
    assert_eq!(proxy.forwarded.load(Ordering::SeqCst) - before, 1);

    // A wrong key is refused by AWS's signature check: an error, not a value, never retried.
    let wrong = aws_backend(&moto, &moto.url, "not-the-secret-key", ttl);
    let e = rt
        .block_on(wrong.get("acme", "TOKEN"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("greentic/acme/TOKEN"), "{e}");
    assert!(
        !e.contains("v2") && !e.contains(&moto.secret_key),
        "a secret in an error: {e}"
    );
}

#[test]
fn the_host_reads_tenants_secrets_from_aws_and_names_a_missing_one() {
    let moto = Moto::start();
    moto.put("prod/acme/WEBHOOK_BEARER_TOKEN", "token-from-aws");
    let upstream = Upstream::start(vec![(200, vec![], r#"{"ok":true,"ts":"1.2"}"#.into())]);
    let toml = |extra: &str| {
        format!(
            r#"
[secrets]
backend = "aws-secrets-manager"
region = "eu-west-1"
endpoint = "{}"
name_template = "prod/{{tenant}}/{{name}}"

[providers.hook]
source = "{{components}}/messaging_webhook.wasm"
allow_unsigned = true
grants = {{ outbound_hosts = ["http://127.0.0.1:*"], secrets = ["WEBHOOK_BEARER_TOKEN"] }}

[tenants.acme]
secrets = ["WEBHOOK_BEARER_TOKEN"]
config.hook = {{ url = "http://{}/hook" }}

[[routes]]
tenant = "acme"
capability = "send"
provider = "hook"
{extra}"#,
            moto.url, upstream.addr
        )
    };
    let env = [
        ("AWS_ACCESS_KEY_ID", moto.access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", moto.secret_key.as_str()),
    ];
    // A tenant whose secret AWS does not hold is named, as the file backend names a missing file.
    let b = TestBundle::new(
        &toml(
            r#"
[providers.github]
source = "{components}/webhook_github.wasm"
allow_unsigned = true
grants = { secrets = ["GITHUB_WEBHOOK_SECRET"], state = true }

[tenants.globex]
secrets = ["GITHUB_WEBHOOK_SECRET"]

[[routes]]
tenant = "globex"
capability = "receive"
provider = "github"
"#,
        ),
        &[],
    );
    let out = Command::new(common::host_bin())
        .args(["check", b.path().to_str().unwrap()])
        .envs(env)
        .env("GREENTIC_CACHE_KEY_FILE", common::cache_key_file())
        .output()
        .unwrap();
    let (stdout, stderr) = common::text(&out);
    assert!(!out.status.success());
    assert!(
        format!("{stdout}{stderr}").contains(
            "AWS Secrets Manager secret `prod/globex/GITHUB_WEBHOOK_SECRET` in eu-west-1"
        ),
        "{stdout}{stderr}"
    );

    let b = TestBundle::new(&toml(""), &[]);
    let host = Host::start_with_env(b.path(), &env);
    let r = host.send(&b.token("acme", None), json!({"to": "#ops", "text": "hi"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        upstream.requests()[0].headers["authorization"],
        "Bearer token-from-aws"
    );
    assert!(!host.settled_output().contains("token-from-aws"));
}
