//! `greentic-host attest` and `verify-attestation`: in-toto attestations (DSSE envelopes, the
//! layout `cosign attest` uses) about a provider artifact.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::conformance::Capture;
use crate::trust::attestation::{self, Kind};
use anyhow::Context;
use clap::Args;
use greentic_registry::{ArtifactRef, Target, pull_component};
use serde_json::Value;

use super::conformance::{SuiteArgs, run_suite};
use super::push::RegistryArgs;
use super::sign::signing_key;

/// Attach a signed attestation to the artifact a reference resolves to: `conformance` runs the
/// conformance suite against the artifact (pulled by digest) and attests the report (or attests
/// a report written by `greentic-host conformance --json`); `sbom` attests a CycloneDX or SPDX
/// JSON document. The statement names the artifact's manifest digest; it is stored beside the
/// artifact as `sha256-<hex>.att`, after any attestations already there.
#[derive(Debug, Args)]
pub struct Attest {
    /// The private key (cosign.key); the password comes from COSIGN_PASSWORD or a prompt.
    #[arg(long)]
    key: PathBuf,
    /// What to attest: `conformance` or `sbom`.
    #[arg(long = "type")]
    kind: Kind,
    /// conformance: the provider's conformance profile (its `conformance.json`).
    #[arg(long)]
    profile: Option<PathBuf>,
    /// conformance: attest this report (from `greentic-host conformance --json`) instead of
    /// running the suite; it must be for the artifact's component.
    #[arg(long, conflicts_with = "profile")]
    report: Option<PathBuf>,
    /// conformance: attest a report with failed cases too (hosts refuse the provider while it
    /// is the newest); without it a failed run attests nothing and exits 1.
    #[arg(long)]
    record_failure: bool,
    /// sbom: the SBOM document (CycloneDX JSON, e.g. from `cargo cyclonedx`, or SPDX JSON).
    #[arg(long)]
    sbom: Option<PathBuf>,
    /// conformance: each call's deadline, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    deadline_ms: u64,
    /// `HOST[:PORT]/REPO:TAG`, `HOST/REPO@sha256:…` or `oci:DIR:TAG`.
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

impl Attest {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let key = signing_key(&self.key)?;
        let reference: ArtifactRef = self.reference.parse()?;
        let target = Target::open(&reference, &self.registry.options()?)?;
        let capture = match (self.kind, &self.report) {
            (Kind::Conformance, None) => Some(Capture::install()?),
            _ => None,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        rt.block_on(async {
            // Everything below is about exactly this digest.
            let pulled = pull_component(&target, &reference, None).await?;
            let pinned = reference.with_digest(&pulled.manifest_digest);
            let (predicate_type, predicate, summary) = match self.kind {
                Kind::Conformance => {
                    let report = match (&self.report, &capture) {
                        (Some(path), _) => {
                            let report: greentic_conformance::Report = serde_json::from_slice(
                                &std::fs::read(path)
                                    .with_context(|| format!("reading {}", path.display()))?,
                            )
                            .with_context(|| {
                                format!(
                                    "{} is not a report from `greentic-host conformance --json`",
                                    path.display()
                                )
                            })?;
                            anyhow::ensure!(
                                report.digest == pulled.component_digest,
                                "{} is a report for component {}, but {pinned} holds {}; run the suite against this artifact",
                                path.display(),
                                report.digest,
                                pulled.component_digest
                            );
                            report
                        }
                        (None, Some(capture)) => {
                            let report = run_suite(
                                &pinned.to_string(),
                                greentic_conformance::Subject::Component(
                                    pulled.component.clone(),
                                ),
                                &SuiteArgs {
                                    domain: None,
                                    profile: self.profile.clone(),
                                    deadline_ms: self.deadline_ms,
                                    cache_dir: None,
                                },
                                capture,
                            )
                            .await?;
                            out!("{}", report.table());
                            report
                        }
                        (None, None) => unreachable!("the capture is installed to run the suite"),
                    };
                    if !report.passed() && !self.record_failure {
                        eprintln!(
                            "not attested: {} case(s) failed ({}); fix the provider, or pass --record-failure to attest the failed run",
                            report.failed().len(),
                            report.failed().join(", ")
                        );
                        return Ok(ExitCode::from(1));
                    }
                    let summary = format!(
                        "{} of {} case(s) passed",
                        report.results.len() - report.failed().len(),
                        report.results.len()
                    );
                    (
                        attestation::CONFORMANCE_PREDICATE,
                        attestation::conformance_predicate(&report),
                        summary,
                    )
                }
                Kind::Sbom => {
                    let path = self
                        .sbom
                        .as_ref()
                        .context("--type sbom needs --sbom FILE (CycloneDX or SPDX JSON)")?;
                    let bom: Value = serde_json::from_slice(
                        &std::fs::read(path)
                            .with_context(|| format!("reading {}", path.display()))?,
                    )
                    .with_context(|| format!("{} is not JSON", path.display()))?;
                    let predicate_type = if bom.get("spdxVersion").is_some() {
                        attestation::SPDX_PREDICATE
                    } else {
                        attestation::CYCLONEDX_PREDICATE
                    };
                    let summary = attestation::check_sbom(predicate_type, &bom)
                        .map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))?;
                    (predicate_type, bom, summary)
                }
            };
            greentic_signing::attest(&target, &pinned, &key, predicate_type, predicate).await?;
            outln!(
                "attested {} ({summary}) about {pinned}, signed by key {}",
                self.kind.name(),
                &key.key_id()[..12]
            );
            Ok(ExitCode::SUCCESS)
        })
    }
}

/// Verify a reference's attestations of one kind with trusted public keys. Prints what the
/// newest verified one certifies; exits 1 unless there is one, signed by a trusted key, about
/// exactly the digest the reference resolves to, and it holds (a conformance report for this
/// component with every case passed; a CycloneDX or SPDX SBOM).
#[derive(Debug, Args)]
pub struct VerifyAttestation {
    /// Trusted public key (PEM); repeatable.
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// What to verify: `conformance` or `sbom`.
    #[arg(long = "type")]
    kind: Kind,
    /// Also print the verified statement as JSON.
    #[arg(long)]
    json: bool,
    /// The reference.
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

impl VerifyAttestation {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let keys = super::sign::trusted_keys(&self.keys)?;
        let reference: ArtifactRef = self.reference.parse()?;
        let target = Target::open(&reference, &self.registry.options()?)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let pulled = pull_component(&target, &reference, None).await?;
            let pinned = reference.with_digest(&pulled.manifest_digest);
            let found = greentic_signing::verify_attestations(
                &target,
                &pinned,
                &keys,
                self.kind.predicate_types(),
            )
            .await?;
            for why in &found.refused {
                eprintln!("refused: {why}");
            }
            let Some(latest) = found.latest() else {
                eprintln!(
                    "{pinned} has no `{}` attestation signed by a trusted key",
                    self.kind.name()
                );
                return Ok(ExitCode::from(1));
            };
            match attestation::check(self.kind, &latest.statement, &pulled.component_digest) {
                Ok(summary) => {
                    outln!(
                        "verified {} attestation of {pinned}: {summary}; signed by key {} ({} verified in all)",
                        self.kind.name(),
                        &latest.key_id[..12],
                        found.verified.len()
                    );
                    if self.json {
                        outln!("{}", serde_json::to_string_pretty(&latest.statement)?);
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(why) => {
                    eprintln!(
                        "the newest {} attestation of {pinned} is refused: {why}",
                        self.kind.name()
                    );
                    Ok(ExitCode::from(1))
                }
            }
        })
    }
}
