//! The run's context: the host under test, the scripted upstream, the provider, its tenants
//! and profile, and everything captured so far; and the calls a case makes through the host
//! (an invoke, a signed delivery, a fired slot).

use std::time::Instant;

use greentic_manifest::ProviderManifest;
use serde_json::Value;

use crate::cases::{Case, Signature};
use crate::domain::{DomainSuite, Drive};
use crate::host::{CapturedSpan, FireRequest, HostUnderTest, TenantSetup};
use crate::outcome::{CallOutcome, DeliveryOutcome, HOST_CODES, failed};
use crate::profile::Profile;
use crate::upstream::Upstream;

/// The name of the schedule the suite fires (trigger domains).
pub(crate) const SCHEDULE: &str = "conformance";

/// Everything a case can use, and everything captured so far.
pub(crate) struct Ctx {
    pub host: Box<dyn HostUnderTest>,
    pub upstream: Upstream,
    pub client: reqwest::Client,
    pub manifest: ProviderManifest,

    /// What is certified (a component, or a remote provider).
    pub subject: crate::host::Subject,
    pub domain: String,
    /// What the suite knows of the domain.
    pub suite: &'static DomainSuite,
    /// How one call of the provider is made.
    pub drive: Drive,
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

    /// The operation a call is recorded under: the invoked one, the domain's name for a
    /// delivery, the schedule's name for a fire.
    pub fn operation(&self) -> String {
        match &self.drive {
            Drive::Invoke { operation, .. } => operation.clone(),
            Drive::Deliver => self.suite.name.to_string(),
            Drive::Fire { .. } => SCHEDULE.to_string(),
        }
    }

    /// One call of the provider as `which`, the domain's way (see [`Drive`]): an invoke (with
    /// `key`), the case's signed delivery, or a fired slot.
    pub async fn drive(&mut self, case: &Case, which: &str, key: Option<&str>) -> CallOutcome {
        match self.drive.clone() {
            Drive::Invoke { operation, body } => {
                self.invoke(&case.id, which, &operation, &body, key).await
            }
            Drive::Fire { payload } => self.fire(&case.id, which, payload).await,
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

    /// One slot of the suite's schedule, carrying `payload`, fired for `which`.
    pub async fn fire(&mut self, case: &str, which: &str, payload: String) -> CallOutcome {
        let tenant = self.tenant(which).clone();
        let started = Instant::now();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let request = FireRequest {
            schedule: SCHEDULE.into(),
            // A fresh slot each time, as a schedule's are.
            scheduled_at_ms: now,
            payload,
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

    /// One invoke of `operation` with `body` as `which` (with idempotency `key`).
    pub async fn invoke(
        &mut self,
        case: &str,
        which: &str,
        operation: &str,
        body: &Value,
        key: Option<&str>,
    ) -> CallOutcome {
        let tenant = self.tenant(which).clone();
        let started = Instant::now();
        let token = match self.host.token(&tenant) {
            Ok(t) => t,
            Err(e) => return failed(format!("no token for {}: {e}", tenant.id), started),
        };
        let mut request = self
            .client
            .post(format!("{}/v1/invoke/{operation}", self.host.base_url()))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap_or_default());
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
