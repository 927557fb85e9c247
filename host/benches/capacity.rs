//! What one host holds, on this machine, with the release `greentic-host` binary run as an
//! operator runs it (a bundle on disk, `greentic-host run`, calls over loopback):
//!
//! - **in flight**: `CALLS` sends of `messaging-webhook` spread over `TENANTS` tenants, all at
//!   once, each waiting `UPSTREAM_MS` at an upstream before it answers: how many were answered
//!   200 (and what the others were), the wall time against the upstream's delay, and the host's
//!   resident memory before and at its peak. The upstream keeps connections alive, as real
//!   APIs do (`UPSTREAM_KEEPALIVE=0`: it closes each, so every request connects anew).
//! - **tenants**: one provider (`noop`) and N tenants (10, 10 000, 100 000): from `run` to ready, resident
//!   memory idle, a reload of the same bundle, and one tenant's call p50/p99 (sequential sends
//!   on one connection) — a call's cost should not depend on how many other tenants exist.
//! - **cold start**: from `run` to the first 200, with the compiled-artifact cache warm and
//!   with it empty.
//! - **instantiate**: a fresh store and instance on the host's engine (pooling, warm), as every
//!   call makes, for `noop` and `messaging-webhook`.
//!
//! Calls reach the host over HTTP/2 (a few connections, many streams each), so the client's
//! sockets do not count against the machine's open-file limit twice.
//!
//! `cargo bench -p greentic-host --bench capacity -- [instantiate] [cold] [tenants] [inflight]`
//! env: CALLS (10000), TENANTS (100), UPSTREAM_MS (3000), TENANT_COUNTS ("10 10000 100000"),
//! GREENTIC_HOST_BIN (another host binary to measure), SCHEDULER (`fair`, the default, or
//! `tokio`), UPSTREAM_KEEPALIVE (1).
//! Prints one `capacity <figure> <value>` line per figure, then all of them as one JSON object
//! (`scripts/bench.sh capacity` keeps it in `benchmarks/history.jsonl`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The host binary measured: this build's, or `GREENTIC_HOST_BIN` (another build, for a
/// before/after in one run).
fn host_bin() -> PathBuf {
    std::env::var_os("GREENTIC_HOST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_greentic-host")))
}
const SECRET: &str = "bench-secret-0123456789abcdef0123";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Resident memory of `pid` now and at its peak (MiB), from `/proc`.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time `pid` has used (user and system), from `/proc`.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let ticks = 100.0; // USER_HZ
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / ticks
}

/// An upstream that answers every request `200` after `delay`, one task per connection. It
/// keeps connections alive as chat and ticketing APIs do, unless `keep_alive` is false
/// (`connection: close` on every answer: every request needs a new connection).
async fn slow_upstream(delay: Duration, keep_alive: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(2048);
                let mut chunk = [0u8; 2048];
                loop {
                    // Headers, then as many body bytes as content-length says.
                    let whole = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                break end + 4 + len;
                            }
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    buf.drain(..whole);
                    tokio::time::sleep(delay).await;
                    let body = r#"{"ok":true,"id":"slow-1"}"#;
                    let close = if keep_alive {
                        ""
                    } else {
                        "connection: close\r\n"
                    };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{close}\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() || !keep_alive {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A bundle of `tenants` tenants (`t0`, `t1`, …) all routed to one provider: `messaging-webhook`
/// posting to `upstream`, or without one `noop`; each tenant may run `per_tenant` calls at once
/// and queue for 30 s.
fn write_bundle(dir: &Path, cache: &Path, tenants: usize, per_tenant: u32, upstream: Option<u16>) {
    let mut toml = format!(
        "[host]\ncache_dir = \"{}\"\nscheduler = {{ mode = \"{}\" }}\n\n[auth]\nalgorithm = \"HS256\"\nissuer = \"bench\"\naudience = \"greentic-host\"\nsecret_file = \"jwt.secret\"\n\n[providers.hook]\nsource = \"{}\"\nallow_unsigned = true\n{}\n\n[[routes]]\ntenant = \"*\"\ncapability = \"send\"\nprovider = \"hook\"\n",
        cache.display(),
        std::env::var("SCHEDULER").unwrap_or_else(|_| "fair".into()),
        common::component(if upstream.is_some() {
            "messaging-webhook"
        } else {
            "noop"
        })
        .display(),
        if upstream.is_some() {
            "grants = { outbound_hosts = [\"http://127.0.0.1:*\"], secrets = [\"WEBHOOK_BEARER_TOKEN\"] }"
        } else {
            ""
        }
    );
    toml.reserve(tenants * 160);
    for i in 0..tenants {
        toml.push_str(&format!(
            "\n[tenants.t{i}]\nlimits = {{ max_concurrent = {per_tenant}, queue_timeout_ms = 30000, deadline_ms = 60000 }}\n"
        ));
        if let Some(upstream) = upstream {
            toml.push_str(&format!(
                "config.hook = {{ url = \"http://127.0.0.1:{upstream}/x\" }}\n"
            ));
        }
    }
    std::fs::write(dir.join("greentic.toml"), toml).unwrap();
    std::fs::write(dir.join("jwt.secret"), SECRET).unwrap();
}

/// A token for each of the first `n` tenants of the bundle in `dir`.
fn tokens(dir: &Path, n: usize) -> Vec<String> {
    let bundle = greentic_host::bundle::Bundle::load(&dir.join("greentic.toml")).unwrap();
    let auth = greentic_host::auth::Authenticator::from_bundle(&bundle).unwrap();
    (0..n)
        .map(|i| auth.mint(&format!("t{i}"), None, None, 3600).unwrap())
        .collect()
}

/// `greentic-host run` on the bundle in `dir`.
struct Running {
    child: Child,
    port: u16,
    admin: u16,
    log: PathBuf,
}

impl Running {
    fn start(dir: &Path) -> Running {
        let (port, admin) = (free_port(), free_port());
        let log = dir.join("host.log");
        let child = Command::new(host_bin())
            .args(["run", dir.to_str().unwrap(), "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Running {
            child,
            port,
            admin,
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/readyz` answers 200; how long that took from `since`.
    async fn ready(&mut self, since: Instant) -> Duration {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the host exited ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if get(self.admin, "/readyz")
                .await
                .is_some_and(|(s, _)| s == 200)
            {
                return since.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection: status and body.
async fn request(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    request(port, "GET", path, "").await
}

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// `n` HTTP/2 connections to the host.
async fn connect(port: u16, n: usize) -> Vec<Sender> {
    let mut senders = Vec::with_capacity(n);
    for _ in 0..n {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        senders.push(sender);
    }
    senders
}

/// One send as `token`: the status and, when not 200, the error code the host answered and
/// its message.
async fn send(sender: &mut Sender, port: u16, token: &str) -> (u16, String, String) {
    sender.ready().await.unwrap();
    let req = hyper::Request::post(format!("http://127.0.0.1:{port}/v1/invoke/send"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br##"{"to":"#ops","text":"hi"}"##,
        )))
        .unwrap();
    match sender.send_request(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            if status == 200 {
                return (status, String::new(), String::new());
            }
            let json = serde_json::from_slice::<serde_json::Value>(&body).ok();
            let field = |f: &str| {
                json.as_ref()
                    .and_then(|v| v[f].as_str().map(str::to_string))
            };
            let code = field("code").unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            (status, code, field("message").unwrap_or_default())
        }
        Err(e) => (0, format!("transport: {e}"), String::new()),
    }
}

/// Figures, printed as they come and kept for the JSON line.
#[derive(Default)]
struct Figures(BTreeMap<String, serde_json::Value>);

impl Figures {
    fn put(&mut self, name: &str, value: impl Into<serde_json::Value>) {
        let value = value.into();
        println!("capacity {name} {value}");
        self.0.insert(name.to_string(), value);
    }
}

async fn in_flight(figures: &mut Figures) {
    let calls: usize = env_or("CALLS", 10_000);
    let tenants: usize = env_or("TENANTS", 100);
    let delay = Duration::from_millis(env_or("UPSTREAM_MS", 3_000));
    let keep_alive = env_or("UPSTREAM_KEEPALIVE", 1) != 0;
    let upstream = slow_upstream(delay, keep_alive).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let per_tenant = calls.div_ceil(tenants) as u32;
    write_bundle(dir.path(), &cache, tenants, per_tenant, Some(upstream));
    let tokens = Arc::new(tokens(dir.path(), tenants));
    let mut host = Running::start(dir.path());
    host.ready(Instant::now()).await;
    let port = host.port;
    // One call per tenant first: every tenant's first call is behind it.
    let mut warm = connect(port, 1).await.pop().unwrap();
    let (status, code, _) = send(&mut warm, port, &tokens[0]).await;
    assert_eq!(status, 200, "{code}");
    let (idle, _) = rss_mib(host.pid());
    let (_, body) = get(host.admin, "/readyz").await.unwrap();
    let max_in_flight =
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["capacity"]["max_in_flight"]
            .clone();

    // 64 streams per connection at most (the host's HTTP/2 limit).
    let senders = connect(port, calls.div_ceil(50)).await;
    let pid = host.pid();
    // The first burst lands on pool slots no call has used (every page faulted in, every
    // slot's protections set); the second, on the same connections, on slots the first left
    // ready: what a host that has been serving sees.
    let cold = burst(&senders, port, &tokens, calls, pid).await;
    let (_, peak) = rss_mib(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (after, _) = rss_mib(pid);
    let warm = burst(&senders, port, &tokens, calls, pid).await;
    figures.put("inflight_calls", calls);
    figures.put("inflight_upstream_keep_alive", keep_alive);
    figures.put("inflight_tenants", tenants);
    figures.put("inflight_max_in_flight", max_in_flight);
    for (prefix, b) in [("inflight", &cold), ("inflight_warm", &warm)] {
        let ok = b.codes.get("200").copied().unwrap_or(0);
        figures.put(&format!("{prefix}_ok"), ok);
        figures.put(
            &format!("{prefix}_answers"),
            serde_json::to_value(&b.codes).unwrap(),
        );
        figures.put(&format!("{prefix}_wall_s"), round(b.last.as_secs_f64(), 2));
        figures.put(
            &format!("{prefix}_wall_over_upstream"),
            round(b.last.as_secs_f64() / delay.as_secs_f64(), 2),
        );
        figures.put(
            &format!("{prefix}_host_cpu_us_per_call"),
            round(b.host_cpu * 1e6 / calls as f64, 0),
        );
        figures.put(
            &format!("{prefix}_client_cpu_us_per_call"),
            round(b.own_cpu * 1e6 / calls as f64, 0),
        );
    }
    figures.put("inflight_rss_idle_mib", round(idle, 0));
    figures.put("inflight_rss_peak_mib", round(peak, 0));
    figures.put("inflight_rss_after_mib", round(after, 0));
    figures.put(
        "inflight_kib_per_call",
        round((peak - idle).max(0.0) * 1024.0 / calls as f64, 0),
    );
}

/// What one burst of calls came to.
struct Burst {
    /// Answers by status (and code, when not 200).
    codes: BTreeMap<String, usize>,
    /// From the first send to the last answer.
    last: Duration,
    /// CPU seconds the host spent on it.
    host_cpu: f64,
    /// CPU seconds this process (client and upstream) spent on it.
    own_cpu: f64,
}

/// Sends `calls` calls at once over `senders`, tenants in turn, and waits for every answer.
async fn burst(
    senders: &[Sender],
    port: u16,
    tokens: &Arc<Vec<String>>,
    calls: usize,
    pid: u32,
) -> Burst {
    let host_pid = pid.to_string();
    let (host_cpu, own_cpu) = (cpu_secs(&host_pid), cpu_secs("self"));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(calls);
    for i in 0..calls {
        let mut sender = senders[i % senders.len()].clone();
        let tokens = tokens.clone();
        tasks.push(tokio::spawn(async move {
            let r = send(&mut sender, port, &tokens[i % tokens.len()]).await;
            (r, started.elapsed())
        }));
    }
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut last = Duration::ZERO;
    for t in tasks {
        let ((status, code, message), at) = t.await.unwrap();
        last = last.max(at);
        let key = if status == 200 {
            "200".into()
        } else {
            format!("{status} {code}")
        };
        if status != 200 && !codes.contains_key(&key) {
            println!("capacity: first {key}: {message}");
        }
        *codes.entry(key).or_default() += 1;
    }
    Burst {
        codes,
        last,
        host_cpu: cpu_secs(&host_pid) - host_cpu,
        own_cpu: cpu_secs("self") - own_cpu,
    }
}

async fn tenants(figures: &mut Figures) {
    let counts: Vec<usize> = std::env::var("TENANT_COUNTS")
        .unwrap_or_else(|_| "10 10000 100000".into())
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let cache = tempfile::tempdir().unwrap();
    for n in counts {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), cache.path(), n, 4, None);
        let token = tokens(dir.path(), 1).pop().unwrap();
        let started = Instant::now();
        let mut host = Running::start(dir.path());
        let ready = host.ready(started).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (idle, _) = rss_mib(host.pid());
        let mut sender = connect(host.port, 1).await.pop().unwrap();
        let mut times = Vec::with_capacity(2_000);
        for i in 0..2_200 {
            let t = Instant::now();
            let (status, code, _) = send(&mut sender, host.port, &token).await;
            assert_eq!(status, 200, "{code}");
            if i >= 200 {
                times.push(t.elapsed());
            }
        }
        let (p50, p99, _) = common::quantiles(times);
        let t = Instant::now();
        let (status, body) = request(host.admin, "POST", "/reload", "").await.unwrap();
        assert_eq!(status, 200, "{body}");
        let reload = t.elapsed();
        let (after, peak) = rss_mib(host.pid());
        figures.put(
            &format!("tenants_{n}_ready_s"),
            round(ready.as_secs_f64(), 3),
        );
        figures.put(&format!("tenants_{n}_rss_idle_mib"), round(idle, 0));
        figures.put(
            &format!("tenants_{n}_reload_s"),
            round(reload.as_secs_f64(), 3),
        );
        figures.put(
            &format!("tenants_{n}_rss_after_reload_mib"),
            round(after, 0),
        );
        figures.put(&format!("tenants_{n}_rss_peak_mib"), round(peak, 0));
        figures.put(
            &format!("tenants_{n}_call_p50_us"),
            round(common::us(p50), 0),
        );
        figures.put(
            &format!("tenants_{n}_call_p99_us"),
            round(common::us(p99), 0),
        );
    }
}

async fn cold(figures: &mut Figures) {
    let cache = tempfile::tempdir().unwrap();
    for which in ["empty", "warm"] {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), cache.path(), 1, 4, None);
        let token = tokens(dir.path(), 1).pop().unwrap();
        let started = Instant::now();
        let mut host = Running::start(dir.path());
        let port = host.port;
        // The first 200, asked for as soon as the port takes connections.
        let first = loop {
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await {
                drop(stream);
                let mut sender = connect(port, 1).await.pop().unwrap();
                let (status, code, _) = send(&mut sender, port, &token).await;
                if status == 200 {
                    break started.elapsed();
                }
                assert_eq!(status, 503, "{code}");
            }
            if let Some(status) = host.child.try_wait().unwrap() {
                panic!("the host exited: {status}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        figures.put(
            &format!("cold_start_{which}_cache_ms"),
            round(first.as_secs_f64() * 1e3, 0),
        );
    }
}

/// Instantiation on the host's engine (pooling, warm): a fresh store and instance of `noop`
/// and of `messaging-webhook`, as every call makes; the median of 2 000.
async fn instantiation(figures: &mut Figures) {
    use greentic_capabilities::CallScope;
    use greentic_capabilities::outbound::OutboundPolicy;
    use greentic_host::domain::messaging::Messaging;
    use greentic_host::instance::InstanceData;
    use greentic_host::loader::{LoadOptions, load_bundle_with};

    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    write_bundle(dir.path(), &cache, 1, 4, Some(free_port()));
    // The same bundle with `noop` beside the webhook provider.
    let text = std::fs::read_to_string(dir.path().join("greentic.toml")).unwrap();
    std::fs::write(
        dir.path().join("greentic.toml"),
        format!(
            "{text}\n[providers.noop]\nsource = \"{}\"\nallow_unsigned = true\n",
            common::component("noop").display()
        ),
    )
    .unwrap();
    let loaded = load_bundle_with(
        &dir.path().join("greentic.toml"),
        LoadOptions::default(),
        greentic_host::compile::HostEngine::new,
    )
    .unwrap();
    let scope = Arc::new(CallScope {
        tenant: "t0".into(),
        team: None,
        user: None,
        provider: "hook".into(),
        operation: "send".into(),
        trace_id: String::new(),
        granted_secrets: Arc::new(Default::default()),
        bound_secrets: Arc::new(Default::default()),
        backends: loaded.backends.clone(),
        config: Arc::new(serde_json::json!({})),
        otel_cx: opentelemetry::Context::new(),
        metrics: Arc::new(greentic_host::metrics::Metrics::default()),
    });
    for (name, provider) in [("noop", "noop"), ("webhook", "hook")] {
        let pre = loaded.loaded.providers[provider]
            .pre::<Messaging>()
            .unwrap()
            .clone();
        let mut times = Vec::with_capacity(2_000);
        for i in 0..2_200 {
            let t = Instant::now();
            let mut store = wasmtime::Store::new(
                pre.engine(),
                InstanceData::new(
                    scope.clone(),
                    OutboundPolicy::default(),
                    greentic_host::bundle::Limits::default(),
                    std::time::Instant::now() + Duration::from_secs(60),
                ),
            );
            store.limiter(|s| &mut s.limiter);
            store.set_fuel(u64::MAX).unwrap();
            store
                .fuel_async_yield_interval(Some(greentic_host::compile::YIELD_FUEL))
                .unwrap();
            std::hint::black_box(pre.instantiate_async(&mut store).await.unwrap());
            drop(store);
            if i >= 200 {
                times.push(t.elapsed());
            }
        }
        let (p50, _, _) = common::quantiles(times);
        figures.put(&format!("instantiate_{name}_us"), round(common::us(p50), 1));
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let all = args.is_empty();
    let want = |s: &str| all || args.iter().any(|a| a == s);
    let mut figures = Figures::default();
    if want("instantiate") {
        instantiation(&mut figures).await;
    }
    if want("cold") {
        cold(&mut figures).await;
    }
    if want("tenants") {
        tenants(&mut figures).await;
    }
    if want("inflight") {
        in_flight(&mut figures).await;
    }
    println!("{}", serde_json::to_string(&figures.0).unwrap());
}
