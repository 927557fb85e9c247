//! What the log line of a finished call costs: the host's JSON format
//! (`telemetry::json_log::JsonLine`) against `tracing_subscriber`'s stock JSON format writing
//! the same line, each through a full `fmt` subscriber at `info` into a discarding writer —
//! measured in the same run.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::Criterion;
use greentic_host::telemetry::json_log::JsonLine;
use tracing_subscriber::fmt::FormatEvent;
use tracing_subscriber::fmt::format::JsonFields;

/// The line `Runtime::call` writes for every call, with the same fields.
fn call_finished(trace_id: u128) {
    tracing::info!(
        target: "greentic::call",
        tenant = %"acme", team = "billing", user = "ada", provider = %"messaging-webhook",
        domain = "messaging", capability = "send", code = "ok",
        trace_id = %format_args!("{trace_id:032x}"), duration_ms = 3u64,
        "call finished"
    );
}

fn bench(
    c: &mut Criterion,
    name: &str,
    format: impl FormatEvent<tracing_subscriber::Registry, JsonFields> + Send + Sync + 'static,
) {
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::sink)
        .event_format(format)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let mut trace_id = 0x0af7651916cd43dd8448eb211c80319cu128;
        c.bench_function(name, |b| {
            b.iter(|| {
                trace_id = trace_id.wrapping_add(1);
                call_finished(black_box(trace_id));
            })
        });
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(
        &mut c,
        "log-line/tracing-subscriber-json",
        tracing_subscriber::fmt::format()
            .json()
            .with_current_span(false),
    );
    bench(&mut c, "log-line/host-json", JsonLine::new());
    c.final_summary();
}
