//! Native providers (`form = "native"`): Rust crates written against the contracts' traits and
//! compiled into the host. The relay crate certified by the whole messaging suite in the host
//! and as a Rust sidecar; and providers of this test binary's own, registered here, that panic,
//! hang, reach for a capability they are not granted or flood the host with spans — each a
//! typed error of the call, the host and the other tenant unaffected. A registration whose
//! manifest and exports disagree, a name no crate registered and a source of the wrong form are
//! refused at load, naming what to do.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestBundle, repo};
use greentic_host::errors::CallError;
use greentic_host::loader::{LoadOptions, load_bundle};
use greentic_host::runtime::{Caller, Runtime};
use greentic_interfaces::native::messaging::{Message, Provider, SendResult};
use greentic_interfaces::native::{Exports, Host, ProviderError, TenantCtx, async_trait};
use serde_json::json;

const MANIFEST: &str = r#"{"name": "test-native", "version": "1.0.0", "domain": "messaging",
    "capabilities": ["send"], "compat": {"wit": "greentic:messaging/provider@1.0.x"}}"#;
const TIMER_MANIFEST: &str = r#"{"name": "test-native-timer", "version": "1.0.0",
    "domain": "timer", "capabilities": ["fire"], "compat": {"wit": "greentic:timer/scheduled@1.0.x"}}"#;

/// Misbehaves as the message's `to` says: `panic`, `hang`, `state` (a capability it is not
/// granted), `spans` (opens spans until the host says no, then answers as if nothing
/// happened); anything else is answered.
struct Misbehaving;

#[async_trait]
impl Provider for Misbehaving {
    async fn send(
        &self,
        host: &dyn Host,
        ctx: TenantCtx,
        msg: Message,
    ) -> Result<SendResult, ProviderError> {
        match msg.to.as_str() {
            "panic" => panic!("a bug in a native provider"),
            "hang" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            "state" => {
                host.state_set("k", b"v".to_vec(), None)
                    .await?
                    .map_err(|e| ProviderError::Internal(format!("{e:?}")))?;
            }
            "spans" => {
                for i in 0..100_000 {
                    if host.span_new(&format!("s{i}"), None).await.is_err() {
                        break;
                    }
                }
            }
            _ => {}
        }
        Ok(SendResult {
            id: format!("{}:{}", ctx.tenant, msg.to),
            delivered_at_ms: 0,
        })
    }
}

greentic_interfaces::register_native!("test-misbehaving", MANIFEST, || {
    Exports::Messaging(Arc::new(Misbehaving))
});
// A timer manifest over a messaging provider: a registration that contradicts itself.
greentic_interfaces::register_native!("test-two-faced", TIMER_MANIFEST, || {
    Exports::Messaging(Arc::new(Misbehaving))
});

const BUNDLE: &str = r#"
[host]
listen = "127.0.0.1:0"

[auth]
algorithm = "HS256"
issuer = "greentic-test"
audience = "greentic-host"
secret_file = "jwt.secret"

[providers.odd]
form = "native"
source = "native:SOURCE"

[tenants.acme]
limits.deadline_ms = 500
limits.max_resources = 64

[tenants.globex]

[[routes]]
tenant = "*"
capability = "send"
provider = "odd"
"#;

/// The host's runtime, in this process, over a bundle of `toml`.
fn runtime(toml: &str) -> anyhow::Result<(tempfile::TempDir, Arc<Runtime>)> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("greentic.toml"), toml).unwrap();
    std::fs::write(
        dir.path().join("jwt.secret"),
        "test-secret-0123456789abcdef01234567",
    )
    .unwrap();
    let loaded = load_bundle(dir.path(), LoadOptions::default())?;
    let runtime = Arc::new(Runtime::new(
        &loaded.bundle,
        loaded.engine,
        loaded.loaded.providers,
        loaded.backends,
    ));
    Ok((dir, runtime))
}

fn caller(tenant: &str) -> Caller {
    Caller {
        tenant: tenant.into(),
        team: None,
        user: None,
    }
}

#[test]
fn a_misbehaving_native_provider_fails_its_call_not_the_host() {
    let (_dir, runtime) = runtime(&BUNDLE.replace("SOURCE", "test-misbehaving")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let send = |tenant: &str, to: &str| {
        rt.block_on(runtime.invoke(
            &caller(tenant),
            "send",
            json!({"to": to, "text": "x"}),
            None,
        ))
    };
    // A panic is the call's guest trap, with the panic's message.
    match send("acme", "panic") {
        Err(CallError::GuestTrap(m)) => {
            assert!(m.contains("a bug in a native provider"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // A hang ends at the tenant's deadline (500 ms), not the provider's 30 s.
    let started = Instant::now();
    assert!(
        matches!(send("acme", "hang"), Err(CallError::DeadlineExceeded(500))),
        "a hanging native provider"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // A capability the bundle does not grant is refused by the host, naming it.
    match send("acme", "state") {
        Err(e) => assert!(
            e.message().contains("not granted `state`"),
            "{}",
            e.message()
        ),
        Ok(v) => panic!("state without a grant: {v}"),
    }
    // Spans past the tenant's resource limit stop the call, whatever the provider answers.
    match send("acme", "spans") {
        Err(CallError::ResourceLimit(m)) => assert!(!m.is_empty()),
        other => panic!("{other:?}"),
    }
    // After all that, both tenants are served.
    for tenant in ["acme", "globex"] {
        let ok = send(tenant, "#ops").unwrap();
        assert_eq!(ok["id"], format!("{tenant}:#ops"));
    }
}

#[test]
fn a_native_registration_is_held_to_its_manifest_and_its_name() {
    let e = runtime(&BUNDLE.replace("SOURCE", "test-two-faced"))
        .err()
        .unwrap();
    let text = format!("{e:#}");
    assert!(
        text.contains("domain `timer`") && text.contains("exports a `messaging` provider"),
        "{text}"
    );
    // A name no linked crate registered: the ones that are, named.
    let b = TestBundle::new(
        "[providers.nope]\nform = \"native\"\nsource = \"native:nope\"\n\n[tenants.acme]\n\n[[routes]]\ntenant = \"acme\"\ncapability = \"send\"\nprovider = \"nope\"\n",
        &[],
    );
    let out = common::run_host(&["check", b.path().to_str().unwrap()]);
    let (stdout, stderr) = common::text(&out);
    assert!(!out.status.success());
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains("no native provider `nope` is compiled into this host (it has: echo, relay)"),
        "{said}"
    );
    // The wrong source for the form, both ways.
    for (lines, expected) in [
        (
            "form = \"native\"\nsource = \"echo.wasm\"",
            "a native provider's source is `native:NAME`",
        ),
        (
            "source = \"native:echo\"",
            "set `form = \"native\"` for a provider compiled into the host",
        ),
        (
            "form = \"native\"\nsource = \"native:echo\"\nallow_unsigned = true",
            "a native provider is held to the host binary it is compiled into",
        ),
    ] {
        b.rewrite(&format!(
            "[providers.p]\n{lines}\n\n[tenants.acme]\n\n[[routes]]\ntenant = \"acme\"\ncapability = \"send\"\nprovider = \"p\"\n"
        ));
        let out = common::run_host(&["check", b.path().to_str().unwrap()]);
        let said = format!("{}{}", common::text(&out).0, common::text(&out).1);
        assert!(!out.status.success(), "{lines}: {said}");
        assert!(said.contains(expected), "{lines}: {said}");
    }
}

/// The whole messaging suite passed by `subject` (with `more` arguments), certifying the relay
/// crate's manifest by its digest.
fn certified(subject: &str, more: &[&str], provider: &str) {
    let report = common::certified_messaging(
        subject,
        &repo().join("examples/native-relay/conformance.json"),
        more,
    );
    assert_eq!(report["provider"], provider);
    let manifest = std::fs::read(repo().join("examples/native-relay/provider.json")).unwrap();
    assert_eq!(
        report["digest"],
        format!("sha256:{}", {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(&manifest))
        }),
        "what was certified is the manifest the crate carries"
    );
}

#[test]
fn the_relay_crate_passes_the_whole_messaging_suite_in_the_host_and_as_a_gateway_over_mtls() {
    certified("native:relay", &[], "messaging-relay-rs");
    // The very same crate, served by the Rust sidecar as a gateway: TLS, client certificates
    // of the CA required, its certificate naming a SPIFFE identity.
    use greentic_host::tls::dev_ca::DevCa;
    let pki = tempfile::tempdir().unwrap();
    let ca = DevCa::new("greentic-gateway-test-ca").unwrap();
    let (ca_cert, _) = ca.write(pki.path()).unwrap();
    let (cert, key) = ca
        .server(&["spiffe://greentic.test/gateway/relay", "127.0.0.1"])
        .unwrap()
        .write(pki.path(), "gateway")
        .unwrap();
    let (host_cert, host_key) = ca
        .client("spiffe://greentic.test/host")
        .unwrap()
        .write(pki.path(), "host")
        .unwrap();
    let rt = common::server_runtime();
    let (listener, port) = common::loopback(&rt);
    let tls = greentic_sidecar_rust::tls(cert, key, Some(ca_cert.clone())).unwrap();
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(greentic_sidecar_rust::service("relay").unwrap())
            .serve_with_incoming(greentic_host::remote::incoming::tls(listener, tls))
            .await
    });
    let endpoint = format!("grpcs://127.0.0.1:{port}");
    let link = |identity: &'static str| {
        [
            "--remote-identity".to_string(),
            identity.to_string(),
            "--remote-ca".into(),
            ca_cert.display().to_string(),
            "--remote-cert".into(),
            host_cert.display().to_string(),
            "--remote-key".into(),
            host_key.display().to_string(),
        ]
    };
    let args = link("spiffe://greentic.test/gateway/relay");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    certified(&endpoint, &args, "messaging-relay-rs");
    // Another identity than its certificate's: nothing is certified.
    let args = link("spiffe://greentic.test/gateway/other");
    let mut all = vec!["conformance", endpoint.as_str()];
    all.extend(args.iter().map(String::as_str));
    let out = common::run_host(&all);
    let (stdout, stderr) = common::text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        format!("{stdout}{stderr}").contains("spiffe://greentic.test/gateway/other"),
        "{stdout}{stderr}"
    );
}

/// A gateway shared by hosts on other machines: the host's callback service listens beyond
/// loopback only over TLS and tells providers the address to call back at; the gateway holds it
/// to the hosts' identity. The relay reads each tenant's config, token and state through it.
#[test]
fn a_gateway_calls_back_a_host_on_another_address_over_tls() {
    use greentic_host::tls::dev_ca::DevCa;
    let pki = tempfile::tempdir().unwrap();
    let ca = DevCa::new("greentic-callback-test-ca").unwrap();
    let (ca_cert, _) = ca.write(pki.path()).unwrap();
    let (gateway_cert, gateway_key) = ca
        .server(&["spiffe://greentic.test/gateway/relay", "127.0.0.1"])
        .unwrap()
        .write(pki.path(), "gateway")
        .unwrap();
    let (callback_cert, callback_key) = ca
        .server(&["spiffe://greentic.test/host", "127.0.0.1"])
        .unwrap()
        .write(pki.path(), "callbacks")
        .unwrap();
    let rt = common::server_runtime();
    let serve = |callback_identity: Option<&str>| {
        let (listener, port) = common::loopback(&rt);
        let tls = greentic_sidecar_rust::tls(
            gateway_cert.clone(),
            gateway_key.clone(),
            Some(ca_cert.clone()),
        )
        .unwrap();
        let callback = callback_identity
            .map(|id| greentic_host::remote::sidecar::callback_tls(ca_cert.clone(), id).unwrap());
        let service = greentic_sidecar_rust::service_with("relay", callback).unwrap();
        rt.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(greentic_host::remote::incoming::tls(listener, tls))
                .await
        });
        port
    };
    let holds_the_host = serve(Some("spiffe://greentic.test/host"));
    let expects_another = serve(Some("spiffe://greentic.test/other-host"));
    let no_callback_tls = serve(None);
    let upstream = common::Upstream::start(vec![(200, vec![], r#"{"id":"r-1"}"#.into())]);
    let bundle = |port: u16| {
        let b = TestBundle::new(
            &format!(
                "[providers.relay]\nform = \"remote\"\nsource = \"grpcs://127.0.0.1:{port}\"\nidentity = \"spiffe://greentic.test/gateway/relay\"\ntls = {{ ca = \"pki/ca.crt\", cert = \"pki/host.crt\", key = \"pki/host.key\" }}\ngrants = {{ secrets = [\"RELAY_TOKEN\"], state = true }}\n\n[tenants.acme]\nsecrets = [\"RELAY_TOKEN\"]\nconfig.relay = {{ url = \"http://{}/relay\" }}\n\n[[routes]]\ntenant = \"acme\"\ncapability = \"send\"\nprovider = \"relay\"\n",
                upstream.addr
            ),
            &[("acme/RELAY_TOKEN", "acme-relay-token")],
        );
        let dir = b.path().join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        ca.write(&dir).unwrap();
        ca.client("spiffe://greentic.test/host")
            .unwrap()
            .write(&dir, "host")
            .unwrap();
        b
    };
    let port = common::free_port();
    let advertise = format!("https://127.0.0.1:{port}");
    let (cert, key) = (
        callback_cert.display().to_string(),
        callback_key.display().to_string(),
    );
    let listen = format!("0.0.0.0:{port}");
    let env = [
        ("GREENTIC_CALLBACK_LISTEN", listen.as_str()),
        ("GREENTIC_CALLBACK_TLS_CERT", cert.as_str()),
        ("GREENTIC_CALLBACK_TLS_KEY", key.as_str()),
        ("GREENTIC_CALLBACK_ADVERTISE", advertise.as_str()),
    ];
    let b = bundle(holds_the_host);
    let host = common::Host::start_with_env(b.path(), &env);
    let r = host.send(&b.token("acme", None), json!({"to": "#ops", "text": "hi"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "r-1");
    let seen = upstream.requests();
    assert_eq!(
        seen[0].headers.get("authorization").map(String::as_str),
        Some("Bearer acme-relay-token"),
        "the gateway read the tenant's token back over TLS"
    );
    drop(host);
    // A gateway that expects other hosts refuses to call this one back; one not given the
    // callbacks' CA says what it needs. Either way the call fails, saying why.
    for (gateway, words) in [
        (expects_another, "callback"),
        (no_callback_tls, "--callback-ca"),
    ] {
        let b = bundle(gateway);
        let host = common::Host::start_with_env(b.path(), &env);
        let r = host.send(&b.token("acme", None), json!({"to": "#ops", "text": "hi"}));
        assert_ne!(r.status, 200, "{}", r.text());
        assert!(r.text().contains(words), "{}", r.text());
    }
    // Beyond loopback in the clear: refused at load, before any credential is issued.
    let b = bundle(holds_the_host);
    let out = std::process::Command::new(common::host_bin())
        .args(["check", b.path().to_str().unwrap()])
        .env("GREENTIC_CALLBACK_LISTEN", &listen)
        .env("GREENTIC_CACHE_KEY_FILE", common::cache_key_file())
        .output()
        .unwrap();
    let (stdout, stderr) = common::text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        format!("{stdout}{stderr}").contains("beyond loopback, in the clear"),
        "{stdout}{stderr}"
    );
}

/// A native webhook provider: checks the sender's token against the tenant's secret, and says
/// whom it sees the delivery for.
struct Hook;

#[async_trait]
impl greentic_interfaces::native::webhook::Provider for Hook {
    async fn handle(
        &self,
        host: &dyn Host,
        ctx: TenantCtx,
        request: greentic_interfaces::native::webhook::Request,
    ) -> greentic_interfaces::native::webhook::Response {
        use greentic_interfaces::native::webhook::Response;
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let token = match host.secret("HOOK_TOKEN").await {
            Ok(Ok(token)) => token.to_vec(),
            other => {
                return Response {
                    status: 500,
                    headers: vec![],
                    body: format!("{other:?}").into_bytes(),
                };
            }
        };
        if header("x-token").map(String::into_bytes) != Some(token) {
            return Response {
                status: 401,
                headers: vec![],
                body: b"bad token".to_vec(),
            };
        }
        let body = json!({
            "tenant": ctx.tenant,
            "header_tenant": header("x-greentic-tenant"),
            "path": request.path_with_query,
            "body": String::from_utf8_lossy(&request.body),
        });
        Response {
            status: 200,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: body.to_string().into_bytes(),
        }
    }
}

greentic_interfaces::register_native!(
    "test-webhook",
    r#"{"name": "test-webhook", "version": "1.0.0", "domain": "webhook",
        "capabilities": ["receive"], "secrets": [{"name": "HOOK_TOKEN", "required": true}],
        "compat": {"wit": "greentic:webhook/handler@1.0.x"}}"#,
    || Exports::Webhook(Arc::new(Hook))
);

#[test]
fn a_native_webhook_provider_gets_deliveries_with_the_tenant_the_host_verified() {
    let toml = r#"
[host]
listen = "127.0.0.1:0"

[auth]
algorithm = "HS256"
issuer = "greentic-test"
audience = "greentic-host"
secret_file = "jwt.secret"

[secrets]
backend = "file"
dir = "secrets"

[providers.hook]
form = "native"
source = "native:test-webhook"
grants = { secrets = ["HOOK_TOKEN"] }

[tenants.acme]
secrets = ["HOOK_TOKEN"]

[tenants.globex]
secrets = ["HOOK_TOKEN"]

[[routes]]
tenant = "*"
capability = "receive"
provider = "hook"
"#;
    let dir = tempfile::tempdir().unwrap();
    for (tenant, token) in [("acme", "acme-hook-token"), ("globex", "globex-hook-token")] {
        std::fs::create_dir_all(dir.path().join("secrets").join(tenant)).unwrap();
        std::fs::write(
            dir.path().join("secrets").join(tenant).join("HOOK_TOKEN"),
            token,
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("greentic.toml"), toml).unwrap();
    std::fs::write(
        dir.path().join("jwt.secret"),
        "test-secret-0123456789abcdef01234567",
    )
    .unwrap();
    let loaded = load_bundle(dir.path(), LoadOptions::default()).unwrap();
    let runtime = Runtime::new(
        &loaded.bundle,
        loaded.engine,
        loaded.loaded.providers,
        loaded.backends,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let deliver = |tenant: &str, token: &str| {
        let request = hyper::Request::post("/events?x=1")
            .header("x-token", token)
            // A sender cannot name the tenant the provider sees.
            .header("x-greentic-tenant", "globex")
            .body(bytes::Bytes::from_static(b"{\"event\":\"push\"}"))
            .unwrap();
        rt.block_on(runtime.webhook(tenant, "hook", request))
            .unwrap()
    };
    let ok = deliver("acme", "acme-hook-token");
    assert_eq!(ok.status(), 200, "{:?}", ok.body());
    let seen: serde_json::Value = serde_json::from_slice(ok.body()).unwrap();
    assert_eq!(
        seen,
        json!({"tenant": "acme", "header_tenant": "acme", "path": "/events?x=1", "body": "{\"event\":\"push\"}"})
    );
    // Another tenant's token does not open this one's deliveries.
    assert_eq!(deliver("acme", "globex-hook-token").status(), 401);
    assert_eq!(deliver("globex", "globex-hook-token").status(), 200);
}

/// The same webhook crate as a sidecar: deliveries reach it over the wire contract
/// (`WebhookHandle`) through the real host, and its secret read comes back over the callback
/// service — the tenant the host verified, never the one a sender names.
#[test]
fn a_webhook_provider_as_a_sidecar_gets_deliveries_over_the_wire() {
    let rt = common::server_runtime();
    let port = common::serve_provider(&rt, greentic_sidecar_rust::service("test-webhook").unwrap());
    let b = TestBundle::new(
        &format!(
            "[providers.hook]\nform = \"remote\"\nsource = \"grpc://127.0.0.1:{port}\"\nallow_plaintext = true\ngrants = {{ secrets = [\"HOOK_TOKEN\"] }}\n\n[tenants.acme]\nsecrets = [\"HOOK_TOKEN\"]\n\n[tenants.globex]\nsecrets = [\"HOOK_TOKEN\"]\n\n[[routes]]\ntenant = \"*\"\ncapability = \"receive\"\nprovider = \"hook\"\n"
        ),
        &[
            ("acme/HOOK_TOKEN", "acme-hook-token"),
            ("globex/HOOK_TOKEN", "globex-hook-token"),
        ],
    );
    let host = common::Host::start(b.path());
    let deliver = |tenant: &str, token: &str| {
        host.request(
            "POST",
            &format!("/webhooks/{tenant}/hook/events?x=1"),
            &[("x-token", token), ("x-greentic-tenant", "globex")],
            b"{\"event\":\"push\"}",
        )
    };
    let ok = deliver("acme", "acme-hook-token");
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        ok.json(),
        json!({"tenant": "acme", "header_tenant": "acme", "path": "/events?x=1", "body": "{\"event\":\"push\"}"})
    );
    assert_eq!(deliver("acme", "globex-hook-token").status, 401);
    assert_eq!(deliver("globex", "globex-hook-token").status, 200);
}
