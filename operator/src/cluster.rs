//! The Kubernetes side: reading the resources and what the operator observes of the cluster,
//! and writing statuses (server-side apply of the `status` subresource, one field manager).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::crd::{ProviderBinding, ProviderClass, RoutingPolicy};
use crate::reconcile::{Action, NamespacePhase, tenant_secret_name};

/// The field manager of every status the operator writes.
pub const MANAGER: &str = "greentic-operator";

/// The cluster, through the API server.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    hosts_namespace: String,
}

/// The resources, as listed.
pub struct Listed {
    /// Every class.
    pub classes: Vec<ProviderClass>,
    /// Every binding.
    pub bindings: Vec<ProviderBinding>,
    /// Every policy.
    pub policies: Vec<RoutingPolicy>,
}

impl Cluster {
    /// The cluster `client` reaches; tenants' Secrets live in `hosts_namespace`.
    pub fn new(client: kube::Client, hosts_namespace: &str) -> Cluster {
        Cluster {
            client,
            hosts_namespace: hosts_namespace.into(),
        }
    }

    /// The client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Every class, binding and policy.
    pub async fn resources(&self) -> Result<Listed, kube::Error> {
        let lp = ListParams::default();
        Ok(Listed {
            classes: Api::<ProviderClass>::all(self.client.clone())
                .list(&lp)
                .await?
                .items,
            bindings: Api::<ProviderBinding>::all(self.client.clone())
                .list(&lp)
                .await?
                .items,
            policies: Api::<RoutingPolicy>::all(self.client.clone())
                .list(&lp)
                .await?
                .items,
        })
    }

    /// Every namespace and whether it is being deleted.
    pub async fn namespaces(&self) -> Result<BTreeMap<String, NamespacePhase>, kube::Error> {
        let list = Api::<Namespace>::all(self.client.clone())
            .list(&ListParams::default())
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|ns| {
                let terminating = ns.metadata.deletion_timestamp.is_some()
                    || ns
                        .status
                        .as_ref()
                        .and_then(|s| s.phase.as_deref())
                        .is_some_and(|p| p == "Terminating");
                let phase = if terminating {
                    NamespacePhase::Terminating
                } else {
                    NamespacePhase::Active
                };
                Some((ns.metadata.name?, phase))
            })
            .collect())
    }

    /// The key names of each tenant's Secret (`greentic-tenant-<tenant>` in the hosts'
    /// namespace). The API returns values too; they are dropped here, never kept or logged.
    pub async fn secret_keys(&self) -> Result<BTreeMap<String, BTreeSet<String>>, kube::Error> {
        let list = Api::<Secret>::namespaced(self.client.clone(), &self.hosts_namespace)
            .list(&ListParams::default())
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|s| {
                let name = s.metadata.name?;
                let tenant = name.strip_prefix(&tenant_secret_name(""))?.to_string();
                let keys = s
                    .data
                    .map(|d| d.into_keys().collect::<BTreeSet<_>>())
                    .unwrap_or_default();
                Some((tenant, keys))
            })
            .collect())
    }

    /// Writes a status action (publishing is not the cluster's).
    pub async fn apply(&self, action: &Action) -> Result<(), kube::Error> {
        let client = || self.client.clone();
        match action {
            Action::Publish(_) | Action::Hold(_) => Ok(()),
            Action::ClassStatus { name, status } => {
                apply_status(Api::<ProviderClass>::all(client()), name, status).await
            }
            Action::BindingStatus {
                namespace,
                name,
                status,
            } => {
                apply_status(
                    Api::<ProviderBinding>::namespaced(client(), namespace),
                    name,
                    status,
                )
                .await
            }
            Action::PolicyStatus {
                namespace,
                name,
                status,
            } => {
                apply_status(
                    Api::<RoutingPolicy>::namespaced(client(), namespace),
                    name,
                    status,
                )
                .await
            }
        }
    }
}

/// Server-side applies `status` to the status subresource of `name`, as [`MANAGER`].
async fn apply_status<K>(
    api: Api<K>,
    name: &str,
    status: &impl serde::Serialize,
) -> Result<(), kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map(|_| ())
}
