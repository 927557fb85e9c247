//! Running the suite: set up tenants and the upstream, start the host, run each case.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use greentic_manifest::{ProviderManifest, extract_manifest};
use serde_json::Value;

use crate::cases::{self, Case, Signature};
use crate::checks;
use crate::domains::Drive;
use crate::profile::{Profile, instantiate};
use crate::report::{CaseResult, Report};
use crate::upstream::Upstream;
use crate::{CapturedSpan, FireRequest, HostUnderTest, Setup, TenantSetup};

/// The schedule the suite fires slots of (trigger domains).
pub(crate) const SCHEDULE: &str = "conformance";

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
    wasm: &[u8],
    options: Options,
    start: F,
) -> anyhow::Result<Report>
where
    F: FnOnce(Setup) -> Fut,
    Fut: Future<Output = anyhow::Result<Box<dyn HostUnderTest>>>,
{
    let manifest = extract_manifest(file, wasm)?;
    let domain = options
        .domain
        .clone()
        .unwrap_or_else(|| manifest.domain.clone());
    let cases = cases::for_domain(&domain)?;
    options.profile.check(&manifest, &domain)?;
    let template = options.profile.config_template(&manifest)?;
    let upstream = Upstream::start().await?;
    let tenants = tenants(&manifest, &template, &upstream.base_url());
    let setup = Setup {
        wasm: wasm.to_vec(),
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
        wasm: wasm.to_vec(),
        suite: crate::domains::suite(&domain)
            .ok_or_else(|| anyhow::anyhow!("the suite has no cases for domain `{domain}`"))?,
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
        let verdict = checks::evaluate(&mut ctx, case).await;
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
        digest: greentic_digest(wasm),
        duration_ms: started.elapsed().as_millis() as u64,
        results,
    })
}

fn greentic_digest(wasm: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{:x}", sha2::Sha256::digest(wasm))
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

/// Everything a case can use, and everything captured so far.
pub(crate) struct Ctx {
    pub host: Box<dyn HostUnderTest>,
    pub upstream: Upstream,
    pub client: reqwest::Client,
    pub manifest: ProviderManifest,
    pub wasm: Vec<u8>,
    pub domain: String,
    /// What the suite knows of the domain.
    pub suite: &'static crate::domains::DomainSuite,
    pub tenants: Vec<TenantSetup>,
    pub profile: Profile,
    pub deadline_ms: u64,
    /// Every log line of the run.
    pub logs: Vec<String>,
    /// Every span of the run.
    pub spans: Vec<CapturedSpan>,
    /// Every answer the host gave, with the case it was for.
    pub answers: Vec<(String, String)>,
    /// Log lines since the current case started.
    pub case_logs: Vec<String>,
    /// Spans since the current case started.
    pub case_spans: Vec<CapturedSpan>,
}

/// The outcome of one call through the host.
#[derive(Debug, Clone)]
pub(crate) struct CallOutcome {
    /// `ok`, or the error body's `code`.
    pub code: String,
    pub retry_after_ms: Option<u64>,
    /// The result's `id`.
    pub id: Option<String>,
    pub message: String,
    pub elapsed: Duration,
}

/// The answer to one webhook delivery.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryOutcome {
    pub status: u16,
    /// The host's error code when the host (not the provider) answered.
    pub host_error: Option<String>,
}

/// Error codes only the host produces (the provider failed to behave, or was not reached).
pub(crate) const HOST_CODES: &[&str] = &[
    "fuel-exhausted",
    "deadline-exceeded",
    "memory-limit",
    "tenant-busy",
    "guest-trap",
    "no-route",
    "bad-request",
    "circuit-open",
    "host-internal",
    "result-too-large",
    "unauthenticated",
];

impl Ctx {
    /// Moves what the host captured into the run's and the case's records.
    pub fn collect(&mut self) {
        let logs = self.host.take_logs();
        let spans = self.host.take_spans();
        self.case_logs.extend(logs.iter().cloned());
        self.case_spans.extend(spans.iter().cloned());
        self.logs.extend(logs);
        self.spans.extend(spans);
    }

    /// Starts a fresh per-case capture and script.
    pub fn begin(&mut self, case: &Case) {
        self.collect();
        self.case_logs.clear();
        self.case_spans.clear();
        self.upstream.script(&case.upstream);
    }

    pub fn tenant(&self, which: &str) -> &TenantSetup {
        let id = format!("conformance-{which}");
        self.tenants
            .iter()
            .find(|t| t.id == id)
            .unwrap_or(&self.tenants[0])
    }

    /// The capability a call is recorded under: the invoked one, the domain's name for a
    /// delivery, the schedule's name for a fire.
    pub fn capability(&self) -> String {
        match self.suite.drive {
            Drive::Invoke => {}
            Drive::Deliver => return self.suite.name.to_string(),
            Drive::Fire => return SCHEDULE.to_string(),
        }
        if self.manifest.capabilities.iter().any(|c| c == "send") {
            "send".into()
        } else {
            self.manifest
                .capabilities
                .first()
                .cloned()
                .unwrap_or_else(|| "send".into())
        }
    }

    /// One call of the provider as `which`, the domain's way (see [`Drive`]): an invoke (with
    /// `key`), the case's signed delivery, or a fired slot.
    pub async fn drive(&mut self, case: &Case, which: &str, key: Option<&str>) -> CallOutcome {
        match self.suite.drive {
            Drive::Invoke => self.invoke(&case.id, which, key).await,
            Drive::Fire => self.fire(&case.id, which).await,
            Drive::Deliver => {
                let started = Instant::now();
                let Some(d) = case.delivery.clone() else {
                    return failed("the case has no delivery".into(), started);
                };
                let id = format!("conformance-delivery-{:016x}", fastrand::u64(..));
                let o = self
                    .deliver(&case.id, which, d.signature, &d.body, &id)
                    .await;
                CallOutcome {
                    code: match (&o.host_error, o.status) {
                        (Some(code), _) => code.clone(),
                        (None, 200..=299) => "ok".into(),
                        (None, status) => format!("http-{status}"),
                    },
                    retry_after_ms: None,
                    id: None,
                    message: format!("answer {}", o.status),
                    elapsed: started.elapsed(),
                }
            }
        }
    }

    /// One slot of the suite's schedule fired for `which`.
    pub async fn fire(&mut self, case: &str, which: &str) -> CallOutcome {
        let tenant = self.tenant(which).clone();
        let started = Instant::now();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let request = FireRequest {
            schedule: SCHEDULE.into(),
            // A fresh slot each time, as a schedule's are.
            scheduled_at_ms: now,
            payload: self
                .profile
                .payload
                .as_ref()
                .map_or_else(|| "{}".to_string(), |p| p.to_string()),
        };
        let outcome = self.host.fire(&tenant, request).await;
        self.answers.push((
            case.to_string(),
            format!("{} {}", outcome.code, outcome.message),
        ));
        CallOutcome {
            code: outcome.code,
            retry_after_ms: outcome.retry_after_ms,
            id: None,
            message: outcome.message,
            elapsed: started.elapsed(),
        }
    }

    /// One call of the messaging capability as `tenant`.
    pub async fn invoke(&mut self, case: &str, which: &str, key: Option<&str>) -> CallOutcome {
        let tenant = self.tenant(which).clone();
        let message = self.profile.message.clone().unwrap_or_default();
        let started = Instant::now();
        let token = match self.host.token(&tenant) {
            Ok(t) => t,
            Err(e) => return failed(format!("no token for {}: {e}", tenant.id), started),
        };
        let mut request = self
            .client
            .post(format!(
                "{}/v1/invoke/{}",
                self.host.base_url(),
                self.capability()
            ))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&message).unwrap_or_default());
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return failed(format!("the host did not answer: {e}"), started),
        };
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let elapsed = started.elapsed();
        self.answers.push((case.to_string(), text.clone()));
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let text_of = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
        CallOutcome {
            code: if status == 200 {
                "ok".into()
            } else {
                text_of("code").unwrap_or_else(|| format!("http-{status}"))
            },
            retry_after_ms: body.get("retry_after_ms").and_then(Value::as_u64),
            id: text_of("id"),
            message: text_of("message").unwrap_or_default(),
            elapsed,
        }
    }

    /// One webhook delivery to `tenant`'s endpoint; returns the answer and the delivery id used.
    pub async fn deliver(
        &mut self,
        case: &str,
        which: &str,
        signature: Signature,
        body: &str,
        delivery_id: &str,
    ) -> DeliveryOutcome {
        let Some(webhook) = self.profile.webhook.clone() else {
            return DeliveryOutcome {
                status: 0,
                host_error: Some("no webhook profile".into()),
            };
        };
        let tenant = self.tenant(which).clone();
        let other = self.tenant(if which == "b" { "a" } else { "b" }).clone();
        let scheme = &webhook.signature;
        let key = match signature {
            Signature::Good => tenant.secrets.get(&scheme.secret).cloned(),
            Signature::OtherTenant => other.secrets.get(&scheme.secret).cloned(),
            Signature::Bad => Some(format!("not-the-key-{:016x}", fastrand::u64(..))),
            Signature::Missing => None,
        }
        .or_else(|| {
            (signature != Signature::Missing).then(|| format!("unbound-{:016x}", fastrand::u64(..)))
        });
        // Real senders' deliveries differ (ids and times in the body): a JSON object body
        // carries the delivery id, so two deliveries are never the same bytes — and a replay
        // (the same id) is.
        let body = match serde_json::from_str::<Value>(body) {
            Ok(Value::Object(mut fields)) => {
                fields.insert("conformance_delivery".into(), delivery_id.into());
                Value::Object(fields).to_string()
            }
            _ => body.to_string(),
        };
        let body = body.as_str();
        let path = webhook.path.trim_start_matches('/');
        let mut request = self
            .client
            .post(format!(
                "{}/webhooks/{}/{}/{path}",
                self.host.base_url(),
                tenant.id,
                self.manifest.name
            ))
            .header("content-type", "application/json")
            .body(body.to_string());
        for (k, v) in &webhook.headers {
            request = request.header(k, v);
        }
        if let Some(h) = &webhook.delivery_id_header {
            request = request.header(h, delivery_id);
        }
        if let Some(key) = key {
            request = request.header(&scheme.header, scheme.sign(key.as_bytes(), body.as_bytes()));
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                return DeliveryOutcome {
                    status: 0,
                    host_error: Some(format!("the host did not answer: {e}")),
                };
            }
        };
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        self.answers.push((case.to_string(), text.clone()));
        let host_error = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_string))
            .filter(|code| HOST_CODES.contains(&code.as_str()));
        DeliveryOutcome { status, host_error }
    }
}

fn failed(message: String, started: Instant) -> CallOutcome {
    CallOutcome {
        code: "no-answer".into(),
        retry_after_ms: None,
        id: None,
        message,
        elapsed: started.elapsed(),
    }
}
