//! What the host gives a provider besides its own code: one module per capability.
//!
//! A capability is a set of WIT imports the host implements, the grant that lets a provider
//! have them, the bundle section that configures them (with its backends, chosen by `type`),
//! the checks of that section and grant, and what may change on a live reload. Each is one
//! module implementing [`Capability`]; [`CAPABILITIES`] lists them, and everything that is the
//! same for all of them — the grants check, the linker, what reload refuses — is one loop over
//! that list:
//!
//! | module | grant | imports |
//! |---|---|---|
//! | [`secrets`] | `secrets = ["NAME", …]` | `greentic:secrets/store` |
//! | [`config`] | `config = true` (default) | `greentic:config/config` |
//! | [`telemetry`] | `telemetry = true` (default) | `greentic:telemetry/*` |
//! | [`http`] | `outbound_hosts = ["api.example.com", …]` | `wasi:http/outgoing-handler` |
//! | [`state`] | `state = true` | `greentic:state/store` |
//! | [`events`] | `events = true` | `greentic:events/publish` |
//!
//! Adding one is its WIT file (included by `greentic:provider/imports`), its module here, a line
//! in this file's [`for_each_capability!`] (and [`with_sections!`] when a section configures
//! it), its grant in [`with_grants!`], its WIT file in [`bindgen_wit!`] and [`bindgen_domain!`],
//! and its SDK module. The layers: [`Capability`] and the call's [`Imports`] at the bottom, the
//! capabilities' modules on them, and this file's lists over those.
//!
//! A call's imports are served from [`Imports`], which the engine's store data holds and hands
//! out through [`HasImports`]: capability code never sees the engine.

pub mod bindings;
pub mod blocking;
pub mod budget;
mod call;
mod capability;
pub mod config;
pub mod dirs;
pub mod events;
mod grants;
pub mod http;
pub mod native;
pub mod outbound;
pub mod secrets;
pub mod state;
pub mod telemetry;
pub mod text;

pub use call::{Backends, CallScope, HasImports, ImportLimits, Imports, Usage};
pub use capability::{BundleFacts, Capability, CapabilityInfo, Configured};
pub use grants::Grants;

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use greentic_manifest::ProviderManifest;
use wasmtime::component::{HasSelf, Linker};

/// Calls `$then!` with every capability's type, in linking order: the one list of capabilities.
#[macro_export]
macro_rules! for_each_capability {
    ($then:ident) => {
        $then! {
            $crate::secrets::Secrets,
            $crate::config::Config,
            $crate::telemetry::Telemetry,
            $crate::http::OutboundHttp,
            $crate::state::State,
            $crate::events::Events,
        }
    };
}

/// The host bindings of a domain's world (in `$wit`): [`bindgen_wit!`] with WASI and every
/// capability's imports mapped onto Wasmtime's and [`bindings`], so only what the domain adds
/// is generated; `$key: $value` map more (e.g. `greentic:types` for a world whose exports use
/// it). Used by the crate that depends on this one as `greentic_capabilities`.
#[macro_export]
macro_rules! bindgen_domain {
    ($world:literal, $wit:literal $(, $key:literal: $value:path)* $(,)?) => {
        greentic_capabilities::bindgen_wit!([$wit],
            world: $world,
            imports: { default: trappable },
            exports: { default: async },
            with: {
                "wasi:io": wasmtime_wasi::p2::bindings::io,
                "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
                "wasi:random": wasmtime_wasi::p2::bindings::random,
                "wasi:filesystem": wasmtime_wasi::p2::bindings::filesystem,
                "wasi:sockets": wasmtime_wasi::p2::bindings::sockets,
                "wasi:cli": wasmtime_wasi::p2::bindings::cli,
                "wasi:http": wasmtime_wasi_http::p2::bindings::http,
                "greentic:secrets": greentic_capabilities::bindings::greentic::secrets,
                "greentic:telemetry": greentic_capabilities::bindings::greentic::telemetry,
                "greentic:config": greentic_capabilities::bindings::greentic::config,
                "greentic:state": greentic_capabilities::bindings::greentic::state,
                "greentic:events": greentic_capabilities::bindings::greentic::events,
                $($key: $value,)*
            },
        );
    };
}

macro_rules! capability_list {
    ($($capability:ty),* $(,)?) => {
        /// Every capability the host has.
        pub const CAPABILITIES: &[CapabilityInfo] = &[$(CapabilityInfo::of::<$capability>()),*];

        /// Adds WASI, `wasi:http/types` (metered) and the capabilities in `linked` to `linker`.
        pub fn add_to_linker<T: HasImports>(
            linker: &mut Linker<T>,
            linked: Linked,
        ) -> wasmtime::Result<()> {
            wasmtime_wasi::p2::add_to_linker_async(linker)?;
            http::add_types_to_linker(linker)?;
            bindings::greentic::types::types::add_to_linker::<_, HasSelf<Imports>>(
                linker,
                T::imports,
            )?;
            $(
                if linked.has(<$capability as Capability>::NAME) {
                    <$capability as Capability>::add_to_linker(linker)?;
                }
            )*
            Ok(())
        }
    };
}
for_each_capability!(capability_list);

impl bindings::greentic::types::types::Host for Imports {}

/// The capabilities one provider is granted, and so linked (zero trust).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Linked(u64);

impl Linked {
    /// What `grants` grant.
    pub fn of(grants: &Grants) -> Linked {
        let mut bits = 0;
        for (i, c) in CAPABILITIES.iter().enumerate() {
            if (c.granted)(grants) {
                bits |= 1 << i;
            }
        }
        Linked(bits)
    }

    /// Whether the capability named `name` is linked.
    pub fn has(self, name: &str) -> bool {
        CAPABILITIES
            .iter()
            .position(|c| c.name == name)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }
}

/// Problems with what provider `provider` imports and is granted: an import of a capability it
/// is not granted, and grants its manifest does not back. `imports` are its component's import
/// names, `manifest` its manifest.
pub fn check_needs<'a>(
    provider: &str,
    grants: &Grants,
    imports: impl IntoIterator<Item = &'a str>,
    manifest: &ProviderManifest,
) -> Vec<String> {
    let imports: Vec<&str> = imports.into_iter().collect();
    let mut problems = Vec::new();
    for c in CAPABILITIES {
        if imports.iter().any(|i| c.serves(i)) && !(c.granted)(grants) {
            problems.push((c.ungranted)(provider, manifest));
        }
        problems.extend((c.check_manifest)(grants, manifest));
    }
    problems
}

/// Calls `$then!` with the capabilities a bundle section configures, as struct fields
/// (`name: SectionType => Capability,`, each with its docs): the bundle file declares its
/// sections through this, so a capability's section is declared once, here.
#[macro_export]
macro_rules! with_sections {
    ($then:ident) => {
        $then! {
            /// Telemetry export.
            telemetry: $crate::telemetry::TelemetrySection => $crate::telemetry::Telemetry,
            /// Where secret values come from.
            secrets: $crate::secrets::SecretsSection => $crate::secrets::Secrets,
            /// Where provider state (`greentic:state`) is kept, and its bounds.
            state: $crate::state::StateSection => $crate::state::State,
            /// Where published events (`greentic:events`) go, and how many a call may publish.
            events: $crate::events::EventsSection => $crate::events::Events,
        }
    };
}

macro_rules! sections {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => $capability:ty,)*) => {
        /// The capabilities' sections of one bundle, borrowed.
        #[derive(Clone, Copy)]
        pub struct SectionRefs<'a> {
            $($(#[$doc])* pub $name: &'a $ty,)*
        }

        /// Problems with the capabilities' sections and grants in a bundle, each naming the
        /// key.
        pub fn check(sections: &SectionRefs<'_>, bundle: &BundleFacts<'_>) -> Vec<String> {
            let mut problems = Vec::new();
            $(problems.extend(<$capability as Configured>::check(sections.$name, bundle));)*
            for c in CAPABILITIES {
                for (name, grants) in &bundle.providers {
                    problems.extend(
                        (c.check_grants)(grants)
                            .into_iter()
                            .map(|p| format!("providers.{name}.grants.{p}")),
                    );
                }
            }
            problems
        }

        /// Why a running host cannot move from `old` to `new` sections without a restart, one
        /// reason per capability that refuses.
        pub fn live_changes(old: &SectionRefs<'_>, new: &SectionRefs<'_>) -> Vec<String> {
            let mut reasons = Vec::new();
            $(reasons.extend(<$capability as Configured>::live_change(old.$name, new.$name));)*
            reasons
        }

        impl Backends {
            /// Opens every capability's backend as `sections` configure it, paths relative to
            /// `dir`. A backend `previous` opened from an unchanged section is kept (its
            /// connections with it).
            pub fn open(
                sections: &SectionRefs<'_>,
                dir: &Path,
                previous: Option<(&SectionRefs<'_>, &Backends)>,
            ) -> anyhow::Result<Backends> {
                let mut opened: Vec<Arc<dyn Any + Send + Sync>> = Vec::new();
                $(
                    let kept = previous.and_then(|(old, backends)| {
                        (old.$name == sections.$name)
                            .then(|| backends.get_arc::<<$capability as Configured>::Backend>())
                            .flatten()
                    });
                    opened.push(match kept {
                        Some(backend) => backend,
                        None => Arc::new(<$capability as Configured>::open(sections.$name, dir)?),
                    });
                )*
                Ok(Backends::new(opened))
            }
        }
    };
}
with_sections!(sections);

/// Reports what the instance behind `imports` kept over its budgets at the end of a call
/// (telemetry it dropped, counted and warned about once).
pub fn report_usage(imports: &Imports) {
    if let Some(usage) = imports.usage.get::<telemetry::TelemetryUsage>() {
        usage.report(&imports.scope);
    }
}

impl Backends {
    /// Where secret values come from (`[secrets]`).
    pub fn secrets(&self) -> &Arc<dyn secrets::SecretBackend> {
        self.get::<Arc<dyn secrets::SecretBackend>>()
            .expect("Backends::open opens every capability's backend")
    }

    /// Where provider state is kept (`[state]`).
    pub fn state(&self) -> &Arc<state::StateCtx> {
        self.get::<Arc<state::StateCtx>>()
            .expect("Backends::open opens every capability's backend")
    }
}
