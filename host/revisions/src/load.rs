//! Loading a bundle: every check runs before anything is instantiated.
//!
//! For each provider: fetch (size cap, pinned and locked digests), read the embedded manifest,
//! check the component against the host world its manifest names (semver) and the manifest
//! against the component, check the bundle's grants against what the component imports (an
//! ungranted import refuses the provider; only granted imports are linked), compile through the
//! cache, and pre-instantiate. For each tenant routed to it: the configuration validates against
//! the manifest's `config_schema`, and every required secret is bound. Every problem is
//! collected, each naming the provider (and tenant), what was expected and what was found.

pub use crate::options::LoadOptions;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use greentic_bundle::{Bundle, Lock, LockEntry, ProviderFacts, check_routes, check_tenant};
use greentic_capabilities::Backends;
use greentic_capabilities::secrets::SecretBackend;
use greentic_engine::compile::{CacheKey, CompileCache, HostEngine, PoolSizing};
use greentic_engine::domains::DOMAINS;
use greentic_engine::provider::LoadedProvider;
use greentic_interfaces::Contracts;

use crate::provider::load_provider;

/// Why a bundle did not load.
#[derive(Debug, thiserror::Error)]
#[error("the bundle does not load:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct LoadError {
    /// Every problem found.
    pub problems: Vec<String>,
}

/// What loading produced.
pub struct Loaded {
    /// Providers by name.
    pub providers: BTreeMap<String, Arc<LoadedProvider>>,
    /// The lock as it should now be.
    pub lock: Lock,
    /// Whether the lock changed.
    pub lock_changed: bool,
}

/// Loads and checks every provider of `bundle`, against the bundle directory's lock.
pub fn load(
    bundle: &Bundle,
    engine: &HostEngine,
    backend: &dyn SecretBackend,
    options: LoadOptions,
) -> Result<Loaded, LoadError> {
    let old_lock = Lock::load(&bundle.dir).map_err(|e| LoadError {
        problems: vec![e.to_string()],
    })?;
    load_locked(bundle, engine, backend, options, &old_lock)
}

/// Loads and checks every provider of `bundle`, each held to the digest `old_lock` records
/// for its source (a fleet's published revision carries its own lock).
pub fn load_locked(
    bundle: &Bundle,
    engine: &HostEngine,
    backend: &dyn SecretBackend,
    options: LoadOptions,
    old_lock: &Lock,
) -> Result<Loaded, LoadError> {
    let mut problems = Vec::new();
    // A published revision may be empty (it is applied like any other); a bundle served on its
    // own may not.
    if !options.published && !options.bootstrap && bundle.file.cluster.url.is_none() {
        problems.extend(bundle.file.standalone_problems());
    }
    let mut lock = Lock::default();
    let mut providers = BTreeMap::new();
    for (name, outcome) in load_each(bundle, engine, options, old_lock)? {
        match outcome {
            Ok(p) => {
                lock.providers.insert(
                    name.clone(),
                    LockEntry {
                        source: bundle.file.providers[&name].source.clone(),
                        digest: p.digest.clone(),
                        manifest_digest: p.manifest_digest.clone(),
                    },
                );
                providers.insert(name, Arc::new(p));
            }
            Err(mut e) => problems.append(&mut e),
        }
    }
    check_tenants(bundle, &providers, backend, &mut problems);
    if !problems.is_empty() {
        return Err(LoadError { problems });
    }
    let lock_changed = lock.providers != old_lock.providers;
    Ok(Loaded {
        providers,
        lock,
        lock_changed,
    })
}

/// Loads and checks each provider of `bundle` on its own — fetched, verified, its attestations
/// and WIT checked against its grants, compiled — and says for each what became of it, so a
/// control plane can tell which provider failed and keep the others. Tenants and routes are
/// not checked here ([`check_tenant`], [`check_routes`]).
pub fn load_each(
    bundle: &Bundle,
    engine: &HostEngine,
    options: LoadOptions,
    old_lock: &Lock,
) -> Result<BTreeMap<String, Result<LoadedProvider, Vec<String>>>, LoadError> {
    let contracts = Contracts::embedded().map_err(|e| LoadError {
        problems: vec![format!("the host's own WIT does not load: {e}")],
    })?;
    let key_file = bundle
        .file
        .host
        .cache_key_file
        .as_deref()
        .map(|p| bundle.path(p));
    let cache = CompileCache::new(bundle.cache_dir(), CacheKey::open(key_file.as_deref()));
    let mut out = BTreeMap::new();
    for (name, section) in &bundle.file.providers {
        let outcome = load_provider(
            bundle, engine, contracts, &cache, old_lock, options, name, section,
        );
        if let Err(e) = &outcome {
            greentic_audit::record(
                "provider.refused",
                serde_json::json!({ "provider": name, "source": section.source, "problems": e }),
            );
        }
        out.insert(name.clone(), outcome);
    }
    Ok(out)
}

/// Tenants routed to each provider: config validates, required secrets are bound, routes name
/// capabilities the provider has.
fn check_tenants(
    bundle: &Bundle,
    providers: &BTreeMap<String, Arc<LoadedProvider>>,
    backend: &dyn SecretBackend,
    problems: &mut Vec<String>,
) {
    let facts: BTreeMap<String, ProviderFacts> = providers
        .iter()
        .map(|(name, p)| (name.clone(), p.facts()))
        .collect();
    problems.extend(check_routes(&bundle.file.routes, &facts));
    for (tenant_id, tenant) in &bundle.file.tenants {
        problems.extend(check_tenant(
            tenant_id,
            tenant,
            &bundle.file.routes,
            &facts,
            backend,
        ));
    }
    // What each domain checks of the bundle (e.g. the timer domain's schedules).
    for domain in DOMAINS {
        problems.extend(domain.check(bundle, &facts, backend));
    }
}

/// The pool `bundle`'s tenants need: `[host] max_in_flight`, by default every slot a call may
/// hold — each tenant's invokes, and its webhook deliveries per provider routed to it (which of
/// them are webhook providers is known only after loading) — but no more than the host can hold
/// ([`PoolSizing::supported_in_flight`]); and the largest memory any tenant may use.
pub fn pool_sizing(bundle: &Bundle) -> PoolSizing {
    let tenants = &bundle.file.tenants;
    let routed = |tenant: &str| {
        bundle
            .file
            .routes
            .iter()
            .filter(|r| r.tenant == tenant || r.tenant == "*")
            .map(|r| r.provider.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u32
    };
    let derived = || {
        tenants
            .iter()
            .map(|(id, t)| t.limits.max_concurrent + t.limits.webhook_max_concurrent * routed(id))
            .fold(8u32, u32::saturating_add)
    };
    let max_memory_bytes = tenants
        .values()
        .map(|t| t.limits.memory_bytes)
        .max()
        .unwrap_or(64 << 20);
    PoolSizing {
        instances: bundle
            .file
            .host
            .max_in_flight
            .unwrap_or_else(|| derived().min(PoolSizing::supported_in_flight(max_memory_bytes)))
            .max(1),
        max_memory_bytes,
        metering: bundle.file.host.metering,
    }
}

/// A bundle with its providers loaded and checked.
pub struct LoadedBundle {
    /// The bundle.
    pub bundle: Bundle,
    /// The engine, its pool sized from the tenants' limits.
    pub engine: HostEngine,
    /// The checked providers.
    pub loaded: Loaded,
    /// What the capabilities opened (secrets, state), from the bundle's sections.
    pub backends: Backends,
    /// The callers' keys, from `[auth]`.
    pub auth: greentic_auth::Authenticator,
}

/// Reads the bundle at `path`, opens its capabilities (secrets, state), sizes the engine's pool from the
/// tenants' limits, and [`load`]s every provider.
pub fn load_bundle(path: &Path, options: LoadOptions) -> anyhow::Result<LoadedBundle> {
    load_bundle_with(path, options, HostEngine::new)
}

/// [`load_bundle`] on an engine `make_engine` builds from the pool sizing the tenants need.
pub fn load_bundle_with(
    path: &Path,
    options: LoadOptions,
    make_engine: impl FnOnce(PoolSizing) -> anyhow::Result<HostEngine>,
) -> anyhow::Result<LoadedBundle> {
    let bundle = Bundle::load(path)?;
    // Every problem `run` would stop on is reported at once: the callers' keys, the
    // capabilities' backends and every provider.
    let mut problems = Vec::new();
    let auth = match greentic_auth::Authenticator::from_bundle(&bundle) {
        Ok(auth) => Some(auth),
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let backends = match Backends::open(&bundle.file.sections(), &bundle.dir, None) {
        Ok(b) => Some(b),
        Err(e) => {
            problems.push(format!("{e:#}"));
            None
        }
    };
    let sizing = pool_sizing(&bundle);
    let engine = make_engine(sizing).context("creating the Wasmtime engine")?;
    let loaded = match &backends {
        Some(b) => match load(&bundle, &engine, b.secrets().as_ref(), options) {
            Ok(loaded) => Some(loaded),
            Err(mut e) => {
                problems.append(&mut e.problems);
                None
            }
        },
        None => None,
    };
    let (Some(backends), Some(loaded), Some(auth), true) =
        (backends, loaded, auth, problems.is_empty())
    else {
        return Err(LoadError { problems }.into());
    };
    Ok(LoadedBundle {
        auth,
        bundle,
        engine,
        loaded,
        backends,
    })
}
