//! `greentic-host publish` and `greentic-host fleet status`: revisions for a fleet, and what
//! its hosts run.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::bundle::{Bundle, Lock};
use crate::fleet::canary::CanaryPlan;
use crate::fleet::member::{HostReport, VerdictRecord, hosts};
use crate::fleet::revisions::{CANARY, Envelope, Published, STABLE};
use crate::fleet::{ClusterSection, Fleet};
use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand};

/// Where the fleet's NATS server is: `--cluster`, else the bundle's `[cluster].url`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// The fleet's NATS server (`nats://HOST:PORT`, `tls://…`; default: `[cluster].url`).
    #[arg(long)]
    cluster: Option<String>,
}

impl ClusterArgs {
    fn url(&self, section: &ClusterSection) -> anyhow::Result<String> {
        self.cluster
            .clone()
            .or_else(|| section.url.clone())
            .context("no fleet to reach: pass --cluster nats://HOST:PORT or set [cluster].url")
    }
}

/// Publish a bundle revision to a fleet: its text and lock, signed with a publisher's key.
/// Every host verifies the signature against its `[cluster].publishers`, fetches, verifies and
/// compiles the providers, and swaps the revision in; one that fails a check is refused while
/// the previous one keeps serving. With `--canary`, only the named tenants get it first: the
/// fleet promotes it after `--window` or rolls it back by itself if their error rate or p99
/// crosses the thresholds (compared with the same tenants on the previous revision).
#[derive(Debug, Args)]
pub struct Publish {
    /// The bundle directory (with greentic.toml) or the file.
    #[arg(default_value = ".")]
    bundle: PathBuf,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The publisher's private key (cosign format; password from COSIGN_PASSWORD or a prompt).
    #[arg(long)]
    key: PathBuf,
    /// Who publishes (recorded with the revision; default `$USER`).
    #[arg(long)]
    publisher: Option<String>,
    /// Skip the full load-time check here (hosts check anyway); the lock then comes from the
    /// bundle directory's greentic.lock as it is.
    #[arg(long)]
    no_check: bool,
    /// Serve the revision to these tenants first (comma-separated).
    #[arg(long, value_delimiter = ',')]
    canary: Vec<String>,
    /// How long the canary is watched before it is promoted (`90s`, `5m`, `1h`).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    window: Duration,
    /// Roll back when the canary's error rate exceeds the baseline's by more than this (`2%`).
    #[arg(long, default_value = "2%", value_parser = parse_percent)]
    max_error_rate: f64,
    /// Roll back when the canary's p99 exceeds the baseline's times this.
    #[arg(long, default_value_t = 1.5)]
    max_p99_ratio: f64,
    /// Calls the canary must serve before it can be judged on error rate or p99.
    #[arg(long, default_value_t = 20)]
    min_calls: u64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 90s, 5m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("`{s}`: use s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let value = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("`{s}` is not a rate such as 2% or 0.02"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("`{s}` is not between 0% and 100%"));
    }
    Ok(value)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

impl Publish {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let bundle = Bundle::load(&self.bundle)?;
        let url = self.cluster.url(&bundle.file.cluster)?;
        let (_, file) = Bundle::locate(&self.bundle);
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        anyhow::ensure!(
            crate::revision::digest_of(text.as_bytes()) == bundle.digest,
            "{} changed while it was read; publish again",
            file.display()
        );
        let lock = if self.no_check {
            Lock::load(&bundle.dir)?
        } else {
            // The whole load-time check, as each host will run it: nothing that fails here is
            // sent.
            let loaded = crate::loader::load_bundle(
                &self.bundle,
                crate::loader::LoadOptions {
                    published: true,
                    ..Default::default()
                },
            )?;
            loaded.loaded.lock
        };
        let key = super::sign::signing_key(&self.key)?;
        let canary = (!self.canary.is_empty()).then(|| CanaryPlan {
            tenants: self.canary.iter().cloned().collect::<BTreeSet<_>>(),
            window_secs: self.window.as_secs(),
            max_error_rate: self.max_error_rate,
            max_p99_ratio: self.max_p99_ratio,
            min_calls: self.min_calls,
        });
        if let Some(plan) = &canary {
            for tenant in &plan.tenants {
                anyhow::ensure!(
                    bundle.file.tenants.contains_key(tenant),
                    "--canary names `{tenant}`, which the bundle does not have"
                );
            }
        }
        let published = Published {
            digest: crate::fleet::revisions::published_digest(&text, &lock),
            bundle: text,
            lock,
            published_at_ms: now_ms(),
            publisher: self
                .publisher
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_default(),
            canary: canary.clone(),
        };
        let envelope = Envelope::sign(&published, &key);
        let bytes = Bytes::from(serde_json::to_vec(&envelope)?);
        runtime()?.block_on(async {
            let fleet =
                Fleet::connect(&bundle.file.cluster, &url, &bundle.dir, "publisher").await?;
            if canary.is_some() {
                fleet.revisions.put(CANARY, bytes).await?;
            } else {
                fleet.revisions.put(STABLE, bytes).await?;
                // A new stable revision withdraws a canary still being judged.
                fleet.revisions.delete(CANARY).await?;
            }
            anyhow::Ok(())
        })?;
        match &canary {
            Some(plan) => outln!(
                "published {} as a canary for {} (window {} s)",
                published.digest,
                plan.tenants.iter().cloned().collect::<Vec<_>>().join(", "),
                plan.window_secs
            ),
            None => outln!("published {}", published.digest),
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The fleet: `greentic-host fleet status`.
#[derive(Debug, Args)]
pub struct FleetCommand {
    #[command(subcommand)]
    command: FleetVerb,
}

#[derive(Debug, Subcommand)]
enum FleetVerb {
    Status(Status),
}

impl FleetCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            FleetVerb::Status(cmd) => cmd.run(),
        }
    }
}

/// Show the published revisions, every live host's revision, canary and last refusal, the
/// canary verdicts, and whether the rollout has converged (every host runs the stable
/// revision, and the canary if there is one). Exit status 0 when converged, 1 otherwise.
#[derive(Debug, Args)]
pub struct Status {
    /// A bundle directory naming the fleet (`[cluster]`), used for its URL and prefix.
    #[arg(long, default_value = ".")]
    bundle: PathBuf,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Wait up to this many seconds for the rollout to converge.
    #[arg(long, default_value_t = 0)]
    wait: u64,
}

/// The fleet as `fleet status` sees it.
#[derive(Debug, serde::Serialize)]
struct View {
    stable: Option<Summary>,
    canary: Option<Summary>,
    hosts: Vec<HostReport>,
    verdicts: Vec<VerdictRecord>,
    converged: bool,
}

#[derive(Debug, serde::Serialize)]
struct Summary {
    digest: String,
    published_at_ms: u64,
    publisher: String,
    canary: Option<CanaryPlan>,
}

fn summary(bytes: &[u8]) -> Option<Summary> {
    // For display only: hosts verify the signature; this just names what is published.
    let envelope: Envelope = serde_json::from_slice(bytes).ok()?;
    let p: Published = serde_json::from_str(&envelope.payload).ok()?;
    Some(Summary {
        digest: p.digest,
        published_at_ms: p.published_at_ms,
        publisher: p.publisher,
        canary: p.canary,
    })
}

async fn view(fleet: &Fleet) -> anyhow::Result<View> {
    let stable = fleet.revisions.get(STABLE).await?.and_then(|b| summary(&b));
    let canary = match fleet.revisions.entry(CANARY).await? {
        Some(e) if e.operation == async_nats::jetstream::kv::Operation::Put => summary(&e.value),
        _ => None,
    };
    let mut verdicts = Vec::new();
    for key in crate::fleet::keys_under(&fleet.revisions, "verdict.").await? {
        if let Some(bytes) = fleet.revisions.get(key.as_str()).await?
            && let Ok(v) = serde_json::from_slice::<VerdictRecord>(&bytes)
        {
            verdicts.push(v);
        }
    }
    verdicts.sort_by_key(|v| v.at_ms);
    let hosts = hosts(&fleet.hosts).await?;
    let converged = !hosts.is_empty()
        && stable.as_ref().is_some_and(|s| {
            hosts.iter().all(|h| {
                h.revision == s.digest
                    && h.canary.as_deref() == canary.as_ref().map(|c| c.digest.as_str())
            })
        });
    Ok(View {
        stable,
        canary,
        hosts,
        verdicts,
        converged,
    })
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

impl Status {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let section = if self.bundle.exists() && Bundle::locate(&self.bundle).1.is_file() {
            Bundle::load(&self.bundle)?.file.cluster
        } else {
            ClusterSection::default()
        };
        let url = self.cluster.url(&section)?;
        let dir = Bundle::locate(&self.bundle).0;
        let view = runtime()?.block_on(async {
            let fleet = Fleet::connect(&section, &url, &dir, "status").await?;
            let until = Instant::now() + Duration::from_secs(self.wait);
            loop {
                let view = view(&fleet).await?;
                if view.converged || Instant::now() >= until {
                    return anyhow::Ok(view);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })?;
        if self.json {
            outln!("{}", serde_json::to_string_pretty(&view)?);
        } else {
            print(&view);
        }
        Ok(if view.converged {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

fn print(view: &View) {
    match &view.stable {
        Some(s) => outln!("stable  {} (published by {})", s.digest, s.publisher),
        None => outln!("stable  none published"),
    }
    if let Some(c) = &view.canary {
        let plan = c.canary.as_ref();
        outln!(
            "canary  {} for {} (window {} s)",
            c.digest,
            plan.map(|p| p.tenants.iter().cloned().collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
            plan.map_or(0, |p| p.window_secs)
        );
    }
    outln!("hosts   {}", view.hosts.len());
    for h in &view.hosts {
        let from = match h.serving_from.as_str() {
            "" | "stable" => String::new(),
            other => format!("(from {other}) "),
        };
        outln!(
            "  {:<24} {:<12} canary {:<12} {}{from}{}{}",
            h.host,
            short(&h.revision),
            h.canary.as_deref().map_or("-", short),
            if h.leader { "leader " } else { "" },
            h.waiting
                .as_deref()
                .map(|w| format!("waiting: {w} "))
                .unwrap_or_default(),
            h.refused
                .as_ref()
                .map(|r| format!(
                    "refused {}: {}",
                    r.digest.as_deref().map_or("-", short),
                    r.problems.join("; ")
                ))
                .unwrap_or_default()
        );
    }
    for v in &view.verdicts {
        outln!("verdict {} {:?}", short(&v.digest), v.verdict);
    }
    outln!("converged: {}", if view.converged { "yes" } else { "no" });
}
