//! The call envelope every domain shares: the host's span and the call's scope, the
//! in-flight gauge, the domain's decoding and attempts, and one set of metrics and one log
//! line for every call.

use std::sync::Arc;
use std::time::Instant;

use greentic_auth::Caller;
use greentic_capabilities::CallScope;
use greentic_capabilities::telemetry::host_attributes;
use greentic_metrics::Metrics;
use opentelemetry::trace::{Span as _, Status, TraceContextExt, Tracer};
use opentelemetry::{KeyValue, global};

use super::Runtime;
use crate::bindings::greentic::types::types::{Cloud, DeploymentCtx, Platform, TenantCtx};
use crate::domain::{Arrival, Input, Output};
use crate::errors::CallError;
use crate::limits::TenantGate;
use crate::provider::LoadedProvider;
use crate::resilience::counts_as_failure;
use crate::revision::Revision;
use crate::revision::TenantRuntime;

/// One call as the envelope hands it to its attempts.
pub(super) struct Envelope<'a> {
    pub(super) revision: &'a Revision,
    pub(super) caller: &'a Caller,
    pub(super) provider: &'a LoadedProvider,
    pub(super) scope: &'a Arc<CallScope>,
    pub(super) gate: &'a Arc<TenantGate>,
    pub(super) trace_id: &'a str,
}

impl Runtime {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn scope(
        &self,
        revision: &Revision,
        caller: &Caller,
        provider: &LoadedProvider,
        capability: &str,
        tenant: &TenantRuntime,
        cx: opentelemetry::Context,
        trace_id: &str,
    ) -> Arc<CallScope> {
        Arc::new(CallScope {
            tenant: caller.tenant.clone(),
            team: caller.team.clone(),
            user: caller.user.clone(),
            provider: provider.name.clone(),
            operation: capability.to_string(),
            trace_id: trace_id.to_string(),
            granted_secrets: provider.granted_secrets.clone(),
            bound_secrets: tenant.bound_secrets.clone(),
            backends: revision.backends.clone(),
            config: tenant
                .config
                .get(&provider.name)
                .cloned()
                .unwrap_or_else(|| Arc::new(serde_json::json!({}))),
            otel_cx: cx,
            metrics: self.metrics.clone(),
        })
    }

    pub(super) fn tenant_ctx(
        revision: &Revision,
        caller: &Caller,
        trace_id: &str,
        key: Option<String>,
    ) -> TenantCtx {
        TenantCtx {
            tenant: caller.tenant.clone(),
            team: caller.team.clone(),
            user: caller.user.clone(),
            deployment: DeploymentCtx {
                cloud: match revision.deployment.cloud.as_str() {
                    "aws" => Cloud::Aws,
                    "gcp" => Cloud::Gcp,
                    "azure" => Cloud::Azure,
                    "hetzner" => Cloud::Hetzner,
                    "local" => Cloud::Local,
                    other => Cloud::Other(other.to_string()),
                },
                region: revision.deployment.region.clone(),
                platform: match revision.deployment.platform.as_str() {
                    "k8s" => Platform::K8s,
                    "nomad" => Platform::Nomad,
                    "systemd" => Platform::Systemd,
                    "cf-workers" => Platform::CfWorkers,
                    "lambda" => Platform::Lambda,
                    "baremetal" => Platform::Baremetal,
                    other => Platform::Other(other.to_string()),
                },
                runtime: Some("wasmtime-48 (greentic-host)".into()),
            },
            trace_id: Some(trace_id.to_string()),
            idempotency_key: key,
        }
    }

    /// The call envelope every domain shares: the host's span, the call's scope, the
    /// in-flight gauge, the domain's decoding and attempts (see [`Runtime::attempts`]), and
    /// one set of metrics and one log line for every call, whatever its domain.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn call(
        &self,
        revision: &Revision,
        caller: &Caller,
        tenant: &TenantRuntime,
        provider: &Arc<LoadedProvider>,
        capability: &str,
        gate: &Arc<TenantGate>,
        input: Input,
    ) -> Result<Output, CallError> {
        let started = Instant::now();
        let domain = provider.prepared.info();
        let tracer = global::tracer("greentic-host");
        let name = match domain.arrival {
            Arrival::Invoke => format!("invoke {capability}"),
            Arrival::Http => capability.to_string(),
            Arrival::Trigger => format!("fire {capability}"),
        };
        let mut span = tracer
            .span_builder(name)
            .with_kind(opentelemetry::trace::SpanKind::Server)
            .start(&tracer);
        // The same lowercase hex as its `Display`, without the formatter's padding machinery.
        let trace_id = hex::encode(span.span_context().trace_id().to_bytes());
        let cx =
            opentelemetry::Context::current().with_remote_span_context(span.span_context().clone());
        let scope = self.scope(
            revision, caller, provider, capability, tenant, cx, &trace_id,
        );
        for kv in host_attributes(&scope) {
            span.set_attribute(kv);
        }
        span.set_attribute(KeyValue::new("greentic.provider.form", provider.form()));

        // Counted down on drop, so a call whose client went away is not left counted.
        let in_flight = InFlight::enter(&self.metrics, &caller.tenant);
        let call = Envelope {
            revision,
            caller,
            provider,
            scope: &scope,
            gate,
            trace_id: &trace_id,
        };
        let mut seen = None;
        let result = match provider.prepared.decode(input) {
            Ok(decoded) => self.attempts(call, decoded, &mut seen).await,
            Err(e) => Err(e),
        };
        // Which instance served it, for a provider whose instances serve later calls of the
        // tenant: what shows that no instance served two tenants.
        if let Some(book) = seen {
            span.set_attribute(KeyValue::new("greentic.instance.id", book.serial as i64));
            span.set_attribute(KeyValue::new(
                "greentic.instance.calls",
                i64::from(book.calls),
            ));
        }
        drop(in_flight);
        let result = result.map(|(output, attempts)| match output {
            Output::Json(serde_json::Value::Object(mut fields)) => {
                fields.insert("provider".into(), provider.name.clone().into());
                fields.insert("trace_id".into(), trace_id.clone().into());
                fields.insert("attempts".into(), attempts.into());
                fields.insert("revision".into(), revision.digest.clone().into());
                Output::Json(serde_json::Value::Object(fields))
            }
            other => other,
        });
        // A delivery the provider refused is a success of the call but not of the delivery:
        // its status is the code (`http-401`), so refusals show apart from answers.
        let refused;
        let code = match &result {
            Ok(Output::Http(response)) if response.status().as_u16() >= 400 => {
                refused = format!("http-{}", response.status().as_u16());
                refused.as_str()
            }
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        let elapsed = started.elapsed();
        match &result {
            Ok(_) => span.set_status(Status::Ok),
            Err(e) => {
                span.set_attribute(KeyValue::new("greentic.error.code", e.code()));
                span.set_status(Status::error(e.message()));
            }
        }
        span.end();
        let labels = [
            ("tenant", caller.tenant.as_str()),
            ("provider", provider.name.as_str()),
            ("capability", capability),
            ("code", code),
        ];
        self.metrics.inc("greentic_calls_total", &labels);
        // A failure inside the host is the operator's to see, whoever the caller was.
        if let Err(e @ CallError::Internal(_)) = &result {
            tracing::error!(
                tenant = %caller.tenant,
                provider = %provider.name,
                error = %e,
                "a call failed inside the host"
            );
        }
        if let Some(failed) = judged(&result) {
            self.stats
                .record(&revision.digest, &caller.tenant, failed, elapsed);
        }
        self.metrics.observe(
            "greentic_call_duration_seconds",
            &labels[..3],
            elapsed.as_secs_f64(),
        );
        tracing::info!(
            target: "greentic::call",
            tenant = %caller.tenant, team = caller.team.as_deref().unwrap_or(""),
            user = caller.user.as_deref().unwrap_or(""), provider = %provider.name,
            domain = domain.name, capability, code, trace_id = %trace_id,
            duration_ms = elapsed.as_millis() as u64,
            "call finished"
        );
        result
    }
}

/// One call in `greentic_calls_in_flight`, for as long as it lives.
struct InFlight<'a> {
    metrics: &'a Metrics,
    tenant: &'a str,
}

impl<'a> InFlight<'a> {
    fn enter(metrics: &'a Metrics, tenant: &'a str) -> InFlight<'a> {
        metrics.gauge_add("greentic_calls_in_flight", &[("tenant", tenant)], 1.0);
        InFlight { metrics, tenant }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics
            .gauge_add("greentic_calls_in_flight", &[("tenant", self.tenant)], -1.0);
    }
}

/// Whether a call's outcome says anything about its provider's revision, and if so whether
/// it failed — what a canary is judged on. Invokes (authenticated) and fires count, as do
/// deliveries the provider accepted or failed on (2xx/3xx, 5xx); a delivery the provider
/// refused (4xx: unsigned, forged, malformed — anyone can send those) does not, nor does a
/// call the host or the caller ended before the provider was the cause (busy, bad request,
/// no route).
pub(super) fn judged(result: &Result<Output, CallError>) -> Option<bool> {
    match result {
        Ok(Output::Http(response)) => match response.status().as_u16() {
            400..=499 => None,
            500.. => Some(true),
            _ => Some(false),
        },
        Ok(Output::Json(_)) => Some(false),
        Err(e) if counts_as_failure(e) => Some(true),
        Err(
            CallError::CircuitOpen { .. }
            | CallError::ResultTooLarge { .. }
            | CallError::Provider(crate::errors::ProviderFailure::Internal(_)),
        ) => Some(true),
        // The provider answered, and the answer is about the request or its upstream.
        Err(CallError::Provider(_)) => Some(false),
        Err(_) => None,
    }
}
