//! `greentic-host check BUNDLE`: every load-time check, no serving.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// Run every load-time check of a bundle — manifests, WIT compatibility, grants, tenant
/// configuration, secret bindings, routes — compile the providers, and exit 0 if all pass.
///
/// Nothing is served and the lock file is not written.
#[derive(Debug, Args)]
pub struct Check {
    /// The bundle directory (with greentic.toml) or the greentic.toml file.
    bundle: PathBuf,
    /// No network: registry and layout providers come from the lock's digests and the cache.
    #[arg(long)]
    offline: bool,
}

impl Check {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let loaded = match greentic_host::loader::load_bundle(
            &self.bundle,
            greentic_host::loader::LoadOptions {
                update_lock: false,
                offline: self.offline,
                ..Default::default()
            },
        ) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: {e:#}");
                return Ok(ExitCode::from(1));
            }
        };
        for p in loaded.loaded.providers.values() {
            println!(
                "ok  {:<20} {}  {}  (cache: {:?})",
                p.name, p.digest, p.world, p.cache
            );
        }
        println!(
            "{} providers, {} tenants, {} routes: all checks passed (allocation: {:?})",
            loaded.loaded.providers.len(),
            loaded.bundle.file.tenants.len(),
            loaded.bundle.file.routes.len(),
            loaded.engine.allocation
        );
        if loaded.loaded.lock_changed {
            println!("note: greentic.lock would change; `greentic-host run` writes it");
        }
        Ok(ExitCode::SUCCESS)
    }
}
