//! `greentic-operator`: `run` in a cluster, `reconcile` once over resource files, `crd` to
//! print the CustomResourceDefinitions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures_util::StreamExt as _;
use greentic_bundle::Bundle;
use greentic_operator::cluster::{Cluster, Listed};
use greentic_operator::crd::{self, ProviderBinding, ProviderClass, RoutingPolicy};
use greentic_operator::lease::Elector;
use greentic_operator::observe::{Checker, key_names};
use greentic_operator::publish::Publisher;
use greentic_operator::reconcile::{
    Action, Desired, NamespacePhase, Observed, PublishedState, reconcile,
};

/// Writes a line to stdout; a reader that went away ends the program quietly (status 0).
macro_rules! outln {
    ($($arg:tt)*) => {
        write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: writing to stdout: {e}");
            std::process::exit(1);
        }
    }
}

/// The Kubernetes operator of a greentic fleet.
#[derive(Debug, Parser)]
#[command(name = "greentic-operator", version)]
struct Cli {
    /// How log lines (on stderr) are written: `json` (one object per line) or `text`; default
    /// `json`, or `text` when stderr is a terminal — as `greentic-host --log-format`.
    /// `$GREENTIC_LOG_FORMAT` sets it too.
    #[arg(long, global = true, value_enum, env = "GREENTIC_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// One JSON object per line, for collectors.
    Json,
    /// Human-readable lines.
    Text,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (or write them, one file per kind, into --out).
    Crd {
        /// A directory to write `providerclasses.yaml`, `providerbindings.yaml` and
        /// `routingpolicies.yaml` into.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// One reconcile pass over resources in YAML files instead of an API server: print what
    /// the operator would do (statuses, the revision) and, with --publish, publish the
    /// revision. Every namespace the resources name counts as existing; tenants' secret keys
    /// are read from the base bundle's `file` secrets directory.
    Reconcile(Reconcile),
    /// Run in a cluster: watch the resources, check, publish, write statuses. Only the holder
    /// of the Lease acts.
    Run(Run),
}

#[derive(Debug, clap::Args)]
struct Reconcile {
    /// The hosts' bundle (directory with greentic.toml): keys, `[cluster]`, `[trust]`.
    #[arg(long)]
    base: PathBuf,
    /// YAML files of ProviderClass, ProviderBinding and RoutingPolicy resources.
    #[arg(long = "resources", required = true, num_args = 1..)]
    resources: Vec<PathBuf>,
    /// Publish the revision to the fleet (needs --key).
    #[arg(long, requires = "key")]
    publish: bool,
    /// The NATS server (overrides `[cluster].url`).
    #[arg(long)]
    cluster: Option<String>,
    /// The publisher's private key (cosign format; password from COSIGN_PASSWORD).
    #[arg(long)]
    key: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct Run {
    /// The hosts' bundle (directory with greentic.toml): keys, `[cluster]`, `[trust]`.
    #[arg(long)]
    base: PathBuf,
    /// The NATS server (overrides `[cluster].url`).
    #[arg(long)]
    cluster: Option<String>,
    /// The publisher's private key (cosign format; password from COSIGN_PASSWORD).
    #[arg(long)]
    key: PathBuf,
    /// The namespace of the hosts, where tenants' Secrets (`greentic-tenant-<tenant>`) live.
    #[arg(long, default_value = "greentic-system")]
    hosts_namespace: String,
    /// The namespace of the Lease.
    #[arg(long, default_value = "greentic-system")]
    lease_namespace: String,
    /// The Lease's name.
    #[arg(long, default_value = "greentic-operator")]
    lease_name: String,
    /// This replica's identity (default: $POD_NAME, else the host name).
    #[arg(long)]
    identity: Option<String>,
    /// Where /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:9465")]
    health_listen: String,
    /// Seconds between full passes when nothing changes (tags are resolved again then).
    #[arg(long, default_value_t = 60)]
    resync_secs: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Crd { out } => crd(out),
        Command::Reconcile(r) => runtime().and_then(|rt| rt.block_on(r.run())),
        Command::Run(r) => runtime().and_then(|rt| rt.block_on(r.run())),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::from(2)
        }
    }
}

/// `e` and its causes, each said once (a cause its parent already quotes is not repeated).
fn describe(e: &anyhow::Error) -> String {
    let mut said = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !said.contains(&text) {
            if !said.is_empty() {
                said.push_str(": ");
            }
            said.push_str(&text);
        }
    }
    said
}

/// Logs on stderr (stdout carries `reconcile`'s and `crd`'s output), level from `RUST_LOG`.
fn init_logging(chosen: Option<LogFormat>) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let terminal = std::io::stderr().is_terminal();
    let format = chosen.unwrap_or(if terminal {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text => builder.with_ansi(terminal).init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn crd(out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let files = greentic_operator::crd::crd_yaml();
    match out {
        None => {
            for text in files.values() {
                outln!("---\n{text}");
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            for (name, text) in files {
                // Each file whole or not at all: written beside, then renamed over.
                let part = dir.join(format!(".{name}.part"));
                std::fs::write(&part, text)
                    .with_context(|| format!("writing {}", part.display()))?;
                std::fs::rename(&part, dir.join(name))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn signing_key(path: &PathBuf) -> anyhow::Result<greentic_signing::KeyPair> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("reading the publisher key {}", path.display()))?;
    let password = zeroize::Zeroizing::new(
        std::env::var("COSIGN_PASSWORD")
            .context("COSIGN_PASSWORD is not set: the publisher key's password comes from it")?,
    );
    greentic_signing::KeyPair::from_encrypted_pem(&pem, password.as_bytes())
        .with_context(|| format!("opening the publisher key {}", path.display()))
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn cluster_url(base: &Bundle, flag: &Option<String>) -> anyhow::Result<String> {
    flag.clone()
        .or_else(|| base.file.cluster.url.clone())
        .context("no fleet to reach: pass --cluster nats://HOST:PORT or set [cluster].url")
}

/// Reads every resource of the three kinds from YAML files (several documents each; other
/// kinds, such as a Namespace beside them, are skipped). A `greentic.ai` object of another kind
/// or version, or one without the name (and, for the namespaced kinds, the namespace) the API
/// server would require, is an error naming its file and place.
fn read_resources(files: &[PathBuf]) -> anyhow::Result<Listed> {
    let mut classes = Vec::new();
    let mut bindings = Vec::new();
    let mut policies = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value: serde_json::Value = serde::Deserialize::deserialize(doc)
                .with_context(|| format!("{}: document {} is not YAML", file.display(), i + 1))?;
            if value.is_null() {
                continue;
            }
            let kind = value["kind"].as_str().unwrap_or_default().to_string();
            let name = value["metadata"]["name"].as_str().unwrap_or_default();
            let at = format!("{}: document {} ({kind} `{name}`)", file.display(), i + 1);
            let api = value["apiVersion"].as_str().unwrap_or_default();
            if !api.starts_with("greentic.ai/") {
                continue;
            }
            let expected = format!("{}/{}", crd::GROUP, crd::VERSION);
            anyhow::ensure!(
                api == expected,
                "{at}: apiVersion `{api}` is not served; use `{expected}`"
            );
            anyhow::ensure!(!name.is_empty(), "{at}: metadata.name is missing");
            let namespaced = matches!(kind.as_str(), "ProviderBinding" | "RoutingPolicy");
            anyhow::ensure!(
                !namespaced || value["metadata"]["namespace"].is_string(),
                "{at}: metadata.namespace is missing; the namespace is the tenant"
            );
            match kind.as_str() {
                "ProviderClass" => classes.push(serde_json::from_value(value).context(at)?),
                "ProviderBinding" => bindings.push(serde_json::from_value(value).context(at)?),
                "RoutingPolicy" => policies.push(serde_json::from_value(value).context(at)?),
                _ => anyhow::bail!(
                    "{at}: greentic.ai has no kind `{kind}`; the kinds are ProviderClass, ProviderBinding and RoutingPolicy"
                ),
            }
        }
    }
    Ok(Listed {
        classes,
        bindings,
        policies,
    })
}

/// Checks every class (on a blocking thread: loading fetches and compiles).
async fn check_classes(
    checker: &Arc<Checker>,
    classes: &[ProviderClass],
    published: &Option<PublishedState>,
) -> anyhow::Result<BTreeMap<String, greentic_operator::reconcile::ClassCheck>> {
    let checker = checker.clone();
    let classes = classes.to_vec();
    let published = published.clone();
    tokio::task::spawn_blocking(move || {
        classes
            .iter()
            .map(|c| {
                (
                    c.metadata.name.clone().unwrap_or_default(),
                    checker.check(c, published.as_ref()),
                )
            })
            .collect()
    })
    .await
    .context("checking the classes")
}

impl Reconcile {
    async fn run(self) -> anyhow::Result<ExitCode> {
        let base = Bundle::load(&self.base)?;
        let listed = read_resources(&self.resources)?;
        let desired = Desired {
            base: base.file.clone(),
            classes: listed.classes,
            bindings: listed.bindings,
            policies: listed.policies,
        };
        let publisher = if self.publish {
            let key = signing_key(self.key.as_ref().context("--publish needs --key")?)?;
            let url = cluster_url(&base, &self.cluster)?;
            Some(Publisher::connect(&base, &url, key, "reconcile").await?)
        } else {
            None
        };
        let (published, seen) = match &publisher {
            Some(p) => p.published().await?,
            None => (None, greentic_operator::publish::Seen(None)),
        };
        let checker = Arc::new(Checker::new(
            &base.dir,
            &base.file,
            Duration::from_secs(60),
        )?);
        let classes = check_classes(&checker, &desired.classes, &published).await?;
        let namespaces = desired
            .bindings
            .iter()
            .filter_map(|b| b.metadata.namespace.clone())
            .chain(
                desired
                    .policies
                    .iter()
                    .filter_map(|p| p.metadata.namespace.clone()),
            )
            .map(|ns| (ns, NamespacePhase::Active))
            .collect();
        let secrets = match base.file.secrets.backend {
            greentic_capabilities::secrets::SecretBackendKind::File => {
                key_names(&base.path(&base.file.secrets.dir))
            }
            // The others are not files the operator can list.
            _ => BTreeMap::new(),
        };
        let observed = Observed {
            now: now(),
            classes,
            namespaces,
            secrets,
            published,
        };
        let actions = reconcile(&desired, &observed);
        tracing::info!(
            classes = desired.classes.len(),
            bindings = desired.bindings.len(),
            policies = desired.policies.len(),
            actions = actions.len(),
            "reconcile pass over the resource files"
        );
        let mut failed = false;
        for action in &actions {
            match action {
                Action::Publish(revision) => {
                    if let Err(problems) = verify(&checker, revision, &observed).await {
                        eprintln!(
                            "error: the composed revision does not load:\n  - {}",
                            problems.join("\n  - ")
                        );
                        return Ok(ExitCode::from(1));
                    }
                    outln!("# revision {}\n{}", revision.digest, revision.text);
                    if let Some(p) = &publisher {
                        p.publish(revision, seen).await?;
                        outln!("# published {}", revision.digest);
                    }
                }
                Action::Hold(problems) => {
                    failed = true;
                    eprintln!(
                        "error: no revision can be published:\n  - {}",
                        problems.join("\n  - ")
                    );
                }
                Action::ClassStatus { name, status } => {
                    failed |= not_ready(&status.conditions);
                    print_status("ProviderClass", None, name, status)?;
                }
                Action::BindingStatus {
                    namespace,
                    name,
                    status,
                } => {
                    failed |= not_ready(&status.conditions);
                    print_status("ProviderBinding", Some(namespace), name, status)?;
                }
                Action::PolicyStatus {
                    namespace,
                    name,
                    status,
                } => {
                    failed |= not_ready(&status.conditions);
                    print_status("RoutingPolicy", Some(namespace), name, status)?;
                }
            }
        }
        if !actions
            .iter()
            .any(|a| matches!(a, Action::Publish(_) | Action::Hold(_)))
        {
            outln!("# the fleet already serves this revision");
        }
        Ok(if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }
}

fn not_ready(conditions: &[greentic_operator::crd::Condition]) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status != "True")
}

fn print_status(
    kind: &str,
    namespace: Option<&String>,
    name: &str,
    status: &impl serde::Serialize,
) -> anyhow::Result<()> {
    let doc = serde_json::json!({
        "kind": kind,
        "metadata": { "name": name, "namespace": namespace },
        "status": status,
    });
    outln!("---\n{}", serde_yaml::to_string(&doc)?);
    Ok(())
}

async fn verify(
    checker: &Arc<Checker>,
    revision: &greentic_operator::reconcile::Publication,
    observed: &Observed,
) -> Result<(), Vec<String>> {
    let checker = checker.clone();
    let revision = revision.clone();
    let secrets = observed.secrets.clone();
    tokio::task::spawn_blocking(move || checker.verify(&revision, &secrets))
        .await
        .unwrap_or_else(|e| Err(vec![format!("the check panicked: {e}")]))
}

impl Run {
    async fn run(self) -> anyhow::Result<ExitCode> {
        let base = Bundle::load(&self.base)?;
        let identity = self
            .identity
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .context("no identity: pass --identity or set POD_NAME")?;
        let key = signing_key(&self.key)?;
        let url = cluster_url(&base, &self.cluster)?;
        let publisher = Publisher::connect(&base, &url, key, &identity).await?;
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
        let cluster = Cluster::new(client.clone(), &self.hosts_namespace);
        let checker = Arc::new(Checker::new(
            &base.dir,
            &base.file,
            Duration::from_secs(self.resync_secs),
        )?);
        let wake = Arc::new(tokio::sync::Notify::new());
        let leading = Arc::new(Leadership::default());
        let ready = Arc::new(AtomicBool::new(false));

        // The lease, renewed every third of its duration. Leadership ends on this replica's
        // own clock a third of a lease before the lease could expire for the others, whether or
        // not the API server answers.
        let elector = Arc::new(Elector::new(
            client.clone(),
            &self.lease_namespace,
            &self.lease_name,
            &identity,
            LEASE,
        ));
        let lease_task = {
            let (leading, wake, ready, elector) = (
                leading.clone(),
                wake.clone(),
                ready.clone(),
                elector.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let started = std::time::Instant::now();
                    let held = match tokio::time::timeout(LEASE / 4, elector.try_lead()).await {
                        Ok(Ok(held)) => {
                            // Leader or follower, this replica does its part.
                            ready.store(true, Ordering::SeqCst);
                            held
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "the lease cannot be read or written");
                            ready.store(false, Ordering::SeqCst);
                            false
                        }
                        Err(_) => {
                            tracing::warn!("the lease request timed out");
                            ready.store(false, Ordering::SeqCst);
                            false
                        }
                    };
                    let was = leading.is_leading();
                    if held {
                        leading.hold_until(started + LEASE - LEASE / 3);
                        if !was {
                            tracing::info!("leading: this replica publishes and writes status");
                            wake.notify_one();
                        }
                    } else {
                        leading.drop_lead();
                        if was {
                            tracing::warn!("no longer leading");
                        }
                    }
                    // Renew a third of a lease after this attempt began, however long it took.
                    tokio::time::sleep_until((started + LEASE / 3).into()).await;
                }
            })
        };
        watch::<ProviderClass>(kube::Api::all(client.clone()), wake.clone());
        watch::<ProviderBinding>(kube::Api::all(client.clone()), wake.clone());
        watch::<RoutingPolicy>(kube::Api::all(client.clone()), wake.clone());
        watch::<k8s_openapi::api::core::v1::Namespace>(
            kube::Api::all(client.clone()),
            wake.clone(),
        );
        // A tenant's Secret gaining the key a binding names makes that binding valid. Watched
        // by metadata only: no secret value is streamed to the operator for a wake-up.
        watch::<kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::Secret>>(
            kube::Api::namespaced(client.clone(), &self.hosts_namespace),
            wake.clone(),
        );
        health(&self.health_listen, ready.clone()).await?;

        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("installing the SIGTERM handler")?;
        loop {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(self.resync_secs)) => {}
                _ = tokio::signal::ctrl_c() => break,
                _ = terminate.recv() => break,
            }
            if !leading.is_leading() {
                continue;
            }
            // Let a burst of changes settle into one pass.
            tokio::time::sleep(Duration::from_millis(500)).await;
            match pass(&base, &cluster, &checker, &publisher, &leading).await {
                Ok(n) if n > 0 => tracing::info!(actions = n, "reconciled"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = format!("{e:#}"), "reconcile failed; retrying"),
            }
        }
        // Hand the lease over at once rather than after it runs out (the renewing task stopped
        // first, so it cannot take the lease straight back).
        lease_task.abort();
        let _ = lease_task.await;
        if leading.is_leading() {
            leading.drop_lead();
            if let Err(e) = elector.release().await {
                tracing::warn!(error = %e, "the lease could not be released; it expires by itself");
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// How long the lease runs without renewal.
const LEASE: Duration = Duration::from_secs(15);

/// Until when this replica leads (its own clock).
#[derive(Default)]
struct Leadership(std::sync::Mutex<Option<std::time::Instant>>);

impl Leadership {
    fn is_leading(&self) -> bool {
        self.0
            .lock()
            .ok()
            .and_then(|g| *g)
            .is_some_and(|until| std::time::Instant::now() < until)
    }

    fn hold_until(&self, until: std::time::Instant) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(until);
        }
    }

    fn drop_lead(&self) {
        if let Ok(mut g) = self.0.lock() {
            *g = None;
        }
    }
}

/// One pass against the cluster: returns the number of actions taken.
async fn pass(
    base: &Bundle,
    cluster: &Cluster,
    checker: &Arc<Checker>,
    publisher: &Publisher,
    leading: &Leadership,
) -> anyhow::Result<usize> {
    let listed = cluster.resources().await?;
    let (published, seen) = publisher.published().await?;
    let classes = check_classes(checker, &listed.classes, &published).await?;
    let observed = Observed {
        now: now(),
        classes,
        namespaces: cluster.namespaces().await?,
        secrets: cluster.secret_keys().await?,
        published,
    };
    let desired = Desired {
        base: base.file.clone(),
        classes: listed.classes,
        bindings: listed.bindings,
        policies: listed.policies,
    };
    // Reconcile looks secrets up through the host's blocking check: off the async workers.
    let (actions, observed) = tokio::task::spawn_blocking(move || {
        let actions = reconcile(&desired, &observed);
        (actions, observed)
    })
    .await
    .context("reconcile")?;
    for action in &actions {
        // Leadership can be lost during a long pass: a follower writes nothing.
        anyhow::ensure!(leading.is_leading(), "lost the lease during the pass");
        match action {
            Action::Hold(problems) => {
                tracing::warn!(?problems, "no revision can be published now");
            }
            Action::Publish(revision) => {
                verify(checker, revision, &observed).await.map_err(|p| {
                    anyhow::anyhow!(
                        "the composed revision does not load; nothing published:\n  - {}",
                        p.join("\n  - ")
                    )
                })?;
                // Verifying compiles providers and can take a while.
                anyhow::ensure!(leading.is_leading(), "lost the lease during the pass");
                publisher.publish(revision, seen).await?;
                tracing::info!(digest = %revision.digest, "published");
            }
            status => cluster.apply(status).await?,
        }
    }
    Ok(actions.len())
}

fn watch<K>(api: kube::Api<K>, wake: Arc<tokio::sync::Notify>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    tokio::spawn(async move {
        let stream = kube::runtime::watcher(api, kube::runtime::watcher::Config::default());
        futures_util::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => wake.notify_one(),
                Err(e) => {
                    tracing::warn!(error = %e, "watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    });
}

async fn health(listen: &str, ready: Arc<AtomicBool>) -> anyhow::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.load(Ordering::SeqCst) {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(())
}
