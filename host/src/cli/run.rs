//! `greentic-host run BUNDLE`: load, check, and serve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use greentic_host::auth::Authenticator;
use greentic_host::runtime::Runtime;
use greentic_host::server::{self, App};
use greentic_host::telemetry;

/// Load a bundle (every load-time check runs first), write greentic.lock, and serve
/// `POST /v1/invoke/{capability}`, `/webhooks/{tenant}/{provider}/…`, `/healthz`, `/readyz` and
/// `/metrics`. SIGTERM or Ctrl-C stops accepting requests and lets in-flight calls finish
/// (up to `[host].shutdown_grace_secs`).
#[derive(Debug, Args)]
pub struct Run {
    /// The bundle directory (with greentic.toml) or the greentic.toml file.
    bundle: PathBuf,
    /// Address to listen on (overrides [host].listen); port 0 picks a free port.
    #[arg(long)]
    listen: Option<String>,
    /// Accept components whose digest differs from greentic.lock, and re-lock them.
    #[arg(long)]
    update_lock: bool,
    /// No network: registry and layout providers come from the lock's digests and the cache
    /// filled by an earlier online run (signatures included).
    #[arg(long, conflicts_with = "update_lock")]
    offline: bool,
}

impl Run {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        telemetry::init_logging();
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        // Check for I/O readiness after every task poll (tokio's default is every 61): while
        // guests keep the workers busy, a new request is otherwise noticed only after dozens
        // of guest time slices. Measured in BENCHMARKS.md (noisy neighbour).
        builder.event_interval(1);
        let runtime = builder
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        runtime.block_on(self.serve())
    }

    async fn serve(self) -> anyhow::Result<ExitCode> {
        let loaded = greentic_host::loader::load_bundle(
            &self.bundle,
            greentic_host::loader::LoadOptions {
                update_lock: self.update_lock,
                offline: self.offline,
            },
        )?;
        let bundle = loaded.bundle;
        if loaded.loaded.lock_changed {
            loaded.loaded.lock.save(&bundle.dir)?;
            tracing::info!(lock = %greentic_host::bundle::Lock::path(&bundle.dir).display(), "greentic.lock written");
        }
        let _telemetry = telemetry::init_tracing(&bundle.file.telemetry)?;
        let auth = Authenticator::from_bundle(&bundle)?;
        let runtime = Arc::new(Runtime::new(
            &bundle,
            loaded.engine,
            loaded.loaded.providers,
            loaded.backend,
        ));
        let listen = self
            .listen
            .unwrap_or_else(|| bundle.file.host.listen.clone());
        let addr: SocketAddr = listen
            .parse()
            .with_context(|| format!("`{listen}` is not an address such as 127.0.0.1:8080"))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        let local = listener.local_addr()?;
        let app = Arc::new(App {
            runtime: runtime.clone(),
            auth,
        });
        let limits = server::RequestLimits::from_host(&bundle.file.host);
        let router = server::router(app, limits);
        println!("greentic-host listening on http://{local}");
        tracing::info!(%local, providers = runtime.providers.len(), tenants = runtime.tenants.len(), "serving");

        let stop = Arc::new(tokio::sync::Notify::new());
        let signal_stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            signal_stop.notify_waiters();
        });
        let grace = Duration::from_secs(bundle.file.host.shutdown_grace_secs);
        let server_stop = stop.clone();
        let ready = runtime.clone();
        let serve = server::serve(listener, router, limits, async move {
            server_stop.notified().await;
            ready.ready.store(false, Ordering::SeqCst);
            tracing::info!("shutting down: no new requests; in-flight calls may finish");
        });
        let stopped = stop.notified();
        tokio::pin!(stopped);
        tokio::select! {
            () = serve => {}
            _ = async { (&mut stopped).await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_secs = grace.as_secs(), "in-flight calls did not finish within the grace period");
            }
        }
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
