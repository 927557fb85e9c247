//! The messaging domain: invoked with a message; its own evaluators check retries and
//! idempotency keys against the scripted upstream.

use std::time::Duration;

use greentic_manifest::ProviderManifest;
use serde::{Deserialize, Serialize};

use crate::cases::{Case, Check};
use crate::ctx::Ctx;
use crate::domain::{DomainSuite, Drive};
use crate::profile::Profile;
use crate::upstream::Seen;
use crate::verdict::{Verdict, describe, fail, new_key, pass};

/// The messaging domain's suite.
pub(crate) const SUITE: DomainSuite = DomainSuite {
    name: "messaging",
    cases: include_str!("../../cases/messaging.toml"),
    export: "greentic:messaging/outbound",
    capabilities: Some(&["send"]),
    drive,
    checks: &[
        Check::UpstreamAnswer,
        Check::Tenancy,
        Check::Instances,
        Check::Retry,
        Check::Idempotency,
    ],
};

/// The operation invoked when the manifest declares no `send`.
const SEND: &str = "send";

/// The message a messaging call sends: the profile's `message`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Destination.
    pub to: String,
    /// Text.
    pub text: String,
}

impl Default for Message {
    fn default() -> Message {
        Message {
            to: "#conformance".into(),
            text: "greentic conformance check".into(),
        }
    }
}

/// An invoke of `send` (or the one operation the provider declares) with the profile's message.
fn drive(profile: &Profile, manifest: &ProviderManifest) -> anyhow::Result<Drive> {
    if profile.payload.is_some() || profile.webhook.is_some() {
        anyhow::bail!(
            "profile: `payload` and `webhook` are for trigger and webhook providers; a messaging provider is sent the profile's `message`"
        );
    }
    let message = match &profile.message {
        Some(m) => serde_json::from_value::<Message>(m.clone()).map_err(|e| {
            anyhow::anyhow!("profile: `message` must be {{\"to\": \"…\", \"text\": \"…\"}} ({e})")
        })?,
        None => Message::default(),
    };
    let declared = |name: &str| manifest.capabilities.iter().any(|c| c == name);
    let operation = if declared(SEND) {
        SEND.to_string()
    } else {
        manifest
            .capabilities
            .first()
            .cloned()
            .unwrap_or_else(|| SEND.to_string())
    };
    Ok(Drive::Invoke {
        operation,
        body: serde_json::to_value(message)?,
    })
}

pub(crate) async fn retry(ctx: &mut Ctx, case: &Case) -> Verdict {
    let key = case.idempotency_key.then(new_key);
    let outcome = ctx.drive(case, "a", key.as_deref()).await;
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
    let via_state = ctx.profile.idempotency.through_state();
    if let Some(key) = &key
        && !via_state
    {
        problems.extend(carried(&seen, key, ctx.profile.idempotency.header()));
    }
    // A provider that de-duplicates itself must never deliver a key twice: the same call
    // again, after it succeeded through retries, must not reach the upstream.
    if let Some(key) = &key
        && via_state
        && outcome.code == "ok"
    {
        let again = ctx.drive(case, "a", Some(key)).await;
        let more = ctx.upstream.take();
        if !more.is_empty() {
            problems.push(format!(
                "the same key sent again after the retried call succeeded reached the upstream {} more time(s)",
                more.len()
            ));
        }
        if again.code != "ok" || again.id != outcome.id {
            problems.push(format!(
                "the same key sent again reported {} with id {:?}, not the first call's id {:?}",
                describe(&again),
                again.id,
                outcome.id
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
    let first = ctx.drive(case, "a", Some(&key)).await;
    let second = ctx.drive(case, "a", Some(&key)).await;
    let seen = ctx.upstream.take();
    let mut problems = Vec::new();
    for (n, o) in [(1, &first), (2, &second)] {
        if o.code != "ok" {
            problems.push(format!("call {n}: {}", describe(o)));
        }
    }
    let via_state = ctx.profile.idempotency.through_state();
    let expected = if via_state { 1 } else { 2 };
    if seen.len() != expected {
        problems.push(format!(
            "the upstream saw {} request(s) for two calls with one key, expected {expected}{}",
            seen.len(),
            if via_state {
                " (the profile says the provider de-duplicates through greentic:state)"
            } else {
                ""
            }
        ));
    }
    if !via_state {
        problems.extend(carried(&seen, &key, ctx.profile.idempotency.header()));
    }
    if first.id != second.id {
        problems.push(format!(
            "the two calls reported different result ids ({:?} and {:?})",
            first.id, second.id
        ));
    }
    if problems.is_empty() {
        pass(if via_state {
            format!(
                "the key reached the upstream once; both calls reported id {:?}",
                first.id.unwrap_or_default()
            )
        } else {
            format!(
                "both calls reached the upstream with the key and reported id {:?}",
                first.id.unwrap_or_default()
            )
        })
    } else {
        fail(problems.join("; "))
    }
}

/// Problems if any of `seen` lacks `key` (in `header`, when the profile names one).
fn carried(seen: &[Seen], key: &str, header: Option<&str>) -> Vec<String> {
    let missing = seen
        .iter()
        .filter(|s| match header {
            Some(h) => s.header(h) != Some(key),
            None => !s.contains(key),
        })
        .count();
    if missing == 0 {
        return Vec::new();
    }
    vec![format!(
        "{missing} of {} attempt(s) did not carry the call's idempotency key{}",
        seen.len(),
        header.map(|h| format!(" in `{h}`")).unwrap_or_default()
    )]
}
