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
//! Adding one is its WIT file (included by `greentic:provider/imports`), its module here, and
//! lines in this file's lists — [`for_each_capability!`], its section in [`with_sections!`], its
//! grant in [`with_grants!`], its backend in [`Backends`], its WIT file in [`bindgen_wit!`] and
//! [`bindgen_domain!`] — and its SDK module.
//!
//! A call's imports are served from [`Imports`], which the engine's store data holds and hands
//! out through [`HasImports`]: capability code never sees the engine.

pub mod bindings;
pub mod blocking;
pub mod budget;
mod call;
pub mod config;
pub mod events;
mod grants;
pub mod http;
pub mod secrets;
pub mod state;
pub mod telemetry;
pub mod text;

pub use call::{CallScope, HasImports, ImportLimits, Imports, Usage};
pub use grants::Grants;

use std::path::Path;
use std::sync::Arc;

use greentic_manifest::ProviderManifest;
use wasmtime::component::{HasSelf, Linker};

/// One capability: its grant, its imports, its checks and how it is linked.
pub trait Capability {
    /// Its name: the grant's key in `[providers.NAME.grants]` and the word errors use.
    const NAME: &'static str;
    /// What it serves: the prefixes of the WIT imports (`package:name/interface@`) it links.
    const INTERFACES: &'static [&'static str];
    /// Whether `grants` let a provider have it (only then is it linked).
    fn granted(grants: &Grants) -> bool;
    /// Why provider `provider`, whose component imports it, cannot have it: a sentence naming
    /// the grant to add. `manifest` is the provider's own.
    fn ungranted(provider: &str, manifest: &ProviderManifest) -> String;
    /// Problems with a provider's grant of this capability as written (e.g. a host pattern that
    /// does not parse), each starting with the grant's key (`outbound_hosts: …`).
    fn check_grants(grants: &Grants) -> Vec<String> {
        let _ = grants;
        Vec::new()
    }
    /// Problems with a provider's grant of this capability against what its manifest declares
    /// (e.g. a secret it does not declare), each naming the key and what to do.
    fn check_manifest(grants: &Grants, manifest: &ProviderManifest) -> Vec<String> {
        let _ = (grants, manifest);
        Vec::new()
    }
    /// Problems with this capability's bundle section and how the bundle uses it, each naming
    /// the key and what to do.
    fn check(sections: &SectionRefs<'_>, bundle: &BundleFacts<'_>) -> Vec<String> {
        let _ = (sections, bundle);
        Vec::new()
    }
    /// Why a running host cannot move from `old` to `new` without a restart, if it cannot.
    fn live_change(old: &SectionRefs<'_>, new: &SectionRefs<'_>) -> Option<String> {
        let _ = (old, new);
        None
    }
    /// Adds its imports to `linker`, served from each store's [`Imports`].
    fn add_to_linker<T: HasImports>(linker: &mut Linker<T>) -> wasmtime::Result<()>;
}

/// A capability's [`Capability`] functions, as data: one entry of [`CAPABILITIES`].
#[derive(Clone, Copy)]
pub struct CapabilityInfo {
    /// [`Capability::NAME`].
    pub name: &'static str,
    /// [`Capability::INTERFACES`].
    pub interfaces: &'static [&'static str],
    /// [`Capability::granted`].
    pub granted: fn(&Grants) -> bool,
    /// [`Capability::ungranted`].
    pub ungranted: fn(&str, &ProviderManifest) -> String,
    /// [`Capability::check_grants`].
    pub check_grants: fn(&Grants) -> Vec<String>,
    /// [`Capability::check_manifest`].
    pub check_manifest: fn(&Grants, &ProviderManifest) -> Vec<String>,
    /// [`Capability::check`].
    pub check: fn(&SectionRefs<'_>, &BundleFacts<'_>) -> Vec<String>,
    /// [`Capability::live_change`].
    pub live_change: fn(&SectionRefs<'_>, &SectionRefs<'_>) -> Option<String>,
}

impl CapabilityInfo {
    /// The entry of capability `C`.
    pub const fn of<C: Capability>() -> CapabilityInfo {
        CapabilityInfo {
            name: C::NAME,
            interfaces: C::INTERFACES,
            granted: C::granted,
            ungranted: C::ungranted,
            check_grants: C::check_grants,
            check_manifest: C::check_manifest,
            check: C::check,
            live_change: C::live_change,
        }
    }

    /// Whether `import` (a component's import name) is one this capability serves.
    pub fn serves(&self, import: &str) -> bool {
        self.interfaces.iter().any(|i| import.starts_with(i))
    }
}

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

/// Calls `$then!` with every grant key (`name: Type = default,`, each with its docs and serde
/// attributes): [`Grants`] is declared through this, so a capability's grant is one entry here.
#[macro_export]
macro_rules! with_grants {
    ($then:ident) => {
        $then! {
            /// Secret names the provider may read (must also be declared in its manifest).
            #[serde(skip_serializing_if = "Vec::is_empty")]
            secrets: Vec<String> = Vec::new(),
            /// Hosts it may call over `wasi:http`: `[http://|https://]HOST[:PORT|:*]`, HOST a
            /// name, `*.domain`, `*`, an IP address or a network (see
            /// `greentic_manifest::HostPattern`). No scheme means HTTPS, no port the scheme's;
            /// loopback, private and link-local addresses are reached only through patterns that
            /// name them as addresses.
            #[serde(alias = "outboundHosts", skip_serializing_if = "Vec::is_empty")]
            outbound_hosts: Vec<String> = Vec::new(),
            /// Whether it may read its tenant configuration (`greentic:config`).
            config: bool = true,
            /// Whether it may emit telemetry (`greentic:telemetry`).
            telemetry: bool = true,
            /// Whether it may keep state (`greentic:state`), scoped to each tenant and this
            /// provider.
            state: bool = false,
            /// Whether it may publish events (`greentic:events`) for the tenants it serves.
            events: bool = false,
        }
    };
}

/// `wasmtime::component::bindgen!` over the repository's WIT (WASI, the greentic packages every
/// provider imports, and `greentic:provider`) and the files in brackets; the rest of the options
/// follow. After `host_imports`, with how the capabilities' imports are called (the async
/// ones). Paths are relative to a crate two levels below the repository root (`host/<crate>`).
/// A capability's WIT file is one line here, and one more if its functions are async.
#[macro_export]
macro_rules! bindgen_wit {
    (host_imports [$($wit:literal),* $(,)?], $($options:tt)*) => {
        $crate::bindgen_wit!([$($wit),*],
            imports: {
                "greentic:state": async | trappable,
                "greentic:events": async | trappable,
                default: trappable,
            },
            $($options)*
        );
    };
    ([$($wit:literal),* $(,)?], $($options:tt)*) => {
        wasmtime::component::bindgen!({
            path: [
                "../../wit/deps/io.wit",
                "../../wit/deps/clocks.wit",
                "../../wit/deps/random.wit",
                "../../wit/deps/filesystem.wit",
                "../../wit/deps/sockets.wit",
                "../../wit/deps/cli.wit",
                "../../wit/deps/http.wit",
                "../../wit/types.wit",
                "../../wit/secrets.wit",
                "../../wit/telemetry.wit",
                "../../wit/config.wit",
                "../../wit/state.wit",
                "../../wit/events.wit",
                "../../wit/provider.wit",
                $($wit,)*
            ],
            $($options)*
        });
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

/// What a bundle says about its tenants and providers that a capability's checks read.
pub struct BundleFacts<'a> {
    /// Each tenant's id and the names of the secrets bound for it.
    pub tenants: Vec<(&'a str, &'a [String])>,
    /// Each provider's name and grants.
    pub providers: Vec<(&'a str, &'a Grants)>,
}

/// Problems with the capabilities' sections and grants in a bundle, each naming the key.
pub fn check(sections: &SectionRefs<'_>, bundle: &BundleFacts<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    for c in CAPABILITIES {
        problems.extend((c.check)(sections, bundle));
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

/// Why a running host cannot move from `old` to `new` sections without a restart, one reason
/// per capability that refuses.
pub fn live_changes(old: &SectionRefs<'_>, new: &SectionRefs<'_>) -> Vec<String> {
    CAPABILITIES
        .iter()
        .filter_map(|c| (c.live_change)(old, new))
        .collect()
}

/// Calls `$then!` with the capabilities' bundle sections as struct fields (`name: Type,`, each
/// with its docs): the bundle file declares them through this, so a capability's section is
/// declared once, here.
#[macro_export]
macro_rules! with_sections {
    ($then:ident) => {
        $then! {
            /// Telemetry export.
            telemetry: $crate::telemetry::TelemetrySection,
            /// Where secret values come from.
            secrets: $crate::secrets::SecretsSection,
            /// Where provider state (`greentic:state`) is kept, and its bounds.
            state: $crate::state::StateSection,
            /// Where published events (`greentic:events`) go, and how many a call may publish.
            events: $crate::events::EventsSection,
        }
    };
}

macro_rules! section_refs {
    ($($(#[$doc:meta])* $name:ident: $ty:ty,)*) => {
        /// The capabilities' sections of one bundle, borrowed.
        #[derive(Clone, Copy)]
        pub struct SectionRefs<'a> {
            $($(#[$doc])* pub $name: &'a $ty,)*
        }
    };
}
with_sections!(section_refs);

/// What each capability opened for one revision: its backends.
#[derive(Clone)]
pub struct Backends {
    /// Where secret values come from (`[secrets]`).
    pub secrets: Arc<dyn secrets::SecretBackend>,
    /// Where provider state is kept (`[state]`).
    pub state: Arc<state::StateCtx>,
    /// Where published events go (`[events]`).
    pub events: Arc<events::EventsCtx>,
}

impl Backends {
    /// Opens every capability's backend as `sections` configure it, paths relative to `dir`.
    /// A backend `previous` opened from an unchanged section is kept (its connections with it).
    pub fn open(
        sections: &SectionRefs<'_>,
        dir: &Path,
        previous: Option<(&SectionRefs<'_>, &Backends)>,
    ) -> anyhow::Result<Backends> {
        let secrets = secrets::open(sections.secrets, dir);
        let state = match previous {
            Some((old, backends)) if old.state == sections.state => backends.state.clone(),
            _ => Arc::new(state::StateCtx::open(sections.state, dir)?),
        };
        let events = match previous {
            Some((old, backends)) if old.events == sections.events => backends.events.clone(),
            _ => Arc::new(events::EventsCtx::open(sections.events, dir)),
        };
        Ok(Backends {
            secrets,
            state,
            events,
        })
    }
}
