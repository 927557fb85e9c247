//! The suite's domains: one module each, holding the domain's case file, how the suite drives
//! one call of it, what its world must export, and the evaluators only it has. The common
//! evaluators (`crate::checks`) drive calls through [`Drive`], so they serve every domain.
//!
//! A new domain is a module here, one line in [`SUITES`] and a `cases/<domain>.toml`.

pub(crate) mod messaging;
pub(crate) mod timer;
pub(crate) mod webhook;

use crate::cases::{self, COMMON, Case};
use crate::domain::DomainSuite;

/// Every domain the suite has cases for.
pub const SUITES: &[&DomainSuite] = &[&messaging::SUITE, &webhook::SUITE, &timer::SUITE];

/// The suite of domain `name`.
pub fn suite(name: &str) -> Option<&'static DomainSuite> {
    SUITES.iter().copied().find(|s| s.name == name)
}

/// The names of the domains the suite has cases for.
pub fn names() -> Vec<&'static str> {
    SUITES.iter().map(|s| s.name).collect()
}

/// The cases for `domain`, in run order: the domain's, then the common ones. A case whose
/// evaluator is neither common nor the domain's own is an error naming it.
pub fn for_domain(domain: &str) -> anyhow::Result<Vec<Case>> {
    let Some(suite) = suite(domain) else {
        anyhow::bail!(
            "the suite has no cases for domain `{domain}`; it knows {}",
            names().join(", ")
        );
    };
    let mut all = cases::parse(&format!("{domain}.toml"), suite.cases, domain, suite.checks)?;
    all.extend(cases::parse("common.toml", COMMON, domain, suite.checks)?);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_case_file_parses_and_ids_are_unique() {
        for domain in names() {
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

    fn manifest(domain: &str, capabilities: &str) -> greentic_manifest::ProviderManifest {
        greentic_manifest::ProviderManifest::from_json(
            "test.wasm",
            &format!(
                r#"{{"name":"x","version":"1.0.0","domain":"{domain}","capabilities":{capabilities},"compat":{{"wit":"greentic:{domain}/provider@1.0.x"}}}}"#
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn profile(text: &str) -> crate::profile::Profile {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn each_domain_reads_its_own_call_input_from_the_profile() {
        use crate::domain::Drive;
        let messaging = suite("messaging").unwrap();
        let drive = messaging
            .prepare(
                &profile(r#"{"message": {"to": "ops", "text": "hi"}}"#),
                &manifest("messaging", r#"["send"]"#),
            )
            .unwrap();
        assert_eq!(
            drive,
            Drive::Invoke {
                operation: "send".into(),
                body: serde_json::json!({"to": "ops", "text": "hi"})
            }
        );
        let e = messaging
            .prepare(
                &profile(r#"{"message": {"to": "ops"}}"#),
                &manifest("messaging", r#"["send"]"#),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("`message`") && e.contains("text"), "{e}");
        let e = messaging
            .prepare(
                &profile(r#"{"payload": {"n": 1}}"#),
                &manifest("messaging", r#"["send"]"#),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("`payload`") && e.contains("`message`"), "{e}");

        let timer = suite("timer").unwrap();
        assert_eq!(
            timer
                .prepare(
                    &profile(r#"{"payload": {"n": 1}}"#),
                    &manifest("timer", r#"["tick"]"#)
                )
                .unwrap(),
            Drive::Fire {
                payload: r#"{"n":1}"#.into()
            }
        );
        let e = timer
            .prepare(
                &profile(r#"{"idempotency": "state"}"#),
                &manifest("timer", r#"["tick"]"#),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("`idempotency`") && e.contains("timer"), "{e}");

        let e = suite("webhook")
            .unwrap()
            .prepare(&profile("{}"), &manifest("webhook", r#"["receive"]"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("webhook.signature"), "{e}");
    }
}
