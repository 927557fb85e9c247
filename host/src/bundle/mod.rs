//! The bundle: `greentic.toml` (written by people) and `greentic.lock` (written by the host).
//!
//! A bundle names the providers and where they come from, what each is granted, the tenants
//! with their limits, secret bindings and per-provider configuration, the routes, how callers
//! authenticate, and where telemetry goes. Unknown keys are errors; the JSON Schema in
//! `schemas/greentic.schema.json` describes the same format for editors.

mod lock;
mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use greentic_capabilities::SectionRefs;
use serde::{Deserialize, Serialize};

pub use greentic_capabilities::Grants;

pub use lock::{Lock, LockEntry, LockError};
pub use source::{
    ComponentSource, Fetched, FileSource, RegistrySource, SourceError, SourceRef,
    artifact_reference, open_target, resolve_source,
};

/// The JSON Schema of `greentic.toml`.
pub const BUNDLE_SCHEMA: &str = include_str!("../../../schemas/greentic.schema.json");

/// Why a bundle could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The file could not be read.
    #[error("reading {path}: {source}; pass the bundle directory that contains greentic.toml")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, or not the bundle's shape.
    #[error("{path}: {message}")]
    Invalid {
        /// The path.
        path: String,
        /// What is wrong, where, and what to do.
        message: String,
    },
}

macro_rules! bundle_file {
    ($($(#[$doc:meta])* $section:ident: $ty:ty,)*) => {
        /// `greentic.toml`.
        #[derive(Debug, Clone, Deserialize, Serialize)]
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
            pub audit: Option<crate::audit::AuditSection>,
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
            pub schedules: Vec<crate::domain::timer::Schedule>,
            /// Joining a fleet (`[cluster]`).
            #[serde(default)]
            pub cluster: crate::fleet::ClusterSection,
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

/// `[host]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    /// Address to listen on (`--listen` overrides).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Compiled-artifact cache, relative to the bundle (default `.greentic/cache`).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// The key compiled-artifact cache entries are authenticated with, relative to the bundle
    /// (default `$GREENTIC_CACHE_KEY_FILE`, else `~/.local/state/greentic-host/cache.key`);
    /// created mode 0600 when missing. Keep it where only the host's user can read it.
    #[serde(default)]
    pub cache_key_file: Option<PathBuf>,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Where this host runs; passed to providers in `tenant-ctx.deployment`.
    #[serde(default)]
    pub deployment: Deployment,
    /// Seconds in-flight calls may take to finish on SIGTERM.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
    /// Largest component accepted, in bytes.
    #[serde(default = "default_max_component")]
    pub max_component_bytes: usize,
    /// The circuit breaker per tenant and provider.
    #[serde(default)]
    pub breaker: BreakerSection,
    /// Milliseconds a client has to send a request's headers; slower connections are closed.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_ms: u64,
    /// Milliseconds a client has to send a request's body, once its headers arrived (408).
    #[serde(default = "default_body_timeout")]
    pub body_timeout_ms: u64,
    /// Milliseconds a connection that has served requests may stay without one.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// Connections open at once (public listener). At the cap the connection idle longest is
    /// closed to make room.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Address of the admin listener: `/healthz`, `/readyz`, `/metrics` (`--admin-listen`
    /// overrides). Keep it off public networks.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// How guest code gets the cores: `[host.scheduler]`.
    #[serde(default)]
    pub scheduler: SchedulerSection,
}

/// `[host.scheduler]`: how guest code shares the cores between tenants (read at start; a
/// reload that changes it is refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSection {
    /// `fair` (default): guest code runs in turns, the next turn to the tenant that has used
    /// least of its `cpu_weight` share. `tokio`: guest futures are polled by the async
    /// executor like any task (no shares between tenants; kept for comparison).
    #[serde(default)]
    pub mode: SchedulerMode,
    /// Guest turns that run at once, on as many guest threads; `0` (default): one per core.
    #[serde(default)]
    pub threads: usize,
    /// The guest threads' OS priority against the host's own (accepting connections,
    /// parsing, verification): `low` (default, nice 10), `idle` (`SCHED_IDLE`: only when the
    /// host has nothing to do) or `normal`.
    #[serde(default)]
    pub priority: GuestPriority,
}

/// `[host.scheduler].mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerMode {
    /// Turns by weighted fair queuing between tenants.
    #[default]
    Fair,
    /// The async executor's own order.
    Tokio,
}

/// `[host.scheduler].priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestPriority {
    /// Nice 10: the host's threads preempt guest turns.
    #[default]
    Low,
    /// `SCHED_IDLE`: guest turns run only when no other thread of the host (or the
    /// machine's process group) wants the core.
    Idle,
    /// The host's own priority.
    Normal,
}

fn default_header_timeout() -> u64 {
    10_000
}
fn default_body_timeout() -> u64 {
    30_000
}
fn default_idle_timeout() -> u64 {
    60_000
}
fn default_max_connections() -> usize {
    1024
}
fn default_admin_listen() -> String {
    "127.0.0.1:9464".into()
}

/// `[host.breaker]`: when a tenant's calls of a provider stop being made for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSection {
    /// Consecutive failed calls (unavailable, timeouts, traps, exhausted limits) that open the
    /// circuit; `0` never opens it.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// Milliseconds it stays open before one probe call is let through.
    #[serde(default = "default_cool_down_ms")]
    pub cool_down_ms: u64,
    /// Milliseconds a probe may stay unsettled before another is let through (a probe is
    /// settled when its call ends, however it ends; this bounds a call that never does).
    #[serde(default = "default_probe_timeout_ms")]
    pub probe_timeout_ms: u64,
}

impl Default for BreakerSection {
    fn default() -> Self {
        BreakerSection {
            failure_threshold: default_failure_threshold(),
            cool_down_ms: default_cool_down_ms(),
            probe_timeout_ms: default_probe_timeout_ms(),
        }
    }
}

fn default_failure_threshold() -> u32 {
    5
}
fn default_cool_down_ms() -> u64 {
    5_000
}
fn default_probe_timeout_ms() -> u64 {
    30_000
}

impl Default for HostSection {
    fn default() -> Self {
        HostSection {
            listen: default_listen(),
            cache_dir: None,
            cache_key_file: None,
            max_body_bytes: default_max_body(),
            deployment: Deployment::default(),
            shutdown_grace_secs: default_grace(),
            max_component_bytes: default_max_component(),
            breaker: BreakerSection::default(),
            header_timeout_ms: default_header_timeout(),
            body_timeout_ms: default_body_timeout(),
            idle_timeout_ms: default_idle_timeout(),
            max_connections: default_max_connections(),
            admin_listen: default_admin_listen(),
            scheduler: SchedulerSection::default(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_max_body() -> usize {
    1 << 20
}
fn default_grace() -> u64 {
    10
}
fn default_max_component() -> usize {
    64 << 20
}

/// `[host.deployment]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// aws, gcp, azure, hetzner, local, or anything else.
    #[serde(default = "default_cloud")]
    pub cloud: String,
    /// Region, if any.
    #[serde(default)]
    pub region: Option<String>,
    /// k8s, nomad, systemd, cf-workers, lambda, baremetal, or anything else.
    #[serde(default = "default_platform")]
    pub platform: String,
}

impl Default for Deployment {
    fn default() -> Self {
        Deployment {
            cloud: default_cloud(),
            region: None,
            platform: default_platform(),
        }
    }
}

fn default_cloud() -> String {
    "local".into()
}
fn default_platform() -> String {
    "baremetal".into()
}

/// `[auth]`: how callers' bearer tokens are verified.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `HS256` (shared secret) or `ES256` (ECDSA P-256 public key).
    pub algorithm: JwtAlgorithm,
    /// Required `iss` claim.
    pub issuer: String,
    /// Required `aud` claim.
    pub audience: String,
    /// HS256: environment variable holding the shared secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// HS256: file holding the shared secret (relative to the bundle).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// ES256: PEM public key file (relative to the bundle).
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// ES256: PEM private key file used only by `greentic-host token` (demos and tests).
    #[serde(default)]
    pub dev_private_key_file: Option<PathBuf>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// The longest lifetime (`exp - iat`) a token may have, in seconds; longer-lived tokens
    /// are refused, however they were signed.
    #[serde(default = "default_max_token_lifetime")]
    pub max_token_lifetime_secs: u64,
}

fn default_max_token_lifetime() -> u64 {
    24 * 3600
}

fn default_leeway() -> u64 {
    30
}

/// Supported token algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    HS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
}

/// `[trust]`: named cosign public keys (PEM files, relative to the bundle), each trusted for
/// its roles only.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustSection {
    /// Key name → its PEM public key file, alone (`ci = "ci.pub"`) or with the roles it is
    /// trusted for (`ci = { file = "ci.pub", roles = ["provider"] }`).
    #[serde(default)]
    pub keys: BTreeMap<String, TrustKey>,
    /// Attestations every provider must carry (`conformance`, `sbom`), signed by a key trusted
    /// for it and about its exact digest.
    #[serde(default)]
    pub require: Vec<crate::attestation::Kind>,
}

/// What a trusted key may vouch for. A key is trusted for its roles only, so a key that
/// publishes fleet revisions does not also make the hosts run a provider it signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    /// Signatures of provider components.
    Provider,
    /// Attestations about providers (conformance reports, SBOMs).
    Attestation,
    /// Fleet revisions (`greentic-host publish`): a key named in `[cluster].publishers`.
    Publisher,
    /// Checkpoints of audit logs.
    Audit,
}

impl KeyRole {
    /// The role's name, as a bundle writes it.
    pub fn name(self) -> &'static str {
        match self {
            KeyRole::Provider => "provider",
            KeyRole::Attestation => "attestation",
            KeyRole::Publisher => "publisher",
            KeyRole::Audit => "audit",
        }
    }
}

/// A key of `[trust.keys]`: a PEM file, and the roles it is trusted for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum TrustKey {
    /// A bare file: trusted for provider signatures and attestations — or, if
    /// `[cluster].publishers` names it, for published revisions only.
    File(PathBuf),
    /// A file and its roles, said outright.
    Roles(KeyWithRoles),
}

/// `{ file = "…", roles = [...] }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyWithRoles {
    /// The PEM public key file, relative to the bundle.
    pub file: PathBuf,
    /// What the key is trusted for.
    pub roles: Vec<KeyRole>,
}

impl<'de> Deserialize<'de> for TrustKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TrustKey, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TrustKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key file, or `{ file = \"key.pub\", roles = [\"provider\"] }`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TrustKey, E> {
                Ok(TrustKey::File(PathBuf::from(v)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<TrustKey, A::Error> {
                KeyWithRoles::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(TrustKey::Roles)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl TrustKey {
    /// The PEM file.
    pub fn file(&self) -> &Path {
        match self {
            TrustKey::File(f) => f,
            TrustKey::Roles(k) => &k.file,
        }
    }
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

/// `[providers.NAME]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    /// A file path (relative to the bundle), `oci:DIR:TAG`, or `HOST/REPO:TAG`.
    pub source: String,
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
    pub require: Vec<crate::attestation::Kind>,
}

impl ProviderSection {
    /// Every attestation kind this provider must carry: its own and the bundle's default.
    pub fn required(&self, trust: &TrustSection) -> Vec<crate::attestation::Kind> {
        let mut kinds: Vec<_> = trust.require.iter().chain(&self.require).copied().collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

/// `[tenants.ID]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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
}

/// `[tenants.ID.limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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

/// A loaded bundle: the parsed `greentic.toml`, the directory it lives in, and the digest of
/// its text (the identity of the revision it makes).
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The directory.
    pub dir: PathBuf,
    /// The parsed file.
    pub file: BundleFile,
    /// `sha256:<hex>` of the text the file was parsed from.
    pub digest: String,
}

impl Bundle {
    /// The directory and the file of the bundle at `path` (a directory holding
    /// `greentic.toml`, or the file itself).
    pub fn locate(path: &Path) -> (PathBuf, PathBuf) {
        if path.is_dir() {
            (path.to_path_buf(), path.join("greentic.toml"))
        } else {
            (
                path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                path.to_path_buf(),
            )
        }
    }

    /// Reads `DIR/greentic.toml` (or the file itself if `path` is a file).
    pub fn load(path: &Path) -> Result<Bundle, BundleError> {
        let (dir, file) = Self::locate(path);
        let text = std::fs::read_to_string(&file).map_err(|source| BundleError::Io {
            path: file.display().to_string(),
            source,
        })?;
        Self::from_text(dir, &file.display().to_string(), &text)
    }

    /// A bundle from `text` (named `name` in errors) whose relative paths resolve against
    /// `dir`.
    pub fn from_text(dir: PathBuf, name: &str, text: &str) -> Result<Bundle, BundleError> {
        let parsed = Self::parse(name, text)?;
        Ok(Bundle {
            dir,
            file: parsed,
            digest: crate::revision::digest_of(text.as_bytes()),
        })
    }

    /// Parses and checks the text of a `greentic.toml`.
    pub fn parse(name: &str, text: &str) -> Result<BundleFile, BundleError> {
        let invalid = |message: String| BundleError::Invalid {
            path: name.to_string(),
            message,
        };
        let file: BundleFile = toml::from_str(text).map_err(|e| {
            // The parser quotes the offending line; a huge value must not become a huge message.
            let message = e
                .to_string()
                .trim_end()
                .lines()
                .map(|l| greentic_manifest::clip_middle(l, 240))
                .collect::<Vec<_>>()
                .join("\n");
            invalid(format!(
                "{message}; see schemas/greentic.schema.json for the format"
            ))
        })?;
        let problems = file.problems();
        if !problems.is_empty() {
            return Err(invalid(format!(
                "invalid bundle:\n{}",
                problems
                    .iter()
                    .map(|p| format!("  - {p}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )));
        }
        Ok(file)
    }

    /// A path from the bundle, resolved against its directory.
    pub fn path(&self, relative: &Path) -> PathBuf {
        if relative.is_absolute() {
            relative.to_path_buf()
        } else {
            self.dir.join(relative)
        }
    }

    /// The compiled-artifact cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        self.path(
            self.file
                .host
                .cache_dir
                .as_deref()
                .unwrap_or(Path::new(".greentic/cache")),
        )
    }
}

/// `roles` as words, for messages.
fn role_list(roles: &std::collections::BTreeSet<KeyRole>) -> String {
    if roles.is_empty() {
        return "nothing".into();
    }
    roles
        .iter()
        .map(|r| r.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `name` can name a provider: kebab-case (lower-case letters and digits, words joined
/// by single `-`).
pub fn valid_provider_name(name: &str) -> bool {
    kebab(name)
}

fn kebab(s: &str) -> bool {
    !s.is_empty()
        && s.split('-').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

fn tenant_id_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl BundleFile {
    /// What a bundle served on its own (not a fleet host's bootstrap bundle, which serves what
    /// the fleet publishes) must have: providers and tenants.
    pub fn standalone_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.providers.is_empty() {
            out.push(
                "providers: the bundle names no providers; add a [providers.NAME] table (only a fleet host's bootstrap bundle — run with --cluster URL, or [cluster].url set — may name none)".into(),
            );
        }
        if self.tenants.is_empty() {
            out.push("tenants: the bundle names no tenants; add a [tenants.ID] table (only a fleet host's bootstrap bundle — run with --cluster URL, or [cluster].url set — may name none)".into());
        }
        out
    }

    /// Cross-field checks that TOML types cannot express.
    fn problems(&self) -> Vec<String> {
        let mut out = greentic_capabilities::check(
            &self.sections(),
            &greentic_capabilities::BundleFacts {
                tenants: self
                    .tenants
                    .iter()
                    .map(|(id, t)| (id.as_str(), t.secrets.as_slice()))
                    .collect(),
                providers: self
                    .providers
                    .iter()
                    .map(|(name, p)| (name.as_str(), &p.grants))
                    .collect(),
            },
        );
        out.extend(self.cluster.problems());
        for (key, value) in [
            ("header_timeout_ms", self.host.header_timeout_ms),
            ("body_timeout_ms", self.host.body_timeout_ms),
            (
                "breaker.probe_timeout_ms",
                self.host.breaker.probe_timeout_ms,
            ),
            ("idle_timeout_ms", self.host.idle_timeout_ms),
            ("max_connections", self.host.max_connections as u64),
        ] {
            if value == 0 {
                out.push(format!("host.{key}: must be greater than 0"));
            }
        }
        let a = &self.auth;
        if a.max_token_lifetime_secs == 0 {
            out.push(
                "auth.max_token_lifetime_secs: must be greater than 0 (0 would refuse every token)"
                    .into(),
            );
        }
        match a.algorithm {
            JwtAlgorithm::HS256 => {
                if a.secret_env.is_none() == a.secret_file.is_none() {
                    out.push(
                        "auth: HS256 needs exactly one of `secret_env` or `secret_file`".into(),
                    );
                }
                if a.public_key_file.is_some() || a.dev_private_key_file.is_some() {
                    out.push("auth: `public_key_file`/`dev_private_key_file` are for ES256; remove them or set algorithm = \"ES256\"".into());
                }
            }
            JwtAlgorithm::ES256 => {
                if a.public_key_file.is_none() {
                    out.push("auth: ES256 needs `public_key_file` (PEM)".into());
                }
                if a.secret_env.is_some() || a.secret_file.is_some() {
                    out.push("auth: `secret_env`/`secret_file` are for HS256; remove them or set algorithm = \"HS256\"".into());
                }
            }
        }

        for (name, p) in &self.providers {
            if !kebab(name) {
                out.push(format!(
                    "providers.{}: provider names are kebab-case",
                    greentic_manifest::clip_middle(name, 80)
                ));
            }
            if let Some(d) = &p.digest
                && !greentic_registry::is_sha256_digest(d)
            {
                out.push(format!(
                    "providers.{name}.digest: `{d}` is not `sha256:` followed by 64 lower-case hex digits"
                ));
            }
            for key in &p.trusted_keys {
                let roles = self.key_roles(key);
                if !self.trust.keys.contains_key(key) {
                    out.push(format!(
                        "providers.{name}.trusted_keys: no key named `{key}` under [trust.keys]"
                    ));
                } else if !roles.contains(&KeyRole::Provider)
                    && !roles.contains(&KeyRole::Attestation)
                {
                    out.push(format!(
                        "providers.{name}.trusted_keys: key `{key}` is trusted for {} only, not for providers; give it the role (`{key} = {{ file = \"…\", roles = [\"provider\"] }}` in [trust.keys]) or name a provider key",
                        role_list(&roles)
                    ));
                }
            }
        }

        for (id, t) in &self.tenants {
            if !tenant_id_ok(id) {
                out.push(format!(
                    "tenants.{}: tenant ids are 1-64 letters, digits, `-` or `_`",
                    greentic_manifest::clip_middle(id, 80)
                ));
            }
            let l = &t.limits;
            for (field, value) in [
                ("fuel_per_call", l.fuel_per_call),
                ("deadline_ms", l.deadline_ms),
                ("memory_bytes", l.memory_bytes),
                ("max_concurrent", u64::from(l.max_concurrent)),
                ("fuel_per_second", l.fuel_per_second),
                ("host_memory_bytes", l.host_memory_bytes),
                ("max_resources", u64::from(l.max_resources)),
                ("max_outgoing_requests", u64::from(l.max_outgoing_requests)),
                (
                    "webhook_max_concurrent",
                    u64::from(l.webhook_max_concurrent),
                ),
                ("queued_deliveries", u64::from(l.queued_deliveries)),
                ("queued_delivery_bytes", l.queued_delivery_bytes),
                (
                    "queued_deliveries_per_route",
                    u64::from(l.queued_deliveries_per_route),
                ),
                ("deliveries_per_second", u64::from(l.deliveries_per_second)),
            ] {
                if value == 0 {
                    out.push(format!(
                        "tenants.{id}.limits.{field}: must be greater than 0"
                    ));
                }
            }
            if !(1..=1000).contains(&l.cpu_weight) {
                out.push(format!(
                    "tenants.{id}.limits.cpu_weight: {} is not between 1 and 1000",
                    l.cpu_weight
                ));
            }
            if l.fuel_per_second < l.fuel_per_call {
                out.push(format!(
                    "tenants.{id}.limits: fuel_per_second ({}) is below fuel_per_call ({}), so no call could ever start; raise fuel_per_second",
                    l.fuel_per_second, l.fuel_per_call
                ));
            }
            for provider in t.config.keys() {
                if !self.providers.contains_key(provider) {
                    out.push(format!(
                        "tenants.{id}.config.{provider}: no provider named `{provider}`"
                    ));
                }
            }
        }
        for (name, key) in &self.trust.keys {
            if let TrustKey::Roles(k) = key
                && k.roles.is_empty()
            {
                out.push(format!(
                    "trust.keys.{name}: `roles` is empty, so the key is trusted for nothing; list its roles (provider, attestation, publisher, audit) or remove it"
                ));
            }
        }
        for name in &self.cluster.publishers {
            if self.trust.keys.contains_key(name)
                && !self.key_roles(name).contains(&KeyRole::Publisher)
            {
                out.push(format!(
                    "[cluster].publishers names `{name}`, which [trust.keys] trusts for {} only; add the `publisher` role to it",
                    role_list(&self.key_roles(name))
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            if r.tenant != "*" && !self.tenants.contains_key(&r.tenant) {
                out.push(format!(
                    "routes[{i}]: tenant `{}` is not defined under [tenants]",
                    r.tenant
                ));
            }
            if !self.providers.contains_key(&r.provider) {
                out.push(format!(
                    "routes[{i}]: provider `{}` is not defined under [providers]",
                    r.provider
                ));
            }
            if let Some(scheme) = &r.verify {
                for p in scheme.problems() {
                    out.push(format!("routes[{i}].verify: {p}"));
                }
            }
            let key = (&r.tenant, &r.team, &r.user, &r.cloud, &r.capability);
            if !seen.insert(key) {
                out.push(format!(
                    "routes[{i}]: duplicates an earlier route for the same tenant/team/user/cloud/capability; remove one"
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [auth]
        algorithm = "HS256"
        issuer = "i"
        audience = "a"
        secret_env = "JWT"

        [providers.echo]
        source = "echo.wasm"
        allow_unsigned = true

        [tenants.acme]

        [[routes]]
        tenant = "acme"
        capability = "send"
        provider = "echo"
    "#;

    #[test]
    fn minimal_bundle_gets_defaults() {
        let b = Bundle::parse("greentic.toml", MINIMAL).unwrap();
        assert_eq!(b.host.listen, "127.0.0.1:8080");
        assert_eq!(b.tenants["acme"].limits, Limits::default());
        assert!(b.providers["echo"].grants.config);
        assert!(b.providers["echo"].grants.secrets.is_empty());
    }

    #[test]
    fn breaker_settings_default_and_zero_never_opens() {
        let b = Bundle::parse("greentic.toml", MINIMAL).unwrap();
        assert_eq!(b.host.breaker, BreakerSection::default());
        let policy = crate::resilience::BreakerPolicy::from(b.host.breaker);
        assert_eq!(policy.failure_threshold, 5);
        let text =
            format!("[host]\nbreaker = {{ failure_threshold = 0, cool_down_ms = 250 }}\n{MINIMAL}");
        let b = Bundle::parse("greentic.toml", &text).unwrap();
        let policy = crate::resilience::BreakerPolicy::from(b.host.breaker);
        assert_eq!(policy.failure_threshold, u32::MAX);
        assert_eq!(policy.cool_down, std::time::Duration::from_millis(250));
    }

    #[test]
    fn zero_client_timeouts_are_refused() {
        let text = format!("[host]\nheader_timeout_ms = 0\nbody_timeout_ms = 0\n{MINIMAL}");
        let e = Bundle::parse("greentic.toml", &text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("host.header_timeout_ms: must be greater than 0"),
            "{e}"
        );
        assert!(
            e.contains("host.body_timeout_ms: must be greater than 0"),
            "{e}"
        );
        let b = Bundle::parse("greentic.toml", MINIMAL).unwrap();
        assert_eq!(
            (b.host.header_timeout_ms, b.host.body_timeout_ms),
            (10_000, 30_000)
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_the_location() {
        let text = MINIMAL.replace("[tenants.acme]", "[tenants.acme]\nlimts = {}");
        let e = Bundle::parse("greentic.toml", &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("greentic.toml"), "{e}");
        assert!(e.contains("unknown field `limts`"), "{e}");
        assert!(e.contains("line"), "{e}");
    }

    #[test]
    fn cross_field_problems_are_all_reported() {
        let text = MINIMAL
            .replace("secret_env = \"JWT\"", "")
            .replace("provider = \"echo\"", "provider = \"nope\"")
            .replace(
                "[tenants.acme]",
                "[tenants.acme]\nlimits = { fuel_per_call = 10, fuel_per_second = 5 }",
            );
        let e = Bundle::parse("greentic.toml", &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("HS256 needs exactly one"), "{e}");
        assert!(e.contains("provider `nope` is not defined"), "{e}");
        assert!(
            e.contains("fuel_per_second (5) is below fuel_per_call (10)"),
            "{e}"
        );
    }

    fn schema_errors(text: &str) -> Vec<String> {
        let schema: serde_json::Value = serde_json::from_str(BUNDLE_SCHEMA).unwrap();
        let validator = jsonschema::draft202012::new(&schema).unwrap();
        let doc: toml::Value = toml::from_str(text).unwrap();
        let doc = serde_json::to_value(doc).unwrap();
        validator
            .iter_errors(&doc)
            .map(|e| format!("{} {e}", e.instance_path()))
            .collect()
    }

    #[test]
    fn the_shipped_schema_accepts_the_example_bundles_and_catches_unknown_keys() {
        let schema: serde_json::Value = serde_json::from_str(BUNDLE_SCHEMA).unwrap();
        jsonschema::draft202012::meta::validate(&schema).unwrap();
        let example = include_str!("../../../examples/demo/greentic.toml");
        assert_eq!(schema_errors(example), Vec::<String>::new());
        assert_eq!(schema_errors(MINIMAL), Vec::<String>::new());
        Bundle::parse("examples/demo/greentic.toml", example).unwrap();
        let bad = MINIMAL.replace("[tenants.acme]", "[tenants.acme]\nlimts = {}");
        let errors = schema_errors(&bad);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("/tenants/acme") && errors[0].contains("limts"),
            "{errors:?}"
        );
    }

    #[test]
    fn cpu_weights_and_the_scheduler_section_are_checked() {
        let text = MINIMAL.replace(
            "[tenants.acme]",
            "[tenants.acme]\nlimits = { cpu_weight = 0 }\n[tenants.big]\nlimits = { cpu_weight = 3 }",
        );
        let e = Bundle::parse("greentic.toml", &text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tenants.acme.limits.cpu_weight: 0 is not between 1 and 1000"),
            "{e}"
        );
        assert!(!e.contains("tenants.big"), "{e}");
        let scheduled = format!(
            "[host]\nscheduler = {{ mode = \"tokio\", threads = 3, priority = \"idle\" }}\n{MINIMAL}"
        );
        assert_eq!(schema_errors(&scheduled), Vec::<String>::new());
        let b = Bundle::parse("greentic.toml", &scheduled).unwrap();
        assert_eq!(
            b.host.scheduler,
            SchedulerSection {
                mode: SchedulerMode::Tokio,
                threads: 3,
                priority: GuestPriority::Idle
            }
        );
        let wrong = format!("[host]\nscheduler = {{ mode = \"cfs\" }}\n{MINIMAL}");
        assert_eq!(schema_errors(&wrong).len(), 1);
        let e = Bundle::parse("greentic.toml", &wrong)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cfs"), "{e}");
    }

    #[test]
    fn env_backend_names_that_collide_are_refused() {
        let text = MINIMAL.replace(
            "[tenants.acme]",
            "[secrets]\nbackend = \"env\"\nenv_prefix = \"S\"\n\n[tenants.acme]\nsecrets = [\"PROD_TOKEN\"]\n[tenants.acme_prod]\nsecrets = [\"TOKEN\"]\n[tenants.acme-eu]\n[tenants.ACME_EU]",
        );
        let e = Bundle::parse("greentic.toml", &text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tenant `acme`'s secret `PROD_TOKEN` and tenant `acme_prod`'s secret `TOKEN` are both read from S_ACME_PROD_TOKEN"),
            "{e}"
        );
        assert!(e.contains("tenants `ACME_EU` and `acme-eu`"), "{e}");
        // The file backend keeps them apart: no problem there.
        let file = text.replace("backend = \"env\"", "backend = \"file\"");
        Bundle::parse("greentic.toml", &file).unwrap();
    }

    #[test]
    fn digests_are_checked() {
        assert!(greentic_registry::is_sha256_digest(&format!(
            "sha256:{}",
            "a".repeat(64)
        )));
        assert!(!greentic_registry::is_sha256_digest("sha256:ABC"));
        let text = MINIMAL.replace(
            "source = \"echo.wasm\"",
            "source = \"echo.wasm\"\ndigest = \"md5:x\"",
        );
        let e = Bundle::parse("greentic.toml", &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("providers.echo.digest"), "{e}");
    }
}
