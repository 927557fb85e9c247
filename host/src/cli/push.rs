//! `greentic-host push` and `greentic-host pull`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use greentic_registry::{
    ArtifactRef, BlobCache, RemoteOptions, Target, pull_component, push_component,
};

/// Registry connection options shared by the registry verbs.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Registry user (else GREENTIC_REGISTRY_USERNAME, else the docker config.json).
    #[arg(long)]
    username: Option<String>,
    /// Read the registry password from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Extra CA certificate (PEM) to trust; repeatable.
    #[arg(long = "ca-cert")]
    ca_certs: Vec<PathBuf>,
    /// Allow plain HTTP to this registry host (loopback hosts always are, unless --tls or
    /// --ca-cert is given); repeatable.
    #[arg(long)]
    insecure: Vec<String>,
    /// Use TLS even for a loopback registry.
    #[arg(long)]
    tls: bool,
}

impl RegistryArgs {
    pub fn options(&self) -> anyhow::Result<RemoteOptions> {
        let password = if self.password_stdin {
            let mut p = String::new();
            std::io::stdin()
                .read_line(&mut p)
                .context("reading the password from stdin")?;
            Some(p.trim_end_matches(['\n', '\r']).to_string())
        } else {
            None
        };
        let ca_certificates = self
            .ca_certs
            .iter()
            .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
            .collect::<anyhow::Result<_>>()?;
        Ok(RemoteOptions {
            insecure: self.insecure.clone(),
            username: self.username.clone(),
            password,
            ca_certificates,
            max_attempts: None,
            require_tls: self.tls,
        })
    }
}

/// Push a component to a registry or an OCI layout as a CNCF Wasm artifact (config filled from
/// its real WIT world, annotations from its manifest). Prints the digest-pinned reference.
#[derive(Debug, Args)]
pub struct Push {
    /// The component file.
    file: PathBuf,
    /// Where to: `HOST[:PORT]/REPO:TAG` or `oci:DIR:TAG`.
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

impl Push {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let bytes = std::fs::read(&self.file)
            .with_context(|| format!("reading {}", self.file.display()))?;
        let reference: ArtifactRef = self.reference.parse()?;
        let target = Target::open(&reference, &self.registry.options()?)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let pushed = rt.block_on(push_component(&target, &reference, &bytes))?;
        outln!("{}", pushed.reference);
        Ok(ExitCode::SUCCESS)
    }
}

/// Pull a component: resolve the reference to a digest once, fetch by digest, verify every
/// byte, and write the component (default: NAME.wasm in the current directory).
#[derive(Debug, Args)]
pub struct Pull {
    /// `HOST[:PORT]/REPO:TAG`, `HOST/REPO@sha256:…` or `oci:DIR:TAG`.
    reference: String,
    /// Output file.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Content-addressed cache directory for verified blobs.
    #[arg(long)]
    cache: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
}

impl Pull {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let reference: ArtifactRef = self.reference.parse()?;
        let target = Target::open(&reference, &self.registry.options()?)?;
        let cache = self.cache.clone().map(BlobCache::new);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let pulled = rt.block_on(pull_component(&target, &reference, cache.as_ref()))?;
        let output = self.output.unwrap_or_else(|| {
            let name = pulled.manifest["annotations"]["org.opencontainers.image.title"]
                .as_str()
                .unwrap_or("component");
            PathBuf::from(format!("{name}.wasm"))
        });
        let tmp = output.with_extension("wasm.partial");
        let written = std::fs::write(&tmp, &pulled.component)
            .with_context(|| format!("writing {}", tmp.display()))
            .and_then(|()| {
                std::fs::rename(&tmp, &output)
                    .with_context(|| format!("writing {}", output.display()))
            });
        if written.is_err() {
            // Never leave half a component behind.
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        outln!(
            "{} {} -> {}",
            reference.with_digest(&pulled.manifest_digest),
            pulled.component_digest,
            output.display()
        );
        Ok(ExitCode::SUCCESS)
    }
}
