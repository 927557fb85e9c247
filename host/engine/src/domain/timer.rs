//! `greentic:timer/scheduled`: providers the host fires on the bundle's schedules.
//!
//! A `[[schedules]]` entry names a tenant, a timer provider, a cron expression (`cron`, five
//! or six fields, UTC) or an interval (`every`, e.g. `30s`, `5m`, `1h`; slots at multiples of
//! it since the Unix epoch), a payload and a missed-slot policy. One task per schedule
//! sleeps until its next slot, *claims* it — compare-and-swap of the schedule's record in the
//! state backend, in a namespace no provider can reach, with a lease as long as the fire's
//! budget — fires it, and marks it done. Hosts sharing a state backend never fire a slot
//! twice while its fire runs, and a restart resumes where the record says; a claim whose fire
//! never ended (its host died mid-fire) is fired again once its lease runs out, under the same
//! idempotency key, so a slot is lost neither to a restart nor to a crash. Slots that passed while no host ran are *missed*: with
//! `missed = "skip"` (the default) they are not fired, and the next fire counts them in
//! `fire-info.missed`; with `missed = "once"` the latest of them is fired once, at start, with
//! the others counted. A slot more than `grace_ms` late counts as missed.

pub use greentic_bundle::{Missed, Schedule};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use greentic_bundle::{Bundle, ProviderFacts};
use greentic_capabilities::secrets::SecretBackend;
use greentic_capabilities::state::{Namespace, Write, Written, now_ms};
use tokio::task::JoinHandle;
use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::{Arrival, Decoded, Domain, DomainCx, Input, Output, Stop, Triggers, provider_failure};
use crate::errors::CallError;
use crate::instance::InstanceData;

crate::bindings::domain_bindgen!(
    "greentic:timer/scheduled@1.0.0",
    "../../wit/timer.wit",
    "greentic:types": crate::bindings::greentic::types,
);

pub use exports::greentic::timer::schedule::FireInfo;

/// The timer domain.
pub struct Timer;

/// When a schedule's slots are.
#[derive(Debug, Clone)]
pub enum Slots {
    /// Every so many milliseconds since the Unix epoch.
    Every(u64),
    /// A cron expression, in UTC.
    Cron(Box<croner::Cron>),
}

impl Slots {
    /// The slots `schedule` names, or what is wrong with them.
    pub fn of(schedule: &Schedule) -> Result<Slots, String> {
        match (&schedule.cron, &schedule.every) {
            (Some(cron), None) => croner::parser::CronParser::builder()
                .seconds(croner::parser::Seconds::Optional)
                .build()
                .parse(cron)
                .map(|c| Slots::Cron(Box::new(c)))
                .map_err(|e| format!("cron `{cron}` does not parse: {e}")),
            (None, Some(every)) => parse_every(every).map(Slots::Every),
            _ => Err("set exactly one of `cron` and `every`".into()),
        }
    }

    /// The last slot at or before `t_ms`.
    pub fn latest_until(&self, t_ms: u64) -> Option<u64> {
        match self {
            Slots::Every(every) => Some(t_ms / every * every),
            Slots::Cron(cron) => {
                let t = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(
                    i64::try_from(t_ms).ok()?,
                )?;
                let previous = cron.find_previous_occurrence(&t, true).ok()?;
                u64::try_from(previous.timestamp_millis()).ok()
            }
        }
    }

    /// How many slots lie in `from..=to` (both slots), counting at most [`MAX_COUNTED`].
    fn count(&self, from: u64, to: u64) -> u32 {
        match self {
            Slots::Every(every) => u32::try_from((to - from) / every + 1).unwrap_or(u32::MAX),
            Slots::Cron(_) => {
                let (mut at, mut count) = (from, 1);
                while count < MAX_COUNTED {
                    match self.next_after(at) {
                        Some(n) if n <= to => {
                            at = n;
                            count += 1;
                        }
                        _ => break,
                    }
                }
                count
            }
        }
    }

    /// The first slot after `t_ms`.
    pub fn next_after(&self, t_ms: u64) -> Option<u64> {
        match self {
            Slots::Every(every) => (t_ms / every).checked_add(1)?.checked_mul(*every),
            Slots::Cron(cron) => {
                let t = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(
                    i64::try_from(t_ms).ok()?,
                )?;
                let next = cron.find_next_occurrence(&t, false).ok()?;
                u64::try_from(next.timestamp_millis()).ok()
            }
        }
    }
}

/// The most missed slots of a cron schedule counted one by one (after a long outage the
/// count says "at least this many" rather than walking millions of slots).
const MAX_COUNTED: u32 = 10_000;

/// `30s`, `5m`, `250ms`… in milliseconds; at least one second.
fn parse_every(every: &str) -> Result<u64, String> {
    let split = every
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(every.len());
    let (number, unit) = every.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        format!("every `{every}` is not a number and a unit such as `30s`, `5m` or `1h`")
    })?;
    let unit_ms = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "every `{every}`: unknown unit `{other}`; use ms, s, m, h or d"
            ));
        }
    };
    let ms = number
        .checked_mul(unit_ms)
        .ok_or_else(|| format!("every `{every}` is too long"))?;
    if ms < 1_000 {
        return Err(format!("every `{every}` is shorter than one second"));
    }
    Ok(ms)
}

impl Domain for Timer {
    const NAME: &'static str = "timer";
    const WORLD: &'static str = "greentic:timer/scheduled";
    const ARRIVAL: Arrival = Arrival::Trigger;
    type Pre = ScheduledPre<InstanceData>;
    type Instance = Scheduled;
    type Request = FireInfo;

    fn pre(pre: InstancePre<InstanceData>) -> wasmtime::Result<ScheduledPre<InstanceData>> {
        ScheduledPre::new(pre)
    }

    fn decode(input: Input) -> Result<Decoded<FireInfo>, CallError> {
        let Input::Fire(fire) = input else {
            return Err(CallError::BadRequest(
                "timer providers are fired by the host on the bundle's [[schedules]] only".into(),
            ));
        };
        Ok(Decoded {
            idempotency_key: Some(format!(
                "schedule:{}:{}",
                fire.schedule, fire.scheduled_at_ms
            )),
            retry: true,
            request: FireInfo {
                schedule: fire.schedule,
                scheduled_at_ms: fire.scheduled_at_ms,
                fired_at_ms: fire.fired_at_ms,
                missed: fire.missed,
                payload: fire.payload,
            },
        })
    }

    async fn instantiate(
        pre: &ScheduledPre<InstanceData>,
        store: &mut Store<InstanceData>,
    ) -> wasmtime::Result<Scheduled> {
        pre.instantiate_async(store).await
    }

    async fn call(
        instance: &Scheduled,
        store: &mut Store<InstanceData>,
        cx: &DomainCx<'_>,
        info: &FireInfo,
    ) -> wasmtime::Result<Result<Output, CallError>> {
        let fired = instance
            .greentic_timer_schedule()
            .call_on_fire(store, cx.ctx, info)
            .await?;
        Ok(match fired {
            Ok(()) => Ok(fired_output(info)),
            Err(e) => Err(CallError::Provider(provider_failure(e))),
        })
    }

    async fn call_remote(
        link: &greentic_remote::RemoteLink,
        meta: &greentic_remote::CallMeta,
        cx: &DomainCx<'_>,
        info: &FireInfo,
    ) -> Result<Output, CallError> {
        use greentic_remote::pb;
        use pb::timer_on_fire_response::Result as R;
        let request = pb::TimerOnFireRequest {
            ctx: Some(super::wire_ctx(cx.ctx)),
            info: Some(pb::TimerFireInfo {
                schedule: info.schedule.clone(),
                scheduled_at_ms: info.scheduled_at_ms,
                fired_at_ms: info.fired_at_ms,
                missed: info.missed,
                payload: info.payload.clone(),
            }),
        };
        let fired = link
            .unary(
                request,
                meta,
                |mut c, r| async move { c.timer_on_fire(r).await },
            )
            .await
            .map_err(|e| super::remote_failure(e, cx.deadline_ms))?;
        match fired.result {
            Some(R::Ok(_)) => Ok(fired_output(info)),
            Some(R::Err(e)) => Err(super::wire_provider_error(e)),
            None => Err(CallError::RemoteProtocol(
                "the remote provider broke the wire contract: a TimerOnFireResponse with neither ok nor err".into(),
            )),
        }
    }

    async fn call_native(
        exports: &greentic_interfaces::native::Exports,
        host: &dyn greentic_interfaces::native::Host,
        cx: &DomainCx<'_>,
        info: &FireInfo,
    ) -> Result<Output, CallError> {
        use greentic_interfaces::native::{Exports, timer as n};
        let Exports::Timer(provider) = exports else {
            return Err(super::wrong_exports(Self::NAME, exports));
        };
        let fire = n::FireInfo {
            schedule: info.schedule.clone(),
            scheduled_at_ms: info.scheduled_at_ms,
            fired_at_ms: info.fired_at_ms,
            missed: info.missed,
            payload: info.payload.clone(),
        };
        match provider
            .on_fire(host, super::native_ctx(cx.ctx), fire)
            .await
        {
            Ok(()) => Ok(fired_output(info)),
            Err(e) => Err(super::native_provider_error(e)),
        }
    }

    fn check(
        bundle: &Bundle,
        providers: &BTreeMap<String, ProviderFacts>,
        secrets: &dyn SecretBackend,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in bundle.file.schedules.iter().enumerate() {
            let at = format!("schedules[{i}] (`{}`)", s.name);
            if s.name.is_empty() || s.name.len() > 128 || s.name.chars().any(char::is_control) {
                problems.push(format!(
                    "{at}: `name` must be 1 to 128 printable characters"
                ));
            }
            if !names.insert(s.name.as_str()) {
                problems.push(format!(
                    "{at}: another schedule has this name; names are unique"
                ));
            }
            if let Err(why) = Slots::of(s) {
                problems.push(format!("{at}: {why}"));
            }
            let Some(tenant) = bundle.file.tenants.get(&s.tenant) else {
                problems.push(format!("{at}: tenant `{}` is not in [tenants]", s.tenant));
                continue;
            };
            match providers.get(&s.provider) {
                None if !bundle.file.providers.contains_key(&s.provider) => {
                    problems.push(format!(
                        "{at}: provider `{}` is not in [providers]",
                        s.provider
                    ));
                }
                None => {} // It did not load; its own problems say why.
                Some(p) if p.domain != Timer::NAME => problems.push(format!(
                    "{at}: provider `{}` is a `{}` provider; schedules fire `timer` providers (greentic:timer/scheduled)",
                    s.provider, p.domain
                )),
                Some(p) if !greentic_bundle::routed(bundle, &s.tenant, &s.provider) => {
                    // Routed pairs are checked with the routes; a scheduled one is checked here.
                    problems.extend(greentic_bundle::check_binding(
                        &s.tenant,
                        tenant,
                        &s.provider,
                        p,
                        secrets,
                    ));
                }
                Some(_) => {}
            }
        }
        problems
    }

    fn start(host: &Arc<dyn Triggers>, bundle: &Bundle, stop: &Stop) -> Vec<JoinHandle<()>> {
        bundle
            .file
            .schedules
            .iter()
            .filter_map(|s| Some((s.clone(), Slots::of(s).ok()?)))
            .map(|(schedule, slots)| {
                let host = host.clone();
                let stop = stop.clone();
                tokio::spawn(run_schedule(host, schedule, slots, stop))
            })
            .collect()
    }
}

/// Where the host keeps a schedule's last claimed slot: beside the provider's own state, in
/// a namespace no provider name can reach (provider names never contain `#`).
fn bookkeeping(schedule: &Schedule) -> Namespace {
    Namespace {
        tenant: schedule.tenant.clone(),
        provider: format!("{}#schedules", schedule.provider),
    }
}

/// What to do at `now`, given the last claimed slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing yet: sleep until this slot.
    Wait(u64),
    /// Claim slot `claim`; fire it unless `fire` is false; `missed` slots went unfired.
    Claim {
        /// The slot to record as the last one.
        claim: u64,
        /// Whether to fire it.
        fire: bool,
        /// Slots skipped before it (or, when `fire` is false, including it).
        missed: u32,
    },
    /// The schedule has no slot after `last` (a cron expression that never matches again).
    Done,
}

/// The decision of one turn of a schedule's task (pure, for tests).
pub fn due(slots: &Slots, schedule: &Schedule, last: u64, now: u64) -> Due {
    let Some(next) = slots.next_after(last) else {
        return Due::Done;
    };
    if next > now {
        return Due::Wait(next);
    }
    let latest = slots.latest_until(now).unwrap_or(next).max(next);
    let count = slots.count(next, latest);
    let on_time = now - latest <= schedule.grace_ms;
    match (on_time, schedule.missed) {
        (true, _) | (false, Missed::Once) => Due::Claim {
            claim: latest,
            fire: true,
            missed: count - 1,
        },
        (false, Missed::Skip) => Due::Claim {
            claim: latest,
            fire: false,
            missed: count,
        },
    }
}

/// One schedule's task: sleep, claim, fire, until `stop`.
async fn run_schedule(host: Arc<dyn Triggers>, schedule: Schedule, slots: Slots, mut stop: Stop) {
    let backend = host.state().backend.clone();
    let ns = bookkeeping(&schedule);
    let payload = schedule
        .payload
        .as_ref()
        .map_or_else(|| "{}".to_string(), |p| p.to_string());
    let mut carried_missed = 0u32;
    let labels = [
        ("tenant", schedule.tenant.as_str()),
        ("schedule", schedule.name.as_str()),
    ];
    tracing::info!(tenant = %schedule.tenant, provider = %schedule.provider, schedule = %schedule.name, "schedule started");
    // How long a claim holds while its fire has not ended: the fire's whole budget (queue and
    // deadline, retries included) and a margin. A claim older than that belongs to a host
    // that died mid-fire.
    let lease_ms = host.limits(&schedule.tenant).map_or(60_000, |limits| {
        limits.deadline_ms + limits.queue_timeout_ms + 5_000
    });
    loop {
        if *stop.borrow() {
            return;
        }
        let (record, revision) = match backend.get(&ns, &schedule.name).await {
            Ok(Some(stored)) => (Record::decode(&stored.value), stored.revision),
            Ok(None) => (None, 0),
            Err(e) => {
                tracing::warn!(schedule = %schedule.name, error = %format!("{e:#}"), "reading the schedule's last slot failed; retrying in 1 s");
                if sleep_or_stop(&mut stop, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        let now = now_ms();
        let decision = match record {
            // First start: slots before now are not this schedule's to fire.
            None => Due::Claim {
                claim: now,
                fire: false,
                missed: 0,
            },
            // A fire in progress (here or on another host): look again when it may have ended.
            Some(r) if !r.done && now < r.lease_until => {
                let wait = Duration::from_millis((r.lease_until - now).min(1_000));
                if sleep_or_stop(&mut stop, wait).await {
                    return;
                }
                continue;
            }
            // A claim whose fire never ended (its host died): that slot fires again, under the
            // same idempotency key, so the provider can tell.
            Some(r) if !r.done => {
                tracing::warn!(schedule = %schedule.name, slot = r.slot, "a fire did not end (its host stopped mid-fire); firing the slot again");
                host.metrics().inc("greentic_timer_refired_total", &labels);
                Due::Claim {
                    claim: r.slot,
                    fire: true,
                    missed: 0,
                }
            }
            Some(r) => due(&slots, &schedule, r.slot, now),
        };
        let (claim, fire, missed) = match decision {
            Due::Done => {
                tracing::info!(schedule = %schedule.name, "the schedule has no further slots");
                return;
            }
            Due::Wait(next) => {
                let wait = Duration::from_millis(next.saturating_sub(now_ms()));
                if sleep_or_stop(&mut stop, wait).await {
                    return;
                }
                continue;
            }
            Due::Claim {
                claim,
                fire,
                missed,
            } => (claim, fire, missed),
        };
        let claimed = Record {
            slot: claim,
            done: !fire,
            lease_until: now_ms() + lease_ms,
        };
        let claim_revision = match backend
            .put(&ns, &schedule.name, bookkeeping_write(claimed, revision))
            .await
        {
            Ok(Written::Ok(revision)) => revision,
            // Another host claimed it (or the record moved): look again.
            Ok(Written::Conflict(_) | Written::OverQuota { .. }) => continue,
            Err(e) => {
                tracing::warn!(schedule = %schedule.name, error = %format!("{e:#}"), "claiming a slot failed; retrying in 1 s");
                if sleep_or_stop(&mut stop, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        if missed > 0 {
            host.metrics().add(
                "greentic_timer_missed_slots_total",
                &labels,
                f64::from(missed),
            );
        }
        carried_missed = carried_missed.saturating_add(missed);
        if !fire {
            continue;
        }
        let fire = super::Fire {
            schedule: schedule.name.clone(),
            scheduled_at_ms: claim,
            fired_at_ms: now_ms(),
            missed: std::mem::take(&mut carried_missed),
            payload: payload.clone(),
        };
        let lag = fire.fired_at_ms.saturating_sub(claim) as f64 / 1000.0;
        host.metrics()
            .observe("greentic_timer_lag_seconds", &labels, lag);
        let outcome = host
            .fire(
                &schedule.tenant,
                &schedule.provider,
                &schedule.name,
                Input::Fire(fire),
            )
            .await;
        if let Err(e) = outcome {
            tracing::warn!(
                tenant = %schedule.tenant, provider = %schedule.provider, schedule = %schedule.name,
                slot = claim, code = e.code(), error = %e.message(), "a fire failed"
            );
        }
        // The fire ended (whatever its outcome: the host's retries are spent): the slot is
        // done. A conflict means the lease ran out and another host took the slot over.
        let done = Record {
            slot: claim,
            done: true,
            lease_until: 0,
        };
        if let Err(e) = backend
            .put(&ns, &schedule.name, bookkeeping_write(done, claim_revision))
            .await
        {
            tracing::warn!(schedule = %schedule.name, error = %format!("{e:#}"), "recording a fired slot failed; it may fire again once its lease runs out");
        }
    }
}

/// A schedule's record in the state backend: the last slot claimed, whether its fire ended,
/// and until when the claim holds while it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The slot, in milliseconds since the Unix epoch.
    pub slot: u64,
    /// Whether its fire ended (or it was not to be fired).
    pub done: bool,
    /// Until when an unfinished claim holds.
    pub lease_until: u64,
}

impl Record {
    fn encode(self) -> Vec<u8> {
        format!("{} {} {}", self.slot, u8::from(self.done), self.lease_until).into_bytes()
    }

    /// The record in `bytes` (a bare slot is one whose fire ended).
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        let slot = parts.next()?.parse().ok()?;
        match (parts.next(), parts.next()) {
            (None, _) => Some(Record {
                slot,
                done: true,
                lease_until: 0,
            }),
            (Some(done), Some(lease)) => Some(Record {
                slot,
                done: done == "1",
                lease_until: lease.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// A compare-and-swap of a schedule's record: the host's own bookkeeping, not bounded by the
/// tenant's state quota.
fn bookkeeping_write(record: Record, expected: u64) -> Write {
    Write {
        value: record.encode(),
        ttl: None,
        expected: Some(expected),
        bounds: None,
    }
}

/// Sleeps for `wait`; true if the host is stopping.
async fn sleep_or_stop(stop: &mut Stop, wait: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => *stop.borrow(),
        changed = stop.changed() => changed.is_err() || *stop.borrow(),
    }
}

/// What a fire that the provider took answers, whatever its form.
fn fired_output(info: &FireInfo) -> Output {
    Output::Json(serde_json::json!({
        "schedule": info.schedule,
        "scheduled_at_ms": info.scheduled_at_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(every: &str, missed: Missed) -> Schedule {
        Schedule {
            name: "beat".into(),
            tenant: "acme".into(),
            provider: "p".into(),
            cron: None,
            every: Some(every.into()),
            payload: None,
            missed,
            grace_ms: 500,
        }
    }

    #[test]
    fn intervals_and_cron_give_the_next_slot() {
        let s = schedule("10s", Missed::Skip);
        let slots = Slots::of(&s).unwrap();
        assert_eq!(slots.next_after(0), Some(10_000));
        assert_eq!(slots.next_after(10_000), Some(20_000));
        assert_eq!(slots.next_after(12_345), Some(20_000));
        let cron = Schedule {
            cron: Some("0 3 * * *".into()),
            every: None,
            ..s.clone()
        };
        let slots = Slots::of(&cron).unwrap();
        // 1970-01-01T00:00:00Z → 03:00 the same day.
        assert_eq!(slots.next_after(0), Some(3 * 3_600_000));
        assert_eq!(slots.next_after(3 * 3_600_000), Some(27 * 3_600_000));
        for (bad, why) in [
            ("500ms", "shorter than one second"),
            ("5 parsecs", "unknown unit"),
            ("fast", "not a number"),
        ] {
            let e = Slots::of(&schedule(bad, Missed::Skip)).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let both = Schedule {
            cron: Some("* * * * *".into()),
            ..s
        };
        assert!(Slots::of(&both).unwrap_err().contains("exactly one"));
    }

    #[test]
    fn records_round_trip_and_a_bare_slot_is_done() {
        let r = Record {
            slot: 60_000,
            done: false,
            lease_until: 99,
        };
        assert_eq!(Record::decode(&r.encode()), Some(r));
        let done = Record {
            done: true,
            lease_until: 0,
            ..r
        };
        assert_eq!(Record::decode(&done.encode()), Some(done));
        assert_eq!(Record::decode(b"60000"), Some(done));
        assert_eq!(Record::decode(b"sixty"), None);
        assert_eq!(Record::decode(b"1 0"), None);
    }

    #[test]
    fn each_slot_is_claimed_once_and_missed_ones_follow_the_policy() {
        let skip = schedule("1s", Missed::Skip);
        let once = schedule("1s", Missed::Once);
        let slots = Slots::of(&skip).unwrap();
        // Before the next slot: wait for it.
        assert_eq!(due(&slots, &skip, 5_000, 5_400), Due::Wait(6_000));
        // On time: fire it, nothing missed.
        let on_time = Due::Claim {
            claim: 6_000,
            fire: true,
            missed: 0,
        };
        assert_eq!(due(&slots, &skip, 5_000, 6_100), on_time);
        // Claimed: the same slot is never due again.
        assert_eq!(due(&slots, &skip, 6_000, 6_100), Due::Wait(7_000));
        // Three slots passed, the latest within grace: fire it, two missed.
        assert_eq!(
            due(&slots, &skip, 5_000, 8_200),
            Due::Claim {
                claim: 8_000,
                fire: true,
                missed: 2
            }
        );
        // The host was down past the grace: skip fires nothing; once fires the latest.
        assert_eq!(
            due(&slots, &skip, 5_000, 9_900),
            Due::Claim {
                claim: 9_000,
                fire: false,
                missed: 4
            }
        );
        assert_eq!(
            due(&slots, &once, 5_000, 9_900),
            Due::Claim {
                claim: 9_000,
                fire: true,
                missed: 3
            }
        );
    }
}
