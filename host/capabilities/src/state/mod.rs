//! `greentic:state/store`: a key-value store each provider keeps across calls, scoped by the
//! host to (tenant, provider), bounded by the bundle's `[state]` section.
//!
//! The capability is this module: its bundle section ([`StateSection`]), its context
//! ([`StateCtx`], one per runtime), the import's implementation over the call's scope, and
//! the backends behind the async [`StateBackend`] trait, chosen by `[state].type`:
//!
//! - `redb` (default): an embedded database file on local disk ([`redb`](self::redb));
//! - `nats`: a NATS JetStream key-value bucket, shared by every host of a fleet
//!   ([`nats`](self::nats)).
//!
//! A new backend is one file implementing [`StateBackend`] and one arm in [`open`].

pub mod nats;
pub mod redb;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use greentic_manifest::ProviderManifest;
use serde::{Deserialize, Serialize};
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::greentic::state::store::{self, Entry, Host, Page, StateError};
use crate::call::{HasImports, Imports};
use crate::capability::{BundleFacts, Capability, Configured};
use crate::grants::Grants;
use crate::text::clip;

/// The state capability.
pub struct State;

impl Capability for State {
    const NAME: &'static str = "state";
    const INTERFACES: &'static [&'static str] = &["greentic:state/"];

    fn granted(grants: &Grants) -> bool {
        grants.state
    }

    fn ungranted(provider: &str, _: &ProviderManifest) -> String {
        format!(
            "imports `greentic:state/store` but [providers.{provider}].grants.state is false; set `grants.state = true` to let it keep state (scoped to each tenant and this provider)"
        )
    }

    fn add_to_linker<T: HasImports>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        store::add_to_linker::<_, HasSelf<Imports>>(linker, T::imports)
    }
}

impl Configured for State {
    type Section = StateSection;
    type Backend = Arc<StateCtx>;

    fn check(section: &StateSection, _: &BundleFacts<'_>) -> Vec<String> {
        section.problems()
    }

    fn live_change(old: &StateSection, new: &StateSection) -> Option<String> {
        (old != new).then(|| {
            "[state] differs from the running host's; provider state cannot move to another backend while serving: restart the host to change it".to_string()
        })
    }

    fn open(section: &StateSection, dir: &Path) -> anyhow::Result<Arc<StateCtx>> {
        Ok(Arc::new(StateCtx::open(section, dir)?))
    }
}

/// The WIT interface this module implements.
pub const INTERFACE: &str = "greentic:state/store@1.0.0";

/// `[state]`: where provider state is kept and how much of it there may be.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// The backend: `redb` (an embedded database on local disk; the default) or `nats` (a
    /// JetStream key-value bucket).
    #[serde(rename = "type", default = "default_type")]
    pub backend: String,
    /// `redb`: the database file, relative to the bundle (default `.greentic/state.redb`, or `$STATE_DIRECTORY/state.redb` under a service manager that sets it).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `nats`: the server (`nats://HOST:PORT`, `tls://HOST:PORT`).
    #[serde(default)]
    pub url: Option<String>,
    /// `nats`: the key-value bucket (default `greentic-state`).
    #[serde(default)]
    pub bucket: Option<String>,
    /// `nats`: a `.creds` file (JWT and NKey), relative to the bundle.
    #[serde(default)]
    pub credentials: Option<PathBuf>,
    /// `nats`: copies of a bucket the host creates (an existing bucket is used as it is).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Longest key, in bytes.
    #[serde(default = "default_max_key")]
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    #[serde(default = "default_max_value")]
    pub max_value_bytes: usize,
    /// Most bytes (keys and values) one tenant may keep, over all its providers.
    #[serde(default = "default_max_tenant")]
    pub max_tenant_bytes: u64,
    /// Most bytes one provider may keep for one tenant: a provider that fills its share
    /// leaves the tenant's other providers theirs.
    #[serde(default = "default_max_provider")]
    pub max_provider_bytes: u64,
    /// Most keys one `list` returns.
    #[serde(default = "default_max_page")]
    pub max_page: u32,
    /// `nats`: the byte bound of a bucket the host creates (and of an existing one that has
    /// none): what every tenant's state may take of the server's disk together. A write that
    /// would pass it fails `unavailable`.
    #[serde(default = "default_max_bucket_bytes")]
    pub max_bucket_bytes: u64,
}

fn default_replicas() -> usize {
    1
}
fn default_type() -> String {
    "redb".into()
}
fn default_max_key() -> usize {
    512
}
fn default_max_value() -> usize {
    64 << 10
}
fn default_max_tenant() -> u64 {
    16 << 20
}
fn default_max_provider() -> u64 {
    4 << 20
}
fn default_max_page() -> u32 {
    1000
}
/// The default bound of a state bucket: 4 GiB.
pub fn default_max_bucket_bytes() -> u64 {
    4 << 30
}

impl Default for StateSection {
    fn default() -> StateSection {
        StateSection {
            backend: default_type(),
            path: None,
            url: None,
            bucket: None,
            credentials: None,
            replicas: default_replicas(),
            max_key_bytes: default_max_key(),
            max_value_bytes: default_max_value(),
            max_tenant_bytes: default_max_tenant(),
            max_provider_bytes: default_max_provider(),
            max_page: default_max_page(),
            max_bucket_bytes: default_max_bucket_bytes(),
        }
    }
}

impl StateSection {
    /// Problems with the section, each naming the key and what to do.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !BACKENDS.contains(&self.backend.as_str()) {
            problems.push(format!(
                "[state].type `{}` is not a state backend this host has; use one of: {}",
                self.backend,
                BACKENDS.join(", ")
            ));
        }
        if self.backend == "nats" && self.url.is_none() {
            problems.push(
                "[state].type is `nats` but [state].url is missing; set it, e.g. `url = \"nats://127.0.0.1:4222\"`".into(),
            );
        }
        if let Some(bucket) = &self.bucket
            && (bucket.is_empty()
                || !bucket
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            problems.push(format!(
                "[state].bucket `{bucket}` is not a JetStream bucket name (letters, digits, `-` and `_`)"
            ));
        }
        for (key, zero) in [
            ("max_key_bytes", self.max_key_bytes == 0),
            ("max_value_bytes", self.max_value_bytes == 0),
            ("max_tenant_bytes", self.max_tenant_bytes == 0),
            ("max_provider_bytes", self.max_provider_bytes == 0),
            ("max_page", self.max_page == 0),
            ("max_bucket_bytes", self.max_bucket_bytes == 0),
        ] {
            if zero {
                problems.push(format!(
                    "[state].{key} is 0, which refuses every write; remove it for the default or set a positive value"
                ));
            }
        }
        problems
    }
}

/// The backends [`open`] knows, by `[state].type`.
pub const BACKENDS: &[&str] = &["redb", "nats"];

/// The backend `section` names, for a bundle at `bundle_dir`. Nothing is opened or reached
/// until [`StateBackend::open`] or the first operation: `check` never touches a database
/// or server a running host uses.
pub fn open(section: &StateSection, bundle_dir: &Path) -> anyhow::Result<Arc<dyn StateBackend>> {
    match section.backend.as_str() {
        "redb" => {
            let path = match &section.path {
                Some(path) => bundle_dir.join(path),
                None => crate::dirs::state(bundle_dir, "state.redb"),
            };
            Ok(Arc::new(redb::RedbBackend::new(&path)))
        }
        "nats" => {
            let url = section.url.as_deref().ok_or_else(|| {
                anyhow::anyhow!("[state].type is `nats` but [state].url is missing")
            })?;
            Ok(Arc::new(
                nats::NatsBackend::new(
                    url,
                    section.bucket.as_deref().unwrap_or("greentic-state"),
                    section.credentials.as_ref().map(|c| bundle_dir.join(c)),
                )
                .with_replicas(section.replicas)
                .with_max_bytes(section.max_bucket_bytes),
            ))
        }
        other => anyhow::bail!(
            "[state].type `{other}` is not a state backend this host has; use one of: {}",
            BACKENDS.join(", ")
        ),
    }
}

/// Milliseconds since the Unix epoch: the clock expiries and schedule slots are kept in.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether a value expiring at `expires` (0: never) is live at `now`.
pub(crate) fn live(expires: u64, now: u64) -> bool {
    expires == 0 || expires > now
}

/// When each tenant's expired entries were last swept out: a tenant at its bound makes every
/// write of it look for room, and the look (a scan of the tenant) is done at most once per
/// [`Sweeps::EVERY`]; meanwhile a write over the bound is refused as it stands.
#[derive(Debug, Default)]
pub struct Sweeps(std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>);

impl Sweeps {
    /// The least time between two sweeps of one tenant.
    pub const EVERY: Duration = Duration::from_secs(5);

    /// Whether `tenant` may be swept now (and if so, counts it as swept).
    pub fn due(&self, tenant: &str) -> bool {
        let mut last = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        match last.get(tenant) {
            Some(at) if now.duration_since(*at) < Self::EVERY => false,
            _ => {
                if last.len() > 100_000 {
                    last.retain(|_, at| now.duration_since(*at) < Self::EVERY);
                }
                last.insert(tenant.to_string(), now);
                true
            }
        }
    }
}

/// Whose keys an operation touches: the host sets it from the call, never the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// The calling tenant.
    pub tenant: String,
    /// The provider called.
    pub provider: String,
}

/// A value as a backend stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The value.
    pub value: Vec<u8>,
    /// Its revision.
    pub revision: u64,
}

/// A write to make.
#[derive(Debug, Clone)]
pub struct Write {
    /// The value.
    pub value: Vec<u8>,
    /// Expires after this long, if given.
    pub ttl: Option<Duration>,
    /// Only if the current revision is this (0: absent); `None` writes unconditionally.
    pub expected: Option<u64>,
    /// The bounds the write may not take its tenant and provider beyond; `None` for the
    /// host's own records, which are neither bounded nor counted.
    pub bounds: Option<Bounds>,
}

/// What a tenant, and one provider of it, may keep, in bytes (keys and values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Over all the tenant's providers.
    pub tenant: u64,
    /// For this provider of the tenant.
    pub provider: u64,
}

/// Which bound a write would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// [`Bounds::tenant`].
    Tenant,
    /// [`Bounds::provider`].
    Provider,
}

impl Bounds {
    /// Which bound the totals `tenant` and `provider` would pass, if any.
    pub fn passed(&self, tenant: u64, provider: u64) -> Option<(Bound, u64)> {
        if tenant > self.tenant {
            Some((Bound::Tenant, tenant))
        } else if provider > self.provider {
            Some((Bound::Provider, provider))
        } else {
            None
        }
    }
}

/// What a write came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written, with this new revision.
    Ok(u64),
    /// Not written: the current revision differs (0: absent).
    Conflict(u64),
    /// Not written: the tenant, or this provider of it, would keep more than its bound.
    OverQuota {
        /// Which bound.
        bound: Bound,
        /// What it would keep with the write.
        would_be: u64,
    },
}

/// A state store: keys per [`Namespace`], revisions that are never reused, expiry.
///
/// Every method may be called concurrently from many calls; implementations do their I/O
/// without blocking the async executor.
#[async_trait::async_trait]
pub trait StateBackend: Send + Sync {
    /// Opens the database or connects now (a host does before it serves, so a backend it
    /// cannot reach stops it at start); the operations open it on first use otherwise.
    async fn open(&self) -> anyhow::Result<()> {
        Ok(())
    }
    /// The live (unexpired) value of `key`.
    async fn get(&self, ns: &Namespace, key: &str) -> anyhow::Result<Option<Stored>>;
    /// Writes `key` as `write` says.
    async fn put(&self, ns: &Namespace, key: &str, write: Write) -> anyhow::Result<Written>;
    /// Removes `key`; whether a live value was there.
    async fn delete(&self, ns: &Namespace, key: &str) -> anyhow::Result<bool>;
    /// Up to `limit` live keys starting with `prefix`, after `after`, in order; and whether
    /// there are more.
    async fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<(Vec<String>, bool)>;
    /// What the usage counters say `ns`'s tenant and `ns`'s provider of it keep, in bytes
    /// (the figures writes are bounded by).
    async fn usage(&self, ns: &Namespace) -> anyhow::Result<(u64, u64)>;
    /// What `ns`'s tenant and provider keep, measured from the stored entries themselves
    /// (a scan of the tenant): equal to [`StateBackend::usage`] whenever no write is in
    /// flight.
    async fn measure(&self, ns: &Namespace) -> anyhow::Result<(u64, u64)>;
}

/// The state capability of one runtime: the backend and the bundle's bounds.
pub struct StateCtx {
    /// Where state is kept.
    pub backend: Arc<dyn StateBackend>,
    /// The bounds.
    pub section: StateSection,
}

impl StateCtx {
    /// The backend of `section` (not yet opened: see [`StateBackend::open`]).
    pub fn open(section: &StateSection, bundle_dir: &Path) -> anyhow::Result<StateCtx> {
        Ok(StateCtx {
            backend: open(section, bundle_dir)?,
            section: section.clone(),
        })
    }

    fn check_key(&self, key: &str) -> Result<(), StateError> {
        let why = if key.is_empty() {
            "is empty"
        } else if key.len() > self.section.max_key_bytes {
            "is longer than [state].max_key_bytes"
        } else if key.chars().any(char::is_control) {
            "contains a control character"
        } else {
            return Ok(());
        };
        Err(StateError::InvalidKey(format!(
            "key `{}` {why} (keys are 1 to {} bytes of printable UTF-8)",
            clip(key, 128),
            self.section.max_key_bytes
        )))
    }
}

impl Imports {
    fn state_call(&self) -> (Arc<StateCtx>, Namespace) {
        (
            self.scope
                .backends
                .get::<Arc<StateCtx>>()
                .cloned()
                .expect("Backends::open opens the state backend of every revision"),
            Namespace {
                tenant: self.scope.tenant.clone(),
                provider: self.scope.provider.clone(),
            },
        )
    }

    fn state_outcome<T>(&self, op: &str, result: &Result<T, StateError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(StateError::InvalidKey(_)) => "invalid-key",
            Err(StateError::TooLarge(_)) => "too-large",
            Err(StateError::Conflict(_)) => "conflict",
            Err(StateError::Unavailable(_)) => "unavailable",
        };
        self.scope.metrics.inc(
            "greentic_state_ops_total",
            &[
                ("tenant", &self.scope.tenant),
                ("provider", &self.scope.provider),
                ("op", op),
                ("result", outcome),
            ],
        );
    }
}

/// A backend failure as the guest sees it (logged in full, answered briefly).
fn unavailable(ns: &Namespace, op: &str, e: anyhow::Error) -> StateError {
    tracing::error!(
        tenant = %ns.tenant, provider = %ns.provider, op, error = %format!("{e:#}"),
        "state backend failed"
    );
    StateError::Unavailable(format!("the state backend failed during {op}; retry later"))
}

fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

impl Imports {
    async fn state_write(
        &mut self,
        op: &'static str,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        let (ctx, ns) = self.state_call();
        ctx.check_key(&key)?;
        if value.len() > ctx.section.max_value_bytes {
            return Err(StateError::TooLarge(format!(
                "a value of {} bytes is over [state].max_value_bytes ({})",
                value.len(),
                ctx.section.max_value_bytes
            )));
        }
        let write = Write {
            value,
            ttl: ttl(ttl_ms),
            expected,
            bounds: Some(Bounds {
                tenant: ctx.section.max_tenant_bytes,
                provider: ctx.section.max_provider_bytes,
            }),
        };
        match ctx.backend.put(&ns, &key, write).await {
            Ok(Written::Ok(revision)) => Ok(revision),
            Ok(Written::Conflict(current)) => Err(StateError::Conflict(current)),
            Ok(Written::OverQuota {
                bound: Bound::Tenant,
                would_be,
            }) => Err(StateError::TooLarge(format!(
                "the tenant would keep {would_be} bytes of state, over [state].max_tenant_bytes ({})",
                ctx.section.max_tenant_bytes
            ))),
            Ok(Written::OverQuota {
                bound: Bound::Provider,
                would_be,
            }) => Err(StateError::TooLarge(format!(
                "this provider would keep {would_be} bytes of the tenant's state, over [state].max_provider_bytes ({})",
                ctx.section.max_provider_bytes
            ))),
            Err(e) => Err(unavailable(&ns, op, e)),
        }
    }
}

impl Host for Imports {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Entry>, StateError>> {
        let (ctx, ns) = self.state_call();
        let result = match ctx.check_key(&key) {
            Err(e) => Err(e),
            Ok(()) => match ctx.backend.get(&ns, &key).await {
                Ok(found) => Ok(found.map(|s| Entry {
                    value: s.value,
                    revision: s.revision,
                })),
                Err(e) => Err(unavailable(&ns, "get", e)),
            },
        };
        self.state_outcome("get", &result);
        Ok(result)
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<u64, StateError>> {
        let result = self.state_write("set", key, value, ttl_ms, None).await;
        self.state_outcome("set", &result);
        Ok(result)
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, StateError>> {
        let (ctx, ns) = self.state_call();
        let result = match ctx.check_key(&key) {
            Err(e) => Err(e),
            Ok(()) => ctx
                .backend
                .delete(&ns, &key)
                .await
                .map_err(|e| unavailable(&ns, "delete", e)),
        };
        self.state_outcome("delete", &result);
        Ok(result)
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: u64,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<u64, StateError>> {
        let result = self
            .state_write("compare-and-swap", key, value, ttl_ms, Some(expected))
            .await;
        self.state_outcome("compare-and-swap", &result);
        Ok(result)
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<Page, StateError>> {
        let (ctx, ns) = self.state_call();
        let result = if prefix.len() > ctx.section.max_key_bytes
            || after
                .as_ref()
                .is_some_and(|a| a.len() > ctx.section.max_key_bytes)
        {
            Err(StateError::InvalidKey(format!(
                "a prefix or `after` key is longer than [state].max_key_bytes ({})",
                ctx.section.max_key_bytes
            )))
        } else {
            let limit = limit.clamp(1, ctx.section.max_page) as usize;
            // The page the backend may hold while it lists (and the guest then receives)
            // is the call's to pay for: at most `limit + 1` keys of the longest length.
            let page_bytes = (limit as u64 + 1) * (ctx.section.max_key_bytes as u64 + 64);
            let charge = match self
                .budget
                .shared()
                .try_charge(page_bytes, "a list-keys page")
            {
                Ok(charge) => charge,
                Err(hit) => return Err(wasmtime::Error::new(hit)),
            };
            let listed = match ctx
                .backend
                .list(&ns, &prefix, after.as_deref(), limit)
                .await
            {
                Ok((keys, more)) => Ok(Page {
                    next: if more { keys.last().cloned() } else { None },
                    keys,
                }),
                Err(e) => Err(unavailable(&ns, "list-keys", e)),
            };
            drop(charge);
            listed
        };
        self.state_outcome("list-keys", &result);
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_that_cannot_work_is_refused_naming_the_key_and_the_fix() {
        assert!(StateSection::default().problems().is_empty());
        let section = |text: &str| -> StateSection { toml::from_str(text).unwrap() };
        let unknown = section("type = \"dynamo\"").problems();
        assert!(
            unknown[0].contains("`dynamo`") && unknown[0].contains("redb, nats"),
            "{unknown:?}"
        );
        let no_url = section("type = \"nats\"").problems();
        assert!(no_url[0].contains("[state].url is missing"), "{no_url:?}");
        let bucket = section("type = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nbucket = \"a.b\"")
            .problems();
        assert!(bucket[0].contains("`a.b`"), "{bucket:?}");
        let zero = section("max_provider_bytes = 0").problems();
        assert!(zero[0].contains("max_provider_bytes is 0"), "{zero:?}");
        assert!(toml::from_str::<StateSection>("kind = \"redb\"").is_err());
    }
}

/// What every backend must do: run against each backend by its own tests.
#[cfg(test)]
pub(crate) mod contract {
    use std::time::Duration;

    use super::{Bounds, Namespace, StateBackend, Write, Written};

    fn ns(tenant: &str, provider: &str) -> Namespace {
        Namespace {
            tenant: tenant.into(),
            provider: provider.into(),
        }
    }

    fn write(value: &[u8]) -> Write {
        Write {
            value: value.to_vec(),
            ttl: None,
            expected: None,
            bounds: Some(Bounds {
                tenant: 1 << 20,
                provider: 1 << 20,
            }),
        }
    }

    async fn written(db: &dyn StateBackend, ns: &Namespace, key: &str, w: Write) -> u64 {
        match db.put(ns, key, w).await.unwrap() {
            Written::Ok(revision) => revision,
            other => panic!("{key}: {other:?}"),
        }
    }

    /// Keys are scoped by tenant and provider; revisions grow and are never reused;
    /// compare-and-swap checks them, also across a delete and re-create.
    pub async fn scoping_revisions_and_cas(db: &dyn StateBackend) {
        let (a, b, other) = (ns("acme", "p"), ns("globex", "p"), ns("acme", "q"));
        let r1 = written(db, &a, "k", write(b"1")).await;
        assert_eq!(db.get(&b, "k").await.unwrap(), None, "another tenant");
        assert_eq!(db.get(&other, "k").await.unwrap(), None, "another provider");
        assert_eq!(db.get(&a, "k").await.unwrap().unwrap().value, b"1");
        let cas = |expected| Write {
            expected: Some(expected),
            ..write(b"2")
        };
        assert_eq!(
            db.put(&a, "k", cas(0)).await.unwrap(),
            Written::Conflict(r1)
        );
        let r2 = written(db, &a, "k", cas(r1)).await;
        assert!(r2 > r1);
        assert_eq!(
            db.put(&a, "k", cas(r1)).await.unwrap(),
            Written::Conflict(r2)
        );
        assert!(db.delete(&a, "k").await.unwrap());
        assert!(!db.delete(&a, "k").await.unwrap());
        assert_eq!(db.get(&a, "k").await.unwrap(), None);
        let r3 = written(db, &a, "k", cas(0)).await;
        assert!(r3 > r2, "a re-created key gets a new revision");
        // Keys are any printable text, and a host-only namespace is apart from the provider's.
        let odd = "delivery/ä ö.#*>";
        written(db, &a, odd, write(b"x")).await;
        assert_eq!(db.get(&a, odd).await.unwrap().unwrap().value, b"x");
        assert_eq!(db.get(&ns("acme", "p#schedules"), odd).await.unwrap(), None);
    }

    /// Expired values read as absent; listing pages by prefix in order; the tenant bound
    /// counts every provider of the tenant, and expired values make room.
    pub async fn expiry_paging_and_the_tenant_bound(db: &dyn StateBackend) {
        let a = ns("acme", "lists");
        for i in 0..5 {
            written(db, &a, &format!("item/{i}"), write(b"v")).await;
        }
        written(db, &a, "other", write(b"v")).await;
        let (page, more) = db.list(&a, "item/", None, 2).await.unwrap();
        assert_eq!(page, ["item/0", "item/1"]);
        assert!(more);
        let (page, more) = db.list(&a, "item/", Some("item/1"), 10).await.unwrap();
        assert_eq!(page, ["item/2", "item/3", "item/4"]);
        assert!(!more);

        let short = Write {
            ttl: Some(Duration::from_millis(1)),
            ..write(&[1; 300])
        };
        written(db, &ns("bounded", "p"), "ttl", short).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(db.get(&ns("bounded", "p"), "ttl").await.unwrap(), None);
        let (page, _) = db.list(&ns("bounded", "p"), "", None, 10).await.unwrap();
        assert!(page.is_empty(), "expired keys are not listed: {page:?}");

        let big = |n: usize| Write {
            bounds: Some(Bounds {
                tenant: 400,
                provider: 400,
            }),
            ..write(&vec![7; n])
        };
        assert!(matches!(
            db.put(&ns("bounded", "q"), "big", big(400)).await.unwrap(),
            Written::OverQuota { .. }
        ));
        // 300 expired bytes do not count: this fits.
        assert!(matches!(
            db.put(&ns("bounded", "q"), "fits", big(200)).await.unwrap(),
            Written::Ok(_)
        ));
        assert!(matches!(
            db.put(&ns("bounded", "p"), "more", big(200)).await.unwrap(),
            Written::OverQuota { .. }
        ));
        // Another tenant's bound is its own.
        assert!(matches!(
            db.put(&ns("roomy", "q"), "big", big(300)).await.unwrap(),
            Written::Ok(_)
        ));
        // One provider filling its share leaves the tenant's other providers theirs.
        let shared = |n: usize| Write {
            bounds: Some(Bounds {
                tenant: 1000,
                provider: 400,
            }),
            ..write(&vec![7; n])
        };
        assert!(matches!(
            db.put(&ns("shares", "hog"), "a", shared(300))
                .await
                .unwrap(),
            Written::Ok(_)
        ));
        assert!(matches!(
            db.put(&ns("shares", "hog"), "b", shared(300))
                .await
                .unwrap(),
            Written::OverQuota {
                bound: super::Bound::Provider,
                ..
            }
        ));
        assert!(matches!(
            db.put(&ns("shares", "other"), "a", shared(300))
                .await
                .unwrap(),
            Written::Ok(_)
        ));
        // Deleting gives the provider its room back.
        assert!(db.delete(&ns("shares", "hog"), "a").await.unwrap());
        assert!(matches!(
            db.put(&ns("shares", "hog"), "b", shared(300))
                .await
                .unwrap(),
            Written::Ok(_)
        ));
    }

    /// Concurrent sets, deletes and compare-and-swaps of a few keys — several racing on each
    /// key, from as many connections as `dbs` holds (two hosts of a fleet) — leave the usage
    /// counters of the tenant and of each provider equal to the bytes actually stored.
    pub async fn usage_is_exact_under_concurrent_storms(dbs: &[std::sync::Arc<dyn StateBackend>]) {
        let tenant = "storm";
        let providers = ["p", "q"];
        let mut tasks = Vec::new();
        for worker in 0..8usize {
            let db = dbs[worker % dbs.len()].clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(worker as u64);
                for _ in 0..60 {
                    let n = ns(tenant, providers[rng.usize(..providers.len())]);
                    let key = format!("k{}", rng.usize(..4));
                    match rng.u8(..4) {
                        0 => {
                            db.delete(&n, &key).await.unwrap();
                        }
                        1 => {
                            let current = db.get(&n, &key).await.unwrap().map_or(0, |s| s.revision);
                            let w = Write {
                                expected: Some(current),
                                ..write(&vec![1; rng.usize(1..200)])
                            };
                            db.put(&n, &key, w).await.unwrap();
                        }
                        _ => {
                            db.put(&n, &key, write(&vec![2; rng.usize(1..200)]))
                                .await
                                .unwrap();
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let db = &dbs[0];
        for provider in providers {
            let n = ns(tenant, provider);
            let counted = db.usage(&n).await.unwrap();
            let stored = db.measure(&n).await.unwrap();
            assert_eq!(
                counted, stored,
                "usage (tenant, provider {provider}) as counted vs as stored"
            );
        }
        // Deleting everything brings both counters back to zero.
        for provider in providers {
            let n = ns(tenant, provider);
            for k in 0..4 {
                db.delete(&n, &format!("k{k}")).await.unwrap();
            }
        }
        assert_eq!(db.usage(&ns(tenant, "p")).await.unwrap(), (0, 0));
        assert_eq!(db.usage(&ns(tenant, "q")).await.unwrap(), (0, 0));
    }

    /// What the two tests above wrote, read through a backend opened anew.
    pub async fn still_there_after_a_restart(db: &dyn StateBackend) {
        let a = ns("acme", "lists");
        assert_eq!(db.get(&a, "item/3").await.unwrap().unwrap().value, b"v");
        assert_eq!(
            db.get(&ns("acme", "p"), "k").await.unwrap().unwrap().value,
            b"2"
        );
    }
}
