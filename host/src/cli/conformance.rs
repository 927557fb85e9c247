//! `greentic-host conformance COMPONENT`: the provider conformance suite.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::conformance::{Capture, start};
use anyhow::Context;
use clap::Args;
use greentic_conformance::{HostUnderTest, Options, Profile, Subject};
use greentic_registry::{ArtifactRef, Target, pull_component};

use super::push::RegistryArgs;

/// Run the conformance suite of the provider's domain against a component or a remote
/// provider: the provider runs under this host on loopback (a remote one reached over gRPC),
/// calling a scripted upstream the suite runs, as tenants whose secrets and configuration the
/// suite generates. Prints a table (case, result, why); exits 1 if any case fails.
#[derive(Debug, Args)]
pub struct Conformance {
    /// The component: a `.wasm` file, or a reference (`HOST[:PORT]/REPO:TAG`, `…@sha256:…`,
    /// `oci:DIR:TAG`) pulled and verified by digest; or a remote provider on loopback,
    /// `grpc://127.0.0.1:PORT` (a sidecar).
    component: String,
    /// Run this domain's cases instead of the one the manifest names.
    #[arg(long)]
    domain: Option<String>,
    /// The provider's conformance profile (JSON: `config`, `message`, `webhook`); required for
    /// webhook providers and for configuration the suite cannot derive from the schema.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write the report as JUnit XML here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Each call's deadline, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    deadline_ms: u64,
    /// Where compiled components are cached (default: the user's cache directory).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
}

impl Conformance {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let capture = Capture::install()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        rt.block_on(self.suite(capture))
    }

    async fn suite(self, capture: Capture) -> anyhow::Result<ExitCode> {
        let (name, subject) =
            if self.component.starts_with("grpc://") || self.component.starts_with("grpcs://") {
                (self.component.clone(), self.remote().await?)
            } else {
                let (name, wasm) = self.component_bytes().await?;
                (name, Subject::Component(wasm))
            };
        let report = run_suite(
            &name,
            subject,
            &SuiteArgs {
                domain: self.domain.clone(),
                profile: self.profile.clone(),
                deadline_ms: self.deadline_ms,
                cache_dir: self.cache_dir.clone(),
            },
            &capture,
        )
        .await?;
        out!("{}", report.table());
        if let Some(path) = &self.json {
            std::fs::write(path, report.json())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(path) = &self.junit {
            std::fs::write(path, report.junit())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(if report.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }

    /// A remote provider on loopback, described (its manifest asked for) over its link.
    async fn remote(&self) -> anyhow::Result<Subject> {
        let config = crate::remote::LinkConfig {
            endpoint: self.component.clone(),
            tls: None,
            identity: None,
            allow_plaintext: true,
            max_message_bytes: 1 << 20,
        };
        if let Some(problem) = crate::remote::endpoint_problem(&config) {
            anyhow::bail!(
                "{problem} (the suite reaches remote providers on loopback over grpc://: run the sidecar beside it)"
            );
        }
        let link = crate::remote::RemoteLink::connect(&config)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let manifest_json = link
            .describe()
            .await
            .map_err(|e| anyhow::anyhow!("asking {} for its manifest: {e}", self.component))?;
        Ok(Subject::Remote {
            endpoint: self.component.clone(),
            manifest_json,
        })
    }

    async fn component_bytes(&self) -> anyhow::Result<(String, Vec<u8>)> {
        let path = PathBuf::from(&self.component);
        if !path.exists()
            && (self.component.ends_with(".wasm") || self.component.starts_with(['/', '.']))
        {
            anyhow::bail!("{}: no such file", self.component);
        }
        if path.exists() {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            return Ok((self.component.clone(), bytes));
        }
        let reference: ArtifactRef = self.component.parse().with_context(|| {
            format!(
                "`{}` is neither a file nor a reference such as HOST/REPO:TAG or oci:DIR:TAG",
                self.component
            )
        })?;
        let target = Target::open(&reference, &self.registry.options()?)?;
        let pulled = pull_component(&target, &reference, None).await?;
        Ok((
            reference.with_digest(&pulled.manifest_digest).to_string(),
            pulled.component,
        ))
    }
}

/// How to run the suite.
pub(crate) struct SuiteArgs {
    /// Run this domain's cases instead of the manifest's.
    pub domain: Option<String>,
    /// The conformance profile.
    pub profile: Option<PathBuf>,
    /// Each call's deadline.
    pub deadline_ms: u64,
    /// Where compiled components are cached.
    pub cache_dir: Option<PathBuf>,
}

/// Runs the conformance suite against `subject` (named `name` in the report) under this host.
pub(crate) async fn run_suite(
    name: &str,
    subject: Subject,
    args: &SuiteArgs,
    capture: &Capture,
) -> anyhow::Result<greentic_conformance::Report> {
    let profile = match &args.profile {
        Some(path) => Profile::load(path)?,
        None => Profile::default(),
    };
    let options = Options {
        domain: args.domain.clone(),
        profile,
        deadline_ms: args.deadline_ms,
    };
    let cache_dir = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let report = greentic_conformance::run(name, subject, options, |setup| async move {
        let harness = start(setup, capture, cache_dir).await?;
        Ok(Box::new(harness) as Box<dyn HostUnderTest>)
    })
    .await?;
    Ok(report)
}

fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("greentic-host")
        .join("compiled")
}
