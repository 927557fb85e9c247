//! Loading a bundle: every check runs before anything is instantiated.
//!
//! For each provider: fetch (size cap, pinned and locked digests), read the embedded manifest,
//! check the component against the host world its manifest names (semver) and the manifest
//! against the component, check the bundle's grants against what the component imports (an
//! ungranted import refuses the provider; only granted imports are linked), compile through the
//! cache, and pre-instantiate. For each tenant routed to it: the configuration validates against
//! the manifest's `config_schema`, and every required secret is bound. Every problem is
//! collected, each naming the provider (and tenant), what was expected and what was found.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use greentic_interfaces::{Contracts, inspect_component};
use wasmtime::component::Linker;

use crate::bundle::{Bundle, KeyRole, Lock, LockEntry, ProviderFacts, check_routes, check_tenant};
use crate::compile::PoolSizing;
use crate::compile::{CacheKey, CompileCache, HostEngine};
use crate::instance::InstanceData;
pub use crate::provider::LoadedProvider;
use crate::source::{
    ComponentSource, RegistrySource, SourceRef, artifact_reference, resolve_source,
};
use anyhow::Context as _;
use greentic_capabilities::http::outbound::OutboundPolicy;
use greentic_capabilities::secrets::SecretBackend;
use greentic_capabilities::{Backends, Linked};

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

/// How to load.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Accept components whose digest differs from the lock, and re-lock them.
    pub update_lock: bool,
    /// Use only the local cache for registry and layout providers: the digest pinned in the
    /// lock, and the artifact and signatures cached by an earlier online load.
    pub offline: bool,
    /// The bundle is a fleet's published revision: every provider must come from a registry
    /// or layout, signed by a provider key (`allow_unsigned` and file sources are refused: a
    /// publisher's key alone must not make hosts run unsigned code).
    pub published: bool,
    /// The bundle is a fleet host's bootstrap bundle (`run --cluster`, or `[cluster].url`):
    /// it may name no providers or tenants, since the host serves what the fleet publishes.
    pub bootstrap: bool,
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
        let outcome = load_one(
            bundle, engine, contracts, &cache, old_lock, options, name, section,
        );
        if let Err(e) = &outcome {
            crate::audit::record(
                "provider.refused",
                serde_json::json!({ "provider": name, "source": section.source, "problems": e }),
            );
        }
        out.insert(name.clone(), outcome);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn load_one(
    bundle: &Bundle,
    engine: &HostEngine,
    contracts: &Contracts,
    cache: &CompileCache,
    old_lock: &Lock,
    options: LoadOptions,
    name: &str,
    section: &crate::bundle::ProviderSection,
) -> Result<LoadedProvider, Vec<String>> {
    let fail = |msg: String| vec![format!("provider `{name}`: {msg}")];
    let blob_cache = blob_cache_dir(bundle);
    let locked = old_lock
        .providers
        .get(name)
        .filter(|l| l.source == section.source && !options.update_lock);
    let mut manifest_digest = None;
    let mut signer_key_id = None;
    // The reference pinned to the resolved digest: where attestations are looked up.
    let mut pinned = None;
    if options.published {
        if matches!(
            SourceRef::parse(&bundle.dir, &section.source),
            SourceRef::File(_)
        ) {
            return Err(fail(format!(
                "source `{}` is a file; a fleet's published revision runs only providers from a registry or OCI layout, signed by a provider key: push it and sign it (greentic-host push, greentic-host sign)",
                section.source
            )));
        }
        if section.allow_unsigned {
            return Err(fail(
                "`allow_unsigned = true` is refused in a fleet's published revision: a publisher's key vouches for the revision, not for the code it runs; sign the provider with a provider key and remove `allow_unsigned`".into(),
            ));
        }
    }
    let source: Box<dyn ComponentSource> = match SourceRef::parse(&bundle.dir, &section.source) {
        SourceRef::File(_) if !section.allow_unsigned => {
            return Err(fail(format!(
                "source `{}` is a file, which cannot carry a signature; push it to a registry and sign it (greentic-host push, greentic-host sign), or set `allow_unsigned = true` in [providers.{name}] to run it unsigned",
                section.source
            )));
        }
        SourceRef::File(_) => {
            crate::audit::record(
                "signature.skipped",
                serde_json::json!({ "provider": name, "source": section.source, "why": "a file source, allow_unsigned = true" }),
            );
            resolve_source(&bundle.dir, &section.source, &blob_cache)
        }
        SourceRef::OciLayout(_) | SourceRef::Registry(_) => {
            let mut reference = artifact_reference(&bundle.dir, &section.source)
                .map_err(|e| fail(e.to_string()))?;
            // What a signature may name, from the source as written (a layout's tag), before
            // the reference is pinned to a digest.
            let identities = reference.accepted_identities();
            if options.offline {
                // Offline, the lock's digest is the only resolution there is.
                match locked.and_then(|l| l.manifest_digest.as_deref()) {
                    Some(d) => reference = reference.with_digest(d),
                    None => {
                        return Err(fail(format!(
                            "offline, but greentic.lock pins no digest for `{}`; run once online first",
                            section.source
                        )));
                    }
                }
            }
            // Resolve the reference once (verifying the signature for that digest).
            let digest = if section.allow_unsigned {
                tracing::warn!(
                    provider = name,
                    "running without a verified signature (allow_unsigned = true)"
                );
                crate::audit::record(
                    "signature.skipped",
                    serde_json::json!({ "provider": name, "source": section.source, "why": "allow_unsigned = true" }),
                );
                resolve_digest(&reference, &blob_cache, options.offline).map_err(fail)?
            } else {
                match verify_signature(
                    bundle,
                    name,
                    section,
                    &reference,
                    &identities,
                    &blob_cache,
                    options.offline,
                ) {
                    Ok((digest, key_id)) => {
                        crate::audit::record(
                            "signature.verified",
                            serde_json::json!({
                                "provider": name,
                                "reference": reference.with_digest(&digest).to_string(),
                                "key_id": key_id,
                            }),
                        );
                        signer_key_id = Some(key_id);
                        digest
                    }
                    Err(why) => {
                        crate::audit::record(
                            "signature.refused",
                            serde_json::json!({ "provider": name, "source": section.source, "why": why }),
                        );
                        return Err(fail(why));
                    }
                }
            };
            if let Some(pinned) = locked.and_then(|l| l.manifest_digest.as_deref())
                && pinned != digest
            {
                return Err(fail(format!(
                    "`{}` now resolves to {digest}, but greentic.lock pins {pinned} (the tag moved); check the new artifact, then run with --update-lock to accept it",
                    section.source
                )));
            }
            manifest_digest = Some(digest.clone());
            pinned = Some(reference.with_digest(&digest));
            // Fetch exactly what was resolved and verified: by digest, never by tag again.
            Box::new(RegistrySource::new(
                reference.with_digest(&digest),
                blob_cache,
                options.offline,
            ))
        }
    };
    let mut expected: Vec<(&str, &str)> = Vec::new();
    if let Some(d) = &section.digest {
        expected.push((d, "pinned by `digest` in greentic.toml"));
    }
    if let Some(locked) = locked {
        expected.push((
            &locked.digest,
            "recorded in greentic.lock; run with --update-lock to accept the new component",
        ));
    }
    let fetched = source
        .fetch(bundle.file.host.max_component_bytes, &expected)
        .map_err(|e| fail(e.to_string()))?;
    let report = inspect_component(contracts, &source.name(), &fetched.bytes)
        .map_err(|e| fail(e.to_string()))?;
    let required = section.required(&bundle.file.trust);
    if !required.is_empty() {
        let Some(pinned) = &pinned else {
            return Err(fail(format!(
                "requires {} attestation(s), but source `{}` is a file, which cannot carry any; push it to a registry and attest it (greentic-host push, greentic-host attest)",
                kind_list(&required),
                section.source
            )));
        };
        for summary in check_attestations(
            bundle,
            name,
            section,
            pinned,
            &blob_cache_dir(bundle),
            options.offline,
            &required,
            &fetched.digest,
        )
        .map_err(fail)?
        {
            tracing::info!(provider = name, "attestation verified: {summary}");
        }
    }

    // Grants against needs: zero trust.
    let grants = &section.grants;
    let mut problems = Vec::new();
    let linked = Linked::of(grants);
    problems.extend(greentic_capabilities::check_needs(
        name,
        grants,
        report.world.imports.iter().map(|i| i.name.as_str()),
        &report.manifest,
    ));
    let outbound = match OutboundPolicy::new(&grants.outbound_hosts) {
        Ok(policy) => policy,
        Err(why) => {
            problems.push(format!("grants.outbound_hosts: {why}"));
            OutboundPolicy::default()
        }
    };
    if !problems.is_empty() {
        return Err(problems
            .into_iter()
            .map(|p| format!("provider `{name}`: {p}"))
            .collect());
    }

    let (component, cache_outcome) = cache
        .load(engine, &fetched.digest, &fetched.bytes)
        .map_err(|e| fail(format!("{e:#}")))?;
    let mut linker = Linker::<InstanceData>::new(&engine.engine);
    greentic_capabilities::add_to_linker(&mut linker, linked)
        .map_err(|e| fail(format!("linking: {e:#}")))?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| fail(format!("cannot be linked with the granted imports: {e:#}")))?;
    let prepared = crate::domains::by_world(&report.host_world)
        .map_err(fail)?
        .prepare(pre)
        .map_err(|e| fail(format!("{e:#}")))?;
    let granted_secrets: BTreeSet<String> = grants
        .secrets
        .iter()
        .filter(|s| report.manifest.declares_secret(s))
        .cloned()
        .collect();
    tracing::info!(
        provider = name, digest = %fetched.digest, world = %report.host_world,
        cache = ?cache_outcome, "provider loaded"
    );
    crate::audit::record(
        "provider.resolved",
        serde_json::json!({
            "provider": name,
            "source": section.source,
            "manifest_digest": manifest_digest,
            "digest": fetched.digest,
            "world": report.host_world,
            "manifest": format!("{} {}", report.manifest.name, report.manifest.version),
        }),
    );
    let circuit = format!("{name}@{}", fetched.digest);
    Ok(LoadedProvider {
        name: name.to_string(),
        source: section.source.clone(),
        digest: fetched.digest,
        manifest_digest,
        world: report.host_world,
        manifest: report.manifest,
        prepared,
        outbound,
        granted_secrets: Arc::new(granted_secrets),
        linked,
        circuit,
        cache: cache_outcome,
        signer_key_id,
    })
}

/// Resolves a registry or layout reference to its manifest digest (no signature check).
fn resolve_digest(
    reference: &greentic_registry::ArtifactRef,
    blob_cache: &std::path::Path,
    offline: bool,
) -> Result<String, String> {
    greentic_capabilities::blocking::run("resolving the reference", |rt| {
        let target = crate::source::open_target(reference, blob_cache, offline)?;
        rt.block_on(target.resolve(reference))
            .map_err(|e| e.to_string())
    })
}

fn blob_cache_dir(bundle: &Bundle) -> std::path::PathBuf {
    bundle.cache_dir().join("blobs")
}

fn kind_list(kinds: &[crate::attestation::Kind]) -> String {
    kinds
        .iter()
        .map(|k| format!("`{}`", k.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks every required attestation of the provider: for each kind, the newest attestation a
/// key trusted for this provider signed about exactly `reference`'s digest must hold for the
/// component `component_digest`. Returns what each certifies. Fails closed.
#[allow(clippy::too_many_arguments)]
fn check_attestations(
    bundle: &Bundle,
    name: &str,
    section: &crate::bundle::ProviderSection,
    reference: &greentic_registry::ArtifactRef,
    blob_cache: &std::path::Path,
    offline: bool,
    kinds: &[crate::attestation::Kind],
    component_digest: &str,
) -> Result<Vec<String>, String> {
    let keys = trusted_keys(bundle, name, section, KeyRole::Attestation)?;
    greentic_capabilities::blocking::run("the attestation check", |rt| {
        let target = crate::source::open_target(reference, blob_cache, offline)?;
        let mut summaries = Vec::new();
        for kind in kinds {
            let found = rt
                .block_on(greentic_signing::verify_attestations(
                    &target,
                    reference,
                    &keys,
                    kind.predicate_types(),
                ))
                .map_err(|e| format!("reading its attestations: {e}"))?;
            let Some(latest) = found.latest() else {
                crate::audit::record(
                    "attestation.refused",
                    serde_json::json!({
                        "provider": name,
                        "kind": kind.name(),
                        "reference": reference.to_string(),
                        "why": "none that a trusted key signed about this digest",
                        "refused": found.refused,
                    }),
                );
                let refused = if found.refused.is_empty() {
                    String::new()
                } else {
                    format!(" (refused: {})", found.refused.join("; "))
                };
                return Err(format!(
                    "requires a `{}` attestation, but {reference} has none that a trusted key signed about this digest{refused}; attest it with `greentic-host attest --type {} --key … {reference}`",
                    kind.name(),
                    kind.name()
                ));
            };
            let checked = crate::attestation::check(*kind, &latest.statement, component_digest);
            crate::audit::record(
                if checked.is_ok() {
                    "attestation.verified"
                } else {
                    "attestation.refused"
                },
                serde_json::json!({
                    "provider": name,
                    "kind": kind.name(),
                    "reference": reference.to_string(),
                    "key_id": latest.key_id,
                    "envelope": latest.envelope_digest,
                    "result": match &checked { Ok(summary) => summary, Err(why) => why },
                }),
            );
            let summary = checked.map_err(|why| {
                format!(
                    "its newest `{}` attestation (signed by key {}) is refused: {why}",
                    kind.name(),
                    short_key(&latest.key_id)
                )
            })?;
            summaries.push(format!(
                "{}: {summary}, signed by key {}",
                kind.name(),
                short_key(&latest.key_id)
            ));
        }
        Ok(summaries)
    })
}

/// The first 12 hex digits of a key id, for messages.
fn short_key(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The keys the bundle trusts for `role` on provider `name`: its `trusted_keys` that have the
/// role, else every key that has it. A key trusted for other roles only (a publisher's key) is
/// never among them.
fn trusted_keys(
    bundle: &Bundle,
    name: &str,
    section: &crate::bundle::ProviderSection,
    role: KeyRole,
) -> Result<greentic_signing::TrustedKeys, String> {
    let what = match role {
        KeyRole::Provider => "signature",
        _ => "attestations",
    };
    let file = &bundle.file;
    let key_names: Vec<&String> = if section.trusted_keys.is_empty() {
        file.keys_for(role)
    } else {
        section
            .trusted_keys
            .iter()
            .filter(|k| file.key_roles(k).contains(&role))
            .collect()
    };
    if key_names.is_empty() {
        let others = file.trust.keys.len();
        return Err(format!(
            "no key trusted for the `{}` role to verify the {what} of `{}` with{}; add one to [trust.keys] (cosign public keys, `{{ file = \"…\", roles = [\"{}\"] }}`){}",
            role.name(),
            section.source,
            if others > 0 {
                format!(
                    " ({others} key(s) in [trust.keys], none for this role{})",
                    if section.trusted_keys.is_empty() {
                        ""
                    } else {
                        " among trusted_keys"
                    }
                )
            } else {
                String::new()
            },
            role.name(),
            if role == KeyRole::Provider {
                format!(" or set `allow_unsigned = true` in [providers.{name}]")
            } else {
                String::new()
            }
        ));
    }
    let mut pems = Vec::new();
    for key in key_names {
        let Some(entry) = file.trust.keys.get(key) else {
            return Err(format!(
                "[providers.{name}].trusted_keys names `{key}`, which [trust.keys] does not have"
            ));
        };
        let path = bundle.path(entry.file());
        pems.push(
            std::fs::read_to_string(&path)
                .map_err(|e| format!("trust key `{key}` ({}): {e}", path.display()))?,
        );
    }
    greentic_signing::TrustedKeys::from_pems(&pems).map_err(|e| e.to_string())
}

/// Verifies the provider's signature with the keys the bundle trusts for it; returns the
/// verified manifest digest and the id of the key that signed it. Fails closed: no keys, no
/// signature, or no valid signature.
#[allow(clippy::too_many_arguments)]
fn verify_signature(
    bundle: &Bundle,
    name: &str,
    section: &crate::bundle::ProviderSection,
    reference: &greentic_registry::ArtifactRef,
    own: &[String],
    blob_cache: &std::path::Path,
    offline: bool,
) -> Result<(String, String), String> {
    let keys = trusted_keys(bundle, name, section, KeyRole::Provider)?;
    // The signature must name this source's repository (or a mirror the bundle accepts): a
    // validly signed artifact of another provider, copied under this one's tag, is refused.
    let accepted: Vec<&str> = own
        .iter()
        .map(String::as_str)
        .chain(section.identities.iter().map(String::as_str))
        .collect();
    greentic_capabilities::blocking::run("the signature check", |rt| {
        let target = crate::source::open_target(reference, blob_cache, offline)?;
        let verified = rt
            .block_on(greentic_signing::verify(
                &target,
                reference,
                &keys,
                Some(&accepted),
            ))
            .map_err(|e| format!("signature check failed: {e}"))?;
        Ok((verified.digest, verified.key_id))
    })
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
    for domain in crate::domains::DOMAINS {
        problems.extend(domain.check(bundle, &facts, backend));
    }
}

/// The pool `bundle`'s tenants need: every slot a call may hold — each tenant's invokes, and its
/// webhook deliveries per provider routed to it (which of them are webhook providers is known
/// only after loading) — and the largest memory any tenant may use.
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
    PoolSizing {
        instances: tenants
            .iter()
            .map(|(id, t)| t.limits.max_concurrent + t.limits.webhook_max_concurrent * routed(id))
            .sum::<u32>()
            + 8,
        max_memory_bytes: tenants
            .values()
            .map(|t| t.limits.memory_bytes)
            .max()
            .unwrap_or(64 << 20),
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
    let backends = Backends::open(&bundle.file.sections(), &bundle.dir, None)?;
    let sizing = pool_sizing(&bundle);
    let engine = make_engine(sizing).context("creating the Wasmtime engine")?;
    let loaded = load(&bundle, &engine, backends.secrets.as_ref(), options)?;
    Ok(LoadedBundle {
        bundle,
        engine,
        loaded,
        backends,
    })
}
