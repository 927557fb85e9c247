//! The cases, as data: `cases/<domain>.toml` rows, then `cases/common.toml`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The cases every domain runs after its own.
pub(crate) const COMMON: &str = include_str!("../cases/common.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(rename = "case")]
    cases: Vec<Case>,
}

/// One case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Stable id, `group.name`.
    pub id: String,
    /// The behaviour it belongs to (error-mapping, tenancy, ...).
    pub group: String,
    /// What it checks and why a provider must pass it.
    pub why: String,
    /// The evaluator.
    pub check: Check,
    /// The scripted upstream, one step per request (the last repeats).
    #[serde(default)]
    pub upstream: Vec<Step>,
    /// Whether the call carries an idempotency key.
    #[serde(default)]
    pub idempotency_key: bool,
    /// Rounds of interleaved calls (tenancy).
    #[serde(default)]
    pub rounds: Option<u32>,
    /// The webhook delivery to send.
    #[serde(default)]
    pub delivery: Option<Delivery>,
    /// What must come out.
    #[serde(default)]
    pub expect: Expect,
}

/// The evaluators a case can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// One call against a scripted answer; the error code (and retry-after) must match.
    UpstreamAnswer,
    /// One call; the number, spacing and keys of the upstream attempts must match.
    Retry,
    /// Two calls with the same key.
    Idempotency,
    /// Interleaved calls of two tenants through one kept instance.
    Tenancy,
    /// Interleaved calls of two tenants as the host runs them: which instance served each.
    Instances,
    /// One call (or delivery); the provider's span and its attributes and status.
    Telemetry,
    /// One call with every declared secret bound.
    SecretsResolve,
    /// One call by the tenant whose secrets were revoked.
    SecretsUnbound,
    /// Every secret value against everything captured in the run.
    SecretsNotEmitted,
    /// The manifest against the component's imports and world.
    ManifestImports,
    /// The manifest against what the provider did during the run.
    ManifestBehaviour,
    /// One webhook delivery; the answer's status must match.
    Delivery,
    /// The same delivery twice.
    DeliveryReplay,
}

/// One scripted upstream answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Status (default 200).
    #[serde(default = "ok_status")]
    pub status: u16,
    /// Headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body.
    #[serde(default)]
    pub body: String,
    /// Wait this long before answering.
    #[serde(default)]
    pub delay_ms: u64,
    /// Close the connection without answering.
    #[serde(default)]
    pub drop: bool,
}

fn ok_status() -> u16 {
    200
}

/// How a delivery is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Signature {
    /// With the tenant's secret.
    Good,
    /// Not at all.
    Missing,
    /// With a random key.
    Bad,
    /// With the other tenant's secret.
    OtherTenant,
}

/// A webhook delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// How it is signed.
    pub signature: Signature,
    /// The raw body.
    pub body: String,
    /// `a` (default), `b`, or `c` (the tenant whose secrets were revoked).
    #[serde(default)]
    pub tenant: Option<String>,
}

/// What a case expects.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The call's outcome code (`ok` or an error code).
    pub code: Option<String>,
    /// Acceptable outcome codes.
    #[serde(default)]
    pub codes: Vec<String>,
    /// The retry-after the error must carry.
    pub retry_after_ms: Option<u64>,
    /// Requests the upstream must see.
    pub attempts: Option<usize>,
    /// Least time between the first two attempts.
    pub min_gap_ms: Option<u64>,
    /// Acceptable HTTP statuses of a delivery.
    #[serde(default)]
    pub status: Vec<u16>,
    /// Acceptable statuses of a replayed delivery, from a provider that keeps state.
    #[serde(default)]
    pub replay_status: Vec<u16>,
    /// `ok` or `error`: the provider span's status.
    pub span_status: Option<String>,
}

/// The cases of one case file (`name` is how errors call it), each of whose evaluators must be
/// common or among `own`.
pub(crate) fn parse(
    name: &str,
    text: &str,
    domain: &str,
    own: &[Check],
) -> anyhow::Result<Vec<Case>> {
    let parsed: CaseFile = toml::from_str(text)
        .map_err(|e| anyhow::anyhow!("conformance/cases/{name} is not valid: {e}"))?;
    for case in &parsed.cases {
        if !case.check.is_common() && !own.contains(&case.check) {
            anyhow::bail!(
                "conformance/cases/{name}: case `{}` uses `{:?}`, which the {domain} domain has no evaluator for",
                case.id,
                case.check
            );
        }
    }
    Ok(parsed.cases)
}

impl Check {
    /// Whether every domain evaluates it (through the domain's way of making a call).
    pub fn is_common(self) -> bool {
        matches!(
            self,
            Check::Telemetry
                | Check::SecretsResolve
                | Check::SecretsUnbound
                | Check::SecretsNotEmitted
                | Check::ManifestImports
                | Check::ManifestBehaviour
        )
    }
}
