//! `greentic-host inspect FILE`: what a component is, without running it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use greentic_interfaces::{ComponentReport, Contracts, inspect_component};

/// Show a component's world, imports, exports, digest and embedded manifest, after the same
/// load-time checks the host runs (manifest valid, world compatible, manifest truthful).
/// Given a reference (`HOST[:PORT]/REPO:TAG`, `…@sha256:…`, `oci:DIR:TAG`) instead of a file,
/// show the artifact's manifest, config, annotations and the signatures found for it.
///
/// Exits 1 and says what is wrong if any check fails.
#[derive(Debug, Args)]
pub struct Inspect {
    /// The component file (`.wasm`) or an artifact reference.
    file: PathBuf,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl Inspect {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let arg = self.file.display().to_string();
        if !self.file.exists()
            && let Ok(reference) = arg.parse::<greentic_registry::ArtifactRef>()
        {
            return inspect_reference(&reference);
        }
        let bytes = std::fs::read(&self.file)
            .with_context(|| format!("reading {}", self.file.display()))?;
        let contracts = Contracts::embedded().map_err(|e| anyhow::anyhow!("{e}"))?;
        let name = self.file.display().to_string();
        let report = inspect_component(contracts, &name, &bytes)?;
        if self.json {
            outln!("{}", serde_json::to_string_pretty(&to_json(&report))?);
        } else {
            out!("{}", to_text(&report));
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn to_json(r: &ComponentReport) -> serde_json::Value {
    serde_json::json!({
        "file": r.file,
        "digest": r.digest,
        "size": r.size,
        "world": r.host_world,
        "imports": r.world.imports.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        "exports": r.world.exports.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        "manifest": r.manifest,
    })
}

fn to_text(r: &ComponentReport) -> String {
    let mut out = String::new();
    out.push_str(&format!("component  {}\n", r.file));
    out.push_str(&format!("digest     {}\n", r.digest));
    out.push_str(&format!("size       {} bytes\n", r.size));
    out.push_str(&format!(
        "provider   {} {} ({})\n",
        r.manifest.name, r.manifest.version, r.manifest.domain
    ));
    out.push_str(&format!("world      {}\n", r.host_world));
    out.push_str("imports\n");
    for item in &r.world.imports {
        out.push_str(&format!("  {item}\n"));
    }
    out.push_str("exports\n");
    for item in &r.world.exports {
        out.push_str(&format!("  {item}\n"));
    }
    out.push_str("manifest\n");
    for line in r.manifest.to_json_pretty().lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

fn inspect_reference(reference: &greentic_registry::ArtifactRef) -> anyhow::Result<ExitCode> {
    use greentic_registry::{OCI_MANIFEST_MEDIA_TYPE, RegistryError, Target, validate_manifest};
    let target = Target::open(reference, &Default::default())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let digest = target.resolve(reference).await?;
        let pinned = reference.with_digest(&digest);
        let manifest_bytes = target
            .fetch_manifest(&pinned, &digest, &[OCI_MANIFEST_MEDIA_TYPE])
            .await?;
        let (manifest, descriptors) = validate_manifest(&pinned.to_string(), &manifest_bytes)?;
        let config: serde_json::Value = serde_json::from_slice(
            &target
                .fetch_blob(
                    &pinned,
                    &descriptors.config,
                    "the config",
                    greentic_registry::MAX_CONFIG_BYTES,
                )
                .await?,
        )?;
        let sig_ref = reference.with_tag(&greentic_signing::signature_tag(&digest));
        let signatures = match target.resolve(&sig_ref).await {
            Ok(sig_digest) => {
                let sig: serde_json::Value = serde_json::from_slice(
                    &target
                        .fetch_manifest(&sig_ref, &sig_digest, &[OCI_MANIFEST_MEDIA_TYPE])
                        .await?,
                )?;
                sig["layers"].as_array().map_or(0, Vec::len)
            }
            Err(RegistryError::NotFound { .. }) => 0,
            Err(e) => return Err(anyhow::Error::from(e)),
        };
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "reference": pinned.to_string(),
                "digest": digest,
                "manifest": manifest,
                "config": config,
                "annotations": manifest["annotations"],
                "signatures": {
                    "tag": greentic_signing::signature_tag(&digest),
                    "count": signatures,
                    "verified": false,
                    "note": "verify with `greentic-host verify --key cosign.pub REF`",
                },
            }))?
        );
        Ok(ExitCode::SUCCESS)
    })
}
