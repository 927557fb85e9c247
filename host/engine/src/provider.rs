//! A provider that passed every check, ready to run: its identity, its manifest, what it was
//! granted, and its component prepared for its domain.

use std::collections::BTreeSet;
use std::sync::Arc;

use greentic_bundle::ProviderFacts;
use greentic_capabilities::Linked;
use greentic_capabilities::outbound::OutboundPolicy;
use greentic_manifest::ProviderManifest;

use crate::compile::CacheOutcome;
use crate::domain::{Arrival, Domain};
use crate::domains::{Prepared, Typed};

/// A provider that passed every check.
pub struct LoadedProvider {
    /// Bundle name.
    pub name: String,
    /// Where it came from.
    pub source: String,
    /// `sha256:<hex>` of the component.
    pub digest: String,
    /// The OCI manifest digest it was fetched by (registry and layout sources).
    pub manifest_digest: Option<String>,
    /// The embedded manifest.
    pub manifest: ProviderManifest,
    /// The host world it runs in.
    pub world: String,
    /// The component, pre-instantiated for its domain.
    pub prepared: Arc<dyn Prepared>,
    /// Outbound hosts it may call.
    pub outbound: OutboundPolicy,
    /// Secrets it declares and is granted.
    pub granted_secrets: Arc<BTreeSet<String>>,
    /// What was linked.
    pub linked: Linked,
    /// Its circuit breaker's key, `name@digest`: one circuit per provider version, so an
    /// upgrade (or a rollback) starts closed.
    pub circuit: String,
    /// Whether compiled code came from the cache.
    pub cache: CacheOutcome,
    /// The id of the key whose signature was verified (none for an unsigned provider).
    pub signer_key_id: Option<String>,
    /// Whether an instance may serve later calls of the same tenant: its manifest says
    /// `"instances": "per-tenant"` and the bundle did not ask for `fresh_instances` (see
    /// [`crate::kept`]).
    pub reuse: bool,
    /// For a provider outside the host (`form = "remote"`), its link; `None` for a component.
    pub remote: Option<Arc<greentic_remote::LazyLink>>,
    /// A native provider (`form = "native"`): its calls run its Rust trait in-process.
    pub native: bool,
}

impl LoadedProvider {
    /// What the tenant and route checks need to know of it.
    pub fn facts(&self) -> ProviderFacts {
        let info = self.prepared.info();
        ProviderFacts {
            manifest: self.manifest.clone(),
            granted_secrets: (*self.granted_secrets).clone(),
            domain: info.name,
            http: info.arrival == Arrival::Http,
        }
    }

    /// Its form, as bundles name it: `wasm`, `remote` or `native`.
    pub fn form(&self) -> &'static str {
        if self.remote.is_some() {
            "remote"
        } else if self.native {
            "native"
        } else {
            "wasm"
        }
    }

    /// The typed `*Pre` of the provider, if it is a provider of domain `D`.
    pub fn pre<D: Domain>(&self) -> Option<&D::Pre> {
        self.prepared
            .as_any()
            .downcast_ref::<Typed<D>>()
            .map(|typed| &typed.pre)
    }
}
