//! The bundle: `greentic.toml` (written by people) and `greentic.lock` (written by the host).
//!
//! A bundle names the providers and where they come from, what each is granted, the tenants
//! with their limits, secret bindings and per-provider configuration, the routes, how callers
//! authenticate, and where telemetry goes. Unknown keys are errors; the JSON Schema in
//! `schemas/greentic.schema.json` describes the same format for editors.

pub mod attestation;
mod auth;
mod bundle;
pub mod checks;
mod cluster;
mod file;
mod host;
mod lock;
mod schedule;
mod trust;
mod validate;

pub use auth::{AuthSection, CallerAuth, CertificateIdentity, JwtAlgorithm};
pub use bundle::{BUNDLE_SCHEMA, Bundle, BundleError, digest_of, schema};
pub use checks::{ProviderFacts, check_binding, check_routes, check_tenant, routed};
pub use cluster::{ClusterSection, StorageBounds};
pub use file::{BundleFile, Limits, ProviderForm, ProviderSection, Route, TenantSection};
pub use greentic_capabilities::{Grants, SectionRefs};
pub use host::{
    BreakerSection, ClientAuthMode, Deployment, DeploymentContext, GuestPriority, HostSection,
    Metering, SchedulerMode, SchedulerSection, TlsSection, TlsVersion,
};
pub use lock::{Lock, LockEntry, LockError};
pub use schedule::{Missed, Schedule};
pub use trust::{KeyRole, KeyWithRoles, TrustKey, TrustSection};
pub use validate::valid_provider_name;

#[cfg(test)]
mod tests;
