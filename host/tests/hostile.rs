//! Hostile guests under the real host: each misbehaviour of the `hostile` component ends in a
//! typed error or a bounded effect, the other tenant keeps being served after every one, the
//! host's log lines stay bounded, and its memory comes back after the run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod common;

use common::{Host, TestBundle};
use serde_json::json;

const BUNDLE: &str = r#"
# Every call of initech's provider fails by design; the breaker would pause it after a few.
[host.breaker]
failure_threshold = 1000

[providers.hostile]
source = "{components}/hostile.wasm"
allow_unsigned = true
grants = { secrets = ["HOSTILE_TOKEN"] }

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

[[routes]]
tenant = "acme"
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

/// Each misbehaviour (the tenant whose provider does it, and `to`), and the outcomes that
/// contain it.
const CASES: &[(&str, &str, &[&str])] = &[
    ("acme", "small-allocs", &["memory-limit"]),
    ("acme", "huge-return", &["result-too-large"]),
    ("acme", "huge-telemetry", &["ok"]),
    ("acme", "unended-spans", &["ok"]),
    (
        "acme",
        "secret-loop",
        &["fuel-exhausted", "deadline-exceeded"],
    ),
    (
        "acme",
        "host-call-loop",
        &["fuel-exhausted", "deadline-exceeded"],
    ),
    // Table elements count against the tenant's memory cap (16 bytes each): 1 MiB is reached
    // at ~61 000 elements, before the pool's own table limit (100 000).
    ("initech", "table-growth", &["memory-limit"]),
];

/// Tokens of the tenants: `(tenant, token)`, the well-behaved one (`globex`) included.
type Tokens = Vec<(&'static str, String)>;

fn round(host: &Host, tokens: &Tokens) {
    let token = |tenant: &str| {
        let (_, t) = tokens.iter().find(|(n, _)| *n == tenant).unwrap();
        t.as_str()
    };
    for (tenant, misbehaviour, expected) in CASES {
        let r = host.send(token(tenant), json!({"to": misbehaviour, "text": "go"}));
        let code = if r.status == 200 {
            "ok".to_string()
        } else {
            r.json()["code"].as_str().unwrap_or_default().to_string()
        };
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
    let tokens: Tokens = ["acme", "initech", "globex"]
        .into_iter()
        .map(|t| (t, bundle.token(t, None)))
        .collect();

    // Memory is bounded, not leaked: the host copies what a guest returns or logs (up to 16 MiB
    // here) before clipping or refusing it, and glibc keeps a freed buffer of that size in each
    // arena a thread used, so RSS steps up for the first rounds and then stays flat (observed:
    // +16 to +26 MiB, then no change). A per-call leak of the 16 MiB result alone would add
    // 128 MiB over these eight rounds.
    round(&host, &tokens);
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
    let output = host.output();
    let longest = output.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 64 << 10, "a {longest}-byte log line");
    assert!(!output.contains("hostile-token-value"));
    assert!(
        output.contains("mmmm"),
        "the guest's log message should appear, clipped"
    );

    // /metrics stays bounded too, whatever names the guest made up.
    let metrics = host.request("GET", "/metrics", &[], b"").text();
    assert!(
        metrics.len() < 256 << 10,
        "{} bytes of metrics",
        metrics.len()
    );
    assert!(metrics.lines().all(|l| l.len() < 4096));
}
