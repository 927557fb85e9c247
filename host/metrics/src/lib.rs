//! Prometheus metrics: calls, errors by code, latency, fuel, breaker state — per tenant and
//! provider — and guest-defined counters and histograms (bounded in number).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::sync::Mutex;

type Labels = Vec<(String, String)>;

/// Latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Distinct guest metric names accepted per provider.
pub const MAX_GUEST_METRICS: usize = 64;
/// Series are spread over this many locks by the top bits of the hash of their name and
/// labels: calls on different threads (tenants, providers, codes) rarely wait on each other.
const SHARDS: usize = 16;

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// One series: its name, labels and value.
#[derive(Debug)]
struct Series<V> {
    name: String,
    labels: Labels,
    value: V,
}

/// Series by the hash of their name and labels; a hash shared by two series keeps both.
type Table<V> = HashMap<u64, Vec<Series<V>>>;

/// The series of one shard.
#[derive(Debug, Default)]
struct Shard {
    counters: Table<f64>,
    gauges: Table<f64>,
    histograms: Table<Histogram>,
}

/// The registry. Updating a series that exists allocates nothing: it is found by the hash of
/// the borrowed name and labels (every call updates several, on the hot path).
#[derive(Debug, Default)]
pub struct Metrics {
    shards: [Mutex<Shard>; SHARDS],
    guest_names: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

/// The hash of a series' name and labels: 8 bytes at a time, multiply and rotate (the hash
/// rustc uses for its own tables), several times cheaper than SipHash on these short keys.
/// Label values come from the bundle and from providers' bounded metric names, so a collision
/// costs a comparison, never correctness: series that share a hash are kept side by side.
fn key_hash(name: &str, l: &[(&str, &str)]) -> u64 {
    let mut h = Mix(0);
    h.str(name);
    for (k, v) in l {
        h.str(k);
        h.str(v);
    }
    h.0
}

/// The state of [`key_hash`].
struct Mix(u64);

impl Mix {
    fn word(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn str(&mut self, s: &str) {
        let mut chunks = s.as_bytes().chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let mut last = [0u8; 8];
        last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.word(u64::from_le_bytes(last));
        // The length ends the string: ("ab", "c") and ("a", "bc") hash apart.
        self.word(s.len() as u64);
    }
}

fn same(series_labels: &Labels, l: &[(&str, &str)]) -> bool {
    series_labels.len() == l.len()
        && series_labels
            .iter()
            .zip(l)
            .all(|((k, v), (k2, v2))| k == k2 && v == v2)
}

/// The value of series `name`/`l` in `table`, created (default) if it is new.
fn slot<'t, V: Default>(
    table: &'t mut Table<V>,
    hash: u64,
    name: &str,
    l: &[(&str, &str)],
) -> &'t mut V {
    let bucket = table.entry(hash).or_default();
    let at = match bucket
        .iter()
        .position(|s| s.name == name && same(&s.labels, l))
    {
        Some(at) => at,
        None => {
            bucket.push(Series {
                name: name.to_string(),
                labels: labels(l),
                value: V::default(),
            });
            bucket.len() - 1
        }
    };
    &mut bucket[at].value
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
        "greentic_host_calls_in_flight",
        "gauge",
        "Calls running on the active revision's engine now, over all tenants (against greentic_max_in_flight).",
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
        "greentic_outbound_requests_total",
        "counter",
        "Outgoing HTTP requests of providers by tenant, provider and connection: `new`, or `reused` (kept alive from an earlier request of the same tenant).",
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
        self.with(name, l, |shard, hash| {
            *slot(&mut shard.counters, hash, name, l) += value;
        });
    }

    /// Sets gauge `name`.
    pub fn set(&self, name: &str, l: &[(&str, &str)], value: f64) {
        self.with(name, l, |shard, hash| {
            *slot(&mut shard.gauges, hash, name, l) = value;
        });
    }

    /// Adds `delta` (which may be negative) to gauge `name`.
    pub fn gauge_add(&self, name: &str, l: &[(&str, &str)], delta: f64) {
        self.with(name, l, |shard, hash| {
            *slot(&mut shard.gauges, hash, name, l) += delta;
        });
    }

    /// Records `value` in histogram `name`.
    pub fn observe(&self, name: &str, l: &[(&str, &str)], value: f64) {
        self.with(name, l, |shard, hash| {
            let h = slot(&mut shard.histograms, hash, name, l);
            for (i, bound) in BUCKETS.iter().enumerate() {
                if value <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.sum += value;
            h.count += 1;
        });
    }

    /// Runs `f` on the shard of series `name`/`l`, with the series' hash.
    fn with<R>(&self, name: &str, l: &[(&str, &str)], f: impl FnOnce(&mut Shard, u64) -> R) -> R {
        let hash = key_hash(name, l);
        let mut shard = self.shards[(hash >> 60) as usize % SHARDS]
            .lock()
            .expect("metrics lock");
        f(&mut shard, hash)
    }

    fn guest_name_ok(&self, provider: &str, name: &str) -> bool {
        if name.is_empty() || name.len() > 128 {
            return false;
        }
        let mut guest_names = self.guest_names.lock().expect("metrics lock");
        let names = match guest_names.get_mut(provider) {
            Some(names) => names,
            None => guest_names.entry(provider.to_string()).or_default(),
        };
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
        self.with(name, l, |shard, hash| {
            shard
                .counters
                .get(&hash)
                .and_then(|b| b.iter().find(|s| s.name == name && same(&s.labels, l)))
                .map_or(0.0, |s| s.value)
        })
    }

    /// Prometheus text exposition format: every metric that has a series, by name, its
    /// series by labels.
    pub fn render(&self) -> String {
        let mut counters: BTreeMap<(&str, &Labels), f64> = BTreeMap::new();
        let mut histograms: BTreeMap<(&str, &Labels), &Histogram> = BTreeMap::new();
        let shards: Vec<_> = self
            .shards
            .iter()
            .map(|s| s.lock().expect("metrics lock"))
            .collect();
        for shard in &shards {
            for s in shard
                .counters
                .values()
                .chain(shard.gauges.values())
                .flatten()
            {
                counters.insert((s.name.as_str(), &s.labels), s.value);
            }
            for s in shard.histograms.values().flatten() {
                histograms.insert((s.name.as_str(), &s.labels), &s.value);
            }
        }
        let help: BTreeMap<&str, (&str, &str)> = counters
            .keys()
            .chain(histograms.keys())
            .map(|(name, _)| (*name, help(name)))
            .collect();
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
        for (name, (kind, text)) in help {
            let _ = writeln!(out, "# HELP {name} {text}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (_, l, v) in series_of(&counters, name) {
                let _ = writeln!(out, "{name}{} {v}", fmt_labels(l, None));
            }
            for (_, l, h) in series_of(&histograms, name) {
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

/// The series of `name` in `map` (sorted by name, then labels).
fn series_of<'m, V: Copy>(
    map: &'m BTreeMap<(&'m str, &'m Labels), V>,
    name: &'m str,
) -> impl Iterator<Item = (&'m str, &'m Labels, V)> + 'm {
    static NONE: Labels = Vec::new();
    map.range((name, &NONE)..)
        .take_while(move |((n, _), _)| *n == name)
        .map(|((n, l), v)| (*n, *l, *v))
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
    fn series_render_by_name_then_labels_and_add_up_across_threads() {
        let m = std::sync::Arc::new(Metrics::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        let tenant = if i % 2 == 0 { "b" } else { "a" };
                        m.inc(
                            "greentic_calls_total",
                            &[("tenant", tenant), ("code", "ok")],
                        );
                        m.gauge_add("greentic_calls_in_flight", &[("tenant", tenant)], 1.0);
                        m.gauge_add("greentic_calls_in_flight", &[("tenant", tenant)], -1.0);
                    }
                    m.set(
                        "greentic_circuit_open",
                        &[("provider", &format!("p{t}"))],
                        1.0,
                    );
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let ok = |tenant| [("tenant", tenant), ("code", "ok")];
        assert_eq!(m.counter("greentic_calls_total", &ok("a")), 2000.0);
        assert_eq!(m.counter("greentic_calls_total", &ok("b")), 2000.0);
        assert_eq!(m.counter("greentic_calls_total", &[("tenant", "a")]), 0.0);
        let text = m.render();
        let series: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            series,
            [
                r#"greentic_calls_in_flight{tenant="a"} 0"#,
                r#"greentic_calls_in_flight{tenant="b"} 0"#,
                r#"greentic_calls_total{tenant="a",code="ok"} 2000"#,
                r#"greentic_calls_total{tenant="b",code="ok"} 2000"#,
                r#"greentic_circuit_open{provider="p0"} 1"#,
                r#"greentic_circuit_open{provider="p1"} 1"#,
                r#"greentic_circuit_open{provider="p2"} 1"#,
                r#"greentic_circuit_open{provider="p3"} 1"#,
            ],
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE greentic_calls_total counter").count(),
            1
        );
        assert_eq!(
            text.matches("# TYPE greentic_circuit_open gauge").count(),
            1
        );
    }

    #[test]
    fn every_exported_name_is_one_metric() {
        let mut names = BTreeSet::new();
        for (name, kind, _) in EXPORTED {
            assert!(
                names.insert(name),
                "{name} exported twice: one name, one meaning"
            );
            assert!(
                ["counter", "gauge", "histogram"].contains(kind),
                "{name}: {kind}"
            );
        }
    }

    #[test]
    fn one_metric_of_many_tenants_spreads_over_the_shards() {
        let mut used = BTreeSet::new();
        for t in 0..64 {
            let tenant = format!("tenant-{t}");
            used.insert(key_hash("greentic_calls_in_flight", &[("tenant", &tenant)]) >> 60);
        }
        assert!(
            used.len() >= SHARDS / 2,
            "64 tenants on {} shards",
            used.len()
        );
        assert_ne!(key_hash("ab", &[("c", "d")]), key_hash("a", &[("bc", "d")]));
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
