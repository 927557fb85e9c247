//! A pass as a whole: the classes, then each namespace's tenant, then one revision of them all,
//! then the `Published` condition of every binding and policy.

use std::collections::{BTreeMap, BTreeSet};

use super::classes::classes;
use super::compose::compose_tenants;
use super::planner::{Planner, TenantPlan};
use super::tenant::tenant_problems;
use super::{Desired, KeyNames, NamespacePhase, Observed, Plan, Publication, condition, ready_of};
use crate::crd::{ProviderBindingStatus, RoutingPolicyStatus};

impl Planner<'_> {
    /// The revision serving `tenants`: all of them, or — when only the whole bundle refuses
    /// them — as many as fit, one at a time, a tenant that does not falling back to its last
    /// published configuration or left out. None while a class the fleet serves cannot be
    /// checked.
    fn publication(
        &self,
        tenants: &mut BTreeMap<String, TenantPlan>,
        bindings: &mut BTreeMap<(String, String), ProviderBindingStatus>,
        policies: &mut BTreeMap<(String, String), RoutingPolicyStatus>,
    ) -> Result<Publication, Vec<String>> {
        // Hold everything rather than drop what the fleet serves because it cannot be checked now
        // (a registry down, a cache lost with the leader): a class the published revision uses
        // that still exists but has no usable provider.
        let mut brake = Vec::new();
        if let Some(published) = &self.observed.published {
            for name in published.bundle.providers.keys() {
                if self.classes.contains_key(name.as_str()) && !self.usable.contains_key(name) {
                    brake.push(format!(
                        "class `{name}` serves published tenants but neither its source nor the published version can be checked now (see its status); nothing is published until it can, and the fleet keeps serving its revision"
                    ));
                }
            }
        }
        if brake.is_empty() {
            let all = compose_tenants(
                &self.desired.base,
                tenants.iter().filter(|(_, t)| t.section.is_some()),
                &self.usable,
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
                                &self.desired.base,
                                tenants
                                    .iter()
                                    .filter(|(n, _)| accepted.contains(n) || **n == ns),
                                &self.usable,
                            )
                        };
                        match fits(tenants, &accepted) {
                            Ok(_) => accepted.push(ns),
                            Err(problems) => {
                                tenant_problems(&ns, &problems, bindings, policies);
                                let held = self.held(
                                    &ns,
                                    vec!["its configuration, with another tenant's".into()],
                                );
                                tenants.insert(ns.clone(), held);
                                if tenants[&ns].section.is_some()
                                    && fits(tenants, &accepted).is_ok()
                                {
                                    accepted.push(ns);
                                } else if let Some(t) = tenants.get_mut(&ns) {
                                    t.section = None;
                                    t.routes.clear();
                                }
                            }
                        }
                    }
                    compose_tenants(
                        &self.desired.base,
                        tenants.iter().filter(|(n, _)| accepted.contains(n)),
                        &self.usable,
                    )
                }
            }
        } else {
            Err(brake)
        }
    }
}

/// Composes the revision and every status.
pub fn plan(desired: &Desired, observed: &Observed) -> Plan {
    let (usable, class_statuses) = classes(desired, observed);
    let planner = Planner {
        desired,
        observed,
        facts: usable
            .iter()
            .map(|(n, u)| (n.clone(), u.facts.clone()))
            .collect(),
        usable,
        backend: KeyNames(&observed.secrets),
        classes: desired
            .classes
            .iter()
            .filter_map(|c| Some((c.metadata.name.as_deref()?, c)))
            .collect(),
    };

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
    for ns in &namespaces {
        if observed.namespaces.get(ns) != Some(&NamespacePhase::Active) {
            // Gone or going: no tenant, and no status to write on resources being deleted.
            continue;
        }
        let tenant = planner.tenant(ns, &mut binding_statuses, &mut policy_statuses);
        tenants.insert(ns.clone(), tenant);
    }
    let revision = planner.publication(&mut tenants, &mut binding_statuses, &mut policy_statuses);

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
