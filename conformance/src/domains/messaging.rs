//! The messaging domain: invoked with a message; its own evaluators check retries and
//! idempotency keys against the scripted upstream.

use std::time::Duration;

use super::{DomainSuite, Drive};
use crate::cases::{Case, Check};
use crate::checks::{Verdict, describe, fail, new_key, pass};
use crate::suite::Ctx;

/// The messaging domain's suite.
pub(crate) const SUITE: DomainSuite = DomainSuite {
    name: "messaging",
    cases: include_str!("../../cases/messaging.toml"),
    export: "greentic:messaging/outbound",
    capabilities: Some(&["send"]),
    drive: Drive::Invoke,
    checks: &[
        Check::UpstreamAnswer,
        Check::Tenancy,
        Check::Retry,
        Check::Idempotency,
    ],
};

pub(crate) async fn retry(ctx: &mut Ctx, case: &Case) -> Verdict {
    let key = case.idempotency_key.then(new_key);
    let outcome = ctx.invoke(&case.id, "a", key.as_deref()).await;
    let seen = ctx.upstream.take();
    let want = case.expect.code.clone().unwrap_or_else(|| "ok".into());
    let mut problems = Vec::new();
    if outcome.code != want {
        problems.push(format!("expected `{want}`, {}", describe(&outcome)));
    }
    if let Some(n) = case.expect.attempts
        && seen.len() != n
    {
        problems.push(format!(
            "the upstream saw {} attempt(s), expected {n}",
            seen.len()
        ));
    }
    if let (Some(gap), [first, second, ..]) = (case.expect.min_gap_ms, seen.as_slice()) {
        let took = second.at.duration_since(first.at);
        if took < Duration::from_millis(gap) {
            problems.push(format!(
                "the retry came {} ms after the first attempt; the upstream asked for {gap} ms",
                took.as_millis()
            ));
        }
    }
    if let Some(key) = &key {
        let missing = seen.iter().filter(|s| !s.contains(key)).count();
        if missing > 0 {
            problems.push(format!(
                "{missing} of {} attempt(s) did not carry the call's idempotency key",
                seen.len()
            ));
        }
    }
    let limit = Duration::from_millis(ctx.deadline_ms + 500);
    if outcome.elapsed > limit {
        problems.push(format!(
            "the call took {} ms, past its {} ms deadline",
            outcome.elapsed.as_millis(),
            ctx.deadline_ms
        ));
    }
    if problems.is_empty() {
        pass(format!(
            "{}; {} attempt(s) in {} ms",
            describe(&outcome),
            seen.len(),
            outcome.elapsed.as_millis()
        ))
    } else {
        fail(problems.join("; "))
    }
}

pub(crate) async fn idempotency(ctx: &mut Ctx, case: &Case) -> Verdict {
    let key = new_key();
    let first = ctx.invoke(&case.id, "a", Some(&key)).await;
    let second = ctx.invoke(&case.id, "a", Some(&key)).await;
    let seen = ctx.upstream.take();
    let mut problems = Vec::new();
    for (n, o) in [(1, &first), (2, &second)] {
        if o.code != "ok" {
            problems.push(format!("call {n}: {}", describe(o)));
        }
    }
    if seen.len() != 2 {
        problems.push(format!(
            "the upstream saw {} request(s) for two calls",
            seen.len()
        ));
    }
    let carried = seen.iter().filter(|s| s.contains(&key)).count();
    if carried != seen.len() {
        problems.push(format!(
            "{} of {} upstream request(s) carried the idempotency key",
            carried,
            seen.len()
        ));
    }
    if first.id != second.id {
        problems.push(format!(
            "the two calls reported different result ids ({:?} and {:?})",
            first.id, second.id
        ));
    }
    if problems.is_empty() {
        pass(format!(
            "both calls reached the upstream with the key and reported id {:?}",
            first.id.unwrap_or_default()
        ))
    } else {
        fail(problems.join("; "))
    }
}
