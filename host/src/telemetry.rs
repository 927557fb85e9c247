//! Host telemetry: structured JSON logs on stdout, and spans exported over OTLP/HTTP when an
//! endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or `[telemetry].otlp_endpoint`).
//! Export runs on a background batch processor, so calls never wait for (or fail because of)
//! an unreachable collector.

use opentelemetry::global;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::bundle::TelemetrySection;

/// Installs the JSON log subscriber (level from `RUST_LOG`, default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_writer(std::io::stdout)
        .try_init();
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

/// Installs the global tracer provider.
pub fn init_tracing(section: &TelemetrySection) -> anyhow::Result<TelemetryGuard> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| section.otlp_endpoint.clone());
    let service = section
        .service_name
        .clone()
        .unwrap_or_else(|| "greentic-host".into());
    let resource = Resource::builder().with_service_name(service).build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = &endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_timeout(std::time::Duration::from_secs(3))
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    global::set_tracer_provider(provider.clone());
    Ok(TelemetryGuard { provider, endpoint })
}
