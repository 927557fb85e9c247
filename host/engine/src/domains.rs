//! The domains this host runs ([`DOMAINS`]), and a provider's component prepared for its domain
//! ([`Prepared`]): the one place where a domain's types meet the runtime, which calls every
//! provider through the same object-safe interface, whatever its domain.

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use greentic_bundle::{Bundle, ProviderFacts};
use greentic_capabilities::secrets::SecretBackend;
use greentic_interfaces::native::{Exports, Host};
use tokio::task::JoinHandle;
use wasmtime::Store;
use wasmtime::component::InstancePre;

use crate::domain::{
    Arrival, Decoded, Domain, DomainCx, Input, Output, Stop, Triggers, messaging, timer, webhook,
};
use crate::errors::CallError;
use crate::instance::InstanceData;

/// Every domain this host runs: a new domain is one module under `domain/` and one line here.
pub const DOMAINS: &[DomainInfo] = &[
    DomainInfo::of::<messaging::Messaging>(),
    DomainInfo::of::<webhook::Webhook>(),
    DomainInfo::of::<timer::Timer>(),
];

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

/// Starts every domain's triggers (see [`Domain::start`]).
pub fn start_triggers(
    host: &Arc<dyn Triggers>,
    bundle: &Bundle,
    stop: &Stop,
) -> Vec<JoinHandle<()>> {
    DOMAINS
        .iter()
        .flat_map(|d| (d.start)(host, bundle, stop))
        .collect()
}

/// A registered domain, as the loader and the runtime look it up.
#[derive(Debug)]
pub struct DomainInfo {
    /// [`Domain::NAME`].
    pub name: &'static str,
    /// [`Domain::WORLD`].
    pub world: &'static str,
    /// [`Domain::ARRIVAL`].
    pub arrival: Arrival,
    prepare: PrepareFn,
    prepare_outside: fn(&'static DomainInfo, Option<Exports>) -> Arc<dyn Prepared>,
    check: CheckFn,
    start: StartFn,
    key: KeyFn,
}

/// Wraps a linked component as a provider of a domain.
type PrepareFn =
    fn(&'static DomainInfo, InstancePre<InstanceData>) -> wasmtime::Result<Arc<dyn Prepared>>;
type KeyFn = fn(&Input) -> Result<Option<String>, CallError>;
type CheckFn = fn(&Bundle, &BTreeMap<String, ProviderFacts>, &dyn SecretBackend) -> Vec<String>;
type StartFn = fn(&Arc<dyn Triggers>, &Bundle, &Stop) -> Vec<JoinHandle<()>>;

impl DomainInfo {
    /// The registry entry of `D`.
    pub const fn of<D: Domain>() -> DomainInfo {
        DomainInfo {
            name: D::NAME,
            world: D::WORLD,
            arrival: D::ARRIVAL,
            prepare: prepare::<D>,
            prepare_outside: prepare_outside::<D>,
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
        providers: &BTreeMap<String, ProviderFacts>,
        secrets: &dyn SecretBackend,
    ) -> Vec<String> {
        (self.check)(bundle, providers, secrets)
    }

    /// The error for a call that reaches provider `provider` of this domain the wrong way
    /// (e.g. an invoke of a webhook provider), naming the right way.
    pub fn wrong_arrival(&self, tenant: &str, provider: &str) -> CallError {
        CallError::BadRequest(format!(
            "provider `{provider}` is a `{}` provider ({}), reached {}",
            self.name,
            self.world,
            self.arrival.reached(tenant, provider)
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

impl DomainInfo {
    /// This domain's calls for a provider outside the host (`form = "remote"`).
    pub fn prepare_remote(&'static self) -> Arc<dyn Prepared> {
        (self.prepare_outside)(self, None)
    }

    /// This domain's calls for a native provider (`form = "native"`) exporting `exports`.
    pub fn prepare_native(&'static self, exports: Exports) -> Arc<dyn Prepared> {
        (self.prepare_outside)(self, Some(exports))
    }
}

fn prepare_outside<D: Domain>(
    info: &'static DomainInfo,
    exports: Option<Exports>,
) -> Arc<dyn Prepared> {
    Arc::new(Outside::<D> {
        info,
        exports,
        kept: tokio::sync::Mutex::new(None),
        domain: std::marker::PhantomData,
    })
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

/// A domain's decoded request, as the runtime holds it across attempts (its type is the
/// domain's [`Domain::Request`]).
pub type Request = Arc<dyn Any + Send + Sync>;

/// An instance of a provider's component (its type is the domain's [`Domain::Instance`]).
pub type Instance = Box<dyn Any + Send + Sync>;

/// A boxed future borrowing for `'a`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One instance kept across calls while instances are shared, and its store.
pub struct Kept {
    /// The store (its data swapped to each call's scope).
    pub store: Store<InstanceData>,
    /// The instance.
    pub instance: Instance,
}

/// A provider's component wrapped for its domain: what the runtime calls every provider
/// through. Each method is its domain's [`Domain`] function, on type-erased values.
pub trait Prepared: Send + Sync {
    /// The provider's domain.
    fn info(&self) -> &'static DomainInfo;
    /// For reaching the typed `*Pre` (see [`Typed`]).
    fn as_any(&self) -> &dyn Any;
    /// [`Domain::decode`].
    fn decode(&self, input: Input) -> Result<Decoded<Request>, CallError>;
    /// [`Domain::instantiate`], in `store`.
    fn instantiate<'a>(
        &'a self,
        store: &'a mut Store<InstanceData>,
    ) -> BoxFuture<'a, wasmtime::Result<Instance>>;
    /// [`Domain::call`]: runs `request` (from [`Prepared::decode`]) on `instance` (from
    /// [`Prepared::instantiate`]).
    fn call<'a>(
        &'a self,
        instance: &'a Instance,
        store: &'a mut Store<InstanceData>,
        cx: &'a DomainCx<'a>,
        request: &'a Request,
    ) -> BoxFuture<'a, wasmtime::Result<Result<Output, CallError>>>;
    /// The instance kept across calls while instances are shared.
    fn kept(&self) -> &tokio::sync::Mutex<Option<Kept>>;
    /// [`Domain::call_remote`]: runs `request` on the remote provider behind `link`.
    fn call_remote<'a>(
        &'a self,
        link: &'a greentic_remote::RemoteLink,
        meta: &'a greentic_remote::CallMeta,
        cx: &'a DomainCx<'a>,
        request: &'a Request,
    ) -> BoxFuture<'a, Result<Output, CallError>>;
    /// [`Domain::call_native`]: runs `request` in the native provider, handing it `host`.
    fn call_native<'a>(
        &'a self,
        host: &'a dyn Host,
        cx: &'a DomainCx<'a>,
        request: &'a Request,
    ) -> BoxFuture<'a, Result<Output, CallError>>;
}

/// What a provider of one form answers when called the way of another: a bug in the runtime.
fn other_form(how: &str) -> CallError {
    CallError::Internal(format!("a provider of another form was called as {how}"))
}

/// What a provider that is no component answers when asked for an instance: a bug in the
/// runtime.
fn no_component() -> wasmtime::Error {
    wasmtime::Error::msg("a remote or native provider has no component to instantiate")
}

/// A provider of domain `D` that is no component: remote (its calls go over its link, which the
/// runtime holds) or native (`exports`, a Rust crate linked into the host, called in-process).
pub struct Outside<D: Domain> {
    info: &'static DomainInfo,
    /// The native provider's exports; `None` for a remote one.
    exports: Option<Exports>,
    kept: tokio::sync::Mutex<Option<Kept>>,
    domain: std::marker::PhantomData<fn() -> D>,
}

impl<D: Domain> Outside<D> {
    /// `request` as this domain's, or the runtime's bug named.
    fn request<'a>(&self, request: &'a Request) -> Result<&'a D::Request, CallError> {
        request
            .downcast_ref::<D::Request>()
            .ok_or_else(|| other_form("a provider of another domain"))
    }
}

impl<D: Domain> Prepared for Outside<D> {
    fn info(&self) -> &'static DomainInfo {
        self.info
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn decode(&self, input: Input) -> Result<Decoded<Request>, CallError> {
        decode::<D>(input)
    }

    fn instantiate<'a>(
        &'a self,
        _store: &'a mut Store<InstanceData>,
    ) -> BoxFuture<'a, wasmtime::Result<Instance>> {
        Box::pin(async { Err(no_component()) })
    }

    fn call<'a>(
        &'a self,
        _instance: &'a Instance,
        _store: &'a mut Store<InstanceData>,
        _cx: &'a DomainCx<'a>,
        _request: &'a Request,
    ) -> BoxFuture<'a, wasmtime::Result<Result<Output, CallError>>> {
        Box::pin(async { Err(no_component()) })
    }

    fn kept(&self) -> &tokio::sync::Mutex<Option<Kept>> {
        &self.kept
    }

    fn call_remote<'a>(
        &'a self,
        link: &'a greentic_remote::RemoteLink,
        meta: &'a greentic_remote::CallMeta,
        cx: &'a DomainCx<'a>,
        request: &'a Request,
    ) -> BoxFuture<'a, Result<Output, CallError>> {
        Box::pin(async move {
            if self.exports.is_some() {
                return Err(other_form("a remote one"));
            }
            D::call_remote(link, meta, cx, self.request(request)?).await
        })
    }

    fn call_native<'a>(
        &'a self,
        host: &'a dyn Host,
        cx: &'a DomainCx<'a>,
        request: &'a Request,
    ) -> BoxFuture<'a, Result<Output, CallError>> {
        Box::pin(async move {
            let Some(exports) = &self.exports else {
                return Err(other_form("a native one"));
            };
            D::call_native(exports, host, cx, self.request(request)?).await
        })
    }
}

/// A provider of domain `D`: its `*Pre`, and the instance kept while instances are shared.
pub struct Typed<D: Domain> {
    info: &'static DomainInfo,
    /// The pre-instantiated component.
    pub pre: D::Pre,
    kept: tokio::sync::Mutex<Option<Kept>>,
}

/// [`Domain::decode`], its request type-erased: the same for every form.
fn decode<D: Domain>(input: Input) -> Result<Decoded<Request>, CallError> {
    let decoded = D::decode(input)?;
    Ok(Decoded {
        request: Arc::new(decoded.request),
        idempotency_key: decoded.idempotency_key,
        retry: decoded.retry,
    })
}

/// A value handed back to the `Prepared` that did not make it: a bug in the runtime.
fn foreign(what: &str) -> wasmtime::Error {
    wasmtime::Error::msg(format!(
        "{what} of another domain was handed to this provider"
    ))
}

impl<D: Domain> Prepared for Typed<D> {
    fn info(&self) -> &'static DomainInfo {
        self.info
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn decode(&self, input: Input) -> Result<Decoded<Request>, CallError> {
        decode::<D>(input)
    }

    fn instantiate<'a>(
        &'a self,
        store: &'a mut Store<InstanceData>,
    ) -> BoxFuture<'a, wasmtime::Result<Instance>> {
        Box::pin(async move {
            let instance = D::instantiate(&self.pre, store).await?;
            Ok(Box::new(instance) as Instance)
        })
    }

    fn call<'a>(
        &'a self,
        instance: &'a Instance,
        store: &'a mut Store<InstanceData>,
        cx: &'a DomainCx<'a>,
        request: &'a Request,
    ) -> BoxFuture<'a, wasmtime::Result<Result<Output, CallError>>> {
        Box::pin(async move {
            let instance = instance
                .downcast_ref::<D::Instance>()
                .ok_or_else(|| foreign("an instance"))?;
            let request = request
                .downcast_ref::<D::Request>()
                .ok_or_else(|| foreign("a request"))?;
            D::call(instance, store, cx, request).await
        })
    }

    fn kept(&self) -> &tokio::sync::Mutex<Option<Kept>> {
        &self.kept
    }

    fn call_remote<'a>(
        &'a self,
        _link: &'a greentic_remote::RemoteLink,
        _meta: &'a greentic_remote::CallMeta,
        _cx: &'a DomainCx<'a>,
        _request: &'a Request,
    ) -> BoxFuture<'a, Result<Output, CallError>> {
        Box::pin(async { Err(other_form("a remote one")) })
    }

    fn call_native<'a>(
        &'a self,
        _host: &'a dyn Host,
        _cx: &'a DomainCx<'a>,
        _request: &'a Request,
    ) -> BoxFuture<'a, Result<Output, CallError>> {
        Box::pin(async { Err(other_form("a native one")) })
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
            by_world("greentic:webhook/handler@1.2.0").unwrap().arrival,
            Arrival::Http
        );
        let e = by_world("greentic:fax/provider@1.0.0").unwrap_err();
        assert!(
            e.contains("greentic:fax/provider@1.0.0") && e.contains("greentic:messaging/provider"),
            "{e}"
        );
        assert!(by_name("webhook").is_some() && by_name("fax").is_none());
    }
}
