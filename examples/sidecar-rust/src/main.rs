//! `greentic-sidecar [--provider NAME] [--listen ADDR] [--tls-cert F --tls-key F [--client-ca F]]
//! [--callback-ca F --callback-identity ID]`: a Rust provider as a gRPC sidecar — plaintext on
//! loopback beside the host, or TLS (mutual with `--client-ca`) as a gateway other machines'
//! hosts reach, holding their callback services (TLS) to `--callback-identity`.

use std::path::PathBuf;

const USAGE: &str = "usage: greentic-sidecar [--provider NAME] [--listen ADDR] [--tls-cert FILE --tls-key FILE [--client-ca FILE]] [--callback-ca FILE --callback-identity ID]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:50052".to_string();
    let mut provider = "echo".to_string();
    let (mut cert, mut key, mut client_ca) = (None, None, None);
    let (mut callback_ca, mut callback_identity) = (None, None);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value; {USAGE}"))
        };
        match arg.as_str() {
            "--listen" => listen = value("--listen")?,
            "--provider" => provider = value("--provider")?,
            "--tls-cert" => cert = Some(PathBuf::from(value("--tls-cert")?)),
            "--tls-key" => key = Some(PathBuf::from(value("--tls-key")?)),
            "--client-ca" => client_ca = Some(PathBuf::from(value("--client-ca")?)),
            "--callback-ca" => callback_ca = Some(PathBuf::from(value("--callback-ca")?)),
            "--callback-identity" => callback_identity = Some(value("--callback-identity")?),
            other => anyhow::bail!("unknown argument `{other}`; {USAGE}"),
        }
    }
    let callback_tls = match (callback_ca, callback_identity) {
        (Some(ca), Some(identity)) => Some(
            greentic_remote::sidecar::callback_tls(ca, &identity).map_err(anyhow::Error::msg)?,
        ),
        (None, None) => None,
        _ => anyhow::bail!("--callback-ca and --callback-identity go together; {USAGE}"),
    };
    let Some(service) = greentic_sidecar_rust::service_with(&provider, callback_tls) else {
        anyhow::bail!(
            "no provider `{provider}` in this sidecar (it has: {})",
            greentic_sidecar_rust::providers().join(", ")
        );
    };
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(greentic_sidecar_rust::tls(cert, key, client_ca)?),
        (None, None) if client_ca.is_none() => None,
        _ => anyhow::bail!(
            "--tls-cert and --tls-key go together (and --client-ca needs them); {USAGE}"
        ),
    };
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!(
        "serving {provider} on {}{}",
        listener.local_addr()?,
        if tls.is_some() { " (TLS)" } else { "" }
    );
    let server = tonic::transport::Server::builder().add_service(service);
    match tls {
        Some(tls) => {
            server
                .serve_with_incoming(greentic_remote::incoming::tls(listener, tls))
                .await?
        }
        None => {
            server
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await?
        }
    }
    Ok(())
}
