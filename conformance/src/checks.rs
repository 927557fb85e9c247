//! The common evaluators: what every domain's cases may check.

use std::collections::{BTreeMap, BTreeSet};

use greentic_interfaces::{ComponentWorld, disagreements};
use serde_json::Value;

use crate::cases::Case;
use crate::ctx::Ctx;
use crate::domain::Drive;
use crate::host::{CapturedSpan, SpanStatus};
use crate::outcome::CallOutcome;
use crate::verdict::{Verdict, describe, fail, is_guest, new_key, pass};

pub(crate) async fn upstream_answer(ctx: &mut Ctx, case: &Case) -> Verdict {
    let key = case.idempotency_key.then(new_key);
    let outcome = ctx.drive(case, "a", key.as_deref()).await;
    let seen = ctx.upstream.take();
    let want = case.expect.code.clone().unwrap_or_else(|| "ok".into());
    if seen.is_empty() {
        return fail(format!(
            "the provider never called the upstream ({}); its configuration must lead it there",
            describe(&outcome)
        ));
    }
    if outcome.code != want {
        return fail(format!("expected `{want}`, {}", describe(&outcome)));
    }
    if let Some(ms) = case.expect.retry_after_ms
        && outcome.retry_after_ms != Some(ms)
    {
        return fail(format!(
            "expected `{want}` with retry-after {ms} ms, {}",
            describe(&outcome)
        ));
    }
    pass(describe(&outcome))
}

/// Strings that identify `tenant`: its secret values and its id.
fn markers(ctx: &Ctx, which: &str) -> Vec<(String, String)> {
    let t = ctx.tenant(which);
    let mut m: Vec<(String, String)> = t
        .secrets
        .iter()
        .map(|(name, value)| (format!("secret {name}"), value.clone()))
        .collect();
    m.push(("tenant id".into(), t.id.clone()));
    m
}

/// Interleaved calls of tenants a and b through one kept instance: no request of one may carry
/// anything of the other's — found wherever it travels and however it is encoded (see
/// [`crate::evidence`]) — and every credential a request carries is attributed: to the
/// calling tenant, or it is a finding. A run in which no request carried anything of the
/// calling tenant's own saw no evidence either way: inconclusive, which fails.
pub(crate) async fn tenancy(ctx: &mut Ctx, case: &Case) -> Verdict {
    ctx.host.share_instances(true).await;
    let mut problems = Vec::new();
    let mut calls = 0;
    let mut own_seen = 0;
    let mut attributed = 0;
    let mut requests = 0;
    for round in 0..case.rounds.unwrap_or(3) {
        for (me, other) in [("a", "b"), ("b", "a")] {
            let outcome = ctx.drive(case, me, None).await;
            calls += 1;
            not_ok(&mut problems, round, me, &outcome);
            let seen = ctx.upstream.take();
            let (mine, theirs) = (markers(ctx, me), markers(ctx, other));
            for request in &seen {
                requests += 1;
                let whole = crate::evidence::Decoded::new(&request_text(request));
                for (what, value) in &theirs {
                    if whole.contains(value) {
                        problems.push(format!(
                            "round {}: tenant {me}'s request carried tenant {other}'s {what}",
                            round + 1
                        ));
                    }
                }
                own_seen += mine.iter().filter(|(_, v)| whole.contains(v)).count();
                // Each credential, where it travels, attributed to the tenant whose secret it
                // holds.
                for credential in crate::evidence::credentials(request) {
                    let holds = |markers: &[(String, String)]| {
                        markers
                            .iter()
                            .filter(|(what, _)| what.starts_with("secret "))
                            .any(|(_, v)| crate::evidence::holds(&credential, v))
                    };
                    if holds(&theirs) {
                        problems.push(format!(
                            "round {}: tenant {me}'s request carried tenant {other}'s credential ({})",
                            round + 1,
                            credential.place
                        ));
                    } else if holds(&mine) {
                        attributed += 1;
                    }
                }
            }
        }
    }
    ctx.host.share_instances(false).await;
    problems.dedup();
    if !problems.is_empty() {
        return fail(problems.join("; "));
    }
    if own_seen == 0 {
        return fail(format!(
            "inconclusive: {calls} interleaved calls made {requests} upstream request(s), and none carried anything of the calling tenant's own (its secrets, in any encoding, or its id), so the suite cannot tell whose data each carried; a provider certified for tenancy must send something per tenant the suite can see (configure the upstream URL with {{{{tenant}}}} in the profile, or bind a secret it sends)"
        ));
    }
    pass(format!(
        "{calls} interleaved calls through one instance, {requests} upstream request(s); each carried only its own tenant's data ({own_seen} of its own markers seen, {attributed} credential(s) attributed to the calling tenant)"
    ))
}

/// Interleaved calls of tenants a and b, as the host runs them (no instance shared by force):
/// the host's span of each call names the instance that ran it (`greentic.instance.id`, and
/// `greentic.instance.calls`, the calls it had served). A provider whose manifest says
/// `"instances": "per-tenant"` passes when no instance served both tenants and at least one
/// served a tenant's later call (the evidence that instances were reused at all); one that
/// says `per-call` passes when no span names an instance. Without the host's spans of the
/// calls there is no evidence either way, which fails.
pub(crate) async fn instances(ctx: &mut Ctx, case: &Case) -> Verdict {
    let per_tenant = !ctx.manifest.instances.is_per_call();
    let mut problems = Vec::new();
    let mut calls = 0;
    for round in 0..case.rounds.unwrap_or(3) {
        for me in ["a", "b"] {
            let outcome = ctx.drive(case, me, None).await;
            calls += 1;
            not_ok(&mut problems, round, me, &outcome);
            ctx.upstream.take();
        }
    }
    ctx.collect();
    let host: Vec<&CapturedSpan> = ctx
        .case_spans
        .iter()
        .filter(|s| !is_guest(s) && s.attributes.contains_key("greentic.tenant"))
        .collect();
    if host.len() < calls {
        return fail(format!(
            "{calls} calls, but only {} host span(s) of them were seen: the suite cannot tell which instance ran each",
            host.len()
        ));
    }
    let mut served: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut later = 0;
    let mut unnamed = 0;
    for span in &host {
        let tenant = span.attributes["greentic.tenant"].as_str();
        match span.attributes.get("greentic.instance.id") {
            Some(id) => {
                served.entry(id.as_str()).or_default().insert(tenant);
                let calls: u32 = span
                    .attributes
                    .get("greentic.instance.calls")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                later += usize::from(calls >= 2);
            }
            None => unnamed += 1,
        }
    }
    for (id, tenants) in &served {
        if tenants.len() > 1 {
            problems.push(format!("instance {id} served tenants {tenants:?}"));
        }
    }
    if !problems.is_empty() {
        return fail(problems.join("; "));
    }
    if !per_tenant {
        if !served.is_empty() {
            return fail(format!(
                "the manifest says `per-call`, yet {} call(s) ran in an instance the host kept",
                host.len() - unnamed
            ));
        }
        return pass(format!("{calls} calls, each in a fresh instance"));
    }
    if unnamed > 0 {
        return fail(format!(
            "the manifest says `per-tenant`, yet the host's spans of {unnamed} call(s) name no instance"
        ));
    }
    if later == 0 {
        return fail(format!(
            "inconclusive: {calls} interleaved calls ran in {} instance(s), none of which served a later call of its tenant; the manifest says `per-tenant`, so the host should have reused them (is `[host] kept_instances` 0, or `fresh_instances` set?)",
            served.len()
        ));
    }
    pass(format!(
        "{calls} interleaved calls in {} instance(s), each serving one tenant; {later} call(s) ran in an instance its tenant's earlier call left",
        served.len()
    ))
}

/// Notes a call of an interleaved round that did not succeed.
fn not_ok(problems: &mut Vec<String>, round: u32, tenant: &str, outcome: &CallOutcome) {
    if outcome.code != "ok" {
        problems.push(format!(
            "round {}, tenant {tenant}: {}",
            round + 1,
            describe(outcome)
        ));
    }
}

/// Everything of a request the suite looks in: path, headers (name and value), body.
fn request_text(request: &crate::upstream::Seen) -> String {
    let mut text = request.path.clone();
    for (k, v) in &request.headers {
        text.push('\n');
        text.push_str(k);
        text.push_str(": ");
        text.push_str(v);
    }
    text.push('\n');
    text.push_str(&String::from_utf8_lossy(&request.body));
    text
}

pub(crate) async fn telemetry(ctx: &mut Ctx, case: &Case) -> Verdict {
    let o = ctx.drive(case, "a", None).await;
    let (ok, what) = (o.code == "ok", describe(&o));
    ctx.collect();
    let want_error = case.expect.span_status.as_deref() == Some("error");
    if ok == want_error {
        return fail(format!(
            "the call should have {}: {what}",
            if want_error { "failed" } else { "succeeded" }
        ));
    }
    let tenant = ctx.tenant("a").clone();
    let mut expected = vec![
        ("greentic.tenant", Some(tenant.id.clone())),
        ("greentic.provider", Some(ctx.manifest.name.clone())),
    ];
    expected.push(("greentic.capability", Some(ctx.operation())));
    // Only an invoke carries a caller's token, and with it a team and a user.
    if matches!(ctx.drive, Drive::Invoke { .. }) {
        expected.push(("greentic.team", tenant.team.clone()));
        expected.push(("greentic.user", tenant.user.clone()));
    }
    let guest: Vec<&CapturedSpan> = ctx.case_spans.iter().filter(|s| is_guest(s)).collect();
    let host: Vec<&CapturedSpan> = ctx.case_spans.iter().filter(|s| !is_guest(s)).collect();
    if guest.is_empty() {
        return fail(format!(
            "the provider emitted no span for the call ({} host span(s) seen); start one with the telemetry import",
            host.len()
        ));
    }
    let mut problems = Vec::new();
    for span in guest.iter().chain(host.iter()) {
        for (key, value) in &expected {
            if span.attributes.get(*key) != value.as_ref() {
                problems.push(format!(
                    "span `{}` has {key} = {:?}, expected {:?}",
                    span.name,
                    span.attributes.get(*key),
                    value
                ));
            }
        }
    }
    if let Some(host_span) = host.first()
        && guest.iter().any(|g| g.trace_id != host_span.trace_id)
    {
        problems.push("a provider span is not in the call's trace".into());
    }
    let errors = guest
        .iter()
        .filter(|s| matches!(s.status, SpanStatus::Error(_)))
        .count();
    if want_error && errors == 0 {
        problems.push(format!(
            "the call failed but none of the provider's {} span(s) has the error status",
            guest.len()
        ));
    }
    if !want_error && errors > 0 {
        problems.push(format!(
            "the call succeeded but {errors} of the provider's spans have the error status"
        ));
    }
    problems.dedup();
    if problems.is_empty() {
        pass(format!(
            "{what}; {} provider span(s) ({}) with the call's attributes{}",
            guest.len(),
            guest
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if want_error {
                " and the error status"
            } else {
                ""
            }
        ))
    } else {
        fail(problems.join("; "))
    }
}

/// `(tenant, secret, result)` of each secret read the host logged.
fn secret_reads(logs: &[String]) -> Vec<(String, String, String)> {
    logs.iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "secret read")
        .map(|v| {
            let f = |k: &str| v["fields"][k].as_str().unwrap_or_default().to_string();
            (f("tenant"), f("secret"), f("result"))
        })
        .collect()
}

pub(crate) async fn secrets_resolve(ctx: &mut Ctx, case: &Case) -> Verdict {
    let outcome = ctx.drive(case, "a", None).await;
    ctx.collect();
    if outcome.code != "ok" {
        return fail(format!(
            "with every declared secret bound the call should succeed: {}",
            describe(&outcome)
        ));
    }
    let reads = secret_reads(&ctx.case_logs);
    let refused: Vec<String> = reads
        .iter()
        .filter(|(_, _, result)| result != "ok")
        .map(|(_, name, result)| format!("{name} ({result})"))
        .collect();
    if !refused.is_empty() {
        return fail(format!(
            "secret reads were refused: {}; a provider reads only the secrets it declares",
            refused.join(", ")
        ));
    }
    let names: BTreeSet<&str> = reads.iter().map(|(_, n, _)| n.as_str()).collect();
    pass(if names.is_empty() {
        "the call succeeded; it read no secret".to_string()
    } else {
        format!(
            "the call succeeded; read {}",
            names.into_iter().collect::<Vec<_>>().join(", ")
        )
    })
}

pub(crate) async fn secrets_unbound(ctx: &mut Ctx, case: &Case) -> Verdict {
    let outcome = ctx.drive(case, "c", None).await;
    if case.expect.codes.contains(&outcome.code) {
        pass(format!("secrets revoked: {}", describe(&outcome)))
    } else {
        fail(format!(
            "secrets revoked: expected one of {}, {}",
            case.expect.codes.join(", "),
            describe(&outcome)
        ))
    }
}

pub(crate) async fn secrets_not_emitted(ctx: &mut Ctx) -> Verdict {
    // Metric names and labels are something a guest can make the host emit too.
    let metrics = match ctx
        .client
        .get(format!("{}/metrics", ctx.host.base_url()))
        .send()
        .await
    {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => return fail(format!("the host's /metrics could not be read: {e}")),
    };
    let mut needles = Vec::new();
    for t in &ctx.tenants {
        for (name, value) in &t.secrets {
            needles.push((format!("{}'s {name}", t.id), value.clone()));
        }
    }
    if ctx.logs.is_empty() && ctx.spans.is_empty() {
        return fail(
            "inconclusive: no log line and no span was captured in the whole run, so nothing shows what the provider emitted".to_string(),
        );
    }
    if needles.is_empty() {
        return pass(
            "the provider declares no secrets: there is nothing of its tenants' it could emit"
                .to_string(),
        );
    }
    // Every place, each text decoded once (percent-encoding, JSON escapes, base64 and
    // base64url runs at every alignment, hex) and searched for every secret.
    let mut places: Vec<(String, String)> = Vec::new();
    for line in &ctx.logs {
        let target = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v["target"].as_str().map(str::to_string))
            .unwrap_or_default();
        places.push((format!("a log line (target {target})"), line.clone()));
    }
    for span in &ctx.spans {
        places.push((
            format!("span `{}`", span.name),
            format!("{:?} {:?} {:?}", span.attributes, span.events, span.status),
        ));
    }
    for (case, answer) in &ctx.answers {
        places.push((format!("the answer to {case}"), answer.clone()));
    }
    places.push(("/metrics".into(), metrics.clone()));
    let mut found = BTreeSet::new();
    for (place, text) in &places {
        let decoded = crate::evidence::Decoded::new(text);
        for (what, needle) in &needles {
            if decoded.contains(needle) {
                found.insert(format!("{what} in {place}"));
            }
        }
    }
    if found.is_empty() {
        pass(format!(
            "{} secret value(s), in any encoding, checked against {} log line(s), {} span(s), {} answer(s) and {} line(s) of /metrics",
            needles.len(),
            ctx.logs.len(),
            ctx.spans.len(),
            ctx.answers.len(),
            metrics.lines().count()
        ))
    } else {
        fail(found.into_iter().collect::<Vec<_>>().join("; "))
    }
}

pub(crate) fn manifest_imports(ctx: &mut Ctx) -> Verdict {
    let Some(wasm) = ctx.subject.wasm().map(<[u8]>::to_vec) else {
        return remote_manifest(ctx);
    };
    let world = match ComponentWorld::decode(&ctx.manifest.name, &wasm) {
        Ok(w) => w,
        Err(e) => return fail(format!("the component's world cannot be read: {e}")),
    };
    let mut problems = disagreements(&ctx.manifest, &world);
    let export = ctx.suite.export;
    if world.export(export).is_none() {
        problems.push(format!(
            "the component does not export `{export}`, which the {} domain requires",
            ctx.domain
        ));
    }
    for c in &ctx.manifest.capabilities {
        if let Some(capabilities) = ctx.suite.capabilities
            && !capabilities.contains(&c.as_str())
        {
            problems.push(format!(
                "capability `{c}` is not one the {} domain offers ({})",
                ctx.domain,
                capabilities.join(", ")
            ));
        }
    }
    if problems.is_empty() {
        pass(format!(
            "{} import(s), {} export(s); secrets, outbound hosts and capabilities agree",
            world.imports.len(),
            world.exports.len()
        ))
    } else {
        fail(problems.join("; "))
    }
}

/// `manifest-truth.imports` for a provider outside the host, which has no imports to read: the
/// evidence is what it did. Its capabilities must be its domain's, and it must have answered
/// the domain's calls during the run (an answer that is the provider's own, success or
/// provider error); a run in which no call reached it saw nothing and fails.
fn remote_manifest(ctx: &Ctx) -> Verdict {
    let mut problems = Vec::new();
    for c in &ctx.manifest.capabilities {
        if let Some(capabilities) = ctx.suite.capabilities
            && !capabilities.contains(&c.as_str())
        {
            problems.push(format!(
                "capability `{c}` is not one the {} domain offers ({})",
                ctx.domain,
                capabilities.join(", ")
            ));
        }
    }
    // The provider's own answers: a result, or one of `provider-error`'s codes (the host's
    // codes — remote-unreachable, deadline-exceeded, … — are not its).
    const OWN: [&str; 8] = [
        "ok",
        "invalid-input",
        "unauthorized",
        "not-found",
        "rate-limited",
        "unavailable",
        "timeout",
        "internal",
    ];
    let own = |text: &str| match serde_json::from_str::<Value>(text) {
        Ok(v) => match v.get("code").and_then(Value::as_str) {
            Some(code) => OWN.contains(&code),
            None => v.get("provider").is_some(),
        },
        Err(_) => text
            .split_whitespace()
            .next()
            .is_some_and(|code| OWN.contains(&code)),
    };
    let answered = ctx.answers.iter().filter(|(_, text)| own(text)).count();
    if answered == 0 {
        problems.push(format!(
            "no call of the run was answered by the provider itself ({} answer(s) captured): nothing shows it implements the {} domain's calls",
            ctx.answers.len(),
            ctx.domain
        ));
    }
    if problems.is_empty() {
        pass(format!(
            "a {} provider: {answered} answer(s) of its own to the {} domain's calls; its capabilities are the domain's",
            ctx.subject.form(),
            ctx.domain
        ))
    } else {
        fail(problems.join("; "))
    }
}

pub(crate) fn manifest_behaviour(ctx: &mut Ctx) -> Verdict {
    let mut problems = BTreeSet::new();
    let reads = secret_reads(&ctx.logs);
    for (_, name, _) in &reads {
        if !ctx.manifest.declares_secret(name) {
            problems.insert(format!("read secret `{name}`, which it does not declare"));
        }
    }
    let mut refused = 0;
    for line in &ctx.logs {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("outbound request to a host not granted"))
        {
            refused += 1;
            problems.insert(format!(
                "called {}:{}, which its outbound_hosts do not list",
                v["fields"]["host"].as_str().unwrap_or("?"),
                v["fields"]["port"]
            ));
        }
    }
    if problems.is_empty() {
        pass(format!(
            "{} secret read(s), all declared; {refused} outbound refusals",
            reads.len()
        ))
    } else {
        fail(problems.into_iter().collect::<Vec<_>>().join("; "))
    }
}
