//! The host's implementations of the greentic imports, one module per interface.

pub mod config;
pub mod http;
pub mod secrets;
pub mod state;
pub mod telemetry;

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::greentic;
use crate::bundle::Bundle;
use crate::state::CallState;
use secrets::SecretBackend;

/// The imports a provider is granted; only these are linked (zero trust).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linked {
    /// `greentic:secrets/store`.
    pub secrets: bool,
    /// `greentic:config/config`.
    pub config: bool,
    /// `greentic:telemetry/*`.
    pub telemetry: bool,
    /// `wasi:http/outgoing-handler`.
    pub outgoing_http: bool,
    /// `greentic:state/store`.
    pub state: bool,
}

/// The host-provided capabilities of one runtime, each opened from its bundle section.
#[derive(Clone)]
pub struct Capabilities {
    /// Where secret values come from (`[secrets]`).
    pub secrets: Arc<dyn SecretBackend>,
    /// Where provider state is kept (`[state]`).
    pub state: Arc<state::StateCtx>,
}

impl Capabilities {
    /// Opens every capability's backend as `bundle` configures it.
    pub fn open(bundle: &Bundle) -> anyhow::Result<Capabilities> {
        let secrets = secrets::open(bundle);
        let state = Arc::new(state::StateCtx::open(&bundle.file.state, &bundle.dir)?);
        Ok(Capabilities { secrets, state })
    }
}

/// Adds WASI, `wasi:http/types` (metered) and the granted greentic imports to `linker`.
pub fn add_to_linker(linker: &mut Linker<CallState>, linked: Linked) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    http::add_to_linker(linker, linked.outgoing_http)?;
    greentic::types::types::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
    if linked.secrets {
        secrets::add_to_linker(linker)?;
    }
    if linked.config {
        greentic::config::config::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
    }
    if linked.state {
        state::add_to_linker(linker)?;
    }
    if linked.telemetry {
        greentic::telemetry::types::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
        greentic::telemetry::logs::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
        greentic::telemetry::tracing::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
        greentic::telemetry::metrics::add_to_linker::<_, HasSelf<CallState>>(linker, |s| s)?;
    }
    Ok(())
}

impl greentic::types::types::Host for CallState {}
