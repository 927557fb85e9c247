//! The contracts as Rust traits: what a **native** provider implements (a Rust crate compiled
//! into the host, `form = "native"` in a bundle), and what a Rust sidecar implements when it is
//! served by `greentic-remote`'s sidecar adapter.
//!
//! The shapes are the WIT's, as `wit-bindgen` produces them for a component — the same records,
//! variants and field names — so a provider's logic reads the same in every form:
//!
//! | WIT | here |
//! |---|---|
//! | `greentic:types/types` | [`TenantCtx`], [`DeploymentCtx`], [`Cloud`], [`Platform`], [`ProviderError`] |
//! | `greentic:messaging/outbound` (export) | [`messaging::Provider`], [`messaging::Message`], [`messaging::SendResult`] |
//! | `greentic:timer/schedule` (export) | [`timer::Provider`], [`timer::FireInfo`] |
//! | `wasi:http/incoming-handler` (the webhook domain's export) | [`webhook::Provider`], [`webhook::Request`], [`webhook::Response`] |
//! | `greentic:provider/imports` (secrets, config, state, events, telemetry) | [`Host`] |
//!
//! A provider's export takes a [`Host`]: the host's capabilities *scoped to that one call* —
//! its tenant, the provider's grants, the tenant's bound secrets and configuration, the call's
//! span. Every method is the WIT import of the same name; its outer `Result` is the host
//! refusing the call itself ([`Refused`]: a capability not granted, a budget exhausted, the
//! call over), which a component would see as a missing import or a trap. Propagate it with
//! `?`: the host fails the call the way it fails a component's.
//!
//! A native provider is registered at build time with [`register_native!`] and linked into a
//! host binary by depending on its crate (see the README's "Provider forms").
//!
//! ```
//! use greentic_interfaces::native::{Host, ProviderError, TenantCtx, messaging};
//!
//! struct Hello;
//!
//! #[greentic_interfaces::native::async_trait]
//! impl messaging::Provider for Hello {
//!     async fn send(
//!         &self,
//!         host: &dyn Host,
//!         ctx: TenantCtx,
//!         msg: messaging::Message,
//!     ) -> Result<messaging::SendResult, ProviderError> {
//!         let span = host.span_new("hello.send", None).await?;
//!         host.span_set_attribute(span, "to", &msg.to).await?;
//!         host.span_end(span).await?;
//!         Ok(messaging::SendResult { id: format!("{}:{}", ctx.tenant, msg.to), delivered_at_ms: 0 })
//!     }
//! }
//!
//! greentic_interfaces::register_native!(
//!     "hello",
//!     r#"{"name": "hello", "version": "1.0.0", "domain": "messaging", "capabilities": ["send"],
//!         "compat": {"wit": "greentic:messaging/provider@1.0.x"}}"#,
//!     || greentic_interfaces::native::Exports::Messaging(std::sync::Arc::new(Hello))
//! );
//! ```

use std::sync::Arc;

pub use async_trait::async_trait;
#[doc(hidden)]
pub use inventory;
pub use zeroize::Zeroizing;

/// `greentic:types/types.cloud`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cloud {
    /// `aws`.
    Aws,
    /// `gcp`.
    Gcp,
    /// `azure`.
    Azure,
    /// `hetzner`.
    Hetzner,
    /// `local`.
    Local,
    /// `other(string)`.
    Other(String),
}

/// `greentic:types/types.platform`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platform {
    /// `k8s`.
    K8s,
    /// `nomad`.
    Nomad,
    /// `systemd`.
    Systemd,
    /// `cf-workers`.
    CfWorkers,
    /// `lambda`.
    Lambda,
    /// `baremetal`.
    Baremetal,
    /// `other(string)`.
    Other(String),
}

/// `greentic:types/types.deployment-ctx`: where the host serving the call runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentCtx {
    /// The cloud.
    pub cloud: Cloud,
    /// The region, if known.
    pub region: Option<String>,
    /// The platform.
    pub platform: Platform,
    /// The runtime, if named.
    pub runtime: Option<String>,
}

/// `greentic:types/types.tenant-ctx`: who a call is for, from the caller's verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantCtx {
    /// The tenant.
    pub tenant: String,
    /// The team, if the token names one.
    pub team: Option<String>,
    /// The user, if the token names one.
    pub user: Option<String>,
    /// Where the host runs.
    pub deployment: DeploymentCtx,
    /// The call's trace id.
    pub trace_id: Option<String>,
    /// The idempotency key that applies to the call, if any.
    pub idempotency_key: Option<String>,
}

/// `greentic:types/types.rate-limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// When to try again.
    pub retry_after_ms: u64,
}

/// `greentic:types/types.unavailable-info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnavailableInfo {
    /// When to try again, if the upstream said.
    pub retry_after_ms: Option<u64>,
    /// What is unavailable.
    pub message: String,
}

/// `greentic:types/types.provider-error`: how a provider says a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderError {
    /// The input is wrong; retrying will not help.
    InvalidInput(String),
    /// The upstream refused the tenant's credentials.
    Unauthorized(String),
    /// What the call names does not exist upstream.
    NotFound(String),
    /// The upstream limits the rate.
    RateLimited(RateLimit),
    /// The upstream is unavailable for now.
    Unavailable(UnavailableInfo),
    /// The upstream did not answer in time.
    Timeout,
    /// Anything else.
    Internal(String),
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProviderError::InvalidInput(m) => write!(f, "invalid input: {m}"),
            ProviderError::Unauthorized(m) => write!(f, "unauthorized: {m}"),
            ProviderError::NotFound(m) => write!(f, "not found: {m}"),
            ProviderError::RateLimited(r) => {
                write!(f, "rate limited (retry after {} ms)", r.retry_after_ms)
            }
            ProviderError::Unavailable(u) => write!(f, "unavailable: {}", u.message),
            ProviderError::Timeout => write!(f, "timeout"),
            ProviderError::Internal(m) => write!(f, "internal: {m}"),
        }
    }
}

impl std::error::Error for ProviderError {}

/// Why the host refused a [`Host`] call outright (what a component meets as a missing import
/// or a trap). Propagate it: the host fails the call for it whatever the provider answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The bundle does not grant the provider this capability.
    NotGranted(String),
    /// A limit of the call was reached (host memory, resources, events); the call fails.
    Trapped(String),
    /// A span handle that is not this call's.
    NoSuchSpan(u64),
    /// The call this host was handed for has ended (or never existed).
    Ended(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::NotGranted(c) => write!(f, "this provider is not granted `{c}` by the bundle"),
            Refused::Trapped(m) => write!(f, "the host stopped the call: {m}"),
            Refused::NoSuchSpan(h) => write!(f, "no span {h} in this call"),
            Refused::Ended(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Refused {}

impl From<Refused> for ProviderError {
    fn from(r: Refused) -> ProviderError {
        ProviderError::Internal(r.to_string())
    }
}

/// `greentic:secrets/store.secret-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// Not bound for this tenant.
    NotFound(String),
    /// Not declared by the provider and granted by the bundle.
    Denied(String),
    /// Not a secret name.
    InvalidName(String),
}

/// `greentic:config/config.config-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// Nothing at the pointer.
    NotFound(String),
    /// Not a JSON pointer.
    InvalidKey(String),
}

/// `greentic:state/store.state-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// Not a state key.
    InvalidKey(String),
    /// Over the bundle's bounds.
    TooLarge(String),
    /// The entry's revision is not the one expected (it is this one).
    Conflict(u64),
    /// The backend is unavailable.
    Unavailable(String),
}

/// `greentic:state/store.entry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Vec<u8>,
    /// Its revision.
    pub revision: u64,
}

/// `greentic:state/store.page`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Keys of this page.
    pub keys: Vec<String>,
    /// Where the next page starts, if there is one.
    pub next: Option<String>,
}

/// `greentic:events/publish.event-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventError {
    /// Not an event name.
    InvalidName(String),
    /// The payload is not a JSON object.
    InvalidPayload(String),
    /// More events than a call may publish.
    TooMany(u32),
    /// A payload over the limit.
    TooLarge(u64),
    /// The sink is unavailable.
    Unavailable(String),
}

/// `greentic:telemetry/types.attribute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

impl Attribute {
    /// `key = value`.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Attribute {
        Attribute {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// `greentic:telemetry/types.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `trace`.
    Trace,
    /// `debug`.
    Debug,
    /// `info`.
    Info,
    /// `warn`.
    Warn,
    /// `error`.
    Error,
}

/// `greentic:telemetry/tracing.span-status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanStatus {
    /// `unset`.
    Unset,
    /// `ok`.
    Ok,
    /// `error(string)`.
    Error(String),
}

/// A span of this call (`greentic:telemetry/tracing.span`), by handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub u64);

/// The host's capabilities, scoped to one call: `greentic:provider/imports` as Rust.
#[async_trait]
pub trait Host: Send + Sync {
    /// `greentic:secrets/store.get`: the tenant's value of secret `name`. Each read is audited.
    async fn secret(&self, name: &str) -> Result<Result<Zeroizing<Vec<u8>>, SecretError>, Refused>;
    /// `greentic:config/config.document`: the tenant's configuration as JSON text.
    async fn config_document(&self) -> Result<String, Refused>;
    /// `greentic:config/config.get`: the JSON text at `pointer` (RFC 6901).
    async fn config_get(&self, pointer: &str) -> Result<Result<String, ConfigError>, Refused>;
    /// `greentic:state/store.get`.
    async fn state_get(&self, key: &str) -> Result<Result<Option<Entry>, StateError>, Refused>;
    /// `greentic:state/store.set`: the new revision.
    async fn state_set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<Result<u64, StateError>, Refused>;
    /// `greentic:state/store.delete`: whether it existed.
    async fn state_delete(&self, key: &str) -> Result<Result<bool, StateError>, Refused>;
    /// `greentic:state/store.compare-and-swap`: the new revision.
    async fn state_compare_and_swap(
        &self,
        key: &str,
        expected: u64,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<Result<u64, StateError>, Refused>;
    /// `greentic:state/store.list-keys`.
    async fn state_list_keys(
        &self,
        prefix: &str,
        after: Option<String>,
        limit: u32,
    ) -> Result<Result<Page, StateError>, Refused>;
    /// `greentic:events/publish.publish`.
    async fn publish(&self, name: &str, payload: &str) -> Result<Result<(), EventError>, Refused>;
    /// `greentic:telemetry/logs.log`.
    async fn log(
        &self,
        level: Level,
        message: &str,
        attributes: Vec<Attribute>,
    ) -> Result<(), Refused>;
    /// `greentic:telemetry/tracing.span` constructor: a child of `parent`, or of the host's
    /// span for the call.
    async fn span_new(&self, name: &str, parent: Option<SpanId>) -> Result<SpanId, Refused>;
    /// `span.set-attribute`.
    async fn span_set_attribute(&self, span: SpanId, key: &str, value: &str)
    -> Result<(), Refused>;
    /// `span.add-event`.
    async fn span_add_event(
        &self,
        span: SpanId,
        name: &str,
        attributes: Vec<Attribute>,
    ) -> Result<(), Refused>;
    /// `span.set-status`.
    async fn span_set_status(&self, span: SpanId, status: SpanStatus) -> Result<(), Refused>;
    /// `span.end`.
    async fn span_end(&self, span: SpanId) -> Result<(), Refused>;
    /// `greentic:telemetry/metrics.counter-add`.
    async fn counter_add(
        &self,
        name: &str,
        value: u64,
        attributes: Vec<Attribute>,
    ) -> Result<(), Refused>;
    /// `greentic:telemetry/metrics.histogram-record`.
    async fn histogram_record(
        &self,
        name: &str,
        value: f64,
        attributes: Vec<Attribute>,
    ) -> Result<(), Refused>;
}

/// `greentic:messaging/provider`'s export.
pub mod messaging {
    use super::{Host, ProviderError, TenantCtx, async_trait};

    /// `greentic:messaging/outbound.message`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Message {
        /// Recipient.
        pub to: String,
        /// Text.
        pub text: String,
        /// Thread, if any.
        pub thread: Option<String>,
        /// The message's own idempotency key, if the caller gave one in the body.
        pub idempotency_key: Option<String>,
    }

    /// `greentic:messaging/outbound.send-result`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct SendResult {
        /// The upstream's id of the message.
        pub id: String,
        /// When it was delivered, in milliseconds since the Unix epoch.
        pub delivered_at_ms: u64,
    }

    /// `greentic:messaging/outbound`: a messaging provider.
    #[async_trait]
    pub trait Provider: Send + Sync + 'static {
        /// `send`: delivers `msg` for the tenant of `ctx`.
        async fn send(
            &self,
            host: &dyn Host,
            ctx: TenantCtx,
            msg: Message,
        ) -> Result<SendResult, ProviderError>;
    }
}

/// `greentic:timer/scheduled`'s export.
pub mod timer {
    use super::{Host, ProviderError, TenantCtx, async_trait};

    /// `greentic:timer/schedule.fire-info`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct FireInfo {
        /// The schedule's name.
        pub schedule: String,
        /// The slot's planned time (ms since the Unix epoch).
        pub scheduled_at_ms: u64,
        /// When the host fired it.
        pub fired_at_ms: u64,
        /// Slots not fired since the previous fire.
        pub missed: u32,
        /// The schedule's payload, as JSON text.
        pub payload: String,
    }

    /// `greentic:timer/schedule`: a scheduled provider.
    #[async_trait]
    pub trait Provider: Send + Sync + 'static {
        /// `on-fire`: a slot of one of the tenant's schedules.
        async fn on_fire(
            &self,
            host: &dyn Host,
            ctx: TenantCtx,
            info: FireInfo,
        ) -> Result<(), ProviderError>;
    }
}

/// `greentic:webhook/handler`'s export (`wasi:http/incoming-handler`): an HTTP delivery in,
/// an HTTP answer out.
pub mod webhook {
    use super::{Host, TenantCtx, async_trait};

    /// A delivery, its body read in full within the host's limits. Its headers are the
    /// sender's without any `x-greentic-*` one, plus the host's `x-greentic-tenant` and
    /// `x-greentic-trace-id` — what a component's `incoming-request` shows.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Request {
        /// `GET`, `POST`, ….
        pub method: String,
        /// The path below `/webhooks/{tenant}/{provider}` and the query.
        pub path_with_query: String,
        /// Headers, in order, repeated names kept.
        pub headers: Vec<(String, Vec<u8>)>,
        /// The body.
        pub body: Vec<u8>,
    }

    /// The answer to the sender.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Response {
        /// The status.
        pub status: u16,
        /// Headers.
        pub headers: Vec<(String, Vec<u8>)>,
        /// The body (at most the host's `max_body_bytes`).
        pub body: Vec<u8>,
    }

    /// `wasi:http/incoming-handler` for a webhook provider.
    #[async_trait]
    pub trait Provider: Send + Sync + 'static {
        /// `handle`: answers the delivery `request` for the tenant of `ctx` (its path names
        /// the tenant; the host checked the route).
        async fn handle(&self, host: &dyn Host, ctx: TenantCtx, request: Request) -> Response;
    }
}

/// What a native provider exports: one domain's trait object.
#[derive(Clone)]
pub enum Exports {
    /// A `greentic:messaging/provider`.
    Messaging(Arc<dyn messaging::Provider>),
    /// A `greentic:timer/scheduled` provider.
    Timer(Arc<dyn timer::Provider>),
    /// A `greentic:webhook/handler`.
    Webhook(Arc<dyn webhook::Provider>),
}

impl Exports {
    /// The domain, as manifests name it.
    pub fn domain(&self) -> &'static str {
        match self {
            Exports::Messaging(_) => "messaging",
            Exports::Timer(_) => "timer",
            Exports::Webhook(_) => "webhook",
        }
    }
}

/// A native provider compiled into this binary (see [`register_native!`]).
pub struct Registration {
    /// Its name in bundles: `source = "native:NAME"`.
    pub name: &'static str,
    /// Its manifest (the JSON a component embeds), checked like a component's at load.
    pub manifest: &'static str,
    /// Makes the provider (once per loaded revision).
    pub make: fn() -> Exports,
}

inventory::collect!(Registration);

/// Every native provider compiled into this binary, by name.
pub fn registered() -> Vec<&'static Registration> {
    let mut all: Vec<_> = inventory::iter::<Registration>.into_iter().collect();
    all.sort_by_key(|r| r.name);
    all
}

/// The native provider registered as `name`.
pub fn find(name: &str) -> Option<&'static Registration> {
    inventory::iter::<Registration>
        .into_iter()
        .find(|r| r.name == name)
}

/// Registers a native provider into every binary its crate is linked into:
/// `register_native!("NAME", MANIFEST_JSON, || Exports::…(Arc::new(…)))`. A bundle reaches
/// it as `[providers.X] form = "native"`, `source = "native:NAME"`.
#[macro_export]
macro_rules! register_native {
    ($name:expr, $manifest:expr, $make:expr $(,)?) => {
        $crate::native::inventory::submit! {
            $crate::native::Registration {
                name: $name,
                manifest: $manifest,
                make: $make,
            }
        }
    };
}
