//! Reconcile, case by case: what the operator decides from (resources, observations), and the
//! API requests that carry it out — against a `tower-test` mock of the API server, since none
//! runs here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::collections::{BTreeMap, BTreeSet};
use std::pin::pin;

use greentic_bundle::ProviderFacts;
use greentic_bundle::{Bundle, BundleFile, LockEntry};
use greentic_manifest::ProviderManifest;
use greentic_operator::cluster::Cluster;
use greentic_operator::crd::*;
use greentic_operator::reconcile::*;
use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

const BASE: &str = r#"
[auth]
algorithm = "HS256"
issuer = "i"
audience = "a"
secret_env = "JWT"

[trust.keys]
providers = "providers.pub"
operator = "operator.pub"

[cluster]
url = "nats://127.0.0.1:4222"
publishers = ["operator"]
"#;

fn base() -> BundleFile {
    Bundle::parse("base", BASE).unwrap()
}

fn manifest(version: &str, capabilities: &[&str], secrets: Value) -> ProviderManifest {
    ProviderManifest::from_value(
        "provider.json",
        &json!({
            "name": "chat",
            "version": version,
            "domain": "messaging",
            "capabilities": capabilities,
            "secrets": secrets,
            "compat": { "wit": "greentic:messaging/provider@1.0.x" },
            "config_schema": {
                "type": "object",
                "additionalProperties": false,
                "properties": { "label": { "type": "string" } }
            }
        }),
    )
    .unwrap()
}

fn class(name: &str, generation: i64, spec: Value) -> ProviderClass {
    let mut c = ProviderClass::new(name, serde_json::from_value(spec).unwrap());
    c.metadata.generation = Some(generation);
    c
}

fn chat_class() -> ProviderClass {
    class(
        "chat",
        1,
        json!({
            "source": "registry.example/providers/chat:1",
            "trustedKeys": ["providers"],
            "compat": "^1",
            "grants": { "secrets": ["TOKEN"] }
        }),
    )
}

fn binding(ns: &str, name: &str, spec: Value) -> ProviderBinding {
    let mut b = ProviderBinding::new(name, serde_json::from_value(spec).unwrap());
    b.metadata.namespace = Some(ns.into());
    b.metadata.generation = Some(1);
    b
}

fn policy(ns: &str, name: &str, routes: Value) -> RoutingPolicy {
    let mut p = RoutingPolicy::new(
        name,
        serde_json::from_value(json!({ "routes": routes })).unwrap(),
    );
    p.metadata.namespace = Some(ns.into());
    p.metadata.generation = Some(1);
    p
}

fn resolved(version: &str, digest: char) -> Resolved {
    Resolved {
        section: class_section(&chat_class()),
        lock: LockEntry {
            source: "registry.example/providers/chat:1".into(),
            digest: format!("sha256:{}", digest.to_string().repeat(64)),
            manifest_digest: Some(format!("sha256:{}", "e".repeat(64))),
        },
        facts: ProviderFacts {
            manifest: manifest(
                version,
                &["send"],
                json!([{ "name": "TOKEN", "required": false }]),
            ),
            granted_secrets: BTreeSet::from(["TOKEN".to_string()]),
            domain: "messaging",
            http: false,
        },
        signer: Some("keyid".into()),
    }
}

/// A cluster with tenants acme and globex, each binding class `chat` and routing `send` to it.
fn desired(acme_config: Value, globex_config: Value) -> Desired {
    Desired {
        base: base(),
        classes: vec![chat_class()],
        bindings: vec![
            binding(
                "acme",
                "chat",
                json!({ "class": "chat", "config": acme_config }),
            ),
            binding(
                "globex",
                "chat",
                json!({ "class": "chat", "config": globex_config }),
            ),
        ],
        policies: vec![
            policy(
                "acme",
                "routes",
                json!([{ "capability": "send", "binding": "chat" }]),
            ),
            policy(
                "globex",
                "routes",
                json!([{ "capability": "send", "binding": "chat" }]),
            ),
        ],
    }
}

fn observed(current: Result<Resolved, Vec<String>>) -> Observed {
    Observed {
        now: "2026-12-01T10:00:00Z".into(),
        classes: BTreeMap::from([(
            "chat".to_string(),
            ClassCheck {
                generation: Some(1),
                current,
                published: None,
            },
        )]),
        namespaces: BTreeMap::from([
            ("acme".to_string(), NamespacePhase::Active),
            ("globex".to_string(), NamespacePhase::Active),
        ]),
        secrets: BTreeMap::new(),
        published: None,
    }
}

fn publish_of(actions: &[Action]) -> Option<&Publication> {
    actions.iter().find_map(|a| match a {
        Action::Publish(r) => Some(r),
        _ => None,
    })
}

fn bundle_of(revision: &Publication) -> BundleFile {
    Bundle::parse("revision", &revision.text).unwrap()
}

fn ready<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:?}"))
}

fn binding_status<'a>(actions: &'a [Action], ns: &str, name: &str) -> &'a ProviderBindingStatus {
    actions
        .iter()
        .find_map(|a| match a {
            Action::BindingStatus {
                namespace,
                name: n,
                status,
            } if namespace == ns && n == name => Some(status),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no status for binding {ns}/{name} in {actions:#?}"))
}

fn policy_status<'a>(actions: &'a [Action], ns: &str) -> &'a RoutingPolicyStatus {
    actions
        .iter()
        .find_map(|a| match a {
            Action::PolicyStatus {
                namespace, status, ..
            } if namespace == ns => Some(status),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no policy status for {ns}"))
}

fn class_status(actions: &[Action]) -> &ProviderClassStatus {
    actions
        .iter()
        .find_map(|a| match a {
            Action::ClassStatus { status, .. } => Some(status),
            _ => None,
        })
        .expect("a class status")
}

/// The fleet serving `revision`.
fn serving(revision: &Publication) -> PublishedState {
    PublishedState {
        digest: revision.digest.clone(),
        bundle: bundle_of(revision),
        lock: revision.lock.clone(),
    }
}

/// The resources with the statuses `actions` wrote, as the API server would hold them.
fn with_statuses(mut d: Desired, actions: &[Action]) -> Desired {
    for a in actions {
        match a {
            Action::ClassStatus { name, status } => {
                for c in d
                    .classes
                    .iter_mut()
                    .filter(|c| c.metadata.name.as_ref() == Some(name))
                {
                    c.status = Some(status.clone());
                }
            }
            Action::BindingStatus {
                namespace,
                name,
                status,
            } => {
                for b in d.bindings.iter_mut().filter(|b| {
                    b.metadata.name.as_ref() == Some(name)
                        && b.metadata.namespace.as_ref() == Some(namespace)
                }) {
                    b.status = Some(status.clone());
                }
            }
            Action::PolicyStatus {
                namespace,
                name,
                status,
            } => {
                for p in d.policies.iter_mut().filter(|p| {
                    p.metadata.name.as_ref() == Some(name)
                        && p.metadata.namespace.as_ref() == Some(namespace)
                }) {
                    p.status = Some(status.clone());
                }
            }
            Action::Publish(_) | Action::Hold(_) => {}
        }
    }
    d
}

#[test]
fn new_tenants_are_published_with_the_checked_digest_and_every_status_says_so() {
    let d = desired(json!({"label": "a"}), json!({"label": "g"}));
    let actions = reconcile(&d, &observed(Ok(resolved("1.2.0", 'a'))));
    // Publish first, then the class, the bindings and the policies.
    assert!(matches!(actions[0], Action::Publish(_)), "{actions:#?}");
    assert_eq!(actions.len(), 1 + 1 + 2 + 2);
    let revision = publish_of(&actions).unwrap();
    let file = bundle_of(revision);
    assert_eq!(
        file.tenants.keys().collect::<Vec<_>>(),
        ["acme", "globex"],
        "both tenants"
    );
    assert_eq!(file.tenants["acme"].config["chat"], json!({"label": "a"}));
    assert_eq!(file.routes.len(), 2);
    assert!(
        file.routes
            .iter()
            .all(|r| r.provider == "chat" && r.capability == "send")
    );
    assert_eq!(file.providers["chat"].trusted_keys, ["providers"]);
    // Pinned to the manifest digest that was checked: a tag that moves later changes nothing
    // a host fetches.
    let pinned = format!("registry.example/providers/chat@sha256:{}", "e".repeat(64));
    assert_eq!(file.providers["chat"].source, pinned);
    assert_eq!(revision.lock.providers["chat"].source, pinned);
    assert_eq!(
        revision.lock.providers["chat"].digest,
        format!("sha256:{}", "a".repeat(64))
    );
    assert_eq!(
        revision.digest,
        greentic_fleet::revisions::published_digest(&revision.text, &revision.lock)
    );
    // The base's sections are kept.
    assert_eq!(file.cluster.publishers, ["operator"]);
    let c = class_status(&actions);
    assert_eq!(ready(&c.conditions, "Ready").status, "True");
    assert_eq!(c.manifest.as_ref().unwrap().version, "1.2.0");
    assert_eq!(c.signer.as_deref(), Some("keyid"));
    for ns in ["acme", "globex"] {
        let b = binding_status(&actions, ns, "chat");
        assert_eq!(ready(&b.conditions, "Ready").status, "True");
        assert_eq!(ready(&b.conditions, "Published").status, "True");
        assert_eq!(
            ready(&b.conditions, "Ready")
                .last_transition_time
                .as_deref(),
            Some("2026-12-01T10:00:00Z")
        );
    }
}

#[test]
fn a_second_pass_over_what_was_written_does_nothing() {
    let d = desired(json!({"label": "a"}), json!({"label": "g"}));
    let mut o = observed(Ok(resolved("1.2.0", 'a')));
    let first = reconcile(&d, &o);
    o.published = Some(serving(publish_of(&first).unwrap()));
    o.now = "2026-12-01T10:05:00Z".into();
    let d = with_statuses(d, &first);
    let again = reconcile(&d, &o);
    assert!(
        again.is_empty(),
        "nothing changed, nothing to do: {again:#?}"
    );
}

#[test]
fn an_upgraded_class_publishes_its_new_digest_and_keeps_transition_times() {
    let d = desired(json!({"label": "a"}), json!({"label": "g"}));
    let mut o = observed(Ok(resolved("1.2.0", 'a')));
    let first = reconcile(&d, &o);
    o.published = Some(serving(publish_of(&first).unwrap()));
    let d = with_statuses(d, &first);
    // The tag now points at 1.3.0.
    o.classes.get_mut("chat").unwrap().current = Ok(resolved("1.3.0", 'b'));
    o.now = "2026-12-01T11:00:00Z".into();
    let actions = reconcile(&d, &o);
    let revision = publish_of(&actions).expect("a new revision");
    assert_eq!(
        revision.lock.providers["chat"].digest,
        format!("sha256:{}", "b".repeat(64))
    );
    let c = class_status(&actions);
    assert_eq!(c.manifest.as_ref().unwrap().version, "1.3.0");
    // Ready stayed True: its transition time is the first one.
    assert_eq!(
        ready(&c.conditions, "Ready")
            .last_transition_time
            .as_deref(),
        Some("2026-12-01T10:00:00Z")
    );
}

#[test]
fn a_class_moved_outside_its_compat_range_keeps_the_published_provider() {
    let d = desired(json!({"label": "a"}), json!({"label": "g"}));
    let mut o = observed(Ok(resolved("1.2.0", 'a')));
    let first = reconcile(&d, &o);
    let first_revision = publish_of(&first).unwrap().clone();
    o.published = Some(serving(&first_revision));
    let check = o.classes.get_mut("chat").unwrap();
    check.current = Ok(resolved("2.0.0", 'c'));
    check.published = Some(resolved("1.2.0", 'a'));
    let d = with_statuses(d, &first);
    let actions = reconcile(&d, &o);
    assert!(
        actions
            .iter()
            .all(|a| !matches!(a, Action::Publish(_) | Action::Hold(_))),
        "the revision is unchanged, and nothing is held: {actions:#?}"
    );
    // Tightening compat until it excludes the very version served holds nothing either: the
    // served component is the current one (the observation hands it over as published).
    let mut tight = d.clone();
    tight.classes[0].spec.compat = Some("^3".into());
    let check = o.classes.get_mut("chat").unwrap();
    check.current = Ok(resolved("1.2.0", 'a'));
    check.published = Some(resolved("1.2.0", 'a'));
    let tightened = reconcile(&tight, &o);
    assert!(
        tightened
            .iter()
            .all(|a| !matches!(a, Action::Publish(_) | Action::Hold(_))),
        "{tightened:#?}"
    );
    assert_eq!(
        ready(&class_status(&tightened).conditions, "Ready").status,
        "False"
    );
    let c = class_status(&actions);
    let r = ready(&c.conditions, "Ready");
    assert_eq!(
        (r.status.as_str(), r.reason.as_str()),
        ("False", "CheckFailed")
    );
    assert!(
        r.message.contains("outside spec.compat")
            && r.message.contains("keeps serving the published 1.2.0"),
        "{}",
        r.message
    );
}

#[test]
fn a_class_that_fails_and_was_never_published_fails_its_bindings_only() {
    let d = desired(json!({"label": "a"}), json!({"label": "g"}));
    let actions = reconcile(
        &d,
        &observed(Err(vec![
            "provider `chat`: signature check failed: not signed by a trusted key".into(),
        ])),
    );
    let revision = publish_of(&actions).expect("an empty revision is still the truth");
    assert!(bundle_of(revision).tenants.is_empty());
    let c = class_status(&actions);
    assert!(c.problems[0].contains("signature check failed"));
    let b = binding_status(&actions, "acme", "chat");
    let r = ready(&b.conditions, "Ready");
    assert_eq!(r.status, "False");
    assert!(
        r.message.contains("the fleet serves no version of it"),
        "{}",
        r.message
    );
    let p = policy_status(&actions, "acme");
    assert!(
        ready(&p.conditions, "Ready")
            .message
            .contains("binding `chat` is not ready")
    );
    assert_eq!(ready(&p.conditions, "Published").reason, "NotServed");
}

#[test]
fn a_bad_config_holds_its_tenant_at_its_last_revision_while_the_other_tenant_moves_on() {
    let d = desired(json!({"label": "a"}), json!({"label": "g"}));
    let mut o = observed(Ok(resolved("1.2.0", 'a')));
    let first = reconcile(&d, &o);
    o.published = Some(serving(publish_of(&first).unwrap()));
    // acme's config breaks the schema; globex relabels.
    let d = with_statuses(desired(json!({"label": 7}), json!({"label": "g2"})), &first);
    let actions = reconcile(&d, &o);
    let file = bundle_of(publish_of(&actions).expect("globex's change is published"));
    assert_eq!(
        file.tenants["globex"].config["chat"],
        json!({"label": "g2"})
    );
    assert_eq!(
        file.tenants["acme"].config["chat"],
        json!({"label": "a"}),
        "acme keeps its last published configuration"
    );
    assert_eq!(file.routes.iter().filter(|r| r.tenant == "acme").count(), 1);
    let b = binding_status(&actions, "acme", "chat");
    assert_eq!(ready(&b.conditions, "Ready").reason, "Invalid");
    assert!(b.problems[0].contains("field `/label`"), "{:?}", b.problems);
    assert_eq!(ready(&b.conditions, "Published").reason, "Held");
    assert_eq!(
        ready(&policy_status(&actions, "acme").conditions, "Ready").status,
        "False",
        "the namespace's routes are not ready"
    );
    // globex: not touched by acme's problem — its status (Published) stands, unwritten.
    assert!(
        actions.iter().all(|a| !matches!(a,
            Action::BindingStatus { namespace, .. } if namespace == "globex")),
        "{actions:#?}"
    );
}

#[test]
fn a_bad_config_without_a_published_revision_leaves_the_tenant_out() {
    let d = desired(json!({"label": 7}), json!({"label": "g"}));
    let actions = reconcile(&d, &observed(Ok(resolved("1.2.0", 'a'))));
    let file = bundle_of(publish_of(&actions).unwrap());
    assert_eq!(file.tenants.keys().collect::<Vec<_>>(), ["globex"]);
    assert!(file.routes.iter().all(|r| r.tenant == "globex"));
}

#[test]
fn secrets_must_be_granted_by_the_class_and_present_in_the_tenants_secret() {
    let mut d = desired(json!({"label": "a"}), json!({"label": "g"}));
    d.bindings[0].spec.secrets = vec!["TOKEN".into()];
    d.bindings[1].spec.secrets = vec!["OTHER".into()];
    let mut o = observed(Ok(resolved("1.2.0", 'a')));
    let actions = reconcile(&d, &o);
    let acme = binding_status(&actions, "acme", "chat");
    assert!(
        acme.problems
            .iter()
            .any(|p| p.contains("Secret `greentic-tenant-acme`") && p.contains("no key `TOKEN`")),
        "{:?}",
        acme.problems
    );
    let globex = binding_status(&actions, "globex", "chat");
    assert!(
        globex.problems[0].contains("`OTHER`, which class `chat` does not grant"),
        "{:?}",
        globex.problems
    );
    // Once the key exists, acme binds it.
    o.secrets
        .insert("acme".into(), BTreeSet::from(["TOKEN".to_string()]));
    let actions = reconcile(&d, &o);
    assert_eq!(
        ready(
            &binding_status(&actions, "acme", "chat").conditions,
            "Ready"
        )
        .status,
        "True"
    );
    let file = bundle_of(publish_of(&actions).unwrap());
    assert_eq!(file.tenants["acme"].secrets, ["TOKEN"]);
}

#[test]
fn a_required_secret_not_bound_is_the_hosts_own_problem() {
    let d = desired(json!({"label": "a"}), json!({"label": "g"}));
    let mut r = resolved("1.2.0", 'a');
    r.facts.manifest = manifest(
        "1.2.0",
        &["send"],
        json!([{ "name": "TOKEN", "required": true }]),
    );
    let actions = reconcile(&d, &observed(Ok(r)));
    let b = binding_status(&actions, "acme", "chat");
    assert!(
        b.problems
            .iter()
            .any(|p| p.contains("required secret `TOKEN` is not bound")),
        "the words of the host's check: {:?}",
        b.problems
    );
}

#[test]
fn a_deleted_or_terminating_namespace_takes_its_tenant_out_and_gets_no_status() {
    let d = desired(json!({"label": "a"}), json!({"label": "g"}));
    let mut o = observed(Ok(resolved("1.2.0", 'a')));
    let first = reconcile(&d, &o);
    o.published = Some(serving(publish_of(&first).unwrap()));
    let d = with_statuses(d, &first);
    for phase in [None, Some(NamespacePhase::Terminating)] {
        let mut o = o.clone();
        match phase {
            None => o.namespaces.remove("globex"),
            Some(p) => o.namespaces.insert("globex".into(), p),
        };
        let actions = reconcile(&d, &o);
        let file = bundle_of(publish_of(&actions).expect("a revision without globex"));
        assert_eq!(file.tenants.keys().collect::<Vec<_>>(), ["acme"]);
        assert!(file.routes.iter().all(|r| r.tenant == "acme"));
        assert!(
            actions.iter().all(|a| !matches!(a,
                Action::BindingStatus { namespace, .. } | Action::PolicyStatus { namespace, .. }
                    if namespace == "globex")),
            "nothing is written into a namespace that is going: {actions:#?}"
        );
    }
}

#[test]
fn routes_are_checked_with_the_hosts_checks_and_team_scoping() {
    let mut d = desired(json!({"label": "a"}), json!({"label": "g"}));
    d.bindings[0].spec.teams = vec!["ops".into()];
    d.policies[0] = policy(
        "acme",
        "routes",
        json!([
            { "capability": "send", "binding": "chat" },
            { "capability": "send", "binding": "nope", "team": "x" },
            { "capability": "fax", "binding": "chat", "team": "ops" },
            { "capability": "send", "binding": "chat", "team": "ops", "durable": true }
        ]),
    );
    let actions = reconcile(&d, &observed(Ok(resolved("1.2.0", 'a'))));
    let p = policy_status(&actions, "acme");
    let all = p.problems.join("\n");
    assert!(
        all.contains("spec.routes[0]: binding `chat` is scoped to teams ops"),
        "{all}"
    );
    assert!(
        all.contains("spec.routes[1]: no ProviderBinding `nope`"),
        "{all}"
    );
    assert!(all.contains("does not offer capability `fax`"), "{all}");
    assert!(
        all.contains("`durable = true` is for webhook deliveries"),
        "{all}"
    );
    // The binding itself is fine: only the policy is not ready.
    assert_eq!(
        ready(
            &binding_status(&actions, "acme", "chat").conditions,
            "Ready"
        )
        .status,
        "True"
    );
    let file = bundle_of(publish_of(&actions).unwrap());
    assert!(!file.tenants.contains_key("acme"));
}

#[test]
fn tenant_limits_must_agree_and_a_class_is_bound_once_per_tenant() {
    let mut d = desired(json!({"label": "a"}), json!({"label": "g"}));
    d.bindings[0].spec.limits = Some(BindingLimits {
        max_concurrent: Some(4),
        ..Default::default()
    });
    // A second class, bound by acme with another limit.
    let mut mail = chat_class();
    mail.metadata.name = Some("mail".into());
    d.classes.push(mail);
    let mut o = observed(Ok(resolved("1.2.0", 'a')));
    let check = o.classes["chat"].clone();
    o.classes.insert("mail".into(), check);
    d.bindings.push(binding(
        "acme",
        "mail",
        json!({ "class": "mail", "limits": { "maxConcurrent": 9 } }),
    ));
    // And the same class bound twice, with a conflicting limit too.
    let mut twin = binding(
        "acme",
        "chat2",
        json!({ "class": "chat", "limits": { "maxConcurrent": 7 } }),
    );
    twin.metadata.generation = Some(3);
    d.bindings.push(twin);
    let actions = reconcile(&d, &o);
    let mail = binding_status(&actions, "acme", "mail");
    assert!(
        mail.problems
            .join("\n")
            .contains("maxConcurrent is 9, but binding `chat` of this tenant sets 4"),
        "{:?}",
        mail.problems
    );
    let twin = binding_status(&actions, "acme", "chat2");
    assert_eq!(
        twin.problems,
        ["binding `chat` of this tenant already binds class `chat`; a tenant binds a class once"],
        "a binding that is invalid anyway is not also blamed for a limit"
    );
    assert_eq!(twin.observed_generation, Some(3));
    assert_eq!(
        ready(
            &binding_status(&actions, "acme", "chat").conditions,
            "Ready"
        )
        .status,
        "True",
        "the first binding is not blamed"
    );
}

#[test]
fn a_missing_class_and_an_unchecked_class_are_told_apart() {
    let mut d = desired(json!({"label": "a"}), json!({"label": "g"}));
    d.bindings[1].spec.class = "ghost".into();
    let mut o = observed(Ok(resolved("1.2.0", 'a')));
    // The class changed since it was checked: it counts as not checked yet.
    o.classes.get_mut("chat").unwrap().generation = Some(0);
    let actions = reconcile(&d, &o);
    let c = class_status(&actions);
    assert_eq!(ready(&c.conditions, "Ready").status, "Unknown");
    assert!(
        binding_status(&actions, "globex", "chat").problems[0]
            .contains("ProviderClass `ghost` does not exist")
    );
    assert!(binding_status(&actions, "acme", "chat").problems[0].contains("is not ready"));
}

#[test]
fn a_class_name_that_cannot_name_a_provider_is_refused() {
    let mut d = desired(json!({"label": "a"}), json!({"label": "g"}));
    d.classes[0].metadata.name = Some("chat.v2".into());
    let mut o = observed(Ok(resolved("1.2.0", 'a')));
    let check = o.classes.remove("chat").unwrap();
    o.classes.insert("chat.v2".into(), check);
    let actions = reconcile(&d, &o);
    assert!(class_status(&actions).problems[0].contains("not a valid provider name"));
}

/// The tenants a revision serves.
fn served(actions: &[Action]) -> Vec<String> {
    bundle_of(publish_of(actions).expect("a revision"))
        .tenants
        .keys()
        .cloned()
        .collect()
}

#[test]
fn a_duplicate_route_inside_one_policy_fails_that_policy_only() {
    let mut d = desired(json!({"label": "a"}), json!({"label": "g"}));
    d.policies[0] = policy(
        "acme",
        "routes",
        json!([
            { "capability": "send", "binding": "chat" },
            { "capability": "send", "binding": "chat" }
        ]),
    );
    let actions = reconcile(&d, &observed(Ok(resolved("1.2.0", 'a'))));
    assert!(
        policy_status(&actions, "acme").problems[0]
            .contains("spec.routes[1]: an earlier route of this policy already routes"),
        "{:?}",
        policy_status(&actions, "acme").problems
    );
    assert_eq!(served(&actions), ["globex"], "globex is still published");
}

#[test]
fn a_binding_configured_but_not_yet_routed_is_published_with_its_provider() {
    let mut d = desired(json!({"label": "a"}), json!({"label": "g"}));
    d.policies
        .retain(|p| p.metadata.namespace.as_deref() != Some("acme"));
    let actions = reconcile(&d, &observed(Ok(resolved("1.2.0", 'a'))));
    let file = bundle_of(publish_of(&actions).expect("a revision"));
    assert_eq!(file.tenants["acme"].config["chat"], json!({"label": "a"}));
    assert!(file.providers.contains_key("chat"));
    assert!(file.routes.iter().all(|r| r.tenant == "globex"));
}

#[test]
fn what_only_the_whole_bundle_refuses_fails_its_tenant_not_the_revision() {
    for (config, limits, words) in [
        // More fuel per call than per second: the bundle's own cross-field check.
        (
            json!({"label": "a"}),
            json!({ "fuelPerCall": 9_000_000_000u64, "fuelPerSecond": 1_000_000 }),
            "fuel",
        ),
        // A value TOML has no form for.
        (json!({"label": null}), json!({}), "TOML"),
    ] {
        let mut d = desired(config, json!({"label": "g"}));
        d.bindings[0].spec.limits = Some(serde_json::from_value(limits).unwrap());
        // The schema says nothing of null labels here: let the provider accept them.
        let mut r = resolved("1.2.0", 'a');
        r.facts.manifest = ProviderManifest::from_value(
            "provider.json",
            &json!({
                "name": "chat", "version": "1.2.0", "domain": "messaging",
                "capabilities": ["send"], "secrets": [],
                "compat": { "wit": "greentic:messaging/provider@1.0.x" },
                "config_schema": { "type": "object" }
            }),
        )
        .unwrap();
        let actions = reconcile(&d, &observed(Ok(r)));
        assert_eq!(
            served(&actions),
            ["globex"],
            "{words}: globex is still published"
        );
        let b = binding_status(&actions, "acme", "chat");
        let ready = ready(&b.conditions, "Ready");
        assert_eq!(ready.reason, "TenantInvalid", "{words}");
        assert!(
            b.problems.join(" ").contains(words),
            "{words}: {:?}",
            b.problems
        );
        assert_eq!(
            policy_status(&actions, "acme").conditions[0].reason,
            "TenantInvalid"
        );
    }
}

#[test]
fn a_class_the_fleet_serves_that_cannot_be_checked_holds_the_revision() {
    let d = desired(json!({"label": "a"}), json!({"label": "g"}));
    let mut o = observed(Ok(resolved("1.2.0", 'a')));
    let first = reconcile(&d, &o);
    o.published = Some(serving(publish_of(&first).unwrap()));
    // The registry is down and the published version is not in the cache either.
    o.classes.get_mut("chat").unwrap().current =
        Err(vec!["provider `chat`: the registry is unreachable".into()]);
    let actions = reconcile(&with_statuses(d, &first), &o);
    assert!(
        publish_of(&actions).is_none(),
        "nothing that drops tenants is published"
    );
    let Some(Action::Hold(why)) = actions.first() else {
        panic!("a hold, first: {actions:#?}")
    };
    assert!(
        why[0].contains("class `chat` serves published tenants"),
        "{why:?}"
    );
    let b = binding_status(&actions, "acme", "chat");
    let published = ready(&b.conditions, "Published");
    assert_eq!(published.reason, "Held");
    assert!(published.message.contains("no revision is published"));
    // Once the class is deleted, its tenants leave for real.
    let mut gone = desired(json!({"label": "a"}), json!({"label": "g"}));
    gone.classes.clear();
    o.classes.clear();
    let actions = reconcile(&gone, &o);
    assert!(served(&actions).is_empty());
}

#[test]
fn a_class_can_be_kept_to_some_namespaces() {
    let mut d = desired(json!({"label": "a"}), json!({"label": "g"}));
    d.classes[0].spec.allowed_namespaces = vec!["acme".into()];
    let actions = reconcile(&d, &observed(Ok(resolved("1.2.0", 'a'))));
    assert!(
        binding_status(&actions, "globex", "chat").problems[0]
            .contains("may be bound only in namespaces acme")
    );
    assert_eq!(served(&actions), ["acme"]);
}

#[test]
fn withdrawing_a_class_from_a_namespace_takes_it_from_the_held_tenant_too() {
    let d = desired(json!({"label": "a"}), json!({"label": "g"}));
    let mut o = observed(Ok(resolved("1.2.0", 'a')));
    let first = reconcile(&d, &o);
    o.published = Some(serving(publish_of(&first).unwrap()));
    let mut d = with_statuses(d, &first);
    d.classes[0].spec.allowed_namespaces = vec!["acme".into()];
    let actions = reconcile(&d, &o);
    assert_eq!(
        served(&actions),
        ["acme"],
        "globex is not held on at its last configuration: its access was withdrawn"
    );
    let b = binding_status(&actions, "globex", "chat");
    assert_eq!(ready(&b.conditions, "Published").reason, "NotServed");
}

#[test]
fn a_class_edited_since_its_check_keeps_serving_its_published_version() {
    let d = desired(json!({"label": "a"}), json!({"label": "g"}));
    let mut o = observed(Ok(resolved("1.2.0", 'a')));
    let first = reconcile(&d, &o);
    o.published = Some(serving(publish_of(&first).unwrap()));
    o.classes.get_mut("chat").unwrap().published = Some(resolved("1.2.0", 'a'));
    let mut d = with_statuses(d, &first);
    // Generation 2 is not checked yet.
    d.classes[0].metadata.generation = Some(2);
    let actions = reconcile(&d, &o);
    assert!(
        actions
            .iter()
            .all(|a| !matches!(a, Action::Publish(_) | Action::Hold(_))),
        "the tenants stay as they are: {actions:#?}"
    );
    assert_eq!(
        ready(&class_status(&actions).conditions, "Ready").status,
        "Unknown"
    );
}

#[test]
fn tenants_that_collide_only_with_each_other_do_not_stop_the_others() {
    // With the env backend, acme's PROD_TOKEN and acme-prod's TOKEN are one variable.
    let mut d = desired(json!({"label": "a"}), json!({"label": "g"}));
    d.base.secrets.backend = greentic_capabilities::secrets::SecretBackendKind::Env;
    d.classes[0].spec.grants.secrets = vec!["TOKEN".into(), "PROD_TOKEN".into()];
    d.bindings[0].spec.secrets = vec!["PROD_TOKEN".into()];
    let mut prod = binding(
        "acme-prod",
        "chat",
        json!({ "class": "chat", "secrets": ["TOKEN"] }),
    );
    prod.metadata.generation = Some(1);
    d.bindings.push(prod);
    d.policies.push(policy(
        "acme-prod",
        "routes",
        json!([{ "capability": "send", "binding": "chat" }]),
    ));
    let mut r = resolved("1.2.0", 'a');
    r.section = class_section(&d.classes[0]);
    r.facts.granted_secrets = BTreeSet::from(["TOKEN".to_string(), "PROD_TOKEN".to_string()]);
    let mut o = observed(Ok(r));
    o.namespaces
        .insert("acme-prod".into(), NamespacePhase::Active);
    o.secrets
        .insert("acme".into(), BTreeSet::from(["PROD_TOKEN".to_string()]));
    o.secrets
        .insert("acme-prod".into(), BTreeSet::from(["TOKEN".to_string()]));
    let actions = reconcile(&d, &o);
    assert_eq!(
        served(&actions),
        ["acme", "globex"],
        "the first of the two is published, and globex with it"
    );
    let b = binding_status(&actions, "acme-prod", "chat");
    assert_eq!(ready(&b.conditions, "Ready").reason, "TenantInvalid");
    assert!(
        b.problems
            .join(" ")
            .contains("read from GREENTIC_SECRET_ACME_PROD_TOKEN"),
        "{:?}",
        b.problems
    );
}

// ---- API request sequences (tower-test) ----

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A client whose requests go to `handle`.
fn mock_client() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "greentic-system"), handle)
}

/// Serves the next request: checks method and path (with query), replies with `reply`;
/// returns the request body.
async fn expect(
    handle: &mut Handle,
    method: Method,
    path: &str,
    status: u16,
    reply: Value,
) -> Value {
    let mut handle = pin!(handle);
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method(), method, "{}", request.uri());
    assert_eq!(request.uri().to_string(), path);
    let body = request.into_body().collect_bytes().await.unwrap();
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap()
    }
}

/// Applies `actions` through a mocked API server and returns (method, path, body) of each
/// request, in order. The server answers each apply with a valid object of its kind, and every
/// apply must succeed.
async fn requests_of(actions: Vec<Action>) -> Vec<(Method, String, Value)> {
    let (client, mut handle) = mock_client();
    let cluster = Cluster::new(client, "greentic-system");
    let n = actions
        .iter()
        .filter(|a| !matches!(a, Action::Publish(_) | Action::Hold(_)))
        .count();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..n {
            let mut h = pin!(&mut handle);
            let (request, send) = h.next_request().await.expect("a request");
            let method = request.method().clone();
            let path = request.uri().to_string();
            let body = request.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap();
            let spec = match body["kind"].as_str() {
                Some("ProviderClass") => json!({ "source": "r/p:1" }),
                Some("ProviderBinding") => json!({ "class": "chat" }),
                _ => json!({ "routes": [{ "capability": "send", "binding": "chat" }] }),
            };
            send.send_response(
                Response::builder()
                    .body(Body::from(
                        serde_json::to_vec(&json!({
                            "apiVersion": "greentic.ai/v1alpha1",
                            "kind": body["kind"],
                            "metadata": { "name": "x", "namespace": "acme" },
                            "spec": spec,
                            "status": body["status"],
                        }))
                        .unwrap(),
                    ))
                    .unwrap(),
            );
            seen.push((method, path, body));
        }
        seen
    });
    for a in &actions {
        let applied = tokio::time::timeout(std::time::Duration::from_secs(10), cluster.apply(a))
            .await
            .expect("the apply finishes");
        assert!(applied.is_ok(), "{a:?}: {applied:?}");
    }
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("every request arrived")
        .unwrap()
}

const APPLY: &str = "?&force=true&fieldManager=greentic-operator";

#[tokio::test]
async fn statuses_are_written_by_server_side_apply_of_the_status_subresource_in_order() {
    let d = desired(json!({"label": 7}), json!({"label": "g"}));
    let actions = reconcile(&d, &observed(Ok(resolved("1.2.0", 'a'))));
    let requests = requests_of(actions).await;
    let paths: Vec<(Method, String)> = requests
        .iter()
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect();
    assert_eq!(
        paths,
        vec![
            (
                Method::PATCH,
                format!("/apis/greentic.ai/v1alpha1/providerclasses/chat/status{APPLY}")
            ),
            (
                Method::PATCH,
                format!(
                    "/apis/greentic.ai/v1alpha1/namespaces/acme/providerbindings/chat/status{APPLY}"
                )
            ),
            (
                Method::PATCH,
                format!(
                    "/apis/greentic.ai/v1alpha1/namespaces/globex/providerbindings/chat/status{APPLY}"
                )
            ),
            (
                Method::PATCH,
                format!(
                    "/apis/greentic.ai/v1alpha1/namespaces/acme/routingpolicies/routes/status{APPLY}"
                )
            ),
            (
                Method::PATCH,
                format!(
                    "/apis/greentic.ai/v1alpha1/namespaces/globex/routingpolicies/routes/status{APPLY}"
                )
            ),
        ]
    );
    let acme = &requests[1].2;
    assert_eq!(acme["apiVersion"], "greentic.ai/v1alpha1");
    assert_eq!(acme["kind"], "ProviderBinding");
    assert_eq!(acme["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(acme["status"]["conditions"][0]["status"], "False");
    assert_eq!(acme["status"]["conditions"][0]["reason"], "Invalid");
    assert_eq!(requests[2].2["status"]["conditions"][0]["status"], "True");
    assert!(acme.get("spec").is_none(), "only the status is applied");
}

#[tokio::test]
async fn a_pass_with_nothing_changed_makes_no_request() {
    let d = desired(json!({"label": "a"}), json!({"label": "g"}));
    let mut o = observed(Ok(resolved("1.2.0", 'a')));
    let first = reconcile(&d, &o);
    o.published = Some(serving(publish_of(&first).unwrap()));
    let again = reconcile(&with_statuses(d, &first), &o);
    assert!(again.is_empty(), "no publish and no status: {again:#?}");
    assert!(requests_of(again).await.is_empty());
}

#[tokio::test]
async fn a_deleted_namespace_publishes_and_writes_no_other_status() {
    let d = desired(json!({"label": "a"}), json!({"label": "g"}));
    let mut o = observed(Ok(resolved("1.2.0", 'a')));
    let first = reconcile(&d, &o);
    o.published = Some(serving(publish_of(&first).unwrap()));
    o.namespaces.remove("globex");
    let actions = reconcile(&with_statuses(d, &first), &o);
    assert!(publish_of(&actions).is_some(), "a revision without globex");
    // acme is served as before: its statuses stand; globex's namespace is going.
    assert!(requests_of(actions).await.is_empty());
}

#[tokio::test]
async fn listing_reads_the_three_kinds_cluster_wide() {
    let (client, mut handle) = mock_client();
    let cluster = Cluster::new(client, "greentic-system");
    let server = tokio::spawn(async move {
        let empty = |kind: &str| json!({ "apiVersion": "greentic.ai/v1alpha1", "kind": format!("{kind}List"), "metadata": {}, "items": [] });
        expect(
            &mut handle,
            Method::GET,
            "/apis/greentic.ai/v1alpha1/providerclasses?",
            200,
            empty("ProviderClass"),
        )
        .await;
        expect(
            &mut handle,
            Method::GET,
            "/apis/greentic.ai/v1alpha1/providerbindings?",
            200,
            empty("ProviderBinding"),
        )
        .await;
        expect(
            &mut handle,
            Method::GET,
            "/apis/greentic.ai/v1alpha1/routingpolicies?",
            200,
            empty("RoutingPolicy"),
        )
        .await;
        expect(
            &mut handle,
            Method::GET,
            "/api/v1/namespaces/greentic-system/secrets?",
            200,
            json!({ "apiVersion": "v1", "kind": "SecretList", "metadata": {}, "items": [
                { "metadata": { "name": "greentic-tenant-acme" }, "data": { "TOKEN": "c2VjcmV0" } },
                { "metadata": { "name": "unrelated" }, "data": { "X": "eA==" } }
            ] }),
        )
        .await;
    });
    let listed = cluster.resources().await.unwrap();
    assert!(listed.classes.is_empty() && listed.bindings.is_empty());
    let keys = cluster.secret_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys["acme"], BTreeSet::from(["TOKEN".to_string()]));
    server.await.unwrap();
}

// ---- The lease ----

mod lease {
    use super::*;
    use greentic_operator::lease::{Decision, Elector, decide};
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::jiff::Timestamp;
    use std::time::Duration;

    const PATH: &str =
        "/apis/coordination.k8s.io/v1/namespaces/greentic-system/leases/greentic-operator";

    fn lease(holder: &str, renewed: &str, version: &str) -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": { "name": "greentic-operator", "namespace": "greentic-system", "resourceVersion": version },
            "spec": { "holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed, "leaseTransitions": 2 }
        })
    }

    fn conflict() -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "code": 409, "reason": "Conflict", "message": "the object has been modified", "status": "Failure", "metadata": {}})
    }

    fn now() -> Timestamp {
        "2026-12-01T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn decisions() {
        let d = |l: Option<Value>, me: &str, unchanged: u64| {
            let l: Option<Lease> = l.map(|v| serde_json::from_value(v).unwrap());
            decide(
                l.as_ref(),
                "greentic-operator",
                "greentic-system",
                me,
                Duration::from_secs(15),
                now(),
                Duration::from_secs(unchanged),
            )
        };
        assert!(matches!(d(None, "a", 0), Decision::Create(_)));
        assert!(matches!(
            d(Some(lease("a", "2026-12-01T09:59:59.000000Z", "1")), "a", 0),
            Decision::Renew(_)
        ));
        assert_eq!(
            d(
                Some(lease("b", "2026-12-01T09:59:50.000000Z", "1")),
                "a",
                14
            ),
            Decision::Follow { holder: "b".into() }
        );
        // A renewTime far behind this replica's clock is not expiry: only the lease standing
        // unchanged for longer than its duration, on this replica's own clock, is.
        assert_eq!(
            d(Some(lease("b", "2020-01-01T00:00:00.000000Z", "1")), "a", 1),
            Decision::Follow { holder: "b".into() }
        );
        assert!(
            matches!(
                d(Some(lease("", "2026-12-01T09:59:59.000000Z", "1")), "a", 0),
                Decision::Take(_)
            ),
            "a released lease is taken at once"
        );
        let Decision::Take(taken) = d(
            Some(lease("b", "2026-12-01T09:59:40.000000Z", "1")),
            "a",
            16,
        ) else {
            panic!("an expired lease is taken")
        };
        let spec = taken.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(
            taken.metadata.resource_version.as_deref(),
            Some("1"),
            "the write is conditional"
        );
    }

    fn elector(client: kube::Client) -> Elector {
        Elector::new(
            client,
            "greentic-system",
            "greentic-operator",
            "a",
            Duration::from_secs(15),
        )
    }

    #[tokio::test]
    async fn no_lease_is_created_held_by_us() {
        let (client, mut h) = mock_client();
        let server = tokio::spawn(async move {
            expect(&mut h, Method::GET, PATH, 404, json!({"kind": "Status", "apiVersion": "v1", "code": 404, "reason": "NotFound", "message": "not found", "status": "Failure", "metadata": {}})).await;
            let body = expect(
                &mut h,
                Method::POST,
                "/apis/coordination.k8s.io/v1/namespaces/greentic-system/leases?",
                201,
                lease("a", "2026-12-01T10:00:00.000000Z", "1"),
            )
            .await;
            assert_eq!(body["spec"]["holderIdentity"], "a");
            assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
        });
        assert!(elector(client).try_lead().await.unwrap());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_live_lease_of_another_replica_is_only_read() {
        let (client, mut h) = mock_client();
        let server = tokio::spawn(async move {
            // Its renewTime is old by this clock; it still stands: it was just seen.
            expect(
                &mut h,
                Method::GET,
                PATH,
                200,
                lease("b", "2020-01-01T00:00:00.000000Z", "7"),
            )
            .await;
        });
        assert!(
            !elector(client).try_lead().await.unwrap(),
            "a follower writes nothing"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn an_expired_lease_is_replaced_at_its_version_and_a_conflict_means_follow() {
        // A one-second lease, seen unchanged twice more than a second apart.
        let short = |v: &str| {
            let mut l = lease("b", "2020-01-01T00:00:00.000000Z", v);
            l["spec"]["leaseDurationSeconds"] = json!(1);
            l
        };
        let (client, mut h) = mock_client();
        let server = tokio::spawn(async move {
            expect(&mut h, Method::GET, PATH, 200, short("7")).await;
            expect(&mut h, Method::GET, PATH, 200, short("7")).await;
            let body = expect(&mut h, Method::PUT, &format!("{PATH}?"), 409, conflict()).await;
            assert_eq!(body["metadata"]["resourceVersion"], "7");
            assert_eq!(body["spec"]["holderIdentity"], "a");
            assert_eq!(body["spec"]["leaseTransitions"], 3);
        });
        let e = elector(client);
        assert!(!e.try_lead().await.unwrap(), "first sight: not expired yet");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(
            !e.try_lead().await.unwrap(),
            "another replica took it first"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn the_holder_renews_and_releases_on_shutdown() {
        let (client, mut h) = mock_client();
        let server = tokio::spawn(async move {
            expect(
                &mut h,
                Method::GET,
                PATH,
                200,
                lease("a", "2026-12-01T10:00:00.000000Z", "9"),
            )
            .await;
            let body = expect(
                &mut h,
                Method::PUT,
                &format!("{PATH}?"),
                200,
                lease("a", "2026-12-01T10:00:05.000000Z", "10"),
            )
            .await;
            assert_eq!(body["metadata"]["resourceVersion"], "9");
            expect(
                &mut h,
                Method::GET,
                PATH,
                200,
                lease("a", "2026-12-01T10:00:05.000000Z", "10"),
            )
            .await;
            let body = expect(
                &mut h,
                Method::PUT,
                &format!("{PATH}?"),
                200,
                lease("", "2026-12-01T10:00:05.000000Z", "11"),
            )
            .await;
            assert!(body["spec"]["holderIdentity"].is_null(), "released: {body}");
        });
        let e = elector(client);
        assert!(e.try_lead().await.unwrap());
        e.release().await.unwrap();
        server.await.unwrap();
    }
}
