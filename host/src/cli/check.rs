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
        // What `run` refuses before it serves, beyond loading: a fleet member that trusts no
        // publisher, durable routes without a fleet.
        let serving = crate::bundle::Bundle::load(&self.bundle)
            .map(|b| serving_problems(&b))
            .unwrap_or_default();
        let loaded = crate::loader::load_bundle(
            &self.bundle,
            crate::loader::LoadOptions {
                update_lock: false,
                offline: self.offline,
                ..Default::default()
            },
        );
        let loaded = match (loaded, serving.is_empty()) {
            (Ok(l), true) => l,
            (loaded, _) => {
                let e = match loaded {
                    Ok(_) => anyhow::Error::new(crate::loader::LoadError { problems: serving }),
                    Err(e) => match e.downcast::<crate::loader::LoadError>() {
                        Ok(mut load) => {
                            load.problems.extend(serving);
                            anyhow::Error::new(load)
                        }
                        Err(e) if serving.is_empty() => e,
                        Err(e) => {
                            let mut all = vec![super::describe(&e)];
                            all.extend(serving);
                            anyhow::Error::new(crate::loader::LoadError { problems: all })
                        }
                    },
                };
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

/// What `run` refuses a loaded bundle for before it serves: joining a fleet without a publisher
/// it trusts, or durable routes on a host that joins none.
fn serving_problems(bundle: &crate::bundle::Bundle) -> Vec<String> {
    let mut out = Vec::new();
    // The listeners' certificates and keys, as `run` reads them before it listens.
    for (section, what) in [
        (&bundle.file.host.tls, "[host.tls]"),
        (&bundle.file.host.admin_tls, "[host.admin_tls]"),
    ] {
        if let Err(e) = super::run::listener_tls(bundle, section, what) {
            out.push(format!("{e:#}"));
        }
    }
    // The outbound private PKIs: files read and checked as when the host connects.
    if let Err(e) = crate::telemetry::otlp_client(&bundle.file.telemetry, &bundle.dir) {
        out.push(format!("{e:#}"));
    }
    if let Some(tls) = &bundle.file.cluster.tls
        && let Err(e) = crate::tls::client_config(&tls.resolved(|p| bundle.path(p)), &[])
    {
        out.push(format!("[cluster].tls: {e}"));
    }
    if bundle.file.cluster.url.is_some() {
        if let Err(e) = crate::fleet::revisions::publisher_keys(bundle) {
            out.push(format!("[cluster]: {e}"));
        }
    } else if bundle.file.routes.iter().any(|r| r.durable) {
        out.push("a route has `durable = true`, which queues deliveries in the fleet's JetStream: run with --cluster nats://… (or set [cluster].url), or remove it".into());
    }
    out
}

/// Every problem behind `e`: a load's list, or the one error.
fn problems(e: &anyhow::Error) -> Vec<String> {
    match e.downcast_ref::<crate::loader::LoadError>() {
        Some(load) => load.problems.clone(),
        None => vec![super::describe(e)],
    }
}
