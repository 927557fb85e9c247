//! The suite's domains: one module each, holding the domain's case file, how the suite drives
//! one call of it, what its world must export, and the evaluators only it has. The common
//! evaluators (`crate::checks`) drive calls through [`Drive`], so they serve every domain.
//!
//! A new domain is a module here, one line in [`SUITES`] and a `cases/<domain>.toml`.

pub(crate) mod messaging;
pub(crate) mod timer;
pub(crate) mod webhook;

use crate::cases::Check;

/// How the suite makes one call of a domain's provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drive {
    /// `POST /v1/invoke/{capability}` with the profile's message, as the tenant.
    Invoke,
    /// A signed webhook delivery to `/webhooks/{tenant}/{provider}/`.
    Deliver,
    /// A slot fired by the host for the tenant.
    Fire,
}

/// What the suite knows of one domain.
#[derive(Debug)]
pub struct DomainSuite {
    /// The domain's name, as manifests give it.
    pub name: &'static str,
    /// `cases/<name>.toml`.
    pub cases: &'static str,
    /// The export its world requires.
    pub export: &'static str,
    /// The capabilities a provider of it may declare (`None`: any).
    pub capabilities: Option<&'static [&'static str]>,
    /// How one call is made.
    pub drive: Drive,
    /// The evaluators its cases may use besides the common ones.
    pub checks: &'static [Check],
}

/// Every domain the suite has cases for.
pub const SUITES: &[&DomainSuite] = &[&messaging::SUITE, &webhook::SUITE, &timer::SUITE];

/// The suite of domain `name`.
pub fn suite(name: &str) -> Option<&'static DomainSuite> {
    SUITES.iter().copied().find(|s| s.name == name)
}
