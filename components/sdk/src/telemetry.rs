//! Logs, spans and metrics through `greentic:telemetry`.
//!
//! The host stamps every record with the tenant, team, user, provider, capability and trace id
//! of the call; keys starting with `greentic.` are reserved and dropped by the host.

use crate::imports::greentic::telemetry::{logs, metrics, tracing};

pub use crate::imports::greentic::telemetry::tracing::SpanStatus;
pub use crate::imports::greentic::telemetry::types::{Attribute, Level};

fn attributes(pairs: &[(&str, &str)]) -> Vec<Attribute> {
    pairs
        .iter()
        .map(|(key, value)| Attribute {
            key: (*key).to_string(),
            value: (*value).to_string(),
        })
        .collect()
}

/// Emits a log record.
pub fn log(level: Level, message: &str, attrs: &[(&str, &str)]) {
    logs::log(level, message, &attributes(attrs));
}

/// Emits an `info` record.
pub fn info(message: &str, attrs: &[(&str, &str)]) {
    log(Level::Info, message, attrs);
}

/// Emits a `warn` record.
pub fn warn(message: &str, attrs: &[(&str, &str)]) {
    log(Level::Warn, message, attrs);
}

/// Emits an `error` record.
pub fn error(message: &str, attrs: &[(&str, &str)]) {
    log(Level::Error, message, attrs);
}

/// Adds `value` to counter `name`.
pub fn counter_add(name: &str, value: u64, attrs: &[(&str, &str)]) {
    metrics::counter_add(name, value, &attributes(attrs));
}

/// Records `value` in histogram `name`.
pub fn histogram_record(name: &str, value: f64, attrs: &[(&str, &str)]) {
    metrics::histogram_record(name, value, &attributes(attrs));
}

/// A span that ends when dropped.
///
/// ```no_run
/// use greentic_provider_sdk::telemetry::SpanGuard;
///
/// let span = SpanGuard::start("deliver");
/// span.attr("http.status", "202");
/// let result: Result<(), String> = Ok(());
/// span.finish(&result); // sets ok/error from the result, then ends
/// ```
pub struct SpanGuard {
    span: tracing::Span,
    ended: bool,
}

impl SpanGuard {
    /// Starts a span under the host's span for the current call.
    pub fn start(name: &str) -> SpanGuard {
        SpanGuard {
            span: tracing::Span::new(name, None),
            ended: false,
        }
    }

    /// Starts a child span of this one.
    pub fn child(&self, name: &str) -> SpanGuard {
        SpanGuard {
            span: tracing::Span::new(name, Some(&self.span)),
            ended: false,
        }
    }

    /// Sets an attribute.
    pub fn attr(&self, key: &str, value: &str) -> &SpanGuard {
        self.span.set_attribute(key, value);
        self
    }

    /// Records an event.
    pub fn event(&self, name: &str, attrs: &[(&str, &str)]) {
        self.span.add_event(name, &attributes(attrs));
    }

    /// Marks the span successful and ends it.
    pub fn ok(mut self) {
        self.span.set_status(&SpanStatus::Ok);
        self.end();
    }

    /// Marks the span failed with `message` and ends it.
    pub fn fail(mut self, message: &str) {
        self.span
            .set_status(&SpanStatus::Error(message.to_string()));
        self.end();
    }

    /// Sets the status from `result` (`Debug` of the error as the message) and ends the span.
    pub fn finish<T, E: core::fmt::Debug>(self, result: &Result<T, E>) {
        match result {
            Ok(_) => self.ok(),
            Err(e) => self.fail(&format!("{e:?}")),
        }
    }

    fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            self.span.end();
        }
    }
}

impl Drop for SpanGuard {
    fn drop(&mut self) {
        self.end();
    }
}
