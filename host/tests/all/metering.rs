//! `[host] metering = "cpu-time"`: no fuel; a call is stopped at its `cpu_ms_per_call` of
//! measured CPU time (not at its deadline), a tenant's calls wait once its `cpu_ms_per_second`
//! is spent, and other tenants are served meanwhile.

use crate::common;

use common::{Host, TestBundle};
use serde_json::json;

const BUNDLE: &str = r#"
[providers.echo]
source = "{components}/echo.wasm"
allow_unsigned = true

[providers.spin]
source = "{components}/infinite_loop.wasm"
allow_unsigned = true

[tenants.acme]
limits = { cpu_ms_per_call = 30, cpu_ms_per_second = 40, deadline_ms = 20000, queue_timeout_ms = 10 }

[tenants.globex]

[[routes]]
tenant = "*"
capability = "send"
provider = "echo"

[[routes]]
tenant = "*"
team = "loop"
capability = "send"
provider = "spin"
"#;

#[test]
fn cpu_time_bounds_a_call_and_a_tenant_and_other_tenants_are_served() {
    let b = TestBundle::new(BUNDLE, &[]);
    b.set_host("metering = \"cpu-time\"");
    let host = Host::start(b.path());
    let spin = b.token("acme", Some("loop"));
    let globex = b.token("globex", None);
    let msg = json!({"to": "#ops", "text": "hi"});

    // A call that would spin until its 20 s deadline is stopped at its 30 ms of CPU.
    let first = host.send(&spin, msg.clone());
    assert_eq!(first.status, 500, "{}", first.text());
    assert_eq!(first.json()["code"], "cpu-exhausted", "{}", first.text());
    assert!(first.text().contains("30 ms"), "{}", first.text());
    // 40 ms a second: 10 ms were left, so one more call starts and leaves a debt of ~20 ms,
    // which the next waits out — past its 10 ms of queue time.
    let second = host.send(&spin, msg.clone());
    assert_eq!(second.json()["code"], "cpu-exhausted", "{}", second.text());
    let third = host.send(&spin, msg.clone());
    assert_eq!(third.status, 429, "{}", third.text());
    assert!(
        third
            .text()
            .contains("CPU budget of 40 ms per second used up"),
        "{}",
        third.text()
    );

    // Another tenant is served, and a call that does little is unaffected.
    let served = host.send(&globex, msg.clone());
    assert_eq!(served.status, 200, "{}", served.text());

    let metrics = host.admin("GET", "/metrics").text();
    assert!(
        metrics.contains(r#"greentic_calls_total{tenant="acme",provider="spin",capability="send",code="cpu-exhausted"} 2"#),
        "{metrics}"
    );
    // CPU time, not fuel, is what was counted.
    assert!(
        !metrics.contains("greentic_fuel_consumed_total{tenant=\"acme\""),
        "{metrics}"
    );
    let cpu: f64 = metrics
        .lines()
        .find(|l| l.starts_with("greentic_guest_cpu_seconds_total{tenant=\"acme\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(cpu >= 0.06, "{cpu} s of guest CPU for two 30 ms calls");
}

#[test]
fn check_and_the_schema_know_the_metering_modes() {
    let b = TestBundle::new(BUNDLE, &[]);
    b.set_host("metering = \"cpu_time\"");
    let out = common::run_host(&["check", b.path().to_str().unwrap()]);
    let (_, err) = common::text(&out);
    assert!(!out.status.success());
    assert!(err.contains("metering"), "{err}");
    assert!(err.contains("cpu-time"), "{err}");
}

#[test]
fn a_reload_changes_the_metering_on_a_new_engine() {
    let b = TestBundle::new(BUNDLE, &[]);
    let host = Host::start(b.path());
    let spin = b.token("acme", Some("loop"));
    let msg = json!({"to": "#ops", "text": "hi"});
    // Fuel: the spinning call runs to its fuel_per_call.
    let fuel = host.send(&spin, msg.clone());
    assert_eq!(fuel.json()["code"], "fuel-exhausted", "{}", fuel.text());

    b.set_host("metering = \"cpu-time\"");
    let reload = host.admin("POST", "/reload");
    assert_eq!(reload.status, 200, "{}", reload.text());
    let cpu = host.send(&spin, msg);
    assert_eq!(cpu.json()["code"], "cpu-exhausted", "{}", cpu.text());
}
