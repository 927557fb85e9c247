//! The wire contract's messages ([`crate::pb`]) and the contracts' Rust shapes
//! ([`greentic_interfaces::native`]), each way: what the callback service decodes and answers,
//! what the sidecar adapter hands a Rust provider and sends back, and a webhook delivery as the
//! host sends it.

use greentic_interfaces::native as n;

use crate::pb;

fn unit() -> pb::Unit {
    pb::Unit {}
}

impl From<&n::TenantCtx> for pb::TypesTenantCtx {
    fn from(ctx: &n::TenantCtx) -> pb::TypesTenantCtx {
        use pb::types_cloud::Value as C;
        use pb::types_platform::Value as P;
        let d = &ctx.deployment;
        pb::TypesTenantCtx {
            tenant: ctx.tenant.clone(),
            team: ctx.team.clone(),
            user: ctx.user.clone(),
            deployment: Some(pb::TypesDeploymentCtx {
                cloud: Some(pb::TypesCloud {
                    value: Some(match &d.cloud {
                        n::Cloud::Aws => C::Aws(unit()),
                        n::Cloud::Gcp => C::Gcp(unit()),
                        n::Cloud::Azure => C::Azure(unit()),
                        n::Cloud::Hetzner => C::Hetzner(unit()),
                        n::Cloud::Local => C::Local(unit()),
                        n::Cloud::Other(o) => C::Other(o.clone()),
                    }),
                }),
                region: d.region.clone(),
                platform: Some(pb::TypesPlatform {
                    value: Some(match &d.platform {
                        n::Platform::K8s => P::K8s(unit()),
                        n::Platform::Nomad => P::Nomad(unit()),
                        n::Platform::Systemd => P::Systemd(unit()),
                        n::Platform::CfWorkers => P::CfWorkers(unit()),
                        n::Platform::Lambda => P::Lambda(unit()),
                        n::Platform::Baremetal => P::Baremetal(unit()),
                        n::Platform::Other(o) => P::Other(o.clone()),
                    }),
                }),
                runtime: d.runtime.clone(),
            }),
            trace_id: ctx.trace_id.clone(),
            idempotency_key: ctx.idempotency_key.clone(),
        }
    }
}

/// A context as the host sent it; a part it left out reads as the WIT's first case.
impl From<pb::TypesTenantCtx> for n::TenantCtx {
    fn from(ctx: pb::TypesTenantCtx) -> n::TenantCtx {
        use pb::types_cloud::Value as C;
        use pb::types_platform::Value as P;
        let d = ctx.deployment.unwrap_or_default();
        n::TenantCtx {
            tenant: ctx.tenant,
            team: ctx.team,
            user: ctx.user,
            deployment: n::DeploymentCtx {
                cloud: match d.cloud.and_then(|c| c.value) {
                    Some(C::Aws(_)) | None => n::Cloud::Aws,
                    Some(C::Gcp(_)) => n::Cloud::Gcp,
                    Some(C::Azure(_)) => n::Cloud::Azure,
                    Some(C::Hetzner(_)) => n::Cloud::Hetzner,
                    Some(C::Local(_)) => n::Cloud::Local,
                    Some(C::Other(o)) => n::Cloud::Other(o),
                },
                region: d.region,
                platform: match d.platform.and_then(|p| p.value) {
                    Some(P::K8s(_)) | None => n::Platform::K8s,
                    Some(P::Nomad(_)) => n::Platform::Nomad,
                    Some(P::Systemd(_)) => n::Platform::Systemd,
                    Some(P::CfWorkers(_)) => n::Platform::CfWorkers,
                    Some(P::Lambda(_)) => n::Platform::Lambda,
                    Some(P::Baremetal(_)) => n::Platform::Baremetal,
                    Some(P::Other(o)) => n::Platform::Other(o),
                },
                runtime: d.runtime,
            },
            trace_id: ctx.trace_id,
            idempotency_key: ctx.idempotency_key,
        }
    }
}

impl From<n::ProviderError> for pb::TypesProviderError {
    fn from(e: n::ProviderError) -> pb::TypesProviderError {
        use pb::types_provider_error::Value as V;
        pb::TypesProviderError {
            value: Some(match e {
                n::ProviderError::InvalidInput(m) => V::InvalidInput(m),
                n::ProviderError::Unauthorized(m) => V::Unauthorized(m),
                n::ProviderError::NotFound(m) => V::NotFound(m),
                n::ProviderError::RateLimited(r) => V::RateLimited(pb::TypesRateLimit {
                    retry_after_ms: r.retry_after_ms,
                }),
                n::ProviderError::Unavailable(u) => V::Unavailable(pb::TypesUnavailableInfo {
                    retry_after_ms: u.retry_after_ms,
                    message: u.message,
                }),
                n::ProviderError::Timeout => V::Timeout(unit()),
                n::ProviderError::Internal(m) => V::Internal(m),
            }),
        }
    }
}

impl From<pb::MessagingMessage> for n::messaging::Message {
    fn from(m: pb::MessagingMessage) -> n::messaging::Message {
        n::messaging::Message {
            to: m.to,
            text: m.text,
            thread: m.thread,
            idempotency_key: m.idempotency_key,
        }
    }
}

impl From<pb::TimerFireInfo> for n::timer::FireInfo {
    fn from(f: pb::TimerFireInfo) -> n::timer::FireInfo {
        n::timer::FireInfo {
            schedule: f.schedule,
            scheduled_at_ms: f.scheduled_at_ms,
            fired_at_ms: f.fired_at_ms,
            missed: f.missed,
            payload: f.payload,
        }
    }
}

impl From<n::SecretError> for pb::SecretsSecretError {
    fn from(e: n::SecretError) -> pb::SecretsSecretError {
        use pb::secrets_secret_error::Value;
        pb::SecretsSecretError {
            value: Some(match e {
                n::SecretError::NotFound(m) => Value::NotFound(m),
                n::SecretError::Denied(m) => Value::Denied(m),
                n::SecretError::InvalidName(m) => Value::InvalidName(m),
            }),
        }
    }
}

impl From<pb::SecretsSecretError> for n::SecretError {
    fn from(e: pb::SecretsSecretError) -> n::SecretError {
        use pb::secrets_secret_error::Value;
        match e.value {
            Some(Value::NotFound(m)) => n::SecretError::NotFound(m),
            Some(Value::Denied(m)) => n::SecretError::Denied(m),
            None => n::SecretError::Denied(m_none().into()),
            Some(Value::InvalidName(m)) => n::SecretError::InvalidName(m),
        }
    }
}

/// The text of an error whose case the sender left out.
fn m_none() -> &'static str {
    "(an error without a case)"
}

impl From<n::ConfigError> for pb::ConfigConfigError {
    fn from(e: n::ConfigError) -> pb::ConfigConfigError {
        use pb::config_config_error::Value;
        pb::ConfigConfigError {
            value: Some(match e {
                n::ConfigError::NotFound(m) => Value::NotFound(m),
                n::ConfigError::InvalidKey(m) => Value::InvalidKey(m),
            }),
        }
    }
}

impl From<pb::ConfigConfigError> for n::ConfigError {
    fn from(e: pb::ConfigConfigError) -> n::ConfigError {
        use pb::config_config_error::Value;
        match e.value {
            Some(Value::NotFound(m)) => n::ConfigError::NotFound(m),
            Some(Value::InvalidKey(m)) => n::ConfigError::InvalidKey(m),
            None => n::ConfigError::NotFound(m_none().into()),
        }
    }
}

impl From<n::StateError> for pb::StateStateError {
    fn from(e: n::StateError) -> pb::StateStateError {
        use pb::state_state_error::Value;
        pb::StateStateError {
            value: Some(match e {
                n::StateError::InvalidKey(m) => Value::InvalidKey(m),
                n::StateError::TooLarge(m) => Value::TooLarge(m),
                n::StateError::Conflict(r) => Value::Conflict(r),
                n::StateError::Unavailable(m) => Value::Unavailable(m),
            }),
        }
    }
}

impl From<pb::StateStateError> for n::StateError {
    fn from(e: pb::StateStateError) -> n::StateError {
        use pb::state_state_error::Value;
        match e.value {
            Some(Value::InvalidKey(m)) => n::StateError::InvalidKey(m),
            Some(Value::TooLarge(m)) => n::StateError::TooLarge(m),
            Some(Value::Conflict(r)) => n::StateError::Conflict(r),
            Some(Value::Unavailable(m)) => n::StateError::Unavailable(m),
            None => n::StateError::Unavailable(m_none().into()),
        }
    }
}

impl From<n::EventError> for pb::EventsEventError {
    fn from(e: n::EventError) -> pb::EventsEventError {
        use pb::events_event_error::Value;
        pb::EventsEventError {
            value: Some(match e {
                n::EventError::InvalidName(m) => Value::InvalidName(m),
                n::EventError::InvalidPayload(m) => Value::InvalidPayload(m),
                n::EventError::TooMany(c) => Value::TooMany(c),
                n::EventError::TooLarge(c) => Value::TooLarge(c),
                n::EventError::Unavailable(m) => Value::Unavailable(m),
            }),
        }
    }
}

impl From<pb::EventsEventError> for n::EventError {
    fn from(e: pb::EventsEventError) -> n::EventError {
        use pb::events_event_error::Value;
        match e.value {
            Some(Value::InvalidName(m)) => n::EventError::InvalidName(m),
            Some(Value::InvalidPayload(m)) => n::EventError::InvalidPayload(m),
            Some(Value::TooMany(c)) => n::EventError::TooMany(c),
            Some(Value::TooLarge(c)) => n::EventError::TooLarge(c),
            Some(Value::Unavailable(m)) => n::EventError::Unavailable(m),
            None => n::EventError::Unavailable(m_none().into()),
        }
    }
}

impl From<pb::TelemetryAttribute> for n::Attribute {
    fn from(a: pb::TelemetryAttribute) -> n::Attribute {
        n::Attribute {
            key: a.key,
            value: a.value,
        }
    }
}

impl From<n::Attribute> for pb::TelemetryAttribute {
    fn from(a: n::Attribute) -> pb::TelemetryAttribute {
        pb::TelemetryAttribute {
            key: a.key,
            value: a.value,
        }
    }
}

/// The attributes of a message, in the contracts' shape.
pub fn attributes(a: Vec<pb::TelemetryAttribute>) -> Vec<n::Attribute> {
    a.into_iter().map(Into::into).collect()
}

/// The attributes of a call, in the wire's shape.
pub fn wire_attributes(a: Vec<n::Attribute>) -> Vec<pb::TelemetryAttribute> {
    a.into_iter().map(Into::into).collect()
}

/// A wire level; one the contract does not know reads as `error` (it is never dropped).
pub fn level(level: i32) -> n::Level {
    match pb::TelemetryLevel::try_from(level) {
        Ok(pb::TelemetryLevel::Trace) => n::Level::Trace,
        Ok(pb::TelemetryLevel::Debug) => n::Level::Debug,
        Ok(pb::TelemetryLevel::Info) => n::Level::Info,
        Ok(pb::TelemetryLevel::Warn) => n::Level::Warn,
        Ok(pb::TelemetryLevel::Error) | Err(_) => n::Level::Error,
    }
}

/// The wire form of `level`.
pub fn wire_level(level: n::Level) -> i32 {
    (match level {
        n::Level::Trace => pb::TelemetryLevel::Trace,
        n::Level::Debug => pb::TelemetryLevel::Debug,
        n::Level::Info => pb::TelemetryLevel::Info,
        n::Level::Warn => pb::TelemetryLevel::Warn,
        n::Level::Error => pb::TelemetryLevel::Error,
    }) as i32
}

/// A wire status; a missing one is `unset`.
pub fn span_status(s: Option<pb::TelemetrySpanStatus>) -> n::SpanStatus {
    use pb::telemetry_span_status::Value;
    match s.and_then(|s| s.value) {
        Some(Value::Ok(_)) => n::SpanStatus::Ok,
        Some(Value::Error(m)) => n::SpanStatus::Error(m),
        Some(Value::Unset(_)) | None => n::SpanStatus::Unset,
    }
}

impl From<n::SpanStatus> for pb::TelemetrySpanStatus {
    fn from(s: n::SpanStatus) -> pb::TelemetrySpanStatus {
        use pb::telemetry_span_status::Value;
        pb::TelemetrySpanStatus {
            value: Some(match s {
                n::SpanStatus::Unset => Value::Unset(unit()),
                n::SpanStatus::Ok => Value::Ok(unit()),
                n::SpanStatus::Error(m) => Value::Error(m),
            }),
        }
    }
}

/// A webhook delivery on the wire, for the tenant of `ctx`.
pub fn webhook_request(ctx: &n::TenantCtx, r: n::webhook::Request) -> pb::WebhookHandleRequest {
    pb::WebhookHandleRequest {
        ctx: Some(ctx.into()),
        method: r.method,
        path_with_query: r.path_with_query,
        headers: r
            .headers
            .into_iter()
            .map(|(name, value)| pb::HttpHeader { name, value })
            .collect(),
        body: r.body,
    }
}

/// A webhook delivery as the host sent it, and whose it is.
pub fn webhook_delivery(r: pb::WebhookHandleRequest) -> (n::TenantCtx, n::webhook::Request) {
    (
        r.ctx.unwrap_or_default().into(),
        n::webhook::Request {
            method: r.method,
            path_with_query: r.path_with_query,
            headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(),
            body: r.body,
        },
    )
}

impl From<n::webhook::Response> for pb::WebhookHandleResponse {
    fn from(r: n::webhook::Response) -> pb::WebhookHandleResponse {
        pb::WebhookHandleResponse {
            status: u32::from(r.status),
            headers: r
                .headers
                .into_iter()
                .map(|(name, value)| pb::HttpHeader { name, value })
                .collect(),
            body: r.body,
        }
    }
}

/// A provider's answer as the host takes it; a status past `u16` reads as 0, which no answer
/// may have (the host refuses it as it refuses any status outside 100–999).
impl From<pb::WebhookHandleResponse> for n::webhook::Response {
    fn from(r: pb::WebhookHandleResponse) -> n::webhook::Response {
        n::webhook::Response {
            status: u16::try_from(r.status).unwrap_or(0),
            headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(),
            body: r.body,
        }
    }
}
