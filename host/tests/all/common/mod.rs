//! Helpers shared by the host's integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `greentic-host` binary cargo built for these tests.
pub fn host_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_greentic-host"))
}

/// Where `scripts/build-components.sh` put the built components: `$GREENTIC_COMPONENTS_DIR`, or
/// `greentic-components/` in the cargo target directory these tests were built in.
pub fn components_dir() -> PathBuf {
    let dir = match std::env::var_os("GREENTIC_COMPONENTS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => host_bin()
            .parent() // debug/
            .and_then(Path::parent) // target/
            .expect("the test binary lives in a cargo target directory")
            .join("greentic-components"),
    };
    assert!(
        dir.join("wasip2").is_dir(),
        "built components not found in {}: run scripts/build-components.sh (or scripts/test.sh) first",
        dir.display()
    );
    dir
}

/// One built component: `flavour` is `wasip2` or `cargo-component`, `name` the crate name.
pub fn component(flavour: &str, name: &str) -> PathBuf {
    let path = components_dir()
        .join(flavour)
        .join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.is_file(),
        "{} is missing: rebuild the components",
        path.display()
    );
    path
}

/// Runs `greentic-host` with `args`.
pub fn run_host(args: &[&str]) -> Output {
    Command::new(host_bin())
        .args(args)
        .env("GREENTIC_CACHE_KEY_FILE", cache_key_file())
        .output()
        .expect("greentic-host runs")
}

/// The compiled-artifact cache key the tests' hosts share (beside [`shared_cache`]), so the
/// tests never write to the user's home.
pub fn cache_key_file() -> PathBuf {
    host_bin()
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("greentic-test-cache-key")
        .join("cache.key")
}

/// Stdout and stderr of an output, as text.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `[host]` and `[auth]` sections every test bundle starts with.
pub const HEADER: &str = r#"
[host]
cache_dir = "{cache}"

[auth]
algorithm = "HS256"
issuer = "greentic-test"
audience = "greentic-host"
secret_file = "jwt.secret"
"#;

/// The HS256 secret test bundles use.
pub const JWT_SECRET: &str = "test-secret-0123456789-0123456789-abcdef";

/// Compiled components are cached here across tests (concurrent writers are safe).
pub fn shared_cache() -> PathBuf {
    host_bin()
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("greentic-test-cache")
}

/// A bundle directory written for a test.
pub struct TestBundle {
    pub dir: tempfile::TempDir,
}

impl TestBundle {
    /// Writes `greentic.toml` ([`HEADER`] followed by `toml`, with `{components}` and `{cache}`
    /// substituted), the JWT secret file and the given secret files (`tenant/NAME` → value).
    pub fn new(toml: &str, secrets: &[(&str, &str)]) -> TestBundle {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{HEADER}\n{toml}")
            .replace(
                "{components}",
                &components_dir().join("wasip2").display().to_string(),
            )
            .replace("{cache}", &shared_cache().display().to_string());
        std::fs::write(dir.path().join("greentic.toml"), text).unwrap();
        std::fs::write(dir.path().join("jwt.secret"), JWT_SECRET).unwrap();
        for (path, value) in secrets {
            let full = dir.path().join("secrets").join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, value).unwrap();
        }
        TestBundle { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Mints a token with `greentic-host token`.
    pub fn token(&self, tenant: &str, team: Option<&str>) -> String {
        let mut args = vec![
            "token",
            "--bundle",
            self.path().to_str().unwrap(),
            "--tenant",
            tenant,
        ];
        if let Some(team) = team {
            args.extend(["--team", team]);
        }
        let out = run_host(&args);
        assert!(out.status.success(), "token: {}", text(&out).1);
        text(&out).0.trim().to_string()
    }
}

/// A running `greentic-host run`.
pub struct Host {
    child: Child,
    /// The public listener.
    pub addr: String,
    /// The admin listener (`/readyz`, `/metrics`).
    pub admin_addr: String,
    pub stdout: Arc<Mutex<Vec<String>>>,
}

impl Host {
    /// Starts the host on a free loopback port and waits until it listens.
    pub fn start(bundle: &Path) -> Host {
        Self::start_with_env(bundle, &[])
    }

    pub fn start_with_env(bundle: &Path, env: &[(&str, &str)]) -> Host {
        let mut cmd = Command::new(host_bin());
        cmd.args([
            "run",
            bundle.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("GREENTIC_CACHE_KEY_FILE", cache_key_file())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("greentic-host starts");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let err_sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                err_sink.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut public = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("greentic-host listening on http://") {
                    public = Some(addr.to_string());
                }
                if let (Some(p), Some(admin)) =
                    (&public, line.strip_prefix("greentic-host admin on http://"))
                {
                    let _ = tx.send((p.clone(), admin.to_string()));
                }
                sink.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok((addr, admin_addr)) => Host {
                child,
                addr,
                admin_addr,
                stdout: lines,
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "the host did not start:\n{}",
                    lines.lock().unwrap().join("\n")
                );
            }
        }
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The host's resident memory in bytes (`VmRSS`).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS in /proc/PID/status")
            * 1024
    }

    /// Sends a request; returns status, headers (lower-case names) and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        http(&self.addr, method, path, headers, body)
    }

    /// A request to the admin listener (`/readyz`, `/metrics`).
    pub fn admin(&self, method: &str, path: &str) -> Reply {
        http(&self.admin_addr, method, path, &[], b"")
    }

    /// `POST /v1/invoke/send` with a bearer token.
    pub fn send(&self, token: &str, body: serde_json::Value) -> Reply {
        self.request(
            "POST",
            "/v1/invoke/send",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("content-type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
    }

    /// `send` on another thread; the handle yields the reply and how long it took.
    pub fn spawn_send(
        &self,
        token: String,
        body: serde_json::Value,
    ) -> std::thread::JoinHandle<(Reply, Duration)> {
        let addr = self.addr.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let reply = http(
                &addr,
                "POST",
                "/v1/invoke/send",
                &[("authorization", &format!("Bearer {token}"))],
                body.to_string().as_bytes(),
            );
            (reply, started.elapsed())
        })
    }

    /// Waits until `/metrics` shows `n` calls in flight for `tenant`.
    pub fn wait_in_flight(&self, tenant: &str, n: u32) {
        let line = format!("greentic_calls_in_flight{{tenant=\"{tenant}\"}} {n}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.admin("GET", "/metrics").text().contains(&line) {
            assert!(Instant::now() < deadline, "never saw `{line}`");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything the host printed so far.
    pub fn output(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// Everything the host printed, once `needle` is among it (log lines are written by a
    /// writer thread, shortly after the call that logged them); panics after 10 s without it.
    pub fn output_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.output();
            if out.contains(needle) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "`{needle}` never appeared in:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the host printed, once it has printed nothing new for 300 ms (at most 10 s):
    /// for checking what it must *not* have written.
    pub fn settled_output(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = self.stdout.lock().unwrap().len();
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline && quiet_since.elapsed() < Duration::from_millis(300) {
            std::thread::sleep(Duration::from_millis(20));
            let now = self.stdout.lock().unwrap().len();
            if now != seen {
                seen = now;
                quiet_since = Instant::now();
            }
        }
        self.output()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the host did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A minimal HTTP/1.1 client (one request per connection).
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked")
    {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
    out
}

/// One request an [`Upstream`] received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

/// A scripted HTTP server on loopback: answers each request with the next scripted response
/// (the last one repeats) and records what it received.
pub struct Upstream {
    pub addr: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

/// A scripted response: status, extra headers, body.
pub type Scripted = (u16, Vec<(String, String)>, String);

impl Upstream {
    pub fn start(script: Vec<Scripted>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for (i, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let Some(req) = read_request(&mut stream) else {
                    continue;
                };
                log.lock().unwrap().push(req);
                let (status, headers, body) = script[i.min(script.len() - 1)].clone();
                let mut resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                resp.push_str(&body);
                let _ = stream.write_all(resp.as_bytes());
            }
        });
        Upstream { addr, seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads one HTTP/1.1 request with a Content-Length body.
pub fn read_request(stream: &mut TcpStream) -> Option<Seen> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let split = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.lines();
    let first = lines.next()?;
    let mut parts = first.split(' ');
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[split + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
    })
}

/// GitHub's `X-Hub-Signature-256` value: `sha256=` and the hex HMAC-SHA256 of `message`.
pub fn github_signature(key: &[u8], message: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::digest([pad(0x36).as_slice(), message].concat());
    let outer = Sha256::digest([pad(0x5c).as_slice(), inner.as_slice()].concat());
    format!("sha256={outer:x}")
}

/// A real `nats-server -js` on a free loopback port (`$GREENTIC_NATS_SERVER`, installed by
/// scripts/test.sh, or `nats-server` on the PATH), stopped on drop.
pub struct Nats {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Nats {
    pub fn start() -> Nats {
        let bin = std::env::var("GREENTIC_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting `{bin}`: {e}; run scripts/test.sh (it installs nats-server) or set GREENTIC_NATS_SERVER")
            });
        let until = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nats {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
