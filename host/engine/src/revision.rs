//! A revision: everything one version of a bundle makes the host serve, immutable once built.
//!
//! The runtime holds the active revision behind an atomic pointer. A call takes the revision
//! once, when it starts, and runs on it to the end, whatever is swapped in meanwhile; a
//! revision is dropped (its compiled components, instances kept for sharing, and engine if no
//! other revision uses it) when its last call ends. See the host's reloader for how one is built
//! and swapped in.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use greentic_auth::Caller;
use greentic_bundle::{Bundle, DeploymentContext, Limits, Route};
use greentic_capabilities::Backends;
use sha2::{Digest, Sha256};

use crate::compile::HostEngine;
use crate::domain::Arrival;
use crate::limits::TenantGate;
use crate::provider::LoadedProvider;

/// A tenant as one revision serves it.
pub struct TenantRuntime {
    /// Limits and admission of invokes.
    pub gate: Arc<TenantGate>,
    /// Admission of webhook deliveries, per provider: apart from invokes, so deliveries
    /// nobody has authenticated yet cannot take the slots or fuel the tenant's calls need.
    pub webhook_gates: BTreeMap<String, Arc<TenantGate>>,
    /// Secret names bound for the tenant.
    pub bound_secrets: Arc<BTreeSet<String>>,
    /// Validated configuration per provider.
    pub config: BTreeMap<String, Arc<serde_json::Value>>,
}

/// One version of the bundle, as the host serves it.
pub struct Revision {
    /// Unique among the revisions of this process: what instances kept between calls are
    /// keyed by, so no instance serves two revisions (see [`crate::kept`]).
    pub serial: u64,
    /// `sha256:<hex>` of the bundle text (`greentic.toml`) this revision was built from.
    pub digest: String,
    /// When this revision became active (set when it is swapped in).
    pub since: SystemTime,
    /// The bundle.
    pub bundle: Arc<Bundle>,
    /// The engine its providers were compiled for (shared with the previous revision when the
    /// pool it needs fits the one that engine has).
    pub engine: Arc<HostEngine>,
    /// Providers by name.
    pub providers: BTreeMap<String, Arc<LoadedProvider>>,
    /// Tenants by id.
    pub tenants: BTreeMap<String, TenantRuntime>,
    /// What the capabilities opened for it: where secret values come from, where state is
    /// kept (shared with the revision before it when its section is unchanged).
    pub backends: Backends,
    routes: Vec<Route>,
    /// Where this host runs.
    pub deployment: DeploymentContext,
    /// The largest webhook response body passed on (`[host].max_body_bytes`).
    pub max_response_bytes: usize,
}

/// `sha256:<hex>` of a bundle's text: the identity of a revision.
pub fn digest_of(text: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(text)))
}

impl Revision {
    /// Assembles a revision of `bundle` from its checked
    /// `providers`. A tenant whose limits are unchanged from `previous` keeps its admission
    /// gates, so calls running on the previous revision still count against the limits of
    /// calls starting on this one.
    pub fn new(
        bundle: Arc<Bundle>,
        engine: Arc<HostEngine>,
        providers: BTreeMap<String, Arc<LoadedProvider>>,
        backends: Backends,
        previous: Option<&Revision>,
    ) -> Revision {
        let tenants = bundle
            .file
            .tenants
            .iter()
            .map(|(id, t)| {
                let before = previous.and_then(|p| p.tenants.get(id));
                let metering = bundle.file.host.metering;
                let keep = |gate: Option<&Arc<TenantGate>>, scope: &str, limits: Limits| match gate
                {
                    Some(gate)
                        if *gate.limits() == limits && gate.budget().metering == metering =>
                    {
                        gate.clone()
                    }
                    _ => TenantGate::metered(id, scope, limits, metering),
                };
                let config = t
                    .config
                    .iter()
                    .map(|(p, v)| (p.clone(), Arc::new(v.clone())))
                    .collect();
                let webhook_limits = Limits {
                    max_concurrent: t.limits.webhook_max_concurrent,
                    ..t.limits
                };
                let webhook_gates = providers
                    .iter()
                    .filter(|(_, p)| p.prepared.info().arrival == Arrival::Http)
                    .map(|(name, _)| {
                        let gate = keep(
                            before.and_then(|b| b.webhook_gates.get(name)),
                            &format!("{id}/webhook/{name}"),
                            webhook_limits,
                        );
                        (name.clone(), gate)
                    })
                    .collect();
                (
                    id.clone(),
                    TenantRuntime {
                        gate: keep(before.map(|b| &b.gate), id, t.limits),
                        webhook_gates,
                        bound_secrets: Arc::new(t.secrets.iter().cloned().collect()),
                        config,
                    },
                )
            })
            .collect();
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Revision {
            serial: SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            digest: bundle.digest.clone(),
            since: SystemTime::now(),
            engine,
            providers,
            tenants,
            backends,
            routes: bundle.file.routes.clone(),
            deployment: bundle.file.host.deployment.from_environment(),
            max_response_bytes: bundle.file.host.max_body_bytes,
            bundle,
        }
    }

    /// The provider the most specific matching route picks.
    pub fn route(&self, caller: &Caller, capability: &str) -> Option<&Arc<LoadedProvider>> {
        let matches = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        let cloud = Some(self.deployment.cloud.clone());
        self.routes
            .iter()
            .filter(|r| r.capability == capability)
            .filter(|r| r.tenant == "*" || r.tenant == caller.tenant)
            .filter(|r| matches(&r.team, &caller.team) && matches(&r.user, &caller.user))
            .filter(|r| matches(&r.cloud, &cloud))
            .max_by_key(|r| {
                (r.tenant != "*") as u8
                    + r.team.is_some() as u8
                    + r.user.is_some() as u8
                    + r.cloud.is_some() as u8
            })
            .and_then(|r| self.providers.get(&r.provider))
    }

    /// Whether `provider` is routed to `tenant` (for webhooks).
    pub fn routed_to(&self, tenant: &str, provider: &str) -> bool {
        self.routes
            .iter()
            .any(|r| r.provider == provider && (r.tenant == tenant || r.tenant == "*"))
    }

    /// The durable route reaching `provider` for `tenant`, if deliveries to it are durable.
    pub fn durable_route(&self, tenant: &str, provider: &str) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|r| r.durable && r.provider == provider)
            .find(|r| r.tenant == tenant || r.tenant == "*")
    }

    /// The signature scheme deliveries to `provider` for `tenant` must carry: the one the most
    /// specific route reaching it declares (`verify`); any route that declares one makes the
    /// check apply.
    pub fn delivery_check(
        &self,
        tenant: &str,
        provider: &str,
    ) -> Option<&greentic_manifest::SignatureScheme> {
        self.routes
            .iter()
            .filter(|r| r.provider == provider && (r.tenant == tenant || r.tenant == "*"))
            .filter(|r| r.verify.is_some())
            .max_by_key(|r| (r.tenant != "*") as u8)
            .and_then(|r| r.verify.as_ref())
    }

    /// Whether any route is durable.
    pub fn has_durable_routes(&self) -> bool {
        self.routes.iter().any(|r| r.durable)
    }

    /// Seconds since the epoch when this revision became active.
    pub fn since_secs(&self) -> f64 {
        self.since
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

impl Drop for Revision {
    /// The instances kept for its calls go with it.
    fn drop(&mut self) {
        let serial = self.serial;
        self.engine.kept.sweep(|revision| revision == serial);
    }
}
