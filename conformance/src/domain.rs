//! What the suite knows of a domain, as data: its cases, what its world exports, the
//! capabilities it offers, how one call of it is made, what its providers' profiles must say,
//! and the evaluators its cases may use besides the common ones. Each domain's module under
//! `domains/` fills one in.

use greentic_manifest::ProviderManifest;
use serde_json::Value;

use crate::cases::Check;
use crate::profile::{Idempotency, Profile};

/// How the suite makes one call of a domain's provider.
#[derive(Debug, Clone, PartialEq)]
pub enum Drive {
    /// `POST /v1/invoke/{operation}` with `body`, as the tenant.
    Invoke {
        /// The operation invoked.
        operation: String,
        /// The request body.
        body: Value,
    },
    /// A signed webhook delivery to `/webhooks/{tenant}/{provider}/`, as each case describes.
    Deliver,
    /// A slot of the suite's schedule, fired by the host for the tenant, carrying `payload`.
    Fire {
        /// The schedule's payload, as JSON text.
        payload: String,
    },
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
    /// How one call of `manifest`'s provider is made, from what `profile` gives; an error
    /// names what the profile must (or may not) say for this domain.
    pub drive: fn(&Profile, &ProviderManifest) -> anyhow::Result<Drive>,
    /// The evaluators its cases may use besides the common ones.
    pub checks: &'static [Check],
}

impl DomainSuite {
    /// Checks `profile` against the provider it is for and this domain, and returns how one
    /// call of the provider is made: the rules every domain shares here, the domain's own in
    /// its `drive`.
    pub fn prepare(&self, profile: &Profile, manifest: &ProviderManifest) -> anyhow::Result<Drive> {
        if profile.idempotency != Idempotency::Forwarded
            && !self.checks.contains(&Check::Idempotency)
        {
            anyhow::bail!(
                "profile: `idempotency` is about keyed invokes, which the {} domain does not have; remove it",
                self.name
            );
        }
        (self.drive)(profile, manifest)
    }
}
