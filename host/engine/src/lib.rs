//! The call engine of the greentic host.
//!
//! A provider that passed its checks is a [`provider::LoadedProvider`]: its component
//! compiled ([`compile`]), linked with its granted capabilities and prepared for its
//! [`domain`] ([`domains`]). A [`revision::Revision`] is one version of a bundle as the host
//! serves it: its providers, tenants and routes. The [`runtime::Runtime`] routes each call to a
//! provider of the active revision and runs it in a fresh instance ([`instance`]) under the
//! calling tenant's limits — admission and fuel rate ([`limits`]), fair CPU between tenants
//! ([`scheduler`]), retries and circuit breakers ([`resilience`]) — inside one envelope of
//! spans, metrics and logs, and ends it with one of the stable [`errors`]. What the host shares
//! with a fleet (fleet-wide limits, idempotency records, durable deliveries) it reaches through
//! the traits of [`shared`]; what calls came to is kept in [`outcomes`].

#![warn(missing_docs)]

pub mod bindings;
pub mod compile;
pub mod domain;
pub mod domains;
pub mod errors;
pub mod instance;
pub mod kept;
pub mod limits;
pub mod metering;
pub mod outcomes;
pub mod process;
pub mod provider;
pub mod resilience;
pub mod revision;
pub mod runtime;
pub mod scheduler;
pub mod shared;
