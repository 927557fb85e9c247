//! What the host runs is what it was told to trust.
//!
//! A provider's component is fetched from its source ([`sources`]: a file, an OCI layout or a
//! registry) by [`fetch`]: a registry or layout reference is resolved to a digest once, its
//! cosign signature verified for that digest with the keys the bundle trusts for providers
//! ([`keys`]) and the identities it accepts, the digest held to `greentic.lock`, and the bytes
//! fetched by that digest and checked against every digest the bundle pins. Its required
//! attestations ([`attestation`]: a conformance report, an SBOM) are then checked by
//! [`check_attestations`]: the newest one a trusted key signed about exactly that digest must
//! hold for exactly that component. Everything fails closed, and every decision is recorded in
//! the audit log.

pub mod attestation;
pub mod keys;
pub mod sources;

use greentic_bundle::{Bundle, KeyRole, LockEntry, ProviderSection};
use greentic_registry::ArtifactRef;
use keys::{short_key, trusted_keys};
use sources::{
    ComponentSource, Fetched, Reach, RegistrySource, SourceRef, artifact_reference, resolve_source,
};

/// How to fetch.
#[derive(Debug, Clone, Copy, Default)]
pub struct FetchOptions {
    /// Use only the local cache: the digest pinned in the lock, and the artifact and
    /// signatures cached by an earlier online fetch.
    pub offline: bool,
    /// The bundle is a fleet's published revision: only signed providers from a registry or
    /// layout (`allow_unsigned` and file sources are refused).
    pub published: bool,
}

/// A provider's component, fetched as its source and the bundle's trust say.
pub struct Verified {
    /// The bytes and their digest.
    pub fetched: Fetched,
    /// The source's name, for messages.
    pub source: String,
    /// The OCI manifest digest it was fetched by (registry and layout sources).
    pub manifest_digest: Option<String>,
    /// The id of the key whose signature was verified (none for an unsigned provider).
    pub signer_key_id: Option<String>,
    /// The reference pinned to the verified digest (where attestations are looked up).
    pub pinned: Option<ArtifactRef>,
}

/// Fetches provider `name`'s component as `section` says, held to `locked` (its entry in
/// `greentic.lock`, unless the lock is being updated). The error says what is wrong and what
/// to do.
pub fn fetch(
    bundle: &Bundle,
    name: &str,
    section: &ProviderSection,
    locked: Option<&LockEntry>,
    options: FetchOptions,
) -> Result<Verified, String> {
    let reach = reach(bundle, options.offline)?;
    let mut manifest_digest = None;
    let mut signer_key_id = None;
    // The reference pinned to the resolved digest: where attestations are looked up.
    let mut pinned = None;
    if options.published {
        if matches!(
            SourceRef::parse(&bundle.dir, &section.source),
            SourceRef::File(_)
        ) {
            return Err(format!(
                "source `{}` is a file; a fleet's published revision runs only providers from a registry or OCI layout, signed by a provider key: push it and sign it (greentic-host push, greentic-host sign)",
                section.source
            ));
        }
        if section.allow_unsigned {
            return Err(
                "`allow_unsigned = true` is refused in a fleet's published revision: a publisher's key vouches for the revision, not for the code it runs; sign the provider with a provider key and remove `allow_unsigned`".into(),
            );
        }
    }
    let source: Box<dyn ComponentSource> = match SourceRef::parse(&bundle.dir, &section.source) {
        SourceRef::File(_) if !section.allow_unsigned => {
            return Err(format!(
                "source `{}` is a file, which cannot carry a signature; push it to a registry and sign it (greentic-host push, greentic-host sign), or set `allow_unsigned = true` in [providers.{name}] to run it unsigned",
                section.source
            ));
        }
        SourceRef::File(_) => {
            greentic_audit::record(
                "signature.skipped",
                serde_json::json!({ "provider": name, "source": section.source, "why": "a file source, allow_unsigned = true" }),
            );
            resolve_source(&bundle.dir, &section.source, &reach)
        }
        SourceRef::OciLayout(_) | SourceRef::Registry(_) => {
            let mut reference =
                artifact_reference(&bundle.dir, &section.source).map_err(|e| e.to_string())?;
            // What a signature may name, from the source as written (a layout's tag), before
            // the reference is pinned to a digest.
            let identities = reference.accepted_identities();
            if options.offline {
                // Offline, the lock's digest is the only resolution there is.
                match locked.and_then(|l| l.manifest_digest.as_deref()) {
                    Some(d) => reference = reference.with_digest(d),
                    None => {
                        return Err(format!(
                            "offline, but greentic.lock pins no digest for `{}`; run once online first",
                            section.source
                        ));
                    }
                }
            }
            // Resolve the reference once (verifying the signature for that digest).
            let digest = if section.allow_unsigned {
                tracing::warn!(
                    provider = name,
                    "running without a verified signature (allow_unsigned = true)"
                );
                greentic_audit::record(
                    "signature.skipped",
                    serde_json::json!({ "provider": name, "source": section.source, "why": "allow_unsigned = true" }),
                );
                resolve_digest(&reference, &reach)?
            } else {
                match verify_signature(bundle, name, section, &reference, &identities, &reach) {
                    Ok((digest, key_id)) => {
                        greentic_audit::record(
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
                        greentic_audit::record(
                            "signature.refused",
                            serde_json::json!({ "provider": name, "source": section.source, "why": why }),
                        );
                        return Err(why);
                    }
                }
            };
            if let Some(pinned) = locked.and_then(|l| l.manifest_digest.as_deref())
                && pinned != digest
            {
                return Err(format!(
                    "`{}` now resolves to {digest}, but greentic.lock pins {pinned} (the tag moved); check the new artifact, then accept it with `run --update-lock` (or `reload --update-lock` on a running host)",
                    section.source
                ));
            }
            manifest_digest = Some(digest.clone());
            pinned = Some(reference.with_digest(&digest));
            // Fetch exactly what was resolved and verified: by digest, never by tag again.
            Box::new(RegistrySource::new(reference.with_digest(&digest), reach))
        }
    };
    let mut expected: Vec<(&str, &str)> = Vec::new();
    if let Some(d) = &section.digest {
        expected.push((d, "pinned by `digest` in greentic.toml"));
    }
    if let Some(locked) = locked {
        expected.push((
            &locked.digest,
            "recorded in greentic.lock; accept the new component with `run --update-lock` (or `reload --update-lock` on a running host)",
        ));
    }
    let fetched = source
        .fetch(bundle.file.host.max_component_bytes, &expected)
        .map_err(|e| e.to_string())?;
    Ok(Verified {
        source: source.name(),
        fetched,
        manifest_digest,
        signer_key_id,
        pinned,
    })
}

/// Checks the attestations provider `name` must carry (its own `require` and the bundle's):
/// what each certifies, or why it is refused. A file source, which cannot carry any, is
/// refused when one is required.
pub fn check_attestations(
    bundle: &Bundle,
    name: &str,
    section: &ProviderSection,
    verified: &Verified,
    offline: bool,
) -> Result<Vec<String>, String> {
    let required = section.required(&bundle.file.trust);
    if required.is_empty() {
        return Ok(Vec::new());
    }
    let Some(pinned) = &verified.pinned else {
        return Err(format!(
            "requires {} attestation(s), but source `{}` is a file, which cannot carry any; push it to a registry and attest it (greentic-host push, greentic-host attest)",
            kind_list(&required),
            section.source
        ));
    };
    verify_attestations(
        bundle,
        name,
        section,
        pinned,
        &reach(bundle, offline)?,
        &required,
        &verified.fetched.digest,
    )
}

/// Verifies every required attestation of the provider: for each kind, the newest attestation a
/// key trusted for this provider signed about exactly `reference`'s digest must hold for the
/// component `component_digest`. Returns what each certifies. Fails closed.
#[allow(clippy::too_many_arguments)]
fn verify_attestations(
    bundle: &Bundle,
    name: &str,
    section: &ProviderSection,
    reference: &greentic_registry::ArtifactRef,
    reach: &Reach,
    kinds: &[crate::attestation::Kind],
    component_digest: &str,
) -> Result<Vec<String>, String> {
    let keys = trusted_keys(bundle, name, section, KeyRole::Attestation)?;
    greentic_capabilities::blocking::run("the attestation check", |rt| {
        let target = crate::sources::open_target(reference, reach)?;
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
                greentic_audit::record(
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
            greentic_audit::record(
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

fn kind_list(kinds: &[crate::attestation::Kind]) -> String {
    kinds
        .iter()
        .map(|k| format!("`{}`", k.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resolves a registry or layout reference to its manifest digest (no signature check).
fn resolve_digest(
    reference: &greentic_registry::ArtifactRef,
    reach: &Reach,
) -> Result<String, String> {
    greentic_capabilities::blocking::run("resolving the reference", |rt| {
        let target = crate::sources::open_target(reference, reach)?;
        rt.block_on(target.resolve(reference))
            .map_err(|e| e.to_string())
    })
}

/// How `bundle`'s registry and layout sources are reached: blobs cached beside its compiled
/// components, and the CA certificates of `[trust].registry_ca` trusted beside the system's.
pub fn reach(bundle: &Bundle, offline: bool) -> Result<Reach, String> {
    let mut reach = Reach::new(bundle.cache_dir().join("blobs"), offline);
    if let Some(path) = &bundle.file.trust.registry_ca {
        let path = bundle.path(path);
        let pem = std::fs::read(&path).map_err(|e| {
            format!(
                "[trust].registry_ca {}: {e}; name the PEM file of the CA your registry's certificate is issued by",
                path.display()
            )
        })?;
        if greentic_registry::pem_certificates(&pem).is_empty() {
            return Err(format!(
                "[trust].registry_ca {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                path.display()
            ));
        }
        reach.remote.ca_certificates = vec![pem];
    }
    Ok(reach)
}

/// Verifies the provider's signature with the keys the bundle trusts for it; returns the
/// verified manifest digest and the id of the key that signed it. Fails closed: no keys, no
/// signature, or no valid signature.
#[allow(clippy::too_many_arguments)]
fn verify_signature(
    bundle: &Bundle,
    name: &str,
    section: &ProviderSection,
    reference: &greentic_registry::ArtifactRef,
    own: &[String],
    reach: &Reach,
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
        let target = crate::sources::open_target(reference, reach)?;
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
