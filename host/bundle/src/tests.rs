//! Parsing and checking bundles.

use super::*;

const MINIMAL: &str = r#"
    [auth]
    algorithm = "HS256"
    issuer = "i"
    audience = "a"
    secret_env = "JWT"

    [providers.echo]
    source = "echo.wasm"
    allow_unsigned = true

    [tenants.acme]

    [[routes]]
    tenant = "acme"
    capability = "send"
    provider = "echo"
"#;

#[test]
fn minimal_bundle_gets_defaults() {
    let b = Bundle::parse("greentic.toml", MINIMAL).unwrap();
    assert_eq!(b.host.listen, "127.0.0.1:8080");
    assert_eq!(b.tenants["acme"].limits, Limits::default());
    assert!(b.providers["echo"].grants.config);
    assert!(b.providers["echo"].grants.secrets.is_empty());
}

#[test]
fn breaker_settings_default_and_parse() {
    let b = Bundle::parse("greentic.toml", MINIMAL).unwrap();
    assert_eq!(b.host.breaker, BreakerSection::default());
    assert_eq!(b.host.breaker.failure_threshold, 5);
    let text =
        format!("[host]\nbreaker = {{ failure_threshold = 0, cool_down_ms = 250 }}\n{MINIMAL}");
    let b = Bundle::parse("greentic.toml", &text).unwrap();
    assert_eq!(b.host.breaker.failure_threshold, 0);
    assert_eq!(b.host.breaker.cool_down_ms, 250);
}

#[test]
fn zero_calls_in_flight_is_refused_not_taken_as_one() {
    let text = format!("[host]\nmax_in_flight = 0\n{MINIMAL}");
    let e = Bundle::parse("greentic.toml", &text)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("host.max_in_flight: must be greater than 0"),
        "{e}"
    );
    let text = format!("[host]\nmax_in_flight = 1\n{MINIMAL}");
    let b = Bundle::parse("greentic.toml", &text).unwrap();
    assert_eq!(b.host.max_in_flight, Some(1));
}

#[test]
fn zero_client_timeouts_are_refused() {
    let text = format!("[host]\nheader_timeout_ms = 0\nbody_timeout_ms = 0\n{MINIMAL}");
    let e = Bundle::parse("greentic.toml", &text)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("host.header_timeout_ms: must be greater than 0"),
        "{e}"
    );
    assert!(
        e.contains("host.body_timeout_ms: must be greater than 0"),
        "{e}"
    );
    let b = Bundle::parse("greentic.toml", MINIMAL).unwrap();
    assert_eq!(
        (b.host.header_timeout_ms, b.host.body_timeout_ms),
        (10_000, 30_000)
    );
}

#[test]
fn unknown_keys_are_errors_with_the_location() {
    let text = MINIMAL.replace("[tenants.acme]", "[tenants.acme]\nlimts = {}");
    let e = Bundle::parse("greentic.toml", &text)
        .unwrap_err()
        .to_string();
    assert!(e.contains("greentic.toml"), "{e}");
    assert!(e.contains("unknown field `limts`"), "{e}");
    assert!(e.contains("line"), "{e}");
}

#[test]
fn cross_field_problems_are_all_reported() {
    let text = MINIMAL
        .replace("secret_env = \"JWT\"", "")
        .replace("provider = \"echo\"", "provider = \"nope\"")
        .replace(
            "[tenants.acme]",
            "[tenants.acme]\nlimits = { fuel_per_call = 10, fuel_per_second = 5, cpu_ms_per_second = 0 }",
        );
    let e = Bundle::parse("greentic.toml", &text)
        .unwrap_err()
        .to_string();
    assert!(e.contains("HS256 needs exactly one"), "{e}");
    assert!(e.contains("provider `nope` is not defined"), "{e}");
    assert!(
        e.contains("tenants.acme.limits.cpu_ms_per_second: must be greater than 0"),
        "{e}"
    );
    assert!(
        e.contains("fuel_per_second (5) is below fuel_per_call (10): one call that used its budget would leave the tenant waiting 1 s"),
        "{e}"
    );
}

fn schema_errors(text: &str) -> Vec<String> {
    let schema: serde_json::Value = serde_json::from_str(BUNDLE_SCHEMA).unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let doc: toml::Value = toml::from_str(text).unwrap();
    let doc = serde_json::to_value(doc).unwrap();
    validator
        .iter_errors(&doc)
        .map(|e| format!("{} {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_committed_schema_is_what_the_types_generate() {
    let generated = format!("{:#}\n", schema());
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/greentic.schema.json"
    );
    if std::env::var_os("GREENTIC_WRITE_SCHEMA").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    assert!(
        generated == BUNDLE_SCHEMA,
        "schemas/greentic.schema.json is not what the bundle's types generate; regenerate it with `just schema` and commit it"
    );
}

#[test]
fn the_shipped_schema_accepts_the_example_bundles_and_catches_unknown_keys() {
    let schema: serde_json::Value = serde_json::from_str(BUNDLE_SCHEMA).unwrap();
    jsonschema::draft202012::meta::validate(&schema).unwrap();
    let example = include_str!("../../../examples/demo/greentic.toml");
    assert_eq!(schema_errors(example), Vec::<String>::new());
    assert_eq!(schema_errors(MINIMAL), Vec::<String>::new());
    Bundle::parse("examples/demo/greentic.toml", example).unwrap();
    let bad = MINIMAL.replace("[tenants.acme]", "[tenants.acme]\nlimts = {}");
    let errors = schema_errors(&bad);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("/tenants/acme") && errors[0].contains("limts"),
        "{errors:?}"
    );
}

#[test]
fn cpu_weights_and_the_scheduler_section_are_checked() {
    let text = MINIMAL.replace(
        "[tenants.acme]",
        "[tenants.acme]\nlimits = { cpu_weight = 0 }\n[tenants.big]\nlimits = { cpu_weight = 3 }",
    );
    let e = Bundle::parse("greentic.toml", &text)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tenants.acme.limits.cpu_weight: 0 is not between 1 and 1000"),
        "{e}"
    );
    assert!(!e.contains("tenants.big"), "{e}");
    let scheduled = format!(
        "[host]\nscheduler = {{ mode = \"tokio\", threads = 3, priority = \"idle\" }}\n{MINIMAL}"
    );
    assert_eq!(schema_errors(&scheduled), Vec::<String>::new());
    let b = Bundle::parse("greentic.toml", &scheduled).unwrap();
    assert_eq!(
        b.host.scheduler,
        SchedulerSection {
            mode: SchedulerMode::Tokio,
            threads: 3,
            priority: GuestPriority::Idle
        }
    );
    let wrong = format!("[host]\nscheduler = {{ mode = \"cfs\" }}\n{MINIMAL}");
    assert_eq!(schema_errors(&wrong).len(), 1);
    let e = Bundle::parse("greentic.toml", &wrong)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cfs"), "{e}");
}

#[test]
fn env_backend_names_that_collide_are_refused() {
    let text = MINIMAL.replace(
        "[tenants.acme]",
        "[secrets]\nbackend = \"env\"\nenv_prefix = \"S\"\n\n[tenants.acme]\nsecrets = [\"PROD_TOKEN\"]\n[tenants.acme_prod]\nsecrets = [\"TOKEN\"]\n[tenants.acme-eu]\n[tenants.ACME_EU]",
    );
    let e = Bundle::parse("greentic.toml", &text)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tenant `acme`'s secret `PROD_TOKEN` and tenant `acme_prod`'s secret `TOKEN` are both read from S_ACME_PROD_TOKEN"),
        "{e}"
    );
    assert!(e.contains("tenants `ACME_EU` and `acme-eu`"), "{e}");
    // The file backend keeps them apart: no problem there.
    let file = text.replace("backend = \"env\"", "backend = \"file\"");
    Bundle::parse("greentic.toml", &file).unwrap();
}

#[test]
fn digests_are_checked() {
    assert!(greentic_registry::is_sha256_digest(&format!(
        "sha256:{}",
        "a".repeat(64)
    )));
    assert!(!greentic_registry::is_sha256_digest("sha256:ABC"));
    let text = MINIMAL.replace(
        "source = \"echo.wasm\"",
        "source = \"echo.wasm\"\ndigest = \"md5:x\"",
    );
    let e = Bundle::parse("greentic.toml", &text)
        .unwrap_err()
        .to_string();
    assert!(e.contains("providers.echo.digest"), "{e}");
}

#[test]
fn tls_and_certificate_identities_are_checked_against_each_other() {
    let text = MINIMAL.replace(
        "[providers.echo]",
        r#"[host.tls]
    cert = "s.crt"
    key = "s.key"
    client_auth = "required"

    [[auth.certificates]]
    uri = "billing.acme.example"
    tenant = "acme"

    [[auth.certificates]]
    dns = "*.acme.example"
    tenant = "nobody"

    [[auth.certificates]]
    uri = "spiffe://acme.example/a"
    dns = "a.acme.example"
    tenant = "acme"

    [[auth.certificates]]
    dns = "*.acme.example"
    tenant = "acme"

    [tenants.globex]
    caller_auth = "both"

    [providers.echo]"#,
    );
    let e = Bundle::parse("greentic.toml", &text)
        .unwrap_err()
        .to_string();
    for expected in [
        "host.tls: client_auth = \"required\" needs client_ca",
        "auth.certificates[0].uri: `billing.acme.example` is not a URI",
        "auth.certificates[1].dns: `*.acme.example` must be one exact DNS name",
        "auth.certificates[1].tenant: no tenant `nobody`",
        "auth.certificates[2]: name exactly one identity",
        "auth.certificates[3]: identity dns:*.acme.example is already listed at auth.certificates[1]",
        "tenants.globex.caller_auth = \"both\": no certificate identity is listed for `globex`",
    ] {
        assert!(e.contains(expected), "missing `{expected}` in:\n{e}");
    }
    // Identities listed while the listener asks for no certificate.
    let unasked = MINIMAL.replace(
        "[providers.echo]",
        "[host.tls]\n    cert = \"s.crt\"\n    key = \"s.key\"\n\n    [[auth.certificates]]\n    dns = \"a.acme.example\"\n    tenant = \"acme\"\n\n    [providers.echo]",
    );
    let e = Bundle::parse("greentic.toml", &unasked)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "auth.certificates: no certificate reaches the host, because [host.tls] asks for none"
        ),
        "{e}"
    );
    // Set right, the same sections parse.
    let good = MINIMAL
        .replace(
            "[providers.echo]",
            r#"[host.tls]
    cert = "s.crt"
    key = "s.key"
    client_ca = "ca.crt"
    min_version = "1.2"

    [[auth.certificates]]
    uri = "spiffe://acme.example/team/billing"
    tenant = "acme"
    team = "billing"

    [providers.echo]"#,
        )
        .replace(
            "[tenants.acme]",
            "[tenants.acme]\n    caller_auth = \"certificate\"",
        );
    let b = Bundle::parse("greentic.toml", &good).unwrap();
    let tls = b.host.tls.as_ref().unwrap();
    assert_eq!(tls.client_auth(), ClientAuthMode::Required);
    assert_eq!(tls.min_version, TlsVersion::Tls12);
    assert_eq!(b.tenants["acme"].caller_auth, CallerAuth::Certificate);
}

#[test]
fn outbound_tls_needs_a_ca_and_a_whole_client_pair() {
    let text = format!(
        "{MINIMAL}\n    [telemetry]\n    otlp_endpoint = \"http://collector:4318\"\n    tls = {{ cert = \"host.crt\" }}\n\n    [cluster]\n    tls = {{ key = \"host.key\" }}\n"
    );
    let e = Bundle::parse("greentic.toml", &text)
        .unwrap_err()
        .to_string();
    for expected in [
        "[telemetry].tls needs `ca`",
        "[telemetry].tls: a client certificate needs both `cert` and `key`",
        "[telemetry].tls is set but otlp_endpoint is not `https://…`",
        "[cluster].tls needs `ca`",
        "[cluster].tls: a client certificate needs both `cert` and `key`",
    ] {
        assert!(e.contains(expected), "missing `{expected}` in:\n{e}");
    }
    let good = format!(
        "{MINIMAL}\n    [telemetry]\n    otlp_endpoint = \"https://collector:4318\"\n    tls = {{ ca = \"pki/ca.crt\", cert = \"pki/host.crt\", key = \"pki/host.key\" }}\n\n    [cluster]\n    tls = {{ ca = \"pki/ca.crt\" }}\n"
    );
    let b = Bundle::parse("greentic.toml", &good).unwrap();
    assert_eq!(
        b.cluster.tls.unwrap().ca.as_deref(),
        Some(std::path::Path::new("pki/ca.crt"))
    );
}

#[test]
fn an_aws_secrets_section_that_would_mix_tenants_or_send_secrets_in_clear_is_refused() {
    let text = MINIMAL.replace(
        "[tenants.acme]",
        "[secrets]\nbackend = \"aws-secrets-manager\"\nregion = \"eu-west-1\"\nname_template = \"shared/{name}\"\nendpoint = \"http://10.0.0.8:4566\"\nttl_secs = 0\n\n[tenants.acme]",
    );
    let e = Bundle::parse("greentic.toml", &text)
        .unwrap_err()
        .to_string();
    assert!(e.contains("must contain both {tenant} and {name}"), "{e}");
    assert!(e.contains("in clear"), "{e}");
    assert!(e.contains("ttl_secs is 0"), "{e}");
    let fine = MINIMAL.replace(
        "[tenants.acme]",
        "[secrets]\nbackend = \"aws-secrets-manager\"\nregion = \"eu-west-1\"\n\n[tenants.acme]",
    );
    let b = Bundle::parse("greentic.toml", &fine).unwrap();
    assert_eq!(b.secrets.name_template, "greentic/{tenant}/{name}");
}

#[test]
fn the_deployment_is_the_platforms_word_then_the_bundles_then_what_the_environment_shows() {
    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }
    let ctx = |cloud: &str, region: Option<&str>, platform: &str| DeploymentContext {
        cloud: cloud.into(),
        region: region.map(str::to_string),
        platform: platform.into(),
    };
    let none = Deployment::default();
    let bundle = Deployment {
        cloud: Some("hetzner".into()),
        region: Some("fsn1".into()),
        platform: None,
    };
    assert_eq!(none.resolve(env(&[])), ctx("local", None, "baremetal"));
    assert_eq!(
        bundle.resolve(env(&[])),
        ctx("hetzner", Some("fsn1"), "baremetal")
    );
    // What each platform shows of itself.
    assert_eq!(
        none.resolve(env(&[("KUBERNETES_SERVICE_HOST", "10.96.0.1")])),
        ctx("local", None, "k8s")
    );
    assert_eq!(
        none.resolve(env(&[("NOMAD_ALLOC_ID", "a"), ("NOMAD_REGION", "eu")])),
        ctx("local", Some("eu"), "nomad")
    );
    assert_eq!(
        none.resolve(env(&[("NOTIFY_SOCKET", "/run/x"), ("INVOCATION_ID", "1")])),
        ctx("local", None, "systemd")
    );
    // A shell in a desktop session has an INVOCATION_ID too: that alone is not a service.
    assert_eq!(
        none.resolve(env(&[("INVOCATION_ID", "1")])),
        ctx("local", None, "baremetal")
    );
    // The bundle's region beats what Nomad shows; the platform's explicit word beats both.
    assert_eq!(
        bundle.resolve(env(&[("NOMAD_ALLOC_ID", "a"), ("NOMAD_REGION", "eu")])),
        ctx("hetzner", Some("fsn1"), "nomad")
    );
    assert_eq!(
        bundle.resolve(env(&[
            ("GREENTIC_REGION", "nbg1"),
            ("GREENTIC_PLATFORM", "systemd"),
            ("GREENTIC_CLOUD", "aws"),
        ])),
        ctx("aws", Some("nbg1"), "systemd")
    );
    // Empty is unset (a downward-API label the node does not have).
    assert_eq!(
        bundle.resolve(env(&[
            ("GREENTIC_REGION", ""),
            ("KUBERNETES_SERVICE_HOST", "x")
        ])),
        ctx("hetzner", Some("fsn1"), "k8s")
    );
}
