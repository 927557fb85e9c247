//! `greentic-sidecar-echo --listen ADDR`: the echo provider as a gRPC sidecar.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:50052".to_string();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().unwrap_or(listen),
            other => anyhow::bail!(
                "unknown argument `{other}`; usage: greentic-sidecar-echo [--listen ADDR]"
            ),
        }
    }
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on {}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(greentic_sidecar_echo::service())
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
        .await?;
    Ok(())
}
