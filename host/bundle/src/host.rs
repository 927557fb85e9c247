//! `[host]`: how the host serves — listeners, timeouts, the breaker, the scheduler, where it runs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[host]`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    /// Address to listen on (`--listen` overrides).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Compiled-artifact cache, relative to the bundle (default `.greentic/cache`, or
    /// `$CACHE_DIRECTORY/compiled` under a service manager that sets it).
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
    /// Calls the host runs at once, over all tenants (default: the sum of every tenant's
    /// `max_concurrent`, and `webhook_max_concurrent` per webhook provider routed to it, plus 8,
    /// or what this machine can hold if that is less — half its memory at 256 KiB per call).
    /// At least 1. Every resource of the instance pool (instances, core instances, memories, tables, async
    /// stacks) is sized from it; a call past it waits up to its tenant's `queue_timeout_ms` and
    /// is then answered `503 host-at-capacity`.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_in_flight: Option<u32>,
    /// Instances of finished calls the host keeps for the next call of the same tenant (only
    /// of providers whose manifest says `"instances": "per-tenant"`): by default a quarter of
    /// `max_in_flight`, at most 256; `0` runs every call in a fresh instance. Each idle one holds
    /// a place of `max_in_flight`, which it gives up to the first call that needs it.
    #[serde(default)]
    pub kept_instances: Option<u32>,
    /// Address of the admin listener: `/healthz`, `/readyz`, `/metrics` (`--admin-listen`
    /// overrides). Keep it off public networks.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// How guest code gets the cores: `[host.scheduler]`.
    #[serde(default)]
    pub scheduler: SchedulerSection,
    /// How a call's CPU is counted and bounded: `"fuel"` (default; per-call `fuel_per_call`,
    /// per-tenant `fuel_per_second`, deterministic) or `"cpu-time"` (epochs for yields and
    /// deadlines, the tenants' `cpu_ms_per_call` and `cpu_ms_per_second` from measured CPU
    /// time; cheaper, not deterministic).
    #[serde(default)]
    pub metering: Metering,
    /// `[host.tls]`: serve the public listener over TLS (and mTLS with `client_ca`); plain
    /// HTTP when absent.
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// `[host.admin_tls]`: the same for the admin listener (`/readyz`, `/metrics`,
    /// `POST /reload`); `client_auth = "required"` keeps it to holders of a certificate from
    /// `client_ca`.
    #[serde(default)]
    pub admin_tls: Option<TlsSection>,
}

/// `[host.tls]` and `[host.admin_tls]`: a listener's certificate, key and client certificates.
/// The files are re-read when they change (checked every 2 seconds): a new pair serves new
/// connections, a broken one is refused and the old one keeps serving.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The certificate chain (PEM, end-entity first), relative to the bundle.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, RSA or EC; RSA, ECDSA or Ed25519), relative to the bundle.
    pub key: PathBuf,
    /// The lowest TLS version accepted: `"1.3"` (default) or `"1.2"`.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// CA certificates (PEM) that client certificates must chain to, relative to the bundle.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Whether clients are asked for a certificate: `"none"`, `"optional"` (one presented must
    /// verify) or `"required"`. Default: `"required"` when `client_ca` is set, else `"none"`.
    #[serde(default)]
    pub client_auth: Option<ClientAuthMode>,
}

impl TlsSection {
    /// Whether clients are asked for a certificate, the default applied.
    pub fn client_auth(&self) -> ClientAuthMode {
        self.client_auth.unwrap_or(if self.client_ca.is_some() {
            ClientAuthMode::Required
        } else {
            ClientAuthMode::None
        })
    }
}

/// `[host.tls].min_version`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
pub enum TlsVersion {
    /// TLS 1.2 and later.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[default]
    #[serde(rename = "1.3")]
    Tls13,
}

/// `[host.tls].client_auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuthMode {
    /// No client certificates are asked for.
    None,
    /// A client may present a certificate (verified against `client_ca`) or none.
    Optional,
    /// Every connection must present a certificate that chains to `client_ca`.
    Required,
}

/// `[host.scheduler]`: how guest code shares the cores between tenants (read at start; a
/// reload that changes it is refused).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
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

/// `[host].metering`: what bounds a call's and a tenant's CPU.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Metering {
    /// Fuel: one unit per Wasm operator, counted in the guest's code; the same call uses the
    /// same fuel on every machine, so budgets are deterministic.
    #[default]
    Fuel,
    /// Measured CPU time: epochs make guests yield (and deadlines fire), and each call's CPU time
    /// is read from the thread's CPU clock at every yield; cheaper than fuel, but what a
    /// budget buys depends on the machine and on what else it runs.
    CpuTime,
}

/// `[host.scheduler].mode`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerMode {
    /// Turns by weighted fair queuing between tenants.
    #[default]
    Fair,
    /// The async executor's own order.
    Tokio,
}

/// `[host.scheduler].priority`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
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
            max_in_flight: None,
            kept_instances: None,
            admin_listen: default_admin_listen(),
            scheduler: SchedulerSection::default(),
            metering: Metering::default(),
            tls: None,
            admin_tls: None,
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

/// `[host.deployment]`: where this host runs, for providers (`tenant-ctx.deployment`) and for
/// routes that name a `cloud`. Each key left out is taken from the platform
/// ([`Deployment::resolve`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// aws, gcp, azure, hetzner, local, or anything else (default: `$GREENTIC_CLOUD`, else
    /// `local`).
    #[serde(default)]
    pub cloud: Option<String>,
    /// Region, if any (default: `$GREENTIC_REGION`, else Nomad's `$NOMAD_REGION`).
    #[serde(default)]
    pub region: Option<String>,
    /// k8s, nomad, systemd, cf-workers, lambda, baremetal, or anything else (default:
    /// `$GREENTIC_PLATFORM`, else what the environment shows — Kubernetes, Nomad or a systemd
    /// service — else `baremetal`).
    #[serde(default)]
    pub platform: Option<String>,
}

/// Where a host runs, every part decided: what providers see in `tenant-ctx.deployment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentContext {
    /// aws, gcp, azure, hetzner, local, or anything else.
    pub cloud: String,
    /// The region, when one is known.
    pub region: Option<String>,
    /// k8s, nomad, systemd, cf-workers, lambda, baremetal, or anything else.
    pub platform: String,
}

impl Deployment {
    /// Decides every part, the platform's word first: `$GREENTIC_CLOUD`, `$GREENTIC_REGION` and
    /// `$GREENTIC_PLATFORM` (which a Kubernetes downward API, a Nomad job or a systemd unit
    /// set per host), then the bundle's keys (one bundle is shared by every host of a fleet),
    /// then what the environment shows: `$KUBERNETES_SERVICE_HOST` (k8s), `$NOMAD_ALLOC_ID`
    /// and `$NOMAD_REGION` (nomad), `$NOTIFY_SOCKET` with `$INVOCATION_ID` (a systemd
    /// service), then `local` and `baremetal`. `env` looks a variable up; empty counts as unset.
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> DeploymentContext {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let set = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
        let detected = if var("KUBERNETES_SERVICE_HOST").is_some() {
            "k8s"
        } else if var("NOMAD_ALLOC_ID").is_some() {
            "nomad"
        } else if var("NOTIFY_SOCKET").is_some() && var("INVOCATION_ID").is_some() {
            "systemd"
        } else {
            "baremetal"
        };
        let platform = var("GREENTIC_PLATFORM")
            .or_else(|| set(&self.platform))
            .unwrap_or_else(|| detected.to_string());
        let region = var("GREENTIC_REGION")
            .or_else(|| set(&self.region))
            .or_else(|| (platform == "nomad").then(|| var("NOMAD_REGION")).flatten());
        DeploymentContext {
            cloud: var("GREENTIC_CLOUD")
                .or_else(|| set(&self.cloud))
                .unwrap_or_else(|| "local".into()),
            region,
            platform,
        }
    }

    /// [`Deployment::resolve`] with this process's environment.
    pub fn from_environment(&self) -> DeploymentContext {
        self.resolve(|name| std::env::var(name).ok())
    }
}
