//! The timer domain: fired by the host. Its cases use the common evaluators, each call a
//! slot fired for the tenant; the scripted upstream stands for whatever the provider reaches.

use super::{DomainSuite, Drive};
use crate::cases::Check;

/// The timer domain's suite.
pub(crate) const SUITE: DomainSuite = DomainSuite {
    name: "timer",
    cases: include_str!("../../cases/timer.toml"),
    export: "greentic:timer/schedule",
    capabilities: None,
    drive: Drive::Fire,
    checks: &[Check::UpstreamAnswer, Check::Tenancy],
};
