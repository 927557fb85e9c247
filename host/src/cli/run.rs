//! `greentic-host run BUNDLE`: load, check, and serve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::fleet::Fleet;
use crate::fleet::idempotency::Records;
use crate::fleet::limits::FleetLimits;
use crate::fleet::member::Member;
use crate::reload::{Outcome, Reloader};
use crate::runtime::Runtime;
use crate::server::{self, App};
use crate::telemetry;
use anyhow::Context;
use arc_swap::ArcSwap;
use clap::Args;

/// Load a bundle (every load-time check runs first), write greentic.lock, and serve
/// `POST /v1/invoke/{capability}`, `/webhooks/{tenant}/{provider}/…` and `/healthz`; `/readyz`,
/// `/metrics`, `/healthz` and `POST /reload` on the admin listener. SIGHUP, `greentic-host
/// reload` or (with `--watch`) a change of the file applies a new revision of the bundle without
/// failing a call; one that fails a check is refused whole and the active one keeps serving.
/// SIGTERM or Ctrl-C stops accepting requests and lets in-flight calls finish (up to
/// `[host].shutdown_grace_secs`).
#[derive(Debug, Args)]
pub struct Run {
    /// The bundle directory (with greentic.toml) or the greentic.toml file.
    bundle: PathBuf,
    /// Address to listen on (overrides [host].listen); port 0 picks a free port.
    #[arg(long)]
    listen: Option<String>,
    /// Address of the admin listener, for /readyz and /metrics (overrides [host].admin_listen);
    /// port 0 picks a free port.
    #[arg(long)]
    admin_listen: Option<String>,
    /// Accept components whose digest differs from greentic.lock, and re-lock them.
    #[arg(long)]
    update_lock: bool,
    /// No network: registry and layout providers come from the lock's digests and the cache
    /// filled by an earlier online run (signatures included).
    #[arg(long, conflicts_with = "update_lock")]
    offline: bool,
    /// Reload whenever the bundle file's content changes (checked every second).
    #[arg(long, conflicts_with = "cluster")]
    watch: bool,
    /// Join the fleet on this NATS server (`nats://HOST:PORT`, `tls://…`; overrides
    /// `[cluster].url`): follow its published revisions, report heartbeats, and hold tenants'
    /// limits and idempotency keys fleet-wide.
    #[arg(long)]
    cluster: Option<String>,
    /// This host's id in the fleet (default: `$HOSTNAME` and the process id).
    #[arg(long)]
    host_id: Option<String>,
    /// How log lines are written: `json` (one object per line) or `text`; default `json`, or
    /// `text` when stdout is a terminal (as `greentic-operator --log-format`).
    /// `$GREENTIC_LOG_FORMAT` sets it too.
    #[arg(long, value_enum, env = "GREENTIC_LOG_FORMAT")]
    log_format: Option<crate::telemetry::LogFormat>,
}

impl Run {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        // Sockets passed by systemd are taken before any thread starts.
        let activated = crate::systemd::take_listeners()?;
        telemetry::set_log_format(self.log_format);
        let _logging = telemetry::init_logging();
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        // Check for I/O readiness after every task poll (tokio's default is every 61): while
        // guests keep the workers busy, a new request is otherwise noticed only after dozens
        // of guest time slices. Measured in BENCHMARKS.md (noisy neighbour).
        builder.event_interval(1);
        let runtime = builder
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        runtime.block_on(self.serve(activated))
    }

    async fn serve(self, mut activated: crate::systemd::Activated) -> anyhow::Result<ExitCode> {
        crate::systemd::tell("STATUS=loading the bundle");
        // Flags and listen addresses are checked before anything is compiled: a typo or a
        // port in use is said at once, and leaves nothing behind.
        {
            let bundle = crate::bundle::Bundle::load(&self.bundle)?;
            let host = &bundle.file.host;
            if activated.public.is_none() {
                probe_bind(
                    self.listen.as_deref(),
                    &host.listen,
                    "--listen / [host].listen",
                )?;
            }
            if activated.admin.is_none() {
                probe_bind(
                    self.admin_listen.as_deref(),
                    &host.admin_listen,
                    "--admin-listen / [host].admin_listen",
                )?;
            }
            // Certificates and keys are read now too: a wrong path or pair is said before
            // anything is compiled.
            listener_tls(&bundle, &host.tls, "[host.tls]")?;
            listener_tls(&bundle, &host.admin_tls, "[host.admin_tls]")?;
        }
        // The audit log runs before anything is loaded, so every load decision is in it.
        let audit_host = self
            .host_id
            .clone()
            .unwrap_or_else(crate::audit::default_host_id);
        let (_audit_export, _audit) = start_audit(&self.bundle, &audit_host)?;
        let options = crate::loader::LoadOptions {
            update_lock: self.update_lock,
            offline: self.offline,
            published: false,
            bootstrap: self.cluster.is_some(),
        };
        let loaded = crate::loader::load_bundle(&self.bundle, options)?;
        let (_, max_in_flight) = loaded.engine.in_flight();
        let bundle = loaded.bundle;
        // Written once the host serves (its listeners bound), never by a run that stopped.
        let new_lock = loaded.loaded.lock_changed.then_some(loaded.loaded.lock);
        let _telemetry = telemetry::init_tracing(&bundle.file.telemetry, &bundle.dir)?;
        // After the logger, so what they warn of is seen.
        open_file_limit(max_in_flight, bundle.file.host.max_connections);
        map_count(max_in_flight);
        let auth = Arc::new(ArcSwap::from_pointee(loaded.auth));
        // The state backend opens (or is reached) now, in the runtime that serves calls: one
        // that cannot be stops the host before it listens.
        loaded
            .backends
            .state()
            .backend
            .open()
            .await
            .context("[state]: the state backend cannot be opened")?;
        let runtime = Arc::new(Runtime::new(
            &bundle,
            loaded.engine,
            loaded.loaded.providers,
            loaded.backends,
        ));
        // What the host fires itself (schedules) runs beside the listeners until shutdown;
        // the reloader restarts it when a revision changes the schedules.
        let reloader = Reloader::new(runtime.clone(), auth.clone(), &self.bundle, options);
        let (stop_background, background_stop) = tokio::sync::watch::channel(false);
        let stop_background = Arc::new(stop_background);
        // A fleet member takes the fleet's revision before it listens.
        let member = match self
            .cluster
            .clone()
            .or_else(|| bundle.file.cluster.url.clone())
        {
            Some(url) => {
                let member = join_fleet(
                    &bundle,
                    &url,
                    self.host_id.clone(),
                    &runtime,
                    &reloader,
                    options,
                    &background_stop,
                )
                .await?;
                tokio::spawn(member.clone().run(background_stop.clone()));
                Some(member)
            }
            None => {
                anyhow::ensure!(
                    !runtime.revision().has_durable_routes(),
                    "a route has `durable = true`, which queues deliveries in the fleet's JetStream: run with --cluster nats://… (or set [cluster].url), or remove it"
                );
                None
            }
        };
        let following_fleet = member.is_some();
        // A socket systemd passed (socket activation) is used as it is; the others are bound.
        let listener = match activated.public.take() {
            Some(l) => tokio::net::TcpListener::from_std(l)?,
            None => bind(self.listen.as_deref(), &bundle.file.host.listen).await?,
        };
        let admin = match activated.admin.take() {
            Some(l) => tokio::net::TcpListener::from_std(l)?,
            None => bind(self.admin_listen.as_deref(), &bundle.file.host.admin_listen).await?,
        };
        let local = listener.local_addr()?;
        let admin_local = admin.local_addr()?;
        if let Some(lock) = new_lock {
            lock.save(&bundle.dir).map_err(|e| {
                anyhow::anyhow!(
                    "{e}: a provider resolved to a digest greentic.lock does not hold, and the lock cannot be written beside the bundle; ship the bundle with its greentic.lock (written by a run where the bundle is writable), or make the directory writable"
                )
            })?;
            tracing::info!(lock = %crate::bundle::Lock::path(&bundle.dir).display(), "greentic.lock written");
        }
        let app = Arc::new(App {
            runtime: runtime.clone(),
            auth,
            reloader: Some(reloader.clone()),
            member: member.clone(),
        });
        let limits = server::RequestLimits::from_host(&bundle.file.host);
        let connections = server::ConnectionLimits::from_host(&bundle.file.host);
        let router = server::router(app.clone(), limits);
        let admin_router = server::admin_router(app, limits);
        let metrics = runtime.metrics.clone();
        let tls = listener_tls(&bundle, &bundle.file.host.tls, "[host.tls]")?
            .map(|t| watched(t, "public", &metrics, &background_stop));
        let admin_tls = listener_tls(&bundle, &bundle.file.host.admin_tls, "[host.admin_tls]")?
            .map(|t| watched(t, "admin", &metrics, &background_stop));
        {
            // A closed stdout must not stop a server: the lines are for whoever reads them.
            use std::io::Write;
            let scheme = |t: &Option<server::Tls>| if t.is_some() { "https" } else { "http" };
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(
                stdout,
                "greentic-host listening on {}://{local}",
                scheme(&tls)
            );
            let _ = writeln!(
                stdout,
                "greentic-host admin on {}://{admin_local}",
                scheme(&admin_tls)
            );
            let _ = stdout.flush();
        }
        let revision = runtime.revision();
        let ready_status = format!(
            "READY=1\nSTATUS=serving revision {} on {}://{local}",
            revision.digest,
            if tls.is_some() { "https" } else { "http" }
        );
        tracing::info!(%local, admin = %admin_local, providers = revision.providers.len(), tenants = revision.tenants.len(), revision = %revision.digest, "serving");
        crate::audit::record(
            "revision.activated",
            serde_json::json!({
                "revision": revision.digest,
                "at": "startup",
                "providers": revision.providers.keys().collect::<Vec<_>>(),
            }),
        );
        drop(revision);

        #[cfg(unix)]
        tokio::spawn(reload_on_hangup(reloader.clone(), member));
        // The watchdog hears from the serving runtime until the process ends.
        if let Some(interval) = crate::systemd::watchdog_interval() {
            tokio::spawn(crate::systemd::watchdog(interval));
        }
        if self.watch && following_fleet {
            tracing::warn!(
                "--watch is ignored on a fleet member: it follows the fleet's published revisions"
            );
        } else if self.watch {
            tokio::spawn(
                reloader
                    .clone()
                    .watch(Duration::from_secs(1), background_stop.clone()),
            );
        }
        let stop = Arc::new(tokio::sync::Notify::new());
        let signal_stop = stop.clone();
        // When the signal came: the grace period counts from it, for calls and fires alike.
        let signalled = Arc::new(std::sync::OnceLock::new());
        let signal_time = signalled.clone();
        let signal_background = stop_background.clone();
        let signal_reloader = reloader.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            crate::systemd::tell("STOPPING=1\nSTATUS=stopping: in-flight calls may finish");
            crate::audit::record("admin.shutdown", serde_json::json!({ "via": "signal" }));
            let _ = signal_time.set(tokio::time::Instant::now());
            let _ = signal_background.send(true);
            // No new fire starts; one in progress finishes within the grace period.
            signal_reloader.halt_triggers();
            signal_stop.notify_waiters();
        });
        let grace = Duration::from_secs(bundle.file.host.shutdown_grace_secs);
        let server_stop = stop.clone();
        let ready = runtime.clone();
        let serve = server::serve(listener, router, limits, connections, tls, async move {
            server_stop.notified().await;
            ready.ready.store(false, Ordering::SeqCst);
            tracing::info!("shutting down: no new requests; in-flight calls may finish");
        });
        // The admin side keeps answering (readiness false) until the public side has drained.
        let admin_stop = Arc::new(tokio::sync::Notify::new());
        let admin_stopped = admin_stop.clone();
        let admin_connections = server::ConnectionLimits {
            max_connections: 64,
            ..connections
        };
        let admin_serve = tokio::spawn(server::serve(
            admin,
            admin_router,
            limits,
            admin_connections,
            admin_tls,
            async move { admin_stopped.notified().await },
        ));
        let stopped = stop.notified();
        tokio::pin!(stopped);
        // Listening and serving: a `Type=notify` unit is started.
        crate::systemd::tell(&ready_status);
        tokio::select! {
            () = serve => {}
            _ = async { (&mut stopped).await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_secs = grace.as_secs(), "in-flight calls did not finish within the grace period");
            }
        }
        // A fire in progress finishes within what is left of the grace period.
        let _ = stop_background.send(true);
        let until = signalled
            .get()
            .copied()
            .unwrap_or_else(tokio::time::Instant::now)
            + grace;
        reloader.stop_triggers(until).await;
        admin_stop.notify_waiters();
        let _ = tokio::time::timeout(Duration::from_secs(1), admin_serve).await;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    }
}

/// How often a listener's certificate, key and client CA files are looked at for changes.
const TLS_WATCH: Duration = Duration::from_secs(2);

/// The TLS configuration `section` (`what`) describes, its files read and checked; `None`
/// for a plain-HTTP listener.
pub(crate) fn listener_tls(
    bundle: &crate::bundle::Bundle,
    section: &Option<crate::bundle::TlsSection>,
    what: &str,
) -> anyhow::Result<Option<Arc<crate::tls::ServerTls>>> {
    use crate::bundle::{ClientAuthMode, TlsVersion};
    use crate::tls::{ClientAuth, MinVersion, ServerTls, TlsFiles};
    let Some(section) = section else {
        return Ok(None);
    };
    let files = TlsFiles {
        cert: bundle.path(&section.cert),
        key: bundle.path(&section.key),
        client_ca: section.client_ca.as_ref().map(|p| bundle.path(p)),
        client_auth: match section.client_auth() {
            ClientAuthMode::None => ClientAuth::None,
            ClientAuthMode::Optional => ClientAuth::Optional,
            ClientAuthMode::Required => ClientAuth::Required,
        },
        min_version: match section.min_version {
            TlsVersion::Tls12 => MinVersion::Tls12,
            TlsVersion::Tls13 => MinVersion::Tls13,
        },
    };
    let tls = ServerTls::load(files).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    Ok(Some(Arc::new(tls)))
}

/// `tls` for the listener named `listener`, its files looked at every [`TLS_WATCH`] until the
/// host stops: a good new pair is taken for new connections, a broken one is refused (logged,
/// counted in `greentic_tls_reloads_total{listener,result}`) while the old one keeps serving.
fn watched(
    tls: Arc<crate::tls::ServerTls>,
    listener: &'static str,
    metrics: &Arc<crate::metrics::Metrics>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> server::Tls {
    use crate::tls::Reloaded;
    let counted = metrics.clone();
    let cert = tls.files().cert.display().to_string();
    tokio::spawn(tls.clone().watch(TLS_WATCH, stop.clone(), move |found| {
        match found {
            Reloaded::Replaced => {
                tracing::info!(listener, cert = %cert, "TLS certificate reloaded: new connections use it");
                counted.inc(
                    "greentic_tls_reloads_total",
                    &[("listener", listener), ("result", "replaced")],
                );
                crate::audit::record(
                    "tls.reloaded",
                    serde_json::json!({ "listener": listener, "cert": &cert }),
                );
            }
            Reloaded::Refused(why) => {
                tracing::error!(listener, error = %why, "new TLS files refused; the certificate in use keeps serving");
                counted.inc(
                    "greentic_tls_reloads_total",
                    &[("listener", listener), ("result", "refused")],
                );
            }
            Reloaded::Unchanged => {}
        }
    }));
    server::Tls {
        server: tls,
        listener,
        metrics: metrics.clone(),
    }
}

/// Connections the kernel may hold for the host before it accepts them: as many as it allows
/// (`net.core.somaxconn` caps it; 4 096 by default on current Linux). The standard library's
/// 128 or tokio's 1 024 turn a burst of new connections into resets.
const LISTEN_BACKLOG: u32 = 65_535;

/// Binds `flag` (from the command line) or else `configured` (from the bundle).
async fn bind(flag: Option<&str>, configured: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let addr = listen_addr(flag, configured, "the listen address")?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .with_context(|| format!("listening on {addr}"))?;
    socket
        .set_reuseaddr(true)
        .and_then(|()| socket.bind(addr))
        .and_then(|()| socket.listen(LISTEN_BACKLOG))
        .with_context(|| format!("listening on {addr}"))
}

/// The address to listen on: the flag's, else the bundle's.
fn listen_addr(flag: Option<&str>, configured: &str, what: &str) -> anyhow::Result<SocketAddr> {
    let listen = flag.unwrap_or(configured);
    listen.parse().map_err(|_| {
        anyhow::anyhow!(
            "{what}: `{listen}` is not an address and port such as 127.0.0.1:8080 (ports 0–65535; 0 picks a free one)"
        )
    })
}

/// Checks that the host can listen where it is asked to — the address parses and the port is
/// free — before anything is compiled; the real listener is bound once the bundle is loaded.
fn probe_bind(flag: Option<&str>, configured: &str, what: &str) -> anyhow::Result<()> {
    let addr = listen_addr(flag, configured, what)?;
    if addr.port() == 0 {
        return Ok(());
    }
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
                "{what}: {addr} is in use by another process; stop it, or choose another port"
            ),
            _ => anyhow::anyhow!("{what}: cannot listen on {addr}: {e}"),
        })
}

/// Joins the fleet at `url`: fleet-wide limits and idempotency records on `runtime`, and the
/// published revision applied through `reloader`.
async fn join_fleet(
    bundle: &crate::bundle::Bundle,
    url: &str,
    host_id: Option<String>,
    runtime: &Arc<Runtime>,
    reloader: &Arc<Reloader>,
    options: crate::loader::LoadOptions,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Arc<Member>> {
    // Fail closed: a member that could trust no publisher would follow nothing.
    crate::fleet::revisions::publisher_keys(bundle)
        .map_err(|e| anyhow::anyhow!("[cluster]: {e}"))?;
    let id = host_id.unwrap_or_else(crate::fleet::default_host_id);
    let fleet = Arc::new(Fleet::connect(&bundle.file.cluster, url, &bundle.dir, &id).await?);
    if bundle.file.cluster.fleet_limits {
        let limits = FleetLimits::open(&fleet, runtime.metrics.clone()).await?;
        let _ = runtime.fleet_limits.set(limits);
    }
    let _ = runtime.idempotency.set(Records::open(&fleet).await?);
    let deliveries = crate::fleet::deliveries::Deliveries::open(&fleet).await?;
    let _ = runtime.deliveries.set(deliveries.clone());
    let state_dir = match &bundle.file.cluster.state_dir {
        Some(dir) => bundle.path(dir),
        None => crate::capabilities::dirs::state(&bundle.dir, "fleet"),
    };
    let member = Member::new(fleet.clone(), reloader.clone(), options, Some(state_dir));
    match member.sync().await? {
        None => tracing::info!("no revision published yet; serving the local bundle"),
        Some(Outcome::Refused { digest, .. }) => tracing::error!(
            digest = digest.as_deref().unwrap_or("-"),
            waiting = member.waiting().unwrap_or_default(),
            "the published revision was refused and nothing earlier could be served; unready until one can"
        ),
        Some(outcome) => tracing::info!(
            ?outcome,
            from = member.serving_from(),
            "following the fleet's revision"
        ),
    }
    if !bundle.file.schedules.is_empty() && bundle.file.state.backend != "nats" {
        tracing::warn!(
            "schedules claim their slots in the state backend, which is this host's own file: every host of the fleet fires them; set [state] type = \"nats\" so each slot fires once fleet-wide"
        );
    }
    // Deliveries are handled on the fleet's revision, never on the local bundle it replaced.
    tokio::spawn(deliveries.work(runtime.clone(), stop.clone()));
    tracing::info!(host = %fleet.host_id, %url, "joined the fleet");
    Ok(member)
}

/// Starts the bundle's audit log, if it has one, exporting to the telemetry endpoint too.
fn start_audit(
    path: &std::path::Path,
    host: &str,
) -> anyhow::Result<(crate::audit::Exporting, Option<crate::audit::AuditLog>)> {
    let bundle = crate::bundle::Bundle::load(path)?;
    let Some(section) = &bundle.file.audit else {
        return Ok((crate::audit::Exporting { provider: None }, None));
    };
    let provider =
        telemetry::audit_logs(&bundle.file.telemetry, &bundle.dir)?.map(std::sync::Arc::new);
    let export = provider
        .as_deref()
        .map(|p| Box::new(crate::audit::OtlpExport::new(p)) as Box<dyn crate::audit::Export>);
    let log = crate::audit::AuditLog::start(section, &bundle.dir, host, export)?;
    tracing::info!(file = %bundle.path(&section.file).display(), "audit log open");
    Ok((crate::audit::Exporting { provider }, Some(log)))
}

/// Applies the bundle again on every SIGHUP: the file, or for a fleet member the fleet's
/// published revision.
#[cfg(unix)]
async fn reload_on_hangup(reloader: Arc<Reloader>, member: Option<Arc<Member>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "SIGHUP cannot be watched; reload with `greentic-host reload`");
            return;
        }
    };
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the bundle");
        crate::systemd::tell(&crate::systemd::reloading());
        crate::audit::record("admin.reload", serde_json::json!({ "via": "SIGHUP" }));
        let status = match &member {
            Some(member) => match member.sync().await {
                Ok(_) => "reloaded from the fleet".to_string(),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "reading the fleet's revisions");
                    format!("reload failed: {e}")
                }
            },
            None => match reloader.reload().await {
                Outcome::Applied { digest, .. } => format!("serving revision {digest}"),
                Outcome::Unchanged { digest } => format!("serving revision {digest} (unchanged)"),
                Outcome::Refused { problems, .. } => format!(
                    "reload refused ({} problem(s), see the log); the active revision keeps serving",
                    problems.len()
                ),
            },
        };
        crate::systemd::tell(&format!("READY=1\nSTATUS={status}"));
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

/// Warns when `max_in_flight` calls' pool slots would not fit in the process's memory
/// mappings (`vm.max_map_count`): past it every `mmap` and `mprotect` fails, and calls would be
/// answered `503 host-at-capacity` before the pool is full.
fn map_count(max_in_flight: u32) {
    let (Some(max_map_count), Some(supported)) = (
        greentic_engine::process::max_map_count(),
        greentic_engine::compile::PoolSizing::supported_by_maps(),
    ) else {
        return;
    };
    if max_in_flight >= supported {
        tracing::warn!(
            max_map_count,
            max_in_flight,
            supported,
            "vm.max_map_count holds the memory mappings of {supported} calls in flight ({} each), and [host] max_in_flight is {max_in_flight}: for more, raise it (sysctl -w vm.max_map_count=262144, or the node's sysctls in Kubernetes)",
            greentic_engine::compile::MAPS_PER_CALL
        );
    }
}

/// Raises the open-file limit to the hard limit ([`greentic_engine::process`]): a call in
/// flight holds a socket out and its connection in, and the soft default (often 1 024) would
/// turn a host's capacity into `accept` and `connect` failures. Warns when even the hard limit
/// cannot hold `max_in_flight` calls' sockets and `max_connections` connections.
fn open_file_limit(max_in_flight: u32, max_connections: usize) {
    let Some(open_files) = greentic_engine::process::raise_open_file_limit() else {
        return;
    };
    // A socket out per call, one per connection in (HTTP/2 carries many calls on one), and
    // room for everything else (listeners, files, the fleet's connections).
    let needed = u64::from(max_in_flight) + max_connections as u64 + 256;
    if open_files < needed {
        tracing::warn!(
            open_files,
            needed,
            "the open-file limit cannot hold a socket out for every call in flight ([host] max_in_flight {max_in_flight}) and max_connections in: raise it (LimitNOFILE= in a systemd unit, ulimit -Hn), or lower max_in_flight"
        );
    }
}
