//! One provider of a bundle, loaded: what trust fetched and verified, inspected, granted,
//! compiled, linked and prepared for its domain.

use std::collections::BTreeSet;
use std::sync::Arc;

use greentic_bundle::{Bundle, Grants, Lock, ProviderSection};
use greentic_capabilities::Linked;
use greentic_capabilities::outbound::OutboundPolicy;
use greentic_engine::compile::{CompileCache, HostEngine};
use greentic_engine::domains::by_world;
use greentic_engine::instance::InstanceData;
use greentic_engine::provider::LoadedProvider;
use greentic_interfaces::{ComponentReport, Contracts, inspect_component};
use greentic_trust::FetchOptions;
use wasmtime::component::Linker;

use crate::options::LoadOptions;

/// Loads provider `name`: its component fetched and verified (trust), inspected against the
/// host world its manifest names, its attestations checked, its imports held to its grants,
/// then compiled through the cache, linked with what it is granted and prepared for its domain.
#[allow(clippy::too_many_arguments)]
pub(crate) fn load_provider(
    bundle: &Bundle,
    engine: &HostEngine,
    contracts: &Contracts,
    cache: &CompileCache,
    old_lock: &Lock,
    options: LoadOptions,
    name: &str,
    section: &ProviderSection,
) -> Result<LoadedProvider, Vec<String>> {
    let fail = |msg: String| vec![format!("provider `{name}`: {msg}")];
    let locked = old_lock
        .providers
        .get(name)
        .filter(|l| l.source == section.source && !options.update_lock);
    if section.form != greentic_bundle::ProviderForm::Wasm {
        return load_outside(bundle, contracts, locked, name, section);
    }
    let fetch = FetchOptions {
        offline: options.offline,
        published: options.published,
    };
    let verified = greentic_trust::fetch(bundle, name, section, locked, fetch).map_err(fail)?;
    let report = inspect_component(contracts, &verified.source, &verified.fetched.bytes)
        .map_err(|e| fail(e.to_string()))?;
    for summary in
        greentic_trust::check_attestations(bundle, name, section, &verified, options.offline)
            .map_err(fail)?
    {
        tracing::info!(provider = name, "attestation verified: {summary}");
    }

    let (linked, outbound) = grant(name, &section.grants, &report)?;
    let (component, cache_outcome) = cache
        .load(engine, &verified.fetched.digest, &verified.fetched.bytes)
        .map_err(|e| fail(format!("{e:#}")))?;
    let mut linker = Linker::<InstanceData>::new(&engine.engine);
    greentic_capabilities::add_to_linker(&mut linker, linked)
        .map_err(|e| fail(format!("linking: {e:#}")))?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| fail(format!("cannot be linked with the granted imports: {e:#}")))?;
    let prepared = by_world(&report.host_world)
        .map_err(fail)?
        .prepare(pre)
        .map_err(|e| fail(format!("{e:#}")))?;
    let granted_secrets: BTreeSet<String> = section
        .grants
        .secrets
        .iter()
        .filter(|s| report.manifest.declares_secret(s))
        .cloned()
        .collect();
    tracing::info!(
        provider = name, digest = %verified.fetched.digest, world = %report.host_world,
        cache = ?cache_outcome, "provider loaded"
    );
    greentic_audit::record(
        "provider.resolved",
        serde_json::json!({
            "provider": name,
            "source": section.source,
            "manifest_digest": verified.manifest_digest,
            "digest": verified.fetched.digest,
            "world": report.host_world,
            "manifest": format!("{} {}", report.manifest.name, report.manifest.version),
        }),
    );
    let circuit = format!("{name}@{}", verified.fetched.digest);
    let reuse = !report.manifest.instances.is_per_call() && !section.fresh_instances;
    Ok(LoadedProvider {
        name: name.to_string(),
        source: section.source.clone(),
        digest: verified.fetched.digest,
        manifest_digest: verified.manifest_digest,
        world: report.host_world,
        manifest: report.manifest,
        prepared,
        outbound,
        granted_secrets: Arc::new(granted_secrets),
        linked,
        circuit,
        cache: cache_outcome,
        signer_key_id: verified.signer_key_id,
        reuse,
        remote: None,
        native: false,
    })
}

/// A provider that is no component: where its calls go.
enum Outside {
    /// Over gRPC, to a sidecar or a gateway.
    Remote(greentic_remote::LinkConfig),
    /// In-process, to a Rust crate compiled into this binary.
    Native(&'static greentic_interfaces::native::Registration),
}

/// Loads provider `name` that is no component — remote (connected now, its certificate held to
/// `identity`, asked for its manifest) or native (its registration found in this binary) —
/// with its manifest checked as an embedded one is (parsed, its world one this host runs, its
/// grants backed by it) and pinned by digest: a manifest that differs from the lock's (or from
/// `digest`) is refused until `--update-lock`, like a moved tag.
fn load_outside(
    bundle: &Bundle,
    contracts: &Contracts,
    locked: Option<&greentic_bundle::LockEntry>,
    name: &str,
    section: &ProviderSection,
) -> Result<LoadedProvider, Vec<String>> {
    let fail = |msg: String| vec![format!("provider `{name}`: {msg}")];
    let form = section.form.name();
    let (json, outside) = if section.form == greentic_bundle::ProviderForm::Native {
        let registered = section.source.strip_prefix("native:").unwrap_or_default();
        let registration = greentic_interfaces::native::find(registered).ok_or_else(|| {
            let all = greentic_interfaces::native::registered();
            fail(format!(
                "no native provider `{registered}` is compiled into this host (it has: {}); build the host with the crate that registers it, or run the provider as a component or a sidecar",
                if all.is_empty() {
                    "none".to_string()
                } else {
                    all.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
                }
            ))
        })?;
        (
            registration.manifest.to_string(),
            Outside::Native(registration),
        )
    } else {
        let config = greentic_remote::LinkConfig {
            endpoint: section.source.clone(),
            tls: section.tls.as_ref().map(|t| t.resolved(|p| bundle.path(p))),
            identity: section.identity.clone(),
            allow_plaintext: section.allow_plaintext,
            max_message_bytes: bundle.file.host.max_body_bytes,
        };
        if let Some(problem) = greentic_remote::endpoint_problem(&config) {
            return Err(fail(problem));
        }
        // Where it will call back: refused now, not at its first call.
        greentic_remote::callbacks::CallbackConfig::from_env().map_err(fail)?;
        let json = greentic_capabilities::blocking::run("describing the remote provider", |rt| {
            rt.block_on(async {
                let link = greentic_remote::RemoteLink::connect(&config).await?;
                link.describe()
                    .await
                    .map_err(|e| format!("asking {} for its manifest: {e}", section.source))
            })
        })
        .map_err(fail)?;
        (json, Outside::Remote(config))
    };
    let digest = format!(
        "sha256:{}",
        hex::encode(ring::digest::digest(&ring::digest::SHA256, json.as_bytes()))
    );
    for (pinned, why) in [
        (
            section.digest.as_deref(),
            "pinned by `digest` in greentic.toml",
        ),
        (
            locked.map(|l| l.digest.as_str()),
            "recorded in greentic.lock; check the provider's new manifest, then accept it with `run --update-lock` (or `reload --update-lock` on a running host)",
        ),
    ] {
        if let Some(pinned) = pinned
            && pinned != digest
        {
            return Err(fail(format!(
                "{} {} a manifest of digest {digest}, not {pinned} ({why})",
                section.source,
                if matches!(outside, Outside::Native(_)) {
                    "carries"
                } else {
                    "describes"
                }
            )));
        }
    }
    let manifest = greentic_manifest::ProviderManifest::from_json(&section.source, &json)
        .map_err(|e| fail(format!("its manifest: {e}")))?;
    let world = contracts
        .select(&manifest.compat.wit)
        .map_err(|e| fail(e.to_string()))?;
    let world = contracts
        .world_id_string(world)
        .ok_or_else(|| fail("its world has no package".into()))?;
    let info = by_world(&world).map_err(fail)?;
    if info.name != manifest.domain {
        return Err(fail(format!(
            "its manifest says domain `{}` but targets `{world}`",
            manifest.domain
        )));
    }
    let mut problems: Vec<String> =
        greentic_capabilities::check_needs(name, &section.grants, [], &manifest)
            .into_iter()
            .map(|p| format!("provider `{name}`: {p}"))
            .collect();
    let outbound = match OutboundPolicy::new(&section.grants.outbound_hosts) {
        Ok(policy) => policy,
        Err(why) => {
            problems.push(format!("provider `{name}`: grants.outbound_hosts: {why}"));
            OutboundPolicy::default()
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    if !section.grants.outbound_hosts.is_empty() {
        tracing::warn!(
            provider = name,
            form,
            "the outbound calls of a provider that is no component do not pass through the host: grants.outbound_hosts is not enforced for it (use network policy)"
        );
    }
    let granted_secrets: BTreeSet<String> = section
        .grants
        .secrets
        .iter()
        .filter(|s| manifest.declares_secret(s))
        .cloned()
        .collect();
    tracing::info!(provider = name, form, source = %section.source, manifest = %digest, %world, "provider loaded");
    greentic_audit::record(
        "provider.resolved",
        serde_json::json!({
            "provider": name,
            "source": section.source,
            "form": form,
            "digest": digest,
            "world": world,
            "manifest": format!("{} {}", manifest.name, manifest.version),
        }),
    );
    let (prepared, remote, cache) = match outside {
        Outside::Remote(config) => (
            info.prepare_remote(),
            Some(Arc::new(greentic_remote::LazyLink::new(config))),
            greentic_engine::compile::CacheOutcome::Remote,
        ),
        Outside::Native(registration) => {
            let exports = (registration.make)();
            if exports.domain() != info.name {
                return Err(fail(format!(
                    "its manifest says domain `{}` but the crate registered as `{}` exports a `{}` provider",
                    info.name,
                    registration.name,
                    exports.domain()
                )));
            }
            (
                info.prepare_native(exports),
                None,
                greentic_engine::compile::CacheOutcome::Native,
            )
        }
    };
    let native = remote.is_none();
    Ok(LoadedProvider {
        name: name.to_string(),
        source: section.source.clone(),
        circuit: format!("{name}@{digest}"),
        digest,
        manifest_digest: None,
        world,
        manifest,
        prepared,
        outbound,
        granted_secrets: Arc::new(granted_secrets),
        linked: Linked::of(&section.grants),
        cache,
        signer_key_id: None,
        reuse: false,
        remote,
        native,
    })
}

/// Grants against needs (zero trust): every capability the component imports must be granted,
/// and every grant backed by its manifest. What is granted is what will be linked, and the
/// outbound policy its hosts make.
fn grant(
    name: &str,
    grants: &Grants,
    report: &ComponentReport,
) -> Result<(Linked, OutboundPolicy), Vec<String>> {
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
    Ok((linked, outbound))
}
