//! Running the suite: set up tenants and the upstream, start the host, run each case.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use greentic_manifest::{ProviderManifest, extract_manifest};
use serde_json::Value;

use crate::ctx::Ctx;
use crate::domains;
use crate::evaluate::evaluate;
use crate::host::{HostUnderTest, Setup, Subject, TenantSetup};
use crate::profile::{Profile, instantiate};
use crate::report::{CaseResult, Report};
use crate::upstream::Upstream;

/// How to run the suite.
#[derive(Debug, Clone)]
pub struct Options {
    /// The domain whose cases run (default: the manifest's).
    pub domain: Option<String>,
    /// The provider's profile.
    pub profile: Profile,
    /// Each call's deadline.
    pub deadline_ms: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            domain: None,
            profile: Profile::default(),
            deadline_ms: 5_000,
        }
    }
}

/// Runs every case of the provider's domain against a host `start` sets up.
pub async fn run<F, Fut>(
    file: &str,
    subject: Subject,
    options: Options,
    start: F,
) -> anyhow::Result<Report>
where
    F: FnOnce(Setup) -> Fut,
    Fut: Future<Output = anyhow::Result<Box<dyn HostUnderTest>>>,
{
    let manifest = match &subject {
        Subject::Component(wasm) => extract_manifest(file, wasm)?,
        Subject::Remote { manifest_json, .. } | Subject::Native { manifest_json, .. } => {
            ProviderManifest::from_json(file, manifest_json)?
        }
    };
    let domain = options
        .domain
        .clone()
        .unwrap_or_else(|| manifest.domain.clone());
    let cases = domains::for_domain(&domain)?;
    let suite = domains::suite(&domain)
        .ok_or_else(|| anyhow::anyhow!("the suite has no cases for domain `{domain}`"))?;
    let drive = suite.prepare(&options.profile, &manifest)?;
    let template = options.profile.config_template(&manifest)?;
    let upstream = Upstream::start().await?;
    let tenants = tenants(&manifest, &template, &upstream.base_url());
    let setup = Setup {
        subject: subject.clone(),
        manifest: manifest.clone(),
        domain: domain.clone(),
        tenants: tenants.clone(),
        deadline_ms: options.deadline_ms,
        upstream: upstream.authority(),
    };
    let host = start(setup)
        .await
        .map_err(|e| anyhow::anyhow!("the host could not run {file}: {e:#}"))?;
    let mut ctx = Ctx {
        host,
        upstream,
        client: reqwest::Client::builder()
            .timeout(Duration::from_millis(options.deadline_ms * 4 + 10_000))
            .build()?,
        manifest: manifest.clone(),
        subject: subject.clone(),
        suite,
        drive,
        domain: domain.clone(),
        tenants,
        profile: options.profile.clone(),
        deadline_ms: options.deadline_ms,
        logs: Vec::new(),
        spans: Vec::new(),
        answers: Vec::new(),
        case_logs: Vec::new(),
        case_spans: Vec::new(),
    };
    // Whatever loading logged is part of what the suite captured.
    ctx.collect();
    let started = Instant::now();
    let mut results = Vec::new();
    for case in &cases {
        let t = Instant::now();
        ctx.collect();
        let verdict = evaluate(&mut ctx, case).await;
        ctx.collect();
        results.push(CaseResult {
            id: case.id.clone(),
            group: case.group.clone(),
            why: case.why.clone(),
            passed: verdict.passed,
            detail: verdict.detail,
            duration_ms: t.elapsed().as_millis() as u64,
        });
    }
    Ok(Report {
        provider: manifest.name.clone(),
        version: manifest.version.to_string(),
        domain,
        file: file.to_string(),
        digest: subject.digest(),
        duration_ms: started.elapsed().as_millis() as u64,
        results,
    })
}

/// Tenants `a` and `b` (every declared secret bound, distinct values) and `c` (bound at load,
/// revoked before any call).
fn tenants(manifest: &ProviderManifest, template: &Value, upstream: &str) -> Vec<TenantSetup> {
    ["a", "b", "c"]
        .iter()
        .map(|t| {
            let id = format!("conformance-{t}");
            let secrets: BTreeMap<String, String> = manifest
                .secrets
                .iter()
                .map(|s| {
                    let value =
                        format!("gcs{t}{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
                    (s.name().to_string(), value)
                })
                .collect();
            TenantSetup {
                config: instantiate(template, upstream, &id),
                team: Some(format!("team-{t}")),
                user: Some(format!("user-{t}")),
                id,
                secrets,
                revoke_secrets: *t == "c",
            }
        })
        .collect()
}
