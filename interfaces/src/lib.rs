//! The greentic contracts, as the host sees them.
//!
//! The WIT packages under the repository's `wit/` directory (the greentic packages and the
//! vendored WASI packages in `wit/deps/`) are compiled into this crate. From them it answers the
//! questions the host asks of every component before it is ever instantiated:
//!
//! - [`Contracts`]: the resolved WIT, and which host world a `compat.wit` range selects;
//! - [`ComponentWorld`] / [`check_compat`]: what a component imports and exports, and whether
//!   that fits a host world under semver rules (same major; for `0.x` the same minor; the host's
//!   version at least the component's);
//! - [`inspect_component`]: all of the above plus the embedded provider manifest, and whether
//!   the manifest tells the truth about the component (declared secrets and outbound hosts
//!   against its real imports).
//!
//! ```no_run
//! use greentic_interfaces::{Contracts, inspect_component};
//!
//! let contracts = Contracts::embedded()?;
//! let bytes = std::fs::read("messaging_webhook.wasm")?;
//! let report = inspect_component(contracts, "messaging_webhook.wasm", &bytes)?;
//! println!("{} targets {}", report.manifest.name, report.host_world);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod contracts;
mod inspect;
#[cfg(feature = "native")]
pub mod native;
pub mod proto;
#[cfg(feature = "synth")]
pub mod synth;
mod world;

pub use contracts::{Contracts, TargetError, WitError};
pub use inspect::{
    ComponentReport, InspectError, OUTGOING_HANDLER, SECRETS_STORE, disagreements,
    inspect_component,
};
pub use world::{
    CompatProblem, ComponentWorld, DecodeError, Item, ItemKind, check_compat, version_satisfies,
};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/wit_files.rs"));
}
pub use embedded::WIT_FILES;
