//! The handlers: invoke, webhooks, queued deliveries, readiness, reload and metrics, and how
//! a call's error becomes a response.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use greentic_engine::errors::CallError;
use greentic_revisions::reload::Outcome;
use serde_json::json;

use crate::app::{App, TENANT_HEADER};
use crate::connections::ClientCertificate;
use crate::requests::error;

fn call_error(e: &CallError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(e.to_json())).into_response();
    if let Some(ms) = e.retry_after_ms()
        && let Ok(v) = header::HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

pub(crate) async fn invoke(
    State(app): State<Arc<App>>,
    Path(capability): Path<String>,
    certificate: Option<axum::Extension<ClientCertificate>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let presented = certificate.as_ref().map(|c| &*c.0.0);
    let caller = match app.auth.load().authenticate(auth, presented) {
        Ok(caller) => caller,
        Err(e) => {
            let (status, code) = e.status_and_code();
            return error(status, code, e.to_string());
        }
    };
    if let Some(claimed) = headers.get(TENANT_HEADER)
        && claimed.as_bytes() != caller.tenant.as_bytes()
    {
        return error(
            403,
            "tenant-mismatch",
            format!(
                "the {TENANT_HEADER} header does not match the tenant of the call's credentials; the tenant comes from the verified token or client certificate only"
            ),
        );
    }
    let input: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(400, "bad-request", format!("the body is not JSON: {e}")),
    };
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match app.runtime.invoke(&caller, &capability, input, key).await {
        Ok(result) => (StatusCode::OK, axum::Json(result)).into_response(),
        Err(e) => call_error(&e),
    }
}

pub(crate) async fn webhook_root(
    state: State<Arc<App>>,
    Path((tenant, provider)): Path<(String, String)>,
    method: Method,
    query: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    deliver(
        state,
        tenant,
        provider,
        String::new(),
        method,
        query,
        headers,
        body,
    )
    .await
}

pub(crate) async fn webhook(
    state: State<Arc<App>>,
    Path((tenant, provider, path)): Path<(String, String, String)>,
    method: Method,
    query: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    deliver(state, tenant, provider, path, method, query, headers, body).await
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn deliver(
    State(app): State<Arc<App>>,
    tenant: String,
    provider: String,
    path: String,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = match query {
        Some(q) => format!("/{path}?{q}"),
        None => format!("/{path}"),
    };
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(format!("http://greentic.local{path_and_query}"));
    for (name, value) in headers.iter() {
        // The provider sees the delivery's headers, but never the caller's credentials for us.
        if name != header::AUTHORIZATION && name != header::HOST {
            builder = builder.header(name, value);
        }
    }
    let request = match builder.header(header::HOST, "greentic.local").body(body) {
        Ok(r) => r,
        Err(e) => return error(400, "bad-request", e.to_string()),
    };
    match app.runtime.webhook(&tenant, &provider, request).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, axum::body::Body::from(body))
        }
        Err(e) => call_error(&e),
    }
}

pub(crate) async fn readyz(State(app): State<Arc<App>>) -> Response {
    let revision = app.runtime.revision();
    // A fleet host started from a bootstrap bundle (no providers, no tenants) has nothing to
    // serve until the fleet's first revision arrives: not ready, so no traffic reaches it. (A
    // revision the fleet published empty is applied like any other: the host is then ready.)
    // A fleet host whose fleet revision cannot be applied (and nothing earlier could be
    // either) is unready too, saying why.
    let waiting = (app.member.as_ref().is_some_and(|m| !m.has_applied())
        && revision.providers.is_empty()
        && revision.bundle.file.tenants.is_empty())
        || app.runtime.unserved().is_some();
    // A host running as many calls as it admits takes no more: unready while saturated, so a
    // load balancer sends the next call elsewhere.
    let (in_flight, max_in_flight) = revision.engine.in_flight();
    let saturated = in_flight >= max_in_flight;
    let ready = app.runtime.ready.load(Ordering::SeqCst) && !waiting && !saturated;
    let providers: Vec<_> = revision
        .providers
        .values()
        .map(|p| json!({"name": p.name, "digest": p.digest, "world": p.world}))
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let refused = app.reloader.as_ref().and_then(|r| r.last_refused());
    let canary = app.runtime.canary().map(|c| {
        json!({"digest": c.revision.digest, "tenants": c.tenants, "since": c.revision.since_secs()})
    });
    let fleet = app.member.as_ref().map(|m| {
        json!({
            "host": m.fleet().host_id,
            "url": m.fleet().url,
            "serving_from": m.serving_from(),
            "waiting": m.waiting(),
            "high_water": m.high_water(),
        })
    });
    (
        status,
        axum::Json(json!({
            "ready": ready,
            "waiting_for_fleet": waiting,
            "capacity": {"in_flight": in_flight, "max_in_flight": max_in_flight, "saturated": saturated},
            "revision": {"digest": revision.digest, "since": revision.since_secs()},
            "last_refused": refused,
            "canary": canary,
            "fleet": fleet,
            "providers": providers,
        })),
    )
        .into_response()
}

/// `POST /reload` (admin listener): reads the bundle file again and applies it; 200 with the
/// outcome when it is active (or was already), 422 with every problem when it was refused.
/// `?update_lock=true` re-locks providers whose digest changed under the same source.
pub(crate) async fn reload(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Response {
    let update_lock = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .any(|pair| matches!(pair, "update_lock" | "update_lock=true" | "update_lock=1"));
    let Some(reloader) = &app.reloader else {
        return error(
            404,
            "not-found",
            "this host does not serve a bundle file it could reload".into(),
        );
    };
    let outcome = match &app.member {
        Some(_) if update_lock => {
            return error(
                400,
                "bad-request",
                "a fleet member follows the fleet's published lock; publish the bundle with the new digest instead of --update-lock".into(),
            );
        }
        Some(member) => match member.sync().await {
            Ok(Some(outcome)) => outcome,
            Ok(None) => Outcome::Unchanged {
                digest: app.runtime.revision().digest.clone(),
            },
            Err(e) => {
                return error(
                    503,
                    "unavailable",
                    format!("the fleet's revisions cannot be read: {e:#}"),
                );
            }
        },
        None if update_lock => {
            let mut options = reloader.options();
            if options.offline {
                return error(
                    400,
                    "bad-request",
                    "this host runs --offline: it cannot fetch a new digest to lock".into(),
                );
            }
            options.update_lock = true;
            reloader.reload_with(options).await
        }
        None => reloader.reload().await,
    };
    greentic_audit::record(
        "admin.reload",
        serde_json::json!({ "via": "admin-api", "outcome": outcome.label() }),
    );
    let status = match outcome {
        Outcome::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    (status, axum::Json(outcome)).into_response()
}

pub(crate) async fn metrics(State(app): State<Arc<App>>) -> Response {
    let (in_flight, max_in_flight) = app.runtime.revision().engine.in_flight();
    app.runtime
        .metrics
        .set("greentic_host_calls_in_flight", &[], f64::from(in_flight));
    app.runtime
        .metrics
        .set("greentic_max_in_flight", &[], f64::from(max_in_flight));
    let mut text = app.runtime.metrics.render();
    // Which revision this host serves: one series, its digest the label (a dashboard shows
    // the fleet converging, or not).
    let name = greentic_metrics::REVISION_INFO;
    let _ = write!(
        text,
        "# HELP {name} 1, labelled with the digest of the revision this host serves.\n# TYPE {name} gauge\n{name}{{digest=\"{}\"}} 1\n",
        app.runtime.revision().digest
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
