//! The provider API: one trait per domain, the call's [`Ctx`], and the plain [`Request`] and
//! [`Response`] of webhook providers. `#[provider]` exports an implementation; every call then
//! gets a span named `<crate>.<operation>` (the provider adds attributes through [`Ctx`]), its
//! outcome (`outcome` attribute and span status) and one `calls{operation, outcome}` counter.

use crate::errors;
use crate::telemetry::{self, SpanGuard};
use crate::types::{DeploymentCtx, ProviderError, TenantCtx};

pub use crate::messaging::exports::greentic::messaging::outbound::{Message, SendResult};
pub use crate::timer::exports::greentic::timer::schedule::FireInfo;

/// The header the host sets on every webhook delivery to the tenant the URL names
/// (`/webhooks/{tenant}/{provider}/…`); a caller's own `x-greentic-*` headers never reach the
/// provider.
pub const TENANT_HEADER: &str = "x-greentic-tenant";
/// The header the host sets on a webhook delivery to the call's W3C trace id.
pub const TRACE_HEADER: &str = "x-greentic-trace-id";

/// Who a call is for, and the call's span.
///
/// The host fills the tenant from the caller's verified token (or, for webhooks, from the
/// delivery's path); a provider scopes everything it does by it. `idempotency_key` is resolved
/// once, before the provider runs: a message's own key, else the call's.
pub struct Ctx {
    /// The tenant.
    pub tenant: String,
    /// The team within the tenant, if the token named one.
    pub team: Option<String>,
    /// The user, if the token named one.
    pub user: Option<String>,
    /// Where the call runs (absent for webhook deliveries, which carry only the tenant).
    pub deployment: Option<DeploymentCtx>,
    /// W3C trace id of the call.
    pub trace_id: Option<String>,
    /// The one idempotency key of the call; pass it upstream. For a webhook delivery it is the
    /// sender's `Idempotency-Key` header, if any: the sender's word, not covered by its
    /// signature.
    pub idempotency_key: Option<String>,
    span: Option<SpanGuard>,
}

impl Ctx {
    /// A context for unit tests: tenant `tenant`, no span (attributes are dropped), no host.
    pub fn test(tenant: &str) -> Ctx {
        Ctx {
            tenant: tenant.to_string(),
            team: None,
            user: None,
            deployment: None,
            trace_id: None,
            idempotency_key: None,
            span: None,
        }
    }

    /// This context with idempotency key `key`.
    pub fn with_idempotency_key(mut self, key: &str) -> Ctx {
        self.idempotency_key = Some(key.to_string());
        self
    }

    fn from_tenant_ctx(ctx: TenantCtx, key: Option<String>, span: SpanGuard) -> Ctx {
        Ctx {
            tenant: ctx.tenant,
            team: ctx.team,
            user: ctx.user,
            deployment: Some(ctx.deployment),
            trace_id: ctx.trace_id,
            idempotency_key: resolve_key(key, ctx.idempotency_key),
            span: Some(span),
        }
    }

    /// Sets an attribute on the call's span.
    pub fn attr(&self, key: &str, value: &str) -> &Ctx {
        if let Some(span) = &self.span {
            span.attr(key, value);
        }
        self
    }

    /// Records an event on the call's span.
    pub fn event(&self, name: &str, attrs: &[(&str, &str)]) {
        if let Some(span) = &self.span {
            span.event(name, attrs);
        }
    }

    /// Starts a child span of the call's span (a detached span in unit tests).
    pub fn child_span(&self, name: &str) -> Option<SpanGuard> {
        self.span.as_ref().map(|span| span.child(name))
    }

    /// The `TenantCtx` a host would pass, for code written against the raw bindings.
    pub fn tenant_ctx(&self) -> TenantCtx {
        TenantCtx {
            tenant: self.tenant.clone(),
            team: self.team.clone(),
            user: self.user.clone(),
            deployment: self
                .deployment
                .clone()
                .unwrap_or_else(|| crate::test_ctx("", None).deployment),
            trace_id: self.trace_id.clone(),
            idempotency_key: self.idempotency_key.clone(),
        }
    }
}

/// The call's one idempotency key: the message's own, else the call's; an empty key is none.
fn resolve_key(message: Option<String>, call: Option<String>) -> Option<String> {
    message
        .filter(|k| !k.is_empty())
        .or(call.filter(|k| !k.is_empty()))
}

/// A messaging provider (`greentic:messaging/provider`): sends messages for tenants.
pub trait Messaging {
    /// Sends `msg` for the tenant in `ctx`. `msg.idempotency_key` has been moved into
    /// `ctx.idempotency_key` (the message's key wins over the call's).
    fn send(ctx: &Ctx, msg: Message) -> Result<SendResult, ProviderError>;
}

/// A webhook provider (`greentic:webhook/handler`): answers HTTP deliveries from outside
/// services at `/webhooks/{tenant}/{provider}/…`.
pub trait Webhook {
    /// The largest body read; larger deliveries are answered 413 without calling
    /// [`Webhook::handle`]. The host caps bodies too (`[host].max_body_bytes`).
    fn max_body_bytes() -> usize {
        1 << 20
    }

    /// Answers one delivery. Verify its signature before trusting anything in it.
    fn handle(ctx: &Ctx, request: Request) -> Response;
}

/// A timer provider (`greentic:timer/scheduled`): handles the slots the host fires.
pub trait Timer {
    /// Handles one slot; `ctx.idempotency_key` names it (`schedule:NAME:SCHEDULED-AT-MS`).
    fn on_fire(ctx: &Ctx, info: FireInfo) -> Result<(), ProviderError>;
}

pub use crate::incoming::Request;

/// A webhook provider's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// The outcome recorded on the span and counter (default: `ok` below 400, else
    /// `http-<status>`).
    pub outcome: Option<String>,
}

impl Response {
    /// An empty answer with `status`.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            outcome: None,
        }
    }

    /// A JSON answer.
    pub fn json(status: u16, body: &serde_json::Value) -> Response {
        Response::new(status)
            .header("content-type", "application/json")
            .body(body.to_string().into_bytes())
    }

    /// A small JSON answer `{"status": status, "message": message}`, the shape every greentic
    /// webhook provider uses for its refusals.
    pub fn message(status: u16, message: &str) -> Response {
        Response::json(
            status,
            &serde_json::json!({ "status": status, "message": message }),
        )
    }

    /// A plain-text answer.
    pub fn text(status: u16, body: &str) -> Response {
        Response::new(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.as_bytes().to_vec())
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: Vec<u8>) -> Response {
        self.body = body;
        self
    }

    /// Names the outcome for telemetry, e.g. `accepted`, `bad-signature`.
    pub fn outcome(mut self, outcome: &str) -> Response {
        self.outcome = Some(outcome.to_string());
        self
    }

    /// The outcome recorded for this answer.
    pub fn outcome_code(&self) -> String {
        match &self.outcome {
            Some(outcome) => outcome.clone(),
            None if self.status < 400 => "ok".to_string(),
            None => format!("http-{}", self.status),
        }
    }
}

/// What `#[provider]` expands to calls: the wrappers around each domain's export.
#[doc(hidden)]
pub mod __export {
    use super::*;
    use crate::webhook::wasi::http::types::{IncomingRequest, ResponseOutparam};

    fn record(span: &SpanGuard, operation: &str, outcome: &str) {
        span.attr("outcome", outcome);
        telemetry::counter_add(
            "calls",
            1,
            &[("operation", operation), ("outcome", outcome)],
        );
    }

    fn close<T>(ctx: Ctx, operation: &str, result: &Result<T, ProviderError>) {
        if let Some(span) = ctx.span {
            let outcome = result.as_ref().map_or_else(errors::code, |_| "ok");
            record(&span, operation, outcome);
            span.finish(result);
        }
    }

    /// `outbound.send`.
    pub fn send<P: Messaging>(
        name: &str,
        ctx: TenantCtx,
        mut msg: Message,
    ) -> Result<SendResult, ProviderError> {
        let span = SpanGuard::start(&format!("{name}.send"));
        let key = msg.idempotency_key.take();
        let ctx = Ctx::from_tenant_ctx(ctx, key, span);
        let result = P::send(&ctx, msg);
        if let Ok(sent) = &result {
            ctx.attr("message.id", &sent.id);
        }
        close(ctx, "send", &result);
        result
    }

    /// `schedule.on-fire`.
    pub fn on_fire<P: Timer>(
        name: &str,
        ctx: TenantCtx,
        info: FireInfo,
    ) -> Result<(), ProviderError> {
        let span = SpanGuard::start(&format!("{name}.fire"));
        span.attr("schedule", &info.schedule);
        span.attr("slot", &info.scheduled_at_ms.to_string());
        let ctx = Ctx::from_tenant_ctx(ctx, None, span);
        let result = P::on_fire(&ctx, info);
        close(ctx, "fire", &result);
        result
    }

    /// `wasi:http/incoming-handler.handle`.
    pub fn handle<P: Webhook>(name: &str, request: IncomingRequest, out: ResponseOutparam) {
        let span = SpanGuard::start(&format!("{name}.handle"));
        let (span, response) = match Request::read(request, P::max_body_bytes()) {
            Ok(request) if request.header(TENANT_HEADER).is_none_or(str::is_empty) => (
                Some(span),
                Response::message(500, "the host did not name the tenant (x-greentic-tenant)")
                    .outcome("no-tenant"),
            ),
            Ok(request) => {
                let mut ctx = Ctx {
                    tenant: request
                        .header(TENANT_HEADER)
                        .unwrap_or_default()
                        .to_string(),
                    team: None,
                    user: None,
                    deployment: None,
                    trace_id: request.header(TRACE_HEADER).map(str::to_string),
                    idempotency_key: request.header("idempotency-key").map(str::to_string),
                    span: Some(span),
                };
                let response = P::handle(&ctx, request);
                (ctx.span.take(), response)
            }
            Err(crate::incoming::ReadError::TooLarge(limit)) => (
                Some(span),
                Response::message(413, &format!("the body is over {limit} bytes"))
                    .outcome("too-large"),
            ),
            Err(crate::incoming::ReadError::Stream(_)) => (
                Some(span),
                Response::message(400, "the body could not be read").outcome("malformed"),
            ),
        };
        if let Some(span) = span {
            let outcome = response.outcome_code();
            span.attr("http.status", &response.status.to_string());
            record(&span, "handle", &outcome);
            if response.status < 400 {
                span.ok();
            } else {
                span.fail(&outcome);
            }
        }
        crate::incoming::respond_with(out, response.status, &response.headers, &response.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_key_wins_over_the_call_key_and_empty_is_none() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(resolve_key(None, s("call")), s("call"));
        assert_eq!(resolve_key(s("msg"), s("call")), s("msg"));
        assert_eq!(resolve_key(s(""), s("call")), s("call"));
        assert_eq!(resolve_key(None, s("")), None);
        assert_eq!(resolve_key(None, None), None);
    }

    #[test]
    fn responses_name_their_outcome() {
        assert_eq!(Response::new(202).outcome_code(), "ok");
        assert_eq!(Response::new(401).outcome_code(), "http-401");
        let r = Response::message(409, "seen").outcome("replayed");
        assert_eq!(r.outcome_code(), "replayed");
        assert_eq!(
            r.headers,
            vec![("content-type".into(), "application/json".into())]
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body, serde_json::json!({"status": 409, "message": "seen"}));
    }
}
