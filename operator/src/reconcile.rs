//! Reconcile: a pure function of what is desired (the resources) and what was observed (each
//! class checked by the host's loader, the namespaces, the keys of each tenant's Secret, the
//! revision the fleet serves now) to what to do — publish a revision, write statuses.
//!
//! The whole cluster makes one bundle revision, so reconcile is global: every pass recomposes
//! it from every resource, and publishes only when its digest differs from the one the fleet
//! serves. Problems stay where they are:
//!
//! - a class that fails its checks (a bad signature, a tag moved to an incompatible version, a
//!   registry down) keeps the provider the fleet already serves, pinned to its published
//!   digest; only a class never published is missing;
//! - an invalid binding or policy marks itself (and the namespace's policies) not ready, and
//!   its tenant keeps the configuration and routes last published for it, re-checked against
//!   the providers of the new revision — every other tenant's changes are published;
//! - a namespace that is gone (or terminating) takes its tenant out of the revision.
//!
//! The checks are the host's own ([`greentic_bundle::check_binding`],
//! [`greentic_bundle::check_routes`], [`greentic_bundle::check_tenant`],
//! [`Bundle::parse`]), so the operator and the hosts cannot disagree on what is valid.

use std::collections::{BTreeMap, BTreeSet};

use greentic_bundle::{
    Bundle, BundleFile, Limits, Lock, LockEntry, ProviderSection, Route, TenantSection,
};
use greentic_bundle::{ProviderFacts, check_binding, check_routes, check_tenant};
use greentic_capabilities::secrets::SecretBackend;
use zeroize::Zeroizing;

use crate::crd::{
    Attestation, BindingLimits, Condition, ManifestSummary, ProviderBinding, ProviderBindingStatus,
    ProviderClass, ProviderClassStatus, RoutingPolicy, RoutingPolicyStatus,
};

/// The name of the Secret (in the hosts' namespace) holding tenant `tenant`'s secret values.
pub fn tenant_secret_name(tenant: &str) -> String {
    format!("greentic-tenant-{tenant}")
}

/// What the resources ask for.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The hosts' bundle (`[host]`, `[auth]`, `[trust]`, `[cluster]`, …): every revision keeps
    /// these sections; providers, tenants and routes come from the resources.
    pub base: BundleFile,
    /// Every `ProviderClass`.
    pub classes: Vec<ProviderClass>,
    /// Every `ProviderBinding`.
    pub bindings: Vec<ProviderBinding>,
    /// Every `RoutingPolicy`.
    pub policies: Vec<RoutingPolicy>,
}

/// A class as the host's loader found it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The provider section that was loaded.
    pub section: ProviderSection,
    /// The digests it resolved to.
    pub lock: LockEntry,
    /// Its manifest, granted secrets and domain.
    pub facts: ProviderFacts,
    /// The id of the key that signed it.
    pub signer: Option<String>,
}

/// What checking one class found.
#[derive(Debug, Clone)]
pub struct ClassCheck {
    /// The class generation checked.
    pub generation: Option<i64>,
    /// The class's source as it is now: loaded, or every problem.
    pub current: Result<Resolved, Vec<String>>,
    /// The provider of this name in the published revision, loaded by its published digest
    /// (when there is one and it differs from `current`'s).
    pub published: Option<Resolved>,
}

/// Whether a namespace can hold a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespacePhase {
    /// It exists.
    Active,
    /// It is being deleted.
    Terminating,
}

/// The revision the fleet serves now.
#[derive(Debug, Clone)]
pub struct PublishedState {
    /// Its digest.
    pub digest: String,
    /// Its bundle.
    pub bundle: BundleFile,
    /// Its lock.
    pub lock: Lock,
}

/// What was observed.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Now, RFC 3339 (condition transition times).
    pub now: String,
    /// Each class checked, by name.
    pub classes: BTreeMap<String, ClassCheck>,
    /// Namespaces by name; a namespace absent here does not exist.
    pub namespaces: BTreeMap<String, NamespacePhase>,
    /// The keys each tenant's Secret holds (values are never read into this).
    pub secrets: BTreeMap<String, BTreeSet<String>>,
    /// The fleet's revision, if one was published.
    pub published: Option<PublishedState>,
}

/// A revision to publish: the bundle text, its lock and their digest.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    /// `greentic.toml`'s text.
    pub text: String,
    /// The lock: every provider pinned to the digest checked.
    pub lock: Lock,
    /// [`greentic_fleet::revisions::published_digest`] of both.
    pub digest: String,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// No revision can be published now, for these reasons (the fleet keeps serving its own).
    Hold(Vec<String>),
    /// Publish this revision as the fleet's stable one.
    Publish(Publication),
    /// Write a class's status.
    ClassStatus {
        /// The class.
        name: String,
        /// Its new status.
        status: ProviderClassStatus,
    },
    /// Write a binding's status.
    BindingStatus {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Its new status.
        status: ProviderBindingStatus,
    },
    /// Write a policy's status.
    PolicyStatus {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Its new status.
        status: RoutingPolicyStatus,
    },
}

/// The outcome of a pass: the revision that should be served and every resource's status.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The revision, or why none can be composed (a problem of the base bundle).
    pub revision: Result<Publication, Vec<String>>,
    /// Class statuses by name.
    pub classes: BTreeMap<String, ProviderClassStatus>,
    /// Binding statuses by (namespace, name).
    pub bindings: BTreeMap<(String, String), ProviderBindingStatus>,
    /// Policy statuses by (namespace, name).
    pub policies: BTreeMap<(String, String), RoutingPolicyStatus>,
}

/// A secret backend over observed key names: it says whether a key exists, never a value.
pub struct KeyNames<'a>(pub &'a BTreeMap<String, BTreeSet<String>>);

#[async_trait::async_trait]
impl SecretBackend for KeyNames<'_> {
    async fn get(&self, tenant: &str, name: &str) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
        Ok(self
            .0
            .get(tenant)
            .is_some_and(|k| k.contains(name))
            .then(|| Zeroizing::new(Vec::new())))
    }

    fn locate(&self, tenant: &str, name: &str) -> String {
        format!(
            "key `{name}` in Secret `{}` of the hosts' namespace",
            tenant_secret_name(tenant)
        )
    }
}

/// A provider the revision can use.
struct Usable<'a> {
    section: ProviderSection,
    lock: LockEntry,
    facts: &'a ProviderFacts,
}

/// The actions that bring the cluster from `observed` to `desired`: a publish when the
/// revision differs from the fleet's (or why none can be), then each status that changed (in a
/// stable order).
pub fn reconcile(desired: &Desired, observed: &Observed) -> Vec<Action> {
    let plan = plan(desired, observed);
    let mut actions = Vec::new();
    match &plan.revision {
        Ok(revision)
            if observed.published.as_ref().map(|p| &p.digest) != Some(&revision.digest) =>
        {
            actions.push(Action::Publish(revision.clone()));
        }
        Ok(_) => {}
        Err(problems) => actions.push(Action::Hold(problems.clone())),
    }
    for class in &desired.classes {
        let name = class.metadata.name.clone().unwrap_or_default();
        if let Some(status) = plan.classes.get(&name) {
            let status = settle(status.clone(), class.status.as_ref(), &observed.now);
            if class.status.as_ref() != Some(&status) {
                actions.push(Action::ClassStatus { name, status });
            }
        }
    }
    for binding in &desired.bindings {
        let key = key_of(&binding.metadata);
        if let Some(status) = plan.bindings.get(&key) {
            let status = settle(status.clone(), binding.status.as_ref(), &observed.now);
            if binding.status.as_ref() != Some(&status) {
                actions.push(Action::BindingStatus {
                    namespace: key.0,
                    name: key.1,
                    status,
                });
            }
        }
    }
    for policy in &desired.policies {
        let key = key_of(&policy.metadata);
        if let Some(status) = plan.policies.get(&key) {
            let status = settle(status.clone(), policy.status.as_ref(), &observed.now);
            if policy.status.as_ref() != Some(&status) {
                actions.push(Action::PolicyStatus {
                    namespace: key.0,
                    name: key.1,
                    status,
                });
            }
        }
    }
    actions
}

fn key_of(meta: &kube::api::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Statuses that carry conditions: conditions keep their transition time while their status
/// holds.
trait WithConditions {
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    fn conditions(&self) -> &[Condition];
}

macro_rules! with_conditions {
    ($($t:ty),*) => {$(
        impl WithConditions for $t {
            fn conditions_mut(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
        }
    )*};
}
with_conditions!(
    ProviderClassStatus,
    ProviderBindingStatus,
    RoutingPolicyStatus
);

fn settle<S: WithConditions>(mut status: S, old: Option<&S>, now: &str) -> S {
    for c in status.conditions_mut() {
        let before = old.and_then(|o| o.conditions().iter().find(|p| p.type_ == c.type_));
        c.last_transition_time = match before {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => Some(now.to_string()),
        };
    }
    status
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: None,
        observed_generation: generation,
    }
}

/// The section a class's spec asks for (grants are the class's: a tenant cannot widen them).
pub fn class_section(class: &ProviderClass) -> ProviderSection {
    let spec = &class.spec;
    ProviderSection {
        source: spec.source.clone(),
        digest: spec.digest.clone(),
        grants: spec.grants.clone(),
        trusted_keys: spec.trusted_keys.clone(),
        identities: spec.identities.clone(),
        allow_unsigned: false,
        require: spec
            .require
            .iter()
            .map(|a| match a {
                Attestation::Conformance => greentic_bundle::attestation::Kind::Conformance,
                Attestation::Sbom => greentic_bundle::attestation::Kind::Sbom,
            })
            .collect(),
    }
}

fn summary(facts: &ProviderFacts) -> ManifestSummary {
    ManifestSummary {
        name: facts.manifest.name.clone(),
        version: facts.manifest.version.to_string(),
        domain: facts.domain.to_string(),
        capabilities: facts.manifest.capabilities.clone(),
        required_secrets: facts
            .manifest
            .required_secrets()
            .map(str::to_string)
            .collect(),
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// Checks the classes: the providers a revision can use, by name, and each class's status.
fn classes<'a>(
    desired: &Desired,
    observed: &'a Observed,
) -> (
    BTreeMap<String, Usable<'a>>,
    BTreeMap<String, ProviderClassStatus>,
) {
    let mut usable = BTreeMap::new();
    let mut statuses = BTreeMap::new();
    for class in &desired.classes {
        let name = class.metadata.name.clone().unwrap_or_default();
        let generation = class.metadata.generation;
        let mut status = ProviderClassStatus {
            observed_generation: generation,
            ..Default::default()
        };
        let check = observed
            .classes
            .get(&name)
            .filter(|c| c.generation == generation);
        let mut problems = Vec::new();
        if !greentic_bundle::valid_provider_name(&name) {
            problems.push(format!(
                "the class name `{name}` is not a valid provider name (kebab-case: lower-case letters, digits and single `-`); rename the class"
            ));
        }
        let current = match check.map(|c| &c.current) {
            None => {
                status.conditions.push(Condition {
                    status: "Unknown".into(),
                    ..condition(
                        "Ready",
                        false,
                        "Checking",
                        "the class has not been checked yet".into(),
                        generation,
                    )
                });
                // Changed since it was checked: what the fleet serves of it stays usable until
                // the new generation is checked.
                if let Some(p) = observed
                    .classes
                    .get(&name)
                    .and_then(|c| c.published.as_ref())
                {
                    usable.insert(name.clone(), usable_of(p));
                }
                statuses.insert(name, status);
                continue;
            }
            Some(Err(e)) => {
                problems.extend(e.iter().cloned());
                None
            }
            Some(Ok(r)) => Some(r),
        };
        if let (Some(r), Some(req)) = (current, class.spec.compat.as_deref()) {
            match semver::VersionReq::parse(req) {
                Err(e) => problems.push(format!(
                    "spec.compat `{req}` is not a semver requirement ({e}); write one such as `^1.2`"
                )),
                Ok(req) if !req.matches(&r.facts.manifest.version) => problems.push(format!(
                    "version {} of `{}` is outside spec.compat `{req}`; pin a compatible version or widen spec.compat",
                    r.facts.manifest.version, class.spec.source
                )),
                Ok(_) => {}
            }
        }
        if let Some(r) = current {
            status.resolved = r.lock.manifest_digest.clone();
            status.digest = Some(r.lock.digest.clone());
            status.signer = r.signer.clone();
            status.manifest = Some(summary(&r.facts));
        }
        if problems.is_empty()
            && let Some(r) = current
        {
            status.conditions.push(condition(
                "Ready",
                true,
                "Verified",
                format!(
                    "{} {} ({}) passed every check the host runs",
                    r.facts.manifest.name,
                    r.facts.manifest.version,
                    short(&r.lock.digest)
                ),
                generation,
            ));
            usable.insert(name.clone(), usable_of(r));
        } else {
            let fallback = check.and_then(|c| c.published.as_ref());
            let keep = match fallback {
                Some(p) => format!(
                    "; the fleet keeps serving the published {} ({})",
                    p.facts.manifest.version,
                    short(&p.lock.digest)
                ),
                None => String::new(),
            };
            status.conditions.push(condition(
                "Ready",
                false,
                "CheckFailed",
                format!(
                    "{}{keep}",
                    greentic_manifest::clip_middle(&problems.join("; "), 1024)
                ),
                generation,
            ));
            status.problems = problems;
            if let Some(p) = fallback {
                usable.insert(name.clone(), usable_of(p));
            }
        }
        statuses.insert(name, status);
    }
    (usable, statuses)
}

fn usable_of(r: &Resolved) -> Usable<'_> {
    let (section, lock) = pinned(r);
    Usable {
        section,
        lock,
        facts: &r.facts,
    }
}

/// The section and lock entry a revision names a resolved provider by: a registry source
/// pinned to the manifest digest that was checked, so every host fetches exactly it and a tag
/// that moves later changes nothing already published.
pub fn pinned(r: &Resolved) -> (ProviderSection, LockEntry) {
    let mut section = r.section.clone();
    let mut lock = r.lock.clone();
    let is_registry = matches!(
        greentic_trust::sources::SourceRef::parse(std::path::Path::new("."), &section.source),
        greentic_trust::sources::SourceRef::Registry(_)
    );
    if is_registry
        && let Some(digest) = &r.lock.manifest_digest
        && let Ok(reference) = section.source.parse::<greentic_registry::ArtifactRef>()
    {
        section.source = reference.with_digest(digest).to_string();
        lock.source = section.source.clone();
    }
    (section, lock)
}

fn merge_limits(
    into: &mut Limits,
    set: &mut BTreeMap<&'static str, (u64, String)>,
    from: &BindingLimits,
    binding: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut put = |field: &'static str, value: Option<u64>, target: &mut u64| {
        let Some(v) = value else { return };
        match set.get(field) {
            Some((other, by)) if *other != v => problems.push(format!(
                "spec.limits.{field} is {v}, but binding `{by}` of this tenant sets {other}; limits hold for the whole tenant, so set it once or to the same value"
            )),
            Some(_) => {}
            None => {
                set.insert(field, (v, binding.to_string()));
                *target = v;
            }
        }
    };
    put("fuelPerCall", from.fuel_per_call, &mut into.fuel_per_call);
    put("deadlineMs", from.deadline_ms, &mut into.deadline_ms);
    put("memoryBytes", from.memory_bytes, &mut into.memory_bytes);
    put(
        "queueTimeoutMs",
        from.queue_timeout_ms,
        &mut into.queue_timeout_ms,
    );
    put(
        "fuelPerSecond",
        from.fuel_per_second,
        &mut into.fuel_per_second,
    );
    let mut concurrent = u64::from(into.max_concurrent);
    put(
        "maxConcurrent",
        from.max_concurrent.map(u64::from),
        &mut concurrent,
    );
    into.max_concurrent = u32::try_from(concurrent).unwrap_or(u32::MAX);
    problems
}

/// What makes two routes of a tenant the same: team, user, cloud and capability.
type RouteKey = (Option<String>, Option<String>, Option<String>, String);

/// One tenant's outcome.
struct TenantPlan {
    section: Option<TenantSection>,
    routes: Vec<Route>,
    /// Why its resources' changes are held (empty: it is published as specified).
    held: Vec<String>,
}

impl TenantPlan {
    /// The providers its section and routes use.
    fn providers(&self) -> BTreeSet<&str> {
        let mut out: BTreeSet<&str> = self.routes.iter().map(|r| r.provider.as_str()).collect();
        if let Some(s) = &self.section {
            out.extend(s.config.keys().map(String::as_str));
        }
        out
    }
}

/// Composes the revision and every status.
pub fn plan(desired: &Desired, observed: &Observed) -> Plan {
    let (usable, class_statuses) = classes(desired, observed);
    let facts: BTreeMap<String, ProviderFacts> = usable
        .iter()
        .map(|(n, u)| (n.clone(), u.facts.clone()))
        .collect();
    let backend = KeyNames(&observed.secrets);
    let classes_by_name: BTreeMap<&str, &ProviderClass> = desired
        .classes
        .iter()
        .filter_map(|c| Some((c.metadata.name.as_deref()?, c)))
        .collect();

    let mut namespaces: BTreeSet<String> = BTreeSet::new();
    namespaces.extend(
        desired
            .bindings
            .iter()
            .filter_map(|b| b.metadata.namespace.clone()),
    );
    namespaces.extend(
        desired
            .policies
            .iter()
            .filter_map(|p| p.metadata.namespace.clone()),
    );

    let mut binding_statuses = BTreeMap::new();
    let mut policy_statuses = BTreeMap::new();
    let mut tenants: BTreeMap<String, TenantPlan> = BTreeMap::new();
    // Whether namespace `ns` may use the provider of class `class` at all.
    let allowed = |ns: &str, class: &str| {
        classes_by_name.get(class).is_some_and(|c| {
            c.spec.allowed_namespaces.is_empty()
                || c.spec.allowed_namespaces.iter().any(|n| n == ns)
        })
    };

    for ns in &namespaces {
        if observed.namespaces.get(ns) != Some(&NamespacePhase::Active) {
            // Gone or going: no tenant, and no status to write on resources being deleted.
            continue;
        }
        let mut bindings: Vec<&ProviderBinding> = desired
            .bindings
            .iter()
            .filter(|b| b.metadata.namespace.as_deref() == Some(ns))
            .collect();
        bindings.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let mut policies: Vec<&RoutingPolicy> = desired
            .policies
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .collect();
        policies.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

        let mut section = TenantSection::default();
        let mut limits_set = BTreeMap::new();
        let mut by_class: BTreeMap<&str, &str> = BTreeMap::new();
        let mut valid_bindings: BTreeMap<&str, &ProviderBinding> = BTreeMap::new();
        let mut invalid: Vec<String> = Vec::new();
        for b in &bindings {
            let name = b.metadata.name.as_deref().unwrap_or_default();
            let class = b.spec.class.as_str();
            let mut problems = Vec::new();
            match (usable.get(class), classes_by_name.get(class)) {
                (_, None) => problems.push(format!(
                    "ProviderClass `{class}` does not exist; create it or bind an existing class"
                )),
                (_, Some(c))
                    if !c.spec.allowed_namespaces.is_empty()
                        && !c.spec.allowed_namespaces.contains(ns) =>
                {
                    problems.push(format!(
                        "ProviderClass `{class}` may be bound only in namespaces {}; ask the platform team to add this one to spec.allowedNamespaces",
                        c.spec.allowed_namespaces.join(", ")
                    ))
                }
                (None, Some(_)) => problems.push(format!(
                    "ProviderClass `{class}` is not ready (see its status) and the fleet serves no version of it"
                )),
                (Some(u), Some(_)) => {
                    for s in &b.spec.secrets {
                        if !u.section.grants.secrets.contains(s) {
                            problems.push(format!(
                                "spec.secrets names `{s}`, which class `{class}` does not grant (it grants: {})",
                                if u.section.grants.secrets.is_empty() {
                                    "none".to_string()
                                } else {
                                    u.section.grants.secrets.join(", ")
                                }
                            ));
                        } else if !observed.secrets.get(ns).is_some_and(|k| k.contains(s)) {
                            problems.push(format!(
                                "spec.secrets names `{s}`, but Secret `{}` in the hosts' namespace has no key `{s}`; add it (or let External Secrets fill it)",
                                tenant_secret_name(ns)
                            ));
                        }
                    }
                    let single = TenantSection {
                        limits: Limits::default(),
                        secrets: b.spec.secrets.clone(),
                        config: b
                            .spec
                            .config
                            .clone()
                            .map(|c| BTreeMap::from([(class.to_string(), c)]))
                            .unwrap_or_default(),
                    };
                    problems.extend(check_binding(ns, &single, class, u.facts, &backend));
                }
            }
            if let Some(other) = by_class.get(class) {
                problems.push(format!(
                    "binding `{other}` of this tenant already binds class `{class}`; a tenant binds a class once"
                ));
            }
            for team in &b.spec.teams {
                if team.is_empty() || team.len() > 128 {
                    problems.push(format!("spec.teams: `{team}` is not a team name"));
                }
            }
            // Limits count only from bindings that are otherwise valid: a broken binding does
            // not get a valid one blamed for a conflict.
            if problems.is_empty()
                && let Some(l) = &b.spec.limits
            {
                problems.extend(merge_limits(&mut section.limits, &mut limits_set, l, name));
            }
            if problems.is_empty() {
                by_class.insert(class, name);
                valid_bindings.insert(name, b);
                for s in &b.spec.secrets {
                    if !section.secrets.contains(s) {
                        section.secrets.push(s.clone());
                    }
                }
                if let Some(c) = &b.spec.config {
                    section.config.insert(class.to_string(), c.clone());
                }
            } else {
                invalid.push(format!("binding `{name}`"));
            }
            let (conditions, problems) = verdict(
                problems,
                format!("binds class `{class}`; every check passed"),
                b.metadata.generation,
            );
            binding_statuses.insert(
                (ns.clone(), name.to_string()),
                ProviderBindingStatus {
                    observed_generation: b.metadata.generation,
                    conditions,
                    problems,
                },
            );
        }
        section.secrets.sort();

        // Routes: every policy of the namespace.
        let mut routes: Vec<Route> = Vec::new();
        let mut seen: BTreeMap<RouteKey, String> = BTreeMap::new();
        for p in &policies {
            let name = p.metadata.name.as_deref().unwrap_or_default();
            let mut problems = Vec::new();
            let mut own: Vec<(RouteKey, Route)> = Vec::new();
            for (i, r) in p.spec.routes.iter().enumerate() {
                let at = format!("spec.routes[{i}]");
                let Some(b) = bindings
                    .iter()
                    .find(|b| b.metadata.name.as_deref() == Some(r.binding.as_str()))
                else {
                    problems.push(format!(
                        "{at}: no ProviderBinding `{}` in this namespace",
                        r.binding
                    ));
                    continue;
                };
                if !valid_bindings.contains_key(r.binding.as_str()) {
                    problems.push(format!(
                        "{at}: binding `{}` is not ready (see its status)",
                        r.binding
                    ));
                    continue;
                }
                if !b.spec.teams.is_empty()
                    && !r.team.as_ref().is_some_and(|t| b.spec.teams.contains(t))
                {
                    problems.push(format!(
                        "{at}: binding `{}` is scoped to teams {}; the route must name one of them in `team`",
                        r.binding,
                        b.spec.teams.join(", ")
                    ));
                }
                let k = (
                    r.team.clone(),
                    r.user.clone(),
                    r.cloud.clone(),
                    r.capability.clone(),
                );
                if let Some(other) = seen.get(&k) {
                    problems.push(format!(
                        "{at}: policy `{other}` of this tenant already routes capability `{}` for the same team, user and cloud",
                        r.capability
                    ));
                } else if own.iter().any(|(o, _)| *o == k) {
                    problems.push(format!(
                        "{at}: an earlier route of this policy already routes capability `{}` for the same team, user and cloud",
                        r.capability
                    ));
                }
                let route = Route {
                    tenant: ns.clone(),
                    team: r.team.clone(),
                    user: r.user.clone(),
                    cloud: r.cloud.clone(),
                    capability: r.capability.clone(),
                    provider: b.spec.class.clone(),
                    durable: r.durable,
                    delivery_id_header: r.delivery_id_header.clone(),
                    verify: r.verify.clone(),
                };
                // The host's own route checks, numbered as the policy numbers its routes.
                problems.extend(
                    check_routes(std::slice::from_ref(&route), &facts)
                        .into_iter()
                        .map(|p| p.replacen("routes[0]", &at, 1)),
                );
                own.push((k, route));
            }
            if problems.is_empty() {
                for (k, r) in own {
                    seen.insert(k, name.to_string());
                    routes.push(r);
                }
            } else {
                invalid.push(format!("policy `{name}`"));
            }
            let (conditions, problems) = verdict(
                problems,
                format!("{} routes; every check passed", p.spec.routes.len()),
                p.metadata.generation,
            );
            policy_statuses.insert(
                (ns.clone(), name.to_string()),
                RoutingPolicyStatus {
                    observed_generation: p.metadata.generation,
                    conditions,
                    problems,
                },
            );
        }

        let plan = if invalid.is_empty() {
            // The whole tenant, checked as the host checks it, and alone in a bundle as every
            // host will parse it: what is wrong with one tenant never stops another's revision.
            let mut problems = check_tenant(ns, &section, &routes, &facts, &backend);
            let candidate = TenantPlan {
                section: Some(section),
                routes,
                held: Vec::new(),
            };
            if problems.is_empty()
                && let Err(e) = compose_tenants(&desired.base, [(ns, &candidate)], &usable)
            {
                problems = e;
            }
            if problems.is_empty() {
                candidate
            } else {
                tenant_problems(ns, &problems, &mut binding_statuses, &mut policy_statuses);
                let why = vec!["its configuration".into()];
                held_tenant(ns, observed, &facts, &allowed, &backend, why)
            }
        } else {
            held_tenant(ns, observed, &facts, &allowed, &backend, invalid)
        };
        tenants.insert(ns.clone(), plan);
    }

    // Hold everything rather than drop what the fleet serves because it cannot be checked now
    // (a registry down, a cache lost with the leader): a class the published revision uses
    // that still exists but has no usable provider.
    let mut brake = Vec::new();
    if let Some(published) = &observed.published {
        for name in published.bundle.providers.keys() {
            if classes_by_name.contains_key(name.as_str()) && !usable.contains_key(name) {
                brake.push(format!(
                    "class `{name}` serves published tenants but neither its source nor the published version can be checked now (see its status); nothing is published until it can, and the fleet keeps serving its revision"
                ));
            }
        }
    }
    let revision = if brake.is_empty() {
        let all = compose_tenants(
            &desired.base,
            tenants.iter().filter(|(_, t)| t.section.is_some()),
            &usable,
        );
        match all {
            Ok(r) => Ok(r),
            // Something only the whole bundle refuses (tenants that collide with each other):
            // add the tenants one at a time, and one that breaks the bundle falls back to its
            // last published configuration, or is left out — the others are published.
            Err(_) => {
                let names: Vec<String> = tenants
                    .iter()
                    .filter(|(_, t)| t.section.is_some())
                    .map(|(ns, _)| ns.clone())
                    .collect();
                let mut accepted: Vec<String> = Vec::new();
                for ns in names {
                    let fits = |tenants: &BTreeMap<String, TenantPlan>, accepted: &[String]| {
                        compose_tenants(
                            &desired.base,
                            tenants
                                .iter()
                                .filter(|(n, _)| accepted.contains(n) || **n == ns),
                            &usable,
                        )
                    };
                    match fits(&tenants, &accepted) {
                        Ok(_) => accepted.push(ns),
                        Err(problems) => {
                            tenant_problems(
                                &ns,
                                &problems,
                                &mut binding_statuses,
                                &mut policy_statuses,
                            );
                            let held = held_tenant(
                                &ns,
                                observed,
                                &facts,
                                &allowed,
                                &backend,
                                vec!["its configuration, with another tenant's".into()],
                            );
                            tenants.insert(ns.clone(), held);
                            if tenants[&ns].section.is_some() && fits(&tenants, &accepted).is_ok() {
                                accepted.push(ns);
                            } else if let Some(t) = tenants.get_mut(&ns) {
                                t.section = None;
                                t.routes.clear();
                            }
                        }
                    }
                }
                compose_tenants(
                    &desired.base,
                    tenants.iter().filter(|(n, _)| accepted.contains(n)),
                    &usable,
                )
            }
        }
    } else {
        Err(brake)
    };

    // Published conditions.
    let published_condition = |ns: &str, ready: bool, generation: Option<i64>| {
        let t = &tenants[ns];
        match (&revision, ready, t.held.is_empty()) {
            (Ok(_), true, true) => condition(
                "Published",
                true,
                "Published",
                "the fleet's revision serves it as specified".into(),
                generation,
            ),
            (Err(why), _, _) => condition(
                "Published",
                false,
                "Held",
                format!(
                    "no revision is published: {}",
                    greentic_manifest::clip_middle(&why.join("; "), 1024)
                ),
                generation,
            ),
            _ if t.section.is_some() => condition(
                "Published",
                false,
                "Held",
                format!(
                    "the tenant keeps its last published configuration while {} is not ready",
                    t.held.join(", ")
                ),
                generation,
            ),
            _ => condition(
                "Published",
                false,
                "NotServed",
                format!(
                    "the tenant is not served: {} is not ready and it has no published configuration that still passes",
                    t.held.join(", ")
                ),
                generation,
            ),
        }
    };
    for ((ns, _), status) in binding_statuses.iter_mut() {
        let ready = ready_of(&status.conditions);
        status
            .conditions
            .push(published_condition(ns, ready, status.observed_generation));
    }
    for ((ns, _), status) in policy_statuses.iter_mut() {
        let ready = ready_of(&status.conditions);
        status
            .conditions
            .push(published_condition(ns, ready, status.observed_generation));
    }

    Plan {
        revision,
        classes: class_statuses,
        bindings: binding_statuses,
        policies: policy_statuses,
    }
}

/// A resource's `Ready` condition and problems from what its checks found.
fn verdict(
    problems: Vec<String>,
    valid: String,
    generation: Option<i64>,
) -> (Vec<Condition>, Vec<String>) {
    if problems.is_empty() {
        (
            vec![condition("Ready", true, "Valid", valid, generation)],
            problems,
        )
    } else {
        let message = greentic_manifest::clip_middle(&problems.join("; "), 1024);
        (
            vec![condition("Ready", false, "Invalid", message, generation)],
            problems,
        )
    }
}

fn ready_of(conditions: &[Condition]) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Problems of a tenant as a whole (the host's tenant check, or its section failing to parse):
/// every binding and policy of the namespace is not ready, each naming them.
fn tenant_problems(
    ns: &str,
    problems: &[String],
    bindings: &mut BTreeMap<(String, String), ProviderBindingStatus>,
    policies: &mut BTreeMap<(String, String), RoutingPolicyStatus>,
) {
    let message = greentic_manifest::clip_middle(
        &format!("the tenant as a whole: {}", problems.join("; ")),
        1024,
    );
    let mark = |conditions: &mut Vec<Condition>, list: &mut Vec<String>| {
        for c in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
            c.status = "False".into();
            c.reason = "TenantInvalid".into();
            c.message = message.clone();
        }
        list.extend(problems.iter().cloned());
    };
    for (_, s) in bindings.iter_mut().filter(|((n, _), _)| n == ns) {
        mark(&mut s.conditions, &mut s.problems);
    }
    for (_, s) in policies.iter_mut().filter(|((n, _), _)| n == ns) {
        mark(&mut s.conditions, &mut s.problems);
    }
}

/// A tenant whose resources are not all ready: its last published section and routes, if
/// they still pass against the providers of the new revision; otherwise it is not served.
///
/// Routes to, and configuration of, a class the tenant may no longer bind (deleted, or
/// `allowedNamespaces` no longer naming it) are taken out: holding a tenant never keeps access
/// that was withdrawn.
fn held_tenant(
    ns: &str,
    observed: &Observed,
    facts: &BTreeMap<String, ProviderFacts>,
    allowed: &dyn Fn(&str, &str) -> bool,
    backend: &dyn SecretBackend,
    why: Vec<String>,
) -> TenantPlan {
    let previous = observed.published.as_ref().and_then(|p| {
        let mut section = p.bundle.tenants.get(ns)?.clone();
        section.config.retain(|provider, _| allowed(ns, provider));
        let routes: Vec<Route> = p
            .bundle
            .routes
            .iter()
            .filter(|r| r.tenant == ns && allowed(ns, &r.provider))
            .cloned()
            .collect();
        Some((section, routes))
    });
    let Some((section, routes)) = previous else {
        return TenantPlan {
            section: None,
            routes: Vec::new(),
            held: why,
        };
    };
    let all_there = routes.iter().all(|r| facts.contains_key(&r.provider))
        && section.config.keys().all(|p| facts.contains_key(p));
    // Nothing left to serve once withdrawn access is taken out.
    let something = !routes.is_empty() || !section.config.is_empty();
    let passes = all_there
        && something
        && check_routes(&routes, facts).is_empty()
        && check_tenant(ns, &section, &routes, facts, backend).is_empty();
    TenantPlan {
        section: passes.then_some(section),
        routes: if passes { routes } else { Vec::new() },
        held: why,
    }
}

/// A revision of `base` serving `tenants`, with the providers they use.
fn compose_tenants<'a>(
    base: &BundleFile,
    tenants: impl IntoIterator<Item = (&'a String, &'a TenantPlan)>,
    usable: &BTreeMap<String, Usable<'_>>,
) -> Result<Publication, Vec<String>> {
    let mut file = base.clone();
    file.providers.clear();
    file.tenants.clear();
    file.routes.clear();
    file.schedules.clear();
    let mut lock = Lock::default();
    for (ns, t) in tenants {
        let Some(section) = &t.section else { continue };
        for provider in t.providers() {
            if let Some(u) = usable.get(provider) {
                file.providers
                    .insert(provider.to_string(), u.section.clone());
                lock.providers.insert(provider.to_string(), u.lock.clone());
            }
        }
        file.tenants.insert(ns.clone(), section.clone());
        file.routes.extend(t.routes.iter().cloned());
    }
    compose(&file, lock)
}

/// The revision's text, checked as every host will parse it.
fn compose(file: &BundleFile, lock: Lock) -> Result<Publication, Vec<String>> {
    let text = toml::to_string(file)
        .map_err(|e| vec![format!("the configuration cannot be written as TOML ({e}); a value such as null has no TOML form")])?;
    let text = format!(
        "# Published by greentic-operator from the cluster's ProviderClass, ProviderBinding and\n# RoutingPolicy resources.\n{text}"
    );
    Bundle::parse("the composed revision", &text).map_err(|e| match e {
        greentic_bundle::BundleError::Invalid { message, .. } => vec![message],
        other => vec![other.to_string()],
    })?;
    let digest = greentic_fleet::revisions::published_digest(&text, &lock);
    Ok(Publication { text, lock, digest })
}
