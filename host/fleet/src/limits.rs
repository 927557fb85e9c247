//! Fleet-wide tenant limits: `max_concurrent` as slots in a key-value bucket, and
//! `fuel_per_second` as leases from a server-side counter.
//!
//! **Concurrency.** A tenant has `max_concurrent` slot keys (`hex(tenant).N`) in
//! `<prefix>_slots`. A host takes a free one by publishing to it expecting its last sequence
//! (so two hosts never both win it) with a per-message TTL of the tenant's deadline plus a
//! margin. When the attempt ends the host keeps the slot for the next attempt of that tenant
//! for up to [`HOLD`] after taking it (no round trip for a tenant's steady stream of calls),
//! then deletes it (expecting its own sequence); a slot is held by at most one attempt at a
//! time, so never more than `max_concurrent` attempts of a tenant run fleet-wide. A host that
//! dies holds its slots until their TTL passes. An attempt that finds every slot taken tries
//! again until its queue time is up (`tenant-busy`).
//!
//! **Fuel.** Each second has a counter per tenant (`<prefix>.fuel.hex(tenant).SECOND` in the
//! `<PREFIX>_FUEL` stream, counters on). A host needing fuel adds a lease — a tenth of
//! `fuel_per_second` — to the counter; the server's total says how much of it fits in the
//! second's budget, and only that is granted. A call is admitted while its host's lease for
//! the second has fuel left, and what it consumed is charged to the lease when it ends; a call
//! that consumed more than was left leaves a debt that the host's next grants pay first. So the
//! fuel granted fleet-wide in a second never exceeds `fuel_per_second`, every unit consumed is
//! paid from a grant, and over any T seconds the fleet consumes at most
//! `fuel_per_second × (T + 1)` plus what calls in flight consume before they are charged (at
//! most `max_concurrent × fuel_per_call`: the slots bound the calls in flight). A lease is
//! good for its second only: a dead host's unused lease lapses with it. (What each call
//! consumed is charged to its own host's bucket too, as without a fleet.)
//!
//! Cost per attempt: nothing while the host holds a free slot of the tenant; otherwise one read
//! and one publish to take one (and a delete, off the call's path, to give it back); and one
//! counter publish per lease (every tenth of the budget consumed). If the fleet's server cannot be
//! reached, the host falls back to its own limits (which still bound it) and counts
//! `greentic_fleet_limits_degraded_total`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use greentic_bundle::Limits;
use greentic_engine::errors::CallError;
use greentic_metrics::Metrics;

use crate::{Fleet, within};

/// How long one request to the fleet's server may take before the host falls back to its own
/// limits.
const REQUEST: Duration = Duration::from_millis(500);
/// How long a host keeps to its own limits after the fleet's server failed it.
const DEGRADED_FOR: Duration = Duration::from_secs(5);

/// How long after its deadline a slot of a dead host stays taken.
const SLOT_MARGIN: Duration = Duration::from_secs(5);
/// How long after taking a slot a host may reuse it for further attempts of the tenant (well
/// inside [`SLOT_MARGIN`], so an attempt started on a held slot ends before the slot's TTL).
pub const HOLD: Duration = Duration::from_secs(1);

/// The fleet's slots and fuel counters.
pub struct FleetLimits {
    js: jetstream::Context,
    slots: kv::Store,
    fuel_subject: String,
    host_id: String,
    leases: Mutex<HashMap<String, Lease>>,
    /// Slots this host holds and no attempt uses, per tenant.
    held: Mutex<HashMap<String, Vec<Slot>>>,
    /// Until when the host keeps to its own limits (the fleet's server failed it).
    degraded_until: Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
}

/// A slot taken in the bucket: its key, its sequence, and when it was taken.
#[derive(Debug, Clone)]
struct Slot {
    key: String,
    seq: u64,
    taken: Instant,
}

/// A host's fuel lease of one tenant: what is left of the grants for one second, and what
/// calls consumed beyond the grants (paid from the next ones).
#[derive(Debug, Default, Clone, Copy)]
struct Lease {
    second: u64,
    left: u64,
    debt: u64,
}

/// A taken slot and admission against the fuel lease; [`Admission::settle`] frees the slot
/// and charges the fuel consumed.
pub struct Admission {
    limits: Arc<FleetLimits>,
    tenant: String,
    slot: Option<Slot>,
    metered: bool,
}

fn now_second() -> u64 {
    greentic_capabilities::state::now_ms() / 1000
}

impl FleetLimits {
    /// Opens (creating if missing) the slots bucket and the fuel stream of `fleet`.
    pub async fn open(fleet: &Fleet, metrics: Arc<Metrics>) -> anyhow::Result<Arc<FleetLimits>> {
        let prefix = &fleet.section.prefix;
        let slots = super::bucket(
            &fleet.js,
            kv::Config {
                bucket: format!("{prefix}_slots"),
                description: "greentic fleet-wide concurrency slots, per tenant".into(),
                history: 1,
                num_replicas: fleet.section.replicas,
                max_bytes: super::bound(fleet.section.max_bytes.slots),
                // Slots carry a TTL: a dead host's lapse.
                limit_markers: Some(Duration::from_secs(60)),
                ..Default::default()
            },
        )
        .await?;
        let stream = format!("{}_FUEL", prefix.to_ascii_uppercase());
        let subject = format!("{prefix}.fuel");
        let max_bytes = super::bound(fleet.section.max_bytes.fuel);
        let fuel = fleet
            .js
            .get_or_create_stream(jetstream::stream::Config {
                name: stream.clone(),
                description: Some(
                    "greentic fleet-wide fuel counters, per tenant and second".into(),
                ),
                subjects: vec![format!("{subject}.>")],
                allow_message_counter: true,
                max_age: Duration::from_secs(120),
                max_bytes,
                num_replicas: fleet.section.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("opening the JetStream stream `{stream}`: {e}"))?;
        greentic_jetstream::bound_stream(
            &fleet.js,
            fuel.cached_info().config.clone(),
            max_bytes,
            None,
        )
        .await?;
        let limits = Arc::new(FleetLimits {
            js: fleet.js.clone(),
            slots,
            fuel_subject: subject,
            host_id: fleet.host_id.clone(),
            leases: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            degraded_until: Mutex::new(None),
            metrics,
        });
        // Gives back held slots once their hold is over.
        let weak = Arc::downgrade(&limits);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HOLD / 4).await;
                let Some(limits) = weak.upgrade() else { return };
                for slot in limits.expired() {
                    limits.release(slot).await;
                }
            }
        });
        Ok(limits)
    }

    /// Held slots whose hold is over, taken out of the pool.
    fn expired(&self) -> Vec<Slot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for slots in held.values_mut() {
            let (keep, gone): (Vec<Slot>, Vec<Slot>) =
                slots.drain(..).partition(|s| s.taken.elapsed() < HOLD);
            *slots = keep;
            out.extend(gone);
        }
        held.retain(|_, slots| !slots.is_empty());
        out
    }

    /// Deletes `slot` (expecting its own sequence: a slot that lapsed and was taken again is
    /// not ours).
    async fn release(&self, slot: Slot) {
        let _ = self
            .slots
            .delete_expect_revision(&slot.key, Some(slot.seq))
            .await;
    }

    /// A slot of `tenant` this host holds, free and within its hold.
    fn reuse(&self, tenant: &str) -> Option<Slot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let slots = held.get_mut(tenant)?;
        let i = slots.iter().position(|s| s.taken.elapsed() < HOLD)?;
        Some(slots.swap_remove(i))
    }

    /// Takes a slot of `scope` (a tenant's invokes, or its deliveries to one webhook provider:
    /// [`greentic_engine::limits::TenantGate::scope`]) and admits it against the fuel lease, waiting
    /// until `until`; `tenant` names it in a refusal.
    pub async fn admit(
        self: &Arc<Self>,
        scope: &str,
        tenant: &str,
        limits: &Limits,
        until: Instant,
    ) -> Result<Admission, CallError> {
        let mut admission = Admission {
            limits: self.clone(),
            tenant: scope.to_string(),
            slot: None,
            metered: false,
        };
        let degraded = *self
            .degraded_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if degraded.is_some_and(|until| Instant::now() < until) {
            self.metrics.inc(
                "greentic_fleet_limits_degraded_total",
                &[("what", "skipped")],
            );
            return Ok(admission);
        }
        let busy = |why: String| CallError::TenantBusy {
            tenant: tenant.to_string(),
            why,
            retry_after_ms: limits.queue_timeout_ms.max(100),
        };
        match self.take_slot(scope, limits, until).await {
            Ok(Some(slot)) => admission.slot = Some(slot),
            Ok(None) => {
                return Err(busy(format!(
                    "{} calls already running across the fleet",
                    limits.max_concurrent
                )));
            }
            Err(e) => return Ok(self.degraded(admission, "slots", e)),
        }
        match self.admit_fuel(scope, limits, until).await {
            Ok(true) => admission.metered = true,
            Ok(false) => {
                return Err(busy(format!(
                    "fuel budget of {} per second used up across the fleet",
                    limits.fuel_per_second
                )));
            }
            Err(e) => return Ok(self.degraded(admission, "fuel", e)),
        }
        Ok(admission)
    }

    fn degraded(&self, admission: Admission, what: &str, e: anyhow::Error) -> Admission {
        *self
            .degraded_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + DEGRADED_FOR);
        tracing::warn!(error = %format!("{e:#}"), what, "fleet limits unreachable; this host's own limits apply");
        self.metrics
            .inc("greentic_fleet_limits_degraded_total", &[("what", what)]);
        admission
    }

    /// A free slot of `tenant` (one this host holds, or one taken now until the tenant's
    /// deadline and a margin); `None` when every slot stayed taken until `until`.
    async fn take_slot(
        &self,
        tenant: &str,
        limits: &Limits,
        until: Instant,
    ) -> anyhow::Result<Option<Slot>> {
        let n = limits.max_concurrent.max(1);
        let ttl = Duration::from_millis(limits.deadline_ms) + SLOT_MARGIN;
        let owner = Bytes::from(self.host_id.clone());
        let mut pause = Duration::from_millis(2);
        loop {
            if let Some(slot) = self.reuse(tenant) {
                return Ok(Some(slot));
            }
            let start = fastrand::u32(..n);
            for j in 0..n {
                let key = format!("{}.{}", hex::encode(tenant), (start + j) % n);
                let last = match within(REQUEST, self.slots.entry(key.as_str())).await? {
                    None => 0,
                    Some(e) if e.operation != kv::Operation::Put => e.revision,
                    Some(_) => continue,
                };
                let taken = Instant::now();
                if let Some(seq) = self.publish_slot(&key, owner.clone(), last, ttl).await? {
                    return Ok(Some(Slot { key, seq, taken }));
                }
            }
            if Instant::now() + pause >= until {
                return Ok(None);
            }
            tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64())).await;
            pause = (pause * 2).min(Duration::from_millis(25));
        }
    }

    /// Publishes `value` at slot `key` expecting `last`; its sequence, or `None` when another
    /// host took it first.
    async fn publish_slot(
        &self,
        key: &str,
        value: Bytes,
        last: u64,
        ttl: Duration,
    ) -> anyhow::Result<Option<u64>> {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            last.to_string(),
        );
        headers.insert(
            async_nats::header::NATS_MESSAGE_TTL,
            ttl.as_secs().max(1).to_string(),
        );
        let prefix = self.slots.put_prefix.as_ref().unwrap_or(&self.slots.prefix);
        let ack = within(
            REQUEST,
            self.js
                .publish_with_headers(format!("{prefix}{key}"), headers, value),
        )
        .await?;
        let acked = tokio::time::timeout(REQUEST, ack).await.map_err(|_| {
            anyhow::anyhow!("the fleet's NATS server did not answer within {REQUEST:?}")
        })?;
        match acked {
            Ok(ack) => Ok(Some(ack.sequence)),
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until this host's lease of the current second has fuel left, taking a new lease
    /// from the counter when it is empty; false when the fleet's budget stays used up until
    /// `until`.
    async fn admit_fuel(
        &self,
        tenant: &str,
        limits: &Limits,
        until: Instant,
    ) -> anyhow::Result<bool> {
        let budget = limits.fuel_per_second;
        let lease_size = (budget / 10).max(1);
        loop {
            let second = now_second();
            if self.lease_left(tenant, second, 0) {
                return Ok(true);
            }
            let granted = self.grant(tenant, second, lease_size, budget).await?;
            if self.lease_left(tenant, second, granted) {
                return Ok(true);
            }
            // This second's budget is spent: wait for the next one.
            let next = Duration::from_millis(1000 - greentic_capabilities::state::now_ms() % 1000);
            if Instant::now() + next >= until {
                return Ok(false);
            }
            tokio::time::sleep(next).await;
        }
    }

    /// Adds `granted` (debt first) to the lease of `second`; whether it has fuel left.
    fn lease_left(&self, tenant: &str, second: u64, granted: u64) -> bool {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let lease = leases.entry(tenant.to_string()).or_default();
        if lease.second != second {
            // A lease is good for its second only; a debt stays until paid.
            lease.second = second;
            lease.left = 0;
        }
        let paid = granted.min(lease.debt);
        lease.debt -= paid;
        lease.left += granted - paid;
        lease.left > 0
    }

    /// Adds `amount` to the tenant's counter of `second`: what of it fits in `budget`.
    async fn grant(
        &self,
        tenant: &str,
        second: u64,
        amount: u64,
        budget: u64,
    ) -> anyhow::Result<u64> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Incr", format!("+{amount}"));
        let subject = format!("{}.{}.{second}", self.fuel_subject, hex::encode(tenant));
        let ack = within(
            REQUEST,
            self.js.publish_with_headers(subject, headers, Bytes::new()),
        )
        .await?;
        let ack = within(REQUEST, ack).await?;
        let total: u64 = ack
            .value
            .as_deref()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the fuel counter answered no total (is the stream's counter setting on?)"
                )
            })?;
        let before = total.saturating_sub(amount);
        Ok(budget.saturating_sub(before).min(amount))
    }
}

impl Admission {
    /// Frees the slot and gives back the part of the reservation the attempt did not use.
    pub async fn settle(mut self, used: u64) {
        if std::mem::take(&mut self.metered) {
            let mut leases = self.limits.leases.lock().unwrap_or_else(|e| e.into_inner());
            let lease = leases.entry(self.tenant.clone()).or_default();
            let charged = used.min(lease.left);
            lease.left -= charged;
            lease.debt += used - charged;
        }
        if let Some(slot) = self.slot.take() {
            if slot.taken.elapsed() < HOLD {
                // Kept for the tenant's next attempt on this host (the reaper gives it back).
                let mut held = self.limits.held.lock().unwrap_or_else(|e| e.into_inner());
                held.entry(self.tenant.clone()).or_default().push(slot);
            } else {
                self.limits.release(slot).await;
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        // Dropped without settling (the caller went away): free the slot in the background.
        if let Some(slot) = self.slot.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let limits = self.limits.clone();
            handle.spawn(async move { limits.release(slot).await });
        }
    }
}

#[async_trait::async_trait]
impl greentic_engine::shared::SharedLimits for FleetLimits {
    async fn admit(
        self: Arc<Self>,
        scope: &str,
        tenant: &str,
        limits: &Limits,
        until: Instant,
    ) -> Result<Box<dyn greentic_engine::shared::FuelLease>, CallError> {
        Ok(Box::new(
            FleetLimits::admit(&self, scope, tenant, limits, until).await?,
        ))
    }
}

#[async_trait::async_trait]
impl greentic_engine::shared::FuelLease for Admission {
    async fn settle(self: Box<Self>, fuel: u64) {
        Admission::settle(*self, fuel).await
    }
}
