//! The greentic host: runs provider components for many tenants.
//!
//! A [`bundle`] names providers, grants, tenants and routes. [`loader::load`] checks every
//! provider before anything runs — embedded manifest, WIT compatibility, grants against real
//! imports, tenant configuration and secret bindings — and pre-instantiates it on the
//! [`compile`]. The [`runtime`] routes each call to a provider and runs it in a fresh instance
//! under the calling tenant's [`limits`] (fuel, deadline, memory, concurrency, fuel rate), with
//! only that tenant's secrets and config and host-stamped telemetry ([`imports`]); the
//! [`server`] exposes it over HTTP with JWT authentication ([`auth`]).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use greentic_host::{bundle::Bundle, capabilities::Backends, compile::HostEngine, loader, runtime::{Caller, Runtime}};
//!
//! let bundle = Bundle::load(std::path::Path::new("examples/demo"))?;
//! let engine = HostEngine::new(loader::pool_sizing(&bundle))?;
//! let backends = Backends::open(&bundle.file.sections(), &bundle.dir, None)?;
//! let loaded = loader::load(&bundle, &engine, backends.secrets().as_ref(), Default::default())?;
//! let runtime = Runtime::new(&bundle, engine, loaded.providers, backends);
//! let caller = Caller { tenant: "acme".into(), team: None, user: None };
//! let result = runtime.invoke(&caller, "send", serde_json::json!({"to": "#ops", "text": "hi"}), None).await;
//! # let _ = result; Ok(()) }
//! ```

#![warn(missing_docs)]

/// The call engine (`greentic-engine`).
pub use greentic_engine::{
    bindings, compile, domain, domains, errors, instance, limits, metering, outcomes, provider,
    resilience, revision, runtime, scheduler, shared,
};

/// The audit log (`greentic-audit`).
pub use greentic_audit as audit;
/// Caller authentication (`greentic-auth`).
pub use greentic_auth as auth;
/// The bundle model and its checks (`greentic-bundle`).
pub use greentic_bundle as bundle;
pub mod cli;
pub mod conformance;
/// The capabilities (`greentic-capabilities`): secrets, config, telemetry, outbound HTTP, state, events.
pub use greentic_capabilities as capabilities;
/// The fleet (`greentic-fleet`).
pub use greentic_fleet as fleet;
/// Bounded JetStream streams and buckets (`greentic-jetstream`).
pub use greentic_jetstream as jetstream;
/// Prometheus metrics (`greentic-metrics`).
pub use greentic_metrics as metrics;
/// Providers outside the host: the gRPC link and the callback service (`greentic-remote`).
pub use greentic_remote as remote;
/// Loading bundles into revisions, and reloading them (`greentic-revisions`).
pub use greentic_revisions::{load as loader, reload};
/// The HTTP server (`greentic-server`).
pub use greentic_server as server;
/// TLS: listeners' certificates re-read on change, client-certificate identities, a dev CA.
pub use greentic_tls as tls;
/// Trust: sources, signatures and attestations (`greentic-trust`).
pub use greentic_trust as trust;
pub mod systemd;
pub mod telemetry;

/// The native provider `echo` (`greentic-native-echo`), compiled in with the `native-echo`
/// feature: linking a native provider's crate registers it.
#[cfg(feature = "native-echo")]
pub use greentic_native_echo as native_echo;
/// The native provider `relay` (`greentic-native-relay`), with the `native-relay` feature.
#[cfg(feature = "native-relay")]
pub use greentic_native_relay as native_relay;

/// The names of the native providers compiled into this binary (`source = "native:NAME"`).
pub fn native_providers() -> Vec<&'static str> {
    // Named, so the linker keeps each crate's registration.
    #[cfg(feature = "native-echo")]
    std::hint::black_box(greentic_native_echo::exports as fn() -> _);
    #[cfg(feature = "native-relay")]
    std::hint::black_box(greentic_native_relay::exports as fn() -> _);
    greentic_interfaces::native::registered()
        .iter()
        .map(|r| r.name)
        .collect()
}
