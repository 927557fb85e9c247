//! The cases, as data: `cases/<domain>.toml` rows, then `cases/common.toml`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The cases every domain runs after its own.
const COMMON: &str = include_str!("../cases/common.toml");

/// The domains the suite has cases for (each a module of `crate::domains`).
pub fn domains() -> Vec<&'static str> {
    crate::domains::SUITES.iter().map(|s| s.name).collect()
}

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

/// The cases for `domain`, in run order: the domain's, then the common ones. A case whose
/// evaluator is neither common nor the domain's own is an error naming it.
pub fn for_domain(domain: &str) -> anyhow::Result<Vec<Case>> {
    let Some(suite) = crate::domains::suite(domain) else {
        anyhow::bail!(
            "the suite has no cases for domain `{domain}`; it knows {}",
            domains().join(", ")
        );
    };
    let mut cases = Vec::new();
    for (name, text) in [
        (format!("{domain}.toml"), suite.cases),
        ("common.toml".into(), COMMON),
    ] {
        let parsed: CaseFile = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("conformance/cases/{name} is not valid: {e}"))?;
        for case in &parsed.cases {
            if !case.check.is_common() && !suite.checks.contains(&case.check) {
                anyhow::bail!(
                    "conformance/cases/{name}: case `{}` uses `{:?}`, which the {domain} domain has no evaluator for",
                    case.id,
                    case.check
                );
            }
        }
        cases.extend(parsed.cases);
    }
    Ok(cases)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_case_file_parses_and_ids_are_unique() {
        for domain in domains() {
            let cases = for_domain(domain).unwrap_or_else(|e| panic!("{e}"));
            assert!(cases.len() > 5, "{domain} has {} cases", cases.len());
            let ids: BTreeSet<_> = cases.iter().map(|c| c.id.as_str()).collect();
            assert_eq!(ids.len(), cases.len(), "duplicate case ids in {domain}");
            for c in &cases {
                assert!(
                    c.id.starts_with(&format!("{}.", c.group)),
                    "{} should start with its group {}",
                    c.id,
                    c.group
                );
                assert!(!c.why.is_empty(), "{} says nothing about why", c.id);
            }
        }
    }

    #[test]
    fn unknown_domain_is_named() {
        let e = for_domain("carrier-pigeon").unwrap_err().to_string();
        assert!(
            e.contains("carrier-pigeon") && e.contains("messaging"),
            "{e}"
        );
    }
}
