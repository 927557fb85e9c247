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
//! One pass, by job: the classes are checked ([`classes`]), each namespace's bindings and
//! policies become its tenant ([`tenant`]), the tenants are composed into one revision
//! ([`compose`]), and [`plan`] runs them in that order and writes the `Published` conditions.
//!
//! The checks are the host's own ([`greentic_bundle::check_binding`],
//! [`greentic_bundle::check_routes`], [`greentic_bundle::check_tenant`],
//! [`Bundle::parse`]), so the operator and the hosts cannot disagree on what is valid.

mod classes;
mod compose;
mod plan;
mod planner;
mod tenant;

pub use classes::{class_section, pinned};
pub use plan::plan;

use std::collections::{BTreeMap, BTreeSet};

use greentic_bundle::{BundleFile, Lock, LockEntry, ProviderFacts, ProviderSection};
use greentic_capabilities::secrets::SecretBackend;
use zeroize::Zeroizing;

use crate::crd::{
    Condition, ProviderBinding, ProviderBindingStatus, ProviderClass, ProviderClassStatus,
    RoutingPolicy, RoutingPolicyStatus,
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

pub(super) fn condition(
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

/// A resource's `Ready` condition and problems from what its checks found.
pub(super) fn verdict(
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

pub(super) fn ready_of(conditions: &[Condition]) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}
