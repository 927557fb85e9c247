//! One namespace's tenant: its bindings make the tenant section (each checked as the host checks
//! a binding), its policies the routes, and the whole is checked as the host checks a tenant. A
//! tenant with a resource that is not ready keeps what was last published for it, if that still
//! passes.

use std::collections::BTreeMap;

use greentic_bundle::{Limits, Route, TenantSection};
use greentic_bundle::{check_binding, check_routes, check_tenant};

use super::compose::compose_tenants;
use super::planner::{Planner, TenantPlan};
use super::{tenant_secret_name, verdict};
use crate::crd::{
    BindingLimits, Condition, ProviderBinding, ProviderBindingStatus, RoutingPolicy,
    RoutingPolicyStatus,
};

/// What makes two routes of a tenant the same: team, user, cloud and capability.
type RouteKey = (Option<String>, Option<String>, Option<String>, String);

/// Problems of a tenant as a whole (the host's tenant check, or its section failing to parse):
/// every binding and policy of the namespace is not ready, each naming them.
pub(super) fn tenant_problems(
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

/// What a namespace's bindings make of its tenant.
struct Bound<'a> {
    section: TenantSection,
    /// The bindings that passed, by name.
    valid: BTreeMap<&'a str, &'a ProviderBinding>,
    /// The resources that did not (`binding `x``, `policy `y``).
    invalid: Vec<String>,
}

impl<'a> Planner<'a> {
    /// The tenant of active namespace `ns`: its bindings and policies checked (their statuses
    /// written to `bindings` and `policies`), then the tenant as a whole. Held when any of its
    /// resources is not ready.
    pub(super) fn tenant(
        &self,
        ns: &String,
        bindings: &mut BTreeMap<(String, String), ProviderBindingStatus>,
        policies: &mut BTreeMap<(String, String), RoutingPolicyStatus>,
    ) -> TenantPlan {
        let mut own_bindings: Vec<&ProviderBinding> = self
            .desired
            .bindings
            .iter()
            .filter(|b| b.metadata.namespace.as_deref() == Some(ns))
            .collect();
        own_bindings.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let mut own_policies: Vec<&RoutingPolicy> = self
            .desired
            .policies
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .collect();
        own_policies.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

        let Bound {
            section,
            valid,
            mut invalid,
        } = self.bindings(ns, &own_bindings, bindings);
        let routes = self.policies(
            ns,
            &own_bindings,
            &valid,
            &own_policies,
            &mut invalid,
            policies,
        );
        if !invalid.is_empty() {
            return self.held(ns, invalid);
        }
        // The whole tenant, checked as the host checks it, and alone in a bundle as every
        // host will parse it: what is wrong with one tenant never stops another's revision.
        let mut problems = check_tenant(ns, &section, &routes, &self.facts, &self.backend);
        let candidate = TenantPlan {
            section: Some(section),
            routes,
            held: Vec::new(),
        };
        if problems.is_empty()
            && let Err(e) = compose_tenants(&self.desired.base, [(ns, &candidate)], &self.usable)
        {
            problems = e;
        }
        if problems.is_empty() {
            candidate
        } else {
            tenant_problems(ns, &problems, bindings, policies);
            self.held(ns, vec!["its configuration".into()])
        }
    }

    /// The tenant section `bindings` of namespace `ns` make, each binding checked (its status
    /// written to `statuses`).
    fn bindings(
        &self,
        ns: &String,
        bindings: &[&'a ProviderBinding],
        statuses: &mut BTreeMap<(String, String), ProviderBindingStatus>,
    ) -> Bound<'a> {
        let mut section = TenantSection::default();
        let mut limits_set = BTreeMap::new();
        let mut by_class: BTreeMap<&str, &str> = BTreeMap::new();
        let mut valid_bindings: BTreeMap<&str, &ProviderBinding> = BTreeMap::new();
        let mut invalid: Vec<String> = Vec::new();
        for b in bindings {
            let name = b.metadata.name.as_deref().unwrap_or_default();
            let class = b.spec.class.as_str();
            let mut problems = Vec::new();
            match (self.usable.get(class), self.classes.get(class)) {
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
                    } else if !self.observed.secrets.get(ns).is_some_and(|k| k.contains(s)) {
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
                    caller_auth: Default::default(),
                };
                problems.extend(check_binding(ns, &single, class, u.facts, &self.backend));
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
            statuses.insert(
                (ns.clone(), name.to_string()),
                ProviderBindingStatus {
                    observed_generation: b.metadata.generation,
                    conditions,
                    problems,
                },
            );
        }
        section.secrets.sort();

        Bound {
            section,
            valid: valid_bindings,
            invalid,
        }
    }

    /// The routes `policies` of namespace `ns` make, each policy checked against the
    /// namespace's `bindings` (`valid_bindings` the ready ones; its status written to `statuses`, and
    /// to `invalid` when it is not ready).
    fn policies(
        &self,
        ns: &str,
        bindings: &[&ProviderBinding],
        valid_bindings: &BTreeMap<&str, &ProviderBinding>,
        policies: &[&RoutingPolicy],
        invalid: &mut Vec<String>,
        statuses: &mut BTreeMap<(String, String), RoutingPolicyStatus>,
    ) -> Vec<Route> {
        // Routes: every policy of the namespace.
        let mut routes: Vec<Route> = Vec::new();
        let mut seen: BTreeMap<RouteKey, String> = BTreeMap::new();
        for p in policies {
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
                    tenant: ns.to_string(),
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
                    check_routes(std::slice::from_ref(&route), &self.facts)
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
            statuses.insert(
                (ns.to_string(), name.to_string()),
                RoutingPolicyStatus {
                    observed_generation: p.metadata.generation,
                    conditions,
                    problems,
                },
            );
        }

        routes
    }

    /// A tenant whose resources are not all ready: its last published section and routes, if
    /// they still pass against the providers of the new revision; otherwise it is not served.
    ///
    /// Routes to, and configuration of, a class the tenant may no longer bind (deleted, or
    /// `allowedNamespaces` no longer naming it) are taken out: holding a tenant never keeps access
    /// that was withdrawn.
    pub(super) fn held(&self, ns: &str, why: Vec<String>) -> TenantPlan {
        let (observed, facts, backend) = (self.observed, &self.facts, &self.backend);
        let allowed = |ns: &str, class: &str| self.allowed(ns, class);
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
