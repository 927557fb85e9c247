//! Exporting records as OpenTelemetry log records, so a copy lives outside the machine.

use std::sync::Arc;

use serde_json::Value;

use crate::chain::Export;

/// An [`Export`] as OTLP log records (body: the kind; attributes: seq, hash, prev and the
/// event's fields as `event.<name>`).
pub struct OtlpExport {
    logger: opentelemetry_sdk::logs::SdkLogger,
}

impl OtlpExport {
    /// Exports through `provider`.
    pub fn new(provider: &opentelemetry_sdk::logs::SdkLoggerProvider) -> OtlpExport {
        use opentelemetry::logs::LoggerProvider as _;
        OtlpExport {
            logger: provider.logger("greentic-audit"),
        }
    }
}

impl Export for OtlpExport {
    fn export(&mut self, seq: u64, kind: &str, event: &Value, hash: &str, prev: &str) {
        use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
        let mut record = self.logger.create_log_record();
        record.set_event_name("greentic.audit");
        record.set_severity_number(Severity::Info);
        record.set_severity_text("INFO");
        record.set_body(AnyValue::from(kind.to_string()));
        record.add_attribute("audit.seq", seq as i64);
        record.add_attribute("audit.kind", kind.to_string());
        record.add_attribute("audit.hash", hash.to_string());
        record.add_attribute("audit.prev", prev.to_string());
        if let Some(fields) = event.as_object() {
            for (name, value) in fields {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                record.add_attribute(format!("event.{name}"), text);
            }
        }
        self.logger.emit(record);
    }
}

/// Keeps the OTLP logger provider alive (and flushes it) for as long as the audit log runs.
pub struct Exporting {
    /// The provider.
    pub provider: Option<Arc<opentelemetry_sdk::logs::SdkLoggerProvider>>,
}

impl Drop for Exporting {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
    }
}
