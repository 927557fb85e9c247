//! `greentic:telemetry`: guest logs, spans and metrics.
//!
//! The host stamps tenant, team, user, provider, capability and trace id on everything; keys
//! with the reserved `greentic.` prefix from the guest are dropped. What a guest can make the
//! host keep is bounded per call, not per item, whatever its fuel: every string is cut at
//! [`MAX_GUEST_TEXT`]; each record keeps at most [`MAX_ATTRIBUTES`] attributes; and a call
//! has budgets of log bytes, spans, events, attributes and attribute bytes
//! ([`TelemetryBudgets`]). What exceeds them is dropped and counted
//! (`greentic_telemetry_dropped_total`), with one rate-limited warning.

pub use crate::bindings::GuestSpan;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use greentic_manifest::ProviderManifest;
use greentic_metrics::Metrics;
use opentelemetry::trace::{Span as _, Status, TraceContextExt, Tracer};
use opentelemetry::{KeyValue, global};
use serde::{Deserialize, Serialize};
use wasmtime::component::Resource;
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::greentic::telemetry::tracing::{HostSpan, SpanStatus};
use crate::bindings::greentic::telemetry::types::{Attribute, Level};
use crate::bindings::greentic::telemetry::{logs, metrics, tracing as gtracing, types};
use crate::call::{CallScope, HasImports, Imports};
use crate::capability::{BundleFacts, Capability, Configured};
use crate::grants::Grants;
use crate::text::{MAX_GUEST_TEXT, clip};

/// The telemetry capability.
pub struct Telemetry;

impl Capability for Telemetry {
    const NAME: &'static str = "telemetry";
    const INTERFACES: &'static [&'static str] = &["greentic:telemetry/"];

    fn granted(grants: &Grants) -> bool {
        grants.telemetry
    }

    fn ungranted(provider: &str, _: &ProviderManifest) -> String {
        format!("imports `greentic:telemetry` but [providers.{provider}].grants.telemetry is false")
    }

    fn add_to_linker<T: HasImports>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        types::add_to_linker::<_, HasSelf<Imports>>(linker, T::imports)?;
        logs::add_to_linker::<_, HasSelf<Imports>>(linker, T::imports)?;
        gtracing::add_to_linker::<_, HasSelf<Imports>>(linker, T::imports)?;
        metrics::add_to_linker::<_, HasSelf<Imports>>(linker, T::imports)
    }
}

impl Configured for Telemetry {
    type Section = TelemetrySection;
    /// The exporter is the process's, set up once at start (see the host's telemetry setup).
    type Backend = ();

    fn check(section: &TelemetrySection, _: &BundleFacts<'_>) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(tls) = &section.tls {
            if tls.ca.is_none() {
                out.push("[telemetry].tls needs `ca`, the CA certificates (PEM) the collector's certificate must chain to".into());
            }
            if tls.cert.is_some() != tls.key.is_some() {
                out.push(
                    "[telemetry].tls: a client certificate needs both `cert` and `key`".into(),
                );
            }
            if section
                .otlp_endpoint
                .as_deref()
                .is_some_and(|e| !e.starts_with("https://"))
            {
                out.push("[telemetry].tls is set but otlp_endpoint is not `https://…`: the spans would go in clear; use https".into());
            }
        }
        out
    }

    fn open(_: &TelemetrySection, _: &std::path::Path) -> anyhow::Result<()> {
        Ok(())
    }
}

/// `[telemetry]`: where the host's spans (and the audit log's records) go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// OTLP/HTTP endpoint (e.g. `http://127.0.0.1:4318`); `OTEL_EXPORTER_OTLP_ENDPOINT` wins.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `service.name` resource attribute.
    #[serde(default)]
    pub service_name: Option<String>,
    /// TLS to an `https://` endpoint of a private PKI: `{ca, cert, key}` — the CA bundle (PEM)
    /// the collector's certificate must chain to (nothing else is trusted) and the host's client
    /// certificate and key, for a collector that verifies clients. Paths relative to the bundle.
    #[serde(default)]
    pub tls: Option<greentic_tls::ClientFiles>,
}

/// Attributes kept per record (a log line, a span's `set-attribute` calls, an event).
pub const MAX_ATTRIBUTES: usize = 32;

/// Telemetry of one call, counted: what a call may emit ([`BUDGETS`]) and what it did.
///
/// Log lines are written as they come (through a bounded queue), so only their bytes are
/// budgeted. Spans live in memory until exported; their bound is the span budgets per call
/// times the export queue (`SPAN_QUEUE` spans, set where the tracer provider is installed).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TelemetryBudgets {
    /// Bytes of log lines (message and attributes, plus [`LOG_LINE_OVERHEAD`] per line).
    pub log_bytes: u64,
    /// Spans started.
    pub spans: u32,
    /// Span events.
    pub events: u32,
    /// Attributes of spans and events.
    pub attributes: u32,
    /// Bytes of span and event attribute keys and values, and event names.
    pub attribute_bytes: u64,
    /// Counter and histogram points.
    pub metric_points: u32,
}

/// The budgets every call has.
pub const BUDGETS: TelemetryBudgets = TelemetryBudgets {
    log_bytes: 64 << 10,
    spans: 32,
    events: 128,
    attributes: 256,
    attribute_bytes: 16 << 10,
    metric_points: 1024,
};

/// What each log line is charged besides its message and attributes (the host's own fields).
pub const LOG_LINE_OVERHEAD: u64 = 256;

/// OpenTelemetry's own limits per span, set on the tracer provider (`telemetry::init_tracing`):
/// events per span, attributes per span, attributes per event, links per span.
pub const SPAN_LIMITS: (u32, u32, u32, u32) = (128, 64, 32, 0);

/// What a call emitted so far, and what it dropped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TelemetryUsage {
    /// Emitted, against [`BUDGETS`].
    pub used: TelemetryBudgets,
    /// Dropped: log lines, spans, events, attributes, metric points.
    pub dropped: [u32; 5],
}

const DROPPED_KINDS: [&str; 5] = ["log", "span", "event", "attribute", "metric"];

impl TelemetryUsage {
    fn drop_one(&mut self, kind: usize) {
        self.dropped[kind] = self.dropped[kind].saturating_add(1);
    }

    /// Keeps the attributes of one span record that fit the call's budgets (`greentic.` keys
    /// are the host's and never kept), each key and value cut at [`MAX_GUEST_TEXT`].
    fn attributes(&mut self, attrs: &[Attribute]) -> Vec<KeyValue> {
        let mut kept = Vec::new();
        for a in attrs.iter().filter(|a| !a.key.starts_with("greentic.")) {
            let key = clip(&a.key, MAX_GUEST_TEXT);
            let value = clip(&a.value, MAX_GUEST_TEXT);
            let bytes = (key.len() + value.len()) as u64;
            if kept.len() >= MAX_ATTRIBUTES
                || self.used.attributes >= BUDGETS.attributes
                || self.used.attribute_bytes + bytes > BUDGETS.attribute_bytes
            {
                self.drop_one(3);
                continue;
            }
            self.used.attributes += 1;
            self.used.attribute_bytes += bytes;
            kept.push(KeyValue::new(key.to_string(), value.to_string()));
        }
        kept
    }

    /// Reports what the call dropped: counted per kind, and at most one warning per tenant and
    /// provider every ten seconds (naming what was dropped since the last one).
    pub fn report(&self, scope: &CallScope) {
        if self.dropped.iter().all(|n| *n == 0) {
            return;
        }
        report_dropped(
            &scope.metrics,
            &scope.tenant,
            &scope.provider,
            &self.dropped,
        );
    }
}

/// When each tenant and provider was last warned about, and what it dropped since.
type Warned = HashMap<(String, String), (Instant, [u64; 5])>;

fn report_dropped(metrics: &Metrics, tenant: &str, provider: &str, dropped: &[u32; 5]) {
    static WARNED: Mutex<Option<Warned>> = Mutex::new(None);
    for (kind, n) in DROPPED_KINDS.iter().zip(dropped) {
        if *n > 0 {
            metrics.add(
                "greentic_telemetry_dropped_total",
                &[("tenant", tenant), ("provider", provider), ("kind", kind)],
                f64::from(*n),
            );
        }
    }
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    let map = warned.get_or_insert_with(HashMap::new);
    let now = Instant::now();
    let entry = map
        .entry((tenant.to_string(), provider.to_string()))
        .or_insert((now - Duration::from_secs(3600), [0; 5]));
    for (total, n) in entry.1.iter_mut().zip(dropped) {
        *total += u64::from(*n);
    }
    if now.duration_since(entry.0) >= Duration::from_secs(10) {
        let [logs, spans, events, attributes, points] = entry.1;
        tracing::warn!(
            tenant,
            provider,
            logs,
            spans,
            events,
            attributes,
            metric_points = points,
            "a provider's telemetry went over its per-call budget; what exceeded it was dropped (counted in greentic_telemetry_dropped_total)"
        );
        *entry = (now, [0; 5]);
    }
}

/// The attributes the host stamps; guests cannot set these keys.
pub fn host_attributes(scope: &CallScope) -> Vec<KeyValue> {
    let mut attrs = vec![
        KeyValue::new("greentic.tenant", scope.tenant.clone()),
        KeyValue::new("greentic.provider", scope.provider.clone()),
        KeyValue::new("greentic.capability", scope.operation.clone()),
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

impl types::Host for Imports {}

impl logs::Host for Imports {
    fn log(
        &mut self,
        level: Level,
        message: String,
        attributes: Vec<Attribute>,
    ) -> wasmtime::Result<()> {
        let message = clip(&message, MAX_GUEST_TEXT);
        let usage = self.usage.of::<TelemetryUsage>();
        // Charge the line as it will be written: the message first (a line that does not fit
        // is dropped), then each attribute while the budget lasts.
        let cost = message.len() as u64 + LOG_LINE_OVERHEAD;
        if usage.used.log_bytes + cost > BUDGETS.log_bytes {
            usage.drop_one(0);
            return Ok(());
        }
        usage.used.log_bytes += cost;
        let mut attrs: Vec<(&str, &str)> = Vec::new();
        for a in attributes
            .iter()
            .filter(|a| !a.key.starts_with("greentic."))
        {
            let (key, value) = (clip(&a.key, MAX_GUEST_TEXT), clip(&a.value, MAX_GUEST_TEXT));
            let bytes = (key.len() + value.len()) as u64;
            if attrs.len() >= MAX_ATTRIBUTES || usage.used.log_bytes + bytes > BUDGETS.log_bytes {
                usage.drop_one(3);
                continue;
            }
            usage.used.log_bytes += bytes;
            attrs.push((key, value));
        }
        let attrs = serde_json::to_string(&attrs).unwrap_or_default();
        let s = &self.scope;
        let team = s.team.as_deref().unwrap_or("");
        let user = s.user.as_deref().unwrap_or("");
        macro_rules! emit {
            ($lvl:expr) => {
                tracing::event!(
                    target: "greentic::guest", $lvl,
                    tenant = %s.tenant, team, user, provider = %s.provider,
                    capability = %s.operation, trace_id = %s.trace_id, attributes = %attrs,
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

impl gtracing::Host for Imports {}

impl HostSpan for Imports {
    fn new(
        &mut self,
        name: String,
        parent: Option<Resource<GuestSpan>>,
    ) -> wasmtime::Result<Resource<GuestSpan>> {
        let parent_cx = match &parent {
            Some(p) => self.table.get(p)?.cx.clone(),
            None => self.scope.otel_cx.clone(),
        };
        let name = clip(&name, MAX_GUEST_TEXT);
        let usage = self.usage.of::<TelemetryUsage>();
        let span = if usage.used.spans >= BUDGETS.spans
            || usage.used.attribute_bytes + name.len() as u64 > BUDGETS.attribute_bytes
        {
            usage.drop_one(1);
            None
        } else {
            usage.used.spans += 1;
            usage.used.attribute_bytes += name.len() as u64;
            let tracer = global::tracer("greentic-guest");
            let mut span = tracer
                .span_builder(name.to_string())
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
        let guest = self.table.get_mut(&span)?;
        if let Some(s) = guest.span.as_mut() {
            let kept = self
                .usage
                .of::<TelemetryUsage>()
                .attributes(&[Attribute { key, value }]);
            for kv in kept {
                s.set_attribute(kv);
            }
        }
        Ok(())
    }

    fn add_event(
        &mut self,
        span: Resource<GuestSpan>,
        name: String,
        attributes: Vec<Attribute>,
    ) -> wasmtime::Result<()> {
        let guest = self.table.get_mut(&span)?;
        let Some(s) = guest.span.as_mut() else {
            return Ok(());
        };
        let usage = self.usage.of::<TelemetryUsage>();
        let name = clip(&name, MAX_GUEST_TEXT);
        if usage.used.events >= BUDGETS.events
            || usage.used.attribute_bytes + name.len() as u64 > BUDGETS.attribute_bytes
        {
            usage.drop_one(2);
            return Ok(());
        }
        usage.used.events += 1;
        usage.used.attribute_bytes += name.len() as u64;
        let attrs = usage.attributes(&attributes);
        s.add_event(name.to_string(), attrs);
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
                SpanStatus::Error(m) => Status::error(clip(&m, MAX_GUEST_TEXT).to_string()),
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

impl Imports {
    fn metric_point(&mut self) -> bool {
        if self.usage.of::<TelemetryUsage>().used.metric_points >= BUDGETS.metric_points {
            self.usage.of::<TelemetryUsage>().drop_one(4);
            return false;
        }
        self.usage.of::<TelemetryUsage>().used.metric_points += 1;
        true
    }
}

impl metrics::Host for Imports {
    fn counter_add(
        &mut self,
        name: String,
        value: u64,
        _attributes: Vec<Attribute>,
    ) -> wasmtime::Result<()> {
        if self.metric_point() {
            let s = &self.scope;
            s.metrics
                .guest_counter(&s.tenant, &s.provider, &name, value);
        }
        Ok(())
    }

    fn histogram_record(
        &mut self,
        name: String,
        value: f64,
        _attributes: Vec<Attribute>,
    ) -> wasmtime::Result<()> {
        if self.metric_point() {
            let s = &self.scope;
            s.metrics
                .guest_histogram(&s.tenant, &s.provider, &name, value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(k: &str, v: &str) -> Attribute {
        Attribute {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn attributes_are_bounded_per_record_and_per_call() {
        let mut usage = TelemetryUsage::default();
        let big = "v".repeat(3 * MAX_GUEST_TEXT);
        let kept = usage.attributes(&[attr("greentic.tenant", "x"), attr("k", &big)]);
        assert_eq!(kept.len(), 1, "host keys are never kept");
        assert_eq!(kept[0].value.as_str().len(), MAX_GUEST_TEXT);
        let many: Vec<Attribute> = (0..100).map(|i| attr(&format!("k{i}"), "v")).collect();
        assert_eq!(usage.attributes(&many).len(), MAX_ATTRIBUTES);
        assert_eq!(usage.dropped[3], 100 - MAX_ATTRIBUTES as u32);
        // The call's attribute bytes run out whatever the records.
        let mut total = 0;
        for _ in 0..100 {
            total += usage.attributes(&[attr("k", &big)]).len();
        }
        assert!(
            usage.used.attribute_bytes <= BUDGETS.attribute_bytes,
            "{}",
            usage.used.attribute_bytes
        );
        assert!(total < 20, "{total} big attributes kept");
    }

    #[test]
    fn dropped_telemetry_is_counted_per_kind() {
        let m = Metrics::default();
        report_dropped(&m, "t-warn", "p", &[1, 0, 0, 2, 0]);
        report_dropped(&m, "t-warn", "p", &[3, 0, 0, 0, 0]);
        let c = |kind| {
            m.counter(
                "greentic_telemetry_dropped_total",
                &[("tenant", "t-warn"), ("provider", "p"), ("kind", kind)],
            )
        };
        assert_eq!(c("log"), 4.0);
        assert_eq!(c("attribute"), 2.0);
        assert_eq!(c("span"), 0.0);
    }
}
