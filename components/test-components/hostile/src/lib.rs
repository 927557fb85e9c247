//! Hostile test provider: `send` misbehaves the way `to` names. The host must contain each
//! (a typed error or a bounded effect), discard the instance, and keep serving other tenants.
//!
//! - `small-allocs`: allocates 64-byte blocks until memory runs out;
//! - `huge-return`: returns a 16 MiB id;
//! - `huge-telemetry`: an 8 MiB log message, a 1 MiB attribute and metric name;
//! - `unended-spans`: starts 10 000 spans and ends none;
//! - `secret-loop`: reads its secret in a tight loop;
//! - `host-call-loop`: calls the config import in a tight loop;
//! - `http-hoard`: creates outgoing requests with full headers, long paths and buffered bodies,
//!   keeping every handle (host memory, outside its own linear memory);
//! - `handle-hoard`: creates header fields and keeps every handle;
//! - `telemetry-flood`: goes past every per-call telemetry budget (log bytes, spans, events,
//!   attributes, attribute bytes, metric points), each string at its longest, then succeeds;
//! - `huge-error`: fails with a 20 MiB message of NUL bytes, of the error kind `text` names
//!   (`internal`, `invalid-input`, `unauthorized`, `not-found`, `unavailable`);
//! - `fanout`: starts 16 requests to the URL in `text` at once without waiting for any, and
//!   answers `sent=N limited=M` (how many the host refused with `connection-limit-reached`).

use greentic_provider_sdk::messaging::exports::greentic::messaging::outbound::{
    Guest, Message, SendResult,
};
use greentic_provider_sdk::messaging::wasi::http::outgoing_handler;
use greentic_provider_sdk::messaging::wasi::http::types::{
    ErrorCode, Fields, Method, OutgoingRequest, Scheme,
};
use greentic_provider_sdk::telemetry::{self, SpanGuard};
use greentic_provider_sdk::types::{ProviderError, TenantCtx, UnavailableInfo};
use greentic_provider_sdk::{config, secrets};

greentic_provider_sdk::provider_manifest!();

struct Hostile;

fn ok(id: String) -> Result<SendResult, ProviderError> {
    Ok(SendResult {
        id,
        delivered_at_ms: 0,
    })
}

impl Guest for Hostile {
    fn send(_ctx: TenantCtx, msg: Message) -> Result<SendResult, ProviderError> {
        match msg.to.as_str() {
            "small-allocs" => {
                let mut kept: Vec<Vec<u8>> = Vec::new();
                loop {
                    kept.push(std::hint::black_box(vec![1u8; 64]));
                }
            }
            "huge-return" => ok("x".repeat(16 << 20)),
            "huge-telemetry" => {
                let big = "m".repeat(8 << 20);
                let attr = "a".repeat(1 << 20);
                telemetry::info(&big, &[("big", &attr), (&attr, "value")]);
                telemetry::counter_add(&attr, 1, &[(&attr, &attr)]);
                let span = SpanGuard::start(&attr);
                span.attr(&attr, &attr);
                span.event(&attr, &[(&attr, &attr)]);
                span.ok();
                ok("told".into())
            }
            "unended-spans" => {
                for i in 0..10_000 {
                    std::mem::forget(SpanGuard::start(&format!("span-{i}")));
                }
                ok("forgot".into())
            }
            "secret-loop" => loop {
                let _ = std::hint::black_box(secrets::optional("HOSTILE_TOKEN"));
            },
            "host-call-loop" => loop {
                let _ = std::hint::black_box(config::get::<String>("/x"));
            },
            "http-hoard" => http_hoard(),
            "handle-hoard" => {
                let mut kept = Vec::new();
                loop {
                    kept.push(Fields::new());
                }
            }
            "telemetry-flood" => {
                telemetry_flood();
                ok("flooded".into())
            }
            "huge-error" => {
                let m = "\0".repeat(20 << 20);
                Err(match msg.text.as_str() {
                    "invalid-input" => ProviderError::InvalidInput(m),
                    "unauthorized" => ProviderError::Unauthorized(m),
                    "not-found" => ProviderError::NotFound(m),
                    "unavailable" => ProviderError::Unavailable(UnavailableInfo {
                        retry_after_ms: None,
                        message: m,
                    }),
                    _ => ProviderError::Internal(m),
                })
            }
            "fanout" => fanout(&msg.text),
            other => Err(ProviderError::InvalidInput(format!(
                "unknown misbehaviour `{other}`"
            ))),
        }
    }
}

/// Outgoing requests with 100 headers of 512 bytes, a 60 000-byte path and a body buffered to
/// the host's limit, every handle kept, until the host stops the call.
fn http_hoard() -> Result<SendResult, ProviderError> {
    let value = vec![b'v'; 512];
    let path = format!("/{}", "p".repeat(60_000));
    let chunk = vec![b'b'; 1 << 20];
    let mut kept = Vec::new();
    loop {
        let fields = Fields::new();
        for i in 0..100 {
            if fields.append(&format!("x-hoard-{i}"), &value).is_err() {
                break;
            }
        }
        let request = OutgoingRequest::new(fields);
        let _ = request.set_path_with_query(Some(&path));
        let Ok(body) = request.body() else {
            return Err(ProviderError::Internal("no body".into()));
        };
        let Ok(stream) = body.write() else {
            return Err(ProviderError::Internal("no body stream".into()));
        };
        while let Ok(n) = stream.check_write() {
            if n == 0
                || stream
                    .write(&chunk[..(n as usize).min(chunk.len())])
                    .is_err()
            {
                break;
            }
        }
        kept.push((request, body, stream));
    }
}

/// Every telemetry budget of a call several times over, each string at the host's longest.
fn telemetry_flood() {
    let long = "t".repeat(4096);
    let attrs: Vec<(&str, &str)> = (0..32).map(|_| (long.as_str(), long.as_str())).collect();
    for _ in 0..64 {
        telemetry::info(&long, &attrs);
    }
    for _ in 0..128 {
        let span = SpanGuard::start(&long);
        for _ in 0..8 {
            span.attr(&long, &long);
            span.event(&long, &attrs[..4]);
        }
        span.ok();
    }
    for i in 0..4096 {
        telemetry::counter_add(&format!("flood_{}", i % 8), 1, &[]);
    }
}

/// Sixteen requests to `url` started at once; none is waited for.
fn fanout(url: &str) -> Result<SendResult, ProviderError> {
    let parts = greentic_provider_sdk::http::parse_url(url).map_err(ProviderError::from)?;
    let (mut sent, mut limited) = (0, 0);
    let mut pending = Vec::new();
    for _ in 0..16 {
        let request = OutgoingRequest::new(Fields::new());
        let _ = request.set_method(&Method::Get);
        let _ = request.set_scheme(Some(&Scheme::Http));
        let _ = request.set_authority(Some(&parts.authority));
        let _ = request.set_path_with_query(Some(&parts.path_with_query));
        match outgoing_handler::handle(request, None) {
            Ok(future) => {
                sent += 1;
                pending.push(future);
            }
            Err(ErrorCode::ConnectionLimitReached) => limited += 1,
            Err(e) => return Err(ProviderError::Internal(format!("{e:?}"))),
        }
    }
    ok(format!("sent={sent} limited={limited}"))
}

greentic_provider_sdk::export_messaging_provider!(Hostile);
