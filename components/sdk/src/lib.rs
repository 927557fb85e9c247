//! Guest SDK for greentic provider components.
//!
//! A provider is a Rust `cdylib` built for `wasm32-wasip2` (`cargo build --target wasm32-wasip2`
//! or `cargo component build`). Implement your domain's trait and mark the impl with
//! [`provider`]; it embeds the crate's `provider.json`, exports the provider in its world and
//! wraps every call in the provider's span, outcome and `calls` counter (this is the whole
//! `src/lib.rs` of a provider crate with a `provider.json` beside its `Cargo.toml`):
//!
//! ```text
//! use greentic_provider_sdk::prelude::*;
//!
//! struct Echo;
//!
//! #[provider]
//! impl Messaging for Echo {
//!     fn send(ctx: &Ctx, msg: Message) -> Result<SendResult, ProviderError> {
//!         ctx.attr("to", &msg.to);
//!         Ok(SendResult { id: format!("{}:{}", ctx.tenant, msg.to), delivered_at_ms: now_ms() })
//!     }
//! }
//! ```
//!
//! The WIT contracts are inside this crate (`contracts/`), so it builds from its published package.
//! Everything a provider usually needs is in [`prelude`]:
//!
//! - the domain traits [`Messaging`], [`Webhook`] (`fn handle(ctx, Request) -> Response`) and
//!   [`Timer`], and the call's [`Ctx`] (tenant, trace id, the one resolved idempotency key, the
//!   span);
//! - helpers: [`telemetry`] (logs, spans, metrics), [`secrets`] (zeroized values, errors mapped
//!   to provider errors), [`config`] (typed configuration), [`state`] (the tenant-scoped
//!   key-value store, de-duplication), [`errors`] (HTTP status to provider error), [`http`] (a
//!   blocking outbound HTTP client) and [`incoming`] (webhook request reading and HMAC
//!   signatures).
//!
//! The generated bindings of every world stay available for code that needs them:
//! [`messaging`] (`greentic:messaging/provider`), [`webhook`] (`greentic:webhook/handler`) and
//! [`timer`] (`greentic:timer/scheduled`), each with its export macro; the imports they share
//! (secrets, telemetry, config, state, types) are generated once, in [`imports`].

#![allow(missing_docs)] // generated bindings carry the WIT docs; hand-written modules are documented.

/// `wit_bindgen::generate!` over the repository's WIT (WASI and the shared greentic packages)
/// and `$wit`, the world's own file; the rest of the options follow.
macro_rules! generate {
    ([$($wit:literal),* $(,)?], $($options:tt)*) => {
        wit_bindgen::generate!({
            path: [
                "contracts/deps/io.wit",
                "contracts/deps/clocks.wit",
                "contracts/deps/random.wit",
                "contracts/deps/filesystem.wit",
                "contracts/deps/sockets.wit",
                "contracts/deps/cli.wit",
                "contracts/deps/http.wit",
                "contracts/types.wit",
                "contracts/secrets.wit",
                "contracts/telemetry.wit",
                "contracts/config.wit",
                "contracts/state.wit",
                "contracts/events.wit",
                "contracts/provider.wit",
                $($wit,)*
            ],
            $($options)*
        });
    };
}

/// A domain world's bindings: [`generate!`] with the shared imports mapped onto [`imports`]
/// (plus `$with`), every type generated, and a public export macro `$export`.
macro_rules! domain_world {
    ($world:literal, $wit:literal, $export:literal, $module:literal $(, $key:literal: $value:path)* $(,)?) => {
        generate!([$wit],
            world: $world,
            with: {
                "greentic:types/types@1.0.0": crate::imports::greentic::types::types,
                "greentic:secrets/store@1.0.0": crate::imports::greentic::secrets::store,
                "greentic:telemetry/types@1.0.0": crate::imports::greentic::telemetry::types,
                "greentic:telemetry/logs@1.0.0": crate::imports::greentic::telemetry::logs,
                "greentic:telemetry/tracing@1.0.0": crate::imports::greentic::telemetry::tracing,
                "greentic:telemetry/metrics@1.0.0": crate::imports::greentic::telemetry::metrics,
                "greentic:config/config@1.0.0": crate::imports::greentic::config::config,
                "greentic:state/store@1.0.0": crate::imports::greentic::state::store,
                "greentic:events/publish@1.0.0": crate::imports::greentic::events::publish,
                $($key: $value,)*
            },
            generate_all,
            pub_export_macro: true,
            export_macro_name: $export,
            default_bindings_module: $module,
        );
    };
}

/// `greentic:provider/imports@1.0.0`, what every domain world includes: types, secrets,
/// telemetry, config, state and events. The world-specific modules reuse these bindings, so helpers
/// and types are the same whatever world a provider targets.
pub mod imports {
    generate!([],
        world: "greentic:provider/imports@1.0.0",
        generate_all,
        // `greentic:types` has no functions; its types are used by the domain worlds.
        generate_unused_types: true,
    );
}

/// Bindings of `greentic:messaging/provider@1.0.0`. Implement
/// [`messaging::exports::greentic::messaging::outbound::Guest`] and register it with
/// [`export_messaging_provider!`].
pub mod messaging {
    domain_world!(
        "greentic:messaging/provider@1.0.0",
        "contracts/messaging.wit",
        "export_messaging_provider",
        "greentic_provider_sdk::messaging",
    );
}

/// Bindings of `greentic:webhook/handler@1.0.0`. Implement
/// [`webhook::exports::wasi::http::incoming_handler::Guest`] and register it with
/// [`export_webhook_handler!`].
pub mod webhook {
    domain_world!(
        "greentic:webhook/handler@1.0.0",
        "contracts/webhook.wit",
        "export_webhook_handler",
        "greentic_provider_sdk::webhook",
    );
}

/// Bindings of `greentic:timer/scheduled@1.0.0`. Implement
/// [`timer::exports::greentic::timer::schedule::Guest`] and register it with
/// [`export_timer_provider!`]. Types, WASI and outbound HTTP are the messaging world's, so
/// [`http`] and [`types`] serve timer providers too.
pub mod timer {
    domain_world!(
        "greentic:timer/scheduled@1.0.0",
        "contracts/timer.wit",
        "export_timer_provider",
        "greentic_provider_sdk::timer",
        "wasi:http/types@0.2.12": crate::messaging::wasi::http::types,
        "wasi:http/outgoing-handler@0.2.12": crate::messaging::wasi::http::outgoing_handler,
        "wasi:io/error@0.2.12": crate::messaging::wasi::io::error,
        "wasi:io/poll@0.2.12": crate::messaging::wasi::io::poll,
        "wasi:io/streams@0.2.12": crate::messaging::wasi::io::streams,
        "wasi:clocks/monotonic-clock@0.2.12": crate::messaging::wasi::clocks::monotonic_clock,
        "wasi:clocks/wall-clock@0.2.12": crate::messaging::wasi::clocks::wall_clock,
    );
}

/// How a provider of each domain is exported, by the SDK trait `#[provider]` found on its impl
/// block: the SDK's one list of domains (their bindings are the modules above, their traits in
/// [`provider`](crate::Messaging)). A domain is a module above, a trait, and an arm here.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_provider {
    (Messaging, $ty:ty) => {
        #[doc(hidden)]
        pub struct __GreenticProviderExport;
        impl $crate::messaging::exports::greentic::messaging::outbound::Guest
            for __GreenticProviderExport
        {
            fn send(
                ctx: $crate::types::TenantCtx,
                msg: $crate::prelude::Message,
            ) -> ::core::result::Result<$crate::prelude::SendResult, $crate::types::ProviderError>
            {
                $crate::__export::send::<$ty>(env!("CARGO_PKG_NAME"), ctx, msg)
            }
        }
        $crate::export_messaging_provider!(__GreenticProviderExport);
    };
    (Webhook, $ty:ty) => {
        #[doc(hidden)]
        pub struct __GreenticProviderExport;
        impl $crate::webhook::exports::wasi::http::incoming_handler::Guest
            for __GreenticProviderExport
        {
            fn handle(
                request: $crate::webhook::wasi::http::types::IncomingRequest,
                out: $crate::webhook::wasi::http::types::ResponseOutparam,
            ) {
                $crate::__export::handle::<$ty>(env!("CARGO_PKG_NAME"), request, out)
            }
        }
        $crate::export_webhook_handler!(__GreenticProviderExport);
    };
    (Timer, $ty:ty) => {
        #[doc(hidden)]
        pub struct __GreenticProviderExport;
        impl $crate::timer::exports::greentic::timer::schedule::Guest for __GreenticProviderExport {
            fn on_fire(
                ctx: $crate::types::TenantCtx,
                info: $crate::prelude::FireInfo,
            ) -> ::core::result::Result<(), $crate::types::ProviderError> {
                $crate::__export::on_fire::<$ty>(env!("CARGO_PKG_NAME"), ctx, info)
            }
        }
        $crate::export_timer_provider!(__GreenticProviderExport);
    };
    ($other:ident, $ty:ty) => {
        compile_error!(concat!(
            "`",
            stringify!($other),
            "` is not a domain trait of the SDK; implement one of Messaging, Webhook, Timer"
        ));
    };
}

mod provider;

pub use greentic_provider_sdk_macros::provider;
#[doc(hidden)]
pub use provider::__export;
pub use provider::{
    Ctx, FireInfo, Message, Messaging, Request, Response, SendResult, TENANT_HEADER, TRACE_HEADER,
    Timer, Webhook,
};

/// Everything a provider usually needs: `use greentic_provider_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::errors::{self, code as error_code};
    pub use crate::types::{ProviderError, RateLimit, UnavailableInfo};
    pub use crate::{
        Ctx, FireInfo, Message, Messaging, Request, Response, SendResult, Timer, Webhook, config,
        events, http, incoming, now_ms, provider, secrets, state, telemetry,
    };
}

pub mod config;
pub mod errors;
pub mod events;
pub mod http;
pub mod incoming;
pub mod secrets;
pub mod state;
pub mod telemetry;

/// The shared greentic types: tenant and deployment context, and the provider error.
pub mod types {
    pub use crate::imports::greentic::types::types::{
        Cloud, DeploymentCtx, Platform, ProviderError, RateLimit, TenantCtx, UnavailableInfo,
    };
}

/// A `tenant-ctx` for providers' unit tests: the tenant `tenant` on a local deployment, with
/// the idempotency key `key`; what a host would pass, without a host.
pub fn test_ctx(tenant: &str, key: Option<&str>) -> types::TenantCtx {
    types::TenantCtx {
        tenant: tenant.into(),
        team: None,
        user: None,
        deployment: types::DeploymentCtx {
            cloud: types::Cloud::Local,
            region: None,
            platform: types::Platform::Baremetal,
            runtime: None,
        },
        trace_id: None,
        idempotency_key: key.map(Into::into),
    }
}

/// Milliseconds since the Unix epoch (the host's wall clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The name of the custom section that carries `provider.json` (see [`provider_manifest!`]).
pub const MANIFEST_SECTION: &str = "greentic:provider-manifest";

/// Embeds the provider's manifest in the component, so that its digest and signature cover it.
///
/// With no argument it embeds `provider.json` next to the crate's `Cargo.toml`; a path literal
/// (relative to the crate root) embeds another file. Invoke it exactly once per provider:
///
/// ```text
/// greentic_provider_sdk::provider_manifest!();              // embeds ./provider.json
/// greentic_provider_sdk::provider_manifest!("manifest.json"); // or another file
/// ```
///
/// The host reads the section without running the component, validates the manifest against
/// the component's real world, and refuses a component without one.
#[macro_export]
macro_rules! provider_manifest {
    () => {
        $crate::provider_manifest!("provider.json");
    };
    ($path:literal) => {
        const _: () = {
            #[unsafe(link_section = "greentic:provider-manifest")]
            pub static GREENTIC_PROVIDER_MANIFEST: [u8; include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/",
                $path
            ))
            .len()] = *include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $path));
        };
    };
}

pub use messaging::export_messaging_provider;
pub use timer::export_timer_provider;
pub use webhook::export_webhook_handler;
