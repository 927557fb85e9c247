//! One revision from the tenants: the base bundle with the providers they use, checked as every
//! host will parse it.

use std::collections::BTreeMap;

use greentic_bundle::{Bundle, BundleFile, Lock};

use super::Publication;
use super::classes::Usable;
use super::planner::TenantPlan;

/// A revision of `base` serving `tenants`, with the providers they use.
pub(super) fn compose_tenants<'a>(
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
