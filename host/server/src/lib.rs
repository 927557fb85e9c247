//! The HTTP surface: invoke, webhooks and liveness on the public listener; readiness and
//! metrics on the admin listener; and the accept loop that bounds how long a connection may
//! stay without a request and how many may be open.
//!
//! [`App`] is the state every handler shares ([`app`]); the routes are here, the handlers in
//! `handlers`, request bounds in [`requests`] and the accept loop in [`connections`].

mod app;
pub mod connections;
mod handlers;
pub mod requests;

pub use app::{App, TENANT_HEADER};
pub use connections::{
    ClientCertificate, ConnectionLimits, Tls, serve, serve_connection, serve_connection_tls,
};
pub use requests::{RequestLimits, bounded};

use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get, post};
use handlers::{invoke, metrics, readyz, reload, webhook, webhook_root};

/// Builds the public router: invoke, webhooks and liveness. Every request body is read in
/// full, within the limits, before any handler (and so before any guest) sees the request.
pub fn router(app: Arc<App>, limits: RequestLimits) -> Router {
    finish(public_routes(), app, limits)
}

/// Builds the admin router: liveness, readiness and metrics, for the admin listener only
/// (what providers, digests and tenants a host serves is not for the public side).
pub fn admin_router(app: Arc<App>, limits: RequestLimits) -> Router {
    finish(
        admin_routes().route("/healthz", get(|| async { "ok\n" })),
        app,
        limits,
    )
}

/// Both sets of routes on one router: for a host serving one loopback listener to a test
/// harness (the conformance suite), never for `run`.
pub fn combined_router(app: Arc<App>, limits: RequestLimits) -> Router {
    finish(public_routes().merge(admin_routes()), app, limits)
}

fn public_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/invoke/{capability}", post(invoke))
        .route("/webhooks/{tenant}/{provider}", any(webhook_root))
        .route("/webhooks/{tenant}/{provider}/", any(webhook_root))
        .route("/webhooks/{tenant}/{provider}/{*path}", any(webhook))
        .route("/healthz", get(|| async { "ok\n" }))
}

fn admin_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/reload", post(reload))
}

fn finish(routes: Router<Arc<App>>, app: Arc<App>, limits: RequestLimits) -> Router {
    // Every answer has the `{code, message, retryable}` shape, a path or method the host does
    // not serve included.
    let routes = routes
        .fallback(|uri: axum::http::Uri| async move {
            requests::error(
                404,
                "unknown-endpoint",
                format!(
                    "no such endpoint: {}; the host serves POST /v1/invoke/{{capability}}, /webhooks/{{tenant}}/{{provider}}/… and GET /healthz (admin: /readyz, /metrics, POST /reload)",
                    requests::clip_path(uri.path())
                ),
            )
        })
        .method_not_allowed_fallback(|method: axum::http::Method, uri: axum::http::Uri| async move {
            requests::error(
                405,
                "method-not-allowed",
                format!(
                    "{method} is not allowed on {}; POST /v1/invoke/{{capability}}, GET /healthz, /readyz and /metrics, POST /reload",
                    requests::clip_path(uri.path())
                ),
            )
        });
    bounded(routes.with_state(app), limits)
}
