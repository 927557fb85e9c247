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
    /// Print the result as JSON: `{ok, providers: [{name, digest, world, cache}], tenants,
    /// routes, lock_changed, problems: [...]}`.
    #[arg(long)]
    json: bool,
}

impl Check {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let loaded = match crate::loader::load_bundle(
            &self.bundle,
            crate::loader::LoadOptions {
                update_lock: false,
                offline: self.offline,
                ..Default::default()
            },
        ) {
            Ok(l) => l,
            Err(e) => {
                let problems = problems(&e);
                if self.json {
                    outln!(
                        "{}",
                        serde_json::to_string_pretty(&serde_json::json!({
                            "ok": false,
                            "problems": problems,
                        }))?
                    );
                } else {
                    eprintln!("error: {}", super::describe(&e));
                    if problems.len() > 1 {
                        eprintln!(
                            "{} problems; `greentic-host run` refuses this bundle until they are fixed",
                            problems.len()
                        );
                    }
                }
                return Ok(ExitCode::from(1));
            }
        };
        let providers = &loaded.loaded.providers;
        if self.json {
            outln!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "ok": true,
                    "providers": providers.values().map(|p| serde_json::json!({
                        "name": p.name,
                        "digest": p.digest,
                        "world": p.world,
                        "cache": format!("{:?}", p.cache).to_lowercase(),
                    })).collect::<Vec<_>>(),
                    "tenants": loaded.bundle.file.tenants.len(),
                    "routes": loaded.bundle.file.routes.len(),
                    "lock_changed": loaded.loaded.lock_changed,
                    "problems": [],
                }))?
            );
            return Ok(ExitCode::SUCCESS);
        }
        for p in providers.values() {
            outln!(
                "ok  {:<20} {}  {}  (cache: {:?})",
                p.name,
                p.digest,
                p.world,
                p.cache
            );
        }
        outln!(
            "{} providers, {} tenants, {} routes: all checks passed (allocation: {:?})",
            providers.len(),
            loaded.bundle.file.tenants.len(),
            loaded.bundle.file.routes.len(),
            loaded.engine.allocation
        );
        if loaded.loaded.lock_changed {
            outln!("note: greentic.lock would change; `greentic-host run` writes it");
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Every problem behind `e`: a load's list, or the one error.
fn problems(e: &anyhow::Error) -> Vec<String> {
    match e.downcast_ref::<crate::loader::LoadError>() {
        Some(load) => load.problems.clone(),
        None => vec![super::describe(e)],
    }
}
