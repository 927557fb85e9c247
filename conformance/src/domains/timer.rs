//! The timer domain: fired by the host. Its cases use the common evaluators, each call a
//! slot fired for the tenant; the scripted upstream stands for whatever the provider reaches.

use greentic_manifest::ProviderManifest;

use crate::cases::Check;
use crate::domain::{DomainSuite, Drive};
use crate::profile::Profile;

/// The timer domain's suite.
pub(crate) const SUITE: DomainSuite = DomainSuite {
    name: "timer",
    cases: include_str!("../../cases/timer.toml"),
    export: "greentic:timer/schedule",
    capabilities: None,
    drive,
    checks: &[Check::UpstreamAnswer, Check::Tenancy],
};

/// A fired slot carrying the profile's `payload` (`{}` when it has none).
fn drive(profile: &Profile, _manifest: &ProviderManifest) -> anyhow::Result<Drive> {
    if profile.message.is_some() || profile.webhook.is_some() {
        anyhow::bail!(
            "profile: a timer provider is fired with the profile's `payload`; `message` and `webhook` are for messaging and webhook providers"
        );
    }
    Ok(Drive::Fire {
        payload: profile
            .payload
            .as_ref()
            .map_or_else(|| "{}".to_string(), |p| p.to_string()),
    })
}
