//! Attestations and the audit log: DSSE envelopes and in-toto statements as a registry or an
//! OCI layout serves them, the predicates the host checks, and audit log files.

use std::sync::OnceLock;

use greentic_host::trust::attestation::{
    CONFORMANCE_PREDICATE, CYCLONEDX_PREDICATE, check_conformance, check_sbom,
};
use greentic_signing::{Envelope, KeyPair, Statement, TrustedKeys};

fn trusted() -> &'static TrustedKeys {
    static KEYS: OnceLock<TrustedKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        TrustedKeys::from_pems(&[KeyPair::generate().public_pem()]).expect("a fresh key")
    })
}

/// `data` is two NUL-separated parts: JSON tried as a DSSE envelope, as an in-toto statement
/// and as a predicate; and an audit log.
pub fn run(data: &[u8]) {
    let (json, log) = crate::split_at_nul(data);

    if let Ok(envelope) = serde_json::from_slice::<Envelope>(json) {
        // Nobody holds the trusted key's private half: no envelope may verify.
        match envelope.verify(trusted()) {
            Ok(_) => panic!("an envelope signed without the key verified"),
            Err(why) => crate::assert_bounded("envelope", &why),
        }
    }
    if let Ok(statement) = serde_json::from_slice::<Statement>(json) {
        let digest = "sha256:aa";
        if statement.is_about(digest) {
            assert!(
                statement
                    .subject
                    .iter()
                    .any(|s| s.digest.get("sha256").map(String::as_str) == Some("aa"))
            );
        }
        let printed = serde_json::to_vec(&statement).expect("a statement serialises");
        assert_eq!(
            serde_json::from_slice::<Statement>(&printed).ok(),
            Some(statement)
        );
    }
    if let Ok(predicate) = serde_json::from_slice::<serde_json::Value>(json) {
        match check_conformance(&predicate, "sha256:aa") {
            Ok(_) => {
                // Certified only for this component, with cases, every one passed.
                assert_eq!(predicate["component"]["digest"], "sha256:aa");
                let results = predicate["results"].as_array().expect("results");
                assert!(!results.is_empty());
                assert!(results.iter().all(|r| r["passed"] == true));
            }
            Err(why) => crate::assert_bounded("conformance predicate", &why),
        }
        for kind in [
            CYCLONEDX_PREDICATE,
            "https://spdx.dev/Document",
            CONFORMANCE_PREDICATE,
        ] {
            if let Err(why) = check_sbom(kind, &predicate) {
                crate::assert_bounded("sbom", &why);
            }
        }
    }

    if let Some(log) = log {
        let lines = log.split(|b| *b == b'\n').count() as u64;
        match greentic_host::audit::verify(log, trusted()) {
            // Without the key, a log verifies only if it claims no signed checkpoint.
            Ok(verified) => {
                assert_eq!(
                    verified.checkpoints, 0,
                    "a checkpoint signed without the key verified"
                );
                assert!(verified.records < lines);
            }
            Err(broken) => {
                assert!(broken.line >= 1 && broken.line <= lines, "{broken}");
                crate::assert_bounded("audit log", &broken.why);
            }
        }
    }
}
