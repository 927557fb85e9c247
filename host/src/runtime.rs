//! The runtime: routes calls to providers and runs each in a fresh instance under the calling
//! tenant's limits, with retries and a circuit breaker.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry::trace::{Span as _, Status, TraceContextExt, Tracer};
use opentelemetry::{KeyValue, global};
use wasmtime::{Store, Trap};

use crate::bindings::greentic::types::types::{Cloud, DeploymentCtx, Platform, TenantCtx};
use arc_swap::{ArcSwap, ArcSwapOption};
use greentic_capabilities::budget::ResourceLimitHit;

use crate::bundle::{Bundle, Limits};
use crate::compile::{EngineOptions, HostEngine, YIELD_FUEL};
use crate::domain::{Decoded, DomainCx, Entry, Input, Output, Triggers};
use crate::domains::{Kept, Request};
use crate::errors::{CallError, clip_guest};
use crate::instance::{DeadlineHit, InstanceData, MemoryLimitHit};
use crate::limits::TenantGate;
use crate::metrics::Metrics;
use crate::provider::LoadedProvider;
use crate::resilience::{BreakerPolicy, BreakerState, Breakers, RetryPolicy, counts_as_failure};
use crate::revision::Revision;
pub use crate::revision::TenantRuntime;
use crate::scheduler::Scheduler;
use crate::shared::{Claim, DeliveryQueue, IdempotencyRecords, SharedLimits};
pub use greentic_auth::Caller;
use greentic_capabilities::Backends;
use greentic_capabilities::CallScope;
use greentic_capabilities::http::outbound::OutboundPolicy;
use greentic_capabilities::state::StateCtx;
use greentic_capabilities::telemetry::host_attributes;
use tracing::Instrument;

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
    fn serving(&self, tenant: &str) -> Result<(), CallError> {
        match self.unserved.load().as_ref() {
            Some(_) => Err(self.not_served(tenant)),
            None => Ok(()),
        }
    }

    /// The error for a tenant the active revision does not have: retryable while the host
    /// serves no revision yet, a refusal otherwise.
    fn not_served(&self, tenant: &str) -> CallError {
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

    #[allow(clippy::too_many_arguments)]
    fn scope(
        &self,
        revision: &Revision,
        caller: &Caller,
        provider: &LoadedProvider,
        capability: &str,
        tenant: &TenantRuntime,
        cx: opentelemetry::Context,
        trace_id: &str,
    ) -> Arc<CallScope> {
        Arc::new(CallScope {
            tenant: caller.tenant.clone(),
            team: caller.team.clone(),
            user: caller.user.clone(),
            provider: provider.name.clone(),
            operation: capability.to_string(),
            trace_id: trace_id.to_string(),
            granted_secrets: provider.granted_secrets.clone(),
            bound_secrets: tenant.bound_secrets.clone(),
            secret_backend: revision.backends.secrets.clone(),
            state: revision.backends.state.clone(),
            config: tenant
                .config
                .get(&provider.name)
                .cloned()
                .unwrap_or_else(|| Arc::new(serde_json::json!({}))),
            otel_cx: cx,
            metrics: self.metrics.clone(),
        })
    }

    fn tenant_ctx(
        revision: &Revision,
        caller: &Caller,
        trace_id: &str,
        key: Option<String>,
    ) -> TenantCtx {
        TenantCtx {
            tenant: caller.tenant.clone(),
            team: caller.team.clone(),
            user: caller.user.clone(),
            deployment: DeploymentCtx {
                cloud: match revision.deployment.cloud.as_str() {
                    "aws" => Cloud::Aws,
                    "gcp" => Cloud::Gcp,
                    "azure" => Cloud::Azure,
                    "hetzner" => Cloud::Hetzner,
                    "local" => Cloud::Local,
                    other => Cloud::Other(other.to_string()),
                },
                region: revision.deployment.region.clone(),
                platform: match revision.deployment.platform.as_str() {
                    "k8s" => Platform::K8s,
                    "nomad" => Platform::Nomad,
                    "systemd" => Platform::Systemd,
                    "cf-workers" => Platform::CfWorkers,
                    "lambda" => Platform::Lambda,
                    "baremetal" => Platform::Baremetal,
                    other => Platform::Other(other.to_string()),
                },
                runtime: Some("wasmtime-48 (greentic-host)".into()),
            },
            trace_id: Some(trace_id.to_string()),
            idempotency_key: key,
        }
    }

    /// Invokes `capability` for `caller` with a JSON `input` (`header_key`: the
    /// `Idempotency-Key` header), on the provider the routes pick.
    pub async fn invoke(
        &self,
        caller: &Caller,
        capability: &str,
        input: serde_json::Value,
        header_key: Option<String>,
    ) -> Result<serde_json::Value, CallError> {
        self.serving(&caller.tenant)?;
        let revision = self.revision_for(&caller.tenant);
        let tenant = revision
            .tenants
            .get(&caller.tenant)
            .ok_or_else(|| self.not_served(&caller.tenant))?;
        let provider = revision
            .route(caller, capability)
            .ok_or_else(|| CallError::NoRoute {
                capability: capability.to_string(),
            })?;
        let domain = provider.prepared.info();
        if domain.entry != Entry::Invoke {
            return Err(domain.wrong_entry(&caller.tenant, &provider.name));
        }
        let records = self.idempotency.get();
        let print = records.map(|records| records.fingerprint(capability, &input));
        let input = Input::Invoke {
            capability: capability.to_string(),
            body: input,
            idempotency_key: header_key,
        };
        // The key is resolved once, as the domain decodes it for the provider's context.
        let key = domain.idempotency_key(&input)?;
        // In a fleet, a keyed call runs at most once to completion, whichever host it reaches.
        let claim = match (records, key.as_deref(), print.as_deref()) {
            (Some(records), Some(key), Some(print)) => {
                let limits = tenant.gate.limits();
                let until = Instant::now()
                    + Duration::from_millis(limits.deadline_ms + limits.queue_timeout_ms);
                match records.claim(caller, capability, key, print, until).await? {
                    Claim::Done(mut result) => {
                        if let Some(fields) = result.as_object_mut() {
                            fields.insert("replayed".into(), true.into());
                        }
                        return Ok(result);
                    }
                    Claim::Run(running) => Some(running),
                }
            }
            _ => None,
        };
        let result = match self
            .call(
                &revision,
                caller,
                tenant,
                provider,
                capability,
                &tenant.gate,
                input,
            )
            .await
        {
            Ok(Output::Json(result)) => Ok(result),
            Ok(Output::Http(_)) => Err(CallError::Internal(format!(
                "provider `{}` answered an invoke with an HTTP response",
                provider.name
            ))),
            Err(e) => Err(e),
        };
        if let Some(running) = claim {
            running.finish(result.as_ref()).await;
        }
        result
    }

    /// Hands an HTTP delivery to `provider` (a provider of an [`Entry::Http`] domain) for
    /// `tenant`.
    ///
    /// An unknown tenant and a provider not routed to the tenant get the same answer, so the
    /// answer does not tell a caller which tenants exist.
    ///
    /// On a durable route (in a fleet) the delivery is queued instead and answered `202`; a
    /// host then hands it over with [`Runtime::deliver`].
    pub async fn webhook(
        &self,
        tenant_id: &str,
        provider_name: &str,
        request: hyper::Request<Bytes>,
    ) -> Result<hyper::Response<Bytes>, CallError> {
        self.serving(tenant_id)?;
        let revision = self.revision_for(tenant_id);
        if let Some(tenant) = revision.tenants.get(tenant_id) {
            // The route's own signature check: nothing unsigned is queued or reaches the
            // provider.
            if let Some(scheme) = revision.delivery_check(tenant_id, provider_name) {
                self.check_signature(&revision, tenant_id, provider_name, scheme, &request)
                    .await?;
            }
            if let Some(route) = revision.durable_route(tenant_id, provider_name) {
                let Some(queue) = self.deliveries.get() else {
                    return Err(CallError::Internal(
                        "a durable route needs the fleet's queue (run with --cluster)".into(),
                    ));
                };
                let limits = *tenant.gate.limits();
                return queue
                    .accept(
                        tenant_id,
                        provider_name,
                        route,
                        &limits,
                        revision.max_response_bytes,
                        request,
                    )
                    .await;
            }
        }
        self.deliver_on(revision, tenant_id, provider_name, request)
            .await
    }

    /// Checks a delivery against `scheme` with the tenant's key; a refusal is counted
    /// (`greentic_deliveries_refused_total`) and answered `401 signature-invalid`.
    async fn check_signature(
        &self,
        revision: &Revision,
        tenant: &str,
        provider: &str,
        scheme: &greentic_manifest::SignatureScheme,
        request: &hyper::Request<Bytes>,
    ) -> Result<(), CallError> {
        let key = match revision.backends.secrets.get(tenant, &scheme.secret).await {
            Ok(Some(key)) => key,
            Ok(None) => {
                return Err(CallError::Internal(format!(
                    "the route's signature check needs secret `{}` of tenant `{tenant}`, which has no value ({})",
                    scheme.secret,
                    revision.backends.secrets.locate(tenant, &scheme.secret)
                )));
            }
            Err(e) => {
                return Err(CallError::Provider(
                    crate::errors::ProviderFailure::Unavailable {
                        retry_after_ms: Some(1_000),
                        message: format!("the route's signing key could not be read: {e}"),
                    },
                ));
            }
        };
        let given = request
            .headers()
            .get(scheme.header.as_str())
            .map(|v| v.as_bytes());
        scheme.verify(&key, request.body(), given).map_err(|why| {
            self.metrics.inc(
                "greentic_deliveries_refused_total",
                &[
                    ("tenant", tenant),
                    ("provider", provider),
                    ("why", "signature"),
                ],
            );
            CallError::SignatureInvalid(format!(
                "delivery refused by the host before it was queued or handled: {why}"
            ))
        })
    }

    /// Hands an HTTP delivery to `provider` for `tenant` now (what [`Runtime::webhook`] does
    /// on a route that is not durable, and what a host does with a queued delivery).
    pub async fn deliver(
        &self,
        tenant_id: &str,
        provider_name: &str,
        request: hyper::Request<Bytes>,
    ) -> Result<hyper::Response<Bytes>, CallError> {
        self.serving(tenant_id)?;
        let revision = self.revision_for(tenant_id);
        self.deliver_on(revision, tenant_id, provider_name, request)
            .await
    }

    /// [`Runtime::deliver`] on `revision` (the one the delivery was routed by).
    async fn deliver_on(
        &self,
        revision: Arc<Revision>,
        tenant_id: &str,
        provider_name: &str,
        request: hyper::Request<Bytes>,
    ) -> Result<hyper::Response<Bytes>, CallError> {
        let no_route = || CallError::NoRoute {
            capability: format!("webhook {}", crate::errors::clip(provider_name, 128)),
        };
        let tenant = revision.tenants.get(tenant_id).ok_or_else(|| {
            if self.unserved().is_some() {
                self.not_served(tenant_id)
            } else {
                no_route()
            }
        })?;
        let provider = revision
            .providers
            .get(provider_name)
            .filter(|_| revision.routed_to(tenant_id, provider_name))
            .ok_or_else(no_route)?;
        // Only providers of HTTP domains have a delivery gate.
        let gate = tenant
            .webhook_gates
            .get(provider_name)
            .ok_or_else(no_route)?;
        let caller = Caller {
            tenant: tenant_id.to_string(),
            team: None,
            user: None,
        };
        let capability = provider.prepared.info().name;
        match self
            .call(
                &revision,
                &caller,
                tenant,
                provider,
                capability,
                gate,
                Input::Http(request),
            )
            .await?
        {
            Output::Http(response) => Ok(response),
            Output::Json(_) => Err(CallError::Internal(format!(
                "provider `{provider_name}` answered a delivery with JSON"
            ))),
        }
    }

    /// Fires `name` (a schedule) of `provider` for `tenant_id`: a call the host makes itself,
    /// to a provider of an [`Entry::Trigger`] domain, under the tenant's limits.
    pub async fn trigger(
        &self,
        tenant_id: &str,
        provider_name: &str,
        name: &str,
        input: Input,
    ) -> Result<Output, CallError> {
        self.serving(tenant_id)?;
        let revision = self.revision_for(tenant_id);
        let tenant = revision.tenants.get(tenant_id).ok_or_else(|| {
            CallError::BadRequest(format!("tenant `{tenant_id}` is not served by this host"))
        })?;
        let provider = revision
            .providers
            .get(provider_name)
            .ok_or_else(|| CallError::NoRoute {
                capability: name.to_string(),
            })?;
        let domain = provider.prepared.info();
        if domain.entry != Entry::Trigger {
            return Err(domain.wrong_entry(tenant_id, provider_name));
        }
        let caller = Caller {
            tenant: tenant_id.to_string(),
            team: None,
            user: None,
        };
        self.call(
            &revision,
            &caller,
            tenant,
            provider,
            name,
            &tenant.gate,
            input,
        )
        .await
    }

    /// The state capability calls are given (one backend for the life of the process: a
    /// reload that changes `[state]` is refused, so every revision shares it).
    pub fn state(&self) -> Arc<StateCtx> {
        self.current.load().backends.state.clone()
    }

    /// The call envelope every domain shares: the host's span, the call's scope, the
    /// in-flight gauge, the domain's decoding and attempts (see [`Runtime::attempts`]), and
    /// one set of metrics and one log line for every call, whatever its domain.
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        revision: &Revision,
        caller: &Caller,
        tenant: &TenantRuntime,
        provider: &Arc<LoadedProvider>,
        capability: &str,
        gate: &Arc<TenantGate>,
        input: Input,
    ) -> Result<Output, CallError> {
        let started = Instant::now();
        let domain = provider.prepared.info();
        let tracer = global::tracer("greentic-host");
        let name = match domain.entry {
            Entry::Invoke => format!("invoke {capability}"),
            Entry::Http => capability.to_string(),
            Entry::Trigger => format!("fire {capability}"),
        };
        let mut span = tracer
            .span_builder(name)
            .with_kind(opentelemetry::trace::SpanKind::Server)
            .start(&tracer);
        let trace_id = span.span_context().trace_id().to_string();
        let cx =
            opentelemetry::Context::current().with_remote_span_context(span.span_context().clone());
        let scope = self.scope(
            revision, caller, provider, capability, tenant, cx, &trace_id,
        );
        for kv in host_attributes(&scope) {
            span.set_attribute(kv);
        }

        // Counted down on drop, so a call whose client went away is not left counted.
        let in_flight = InFlight::enter(&self.metrics, &caller.tenant);
        let call = Envelope {
            revision,
            caller,
            provider,
            scope: &scope,
            gate,
            trace_id: &trace_id,
        };
        let result = match provider.prepared.decode(input) {
            Ok(decoded) => self.attempts(call, decoded).await,
            Err(e) => Err(e),
        };
        drop(in_flight);
        let result = result.map(|(output, attempts)| match output {
            Output::Json(serde_json::Value::Object(mut fields)) => {
                fields.insert("provider".into(), provider.name.clone().into());
                fields.insert("trace_id".into(), trace_id.clone().into());
                fields.insert("attempts".into(), attempts.into());
                fields.insert("revision".into(), revision.digest.clone().into());
                Output::Json(serde_json::Value::Object(fields))
            }
            other => other,
        });
        // A delivery the provider refused is a success of the call but not of the delivery:
        // its status is the code (`http-401`), so refusals show apart from answers.
        let refused;
        let code = match &result {
            Ok(Output::Http(response)) if response.status().as_u16() >= 400 => {
                refused = format!("http-{}", response.status().as_u16());
                refused.as_str()
            }
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        let elapsed = started.elapsed();
        match &result {
            Ok(_) => span.set_status(Status::Ok),
            Err(e) => {
                span.set_attribute(KeyValue::new("greentic.error.code", e.code()));
                span.set_status(Status::error(e.message()));
            }
        }
        span.end();
        let labels = [
            ("tenant", caller.tenant.as_str()),
            ("provider", provider.name.as_str()),
            ("capability", capability),
            ("code", code),
        ];
        self.metrics.inc("greentic_calls_total", &labels);
        if let Some(failed) = judged(&result) {
            self.stats
                .record(&revision.digest, &caller.tenant, failed, elapsed);
        }
        self.metrics.observe(
            "greentic_call_duration_seconds",
            &labels[..3],
            elapsed.as_secs_f64(),
        );
        tracing::info!(
            target: "greentic::call",
            tenant = %caller.tenant, team = caller.team.as_deref().unwrap_or(""),
            user = caller.user.as_deref().unwrap_or(""), provider = %provider.name,
            domain = domain.name, capability, code, trace_id = %trace_id,
            duration_ms = elapsed.as_millis() as u64,
            "call finished"
        );
        result
    }

    /// A decoded call: the breaker's admission, then attempts — each under a slot of
    /// `call.gate` and in a fresh instance — retried while the retry policy and the deadline
    /// allow; returns the output and the number of attempts.
    async fn attempts(
        &self,
        call: Envelope<'_>,
        decoded: Decoded<Request>,
    ) -> Result<(Output, u32), CallError> {
        let tenant = call.caller.tenant.as_str();
        let provider = call.provider.name.as_str();
        let keyed = decoded.idempotency_key.is_some();
        let ctx = Arc::new(Runtime::tenant_ctx(
            call.revision,
            call.caller,
            call.trace_id,
            decoded.idempotency_key,
        ));
        let request = decoded.request;
        let limits = *call.gate.limits();
        let deadline = Instant::now() + Duration::from_millis(limits.deadline_ms);

        // Settled below; if this future is dropped first (the client went away) or returns
        // early (tenant-busy), dropping the admission gives a half-open probe back.
        let admission = self.breakers.admit(tenant, &call.provider.circuit)?;
        let mut attempt = 1;
        let outcome = loop {
            let permit = call.gate.acquire().await?;
            let fleet = match self.fleet_limits.get() {
                Some(fleet) => {
                    let until = Instant::now() + Duration::from_millis(limits.queue_timeout_ms);
                    Some(
                        fleet
                            .clone()
                            .admit(call.gate.scope(), tenant, &limits, until)
                            .await?,
                    )
                }
                None => None,
            };
            let (result, fuel) = self.attempt(&call, &limits, deadline, &ctx, &request).await;
            permit.settle(fuel);
            if let Some(admission) = fleet {
                admission.settle(fuel).await;
            }
            self.metrics.add(
                "greentic_fuel_consumed_total",
                &[("tenant", tenant), ("provider", provider)],
                fuel as f64,
            );
            match result {
                Err(e)
                    if decoded.retry
                        && attempt < self.retry.max_attempts
                        && RetryPolicy::retryable(&e, keyed) =>
                {
                    let delay = self.retry.delay(attempt, &e);
                    if Instant::now() + delay >= deadline {
                        break Err(e);
                    }
                    self.metrics.inc(
                        "greentic_retries_total",
                        &[
                            ("tenant", tenant),
                            ("provider", provider),
                            ("code", e.code()),
                        ],
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        let failed = outcome.as_ref().err().is_some_and(counts_as_failure);
        let state = admission.settle(failed);
        self.metrics.set(
            "greentic_circuit_open",
            &[("tenant", tenant), ("provider", provider)],
            if state == BreakerState::Closed {
                0.0
            } else {
                1.0
            },
        );
        outcome.map(|output| (output, attempt))
    }

    /// One attempt in a fresh instance, dropped with its store when the attempt ends; the
    /// outcome and the fuel it used. The guest work (store, instance, call) runs in turns of
    /// the [`Scheduler`] (`mode = "fair"`), else on this task.
    async fn attempt(
        &self,
        call: &Envelope<'_>,
        limits: &Limits,
        deadline: Instant,
        ctx: &Arc<TenantCtx>,
        request: &Request,
    ) -> (Result<Output, CallError>, u64) {
        if self.shared.load(Ordering::SeqCst) {
            let cx = DomainCx {
                ctx,
                max_response_bytes: call.revision.max_response_bytes,
            };
            return self
                .attempt_shared(call, limits, deadline, &cx, request)
                .await;
        }
        let engine = call.revision.engine.clone();
        let scope = call.scope.clone();
        let outbound = call.provider.outbound.clone();
        let prepared = call.provider.prepared.clone();
        let (ctx, request, limits) = (ctx.clone(), request.clone(), *limits);
        let max_response_bytes = call.revision.max_response_bytes;
        // Boxed here, once: the future is large (store, instance, call state), and it is
        // handed on by pointer from now on.
        let work = Box::pin(
            async move {
                let mut store =
                    match Runtime::call_store(&engine, scope, &outbound, &limits, deadline) {
                        Ok(store) => store,
                        Err(e) => return (Err(e), 0),
                    };
                let cx = DomainCx {
                    ctx: &ctx,
                    max_response_bytes,
                };
                let run = async {
                    let instance = prepared.instantiate(&mut store).await?;
                    prepared.call(&instance, &mut store, &cx, &request).await
                };
                let result = tokio::time::timeout_at(deadline.into(), run).await;
                // The store (and the instance) is dropped here: nothing survives the call.
                outcome(result, &store, &limits)
            }
            .in_current_span(),
        );
        if !self.scheduler.fair() {
            return work.await;
        }
        let mut turns = std::pin::pin!(self.scheduler.run(
            &call.caller.tenant,
            limits.cpu_weight,
            work
        ));
        // A short call is answered in its first turn, here; only one that goes on waits with a
        // second deadline: the one inside the work fires at its next turn, this one bounds the
        // wait for that turn when the guest threads are overloaded (the work is then dropped,
        // and the call charged all the fuel it was allowed, not knowing what it used).
        let first = std::future::poll_fn(|cx| Poll::Ready(turns.as_mut().poll(cx))).await;
        let ran = match first {
            Poll::Ready(ran) => ran,
            Poll::Pending => {
                let late = deadline + Duration::from_millis(LATE_TURN_MS);
                let Ok(ran) = tokio::time::timeout_at(late.into(), turns).await else {
                    return (
                        Err(CallError::DeadlineExceeded(limits.deadline_ms)),
                        limits.fuel_per_call,
                    );
                };
                ran
            }
        };
        match ran {
            Ok(ran) => {
                self.metrics.add(
                    "greentic_guest_cpu_seconds_total",
                    &[("tenant", call.caller.tenant.as_str())],
                    ran.cpu.as_secs_f64(),
                );
                if ran.moved {
                    self.metrics.inc(
                        "greentic_cpu_bound_calls_total",
                        &[("tenant", call.caller.tenant.as_str())],
                    );
                }
                ran.answer
            }
            Err(_lost) => (
                Err(CallError::Internal(
                    "the call's guest work ended without an answer (the host is stopping, or it failed inside the host); retry it".into(),
                )),
                0,
            ),
        }
    }

    /// [`Runtime::attempt`] in the provider's kept instance, which only this call's scope
    /// (tenant, secrets, config) and outbound policy are swapped into.
    async fn attempt_shared(
        &self,
        call: &Envelope<'_>,
        limits: &Limits,
        deadline: Instant,
        cx: &DomainCx<'_>,
        request: &Request,
    ) -> (Result<Output, CallError>, u64) {
        let prepared = &call.provider.prepared;
        let mut slot = prepared.kept().lock().await;
        let mut kept = match slot.take() {
            Some(kept) => kept,
            None => {
                let mut store = match Runtime::call_store(
                    &call.revision.engine,
                    call.scope.clone(),
                    &call.provider.outbound,
                    limits,
                    deadline,
                ) {
                    Ok(store) => store,
                    Err(e) => return (Err(e), 0),
                };
                match prepared.instantiate(&mut store).await {
                    Ok(instance) => Kept { store, instance },
                    Err(e) => return (Err(classify(&e, store.data())), 0),
                }
            }
        };
        let data = kept.store.data_mut();
        data.imports.scope = call.scope.clone();
        data.imports.outbound.policy = call.provider.outbound.clone();
        data.imports.telemetry = Default::default();
        data.deadline = deadline;
        if let Err(e) = kept.store.set_fuel(limits.fuel_per_call) {
            return (Err(CallError::Internal(e.to_string())), 0);
        }
        yield_regularly(&mut kept.store, &call.revision.engine.options);
        // Kept instances (a conformance mode) run on this task, outside the scheduler.
        let run = prepared.call(&kept.instance, &mut kept.store, cx, request);
        let result = tokio::time::timeout_at(deadline.into(), run).await;
        let (mapped, fuel) = outcome(result, &kept.store, limits);
        // A trapped or interrupted instance is not reused; a provider error leaves it intact.
        if matches!(mapped, Ok(_) | Err(CallError::Provider(_))) {
            *slot = Some(kept);
        }
        (mapped, fuel)
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

/// Whether a call's outcome says anything about its provider's revision, and if so whether
/// it failed — what a canary is judged on. Invokes (authenticated) and fires count, as do
/// deliveries the provider accepted or failed on (2xx/3xx, 5xx); a delivery the provider
/// refused (4xx: unsigned, forged, malformed — anyone can send those) does not, nor does a
/// call the host or the caller ended before the provider was the cause (busy, bad request,
/// no route).
fn judged(result: &Result<Output, CallError>) -> Option<bool> {
    match result {
        Ok(Output::Http(response)) => match response.status().as_u16() {
            400..=499 => None,
            500.. => Some(true),
            _ => Some(false),
        },
        Ok(Output::Json(_)) => Some(false),
        Err(e) if counts_as_failure(e) => Some(true),
        Err(
            CallError::CircuitOpen { .. }
            | CallError::ResultTooLarge { .. }
            | CallError::Provider(crate::errors::ProviderFailure::Internal(_)),
        ) => Some(true),
        // The provider answered, and the answer is about the request or its upstream.
        Err(CallError::Provider(_)) => Some(false),
        Err(_) => None,
    }
}

/// How long past its deadline a call waits for the turn that would end it.
const LATE_TURN_MS: u64 = 100;

/// One call as the envelope hands it to its attempts.
struct Envelope<'a> {
    revision: &'a Revision,
    caller: &'a Caller,
    provider: &'a LoadedProvider,
    scope: &'a Arc<CallScope>,
    gate: &'a Arc<TenantGate>,
    trace_id: &'a str,
}

impl Runtime {
    /// A fresh store for one call: the call's scope and outbound policy, the tenant's limits
    /// (memory cap, host budgets, fuel), regular yields, and the deadline checked on every
    /// call into the host.
    fn call_store(
        engine: &HostEngine,
        scope: Arc<CallScope>,
        outbound: &OutboundPolicy,
        limits: &Limits,
        deadline: Instant,
    ) -> Result<Store<InstanceData>, CallError> {
        let mut store = Store::new(
            &engine.engine,
            InstanceData::new(scope, outbound.clone(), *limits, deadline),
        );
        store.limiter(|s| &mut s.limiter);
        store.call_hook_async(crate::instance::HostCalls);
        store
            .set_fuel(limits.fuel_per_call)
            .map_err(|e| CallError::Internal(e.to_string()))?;
        yield_regularly(&mut store, &engine.options);
        Ok(store)
    }
}

/// What one attempt in `store` came to, and the fuel it used.
fn outcome(
    result: Result<wasmtime::Result<Result<Output, CallError>>, tokio::time::error::Elapsed>,
    store: &Store<InstanceData>,
    limits: &Limits,
) -> (Result<Output, CallError>, u64) {
    let fuel = limits
        .fuel_per_call
        .saturating_sub(store.get_fuel().unwrap_or(0));
    store
        .data()
        .imports
        .telemetry
        .report(&store.data().imports.scope);
    let mapped = match result {
        Err(_elapsed) => Err(CallError::DeadlineExceeded(limits.deadline_ms)),
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => Err(classify(&e, store.data())),
    };
    (mapped, fuel)
}

/// Makes the guest yield to the async executor every [`YIELD_FUEL`] units of fuel (and at
/// every epoch tick on engines built with epochs).
///
/// A CPU-bound guest then never holds an executor thread for long, so other tenants' calls
/// (and health checks) keep being served; the call's deadline is enforced by the
/// `tokio::time::timeout` around it, which drops the call at its next yield.
fn yield_regularly(store: &mut Store<InstanceData>, options: &EngineOptions) {
    if options.fuel {
        // Only fails when fuel is off, which `options.fuel` rules out.
        let _ = store.fuel_async_yield_interval(Some(YIELD_FUEL));
    }
    if options.epoch {
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
    }
}

/// One call in `greentic_calls_in_flight`, for as long as it lives.
struct InFlight<'a> {
    metrics: &'a Metrics,
    tenant: &'a str,
}

impl<'a> InFlight<'a> {
    fn enter(metrics: &'a Metrics, tenant: &'a str) -> InFlight<'a> {
        metrics.gauge_add("greentic_calls_in_flight", &[("tenant", tenant)], 1.0);
        InFlight { metrics, tenant }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics
            .gauge_add("greentic_calls_in_flight", &[("tenant", self.tenant)], -1.0);
    }
}

/// Maps a wasmtime error (trap or limit) of the call in `state` to a call error.
fn classify(e: &wasmtime::Error, state: &InstanceData) -> CallError {
    let limits = &state.limits;
    if state.limiter.hit || e.downcast_ref::<MemoryLimitHit>().is_some() {
        return CallError::MemoryLimit(limits.memory_bytes);
    }
    if let Some(hit) = e.downcast_ref::<ResourceLimitHit>() {
        return CallError::ResourceLimit(hit.to_string());
    }
    if state.imports.budget.was_hit() {
        return CallError::ResourceLimit(
            ResourceLimitHit::HostMemory {
                limit: limits.host_memory_bytes,
                what: "wasi:http resources",
            }
            .to_string(),
        );
    }
    if e.chain().any(|c| {
        matches!(
            c.downcast_ref::<wasmtime::component::ResourceTableError>(),
            Some(wasmtime::component::ResourceTableError::Full)
        )
    }) {
        return CallError::ResourceLimit(
            ResourceLimitHit::Resources {
                limit: limits.max_resources as usize,
            }
            .to_string(),
        );
    }
    if e.downcast_ref::<DeadlineHit>().is_some() {
        return CallError::DeadlineExceeded(limits.deadline_ms);
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => CallError::FuelExhausted(limits.fuel_per_call),
        Some(Trap::Interrupt) => CallError::DeadlineExceeded(limits.deadline_ms),
        Some(Trap::StackOverflow) => {
            CallError::GuestTrap("stack overflow (unbounded recursion?)".into())
        }
        Some(trap) => CallError::GuestTrap(trap.to_string()),
        None => CallError::GuestTrap(clip_guest(format!("{e:#}"))),
    }
}
