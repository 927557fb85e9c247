//! Revisions: a bundle loaded into what the host serves, and swapped in live.
//!
//! [`load`](load::load) checks a whole bundle before anything runs: each provider is fetched
//! and verified (`greentic-trust`), inspected against the host world its manifest names, held
//! to its grants, compiled through the cache, linked with what it is granted and prepared for
//! its domain ([`provider`]); then every tenant routed to it is checked — configuration, secret
//! bindings, routes, schedules. Every problem is collected, each naming the provider (and
//! tenant), what was expected and what was found. The [`reload`] module builds a candidate
//! revision from a changed bundle the same way and swaps it in without dropping a call.

pub mod load;
mod options;
mod provider;
pub mod reload;

pub use load::{
    LoadError, LoadOptions, Loaded, LoadedBundle, load, load_bundle, load_bundle_with, load_each,
    load_locked, pool_sizing,
};
