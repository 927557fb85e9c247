//! The JSON log line, written straight into the subscriber's buffer.
//!
//! Byte for byte what `tracing_subscriber`'s JSON format writes (`timestamp`, `level`, `fields`,
//! `target`), without its serializer: every finished call logs a line, and under load the stock
//! formatter cost a host about 7% of its CPU. Lines it shapes differently — a `log` crate
//! record (whose target is normalised) or an event inside a span (which lists the spans) — go
//! to the stock formatter.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The host's JSON event format (see the module's documentation).
pub struct JsonLine {
    stock: Format<Json, SystemTime>,
}

impl JsonLine {
    /// The format, with the stock one configured as the host's logs always were (no current
    /// span; the span list when there is one).
    pub fn new() -> JsonLine {
        JsonLine {
            stock: tracing_subscriber::fmt::format()
                .json()
                .with_current_span(false),
        }
    }
}

impl Default for JsonLine {
    fn default() -> Self {
        JsonLine::new()
    }
}

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let from_log_crate = meta.fields().field("log.target").is_some();
        let in_span = event.parent().is_some() || ctx.lookup_current().is_some();
        if from_log_crate || in_span {
            return self.stock.format_event(ctx, writer, event);
        }
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_str("\",\"fields\":{")?;
        let mut fields = Fields {
            out: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str("},\"target\":")?;
        string(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// Writes an event's fields as JSON members, the way `tracing_serde` does: strings, numbers
/// and booleans as themselves, anything else as the string of its `Debug`.
struct Fields<'a, 'w> {
    out: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let out = &mut *self.out;
        self.result = (|| {
            if !std::mem::take(&mut self.first) {
                out.write_char(',')?;
            }
            string(out, field.name())?;
            out.write_char(':')?;
            value(out)
        })();
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| string(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json's shortest round-trip form, and `null` for what JSON cannot say.
        self.member(field, |out| match serde_json::Number::from_f64(value) {
            Some(number) => write!(out, "{number}"),
            None => out.write_str("null"),
        });
    }
}

/// A JSON string: quoted, escaped as serde_json escapes.
fn string(out: &mut Writer<'_>, value: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(value)?;
    out.write_char('"')
}

/// Escapes what passes through it for the inside of a JSON string.
struct Escaped<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escaped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape: &str = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0x00..=0x1f => "",
                _ => continue,
            };
            // Every byte matched above is ASCII, so `i` is a character boundary.
            self.0.write_str(&s[start..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// The events every test line comes from: each kind of field value, text that must be
    /// escaped, non-ASCII text, and an event inside a span.
    fn emit() {
        let error = io::Error::other("disk \"full\"\n");
        tracing::info!(target: "greentic::call", tenant = %"acme", team = "", code = "ok",
            duration_ms = 3u64, delta = -4i64, ok = true, ratio = 0.25f64, whole = 2.0f64,
            nan = f64::NAN, big = 1u128 << 100, "call finished");
        tracing::warn!(
            path = "a\"b\\c\td\re\u{1}f\u{7f}",
            name = "Zürich ✓ 東京",
            "quoted {}",
            7
        );
        tracing::error!(error = &error as &dyn std::error::Error, debug = ?Some("x\ny"), "failed");
        tracing::debug!("not enabled at info");
        let span = tracing::info_span!("outer", tenant = "acme");
        let _entered = span.enter();
        tracing::info!(inner = 1u64, "inside a span");
    }

    fn lines(
        format: impl FormatEvent<
            tracing_subscriber::Registry,
            tracing_subscriber::fmt::format::JsonFields,
        > + Send
        + Sync
        + 'static,
    ) -> Vec<String> {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(out.clone())
            .event_format(format)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                // The timestamps differ by when each line was written; everything else must not.
                let at = line.find("\"level\"").expect("a level");
                assert!(line.starts_with("{\"timestamp\":\"20"), "{line}");
                line[at..].to_string()
            })
            .collect()
    }

    #[test]
    fn lines_are_those_of_the_stock_json_format() {
        let ours = lines(JsonLine::new());
        let stock = lines(
            tracing_subscriber::fmt::format()
                .json()
                .with_current_span(false),
        );
        assert_eq!(ours.len(), 4, "{ours:#?}");
        assert_eq!(ours, stock);
        for line in &ours {
            let value: serde_json::Value = serde_json::from_str(&format!("{{{line}")).unwrap();
            assert!(value["fields"]["message"].is_string(), "{line}");
        }
        assert!(
            ours[0].contains("\"ratio\":0.25,\"whole\":2.0,\"nan\":null"),
            "{}",
            ours[0]
        );
        assert!(ours[1].contains(r#""a\"b\\c\td\re\u0001f"#), "{}", ours[1]);
        assert!(ours[3].contains("\"spans\":[{"), "{}", ours[3]);
    }

    #[test]
    fn the_timestamp_is_utc_with_microseconds() {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(out.clone())
            .event_format(JsonLine::new())
            .finish();
        let stamp = || {
            let mut at = String::new();
            SystemTime.format_time(&mut Writer::new(&mut at)).unwrap();
            at
        };
        let before = stamp();
        tracing::subscriber::with_default(subscriber, || tracing::info!("now"));
        let after = stamp();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let value: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        let at = value["timestamp"].as_str().unwrap();
        // One format, so the order of the strings is the order of the moments.
        assert_eq!(at.len(), "2026-01-01T00:00:00.000000Z".len(), "{at}");
        assert!(
            before.as_str() <= at && at <= after.as_str(),
            "{before} {at} {after}"
        );
        assert!(at.ends_with('Z') && at.as_bytes()[10] == b'T', "{at}");
        assert!(text.ends_with("}\n"));
    }
}
