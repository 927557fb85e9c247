//! Prometheus metrics: calls, errors by code, latency, fuel, breaker state — per tenant and
//! provider — and guest-defined counters and histograms (bounded in number).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::Mutex;

type Labels = Vec<(String, String)>;

/// Latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Distinct guest metric names accepted per provider.
pub const MAX_GUEST_METRICS: usize = 64;

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Inner {
    help: BTreeMap<String, (&'static str, &'static str)>,
    counters: BTreeMap<(String, Labels), f64>,
    gauges: BTreeMap<(String, Labels), f64>,
    histograms: BTreeMap<(String, Labels), Histogram>,
    guest_names: BTreeMap<String, BTreeSet<String>>,
}

/// The registry.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every metric the host exports: name, Prometheus type, help text. Dashboards and alerts
/// may rely on these names.
pub const EXPORTED: &[(&str, &str, &str)] = &[
    (
        "greentic_calls_total",
        "counter",
        "Calls of every domain by tenant, provider, capability (a delivery's is its domain) and outcome code.",
    ),
    (
        "greentic_call_duration_seconds",
        "histogram",
        "Call latency, including retries.",
    ),
    (
        "greentic_fuel_consumed_total",
        "counter",
        "Fuel consumed by calls.",
    ),
    (
        "greentic_cpu_bound_calls_total",
        "counter",
        "Calls whose guest work outgrew a short call's CPU and ran on, in weighted turns, on the guest threads.",
    ),
    (
        "greentic_guest_cpu_seconds_total",
        "counter",
        "CPU time of guest turns (instantiation and guest code, with the host calls it makes) by tenant.",
    ),
    (
        "greentic_host_at_capacity_total",
        "counter",
        "Calls answered 503 host-at-capacity: the host ran [host] max_in_flight calls and none finished within the tenant's queue_timeout_ms.",
    ),
    (
        "greentic_calls_in_flight",
        "gauge",
        "Calls running on the active revision's engine now.",
    ),
    (
        "greentic_max_in_flight",
        "gauge",
        "Calls the active revision's engine admits at once ([host] max_in_flight).",
    ),
    (
        "greentic_retries_total",
        "counter",
        "Retries of idempotent calls.",
    ),
    (
        "greentic_circuit_open",
        "gauge",
        "1 while the circuit of a tenant/provider is open or half-open.",
    ),
    (
        "greentic_calls_in_flight",
        "gauge",
        "Calls being served (including those queued for their tenant's limits).",
    ),
    (
        "greentic_secret_reads_total",
        "counter",
        "Secret reads by result (values are never recorded).",
    ),
    (
        "greentic_guest_counter_total",
        "counter",
        "Counters emitted by providers.",
    ),
    (
        "greentic_guest_histogram",
        "histogram",
        "Histograms emitted by providers.",
    ),
    (
        REVISION_INFO,
        "gauge",
        "1, labelled with the digest of the revision this host serves.",
    ),
];

/// The metric naming the revision a host serves (`digest` label).
pub const REVISION_INFO: &str = "greentic_revision_info";

fn help(name: &str) -> (&'static str, &'static str) {
    EXPORTED.iter().find(|(n, _, _)| *n == name).map_or_else(
        || {
            if name.ends_with("_total") {
                ("counter", "greentic counter.")
            } else {
                ("untyped", "greentic metric.")
            }
        },
        |(_, kind, text)| (kind, text),
    )
}

impl Metrics {
    /// Adds 1 to counter `name`.
    pub fn inc(&self, name: &str, l: &[(&str, &str)]) {
        self.add(name, l, 1.0);
    }

    /// Adds `value` to counter `name`.
    pub fn add(&self, name: &str, l: &[(&str, &str)], value: f64) {
        let mut inner = self.inner.lock().expect("metrics lock");
        inner
            .help
            .entry(name.to_string())
            .or_insert_with(|| help(name));
        *inner
            .counters
            .entry((name.to_string(), labels(l)))
            .or_default() += value;
    }

    /// Sets gauge `name`.
    pub fn set(&self, name: &str, l: &[(&str, &str)], value: f64) {
        let mut inner = self.inner.lock().expect("metrics lock");
        inner
            .help
            .entry(name.to_string())
            .or_insert_with(|| help(name));
        inner.gauges.insert((name.to_string(), labels(l)), value);
    }

    /// Adds `delta` (which may be negative) to gauge `name`.
    pub fn gauge_add(&self, name: &str, l: &[(&str, &str)], delta: f64) {
        let mut inner = self.inner.lock().expect("metrics lock");
        inner
            .help
            .entry(name.to_string())
            .or_insert_with(|| help(name));
        *inner
            .gauges
            .entry((name.to_string(), labels(l)))
            .or_default() += delta;
    }

    /// Records `value` in histogram `name`.
    pub fn observe(&self, name: &str, l: &[(&str, &str)], value: f64) {
        let mut inner = self.inner.lock().expect("metrics lock");
        inner
            .help
            .entry(name.to_string())
            .or_insert_with(|| help(name));
        let h = inner
            .histograms
            .entry((name.to_string(), labels(l)))
            .or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if value <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += value;
        h.count += 1;
    }

    fn guest_name_ok(&self, provider: &str, name: &str) -> bool {
        if name.is_empty() || name.len() > 128 {
            return false;
        }
        let mut inner = self.inner.lock().expect("metrics lock");
        let names = inner.guest_names.entry(provider.to_string()).or_default();
        names.contains(name) || (names.len() < MAX_GUEST_METRICS && names.insert(name.to_string()))
    }

    /// A provider's counter (ignored past [`MAX_GUEST_METRICS`] names per provider).
    pub fn guest_counter(&self, tenant: &str, provider: &str, name: &str, value: u64) {
        if self.guest_name_ok(provider, name) {
            self.add(
                "greentic_guest_counter_total",
                &[("tenant", tenant), ("provider", provider), ("name", name)],
                value as f64,
            );
        }
    }

    /// A provider's histogram (ignored past [`MAX_GUEST_METRICS`] names per provider).
    pub fn guest_histogram(&self, tenant: &str, provider: &str, name: &str, value: f64) {
        if value.is_finite() && self.guest_name_ok(provider, name) {
            self.observe(
                "greentic_guest_histogram",
                &[("tenant", tenant), ("provider", provider), ("name", name)],
                value,
            );
        }
    }

    /// The value of a counter (for tests).
    pub fn counter(&self, name: &str, l: &[(&str, &str)]) -> f64 {
        let inner = self.inner.lock().expect("metrics lock");
        inner
            .counters
            .get(&(name.to_string(), labels(l)))
            .copied()
            .unwrap_or(0.0)
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let inner = self.inner.lock().expect("metrics lock");
        let mut out = String::new();
        let fmt_labels = |l: &Labels, extra: Option<(&str, String)>| {
            let mut parts: Vec<String> = l
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            if let Some((k, v)) = extra {
                parts.push(format!("{k}=\"{v}\""));
            }
            if parts.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", parts.join(","))
            }
        };
        for (name, (kind, text)) in &inner.help {
            let _ = writeln!(out, "# HELP {name} {text}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for ((n, l), v) in inner.counters.iter().chain(inner.gauges.iter()) {
                if n == name {
                    let _ = writeln!(out, "{name}{} {v}", fmt_labels(l, None));
                }
            }
            for ((n, l), h) in &inner.histograms {
                if n != name {
                    continue;
                }
                for (i, bound) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {}",
                        fmt_labels(l, Some(("le", bound.to_string()))),
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    fmt_labels(l, Some(("le", "+Inf".into()))),
                    h.count
                );
                let _ = writeln!(out, "{name}_sum{} {}", fmt_labels(l, None), h.sum);
                let _ = writeln!(out, "{name}_count{} {}", fmt_labels(l, None), h.count);
            }
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.inc(
            "greentic_calls_total",
            &[("tenant", "a\"b"), ("code", "ok")],
        );
        m.observe("greentic_call_duration_seconds", &[("tenant", "a")], 0.003);
        let text = m.render();
        assert!(
            text.contains("# TYPE greentic_calls_total counter"),
            "{text}"
        );
        assert!(
            text.contains("greentic_calls_total{tenant=\"a\\\"b\",code=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("greentic_call_duration_seconds_bucket{tenant=\"a\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("greentic_call_duration_seconds_bucket{tenant=\"a\",le=\"0.001\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("greentic_call_duration_seconds_count{tenant=\"a\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn guest_metric_names_are_bounded() {
        let m = Metrics::default();
        for i in 0..(MAX_GUEST_METRICS + 10) {
            m.guest_counter("t", "p", &format!("m{i}"), 1);
        }
        let text = m.render();
        assert_eq!(
            text.matches("greentic_guest_counter_total{").count(),
            MAX_GUEST_METRICS
        );
    }
}
