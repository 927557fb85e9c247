//! `greentic.toml` as types: the file, its providers, tenants, limits and routes. The
//! capabilities' sections (`[secrets]`, `[state]`, …) are declared by the capabilities
//! themselves ([`greentic_capabilities::with_sections!`]).

use std::collections::BTreeMap;

use greentic_capabilities::{Grants, SectionRefs};
use serde::{Deserialize, Serialize};

use crate::attestation::Kind;
use crate::auth::AuthSection;
use crate::cluster::ClusterSection;
use crate::host::HostSection;
use crate::schedule::Schedule;
use crate::trust::{KeyRole, TrustKey, TrustSection};

macro_rules! bundle_file {
    ($($(#[$doc:meta])* $section:ident: $ty:ty => $capability:ty,)*) => {
        /// `greentic.toml`.
        #[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct BundleFile {
            /// Server settings.
            #[serde(default)]
            pub host: HostSection,
            /// Caller authentication.
            pub auth: AuthSection,
            $(
                $(#[$doc])*
                #[serde(default)]
                pub $section: $ty,
            )*
            /// Public keys providers may be signed with.
            #[serde(default)]
            pub trust: TrustSection,
            /// `[audit]`: the audit log (off when absent).
            #[serde(default)]
            pub audit: Option<greentic_audit::AuditSection>,
            /// Providers by name (a fleet host's bootstrap bundle may have none).
            #[serde(default)]
            pub providers: BTreeMap<String, ProviderSection>,
            /// Tenants by id (a fleet host's bootstrap bundle may have none).
            #[serde(default)]
            pub tenants: BTreeMap<String, TenantSection>,
            /// Routes from `{tenant, team, user, cloud, capability}` to a provider.
            #[serde(default)]
            pub routes: Vec<Route>,
            /// Slots the host fires to timer providers (`[[schedules]]`).
            #[serde(default)]
            pub schedules: Vec<Schedule>,
            /// Joining a fleet (`[cluster]`).
            #[serde(default)]
            pub cluster: ClusterSection,
        }

        impl BundleFile {
            /// The capabilities' sections (`[secrets]`, `[state]`, …).
            pub fn sections(&self) -> SectionRefs<'_> {
                SectionRefs { $($section: &self.$section,)* }
            }
        }
    };
}
greentic_capabilities::with_sections!(bundle_file);

/// `[providers.NAME]`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    /// A file path (relative to the bundle), `oci:DIR:TAG`, or `HOST/REPO:TAG`; for a remote
    /// provider its endpoint, `grpcs://HOST:PORT` (or `grpc://127.0.0.1:PORT` for a sidecar);
    /// for a native provider `native:NAME`, the name it is registered under in this binary.
    pub source: String,
    /// `wasm` (a component, the default), `remote` (a provider outside the host, reached
    /// over gRPC at `source`: a sidecar or a shared gateway) or `native` (a Rust crate
    /// compiled into the host binary: first-party code only, no sandbox).
    #[serde(default)]
    pub form: ProviderForm,
    /// `remote`: the identity the provider's certificate must carry, a URI SAN
    /// (`spiffe://…`) or a DNS name.
    #[serde(default)]
    pub identity: Option<String>,
    /// `remote`: the CA bundle its certificate is issued by, and the host's client pair
    /// (relative to the bundle).
    #[serde(default)]
    pub tls: Option<greentic_tls::ClientFiles>,
    /// `remote`: accept `grpc://` (plaintext), to a loopback sidecar only.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Expected `sha256:<hex>` of the component; a mismatch refuses it.
    #[serde(default)]
    pub digest: Option<String>,
    /// What the provider may use.
    #[serde(default)]
    pub grants: Grants,
    /// Names of `[trust]` keys that may sign this provider (and its attestations). Empty (the
    /// default) means every key trusted for the role (`provider` for its signature,
    /// `attestation` for its attestations); list names to narrow it.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// Signed identities (cosign's `docker-reference`, `registry/repository`) accepted besides
    /// the source's own repository: for mirrors and copies, whose signatures name where the
    /// artifact was signed. Without it, a signature made for another repository is refused.
    #[serde(default)]
    pub identities: Vec<String>,
    /// Run it without a verified signature. Required for file sources, which cannot carry one.
    #[serde(default)]
    pub allow_unsigned: bool,
    /// Attestations it must carry besides `[trust] require`.
    #[serde(default)]
    pub require: Vec<Kind>,
    /// Run every call in a fresh instance even if the provider's manifest lets an instance
    /// serve later calls of the same tenant (`"instances": "per-tenant"`).
    #[serde(default)]
    pub fresh_instances: bool,
}

/// What form a provider takes.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ProviderForm {
    /// A WebAssembly component, run by the host under the tenant's limits.
    #[default]
    Wasm,
    /// A provider outside the host, over gRPC (`proto/greentic.proto`).
    Remote,
    /// A Rust crate compiled into the host (`greentic_interfaces::native`): no sandbox.
    Native,
}

impl ProviderForm {
    /// The form's name, as bundles write it.
    pub fn name(self) -> &'static str {
        match self {
            ProviderForm::Wasm => "wasm",
            ProviderForm::Remote => "remote",
            ProviderForm::Native => "native",
        }
    }
}

impl ProviderSection {
    /// Every attestation kind this provider must carry: its own and the bundle's default.
    pub fn required(&self, trust: &TrustSection) -> Vec<Kind> {
        let mut kinds: Vec<_> = trust.require.iter().chain(&self.require).copied().collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

/// `[tenants.ID]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Names of the secrets bound for this tenant (values come from the secrets backend).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Configuration per provider name.
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
    /// Which credentials a call as this tenant must carry: `"either"` (default: a bearer
    /// token, or a client certificate listed for it in `[[auth.certificates]]`), `"token"`,
    /// `"certificate"` or `"both"`.
    #[serde(default)]
    pub caller_auth: crate::auth::CallerAuth,
}

/// `[tenants.ID.limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Fuel (roughly, wasm instructions) one call may use.
    #[serde(default = "default_fuel")]
    pub fuel_per_call: u64,
    /// Wall-clock deadline of one call, in milliseconds.
    #[serde(default = "default_deadline")]
    pub deadline_ms: u64,
    /// Bytes of linear memory (all memories together) and table space one instance may use.
    #[serde(default = "default_memory")]
    pub memory_bytes: u64,
    /// Calls running at once; more wait in a queue.
    #[serde(default = "default_concurrency")]
    pub max_concurrent: u32,
    /// How long an excess call waits for a slot (or fuel) before a 429.
    #[serde(default = "default_queue")]
    pub queue_timeout_ms: u64,
    /// Fuel the tenant may use per second across all its calls (token bucket).
    #[serde(default = "default_fuel_rate")]
    pub fuel_per_second: u64,
    /// CPU time one call may use, in milliseconds (`[host] metering = "cpu-time"`; fuel
    /// bounds it otherwise).
    #[serde(default = "default_cpu_ms_per_call")]
    pub cpu_ms_per_call: u64,
    /// CPU time the tenant may use per second across all its calls, in milliseconds (`[host]
    /// metering = "cpu-time"`; token bucket, as `fuel_per_second`).
    #[serde(default = "default_cpu_ms_per_second")]
    pub cpu_ms_per_second: u64,
    /// Bytes of host memory one call may make the host hold on its behalf: `wasi:http`
    /// requests, responses, headers, buffered bodies and connections in flight.
    #[serde(default = "default_host_memory")]
    pub host_memory_bytes: u64,
    /// Host resources (handles: requests, streams, spans, …) one call may hold at once.
    #[serde(default = "default_max_resources")]
    pub max_resources: u32,
    /// Outgoing HTTP requests one call may have in flight at once; more get
    /// `connection-limit-reached`.
    #[serde(default = "default_max_outgoing")]
    pub max_outgoing_requests: u32,
    /// Webhook deliveries being handled at once, per provider (admitted apart from invokes, so
    /// unauthenticated deliveries cannot take the slots the tenant's calls need); more wait up to
    /// `queue_timeout_ms`, then 429.
    #[serde(default = "default_webhook_concurrency")]
    pub webhook_max_concurrent: u32,
    /// The tenant's share of CPU against other tenants' when they compete (1 to 1 000;
    /// default 1): a tenant of weight 3 gets three times the guest time of one of weight 1.
    #[serde(default = "default_cpu_weight")]
    pub cpu_weight: u32,
    /// Durable deliveries (routes with `durable = true`) the tenant may have queued in the
    /// fleet at once, over all its routes; past it a delivery is refused `429 queue-full`.
    #[serde(default = "default_queued_deliveries")]
    pub queued_deliveries: u32,
    /// Bytes of durable deliveries the tenant may have queued at once.
    #[serde(default = "default_queued_delivery_bytes")]
    pub queued_delivery_bytes: u64,
    /// Durable deliveries the tenant may have queued at once for one provider, so one route
    /// cannot take the whole queue.
    #[serde(default = "default_queued_deliveries_per_route")]
    pub queued_deliveries_per_route: u32,
    /// Durable deliveries accepted per second, fleet-wide; more are refused `429 queue-full`
    /// with `Retry-After`.
    #[serde(default = "default_deliveries_per_second")]
    pub deliveries_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel_per_call: default_fuel(),
            deadline_ms: default_deadline(),
            memory_bytes: default_memory(),
            max_concurrent: default_concurrency(),
            queue_timeout_ms: default_queue(),
            fuel_per_second: default_fuel_rate(),
            cpu_ms_per_call: default_cpu_ms_per_call(),
            cpu_ms_per_second: default_cpu_ms_per_second(),
            host_memory_bytes: default_host_memory(),
            max_resources: default_max_resources(),
            max_outgoing_requests: default_max_outgoing(),
            webhook_max_concurrent: default_webhook_concurrency(),
            cpu_weight: default_cpu_weight(),
            queued_deliveries: default_queued_deliveries(),
            queued_delivery_bytes: default_queued_delivery_bytes(),
            queued_deliveries_per_route: default_queued_deliveries_per_route(),
            deliveries_per_second: default_deliveries_per_second(),
        }
    }
}

fn default_fuel() -> u64 {
    500_000_000
}
fn default_deadline() -> u64 {
    5_000
}
fn default_memory() -> u64 {
    64 << 20
}
fn default_concurrency() -> u32 {
    8
}
fn default_queue() -> u64 {
    1_000
}
fn default_fuel_rate() -> u64 {
    4_000_000_000
}
fn default_cpu_ms_per_call() -> u64 {
    1_000
}
fn default_cpu_ms_per_second() -> u64 {
    1_000
}
fn default_host_memory() -> u64 {
    16 << 20
}
fn default_max_resources() -> u32 {
    1024
}
fn default_max_outgoing() -> u32 {
    8
}
fn default_webhook_concurrency() -> u32 {
    4
}
fn default_cpu_weight() -> u32 {
    1
}
fn default_queued_deliveries() -> u32 {
    10_000
}
fn default_queued_delivery_bytes() -> u64 {
    64 << 20
}
fn default_queued_deliveries_per_route() -> u32 {
    5_000
}
fn default_deliveries_per_second() -> u32 {
    100
}

/// `[[routes]]`: the most specific matching route wins.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Tenant id, or `*`.
    pub tenant: String,
    /// Team, if the route is team-specific.
    #[serde(default)]
    pub team: Option<String>,
    /// User, if the route is user-specific.
    #[serde(default)]
    pub user: Option<String>,
    /// Cloud, if the route is cloud-specific.
    #[serde(default)]
    pub cloud: Option<String>,
    /// The capability (e.g. `send`).
    pub capability: String,
    /// The provider name.
    pub provider: String,
    /// Webhook deliveries on this route are queued in the fleet's JetStream and acknowledged
    /// only once the provider handled them (the sender gets `202`); needs `--cluster`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub durable: bool,
    /// The request header carrying a delivery's id (e.g. `X-GitHub-Delivery`), by which a
    /// durable delivery sent twice is queued once; default: the digest of method, path, body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id_header: Option<String>,
    /// On a webhook provider's route: the host checks each delivery's signature itself (an
    /// HMAC over the body with the tenant's secret `verify.secret`) and refuses an unsigned
    /// or forged one `401 signature-invalid` before it is queued or reaches the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<greentic_manifest::SignatureScheme>,
}

impl BundleFile {
    /// The roles the key `name` of `[trust.keys]` is trusted for (none for a key it lacks).
    pub fn key_roles(&self, name: &str) -> std::collections::BTreeSet<KeyRole> {
        match self.trust.keys.get(name) {
            None => Default::default(),
            Some(TrustKey::Roles(k)) => k.roles.iter().copied().collect(),
            Some(TrustKey::File(_)) if self.cluster.publishers.iter().any(|p| p == name) => {
                [KeyRole::Publisher].into()
            }
            Some(TrustKey::File(_)) => [KeyRole::Provider, KeyRole::Attestation].into(),
        }
    }

    /// The names of the keys trusted for `role`.
    pub fn keys_for(&self, role: KeyRole) -> Vec<&String> {
        self.trust
            .keys
            .keys()
            .filter(|name| self.key_roles(name).contains(&role))
            .collect()
    }
}
