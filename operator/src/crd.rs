//! The custom resources, as Rust types: the CRDs under `deploy/crds/` are generated from these
//! (`greentic-operator crd`), and a test fails when the committed YAML drifts from them.
//!
//! - [`ProviderClass`] (cluster-scoped): a provider the platform team offers — its OCI source
//!   (or, for a provider outside the hosts, its endpoint and identity), the keys that may sign
//!   it, the most it may be granted, the versions accepted.
//! - [`ProviderBinding`] (namespaced; the namespace is the tenant): a tenant's use of a class —
//!   its configuration, the names of its secrets, its limits, the teams that may reach it.
//! - [`RoutingPolicy`] (namespaced): the tenant's routes, from capability (and team, user,
//!   cloud) to one of its bindings.

use std::collections::BTreeMap;

use greentic_bundle::Grants;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every kind here.
pub const GROUP: &str = "greentic.ai";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";

/// A provider the cluster offers: where it comes from and what it may be given.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "greentic.ai",
    version = "v1alpha1",
    kind = "ProviderClass",
    plural = "providerclasses",
    shortname = "pclass",
    status = "ProviderClassStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.manifest.version"}"#,
    printcolumn = r#"{"name":"Digest","type":"string","priority":1,"jsonPath":".status.digest"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ProviderClassSpec {
    /// What form the provider takes: `wasm` (the default; a component at `source`), `remote`
    /// (outside the hosts, at `endpoint`: a sidecar container in the host pods or a shared
    /// gateway) or `native` (compiled into the hosts' image; `source` is `native:NAME`).
    #[serde(default, skip_serializing_if = "ClassForm::is_wasm")]
    pub form: ClassForm,
    /// The provider's OCI artifact: `HOST/REPO:TAG` or `HOST/REPO@sha256:<hex>`. A tag is
    /// resolved to a digest once per check; the revision the operator publishes pins that
    /// digest, so every host runs the same bytes. `native:NAME` for a native provider; none
    /// for a remote one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 512))]
    pub source: String,
    /// `remote`: where the hosts reach it, `grpcs://HOST:PORT` (a gateway's Service), or
    /// `grpc://127.0.0.1:PORT` with `allowPlaintext` (a sidecar container in the host pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 512))]
    pub endpoint: Option<String>,
    /// `remote`: the identity its certificate must carry, a URI SAN (`spiffe://…`) or a DNS
    /// name. Its manifest's digest is pinned in the revision's lock as a component's is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub identity: Option<String>,
    /// `remote`: the CA bundle its certificate is issued by and the hosts' client pair, as
    /// paths inside the host pods (mounted from a Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<greentic_tls::ClientFiles>,
    /// `remote`: accept `grpc://` (plaintext), to a sidecar on the pod's loopback only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_plaintext: bool,
    /// The digest the artifact must have (`sha256:<hex>` of the component); another one is
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: Option<String>,
    /// Names of the keys (in the hosts' bundle, `[trust.keys]`) that may sign it. Empty: any
    /// trusted key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_keys: Vec<String>,
    /// Signed identities (`registry/repository`) accepted besides the source's own, for
    /// mirrors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// The most this provider may be granted. Every tenant's calls get these grants; a binding
    /// cannot widen them.
    #[serde(default)]
    #[schemars(schema_with = "crd_grants")]
    pub grants: Grants,
    /// Attestations it must carry (`conformance`, `sbom`), signed by a trusted key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require: Vec<Attestation>,
    /// The provider versions accepted (a semver requirement on the version in its manifest,
    /// e.g. `^1.2`). An artifact outside it (a tag moved to a new major) is refused and the
    /// version already published keeps serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compat: Option<String>,
    /// Namespaces (tenants) that may bind it. Empty: every namespace. A class whose grants
    /// reach one tenant's systems should name that tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_namespaces: Vec<String>,
    /// Run every call in a fresh instance even if the provider's manifest lets an instance
    /// serve later calls of the same tenant (`"instances": "per-tenant"`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh_instances: bool,
}

/// The form of a class's provider (the bundle's `form`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClassForm {
    /// A WebAssembly component from the registry.
    #[default]
    Wasm,
    /// A provider outside the hosts, over gRPC.
    Remote,
    /// A Rust crate compiled into the hosts' image.
    Native,
}

impl ClassForm {
    /// Whether it is the default form.
    pub fn is_wasm(&self) -> bool {
        *self == ClassForm::Wasm
    }
}

/// Attestation kinds a class can require.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Attestation {
    /// A passing conformance report for exactly this component.
    Conformance,
    /// A software bill of materials.
    Sbom,
}

/// The schema of the host's [`Grants`] as a resource spells it: camelCase keys (which
/// `Grants` accepts besides its own snake_case ones), and unknown keys left for the API server
/// to prune, as every other object of these resources.
fn crd_grants(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = <Grants as JsonSchema>::json_schema(generator);
    if let Some(object) = schema.as_object_mut() {
        object.remove("additionalProperties");
        if let Some(serde_json::Value::Object(properties)) = object.get_mut("properties") {
            *properties = std::mem::take(properties)
                .into_iter()
                .map(|(key, value)| (camel_case(&key), value))
                .collect();
        }
    }
    schema
}

/// `outbound_hosts` → `outboundHosts`.
fn camel_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// What the operator found when it checked a class.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderClassStatus {
    /// The generation these findings are about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The OCI manifest digest the source resolved to (what hosts fetch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
    /// `sha256:<hex>` of the component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The id of the key whose signature was verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// What the provider says of itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<ManifestSummary>,
    /// `Ready`: it passed every check the host runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Every problem found, as `greentic-host check` words it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// The parts of a provider's manifest a tenant needs to bind it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestSummary {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its domain (`messaging`, `webhook`, `timer`).
    pub domain: String,
    /// The capabilities routes can name.
    pub capabilities: Vec<String>,
    /// The secrets it requires.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_secrets: Vec<String>,
}

/// A tenant's use of a provider class. The namespace is the tenant.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "greentic.ai",
    version = "v1alpha1",
    kind = "ProviderBinding",
    plural = "providerbindings",
    shortname = "pbind",
    namespaced,
    status = "ProviderBindingStatus",
    printcolumn = r#"{"name":"Class","type":"string","jsonPath":".spec.class"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Published","type":"string","jsonPath":".status.conditions[?(@.type==\"Published\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ProviderBindingSpec {
    /// The `ProviderClass` bound.
    #[schemars(length(min = 1, max = 63))]
    pub class: String,
    /// The tenant's configuration of the provider, checked against the provider's
    /// `config_schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_object")]
    pub config: Option<serde_json::Value>,
    /// Names of the secrets this tenant binds: keys of the Secret `greentic-tenant-<namespace>`
    /// in the hosts' namespace. Each must be one the class grants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// The tenant's limits. They hold for the whole tenant: bindings of one namespace that set
    /// the same limit must agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<BindingLimits>,
    /// Teams (service accounts) whose calls may reach this binding. Empty: every team of the
    /// tenant. When set, every route to it must name one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<String>,
}

fn free_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A tenant's limits (unset: the host's default). The schema caps each at what one tenant may
/// ask of a shared host; a tenant's CPU weight against other tenants is not among them (it is
/// the platform team's to set, not the tenant's).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BindingLimits {
    /// Fuel (roughly, wasm instructions) one call may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000_000_000u64))]
    pub fuel_per_call: Option<u64>,
    /// Wall-clock deadline of one call, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300_000))]
    pub deadline_ms: Option<u64>,
    /// Bytes of linear memory one instance may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 65536, max = 4_294_967_296u64))]
    pub memory_bytes: Option<u64>,
    /// Calls running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub max_concurrent: Option<u32>,
    /// How long an excess call waits for a slot before a 429, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 60_000))]
    pub queue_timeout_ms: Option<u64>,
    /// Fuel the tenant may use per second across all its calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000_000u64))]
    pub fuel_per_second: Option<u64>,
}

/// What the operator found when it checked a binding.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderBindingStatus {
    /// The generation these findings are about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (it passes every check) and `Published` (the fleet's revision serves it as
    /// specified).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Every problem found, as `greentic-host check` words it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// A tenant's routes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "greentic.ai",
    version = "v1alpha1",
    kind = "RoutingPolicy",
    plural = "routingpolicies",
    shortname = "groute",
    namespaced,
    status = "RoutingPolicyStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Published","type":"string","jsonPath":".status.conditions[?(@.type==\"Published\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RoutingPolicySpec {
    /// The routes; the most specific matching one wins.
    #[schemars(length(min = 1, max = 256))]
    pub routes: Vec<PolicyRoute>,
}

/// One route of a tenant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRoute {
    /// The capability (e.g. `send`).
    #[schemars(length(min = 1, max = 64))]
    pub capability: String,
    /// The `ProviderBinding` (in this namespace) the route reaches.
    #[schemars(length(min = 1, max = 253))]
    pub binding: String,
    /// Only calls of this team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Only calls of this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Only calls from this cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<String>,
    /// Webhook deliveries are queued in the fleet and acknowledged once handled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub durable: bool,
    /// The header carrying a delivery's id (durable routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id_header: Option<String>,
    /// The hosts check each delivery's signature themselves — an HMAC over the body with the
    /// binding's secret `verify.secret` — and refuse an unsigned or forged one before it is
    /// queued or reaches the provider (webhook bindings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<greentic_manifest::SignatureScheme>,
}

/// What the operator found when it checked a policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutingPolicyStatus {
    /// The generation these findings are about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and `Published`, as for bindings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Every problem found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// A status condition, as Kubernetes conventions shape it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready` or `Published`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason.
    pub reason: String,
    /// What is wrong and what to do, for people.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The generation the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Every CRD, in the order `deploy/crds/` holds them.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![
        ProviderClass::crd(),
        ProviderBinding::crd(),
        RoutingPolicy::crd(),
    ]
}

/// The YAML of every CRD, one document each, as committed under `deploy/crds/`.
pub fn crd_yaml() -> BTreeMap<&'static str, String> {
    let names = [
        "providerclasses.yaml",
        "providerbindings.yaml",
        "routingpolicies.yaml",
    ];
    names
        .into_iter()
        .zip(crds())
        .map(|(file, crd)| {
            let yaml = serde_yaml::to_string(&crd).expect("a CRD always serialises");
            (
                file,
                format!(
                    "# Generated from operator/src/crd.rs by `greentic-operator crd`; do not edit.\n{yaml}"
                ),
            )
        })
        .collect()
}
