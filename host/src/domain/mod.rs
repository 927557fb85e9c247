//! Domains: what kind of provider a component is, and how the host drives a call into it.
//!
//! A domain is one module here (its world's bindings and one [`Domain`] impl) and one line in
//! [`DOMAINS`]. The [`Domain`] trait says which world a provider of the domain implements,
//! how a call reaches it ([`Entry`]: an invoke body, an HTTP request or a host-fired
//! trigger), how that input becomes the domain's request, and how one instance answers it.
//! Everything else a call needs — routing, the tenant's gate and breaker, a fresh store under
//! the tenant's limits, deadline, fuel, retries, spans, metrics and logs — is the one call
//! envelope the runtime wraps around every domain ([`crate::runtime::Runtime::call`]).

pub mod messaging;
pub mod timer;
pub mod webhook;

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use wasmtime::Store;
use wasmtime::component::InstancePre;

use tokio::task::JoinHandle;

use crate::bindings::greentic::types::types::{ProviderError, TenantCtx};
use crate::bundle::Bundle;
use crate::errors::{CallError, ProviderFailure, clip_guest};
use crate::instance::InstanceData;
use crate::loader::LoadedProvider;
use crate::runtime::Runtime;
use greentic_capabilities::secrets::SecretBackend;

/// Every domain this host runs: a new domain is one module and one line here.
pub const DOMAINS: &[DomainInfo] = &[
    DomainInfo::of::<messaging::Messaging>(),
    DomainInfo::of::<webhook::Webhook>(),
    DomainInfo::of::<timer::Timer>(),
];

/// How calls reach a domain's providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// `POST /v1/invoke/{capability}`, routed by the bundle's `[[routes]]`.
    Invoke,
    /// HTTP requests at `/webhooks/{tenant}/{provider}/…`.
    Http,
    /// Fired by the host itself (schedules), never by a caller.
    Trigger,
}

impl Entry {
    /// Where a caller reaches a provider of this entry, for error messages.
    pub fn reached(self, tenant: &str, provider: &str) -> String {
        match self {
            Entry::Invoke => "through POST /v1/invoke/{capability}".into(),
            Entry::Http => format!("at /webhooks/{tenant}/{provider}/"),
            Entry::Trigger => "only by the host, on the bundle's schedules".into(),
        }
    }
}

/// What a call brings in, before the domain decodes it.
#[derive(Debug)]
pub enum Input {
    /// An invoke: the capability and the JSON body, with the `Idempotency-Key` header if any.
    Invoke {
        /// The capability invoked.
        capability: String,
        /// The request body.
        body: serde_json::Value,
        /// The `Idempotency-Key` header.
        idempotency_key: Option<String>,
    },
    /// An HTTP request, its body already read in full within the host's limits.
    Http(hyper::Request<Bytes>),
    /// A slot of a schedule, fired by the host.
    Fire(Fire),
}

/// A slot the host fires (see [`Entry::Trigger`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    /// The schedule's name.
    pub schedule: String,
    /// The slot's planned time, in milliseconds since the Unix epoch.
    pub scheduled_at_ms: u64,
    /// When the host fired it.
    pub fired_at_ms: u64,
    /// Slots not fired since the previous fire.
    pub missed: u32,
    /// The schedule's payload, as JSON text.
    pub payload: String,
}

/// What a call produced.
#[derive(Debug)]
pub enum Output {
    /// A JSON result (the runtime adds `provider`, `trace_id` and `attempts` to an object).
    Json(serde_json::Value),
    /// An HTTP response, its body read in full within `[host].max_body_bytes`.
    Http(hyper::Response<Bytes>),
}

/// A domain's request, decoded from an [`Input`] before any admission or guest code.
pub struct Decoded<R> {
    /// The request.
    pub request: R,
    /// The idempotency key that applies, if any (put into the call's `tenant-ctx`).
    pub idempotency_key: Option<String>,
    /// Whether a failed attempt may be retried at all (the retry policy decides the rest).
    pub retry: bool,
}

/// What a domain's call sees of the call envelope.
pub struct CallCx<'a> {
    /// The call's context, as every export of a greentic domain takes it.
    pub ctx: &'a TenantCtx,
    /// The largest response body passed on (`[host].max_body_bytes`).
    pub max_response_bytes: usize,
}

/// A domain: a world, how its calls arrive, and how one instance answers one call.
///
/// The associated functions are all a domain implements; see [`messaging`] for an invoked
/// domain and [`webhook`] for one reached over HTTP.
pub trait Domain: Send + Sync + 'static {
    /// The name manifests give in `domain`, e.g. `messaging`.
    const NAME: &'static str;
    /// The host world, without version, e.g. `greentic:messaging/provider`.
    const WORLD: &'static str;
    /// How calls arrive.
    const ENTRY: Entry;
    /// The pre-instantiated component (the bindings' `*Pre` type).
    type Pre: Clone + Send + Sync + 'static;
    /// One instance (the bindings' world type).
    type Instance: Send + Sync + 'static;
    /// The decoded input of one call.
    type Request: Send + Sync + 'static;

    /// Wraps a linked component in the world's typed `*Pre`, checking its exports.
    fn pre(pre: InstancePre<InstanceData>) -> wasmtime::Result<Self::Pre>;

    /// The idempotency key of `input`, resolved once for everything that uses it: the fleet's
    /// record, the host's retries and the provider's `tenant-ctx` ([`Domain::decode`] must put
    /// the same one in [`Decoded::idempotency_key`]). By default an invoke's
    /// `Idempotency-Key` header; a domain whose body may carry one too says how the two meet.
    fn idempotency_key(input: &Input) -> Result<Option<String>, CallError> {
        Ok(match input {
            Input::Invoke {
                idempotency_key, ..
            } => idempotency_key.clone(),
            _ => None,
        })
    }

    /// Decodes `input`; a wrong shape is [`CallError::BadRequest`] naming the expected one.
    fn decode(input: Input) -> Result<Decoded<Self::Request>, CallError>;

    /// Instantiates `pre` in `store`.
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<InstanceData>,
    ) -> impl Future<Output = wasmtime::Result<Self::Instance>> + Send;

    /// Runs `request` on `instance`: `Err` for a trap, `Ok(Err)` for a provider's error.
    fn call(
        instance: &Self::Instance,
        store: &mut Store<InstanceData>,
        cx: &CallCx<'_>,
        request: &Self::Request,
    ) -> impl Future<Output = wasmtime::Result<Result<Output, CallError>>> + Send;

    /// Problems with the parts of the bundle that concern this domain, once its providers are
    /// loaded (the timer domain checks its schedules here). None by default.
    fn check(
        bundle: &Bundle,
        providers: &BTreeMap<String, Arc<LoadedProvider>>,
        secrets: &dyn SecretBackend,
    ) -> Vec<String> {
        let _ = (bundle, providers, secrets);
        Vec::new()
    }

    /// Starts what fires this domain's calls (a trigger domain's schedules), until `stop`
    /// turns true; a task finishes the call it is in before it ends. None by default.
    fn start(runtime: &Arc<Runtime>, bundle: &Bundle, stop: &Stop) -> Vec<JoinHandle<()>> {
        let _ = (runtime, bundle, stop);
        Vec::new()
    }
}

/// Turns true when the host stops.
pub type Stop = tokio::sync::watch::Receiver<bool>;

/// Starts every domain's triggers (see [`Domain::start`]).
pub fn start_triggers(runtime: &Arc<Runtime>, bundle: &Bundle, stop: &Stop) -> Vec<JoinHandle<()>> {
    DOMAINS
        .iter()
        .flat_map(|d| (d.start)(runtime, bundle, stop))
        .collect()
}

/// Wraps a linked component as a provider of a domain.
type PrepareFn =
    fn(&'static DomainInfo, InstancePre<InstanceData>) -> wasmtime::Result<Arc<dyn Prepared>>;

/// A boxed future of a domain call through the envelope.
pub type RunFuture<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<(Output, u32), CallError>> + Send + 'a>>;

/// A registered domain, as the loader and the runtime look it up.
#[derive(Debug)]
pub struct DomainInfo {
    /// [`Domain::NAME`].
    pub name: &'static str,
    /// [`Domain::WORLD`].
    pub world: &'static str,
    /// [`Domain::ENTRY`].
    pub entry: Entry,
    prepare: PrepareFn,
    check: CheckFn,
    start: StartFn,
    key: KeyFn,
}

type KeyFn = fn(&Input) -> Result<Option<String>, CallError>;

type CheckFn =
    fn(&Bundle, &BTreeMap<String, Arc<LoadedProvider>>, &dyn SecretBackend) -> Vec<String>;
type StartFn = fn(&Arc<Runtime>, &Bundle, &Stop) -> Vec<JoinHandle<()>>;

impl DomainInfo {
    /// The registry entry of `D`.
    pub const fn of<D: Domain>() -> DomainInfo {
        DomainInfo {
            name: D::NAME,
            world: D::WORLD,
            entry: D::ENTRY,
            prepare: prepare::<D>,
            check: D::check,
            start: D::start,
            key: D::idempotency_key,
        }
    }

    /// The idempotency key of `input` (see [`Domain::idempotency_key`]).
    pub fn idempotency_key(&self, input: &Input) -> Result<Option<String>, CallError> {
        (self.key)(input)
    }

    /// Problems of the bundle's parts that concern this domain (see [`Domain::check`]).
    pub fn check(
        &self,
        bundle: &Bundle,
        providers: &BTreeMap<String, Arc<LoadedProvider>>,
        secrets: &dyn SecretBackend,
    ) -> Vec<String> {
        (self.check)(bundle, providers, secrets)
    }

    /// The error for a call that reaches provider `provider` of this domain the wrong way
    /// (e.g. an invoke of a webhook provider), naming the right way.
    pub fn wrong_entry(&self, tenant: &str, provider: &str) -> CallError {
        CallError::BadRequest(format!(
            "provider `{provider}` is a `{}` provider ({}), reached {}",
            self.name,
            self.world,
            self.entry.reached(tenant, provider)
        ))
    }

    /// Wraps a linked component as a provider of this domain.
    pub fn prepare(
        &'static self,
        pre: InstancePre<InstanceData>,
    ) -> wasmtime::Result<Arc<dyn Prepared>> {
        (self.prepare)(self, pre)
    }
}

fn prepare<D: Domain>(
    info: &'static DomainInfo,
    pre: InstancePre<InstanceData>,
) -> wasmtime::Result<Arc<dyn Prepared>> {
    Ok(Arc::new(Typed::<D> {
        info,
        pre: D::pre(pre)?,
        kept: tokio::sync::Mutex::new(None),
    }))
}

/// The domain whose world `world` (`namespace:package/world@version`) is.
pub fn by_world(world: &str) -> Result<&'static DomainInfo, String> {
    let unversioned = world.split_once('@').map_or(world, |(w, _)| w);
    DOMAINS
        .iter()
        .find(|d| d.world == unversioned)
        .ok_or_else(|| {
            format!(
                "targets `{world}`, which is no domain this host runs (it runs: {}); target one of those worlds or upgrade the host",
                DOMAINS.iter().map(|d| d.world).collect::<Vec<_>>().join(", ")
            )
        })
}

/// The domain named `name`, as manifests and bundles name it.
pub fn by_name(name: &str) -> Option<&'static DomainInfo> {
    DOMAINS.iter().find(|d| d.name == name)
}

/// A provider's component wrapped for its domain: the object the runtime calls through.
pub trait Prepared: Send + Sync {
    /// The provider's domain.
    fn info(&self) -> &'static DomainInfo;
    /// For reaching the typed `*Pre` (see [`crate::loader::LoadedProvider::pre`]).
    fn as_any(&self) -> &dyn Any;
    /// Runs one call through the envelope of `runtime`.
    fn run<'a>(
        &'a self,
        runtime: &'a crate::runtime::Runtime,
        call: crate::runtime::Call<'a>,
        input: Input,
    ) -> RunFuture<'a>;
    /// Drops the instance kept while instances are shared.
    fn release(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// A provider of domain `D`: its `*Pre`, and the instance kept while instances are shared.
pub struct Typed<D: Domain> {
    pub(crate) info: &'static DomainInfo,
    /// The pre-instantiated component.
    pub pre: D::Pre,
    pub(crate) kept: tokio::sync::Mutex<Option<Kept<D>>>,
}

/// One instance kept across calls while instances are shared.
pub(crate) struct Kept<D: Domain> {
    pub(crate) store: Store<InstanceData>,
    pub(crate) instance: D::Instance,
}

impl<D: Domain> Prepared for Typed<D> {
    fn info(&self) -> &'static DomainInfo {
        self.info
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn run<'a>(
        &'a self,
        runtime: &'a crate::runtime::Runtime,
        call: crate::runtime::Call<'a>,
        input: Input,
    ) -> RunFuture<'a> {
        Box::pin(async move {
            let decoded = D::decode(input)?;
            runtime.attempts(self, call, decoded).await
        })
    }

    fn release(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.kept.lock().await.take();
        })
    }
}

/// The host's view of a provider's error, for every domain (they share `provider-error`):
/// every message is cut at [`crate::errors::MAX_GUEST_TEXT`] before it goes anywhere.
pub fn provider_failure(e: ProviderError) -> ProviderFailure {
    match e {
        ProviderError::InvalidInput(m) => ProviderFailure::InvalidInput(clip_guest(m)),
        ProviderError::Unauthorized(m) => ProviderFailure::Unauthorized(clip_guest(m)),
        ProviderError::NotFound(m) => ProviderFailure::NotFound(clip_guest(m)),
        ProviderError::RateLimited(r) => ProviderFailure::RateLimited {
            retry_after_ms: r.retry_after_ms,
        },
        ProviderError::Unavailable(u) => ProviderFailure::Unavailable {
            retry_after_ms: u.retry_after_ms,
            message: clip_guest(u.message),
        },
        ProviderError::Timeout => ProviderFailure::Timeout,
        ProviderError::Internal(m) => ProviderFailure::Internal(clip_guest(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_domain_names_a_world_of_the_contracts_once() {
        let contracts = greentic_interfaces::Contracts::embedded().unwrap();
        let worlds = contracts.worlds();
        let mut names = std::collections::BTreeSet::new();
        for d in DOMAINS {
            assert!(names.insert(d.name), "domain `{}` registered twice", d.name);
            assert!(
                worlds
                    .iter()
                    .any(|w| w.starts_with(&format!("{}@", d.world))),
                "domain `{}`: world `{}` is not in wit/ ({worlds:?})",
                d.name,
                d.world
            );
            let (package, _) = d.world.split_once('/').unwrap();
            assert_eq!(
                package,
                format!("greentic:{}", d.name),
                "a domain is its package"
            );
        }
    }

    #[test]
    fn worlds_resolve_to_their_domain_and_unknown_ones_are_named() {
        assert_eq!(
            by_world("greentic:messaging/provider@1.0.0").unwrap().name,
            "messaging"
        );
        assert_eq!(
            by_world("greentic:webhook/handler@1.2.0").unwrap().entry,
            Entry::Http
        );
        let e = by_world("greentic:fax/provider@1.0.0").unwrap_err();
        assert!(
            e.contains("greentic:fax/provider@1.0.0") && e.contains("greentic:messaging/provider"),
            "{e}"
        );
        assert!(by_name("webhook").is_some() && by_name("fax").is_none());
    }
}
