//! The host the conformance suite drives: the real loader, runtime and HTTP server, on
//! loopback, with logs and spans captured for the suite.
//!
//! [`start`] writes a bundle for the suite's [`Setup`] (the provider as an unsigned file source —
//! conformance checks behaviour, not trust — its declared secrets and outbound hosts granted,
//! tenants with their secrets, configuration and deadline, a route per capability), loads it
//! through every load-time check, points the provider's outbound requests at the suite's
//! upstream, and serves it. [`Capture::install`] makes the process's logs (JSON, as `run`
//! writes them, with secret-read audit lines) and spans go to the suite instead of stdout and
//! OTLP.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use greentic_conformance::{
    CapturedSpan, FireOutcome, FireRequest, HostUnderTest, Setup, SpanStatus, Subject, TenantSetup,
};
use opentelemetry::global;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use serde_json::json;

use crate::auth::Authenticator;
use crate::domain::{Fire, Input};
use crate::loader::{LoadOptions, load_bundle};
use crate::resilience::{BreakerPolicy, RetryPolicy};
use crate::runtime::Runtime;
use crate::server::{self, App};

/// The HS256 key of the suite's throw-away bundle.
const JWT_SECRET: &str = "greentic-conformance-only-0123456789abcdef";

/// Where the process's logs and spans go while the suite runs.
pub struct Capture {
    logs: Arc<Mutex<Vec<u8>>>,
    spans: Arc<Mutex<Vec<CapturedSpan>>>,
    provider: SdkTracerProvider,
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct SpanSink(Arc<Mutex<Vec<CapturedSpan>>>);

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Capture")
    }
}

impl SpanExporter for SpanSink {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let mut spans = lock(&self.0);
        for span in batch {
            spans.push(CapturedSpan {
                name: span.name.to_string(),
                trace_id: span.span_context.trace_id().to_string(),
                attributes: span
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                    .collect(),
                events: span
                    .events
                    .iter()
                    .map(|e| {
                        let attrs: Vec<String> = e
                            .attributes
                            .iter()
                            .map(|kv| format!("{}={}", kv.key, kv.value))
                            .collect();
                        format!("{} {}", e.name, attrs.join(" "))
                    })
                    .collect(),
                status: match &span.status {
                    opentelemetry::trace::Status::Unset => SpanStatus::Unset,
                    opentelemetry::trace::Status::Ok => SpanStatus::Ok,
                    opentelemetry::trace::Status::Error { description } => {
                        SpanStatus::Error(description.to_string())
                    }
                },
            });
        }
        std::future::ready(Ok(()))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Capture {
    /// Installs the process-wide log subscriber and tracer provider. Once per process: the
    /// suite must see every line, so it refuses to run when something else took the logs.
    pub fn install() -> anyhow::Result<Capture> {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,greentic_host::imports::secrets=debug",
            ))
            .with_current_span(false)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).map_err(|_| {
            anyhow::anyhow!(
                "another log subscriber is installed; the conformance suite must capture every log line, so run it in its own process"
            )
        })?;
        let spans = Arc::new(Mutex::new(Vec::new()));
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(SpanSink(spans.clone()))
            .build();
        global::set_tracer_provider(provider.clone());
        Ok(Capture {
            logs,
            spans,
            provider,
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// The host under test; stops serving when dropped.
pub struct Harness {
    addr: std::net::SocketAddr,
    provider: String,
    app: Arc<App>,
    logs: Arc<Mutex<Vec<u8>>>,
    spans: Arc<Mutex<Vec<CapturedSpan>>>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The bundle (`greentic.toml`) for `setup`, with the component at `provider.wasm`.
pub fn bundle_toml(setup: &Setup, cache_dir: &Path) -> anyhow::Result<String> {
    let m = &setup.manifest;
    let secrets: Vec<&str> = m.secrets.iter().map(|s| s.name()).collect();
    let mut tenants = serde_json::Map::new();
    for t in &setup.tenants {
        tenants.insert(
            t.id.clone(),
            json!({
                "secrets": t.secrets.keys().collect::<Vec<_>>(),
                "limits": {"deadline_ms": setup.deadline_ms},
                "config": {m.name.clone(): t.config},
            }),
        );
    }
    let routes: Vec<_> = m
        .capabilities
        .iter()
        .map(|c| json!({"tenant": "*", "capability": c, "provider": m.name}))
        .collect();
    // The provider's own hosts, and the suite's upstream, which `{{upstream}}` in a config
    // names (plain HTTP on loopback: only an address pattern reaches it).
    let mut outbound_hosts = m.outbound_hosts.clone();
    if !outbound_hosts.is_empty() {
        outbound_hosts.push(format!("http://{}", setup.upstream));
    }
    // Every other capability the provider imports is granted (a `true` grant): the suite
    // runs what the provider uses. The state it keeps lives in the suite's own temporary
    // bundle directory. A remote or native provider has no imports to read: it gets every
    // capability the host hands it (its network is its own: no outbound grant).
    let mut grants = json!({"secrets": secrets});
    let provider = match &setup.subject {
        Subject::Component(wasm) => {
            grants["outbound_hosts"] = json!(outbound_hosts);
            if let Ok(world) = greentic_interfaces::ComponentWorld::decode(&m.name, wasm) {
                for c in greentic_capabilities::CAPABILITIES {
                    if grants.get(c.name).is_none()
                        && world.imports.iter().any(|i| c.serves(&i.name))
                    {
                        grants[c.name] = json!(true);
                    }
                }
            }
            json!({"source": "provider.wasm", "allow_unsigned": true, "grants": grants})
        }
        Subject::Native { name, .. } => {
            for c in ["config", "telemetry", "state", "events"] {
                grants[c] = json!(true);
            }
            json!({"form": "native", "source": format!("native:{name}"), "grants": grants})
        }
        Subject::Remote { endpoint, link, .. } => {
            for c in ["config", "telemetry", "state", "events"] {
                grants[c] = json!(true);
            }
            let mut section = json!({"form": "remote", "source": endpoint, "grants": grants});
            match link {
                // TOML has no null: only what is set is written.
                Some(link) => {
                    if let Some(identity) = &link.identity {
                        section["identity"] = json!(identity);
                    }
                    let mut tls = serde_json::Map::new();
                    for (key, path) in [("ca", &link.ca), ("cert", &link.cert), ("key", &link.key)]
                    {
                        if let Some(path) = path {
                            tls.insert(key.into(), json!(path.display().to_string()));
                        }
                    }
                    section["tls"] = serde_json::Value::Object(tls);
                }
                None => section["allow_plaintext"] = json!(endpoint.starts_with("grpc://")),
            }
            section
        }
    };
    let doc = json!({
        "host": {"listen": "127.0.0.1:0", "cache_dir": cache_dir},
        "auth": {
            "algorithm": "HS256",
            "issuer": "greentic-conformance",
            "audience": "greentic-host",
            "secret_file": "jwt.secret",
        },
        "secrets": {"backend": "file", "dir": "secrets"},
        "providers": {m.name.clone(): provider},
        "tenants": tenants,
        "routes": routes,
    });
    toml::to_string(&doc).context("writing the suite's bundle")
}

/// Loads `setup` into the real runtime and serves it on a free port of 127.0.0.1.
pub async fn start(setup: Setup, capture: &Capture, cache_dir: PathBuf) -> anyhow::Result<Harness> {
    let dir = tempfile::tempdir().context("creating the suite's bundle directory")?;
    let root = dir.path();
    std::fs::write(root.join("greentic.toml"), bundle_toml(&setup, &cache_dir)?)?;
    std::fs::write(root.join("jwt.secret"), JWT_SECRET)?;
    if let Some(wasm) = setup.subject.wasm() {
        std::fs::write(root.join("provider.wasm"), wasm)?;
    }
    for t in &setup.tenants {
        let tdir = root.join("secrets").join(&t.id);
        std::fs::create_dir_all(&tdir)?;
        for (name, value) in &t.secrets {
            std::fs::write(tdir.join(name), value)?;
        }
    }
    let path = root.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || load_bundle(&path, LoadOptions::default()))
        .await
        .context("loading the provider")??;
    for t in setup.tenants.iter().filter(|t| t.revoke_secrets) {
        std::fs::remove_dir_all(root.join("secrets").join(&t.id))
            .with_context(|| format!("revoking {}'s secrets", t.id))?;
    }
    let mut providers = loaded.loaded.providers;
    for provider in providers.values_mut() {
        let p = Arc::get_mut(provider)
            .ok_or_else(|| anyhow::anyhow!("the loaded provider is shared unexpectedly"))?;
        p.outbound.redirect = Some(Arc::from(setup.upstream.as_str()));
    }
    // The suite checks providers, not the breaker: it must not open between error cases.
    let breaker = BreakerPolicy {
        failure_threshold: u32::MAX,
        ..BreakerPolicy::default()
    };
    let runtime = Arc::new(
        Runtime::new(&loaded.bundle, loaded.engine, providers, loaded.backends)
            .with_policies(RetryPolicy::default(), breaker),
    );
    let app = Arc::new(App::new(
        runtime,
        Authenticator::from_bundle(&loaded.bundle)?,
    ));
    let limits = server::RequestLimits::from_host(&loaded.bundle.file.host);
    // One listener for the suite: public routes and the admin ones (the secret sweep reads
    // `/metrics`).
    let router = server::combined_router(app.clone(), limits);
    let connections = server::ConnectionLimits::from_host(&loaded.bundle.file.host);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        server::serve(
            listener,
            router,
            limits,
            connections,
            None,
            std::future::pending(),
        )
        .await;
    });
    Ok(Harness {
        addr,
        provider: setup.manifest.name.clone(),
        app,
        logs: capture.logs.clone(),
        spans: capture.spans.clone(),
        server,
        _dir: dir,
    })
}

impl HostUnderTest for Harness {
    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn token(&self, tenant: &TenantSetup) -> anyhow::Result<String> {
        Ok(self.app.auth.load().mint(
            &tenant.id,
            tenant.team.as_deref(),
            tenant.user.as_deref(),
            3600,
        )?)
    }

    fn share_instances(&self, on: bool) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.app.runtime.share_instances(on))
    }

    fn fire(
        &self,
        tenant: &TenantSetup,
        fire: FireRequest,
    ) -> Pin<Box<dyn Future<Output = FireOutcome> + Send + '_>> {
        let tenant = tenant.id.clone();
        Box::pin(async move {
            let now = greentic_capabilities::state::now_ms();
            let input = Input::Fire(Fire {
                schedule: fire.schedule.clone(),
                scheduled_at_ms: fire.scheduled_at_ms,
                fired_at_ms: now,
                missed: 0,
                payload: fire.payload,
            });
            match self
                .app
                .runtime
                .trigger(&tenant, &self.provider, &fire.schedule, input)
                .await
            {
                Ok(_) => FireOutcome {
                    code: "ok".into(),
                    message: String::new(),
                    retry_after_ms: None,
                },
                Err(e) => FireOutcome {
                    code: e.code().into(),
                    message: e.message(),
                    retry_after_ms: e.retry_after_ms(),
                },
            }
        })
    }

    fn take_logs(&self) -> Vec<String> {
        let mut buf = lock(&self.logs);
        let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let text: Vec<u8> = buf.drain(..complete).collect();
        String::from_utf8_lossy(&text)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn take_spans(&self) -> Vec<CapturedSpan> {
        std::mem::take(&mut *lock(&self.spans))
    }
}
