//! `[cluster]`: joining a fleet — the NATS server, the publishers' keys, heartbeats, fleet-wide
//! limits, durable deliveries and the bounds of every bucket and stream the fleet keeps.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[cluster]`: joining a fleet (`greentic-host run --cluster URL` overrides `url`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// The NATS server: `nats://HOST:PORT`, or `tls://HOST:PORT` for TLS. Unset: no fleet.
    #[serde(default)]
    pub url: Option<String>,
    /// A NATS `.creds` file (user JWT and NKey seed), relative to the bundle.
    #[serde(default)]
    pub credentials: Option<PathBuf>,
    /// TLS to the NATS server with a private PKI: `{ca, cert, key}` — the CA bundle (PEM) the
    /// server's certificate must chain to (nothing else is trusted), and this host's client
    /// certificate and key for a server that verifies clients. Set, the connection must be TLS.
    #[serde(default)]
    pub tls: Option<greentic_tls::ClientFiles>,
    /// Prefix of the buckets and streams the fleet keeps (letters, digits, `-`, `_`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Names of `[trust.keys]` whose signatures a published revision may carry. A host
    /// applies no published revision without one.
    #[serde(default)]
    pub publishers: Vec<String>,
    /// Milliseconds between heartbeats.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// Seconds after its last heartbeat that a host is gone from `fleet status` (and its
    /// leadership free).
    #[serde(default = "default_host_ttl")]
    pub host_ttl_secs: u64,
    /// Copies of each bucket the fleet creates (an existing one is left as it is).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Seconds an idempotency record (and the result it keeps) lives.
    #[serde(default = "default_idempotency_ttl")]
    pub idempotency_ttl_secs: u64,
    /// Whether tenants' `max_concurrent` and `fuel_per_second` hold fleet-wide (on) or per
    /// host.
    #[serde(default = "default_true")]
    pub fleet_limits: bool,
    /// Milliseconds a host may hold a durable delivery without acknowledging it before it is
    /// redelivered to another host (longer than a delivery's deadline and queue time).
    #[serde(default = "default_ack_wait")]
    pub delivery_ack_wait_ms: u64,
    /// Attempts at a durable delivery before it is given up.
    #[serde(default = "default_attempts")]
    pub delivery_max_attempts: u32,
    /// Where a host keeps what it must remember across restarts — the newest revision it
    /// applied (its high-water mark) and that revision's signed record — relative to the
    /// bundle (default `.greentic/fleet`, or `$STATE_DIRECTORY/fleet` under a service manager
    /// that sets it). It must be writable.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Seconds a durable delivery may wait in its queue before it is dropped unhandled.
    #[serde(default = "default_delivery_max_age")]
    pub delivery_max_age_secs: u64,
    /// The byte bound of each bucket and stream the fleet keeps (`[cluster.max_bytes]`).
    #[serde(default)]
    pub max_bytes: StorageBounds,
}

/// `[cluster.max_bytes]`: what each bucket and stream the fleet creates may hold, in bytes.
/// A bucket or stream found without a bound (made by an earlier version) is given it; one an
/// operator bounded is left as it is. A write past a bound is refused (`507 storage-full` to
/// a caller whose call needed it), never made room for by dropping what was acknowledged.
/// Each tenant's durable delivery queue is bounded by the tenant's own limits
/// (`queued_deliveries`, `queued_delivery_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageBounds {
    /// Published revisions and canary verdicts (default 64 MiB).
    #[serde(default = "default_revisions_bytes")]
    pub revisions: u64,
    /// Heartbeats and the leader's lease (default 16 MiB).
    #[serde(default = "default_hosts_bytes")]
    pub hosts: u64,
    /// Fleet-wide concurrency slots (default 64 MiB).
    #[serde(default = "default_counter_bytes")]
    pub slots: u64,
    /// Fleet-wide fuel counters (default 64 MiB).
    #[serde(default = "default_counter_bytes")]
    pub fuel: u64,
    /// Idempotency records and the results they keep (default 1 GiB).
    #[serde(default = "default_idempotency_bytes")]
    pub idempotency: u64,
    /// The counters of durable deliveries accepted per tenant and second (default 64 MiB).
    #[serde(default = "default_counter_bytes")]
    pub delivery_rates: u64,
}

fn default_revisions_bytes() -> u64 {
    64 << 20
}
fn default_hosts_bytes() -> u64 {
    16 << 20
}
fn default_counter_bytes() -> u64 {
    64 << 20
}
fn default_idempotency_bytes() -> u64 {
    1 << 30
}
fn default_delivery_max_age() -> u64 {
    7 * 24 * 3600
}

impl Default for StorageBounds {
    fn default() -> StorageBounds {
        StorageBounds {
            revisions: default_revisions_bytes(),
            hosts: default_hosts_bytes(),
            slots: default_counter_bytes(),
            fuel: default_counter_bytes(),
            idempotency: default_idempotency_bytes(),
            delivery_rates: default_counter_bytes(),
        }
    }
}

fn default_prefix() -> String {
    "greentic".into()
}
fn default_heartbeat() -> u64 {
    2_000
}
fn default_host_ttl() -> u64 {
    10
}
fn default_replicas() -> usize {
    1
}
fn default_idempotency_ttl() -> u64 {
    24 * 3600
}
fn default_true() -> bool {
    true
}
fn default_ack_wait() -> u64 {
    60_000
}
fn default_attempts() -> u32 {
    10
}

impl Default for ClusterSection {
    fn default() -> ClusterSection {
        ClusterSection {
            url: None,
            credentials: None,
            tls: None,
            prefix: default_prefix(),
            publishers: Vec::new(),
            heartbeat_ms: default_heartbeat(),
            host_ttl_secs: default_host_ttl(),
            replicas: default_replicas(),
            idempotency_ttl_secs: default_idempotency_ttl(),
            fleet_limits: true,
            delivery_ack_wait_ms: default_ack_wait(),
            delivery_max_attempts: default_attempts(),
            state_dir: None,
            delivery_max_age_secs: default_delivery_max_age(),
            max_bytes: StorageBounds::default(),
        }
    }
}

impl ClusterSection {
    /// What is wrong with the section, each naming the field.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(tls) = &self.tls {
            if tls.ca.is_none() {
                out.push("[cluster].tls needs `ca`, the CA certificates (PEM) the NATS server's certificate must chain to".into());
            }
            if tls.cert.is_some() != tls.key.is_some() {
                out.push("[cluster].tls: a client certificate needs both `cert` and `key`".into());
            }
        }
        if self.prefix.is_empty()
            || self.prefix.len() > 32
            || !self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            out.push(format!(
                "[cluster].prefix `{}` must be 1 to 32 letters, digits, `-` or `_`",
                greentic_manifest::clip_middle(&self.prefix, 64)
            ));
        }
        if self.heartbeat_ms < 100 || self.heartbeat_ms > 60_000 {
            out.push("[cluster].heartbeat_ms must be between 100 and 60000".into());
        }
        if self.host_ttl_secs * 1000 < self.heartbeat_ms * 2 {
            out.push(
                "[cluster].host_ttl_secs must be at least two heartbeats, or live hosts vanish"
                    .into(),
            );
        }
        if self.replicas == 0 || self.replicas > 5 {
            out.push("[cluster].replicas must be between 1 and 5".into());
        }
        if self.delivery_ack_wait_ms < 1_000 {
            out.push("[cluster].delivery_ack_wait_ms must be at least 1000".into());
        }
        if self.delivery_max_attempts == 0 {
            out.push("[cluster].delivery_max_attempts must be positive".into());
        }
        if self.idempotency_ttl_secs == 0 {
            out.push("[cluster].idempotency_ttl_secs must be positive".into());
        }
        if self.delivery_max_age_secs < 60 {
            out.push("[cluster].delivery_max_age_secs must be at least 60".into());
        }
        let b = &self.max_bytes;
        for (key, value) in [
            ("revisions", b.revisions),
            ("hosts", b.hosts),
            ("slots", b.slots),
            ("fuel", b.fuel),
            ("idempotency", b.idempotency),
            ("delivery_rates", b.delivery_rates),
        ] {
            if value < 1 << 20 {
                out.push(format!(
                    "[cluster].max_bytes.{key} is {value}; a bucket that small fills at once: give it at least 1048576 (1 MiB)"
                ));
            }
        }
        out
    }
}
