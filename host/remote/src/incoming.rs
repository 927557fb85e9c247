//! Serving gRPC over TLS: the connections of a listener, each through a handshake of its own,
//! as tonic takes them (the callback service and the Rust sidecar serve this way).

/// A TLS connection accepted by [`tls`], as tonic serves it.
pub struct TlsConnection(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl tokio::io::AsyncRead for TlsConnection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The connections of `listener`, each through a TLS handshake with `config` (a client whose
/// handshake fails — no certificate when one is required, one of another CA — is dropped and
/// logged; the others are not held up by it).
pub fn tls(
    listener: tokio::net::TcpListener,
    config: std::sync::Arc<greentic_tls::ServerTls>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConnection>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (handshake, accepted) = (config.clone(), sender.clone());
            tokio::spawn(async move {
                match handshake.accept(tcp).await {
                    Ok((stream, _)) => {
                        let _ = accepted.send(Ok(TlsConnection(stream))).await;
                    }
                    Err(e) => tracing::warn!(%peer, error = %e, "TLS handshake refused"),
                }
            });
            if sender.is_closed() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}
