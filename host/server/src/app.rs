//! The server's shared state.

use std::sync::Arc;

use arc_swap::ArcSwap;
use greentic_auth::Authenticator;
use greentic_engine::runtime::Runtime;
use greentic_fleet::member::Member;
use greentic_revisions::reload::Reloader;

/// Shared server state.
pub struct App {
    /// The runtime.
    pub runtime: Arc<Runtime>,
    /// Token verification (swapped with each new revision).
    pub auth: Arc<ArcSwap<Authenticator>>,
    /// Live reload (`POST /reload` on the admin listener), when the host serves a bundle file.
    pub reloader: Option<Arc<Reloader>>,
    /// The fleet this host follows, if it is a member of one (`POST /reload` then reads the
    /// fleet's published revision).
    pub member: Option<Arc<Member>>,
}

impl App {
    /// The server state of `runtime` with callers verified by `auth`, without live reload.
    pub fn new(runtime: Arc<Runtime>, auth: Authenticator) -> App {
        App {
            runtime,
            auth: Arc::new(ArcSwap::from_pointee(auth)),
            reloader: None,
            member: None,
        }
    }
}

/// The header a caller might use to claim a tenant; it must agree with the token.
pub const TENANT_HEADER: &str = "x-greentic-tenant";
