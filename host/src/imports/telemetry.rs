//! `greentic:telemetry`: guest logs, spans and metrics.
//!
//! The host stamps tenant, team, user, provider, capability and trace id on everything; keys
//! with the reserved `greentic.` prefix from the guest are dropped. Everything a guest can make
//! the host allocate is bounded: message and attribute sizes, attributes per record, spans per
//! call, distinct metric names per provider.

use opentelemetry::trace::{Span as _, Status, TraceContextExt, Tracer};
use opentelemetry::{KeyValue, global};
use wasmtime::component::Resource;

use crate::bindings::messaging::greentic::telemetry::tracing::{HostSpan, SpanStatus};
use crate::bindings::messaging::greentic::telemetry::types::{Attribute, Level};
use crate::bindings::messaging::greentic::telemetry::{logs, metrics, tracing as gtracing, types};
use crate::state::{CallScope, CallState};

/// Longest log message or span name kept, in bytes.
pub const MAX_MESSAGE: usize = 8 * 1024;
/// Longest attribute key kept.
pub const MAX_KEY: usize = 128;
/// Longest attribute value kept.
pub const MAX_VALUE: usize = 1024;
/// Attributes kept per record.
pub const MAX_ATTRIBUTES: usize = 32;
/// Spans a call may start; more are silently not recorded.
pub const MAX_SPANS: u32 = 256;

/// A guest span: an OpenTelemetry span, or nothing once over the limit or ended.
pub struct GuestSpan {
    span: Option<global::BoxedSpan>,
    cx: opentelemetry::Context,
}

fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn guest_attributes(attrs: &[Attribute]) -> Vec<KeyValue> {
    attrs
        .iter()
        .filter(|a| !a.key.starts_with("greentic."))
        .take(MAX_ATTRIBUTES)
        .map(|a| {
            KeyValue::new(
                clip(&a.key, MAX_KEY).to_string(),
                clip(&a.value, MAX_VALUE).to_string(),
            )
        })
        .collect()
}

/// The attributes the host stamps; guests cannot set these keys.
pub fn host_attributes(scope: &CallScope) -> Vec<KeyValue> {
    let mut attrs = vec![
        KeyValue::new("greentic.tenant", scope.tenant.clone()),
        KeyValue::new("greentic.provider", scope.provider.clone()),
        KeyValue::new("greentic.capability", scope.capability.clone()),
        KeyValue::new("greentic.trace_id", scope.trace_id.clone()),
    ];
    if let Some(team) = &scope.team {
        attrs.push(KeyValue::new("greentic.team", team.clone()));
    }
    if let Some(user) = &scope.user {
        attrs.push(KeyValue::new("greentic.user", user.clone()));
    }
    attrs
}

impl types::Host for CallState {}

impl logs::Host for CallState {
    fn log(
        &mut self,
        level: Level,
        message: String,
        attributes: Vec<Attribute>,
    ) -> wasmtime::Result<()> {
        let s = &self.scope;
        let message = clip(&message, MAX_MESSAGE);
        let attrs: Vec<(String, String)> = guest_attributes(&attributes)
            .into_iter()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect();
        let attrs = serde_json::to_string(&attrs).unwrap_or_default();
        let team = s.team.as_deref().unwrap_or("");
        let user = s.user.as_deref().unwrap_or("");
        macro_rules! emit {
            ($lvl:expr) => {
                tracing::event!(
                    target: "greentic::guest", $lvl,
                    tenant = %s.tenant, team, user, provider = %s.provider,
                    capability = %s.capability, trace_id = %s.trace_id, attributes = %attrs,
                    "{message}"
                )
            };
        }
        match level {
            Level::Trace => emit!(tracing::Level::TRACE),
            Level::Debug => emit!(tracing::Level::DEBUG),
            Level::Info => emit!(tracing::Level::INFO),
            Level::Warn => emit!(tracing::Level::WARN),
            Level::Error => emit!(tracing::Level::ERROR),
        }
        Ok(())
    }
}

impl gtracing::Host for CallState {}

impl HostSpan for CallState {
    fn new(
        &mut self,
        name: String,
        parent: Option<Resource<GuestSpan>>,
    ) -> wasmtime::Result<Resource<GuestSpan>> {
        let parent_cx = match &parent {
            Some(p) => self.table.get(p)?.cx.clone(),
            None => self.scope.otel_cx.clone(),
        };
        self.spans_started += 1;
        let span = if self.spans_started > MAX_SPANS {
            None
        } else {
            let tracer = global::tracer("greentic-guest");
            let mut span = tracer
                .span_builder(clip(&name, MAX_MESSAGE).to_string())
                .with_attributes(host_attributes(&self.scope))
                .start_with_context(&tracer, &parent_cx);
            span.set_attribute(KeyValue::new("greentic.origin", "guest"));
            Some(span)
        };
        let cx = match &span {
            Some(s) => parent_cx.with_remote_span_context(s.span_context().clone()),
            None => parent_cx,
        };
        Ok(self.table.push(GuestSpan { span, cx })?)
    }

    fn set_attribute(
        &mut self,
        span: Resource<GuestSpan>,
        key: String,
        value: String,
    ) -> wasmtime::Result<()> {
        if let Some(s) = self.table.get_mut(&span)?.span.as_mut()
            && !key.starts_with("greentic.")
        {
            s.set_attribute(KeyValue::new(
                clip(&key, MAX_KEY).to_string(),
                clip(&value, MAX_VALUE).to_string(),
            ));
        }
        Ok(())
    }

    fn add_event(
        &mut self,
        span: Resource<GuestSpan>,
        name: String,
        attributes: Vec<Attribute>,
    ) -> wasmtime::Result<()> {
        if let Some(s) = self.table.get_mut(&span)?.span.as_mut() {
            s.add_event(
                clip(&name, MAX_KEY).to_string(),
                guest_attributes(&attributes),
            );
        }
        Ok(())
    }

    fn set_status(
        &mut self,
        span: Resource<GuestSpan>,
        status: SpanStatus,
    ) -> wasmtime::Result<()> {
        if let Some(s) = self.table.get_mut(&span)?.span.as_mut() {
            s.set_status(match status {
                SpanStatus::Unset => Status::Unset,
                SpanStatus::Ok => Status::Ok,
                SpanStatus::Error(m) => Status::error(clip(&m, MAX_VALUE).to_string()),
            });
        }
        Ok(())
    }

    fn end(&mut self, span: Resource<GuestSpan>) -> wasmtime::Result<()> {
        if let Some(mut s) = self.table.get_mut(&span)?.span.take() {
            s.end();
        }
        Ok(())
    }

    fn drop(&mut self, span: Resource<GuestSpan>) -> wasmtime::Result<()> {
        let mut guest = self.table.delete(span)?;
        if let Some(mut s) = guest.span.take() {
            s.set_attribute(KeyValue::new("greentic.unfinished", true));
            s.end();
        }
        Ok(())
    }
}

impl metrics::Host for CallState {
    fn counter_add(
        &mut self,
        name: String,
        value: u64,
        _attributes: Vec<Attribute>,
    ) -> wasmtime::Result<()> {
        let s = &self.scope;
        s.metrics
            .guest_counter(&s.tenant, &s.provider, &name, value);
        Ok(())
    }

    fn histogram_record(
        &mut self,
        name: String,
        value: f64,
        _attributes: Vec<Attribute>,
    ) -> wasmtime::Result<()> {
        let s = &self.scope;
        s.metrics
            .guest_histogram(&s.tenant, &s.provider, &name, value);
        Ok(())
    }
}
