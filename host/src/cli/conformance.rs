//! `greentic-host conformance COMPONENT`: the provider conformance suite.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::conformance::{Capture, start};
use anyhow::Context;
use clap::Args;
use greentic_conformance::{HostUnderTest, Options, Profile, Subject};
use greentic_registry::{ArtifactRef, Target, pull_component};

use super::push::RegistryArgs;

/// Run the conformance suite of the provider's domain against a component, a remote provider
/// or a native one: the provider runs under this host on loopback (a remote one reached over
/// gRPC, a native one in-process),
/// calling a scripted upstream the suite runs, as tenants whose secrets and configuration the
/// suite generates. Prints a table (case, result, why); exits 1 if any case fails.
#[derive(Debug, Args)]
pub struct Conformance {
    /// The component: a `.wasm` file, or a reference (`HOST[:PORT]/REPO:TAG`, `…@sha256:…`,
    /// `oci:DIR:TAG`) pulled and verified by digest; a remote provider on loopback,
    /// `grpc://127.0.0.1:PORT` (a sidecar); or a native provider compiled into this binary,
    /// `native:NAME`.
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
    /// For a `grpcs://` provider: the identity its certificate must carry (a URI SAN such as
    /// `spiffe://…`, or a DNS name).
    #[arg(long)]
    remote_identity: Option<String>,
    /// For a `grpcs://` provider: the CA bundle (PEM) its certificate is issued by.
    #[arg(long)]
    remote_ca: Option<PathBuf>,
    /// For a `grpcs://` provider: the client certificate (PEM) the host presents.
    #[arg(long, requires = "remote_key")]
    remote_cert: Option<PathBuf>,
    /// The key of `--remote-cert`.
    #[arg(long, requires = "remote_cert")]
    remote_key: Option<PathBuf>,
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
            } else if let Some(native) = self.component.strip_prefix("native:") {
                (self.component.clone(), native_subject(native)?)
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

    /// A remote provider — on loopback over `grpc://`, or anywhere over `grpcs://` with its
    /// identity and CA — described (its manifest asked for) over its link.
    async fn remote(&self) -> anyhow::Result<Subject> {
        let secure = self.component.starts_with("grpcs://");
        let absolute = |p: &Option<PathBuf>| -> anyhow::Result<Option<PathBuf>> {
            p.as_ref()
                .map(|p| std::path::absolute(p).with_context(|| format!("{}", p.display())))
                .transpose()
        };
        let link = secure
            .then(|| -> anyhow::Result<_> {
                Ok(greentic_conformance::RemoteTls {
                    identity: self.remote_identity.clone(),
                    ca: absolute(&self.remote_ca)?,
                    cert: absolute(&self.remote_cert)?,
                    key: absolute(&self.remote_key)?,
                })
            })
            .transpose()?;
        if !secure
            && (self.remote_identity.is_some()
                || self.remote_ca.is_some()
                || self.remote_cert.is_some())
        {
            anyhow::bail!(
                "--remote-identity, --remote-ca and --remote-cert are for a grpcs:// provider; `{}` is plaintext",
                self.component
            );
        }
        let config = crate::remote::LinkConfig {
            endpoint: self.component.clone(),
            tls: link.as_ref().map(|l| greentic_tls::ClientFiles {
                ca: l.ca.clone(),
                cert: l.cert.clone(),
                key: l.key.clone(),
            }),
            identity: self.remote_identity.clone(),
            allow_plaintext: !secure,
            max_message_bytes: 1 << 20,
        };
        if let Some(problem) = crate::remote::endpoint_problem(&config) {
            anyhow::bail!(
                "{problem} (the suite reaches a sidecar on loopback over grpc://, or a provider anywhere over grpcs:// with --remote-identity and --remote-ca)"
            );
        }
        let connected = crate::remote::RemoteLink::connect(&config)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let manifest_json = connected
            .describe()
            .await
            .map_err(|e| anyhow::anyhow!("asking {} for its manifest: {e}", self.component))?;
        Ok(Subject::Remote {
            endpoint: self.component.clone(),
            manifest_json,
            link,
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

/// The native provider registered as `name` in this binary.
fn native_subject(name: &str) -> anyhow::Result<Subject> {
    crate::native_providers();
    let registration = greentic_interfaces::native::find(name).ok_or_else(|| {
        anyhow::anyhow!(
            "no native provider `{name}` is compiled into this host (it has: {}); build it with the crate that registers it",
            crate::native_providers().join(", ")
        )
    })?;
    Ok(Subject::Native {
        name: name.to_string(),
        manifest_json: registration.manifest.to_string(),
    })
}
