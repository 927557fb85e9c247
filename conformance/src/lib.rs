//! The provider conformance suite: test once, certify everywhere.
//!
//! The suite runs one provider component under a real host and drives it through the
//! behaviour every provider of its domain must show — error mapping, tenancy scoping,
//! idempotency, retries, telemetry, secret resolution, manifest truth, and for webhook
//! providers signature checks and replays. The cases are data (`conformance/cases/*.toml`); the
//! evaluators they name are in this crate: the common ones in one module, each domain's own
//! (and how the suite makes one call of that domain: invoke, deliver or fire) in its module.
//!
//! The suite talks to the host only over HTTP and through [`HostUnderTest`], so it does not
//! depend on a host implementation: `greentic-host conformance` provides one that runs the real
//! `greentic-host` runtime and server in-process on loopback. The suite itself runs the scripted
//! upstream the provider calls ([`upstream::Upstream`]).

pub mod cases;
mod checks;
mod ctx;
mod domain;
pub mod domains;
mod evaluate;
pub mod evidence;
mod host;
mod outcome;
pub mod profile;
pub mod report;
mod suite;
pub mod upstream;
mod verdict;

/// The suite's version (this crate's), recorded in reports and attestations.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use cases::{Case, Check};
pub use domain::{DomainSuite, Drive};
pub use host::{
    CapturedSpan, FireOutcome, FireRequest, HostUnderTest, RemoteTls, Setup, SpanStatus, Subject,
    TenantSetup,
};
pub use profile::Profile;
pub use report::{CaseResult, Report};
pub use suite::{Options, run};
