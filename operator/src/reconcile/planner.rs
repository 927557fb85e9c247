//! What planning every namespace shares: the resources, what was observed, and the providers
//! the classes' checks left usable.

use std::collections::{BTreeMap, BTreeSet};

use greentic_bundle::{ProviderFacts, Route, TenantSection};

use super::classes::Usable;
use super::{Desired, KeyNames, Observed};
use crate::crd::ProviderClass;

/// What planning every namespace shares: the resources, what was observed, and the providers
/// the classes' checks left usable.
pub(super) struct Planner<'a> {
    pub(super) desired: &'a Desired,
    pub(super) observed: &'a Observed,
    pub(super) usable: BTreeMap<String, Usable<'a>>,
    pub(super) facts: BTreeMap<String, ProviderFacts>,
    pub(super) backend: KeyNames<'a>,
    /// The classes, by name.
    pub(super) classes: BTreeMap<&'a str, &'a ProviderClass>,
}

impl Planner<'_> {
    /// Whether namespace `ns` may use the provider of class `class` at all.
    pub(super) fn allowed(&self, ns: &str, class: &str) -> bool {
        self.classes.get(class).is_some_and(|c| {
            c.spec.allowed_namespaces.is_empty()
                || c.spec.allowed_namespaces.iter().any(|n| n == ns)
        })
    }
}

/// One tenant's outcome.
pub(super) struct TenantPlan {
    pub(super) section: Option<TenantSection>,
    pub(super) routes: Vec<Route>,
    /// Why its resources' changes are held (empty: it is published as specified).
    pub(super) held: Vec<String>,
}

impl TenantPlan {
    /// The providers its section and routes use.
    pub(super) fn providers(&self) -> BTreeSet<&str> {
        let mut out: BTreeSet<&str> = self.routes.iter().map(|r| r.provider.as_str()).collect();
        if let Some(s) = &self.section {
            out.extend(s.config.keys().map(String::as_str));
        }
        out
    }
}
