//! A decoded call's attempts: the breaker's admission, a slot of the tenant's gate (and the
//! fleet's), a fresh instance (or one the tenant's earlier call left, see [`crate::kept`]) in
//! a turn of the scheduler, and retries while the policy and the deadline allow.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use greentic_bundle::Limits;
use tracing::Instrument;

use super::Runtime;
use super::envelope::Envelope;
use super::store::{classify, outcome, yield_regularly};
use crate::bindings::greentic::types::types::TenantCtx;
use crate::domain::{Decoded, DomainCx, Output};
use crate::domains::{Kept, Request};
use crate::errors::CallError;
use crate::kept::{Book, KeptFor, Reusable};
use crate::metering::{CpuMeter, Metered, Metering};
use crate::resilience::{BreakerState, RetryPolicy, counts_as_failure};

/// How long past its deadline a call waits for the turn that would end it.
pub(super) const LATE_TURN_MS: u64 = 100;

impl Runtime {
    /// A decoded call: the breaker's admission, then attempts — each under a slot of
    /// `call.gate` and in a fresh instance — retried while the retry policy and the deadline
    /// allow; returns the output and the number of attempts.
    pub(super) async fn attempts(
        &self,
        call: Envelope<'_>,
        decoded: Decoded<Request>,
        seen: &mut Option<Book>,
    ) -> Result<(Output, u32), CallError> {
        let tenant = call.caller.tenant.as_str();
        let provider = call.provider.name.as_str();
        let keyed = decoded.idempotency_key.is_some();
        let ctx = Arc::new(Runtime::tenant_ctx(
            call.revision,
            call.caller,
            call.trace_id,
            decoded.idempotency_key,
        ));
        let request = decoded.request;
        let limits = *call.gate.limits();
        let deadline = Instant::now() + Duration::from_millis(limits.deadline_ms);
        // Whom an instance kept from this call may serve next, if the provider lets it.
        let whom = (call.provider.reuse && call.revision.engine.kept.enabled()).then(|| KeptFor {
            revision: call.revision.serial,
            provider: provider.to_string(),
            tenant: tenant.to_string(),
        });

        // Settled below; if this future is dropped first (the client went away) or returns
        // early (tenant-busy), dropping the admission gives a half-open probe back.
        let admission = self.breakers.admit(tenant, &call.provider.circuit)?;
        let mut attempt = 1;
        let outcome = loop {
            let permit = call.gate.acquire().await?;
            // An instance this tenant's last call of the provider left, with its place on the
            // engine; else the host's own capacity, after the tenant's: a call waits for a
            // place as long as its tenant lets it queue.
            // A remote provider's call holds no place of the instance pool.
            let engine = &call.revision.engine;
            let reused = whom.as_ref().and_then(|whom| engine.kept.take(whom));
            let (reused, place) = match reused {
                Some((reused, place)) => (Some(reused), Some(place)),
                None if call.provider.remote.is_some() => (None, None),
                None => {
                    let until = Instant::now() + Duration::from_millis(limits.queue_timeout_ms);
                    match engine.admit(until.into()).await {
                        Ok(place) => (None, Some(place)),
                        Err(e) => {
                            self.at_capacity(tenant, &e);
                            return Err(e);
                        }
                    }
                }
            };
            let fleet = match self.fleet_limits.get() {
                Some(fleet) => {
                    let until = Instant::now() + Duration::from_millis(limits.queue_timeout_ms);
                    // The fleet's leases count in the units the host meters.
                    let budget = call.gate.budget();
                    let metered = Limits {
                        fuel_per_call: budget.per_call,
                        fuel_per_second: budget.per_second,
                        ..limits
                    };
                    Some(
                        fleet
                            .clone()
                            .admit(call.gate.scope(), tenant, &metered, until)
                            .await?,
                    )
                }
                None => None,
            };
            let attempted = self
                .attempt(
                    &call,
                    &limits,
                    deadline,
                    &ctx,
                    &request,
                    reused,
                    whom.is_some(),
                )
                .await;
            let (result, fuel) = (attempted.result, attempted.used);
            if let Some(book) = attempted.book {
                *seen = Some(book);
                let instance = if book.calls > 1 { "reused" } else { "new" };
                self.metrics.inc(
                    "greentic_instances_total",
                    &[
                        ("tenant", tenant),
                        ("provider", provider),
                        ("instance", instance),
                    ],
                );
            }
            if let (Some(whom), Some(back), Some(place)) = (&whom, attempted.back, place) {
                engine
                    .kept
                    .put(whom, back, place, limits.max_concurrent as usize);
            }
            // A short call finishes without ever giving its thread back; the connection task
            // that runs it would then serve its next request at once, and the next, while
            // other connections' requests wait on the same thread for milliseconds. One
            // yield per attempt lets every ready task have its turn first.
            tokio::task::yield_now().await;
            permit.settle(fuel);
            if let Some(admission) = fleet {
                admission.settle(fuel).await;
            }
            if call.gate.budget().metering == Metering::Fuel {
                self.metrics.add(
                    "greentic_fuel_consumed_total",
                    &[("tenant", tenant), ("provider", provider)],
                    fuel as f64,
                );
            } else if !self.scheduler.fair() {
                // The fair scheduler books guest CPU itself.
                self.metrics.add(
                    "greentic_guest_cpu_seconds_total",
                    &[("tenant", tenant)],
                    fuel as f64 / 1e9,
                );
            }
            match result {
                Err(e)
                    if decoded.retry
                        && attempt < self.retry.max_attempts
                        && RetryPolicy::retryable(&e, keyed) =>
                {
                    let delay = self.retry.delay(attempt, &e);
                    if Instant::now() + delay >= deadline {
                        break Err(e);
                    }
                    self.metrics.inc(
                        "greentic_retries_total",
                        &[
                            ("tenant", tenant),
                            ("provider", provider),
                            ("code", e.code()),
                        ],
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        if let Err(e @ CallError::HostAtCapacity { .. }) = &outcome {
            self.at_capacity(tenant, e);
        }
        let failed = outcome.as_ref().err().is_some_and(counts_as_failure);
        let state = admission.settle(failed);
        self.metrics.set(
            "greentic_circuit_open",
            &[("tenant", tenant), ("provider", provider)],
            if state == BreakerState::Closed {
                0.0
            } else {
                1.0
            },
        );
        outcome.map(|output| (output, attempt))
    }

    /// One attempt in a fresh instance, dropped with its store when the attempt ends — or, for
    /// a provider that lets instances serve later calls of the same tenant (`keep`), in
    /// `reused` (an instance of the tenant's earlier call) if there is one, and handed back
    /// when the call ended cleanly. The guest work (store, instance, call) runs in turns of
    /// the [`Scheduler`] (`mode = "fair"`), else on this task.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn attempt(
        &self,
        call: &Envelope<'_>,
        limits: &Limits,
        deadline: Instant,
        ctx: &Arc<TenantCtx>,
        request: &Request,
        reused: Option<Reusable>,
        keep: bool,
    ) -> Attempted {
        if let Some(remote) = &call.provider.remote {
            return self
                .attempt_remote(call, remote, limits, deadline, ctx, request)
                .await;
        }
        if call.provider.native {
            return attempt_native(call, limits, deadline, ctx, request).await;
        }
        if self.shared.load(Ordering::SeqCst) {
            let cx = DomainCx {
                ctx,
                max_response_bytes: call.revision.max_response_bytes,
                deadline_ms: limits.deadline_ms,
            };
            let (result, used) = self
                .attempt_shared(call, limits, deadline, &cx, request)
                .await;
            return Attempted::answer(result, used);
        }
        let engine = call.revision.engine.clone();
        // With `metering = "cpu-time"`, the call's CPU time bounds it (and is what it used).
        let meter = (!engine.options.fuel).then(|| CpuMeter::new(call.gate.budget().per_call));
        let inner_meter = meter.clone();
        let scope = call.scope.clone();
        let outbound = call.provider.outbound.clone();
        let prepared = call.provider.prepared.clone();
        let (ctx, request, limits) = (ctx.clone(), request.clone(), *limits);
        let max_response_bytes = call.revision.max_response_bytes;
        // Boxed here, once: the future is large (store, instance, call state), and it is
        // handed on by pointer from now on.
        let work = Box::pin(
            async move {
                let meter = inner_meter.as_ref();
                let (mut store, instance, book) = match reused {
                    Some(Reusable { kept, book }) => {
                        let Kept {
                            mut store,
                            instance,
                        } = kept;
                        if let Err(e) = Runtime::rebound_store(
                            &engine, &mut store, scope, &outbound, &limits, deadline, meter,
                        ) {
                            return Attempted::answer(Err(e), 0);
                        }
                        (store, Some(instance), Some(book))
                    }
                    None => match Runtime::call_store(
                        &engine, scope, &outbound, &limits, deadline, meter,
                    ) {
                        Ok(store) => (store, None, keep.then(Book::new)),
                        Err(e) => return Attempted::answer(Err(e), 0),
                    },
                };
                let book = book.map(|b| Book {
                    calls: b.calls + 1,
                    ..b
                });
                let cx = DomainCx {
                    ctx: &ctx,
                    max_response_bytes,
                    deadline_ms: limits.deadline_ms,
                };
                let run = async {
                    let instance = match instance {
                        Some(instance) => instance,
                        None => prepared.instantiate(&mut store).await?,
                    };
                    let answer = prepared.call(&instance, &mut store, &cx, &request).await?;
                    Ok::<_, wasmtime::Error>((answer, instance))
                };
                let (result, instance) = match tokio::time::timeout_at(deadline.into(), run).await {
                    Ok(Ok((answer, instance))) => (Ok(Ok(answer)), Some(instance)),
                    Ok(Err(e)) => (Ok(Err(e)), None),
                    Err(elapsed) => (Err(elapsed), None),
                };
                let (result, used) = outcome(result, &store, &limits, meter);
                // Kept only after a clean end: an answer, or the provider's own error. A trap,
                // a limit or the deadline leaves the instance in a state no call may inherit.
                let back = match (book, instance) {
                    (Some(book), Some(instance))
                        if matches!(result, Ok(_) | Err(CallError::Provider(_))) =>
                    {
                        Some(Reusable {
                            kept: Kept { store, instance },
                            book,
                        })
                    }
                    // The store (and the instance) is dropped here: nothing survives the call.
                    _ => None,
                };
                Attempted {
                    result,
                    used,
                    book,
                    back,
                }
            }
            .in_current_span(),
        );
        let work = Metered::new(work, meter);
        if !self.scheduler.fair() {
            return work.await;
        }
        let mut turns = std::pin::pin!(self.scheduler.run(
            &call.caller.tenant,
            limits.cpu_weight,
            work
        ));
        // A short call is answered in its first turn, here; only one that goes on waits with a
        // second deadline: the one inside the work fires at its next turn, this one bounds the
        // wait for that turn when the guest threads are overloaded (the work is then dropped,
        // and the call charged all the fuel it was allowed, not knowing what it used).
        let first = std::future::poll_fn(|cx| Poll::Ready(turns.as_mut().poll(cx))).await;
        let ran = match first {
            Poll::Ready(ran) => ran,
            Poll::Pending => {
                let late = deadline + Duration::from_millis(LATE_TURN_MS);
                let Ok(ran) = tokio::time::timeout_at(late.into(), turns).await else {
                    return Attempted::answer(
                        Err(CallError::DeadlineExceeded(limits.deadline_ms)),
                        call.gate.budget().per_call,
                    );
                };
                ran
            }
        };
        match ran {
            Ok(ran) => {
                self.metrics.add(
                    "greentic_guest_cpu_seconds_total",
                    &[("tenant", call.caller.tenant.as_str())],
                    ran.cpu.as_secs_f64(),
                );
                if ran.moved {
                    self.metrics.inc(
                        "greentic_cpu_bound_calls_total",
                        &[("tenant", call.caller.tenant.as_str())],
                    );
                }
                ran.answer
            }
            Err(_lost) => Attempted::answer(
                Err(CallError::Internal(
                    "the call's guest work ended without an answer (the host is stopping, or it failed inside the host); retry it".into(),
                )),
                0,
            ),
        }
    }

    /// One attempt on a remote provider: the call's grant opened in the callback service (its
    /// scope, the provider's grants, until the deadline or the attempt's end), the request
    /// sent with the deadline, trace context and credential, the answer (or the link's
    /// failure) typed as a component's would be. No fuel and no memory cap: those are the
    /// component form's.
    async fn attempt_remote(
        &self,
        call: &Envelope<'_>,
        remote: &greentic_remote::LazyLink,
        limits: &Limits,
        deadline: Instant,
        ctx: &Arc<TenantCtx>,
        request: &Request,
    ) -> Attempted {
        let link = match remote.get().await {
            Ok(link) => link,
            Err(e) => {
                return Attempted::answer(
                    Err(crate::domain::remote_failure(e, limits.deadline_ms)),
                    0,
                );
            }
        };
        let callbacks = match greentic_remote::Callbacks::shared().await {
            Ok(callbacks) => callbacks,
            Err(e) => {
                return Attempted::answer(
                    Err(CallError::Internal(format!(
                        "the callback service for remote providers cannot listen: {e}"
                    ))),
                    0,
                );
            }
        };
        let grant = callbacks.open(imports(call, limits), call.provider.linked, deadline);
        let meta = greentic_remote::CallMeta {
            deadline: Some(deadline),
            traceparent: Some(traceparent(&call.scope.otel_cx, call.trace_id)),
            credential: Some(grant.credential().to_string()),
            callback: Some(callbacks.url()),
        };
        let cx = DomainCx {
            ctx,
            max_response_bytes: call.revision.max_response_bytes,
            deadline_ms: limits.deadline_ms,
        };
        let result = call
            .provider
            .prepared
            .call_remote(link, &meta, &cx, request)
            .await;
        // The grant ends with the attempt: a callback after this is refused.
        drop(grant);
        Attempted::answer(result, 0)
    }

    /// [`Runtime::attempt`] in the provider's kept instance, which only this call's scope
    /// (tenant, secrets, config) and outbound policy are swapped into.
    pub(super) async fn attempt_shared(
        &self,
        call: &Envelope<'_>,
        limits: &Limits,
        deadline: Instant,
        cx: &DomainCx<'_>,
        request: &Request,
    ) -> (Result<Output, CallError>, u64) {
        let prepared = &call.provider.prepared;
        let mut slot = prepared.kept().lock().await;
        let mut kept = match slot.take() {
            Some(kept) => kept,
            None => {
                let mut store = match Runtime::call_store(
                    &call.revision.engine,
                    call.scope.clone(),
                    &call.provider.outbound,
                    limits,
                    deadline,
                    None,
                ) {
                    Ok(store) => store,
                    Err(e) => return (Err(e), 0),
                };
                match prepared.instantiate(&mut store).await {
                    Ok(instance) => Kept { store, instance },
                    Err(e) => return (Err(classify(&e, store.data())), 0),
                }
            }
        };
        kept.store
            .data_mut()
            .rebind(call.scope.clone(), call.provider.outbound.clone(), deadline);
        let options = &call.revision.engine.options;
        if options.fuel
            && let Err(e) = kept.store.set_fuel(limits.fuel_per_call)
        {
            return (Err(CallError::Internal(e.to_string())), 0);
        }
        yield_regularly(&mut kept.store, options);
        let meter = (!options.fuel).then(|| CpuMeter::new(call.gate.budget().per_call));
        if let Some(meter) = &meter {
            meter.install(&mut kept.store);
        }
        // Kept instances (a conformance mode) run on this task, outside the scheduler.
        let run = Box::pin(prepared.call(&kept.instance, &mut kept.store, cx, request));
        let result =
            tokio::time::timeout_at(deadline.into(), Metered::new(run, meter.clone())).await;
        let (mapped, fuel) = outcome(result, &kept.store, limits, meter.as_ref());
        // A trapped or interrupted instance is not reused; a provider error leaves it intact.
        if matches!(mapped, Ok(_) | Err(CallError::Provider(_))) {
            *slot = Some(kept);
        }
        (mapped, fuel)
    }
}

/// The host side of the imports of a call to a provider that is no component.
fn imports(call: &Envelope<'_>, limits: &Limits) -> greentic_capabilities::Imports {
    greentic_capabilities::Imports::new(
        call.scope.clone(),
        call.provider.outbound.clone(),
        greentic_capabilities::ImportLimits {
            max_resources: limits.max_resources,
            host_memory_bytes: limits.host_memory_bytes,
            max_outgoing_requests: limits.max_outgoing_requests,
        },
    )
}

/// One attempt of a native provider: its trait called on this task with the call's
/// capabilities ([`Scoped`](greentic_capabilities::native::Scoped)), under the call's
/// deadline. No instance, no fuel, no memory cap: a native provider is the host's own code.
/// A panic in it fails the call (`guest-trap`), not the host; a host function that stopped
/// the call (a budget exhausted) fails it as it would a component's, whatever it answered.
async fn attempt_native(
    call: &Envelope<'_>,
    limits: &Limits,
    deadline: Instant,
    ctx: &Arc<TenantCtx>,
    request: &Request,
) -> Attempted {
    use futures_util::FutureExt as _;
    let host = greentic_capabilities::native::Scoped::new(
        imports(call, limits),
        call.provider.linked,
        deadline,
    );
    let cx = DomainCx {
        ctx,
        max_response_bytes: call.revision.max_response_bytes,
        deadline_ms: limits.deadline_ms,
    };
    let run = std::panic::AssertUnwindSafe(call.provider.prepared.call_native(&host, &cx, request))
        .catch_unwind();
    let result = match tokio::time::timeout_at(deadline.into(), run).await {
        Err(_) => Err(CallError::DeadlineExceeded(limits.deadline_ms)),
        Ok(Err(panic)) => Err(CallError::GuestTrap(format!(
            "the native provider panicked: {}",
            crate::errors::clip_guest(panic_text(panic.as_ref()))
        ))),
        Ok(Ok(result)) => result,
    };
    let result = match host.trapped() {
        Some(why) => Err(CallError::ResourceLimit(why)),
        None => result,
    };
    Attempted::answer(result, 0)
}

/// A panic's message.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// The W3C `traceparent` of the host's span for the call (the provider's spans become its
/// children), or one naming only the call's trace when no span is recorded.
fn traceparent(cx: &opentelemetry::Context, trace_id: &str) -> String {
    use opentelemetry::trace::TraceContextExt;
    let span = cx.span();
    let sc = span.span_context();
    if sc.is_valid() {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    } else {
        format!("00-{trace_id:0>32}-{:016x}-00", fastrand::u64(1..))
    }
}

/// What one attempt came to.
pub(super) struct Attempted {
    /// Its outcome.
    pub(super) result: Result<Output, CallError>,
    /// The fuel (or, metered by CPU time, nanoseconds) it used.
    pub(super) used: u64,
    /// The instance it ran in, for a provider whose instances serve later calls.
    pub(super) book: Option<Book>,
    /// That instance, when the call ended cleanly: for the tenant's next call.
    pub(super) back: Option<Reusable>,
}

impl Attempted {
    fn answer(result: Result<Output, CallError>, used: u64) -> Attempted {
        Attempted {
            result,
            used,
            book: None,
            back: None,
        }
    }
}

/// When the host last warned that it is at capacity (seconds since the epoch): one warning in
/// ten seconds, however many calls are turned away.
static AT_CAPACITY_WARNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Runtime {
    /// Counts a call turned away because the host is at capacity, and warns (at most once in
    /// ten seconds).
    fn at_capacity(&self, tenant: &str, e: &CallError) {
        self.metrics
            .inc("greentic_host_at_capacity_total", &[("tenant", tenant)]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = AT_CAPACITY_WARNED.load(Ordering::Relaxed);
        if now >= last + 10
            && AT_CAPACITY_WARNED
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %e, "calls are turned away: the host is at capacity (greentic_host_at_capacity_total counts them); raise [host] max_in_flight if memory allows, or add hosts");
        }
    }
}
