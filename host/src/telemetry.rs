//! Host telemetry: structured JSON logs on stdout, and spans exported over OTLP/HTTP when an
//! endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or `[telemetry].otlp_endpoint`).
//!
//! Neither waits on its destination while a call runs: log lines go through a bounded queue to
//! a writer thread (lines past [`LOG_QUEUE_LINES`] are dropped rather than block an executor
//! thread on a slow stdout), and spans through a batch processor with a bounded queue
//! ([`SPAN_QUEUE`]), so an unreachable collector costs nothing but the spans it would have
//! received. OpenTelemetry's per-span limits are set explicitly ([`SPAN_LIMITS`]).

pub mod json_log;

use opentelemetry::global;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};

pub use greentic_capabilities::telemetry::{SPAN_LIMITS, TelemetrySection};

/// Log lines queued for the writer thread before new ones are dropped.
pub const LOG_QUEUE_LINES: usize = 16_384;
/// Bytes of log lines gathered into one write to stdout, at most.
const LOG_WRITE_BYTES: usize = 64 * 1024;
/// Spans queued for export before new ones are dropped. With the per-call span budgets
/// (`imports::telemetry::BUDGETS`), what waits for a slow collector stays within a few MiB.
pub const SPAN_QUEUE: usize = 512;

/// Keeps the log writer thread alive; flushes what is queued on drop.
pub struct LoggingGuard {
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// How log lines are written; the operator takes the same `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for collectors.
    Json,
    /// Human-readable lines.
    Text,
}

impl LogFormat {
    /// `chosen`, else `text` when stdout is a terminal and `json` otherwise (a container's
    /// stdout, a pipe, a file).
    pub fn resolve(chosen: Option<LogFormat>) -> LogFormat {
        use std::io::IsTerminal;
        chosen.unwrap_or(if std::io::stdout().is_terminal() {
            LogFormat::Text
        } else {
            LogFormat::Json
        })
    }
}

static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Sets the format [`init_logging`] uses (`None`: [`LogFormat::resolve`]'s default). The first
/// call wins.
pub fn set_log_format(chosen: Option<LogFormat>) {
    let _ = LOG_FORMAT.set(LogFormat::resolve(chosen));
}

/// Installs the log subscriber (level from `RUST_LOG`, default `info`; the format from
/// [`set_log_format`]), writing through a bounded queue to stdout. Keep the guard until the
/// process ends.
pub fn init_logging() -> LoggingGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("greentic-log")
        // The writer thread flushes whenever the queue runs empty, so a line waits only for
        // the lines queued behind it; under load one write carries many lines, not one each.
        .finish(std::io::BufWriter::with_capacity(
            LOG_WRITE_BYTES,
            std::io::stdout(),
        ));
    let installed = match LOG_FORMAT.get_or_init(|| LogFormat::resolve(None)) {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .event_format(json_log::JsonLine::new())
            .with_writer(writer)
            .try_init()
            .is_ok(),
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(writer)
            .try_init()
            .is_ok(),
    };
    LoggingGuard {
        _writer: installed.then_some(guard),
    }
}

/// Keeps the tracer provider alive; flushes on drop.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
    /// The OTLP endpoint in use, if any.
    pub endpoint: Option<String>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// The OTLP endpoint: `OTEL_EXPORTER_OTLP_ENDPOINT`, else the bundle's.
fn endpoint(section: &TelemetrySection) -> Option<String> {
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| section.otlp_endpoint.clone())
}

/// The HTTP client of the OTLP exporters when `[telemetry].tls` names a private PKI (paths
/// relative to `dir`): trusting its CA only and presenting the host's client certificate.
/// `None`: the exporters' default client (the system's roots).
pub fn otlp_client(
    section: &TelemetrySection,
    dir: &std::path::Path,
) -> anyhow::Result<Option<reqwest::blocking::Client>> {
    let Some(tls) = &section.tls else {
        return Ok(None);
    };
    // HTTP/1.1 only: the exporter's client speaks it (a collector serves OTLP/HTTP over it).
    let config = crate::tls::client_config(&tls.resolved(|p| dir.join(p)), &[b"http/1.1"])
        .map_err(|e| anyhow::anyhow!("[telemetry].tls: {e}"))?;
    // A blocking client starts a runtime of its own, which must not happen on an async
    // worker thread: it is built on a thread of its own (as the exporter builds its default).
    let client = std::thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(std::sync::Arc::unwrap_or_clone(config))
            .timeout(std::time::Duration::from_secs(3))
            .build()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("[telemetry].tls: building the OTLP client failed"))?
    .map_err(|e| anyhow::anyhow!("[telemetry].tls: building the OTLP client: {e}"))?;
    Ok(Some(client))
}

/// A logger provider exporting the audit log's records as OTLP logs (`/v1/logs`), if there
/// is an endpoint.
pub fn audit_logs(
    section: &TelemetrySection,
    dir: &std::path::Path,
) -> anyhow::Result<Option<opentelemetry_sdk::logs::SdkLoggerProvider>> {
    let Some(endpoint) = endpoint(section) else {
        return Ok(None);
    };
    let client = otlp_client(section, dir)?;
    let service = section
        .service_name
        .clone()
        .unwrap_or_else(|| "greentic-host".into());
    let mut exporter = opentelemetry_otlp::LogExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/logs", endpoint.trim_end_matches('/')))
        .with_timeout(std::time::Duration::from_secs(3));
    if let Some(client) = client {
        exporter = exporter.with_http_client(client);
    }
    let exporter = exporter.build()?;
    Ok(Some(
        opentelemetry_sdk::logs::SdkLoggerProvider::builder()
            .with_resource(Resource::builder().with_service_name(service).build())
            .with_batch_exporter(exporter)
            .build(),
    ))
}

/// Installs the global tracer provider (`dir`: the bundle's, which `[telemetry].tls` paths
/// are relative to).
pub fn init_tracing(
    section: &TelemetrySection,
    dir: &std::path::Path,
) -> anyhow::Result<TelemetryGuard> {
    let endpoint = endpoint(section);
    let service = section
        .service_name
        .clone()
        .unwrap_or_else(|| "greentic-host".into());
    let resource = Resource::builder().with_service_name(service).build();
    let (events, attributes, event_attributes, links) = SPAN_LIMITS;
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_max_events_per_span(events)
        .with_max_attributes_per_span(attributes)
        .with_max_attributes_per_event(event_attributes)
        .with_max_links_per_span(links);
    if let Some(endpoint) = &endpoint {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_timeout(std::time::Duration::from_secs(3));
        if let Some(client) = otlp_client(section, dir)? {
            exporter = exporter.with_http_client(client);
        }
        let exporter = exporter.build()?;
        let batch = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(SPAN_QUEUE)
                    .build(),
            )
            .build();
        builder = builder.with_span_processor(batch);
    }
    let provider = builder.build();
    global::set_tracer_provider(provider.clone());
    Ok(TelemetryGuard { provider, endpoint })
}
