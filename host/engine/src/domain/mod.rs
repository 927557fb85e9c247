//! Domains: what kind of provider a component is, and how the host drives a call into it.
//!
//! A domain is one module here (its world's bindings and one [`Domain`] impl) and one line in
//! [`DOMAINS`](crate::domains::DOMAINS). The [`Domain`] trait says which world a provider of
//! the domain implements, how a call reaches it ([`Arrival`]: an invoke body, an HTTP request or
//! a host-fired trigger), how that input becomes the domain's request, and how one instance
//! answers it. Everything else a call needs — routing, the tenant's gate and breaker, a fresh
//! store under the tenant's limits, deadline, fuel, retries, spans, metrics and logs — is the
//! one call envelope the runtime wraps around every domain.

pub mod messaging;
pub mod timer;
pub mod webhook;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use greentic_bundle::{Bundle, Limits, ProviderFacts};
use greentic_capabilities::secrets::SecretBackend;
use greentic_capabilities::state::StateCtx;
use greentic_interfaces::native::{self as n, Exports, Host};
use greentic_metrics::Metrics;
use tokio::task::JoinHandle;
use wasmtime::Store;
use wasmtime::component::InstancePre;

use crate::bindings::greentic::types::types::{ProviderError, TenantCtx};
use crate::errors::{CallError, ProviderFailure, clip_guest};
use crate::instance::InstanceData;

/// How calls arrive at a domain's providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// `POST /v1/invoke/{capability}`, routed by the bundle's `[[routes]]`.
    Invoke,
    /// HTTP requests at `/webhooks/{tenant}/{provider}/…`.
    Http,
    /// Fired by the host itself (schedules), never by a caller.
    Trigger,
}

impl Arrival {
    /// Where a caller reaches a provider that calls arrive at this way, for error messages.
    pub fn reached(self, tenant: &str, provider: &str) -> String {
        match self {
            Arrival::Invoke => "through POST /v1/invoke/{capability}".into(),
            Arrival::Http => format!("at /webhooks/{tenant}/{provider}/"),
            Arrival::Trigger => "only by the host, on the bundle's schedules".into(),
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

/// A slot the host fires (see [`Arrival::Trigger`]).
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
pub struct DomainCx<'a> {
    /// The call's context, as every export of a greentic domain takes it.
    pub ctx: &'a TenantCtx,
    /// The largest response body passed on (`[host].max_body_bytes`).
    pub max_response_bytes: usize,
    /// The call's deadline, in milliseconds (for errors that report it).
    pub deadline_ms: u64,
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
    const ARRIVAL: Arrival;
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
        cx: &DomainCx<'_>,
        request: &Self::Request,
    ) -> impl Future<Output = wasmtime::Result<Result<Output, CallError>>> + Send;

    /// Runs `request` on a remote provider over `link` (see `greentic-remote`): the same
    /// request and answer as [`Domain::call`], over the wire contract. A domain whose world has
    /// no wire form yet refuses, saying so.
    fn call_remote(
        link: &greentic_remote::RemoteLink,
        meta: &greentic_remote::CallMeta,
        cx: &DomainCx<'_>,
        request: &Self::Request,
    ) -> impl Future<Output = Result<Output, CallError>> + Send {
        let _ = (link, meta, cx, request);
        async {
            Err(CallError::BadRequest(format!(
                "`{}` providers cannot run remotely yet; run this one as a component",
                Self::NAME
            )))
        }
    }

    /// Runs `request` on a native provider (a Rust crate linked into the host, see
    /// `greentic_interfaces::native`): the same request and answer as [`Domain::call`], the
    /// provider's trait called in-process with `host`, the call's capabilities. A domain
    /// without a native trait refuses, saying so.
    fn call_native(
        exports: &Exports,
        host: &dyn Host,
        cx: &DomainCx<'_>,
        request: &Self::Request,
    ) -> impl Future<Output = Result<Output, CallError>> + Send {
        let _ = (exports, host, cx, request);
        async {
            Err(CallError::BadRequest(format!(
                "`{}` providers cannot run natively yet; run this one as a component",
                Self::NAME
            )))
        }
    }

    /// Problems with the parts of the bundle that concern this domain, once its providers are
    /// loaded (the timer domain checks its schedules here). None by default.
    fn check(
        bundle: &Bundle,
        providers: &BTreeMap<String, ProviderFacts>,
        secrets: &dyn SecretBackend,
    ) -> Vec<String> {
        let _ = (bundle, providers, secrets);
        Vec::new()
    }

    /// Starts what fires this domain's calls (a trigger domain's schedules), until `stop`
    /// turns true; a task finishes the call it is in before it ends. None by default.
    fn start(host: &Arc<dyn Triggers>, bundle: &Bundle, stop: &Stop) -> Vec<JoinHandle<()>> {
        let _ = (host, bundle, stop);
        Vec::new()
    }
}

/// Turns true when the host stops.
pub type Stop = tokio::sync::watch::Receiver<bool>;

/// What a trigger domain's tasks reach the host through (the runtime implements it).
#[async_trait::async_trait]
pub trait Triggers: Send + Sync + 'static {
    /// Fires `name` of `provider` for `tenant`: a call the host makes itself, under the
    /// tenant's limits, to a provider of an [`Arrival::Trigger`] domain.
    async fn fire(
        &self,
        tenant: &str,
        provider: &str,
        name: &str,
        input: Input,
    ) -> Result<Output, CallError>;
    /// The state backend, where the host keeps its own bookkeeping beside providers' state.
    fn state(&self) -> Arc<StateCtx>;
    /// The limits `tenant`'s calls run under now, if the host serves it.
    fn limits(&self, tenant: &str) -> Option<Limits>;
    /// The host's metrics.
    fn metrics(&self) -> &Metrics;
}

/// A remote call's failure as the call envelope reports it.
pub fn remote_failure(e: greentic_remote::RemoteError, deadline_ms: u64) -> CallError {
    use greentic_remote::RemoteError as R;
    match e {
        R::Unreachable(m) => CallError::RemoteUnreachable(format!(
            "the remote provider is unreachable: {}",
            clip_guest(m)
        )),
        R::Deadline => CallError::DeadlineExceeded(deadline_ms),
        R::TooLarge { limit } => CallError::ResultTooLarge {
            bytes: limit + 1,
            limit,
        },
        R::Protocol(m) => CallError::RemoteProtocol(format!(
            "the remote provider broke the wire contract: {}",
            clip_guest(m)
        )),
    }
}

/// The wire form of a call's `tenant-ctx`.
pub fn wire_ctx(ctx: &TenantCtx) -> greentic_remote::pb::TypesTenantCtx {
    (&native_ctx(ctx)).into()
}

/// A call's `tenant-ctx` in the contracts' Rust shape (what a native provider is handed).
pub fn native_ctx(ctx: &TenantCtx) -> n::TenantCtx {
    use crate::bindings::greentic::types::types::{Cloud, Platform};
    let d = &ctx.deployment;
    n::TenantCtx {
        tenant: ctx.tenant.clone(),
        team: ctx.team.clone(),
        user: ctx.user.clone(),
        deployment: n::DeploymentCtx {
            cloud: match &d.cloud {
                Cloud::Aws => n::Cloud::Aws,
                Cloud::Gcp => n::Cloud::Gcp,
                Cloud::Azure => n::Cloud::Azure,
                Cloud::Hetzner => n::Cloud::Hetzner,
                Cloud::Local => n::Cloud::Local,
                Cloud::Other(o) => n::Cloud::Other(o.clone()),
            },
            region: d.region.clone(),
            platform: match &d.platform {
                Platform::K8s => n::Platform::K8s,
                Platform::Nomad => n::Platform::Nomad,
                Platform::Systemd => n::Platform::Systemd,
                Platform::CfWorkers => n::Platform::CfWorkers,
                Platform::Lambda => n::Platform::Lambda,
                Platform::Baremetal => n::Platform::Baremetal,
                Platform::Other(o) => n::Platform::Other(o.clone()),
            },
            runtime: d.runtime.clone(),
        },
        trace_id: ctx.trace_id.clone(),
        idempotency_key: ctx.idempotency_key.clone(),
    }
}

/// A native provider's `provider-error`, as the host takes a component's.
pub fn native_provider_error(e: n::ProviderError) -> CallError {
    use crate::bindings::greentic::types::types::{RateLimit, UnavailableInfo};
    let e = match e {
        n::ProviderError::InvalidInput(m) => ProviderError::InvalidInput(m),
        n::ProviderError::Unauthorized(m) => ProviderError::Unauthorized(m),
        n::ProviderError::NotFound(m) => ProviderError::NotFound(m),
        n::ProviderError::RateLimited(r) => ProviderError::RateLimited(RateLimit {
            retry_after_ms: r.retry_after_ms,
        }),
        n::ProviderError::Unavailable(u) => ProviderError::Unavailable(UnavailableInfo {
            retry_after_ms: u.retry_after_ms,
            message: u.message,
        }),
        n::ProviderError::Timeout => ProviderError::Timeout,
        n::ProviderError::Internal(m) => ProviderError::Internal(m),
    };
    CallError::Provider(provider_failure(e))
}

/// What a native provider of domain `name` answers when handed another domain's exports: a
/// registration whose manifest names one domain and whose exports are another's.
pub fn wrong_exports(name: &str, exports: &Exports) -> CallError {
    CallError::Internal(format!(
        "the native provider registered for `{name}` exports a `{}` provider",
        exports.domain()
    ))
}

/// A remote provider's `provider-error`, as the host takes a component's.
pub fn wire_provider_error(e: greentic_remote::pb::TypesProviderError) -> CallError {
    use crate::bindings::greentic::types::types::{RateLimit, UnavailableInfo};
    use greentic_remote::pb::types_provider_error::Value as V;
    let e = match e.value {
        Some(V::InvalidInput(m)) => ProviderError::InvalidInput(m),
        Some(V::Unauthorized(m)) => ProviderError::Unauthorized(m),
        Some(V::NotFound(m)) => ProviderError::NotFound(m),
        Some(V::RateLimited(r)) => ProviderError::RateLimited(RateLimit {
            retry_after_ms: r.retry_after_ms,
        }),
        Some(V::Unavailable(u)) => ProviderError::Unavailable(UnavailableInfo {
            retry_after_ms: u.retry_after_ms,
            message: u.message,
        }),
        Some(V::Timeout(_)) => ProviderError::Timeout,
        Some(V::Internal(m)) => ProviderError::Internal(m),
        None => {
            return CallError::RemoteProtocol(
                "the remote provider broke the wire contract: a provider-error without a case"
                    .into(),
            );
        }
    };
    CallError::Provider(provider_failure(e))
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
