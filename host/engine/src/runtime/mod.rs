//! The runtime: routes calls to providers and runs each in a fresh instance under the calling
//! tenant's limits, with retries and a circuit breaker.
//!
//! [`Runtime`] holds the revisions and what outlives them; its entry points are in
//! `entries`, the envelope every call shares in `envelope`, attempts and retries in
//! `attempts`, and a call's store and what its outcome means in `store`.

mod attempts;
mod entries;
mod envelope;
mod store;

pub use crate::revision::TenantRuntime;
pub use greentic_auth::Caller;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::{ArcSwap, ArcSwapOption};
use greentic_bundle::{Bundle, Limits};
use greentic_capabilities::Backends;
use greentic_capabilities::state::StateCtx;
use greentic_metrics::Metrics;

use crate::compile::HostEngine;
use crate::domain::{Input, Output, Triggers};
use crate::errors::CallError;
use crate::provider::LoadedProvider;
use crate::resilience::{BreakerPolicy, Breakers, RetryPolicy};
use crate::revision::Revision;
use crate::scheduler::Scheduler;
use crate::shared::{DeliveryQueue, IdempotencyRecords, SharedLimits};

/// A canary: a revision serving a set of tenants beside the active one.
pub struct Canary {
    /// The canary revision.
    pub revision: Arc<Revision>,
    /// The tenants it serves.
    pub tenants: std::collections::BTreeSet<String>,
}

/// The runtime: the active [`Revision`] (swapped atomically on reload) and what outlives
/// revisions — the state backend, metrics, circuit breakers and readiness.
pub struct Runtime {
    current: ArcSwap<Revision>,
    canary: ArcSwapOption<Canary>,
    /// Outcomes per revision and tenant, for judging a canary against its baseline.
    pub stats: crate::outcomes::Stats,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    breakers: Breakers,
    retry: RetryPolicy,
    /// False while shutting down.
    pub ready: AtomicBool,
    /// Whether calls reuse one instance per provider (see [`Runtime::share_instances`]).
    shared: AtomicBool,
    /// Fleet-wide tenant limits, once the host has joined a fleet.
    pub fleet_limits: OnceLock<Arc<dyn SharedLimits>>,
    /// Fleet-wide idempotency records, once the host has joined a fleet.
    pub idempotency: OnceLock<Arc<dyn IdempotencyRecords>>,
    /// The fleet's queue of durable webhook deliveries, once the host has joined a fleet.
    pub deliveries: OnceLock<Arc<dyn DeliveryQueue>>,
    /// Who runs guest code next (fair CPU between tenants); the host's own for its life
    /// (`[host.scheduler]` cannot change live).
    pub scheduler: Arc<Scheduler>,
    /// Why the host serves no tenant's revision yet (a fleet host whose fleet revision cannot
    /// be applied): a tenant it does not serve is then told to retry (`503`), not refused.
    unserved: ArcSwapOption<String>,
}

impl Runtime {
    /// Assembles the runtime from a loaded bundle: its first revision.
    pub fn new(
        bundle: &Bundle,
        engine: impl Into<Arc<HostEngine>>,
        providers: BTreeMap<String, Arc<LoadedProvider>>,
        backends: Backends,
    ) -> Runtime {
        let revision = Revision::new(
            Arc::new(bundle.clone()),
            engine.into(),
            providers,
            backends,
            None,
        );
        let metrics = Arc::new(Metrics::default());
        let runtime = Runtime {
            current: ArcSwap::from_pointee(revision),
            canary: ArcSwapOption::empty(),
            stats: Default::default(),
            metrics,
            breakers: Breakers::new(BreakerPolicy::from(bundle.file.host.breaker)),
            retry: RetryPolicy::default(),
            ready: AtomicBool::new(true),
            shared: AtomicBool::new(false),
            fleet_limits: OnceLock::new(),
            idempotency: OnceLock::new(),
            deliveries: OnceLock::new(),
            scheduler: Scheduler::new(bundle.file.host.scheduler),
            unserved: ArcSwapOption::empty(),
        };
        runtime.record_revision(&runtime.revision());
        runtime
    }

    /// Marks the host as serving no tenant's revision yet, and why (`None`: it does).
    pub fn set_unserved(&self, why: Option<String>) {
        self.unserved.store(why.map(Arc::new));
    }

    /// Why the host serves no tenant's revision yet, if it does not.
    pub fn unserved(&self) -> Option<Arc<String>> {
        self.unserved.load_full()
    }

    /// Refuses every call (`503 not-served-yet`, retryable) while the host serves no
    /// revision (what it holds is a fleet host's bootstrap bundle, possibly older than what the
    /// fleet runs).
    pub(super) fn serving(&self, tenant: &str) -> Result<(), CallError> {
        match self.unserved.load().as_ref() {
            Some(_) => Err(self.not_served(tenant)),
            None => Ok(()),
        }
    }

    /// The error for a tenant the active revision does not have: retryable while the host
    /// serves no revision yet, a refusal otherwise.
    pub(super) fn not_served(&self, tenant: &str) -> CallError {
        match self.unserved() {
            Some(why) => CallError::NotServedYet {
                tenant: tenant.to_string(),
                why: why.to_string(),
                retry_after_ms: 2_000,
            },
            None => CallError::BadRequest(format!("tenant `{tenant}` is not served by this host")),
        }
    }

    /// The active revision. A caller holding it keeps it alive (and serving) until it lets go.
    pub fn revision(&self) -> Arc<Revision> {
        self.current.load_full()
    }

    /// The revision serving `tenant`: the canary's, if the tenant is in its set, else the
    /// active one.
    pub fn revision_for(&self, tenant: &str) -> Arc<Revision> {
        if let Some(canary) = self.canary.load().as_ref()
            && canary.tenants.contains(tenant)
        {
            return canary.revision.clone();
        }
        self.revision()
    }

    /// The canary being served, if any.
    pub fn canary(&self) -> Option<Arc<Canary>> {
        self.canary.load_full()
    }

    /// Serves `canary`'s tenants from its revision (`None`: every tenant from the active one).
    pub fn set_canary(&self, canary: Option<Canary>) {
        self.canary.store(canary.map(Arc::new));
    }

    /// Makes `revision` the active one; calls already running finish on the one they
    /// started on. Returns the revision replaced.
    pub fn swap(&self, mut revision: Revision) -> Arc<Revision> {
        revision.since = std::time::SystemTime::now();
        let revision = Arc::new(revision);
        let previous = self.current.swap(revision.clone());
        self.metrics.set(
            "greentic_revision_info",
            &[("digest", previous.digest.as_str())],
            0.0,
        );
        self.record_revision(&revision);
        previous
    }

    fn record_revision(&self, revision: &Revision) {
        // `[host] kept_instances` of the revision now serving (a refused reload changes nothing).
        revision
            .engine
            .kept
            .set_max(revision.bundle.file.host.kept_instances);
        self.metrics.set(
            "greentic_revision_info",
            &[("digest", revision.digest.as_str())],
            1.0,
        );
        self.metrics.set(
            "greentic_revision_active_since_seconds",
            &[],
            revision.since_secs(),
        );
    }

    /// Makes consecutive calls of *every* tenant run in one kept instance per provider
    /// (serialised), instead of a fresh instance per call; `false` drops the kept ones.
    ///
    /// This is how instance-pooling hosts run providers. `run` never enables it: the conformance
    /// suite does, to prove that a provider keeps no tenant's data from one call to the next.
    pub async fn share_instances(&self, on: bool) {
        self.shared.store(on, Ordering::SeqCst);
        if !on {
            for provider in self.revision().providers.values() {
                provider.prepared.kept().lock().await.take();
            }
        }
    }

    /// Replaces the retry and breaker policies (tests, tuning).
    pub fn with_policies(mut self, retry: RetryPolicy, breaker: BreakerPolicy) -> Runtime {
        self.retry = retry;
        self.breakers = Breakers::new(breaker);
        self
    }

    /// The state capability calls are given (one backend for the life of the process: a
    /// reload that changes `[state]` is refused, so every revision shares it).
    pub fn state(&self) -> Arc<StateCtx> {
        self.current.load().backends.state().clone()
    }
}

#[async_trait::async_trait]
impl Triggers for Runtime {
    async fn fire(
        &self,
        tenant: &str,
        provider: &str,
        name: &str,
        input: Input,
    ) -> Result<Output, CallError> {
        self.trigger(tenant, provider, name, input).await
    }

    fn state(&self) -> Arc<StateCtx> {
        Runtime::state(self)
    }

    fn limits(&self, tenant: &str) -> Option<Limits> {
        self.revision()
            .tenants
            .get(tenant)
            .map(|t| *t.gate.limits())
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
