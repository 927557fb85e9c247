//! What the host attests and requires about a provider artifact: a conformance report and an
//! SBOM, each an in-toto statement in a signed DSSE envelope beside the artifact (see
//! `greentic_signing::attest`).
//!
//! A bundle requires kinds of attestation (`require = ["conformance", "sbom"]` on a provider, or
//! `[trust] require` for all). A provider is refused unless, for every required kind, the newest
//! attestation signed by a key the bundle trusts for it is about exactly the resolved manifest
//! digest and its predicate holds: the conformance report is for this component (by digest) and
//! every case passed; the SBOM is a CycloneDX or SPDX document.

pub use greentic_bundle::attestation::{
    CONFORMANCE_PREDICATE, CYCLONEDX_PREDICATE, Kind, SPDX_PREDICATE,
};

use serde_json::{Value, json};

/// The conformance predicate for `report`: the suite and host that ran it, the component it
/// ran (by digest), and every case's result.
pub fn conformance_predicate(report: &greentic_conformance::Report) -> Value {
    json!({
        "suite": { "name": "greentic-conformance", "version": greentic_conformance::VERSION },
        "host": { "name": "greentic-host", "version": env!("CARGO_PKG_VERSION") },
        "provider": { "name": report.provider, "version": report.version },
        "domain": report.domain,
        "component": { "digest": report.digest },
        "passed": report.passed(),
        "cases": report.results.len(),
        "failed": report.failed(),
        "results": report.results.iter().map(|r| json!({
            "id": r.id,
            "group": r.group,
            "passed": r.passed,
            "detail": r.detail,
            "duration_ms": r.duration_ms,
        })).collect::<Vec<_>>(),
        "duration_ms": report.duration_ms,
    })
}

/// Checks a conformance predicate against the component it must describe; returns a one-line
/// summary of what it certifies.
pub fn check_conformance(predicate: &Value, component_digest: &str) -> Result<String, String> {
    let results = predicate["results"]
        .as_array()
        .ok_or("the report has no `results`")?;
    if results.is_empty() {
        return Err("the report has no cases".into());
    }
    let digest = predicate["component"]["digest"].as_str().unwrap_or("");
    if digest != component_digest {
        return Err(format!(
            "the report is for component {digest}, not this one ({component_digest})"
        ));
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r["passed"] != true)
        .map(|r| r["id"].as_str().unwrap_or("?"))
        .collect();
    if !failed.is_empty() || predicate["passed"] != true {
        return Err(format!(
            "the report has {} failed case(s): {}",
            failed.len(),
            failed.join(", ")
        ));
    }
    Ok(format!(
        "{} case(s) passed ({} domain, suite {}, host {})",
        results.len(),
        predicate["domain"].as_str().unwrap_or("?"),
        predicate["suite"]["version"].as_str().unwrap_or("?"),
        predicate["host"]["version"].as_str().unwrap_or("?"),
    ))
}

/// Checks an SBOM predicate is the document its type says; returns a one-line summary.
pub fn check_sbom(predicate_type: &str, bom: &Value) -> Result<String, String> {
    match predicate_type {
        CYCLONEDX_PREDICATE => {
            if bom["bomFormat"] != "CycloneDX" {
                return Err("the SBOM is not a CycloneDX document (no bomFormat CycloneDX)".into());
            }
            let components = bom["components"].as_array().map_or(0, Vec::len);
            Ok(format!(
                "CycloneDX {} SBOM of {} with {components} component(s)",
                bom["specVersion"].as_str().unwrap_or("?"),
                bom["metadata"]["component"]["name"]
                    .as_str()
                    .unwrap_or("an unnamed component"),
            ))
        }
        SPDX_PREDICATE => {
            let version = bom["spdxVersion"]
                .as_str()
                .filter(|v| v.starts_with("SPDX-"))
                .ok_or("the SBOM is not an SPDX document (no spdxVersion)")?;
            Ok(format!(
                "{version} SBOM `{}` with {} package(s)",
                bom["name"].as_str().unwrap_or("?"),
                bom["packages"].as_array().map_or(0, Vec::len)
            ))
        }
        other => Err(format!("`{other}` is not an SBOM predicate type")),
    }
}

/// Checks one verified statement for `kind` about the component `component_digest`.
pub fn check(
    kind: Kind,
    statement: &greentic_signing::Statement,
    component_digest: &str,
) -> Result<String, String> {
    match kind {
        Kind::Conformance => check_conformance(&statement.predicate, component_digest),
        Kind::Sbom => check_sbom(&statement.predicate_type, &statement.predicate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(passed: &[bool]) -> Value {
        json!({
            "suite": {"version": "0.1.0"}, "host": {"version": "0.1.0"}, "domain": "messaging",
            "component": {"digest": "sha256:aa"},
            "passed": passed.iter().all(|p| *p),
            "results": passed.iter().enumerate().map(|(i, p)| json!({"id": format!("case.{i}"), "passed": p})).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn a_report_certifies_only_its_component_and_only_if_every_case_passed() {
        assert!(check_conformance(&report(&[true, true]), "sha256:aa").is_ok());
        let err = check_conformance(&report(&[true, false]), "sha256:aa").unwrap_err();
        assert!(err.contains("1 failed case(s): case.1"), "{err}");
        let err = check_conformance(&report(&[true]), "sha256:bb").unwrap_err();
        assert!(err.contains("not this one"), "{err}");
        assert!(check_conformance(&report(&[]), "sha256:aa").is_err());
        // A report that says it passed while a case failed is still refused.
        let mut lying = report(&[true, false]);
        lying["passed"] = json!(true);
        assert!(check_conformance(&lying, "sha256:aa").is_err());
    }

    #[test]
    fn sboms_must_be_what_their_type_says() {
        let cdx = json!({"bomFormat": "CycloneDX", "specVersion": "1.5", "components": [{}, {}],
            "metadata": {"component": {"name": "messaging-webhook"}}});
        let summary = check_sbom(CYCLONEDX_PREDICATE, &cdx).unwrap();
        assert!(summary.contains("2 component(s)") && summary.contains("messaging-webhook"));
        assert!(check_sbom(CYCLONEDX_PREDICATE, &json!({"spdxVersion": "SPDX-2.3"})).is_err());
        assert!(check_sbom(SPDX_PREDICATE, &json!({"spdxVersion": "SPDX-2.3"})).is_ok());
        assert!(check_sbom("https://example.com/x", &cdx).is_err());
        assert_eq!("sbom".parse::<Kind>(), Ok(Kind::Sbom));
        assert!("slsa".parse::<Kind>().is_err());
    }
}
