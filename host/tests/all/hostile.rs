//! Hostile guests under the real host: each misbehaviour of the `hostile` component ends in a
//! typed error or a bounded effect within its deadline, the other tenant keeps being served
//! after every one, what the host writes stays bounded (answers, log lines, telemetry per
//! call), and its memory stays bounded and comes back after the run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use common::{Host, TestBundle};
use serde_json::json;

const BUNDLE: &str = r#"
# Every call of initech's provider fails by design; the breaker would pause it after a few.
[host.breaker]
failure_threshold = 1000

# Guest turns at the host's own priority: at the default (nice 10) another test's host busy on
# the same cores slows them tenfold, and a budget case would meet its deadline first.
[host.scheduler]
priority = "normal"

[providers.hostile]
source = "{components}/hostile.wasm"
allow_unsigned = true
grants = { secrets = ["HOSTILE_TOKEN"], outbound_hosts = ["http://127.0.0.1:*"] }

[providers.table-growth]
source = "table-growth.wasm"
allow_unsigned = true

[providers.echo]
source = "{components}/echo.wasm"
allow_unsigned = true

[tenants.acme]
secrets = ["HOSTILE_TOKEN"]
limits = { fuel_per_call = 300000000, deadline_ms = 1000, memory_bytes = 33554432 }

[tenants.initech]
limits = { fuel_per_call = 300000000, deadline_ms = 1000, memory_bytes = 1048576 }

[tenants.globex]

# Telemetry at every budget, with fuel no call of it could use up: the bound must not be fuel.
[tenants.flood]
limits = { fuel_per_call = 100000000000, fuel_per_second = 100000000000, deadline_ms = 20000 }

# Room for a 20 MiB error message.
[tenants.errs]
limits = { memory_bytes = 134217728 }

[[routes]]
tenant = "acme"
capability = "send"
provider = "hostile"

[[routes]]
tenant = "flood"
capability = "send"
provider = "hostile"

[[routes]]
tenant = "errs"
capability = "send"
provider = "hostile"

[[routes]]
tenant = "initech"
capability = "send"
provider = "table-growth"

[[routes]]
tenant = "globex"
capability = "send"
provider = "echo"
"#;

/// Each misbehaviour (the tenant whose provider does it, `to` and `text`), and the outcomes
/// that contain it.
const CASES: &[(&str, &str, &str, &[&str])] = &[
    ("acme", "small-allocs", "", &["memory-limit"]),
    ("acme", "huge-return", "", &["result-too-large"]),
    ("acme", "huge-telemetry", "", &["ok"]),
    // 10 000 span handles: past the 1024 resources a call may hold.
    ("acme", "unended-spans", "", &["resource-limit"]),
    // Requests, headers and buffered bodies the guest keeps: host memory past its budget.
    ("acme", "http-hoard", "", &["resource-limit"]),
    ("acme", "handle-hoard", "", &["resource-limit"]),
    ("flood", "telemetry-flood", "", &["ok"]),
    ("errs", "huge-error", "internal", &["internal"]),
    ("errs", "huge-error", "invalid-input", &["invalid-input"]),
    ("errs", "huge-error", "unauthorized", &["unauthorized"]),
    ("errs", "huge-error", "not-found", &["not-found"]),
    ("errs", "huge-error", "unavailable", &["unavailable"]),
    (
        "acme",
        "secret-loop",
        "",
        &["fuel-exhausted", "deadline-exceeded"],
    ),
    (
        "acme",
        "host-call-loop",
        "",
        &["fuel-exhausted", "deadline-exceeded"],
    ),
    // Table elements count against the tenant's memory cap (16 bytes each): 1 MiB is reached
    // at ~61 000 elements, before the pool's own table limit (100 000).
    ("initech", "table-growth", "", &["memory-limit"]),
];

/// The deadline of each tenant's calls, in milliseconds.
fn deadline_ms(tenant: &str) -> u128 {
    match tenant {
        "flood" => 20_000,
        "errs" => 5_000,
        _ => 1_000,
    }
}

/// Tokens of the tenants: `(tenant, token)`, the well-behaved one (`globex`) included.
type Tokens = Vec<(&'static str, String)>;

fn round(host: &Host, tokens: &Tokens) {
    let token = |tenant: &str| {
        let (_, t) = tokens.iter().find(|(n, _)| *n == tenant).unwrap();
        t.as_str()
    };
    for (tenant, misbehaviour, text, expected) in CASES {
        let started = std::time::Instant::now();
        let r = host.send(token(tenant), json!({"to": misbehaviour, "text": text}));
        let took = started.elapsed();
        eprintln!("TIMING {misbehaviour}: {took:?}");
        let code = if r.status == 200 {
            "ok".to_string()
        } else {
            r.json()["code"].as_str().unwrap_or_default().to_string()
        };
        // Whatever the guest made the host do, the answer comes within the call's deadline
        // (and the slack of a busy debug build), never long after it.
        assert!(
            took.as_millis() < deadline_ms(tenant) + 2_000,
            "{misbehaviour}: answered after {took:?}"
        );
        assert!(
            expected.contains(&code.as_str()),
            "{misbehaviour}: expected one of {expected:?}, got {} {}",
            r.status,
            &r.text()[..r.text().len().min(300)]
        );
        assert!(
            r.body.len() < 8192,
            "{misbehaviour}: a {}-byte answer reached the caller",
            r.body.len()
        );
        let ok = host.send(token("globex"), json!({"to": "#ops", "text": "still here"}));
        assert_eq!(ok.status, 200, "after {misbehaviour}: {}", ok.text());
    }
}

/// The `table-growth` guest: core WebAssembly made a messaging component, its manifest
/// embedded (see `components/test-components/table-growth`).
fn table_growth_component() -> Vec<u8> {
    use greentic_interfaces::{Contracts, synth};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../components/test-components/table-growth");
    let core = wat::parse_file(dir.join("provider.wat")).unwrap();
    let manifest = std::fs::read_to_string(dir.join("provider.json")).unwrap();
    let world = synth::World::host(
        Contracts::embedded().unwrap(),
        "greentic:messaging/provider@1.0.0",
    )
    .unwrap();
    world.componentize(core, Some(&manifest)).unwrap()
}

#[test]
fn hostile_guests_are_contained_and_memory_comes_back() {
    let bundle = TestBundle::new(BUNDLE, &[("acme/HOSTILE_TOKEN", "hostile-token-value")]);
    std::fs::write(
        bundle.path().join("table-growth.wasm"),
        table_growth_component(),
    )
    .unwrap();
    let host = Host::start(bundle.path());
    let tokens: Tokens = ["acme", "initech", "globex", "flood", "errs"]
        .into_iter()
        .map(|t| (t, bundle.token(t, None)))
        .collect();
    let idle = host.rss_bytes();

    // The first round bounds what one pass of every misbehaviour costs: `http-hoard` alone
    // made the host hold gigabytes before its requests counted against a budget.
    round(&host, &tokens);
    let first = host.rss_bytes();
    assert!(
        first.saturating_sub(idle) < 256 << 20,
        "one round grew the host by {} MiB ({} -> {} MiB)",
        first.saturating_sub(idle) >> 20,
        idle >> 20,
        first >> 20
    );

    // Memory is bounded, not leaked: the host copies what a guest returns or logs (up to 16 MiB
    // here) before clipping or refusing it, and glibc keeps a freed buffer of that size in each
    // arena a thread used, so RSS steps up for the first rounds and then stays flat (observed:
    // +16 to +26 MiB, then no change). A per-call leak of the 16 MiB result alone would add
    // 128 MiB over these eight rounds.
    round(&host, &tokens);
    let baseline = host.rss_bytes();
    for _ in 0..8 {
        round(&host, &tokens);
    }
    let after = host.rss_bytes();
    let grown = after.saturating_sub(baseline);
    assert!(
        grown < 48 << 20,
        "host memory grew by {} MiB over eight more hostile rounds ({} -> {} MiB)",
        grown >> 20,
        baseline >> 20,
        after >> 20
    );

    // What the guests made the host write stays bounded: no log line near the 8 MiB message
    // or the 1 MiB attributes, and the secret read in a loop never appears.
    let output = host.settled_output();
    let longest = output.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 64 << 10, "a {longest}-byte log line");
    assert!(!output.contains("hostile-token-value"));
    assert!(
        output.contains("mmmm"),
        "the guest's log message should appear, clipped"
    );

    // /metrics stays bounded too, whatever names the guest made up.
    let metrics = host.admin("GET", "/metrics").text();
    assert!(
        metrics.len() < 256 << 10,
        "{} bytes of metrics",
        metrics.len()
    );
    assert!(metrics.lines().all(|l| l.len() < 4096));

    // Telemetry past the call's budgets was dropped and counted, kind by kind.
    for kind in ["log", "span", "event", "attribute", "metric"] {
        let line = format!(
            "greentic_telemetry_dropped_total{{tenant=\"flood\",provider=\"hostile\",kind=\"{kind}\"}}"
        );
        let dropped: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{line}` in /metrics:\n{metrics}"));
        assert!(dropped > 0.0, "{line} {dropped}");
    }
    // And what was logged stayed within the log budget of each call: 10 flood calls, each
    // asking to log 64 lines of 4 KiB with 32 attributes of 8 KiB (16 MiB).
    let flood_log: usize = output
        .lines()
        .filter(|l| {
            l.contains("\"target\":\"greentic::guest\"") && l.contains("\"tenant\":\"flood\"")
        })
        .map(str::len)
        .sum();
    assert!(
        flood_log < (10 * 160) << 10,
        "{flood_log} bytes of guest log lines from 10 flood calls"
    );
    assert!(flood_log > 0, "the flood's first lines should be logged");
}

#[test]
pub(crate) fn outgoing_requests_in_flight_are_capped_per_call() {
    let upstream = common::Upstream::start(vec![(200, vec![], "{}".into())]);
    let bundle = TestBundle::new(
        r#"
[providers.hostile]
source = "{components}/hostile.wasm"
allow_unsigned = true
grants = { secrets = ["HOSTILE_TOKEN"], outbound_hosts = ["http://127.0.0.1:*"] }

[tenants.acme]
limits = { max_outgoing_requests = 3 }

[tenants.globex]

[[routes]]
tenant = "*"
capability = "send"
provider = "hostile"
"#,
        &[],
    );
    let host = Host::start(bundle.path());
    let url = format!("http://{}/fan", upstream.addr);
    // Sixteen requests started at once: three in flight, the others refused with
    // `connection-limit-reached`, which the guest sees and reports.
    let r = host.send(
        &bundle.token("acme", None),
        json!({"to": "fanout", "text": url}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["id"] == "sent=3 limited=13", "{}", r.text());
    // Another tenant has its own (default) cap of eight.
    let r = host.send(
        &bundle.token("globex", None),
        json!({"to": "fanout", "text": url}),
    );
    assert!(r.json()["id"] == "sent=8 limited=8", "{}", r.text());
}
