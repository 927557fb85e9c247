//! The classes: each checked as the host's loader checks a provider, its status, and the
//! providers a revision can use (a class that fails keeps what the fleet already serves).

use std::collections::BTreeMap;

use greentic_bundle::{LockEntry, ProviderFacts, ProviderSection};

use super::{Desired, Observed, Resolved, condition};
use crate::crd::{
    Attestation, ClassForm, Condition, ManifestSummary, ProviderClass, ProviderClassStatus,
};

/// A provider the revision can use.
pub(super) struct Usable<'a> {
    pub(super) section: ProviderSection,
    pub(super) lock: LockEntry,
    pub(super) facts: &'a ProviderFacts,
}

/// The section a class's spec asks for (grants are the class's: a tenant cannot widen them).
pub fn class_section(class: &ProviderClass) -> ProviderSection {
    let spec = &class.spec;
    let form = match spec.form {
        ClassForm::Wasm => greentic_bundle::ProviderForm::Wasm,
        ClassForm::Remote => greentic_bundle::ProviderForm::Remote,
        ClassForm::Native => greentic_bundle::ProviderForm::Native,
    };
    ProviderSection {
        source: match spec.form {
            ClassForm::Remote => spec.endpoint.clone().unwrap_or_default(),
            _ => spec.source.clone(),
        },
        form,
        identity: spec.identity.clone(),
        tls: spec.tls.clone(),
        allow_plaintext: spec.allow_plaintext,
        digest: spec.digest.clone(),
        grants: spec.grants.clone(),
        trusted_keys: spec.trusted_keys.clone(),
        identities: spec.identities.clone(),
        allow_unsigned: false,
        fresh_instances: spec.fresh_instances,
        require: spec
            .require
            .iter()
            .map(|a| match a {
                Attestation::Conformance => greentic_bundle::attestation::Kind::Conformance,
                Attestation::Sbom => greentic_bundle::attestation::Kind::Sbom,
            })
            .collect(),
    }
}

fn summary(facts: &ProviderFacts) -> ManifestSummary {
    ManifestSummary {
        name: facts.manifest.name.clone(),
        version: facts.manifest.version.to_string(),
        domain: facts.domain.to_string(),
        capabilities: facts.manifest.capabilities.clone(),
        required_secrets: facts
            .manifest
            .required_secrets()
            .map(str::to_string)
            .collect(),
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// Checks the classes: the providers a revision can use, by name, and each class's status.
pub(super) fn classes<'a>(
    desired: &Desired,
    observed: &'a Observed,
) -> (
    BTreeMap<String, Usable<'a>>,
    BTreeMap<String, ProviderClassStatus>,
) {
    let mut usable = BTreeMap::new();
    let mut statuses = BTreeMap::new();
    for class in &desired.classes {
        let name = class.metadata.name.clone().unwrap_or_default();
        let generation = class.metadata.generation;
        let mut status = ProviderClassStatus {
            observed_generation: generation,
            ..Default::default()
        };
        let check = observed
            .classes
            .get(&name)
            .filter(|c| c.generation == generation);
        let mut problems = Vec::new();
        if !greentic_bundle::valid_provider_name(&name) {
            problems.push(format!(
                "the class name `{name}` is not a valid provider name (kebab-case: lower-case letters, digits and single `-`); rename the class"
            ));
        }
        problems.extend(form_problems(&class.spec));
        let current = match check.map(|c| &c.current) {
            None => {
                status.conditions.push(Condition {
                    status: "Unknown".into(),
                    ..condition(
                        "Ready",
                        false,
                        "Checking",
                        "the class has not been checked yet".into(),
                        generation,
                    )
                });
                // Changed since it was checked: what the fleet serves of it stays usable until
                // the new generation is checked.
                if let Some(p) = observed
                    .classes
                    .get(&name)
                    .and_then(|c| c.published.as_ref())
                {
                    usable.insert(name.clone(), usable_of(p));
                }
                statuses.insert(name, status);
                continue;
            }
            Some(Err(e)) => {
                problems.extend(e.iter().cloned());
                None
            }
            Some(Ok(r)) => Some(r),
        };
        if let (Some(r), Some(req)) = (current, class.spec.compat.as_deref()) {
            match semver::VersionReq::parse(req) {
                Err(e) => problems.push(format!(
                    "spec.compat `{req}` is not a semver requirement ({e}); write one such as `^1.2`"
                )),
                Ok(req) if !req.matches(&r.facts.manifest.version) => problems.push(format!(
                    "version {} of `{}` is outside spec.compat `{req}`; pin a compatible version or widen spec.compat",
                    r.facts.manifest.version,
                    class.spec.endpoint.as_deref().unwrap_or(&class.spec.source)
                )),
                Ok(_) => {}
            }
        }
        if let Some(r) = current {
            status.resolved = r.lock.manifest_digest.clone();
            status.digest = Some(r.lock.digest.clone());
            status.signer = r.signer.clone();
            status.manifest = Some(summary(&r.facts));
        }
        if problems.is_empty()
            && let Some(r) = current
        {
            status.conditions.push(condition(
                "Ready",
                true,
                "Verified",
                format!(
                    "{} {} ({}) passed every check the host runs",
                    r.facts.manifest.name,
                    r.facts.manifest.version,
                    short(&r.lock.digest)
                ),
                generation,
            ));
            usable.insert(name.clone(), usable_of(r));
        } else {
            let fallback = check.and_then(|c| c.published.as_ref());
            let keep = match fallback {
                Some(p) => format!(
                    "; the fleet keeps serving the published {} ({})",
                    p.facts.manifest.version,
                    short(&p.lock.digest)
                ),
                None => String::new(),
            };
            status.conditions.push(condition(
                "Ready",
                false,
                "CheckFailed",
                format!(
                    "{}{keep}",
                    greentic_manifest::clip_middle(&problems.join("; "), 1024)
                ),
                generation,
            ));
            status.problems = problems;
            if let Some(p) = fallback {
                usable.insert(name.clone(), usable_of(p));
            }
        }
        statuses.insert(name, status);
    }
    (usable, statuses)
}

/// What is wrong with how a class says where its provider runs.
fn form_problems(spec: &crate::crd::ProviderClassSpec) -> Vec<String> {
    let mut out = Vec::new();
    match spec.form {
        ClassForm::Remote => {
            if spec.endpoint.is_none() {
                out.push("spec.endpoint is required for `form: remote`: the gateway's `grpcs://HOST:PORT`, or `grpc://127.0.0.1:PORT` for a sidecar in the host pods".into());
            }
            if !spec.source.is_empty() {
                out.push("spec.source names an artifact; a `form: remote` class is reached at spec.endpoint — remove spec.source".into());
            }
            if !spec.trusted_keys.is_empty()
                || !spec.identities.is_empty()
                || !spec.require.is_empty()
            {
                out.push("spec.trustedKeys, spec.identities and spec.require are about signed artifacts; a `form: remote` class is held to spec.identity (mTLS) and its manifest's digest in the revision's lock — remove them".into());
            }
        }
        ClassForm::Wasm | ClassForm::Native => {
            if spec.source.is_empty() {
                out.push(if spec.form == ClassForm::Native {
                    "spec.source is required: `native:NAME`, the name the provider is registered under in the hosts' image".to_string()
                } else {
                    "spec.source is required: the provider's OCI artifact, `HOST/REPO:TAG` or `HOST/REPO@sha256:<hex>`".to_string()
                });
            }
            for (key, set) in [
                ("endpoint", spec.endpoint.is_some()),
                ("identity", spec.identity.is_some()),
                ("tls", spec.tls.is_some()),
                ("allowPlaintext", spec.allow_plaintext),
            ] {
                if set {
                    out.push(format!(
                        "spec.{key} applies to `form: remote` classes only; remove it"
                    ));
                }
            }
        }
    }
    out
}

fn usable_of(r: &Resolved) -> Usable<'_> {
    let (section, lock) = pinned(r);
    Usable {
        section,
        lock,
        facts: &r.facts,
    }
}

/// The section and lock entry a revision names a resolved provider by: a registry source
/// pinned to the manifest digest that was checked, so every host fetches exactly it and a tag
/// that moves later changes nothing already published.
pub fn pinned(r: &Resolved) -> (ProviderSection, LockEntry) {
    let mut section = r.section.clone();
    let mut lock = r.lock.clone();
    let is_registry = section.form == greentic_bundle::ProviderForm::Wasm
        && matches!(
            greentic_trust::sources::SourceRef::parse(std::path::Path::new("."), &section.source),
            greentic_trust::sources::SourceRef::Registry(_)
        );
    if is_registry
        && let Some(digest) = &r.lock.manifest_digest
        && let Ok(reference) = section.source.parse::<greentic_registry::ArtifactRef>()
    {
        section.source = reference.with_digest(digest).to_string();
        lock.source = section.source.clone();
    }
    (section, lock)
}
