//! Checks of a bundle against the providers it names, once their manifests are known: routes
//! name operations the provider offers, each tenant's configuration of a provider validates
//! against its schema, and the secrets it requires are granted and bound. The host runs them
//! when it loads a bundle; a control plane that resolved the providers (the Kubernetes
//! operator) runs the same ones from [`ProviderFacts`], without the compiled components.

use std::collections::{BTreeMap, BTreeSet};

use greentic_capabilities::secrets::{SecretBackend, present};
use greentic_manifest::ProviderManifest;

use crate::bundle::Bundle;
use crate::file::{Route, TenantSection};

/// What the tenant and route checks need to know of a provider that loaded: its manifest,
/// the secrets it is granted, and its domain. A control plane that resolved a provider (the
/// Kubernetes operator) checks its tenants with these, without keeping the compiled component.
#[derive(Debug, Clone)]
pub struct ProviderFacts {
    /// The embedded manifest.
    pub manifest: ProviderManifest,
    /// Secrets it declares and is granted.
    pub granted_secrets: BTreeSet<String>,
    /// Its domain's name (`messaging`, `webhook`, `timer`).
    pub domain: &'static str,
    /// Whether it is entered over HTTP (a webhook provider): only those take durable routes.
    pub http: bool,
}

/// Problems of `routes` against the providers they name: a capability the provider does not
/// offer, or `durable` on a provider that is not entered over HTTP. Routes are numbered by
/// their index in `routes`.
pub fn check_routes(routes: &[Route], providers: &BTreeMap<String, ProviderFacts>) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let Some(p) = providers.get(&route.provider) else {
            continue;
        };
        if route.verify.is_some() && !p.http {
            problems.push(format!(
                "routes[{i}]: `verify` checks webhook deliveries, but provider `{}` is a {} provider; remove it",
                route.provider, p.domain
            ));
        }
        if route.durable && !p.http {
            problems.push(format!(
                "routes[{i}]: `durable = true` is for webhook deliveries, but provider `{}` is a {} provider; remove it",
                route.provider, p.domain
            ));
        }
        if !p.manifest.capabilities.contains(&route.capability) {
            problems.push(format!(
                "routes[{i}]: provider `{}` does not offer capability `{}` (it offers: {})",
                route.provider,
                route.capability,
                p.manifest.capabilities.join(", ")
            ));
        }
    }
    problems
}

/// Problems of tenant `tenant_id` with every provider a route in `routes` reaches for it: its
/// configuration of each validates against the provider's `config_schema`, and every secret
/// the provider requires is granted, listed for the tenant and present in `backend`.
pub fn check_tenant(
    tenant_id: &str,
    tenant: &TenantSection,
    routes: &[Route],
    providers: &BTreeMap<String, ProviderFacts>,
    backend: &dyn SecretBackend,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, provider) in providers {
        if routes_reach(routes, tenant_id, name) {
            problems.extend(check_binding(tenant_id, tenant, name, provider, backend));
        }
    }
    // A route's signature check reads the tenant's key: it must be bound.
    let mut keys = BTreeSet::new();
    for route in routes
        .iter()
        .filter(|r| r.tenant == tenant_id || r.tenant == "*")
    {
        let Some(scheme) = &route.verify else {
            continue;
        };
        if !keys.insert(scheme.secret.as_str()) {
            continue;
        }
        let listed = tenant.secrets.contains(&scheme.secret);
        let present = present(backend, tenant_id, &scheme.secret);
        if !listed || !present {
            problems.push(format!(
                "tenant `{tenant_id}`: the signature check of its route to `{}` needs secret `{}`, which is not bound ({}{}); add it to [tenants.{tenant_id}].secrets and provide {}",
                route.provider,
                scheme.secret,
                if listed { "listed" } else { "not listed in the tenant's secrets" },
                if present { "" } else { ", no value found" },
                backend.locate(tenant_id, &scheme.secret)
            ));
        }
    }
    problems
}

fn routes_reach(routes: &[Route], tenant_id: &str, name: &str) -> bool {
    routes
        .iter()
        .any(|r| r.provider == name && (r.tenant == tenant_id || r.tenant == "*"))
}

/// Whether a route reaches provider `name` for tenant `tenant_id`.
pub fn routed(bundle: &Bundle, tenant_id: &str, name: &str) -> bool {
    routes_reach(&bundle.file.routes, tenant_id, name)
}

/// Whether `provider` can serve `tenant_id`: the tenant's configuration of it validates against
/// its manifest's `config_schema`, and every secret it requires is granted and bound.
pub fn check_binding(
    tenant_id: &str,
    tenant: &TenantSection,
    name: &str,
    provider: &ProviderFacts,
    backend: &dyn SecretBackend,
) -> Vec<String> {
    let mut problems = Vec::new();
    let config = tenant
        .config
        .get(name)
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    for p in provider.manifest.check_config(&config) {
        problems.push(format!(
            "tenant `{tenant_id}`, provider `{name}`: config{} {}; fix [tenants.{tenant_id}.config.{name}]",
            if p.field.is_empty() { String::new() } else { format!(" field `{}`", p.field) },
            p.problem
        ));
    }
    for secret in provider.manifest.required_secrets() {
        let listed = tenant.secrets.iter().any(|s| s == secret);
        let granted = provider.granted_secrets.contains(secret);
        let present = present(backend, tenant_id, secret);
        if !granted {
            problems.push(format!(
                "provider `{name}`: requires secret `{secret}`, which [providers.{name}].grants.secrets does not grant"
            ));
        } else if !listed || !present {
            problems.push(format!(
                "tenant `{tenant_id}`, provider `{name}`: required secret `{secret}` is not bound ({}{}); add it to [tenants.{tenant_id}].secrets and provide {}",
                if listed { "listed" } else { "not listed in the tenant's secrets" },
                if present { "" } else { ", no value found" },
                backend.locate(tenant_id, secret)
            ));
        }
    }
    problems
}
