//! The resource a guest's span is in the host's table: what `greentic:telemetry/tracing.span`
//! is bound to.

use opentelemetry::global;

/// A guest span: an OpenTelemetry span, or nothing once over the budget or ended.
pub struct GuestSpan {
    pub(super) span: Option<global::BoxedSpan>,
    pub(super) cx: opentelemetry::Context,
}
