//! One call as the capabilities see it: who it is for ([`CallScope`], shared by every instance
//! of the call) and the host side of one instance's imports ([`Imports`]).

use std::any::{Any, TypeId};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use greentic_metrics::Metrics;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;

use crate::budget::HostBudget;
use crate::outbound::{NextInFlight, OutboundCall, OutboundPolicy, RequestOwner};

/// Who a call is for and what each capability hands it. Shared, read-only, by every instance
/// of one call.
pub struct CallScope {
    /// Tenant id (from the verified token).
    pub tenant: String,
    /// Team, if the token names one.
    pub team: Option<String>,
    /// User, if the token names one.
    pub user: Option<String>,
    /// Provider name.
    pub provider: String,
    /// The operation invoked (the route's `capability`: `send`, `webhook`, a schedule's name).
    pub operation: String,
    /// Trace id of the call.
    pub trace_id: String,
    /// The host's span for this call (parent of guest spans).
    pub otel_cx: opentelemetry::Context,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Secret names the provider declares *and* the bundle grants.
    pub granted_secrets: Arc<BTreeSet<String>>,
    /// Secret names bound for this tenant.
    pub bound_secrets: Arc<BTreeSet<String>>,
    /// The tenant's validated configuration of the provider.
    pub config: Arc<serde_json::Value>,
    /// What each capability opened for the revision (used only for those the provider is
    /// granted).
    pub backends: Backends,
}

impl RequestOwner for CallScope {
    fn tenant(&self) -> &str {
        &self.tenant
    }

    fn count_request(&self, connection: &str) {
        self.metrics.inc(
            "greentic_outbound_requests_total",
            &[
                ("tenant", self.tenant.as_str()),
                ("provider", self.provider.as_str()),
                ("connection", connection),
            ],
        );
    }
}

/// The host side of one instance's imports: WASI, `wasi:http`, the call's host-memory budget
/// and telemetry usage, and the call's [`CallScope`]. Nothing in it survives the call.
pub struct Imports {
    /// WASI: no files, no sockets, no environment, no arguments.
    pub wasi: WasiCtx,
    /// Resources of this instance, at most the tenant's `max_resources` at once.
    pub table: ResourceTable,
    /// `wasi:http` state.
    pub http: WasiHttpCtx,
    /// Outbound grant and hooks.
    pub outbound: OutboundCall,
    /// Outgoing requests of this call in flight.
    pub in_flight: Arc<AtomicUsize>,
    /// The in-flight guard of the request `outgoing-handler.handle` is sending.
    pub next_in_flight: NextInFlight,
    /// Most outgoing requests in flight at once (the tenant's `max_outgoing_requests`).
    pub max_in_flight: usize,
    /// Host memory held for this call.
    pub budget: HostBudget,
    /// Who the call is for.
    pub scope: Arc<CallScope>,
    /// What capabilities keep per instance besides (e.g. the events it has published).
    pub usage: Usage,
}

/// What capabilities keep about one instance of a call (telemetry emitted, events published),
/// one value per type, made (by `Default`) on first use: a capability's per-call count needs no
/// field here.
#[derive(Default)]
pub struct Usage(Vec<(TypeId, Box<dyn Any + Send>)>);

impl Usage {
    /// The instance's `T`, if it was made.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        self.0
            .iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, v)| v.downcast_ref::<T>())
    }

    /// The instance's `T`, made on first use.
    pub fn of<T: Default + Send + 'static>(&mut self) -> &mut T {
        let id = TypeId::of::<T>();
        // A handful of entries at most: a scan beats hashing.
        let i = match self.0.iter().position(|(t, _)| *t == id) {
            Some(i) => i,
            None => {
                self.0.push((id, Box::new(T::default())));
                self.0.len() - 1
            }
        };
        match self.0[i].1.downcast_mut::<T>() {
            Some(t) => t,
            // Entries are keyed by their own type, so the downcast cannot fail.
            None => unreachable!("a usage entry of another type"),
        }
    }
}

/// The per-call bounds [`Imports`] are built with (the calling tenant's limits).
#[derive(Debug, Clone, Copy)]
pub struct ImportLimits {
    /// Host resources (handles) alive at once.
    pub max_resources: u32,
    /// Bytes the host may hold on the call's behalf.
    pub host_memory_bytes: u64,
    /// Outgoing requests in flight at once.
    pub max_outgoing_requests: u32,
}

impl Imports {
    /// Fresh imports for one instance of the call in `scope`, for a provider with `outbound`
    /// policy, under `limits`.
    pub fn new(scope: Arc<CallScope>, outbound: OutboundPolicy, limits: ImportLimits) -> Imports {
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.max_resources as usize);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(crate::outbound::FIELDS_LIMIT_BYTES);
        let next_in_flight = NextInFlight::default();
        Imports {
            wasi: WasiCtx::builder().build(),
            table,
            http,
            outbound: OutboundCall {
                policy: outbound,
                next: next_in_flight.clone(),
                owner: Some(scope.clone() as Arc<dyn RequestOwner>),
            },
            in_flight: Arc::new(AtomicUsize::new(0)),
            next_in_flight,
            max_in_flight: limits.max_outgoing_requests as usize,
            budget: HostBudget::new(limits.host_memory_bytes),
            scope,
            usage: Usage::default(),
        }
    }

    /// Hands an instance that served an earlier call to the next call (of the same tenant, on
    /// the same revision): who it is for, its outbound grant and whose requests it sends become
    /// the new call's, and what capabilities counted per call starts again.
    pub fn rebind(&mut self, scope: Arc<CallScope>, outbound: OutboundPolicy) {
        self.outbound.policy = outbound;
        self.outbound.owner = Some(scope.clone() as Arc<dyn RequestOwner>);
        self.scope = scope;
        self.usage = Usage::default();
    }
}

impl WasiView for Imports {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A store's data that holds a call's [`Imports`]: what every capability is linked against.
pub trait HasImports: WasiView + Send + 'static {
    /// The imports of this instance.
    fn imports(&mut self) -> &mut Imports;
}

/// What each configured capability opened for one revision, by the backend's type: a call
/// reaches its capability's through [`Backends::get`]. Cloning shares them.
#[derive(Clone)]
pub struct Backends(Arc<Vec<Arc<dyn Any + Send + Sync>>>);

impl Backends {
    /// Backends as opened, one per configured capability.
    pub(crate) fn new(opened: Vec<Arc<dyn Any + Send + Sync>>) -> Backends {
        Backends(Arc::new(opened))
    }

    /// The backend of type `T`, if a capability opened one.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.iter().find_map(|b| b.downcast_ref::<T>())
    }

    /// The backend of type `T` as opened, to keep in another revision.
    pub(crate) fn get_arc<T: Any + Send + Sync>(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        self.0.iter().find(|b| b.is::<T>()).cloned()
    }
}
