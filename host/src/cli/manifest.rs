//! `greentic-host manifest FILE...`: validate provider manifests before building.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use greentic_manifest::{ProviderManifest, extract_manifest};

/// Validate provider manifests: `provider.json` files (as a provider author writes them) or the
/// manifest embedded in built components (`.wasm`).
///
/// Every problem is reported with the file, the field and the fix. Exits 1 if any file fails.
#[derive(Debug, Args)]
pub struct Manifest {
    /// `provider.json` files or `.wasm` components.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print one JSON array, an entry per file: `{file, ok, manifest}` or `{file, ok, problems:
    /// [{field, problem, fix}]}`.
    #[arg(long)]
    json: bool,
}

impl Manifest {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let mut failed = false;
        let mut report = Vec::new();
        for file in &self.files {
            let name = file.display().to_string();
            match check(file, &name) {
                Ok(m) if self.json => report.push(serde_json::json!({
                    "file": name, "ok": true, "manifest": m,
                })),
                Ok(m) => outln!("ok    {name}: {} {} ({})", m.name, m.version, m.compat.wit),
                Err(e) => {
                    failed = true;
                    if self.json {
                        report.push(serde_json::json!({
                            "file": name, "ok": false, "problems": problems(&e),
                        }));
                    } else {
                        eprintln!("error {}", super::describe(&e));
                    }
                }
            }
        }
        if self.json {
            outln!("{}", serde_json::to_string_pretty(&report)?);
        }
        Ok(if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// `e`'s problems as `{field, problem, fix}` objects: a manifest's field problems, else the
/// error itself.
fn problems(e: &anyhow::Error) -> Vec<serde_json::Value> {
    match e.downcast_ref::<greentic_manifest::ManifestError>() {
        Some(m) if !m.problems().is_empty() => m
            .problems()
            .iter()
            .map(|p| serde_json::json!({"field": p.field, "problem": p.problem, "fix": p.fix}))
            .collect(),
        _ => vec![serde_json::json!({"field": "", "problem": super::describe(e), "fix": ""})],
    }
}

fn check(file: &std::path::Path, name: &str) -> anyhow::Result<ProviderManifest> {
    let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    if bytes.starts_with(b"\0asm") {
        Ok(extract_manifest(name, &bytes)?)
    } else {
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{name}: not UTF-8 text; a provider.json is JSON"))?;
        Ok(ProviderManifest::from_json(name, &text)?)
    }
}
