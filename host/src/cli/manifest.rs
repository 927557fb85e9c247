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
}

impl Manifest {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let mut failed = false;
        for file in &self.files {
            let name = file.display().to_string();
            match check(file, &name) {
                Ok(m) => println!("ok    {name}: {} {} ({})", m.name, m.version, m.compat.wit),
                Err(e) => {
                    failed = true;
                    eprintln!("error {e:#}");
                }
            }
        }
        Ok(if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
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
