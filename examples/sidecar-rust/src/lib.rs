//! Rust providers as gRPC sidecars: each provider crate linked here (`greentic-native-echo`,
//! `greentic-native-relay`) is written against the contracts' traits and registers itself;
//! [`service`] serves one of them over the wire contract `proto/greentic.proto` with
//! `greentic_remote::sidecar::serve`. Its calls back to the host (config, secrets, state,
//! spans, logs) go to the host's callback service with the call's credential. The very same
//! crates run in-process in a host built with them (`form = "native"`).
//!
//! The binary (`greentic-sidecar --provider echo --listen 127.0.0.1:50052`) serves
//! [`service`]; tests and benches serve it in-process the same way.

use greentic_remote::pb::provider_server::ProviderServer;
use greentic_remote::sidecar::Sidecar;

/// The providers this sidecar can serve.
pub fn providers() -> Vec<&'static str> {
    // Named, so the linker keeps each crate's registration.
    std::hint::black_box((
        greentic_native_echo::exports as fn() -> _,
        greentic_native_relay::exports as fn() -> _,
    ));
    greentic_interfaces::native::registered()
        .iter()
        .map(|r| r.name)
        .collect()
}

/// The `Provider` service of the provider registered as `name`, describing itself with the
/// manifest it carries, calling back hosts on loopback or the pod's network.
pub fn service(name: &str) -> Option<ProviderServer<Sidecar>> {
    service_with(name, None)
}

/// [`service`], calling back hosts whose callback service serves TLS with `callback_tls`
/// (`greentic_remote::sidecar::callback_tls`): a gateway other machines' hosts call.
pub fn service_with(
    name: &str,
    callback_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Option<ProviderServer<Sidecar>> {
    providers();
    let registration = greentic_interfaces::native::find(name)?;
    Some(greentic_remote::sidecar::serve_with(
        (registration.make)(),
        registration.manifest,
        callback_tls,
    ))
}

/// The sidecar's TLS: `cert` and `key`, TLS 1.3, and with `client_ca` every client must
/// present a certificate issued by it (mutual TLS: only hosts holding one reach the gateway).
pub fn tls(
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    client_ca: Option<std::path::PathBuf>,
) -> anyhow::Result<std::sync::Arc<greentic_tls::ServerTls>> {
    let client_auth = if client_ca.is_some() {
        greentic_tls::ClientAuth::Required
    } else {
        greentic_tls::ClientAuth::None
    };
    let files = greentic_tls::TlsFiles {
        cert,
        key,
        client_ca,
        client_auth,
        min_version: greentic_tls::MinVersion::Tls13,
    };
    Ok(std::sync::Arc::new(
        greentic_tls::ServerTls::load(files).map_err(|e| anyhow::anyhow!("{e}"))?,
    ))
}
