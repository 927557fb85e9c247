//! What every capability is: the [`Capability`] trait (its grant, its imports, its checks, how it
//! is linked), [`Configured`] for those a bundle section configures, and [`CapabilityInfo`], a
//! capability's functions as data.

use std::path::Path;

use greentic_manifest::ProviderManifest;
use wasmtime::component::Linker;

use crate::call::HasImports;
use crate::grants::Grants;

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
    /// Adds its imports to `linker`, served from each store's [`Imports`](crate::Imports).
    fn add_to_linker<T: HasImports>(linker: &mut Linker<T>) -> wasmtime::Result<()>;
}

/// A capability a bundle section configures: the section's checks, what may change live, and
/// what it opens once per revision (its backend, kept in [`Backends`](crate::Backends) for
/// every call of the revision).
pub trait Configured: Capability {
    /// Its bundle section (`[NAME]`).
    type Section: PartialEq;
    /// What it opens from its section, once per revision (`()` when nothing).
    type Backend: Send + Sync + 'static;
    /// Problems with its section and how the bundle uses it, each naming the key and what to
    /// do.
    fn check(section: &Self::Section, bundle: &BundleFacts<'_>) -> Vec<String> {
        let _ = (section, bundle);
        Vec::new()
    }
    /// Why a running host cannot move from `old` to `new` without a restart, if it cannot.
    fn live_change(old: &Self::Section, new: &Self::Section) -> Option<String> {
        let _ = (old, new);
        None
    }
    /// Its backend, as `section` configures it; paths are relative to the bundle's `dir`.
    fn open(section: &Self::Section, dir: &Path) -> anyhow::Result<Self::Backend>;
}

/// What a bundle says about its tenants and providers that a capability's checks read.
pub struct BundleFacts<'a> {
    /// Each tenant's id and the names of the secrets bound for it.
    pub tenants: Vec<(&'a str, &'a [String])>,
    /// Each provider's name and grants.
    pub providers: Vec<(&'a str, &'a Grants)>,
}

/// A capability's [`Capability`] functions, as data: one entry of
/// [`CAPABILITIES`](crate::CAPABILITIES).
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
        }
    }

    /// Whether `import` (a component's import name) is one this capability serves.
    pub fn serves(&self, import: &str) -> bool {
        self.interfaces.iter().any(|i| import.starts_with(i))
    }
}
