//! The webhook domain: reached by signed HTTP deliveries; its own evaluators check how a
//! delivery is answered and what becomes of a replayed one.

use greentic_interfaces::ComponentWorld;
use greentic_manifest::ProviderManifest;

use crate::cases::{Case, Check, Signature};
use crate::ctx::Ctx;
use crate::domain::{DomainSuite, Drive};
use crate::profile::Profile;
use crate::verdict::{Verdict, fail, is_guest, pass};

/// The webhook domain's suite.
pub(crate) const SUITE: DomainSuite = DomainSuite {
    name: "webhook",
    cases: include_str!("../../cases/webhook.toml"),
    export: "wasi:http/incoming-handler",
    capabilities: Some(&["receive"]),
    drive,
    checks: &[Check::Delivery, Check::DeliveryReplay],
};

/// Signed deliveries, made as the profile's `webhook` section says; it is required.
fn drive(profile: &Profile, manifest: &ProviderManifest) -> anyhow::Result<Drive> {
    let Some(webhook) = &profile.webhook else {
        anyhow::bail!(
            "webhook providers sign deliveries their own way: pass --profile FILE with a `webhook.signature` section (see the README's \"Conformance\" section)"
        );
    };
    if profile.message.is_some() || profile.payload.is_some() {
        anyhow::bail!(
            "profile: a webhook provider is sent the cases' deliveries; `message` and `payload` are for messaging and trigger providers"
        );
    }
    let s = &webhook.signature;
    if s.algorithm != "hmac-sha256" {
        anyhow::bail!(
            "profile: webhook.signature.algorithm `{}` is not supported; use `hmac-sha256`",
            s.algorithm
        );
    }
    if !["hex", "base64"].contains(&s.encoding.as_str()) {
        anyhow::bail!(
            "profile: webhook.signature.encoding must be `hex` or `base64`, not `{}`",
            s.encoding
        );
    }
    if !manifest.declares_secret(&s.secret) {
        anyhow::bail!(
            "profile: webhook.signature.secret `{}` is not a secret the manifest declares ({})",
            s.secret,
            manifest
                .secrets
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(Drive::Deliver)
}

pub(crate) async fn delivery(ctx: &mut Ctx, case: &Case) -> Verdict {
    let Some(d) = case.delivery.clone() else {
        return fail("the case has no delivery");
    };
    let which = d.tenant.clone().unwrap_or_else(|| "a".into());
    let id = format!("conformance-delivery-{:016x}", fastrand::u64(..));
    let o = ctx
        .deliver(&case.id, &which, d.signature, &d.body, &id)
        .await;
    if let Some(code) = &o.host_error {
        return fail(format!(
            "the host answered {} ({code}) instead of the provider",
            o.status
        ));
    }
    if case.expect.status.contains(&o.status) {
        pass(format!("answered {}", o.status))
    } else {
        fail(format!(
            "answered {}, expected one of {:?}",
            o.status, case.expect.status
        ))
    }
}

pub(crate) async fn delivery_replay(ctx: &mut Ctx, case: &Case) -> Verdict {
    let Some(d) = case.delivery.clone() else {
        return fail("the case has no delivery");
    };
    if d.signature != Signature::Good {
        return fail("a replay case needs a good signature");
    }
    let id = format!("conformance-delivery-{:016x}", fastrand::u64(..));
    let first = ctx.deliver(&case.id, "a", d.signature, &d.body, &id).await;
    ctx.collect();
    let first_mentions = mentions(ctx, &id);
    let second = ctx.deliver(&case.id, "a", d.signature, &d.body, &id).await;
    ctx.collect();
    let both_mentions = mentions(ctx, &id);
    // A provider that keeps state can recognise the replay itself, so it must refuse it.
    // (A remote provider is granted state by the suite: it may keep it.)
    let keeps_state = match ctx.subject.wasm() {
        Some(wasm) => ComponentWorld::decode(&ctx.manifest.name, wasm).is_ok_and(|w| {
            w.imports
                .iter()
                .any(|i| i.name.starts_with("greentic:state/"))
        }),
        None => true,
    };
    let mut problems = Vec::new();
    for (n, o) in [(1, &first), (2, &second)] {
        let expected = if n == 2 && keeps_state {
            &case.expect.replay_status
        } else {
            &case.expect.status
        };
        if let Some(code) = &o.host_error {
            problems.push(format!(
                "delivery {n}: the host answered {} ({code})",
                o.status
            ));
        } else if !expected.contains(&o.status) {
            problems.push(format!(
                "delivery {n}: answered {}, expected one of {expected:?}{}",
                o.status,
                if n == 2 && keeps_state {
                    " (the provider imports greentic:state, so it must refuse a replayed delivery id)"
                } else {
                    ""
                }
            ));
        }
    }
    if keeps_state {
        if problems.is_empty() {
            return pass(format!(
                "the first delivery was answered {}, its replay refused with {}",
                first.status, second.status
            ));
        }
        return fail(problems.join("; "));
    }
    if first.status != second.status {
        problems.push(format!(
            "the replay was answered {} where the first delivery got {}",
            second.status, first.status
        ));
    }
    if ctx
        .profile
        .webhook
        .as_ref()
        .and_then(|w| w.delivery_id_header.as_ref())
        .is_some()
        && (first_mentions == 0 || both_mentions <= first_mentions)
    {
        problems.push(
            "the delivery id is not in the provider's spans or logs for both deliveries, so a replay cannot be recognised".into(),
        );
    }
    if problems.is_empty() {
        pass(format!(
            "both answered {}; the delivery id is in the provider's telemetry each time",
            first.status
        ))
    } else {
        fail(problems.join("; "))
    }
}

/// How many provider spans and log lines of this case mention `needle`.
fn mentions(ctx: &Ctx, needle: &str) -> usize {
    ctx.case_spans
        .iter()
        .filter(|s| is_guest(s) && s.attributes.values().any(|v| v.contains(needle)))
        .count()
        + ctx
            .case_logs
            .iter()
            .filter(|l| l.contains("greentic::guest") && l.contains(needle))
            .count()
}
