//! The embedded state backend: one `redb` database file on local disk.
//!
//! Entries are keyed `tenant NUL provider NUL key` (tenant and provider names and keys never
//! contain NUL), each stored with its revision and expiry; revisions come from one counter in
//! the database, so a revision is never reused, even after a delete. Each tenant's total, and
//! each of its providers' (key and value bytes), is kept beside the entries and updated in the
//! same transaction.
//! Expired entries read as absent and are removed when a write needs the room. Every commit
//! is durable (fsync) before the guest sees its revision. redb's I/O is blocking, so every
//! operation runs on tokio's blocking pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Namespace, StateBackend, Stored, Sweeps, Write, Written, live, now_ms};

const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
const USAGE: TableDefinition<&str, u64> = TableDefinition::new("tenant_bytes");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
/// Bytes of revision and expiry before each stored value.
const HEADER: usize = 16;

/// A `redb` database holding every tenant's state, opened on first use (so `check` never
/// takes the file's lock from a host serving it).
pub struct RedbBackend {
    path: PathBuf,
    db: tokio::sync::OnceCell<Arc<Database>>,
    sweeps: Arc<Sweeps>,
}

impl RedbBackend {
    /// The database at `path`; nothing is opened yet.
    pub fn new(path: &Path) -> RedbBackend {
        RedbBackend {
            path: path.to_path_buf(),
            db: tokio::sync::OnceCell::new(),
            sweeps: Arc::default(),
        }
    }

    async fn db(&self) -> anyhow::Result<Arc<Database>> {
        let path = self.path.clone();
        self.db
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || create(&path))
                    .await
                    .context("the state task panicked")?
            })
            .await
            .cloned()
    }
}

/// Opens (creating if missing) the database at `path`.
fn create(path: &Path) -> anyhow::Result<Arc<Database>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the state directory {}", dir.display()))?;
    }
    let db = Database::create(path).with_context(|| {
        format!(
            "opening the state database {} (is another host using it? set [state].path)",
            path.display()
        )
    })?;
    let txn = db.begin_write()?;
    {
        txn.open_table(ENTRIES)?;
        txn.open_table(USAGE)?;
        txn.open_table(META)?;
    }
    txn.commit()?;
    Ok(Arc::new(db))
}

impl RedbBackend {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let db = self.db().await?;
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .context("the state task panicked")?
    }
}

fn tenant_prefix(tenant: &str) -> Vec<u8> {
    let mut k = tenant.as_bytes().to_vec();
    k.push(0);
    k
}

fn ns_prefix(ns: &Namespace) -> Vec<u8> {
    let mut k = tenant_prefix(&ns.tenant);
    k.extend_from_slice(ns.provider.as_bytes());
    k.push(0);
    k
}

fn full_key(ns: &Namespace, key: &str) -> Vec<u8> {
    let mut k = ns_prefix(ns);
    k.extend_from_slice(key.as_bytes());
    k
}

/// A decoded stored value: revision, expiry (0: none), value.
fn decode(raw: &[u8]) -> (u64, u64, &[u8]) {
    let revision = u64::from_be_bytes(raw[..8].try_into().unwrap_or_default());
    let expires = u64::from_be_bytes(raw[8..HEADER].try_into().unwrap_or_default());
    (revision, expires, &raw[HEADER..])
}

/// What an entry counts against its tenant's total.
fn weight(full_key_len: usize, raw_len: usize) -> u64 {
    (full_key_len + raw_len) as u64
}

#[async_trait::async_trait]
impl StateBackend for RedbBackend {
    async fn open(&self) -> anyhow::Result<()> {
        self.db().await.map(drop)
    }

    async fn get(&self, ns: &Namespace, key: &str) -> anyhow::Result<Option<Stored>> {
        let k = full_key(ns, key);
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(ENTRIES)?;
            let Some(raw) = table.get(k.as_slice())? else {
                return Ok(None);
            };
            let raw = raw.value();
            let (revision, expires, value) = decode(raw);
            Ok(live(expires, now_ms()).then(|| Stored {
                value: value.to_vec(),
                revision,
            }))
        })
        .await
    }

    async fn put(&self, ns: &Namespace, key: &str, write: Write) -> anyhow::Result<Written> {
        let k = full_key(ns, key);
        let tenant = ns.tenant.clone();
        let provider = provider_usage_key(ns);
        let sweeps = self.sweeps.clone();
        self.blocking(move |db| {
            let now = now_ms();
            let txn = db.begin_write()?;
            // Expired entries swept out stay swept, whether or not the write then fits.
            let mut swept = false;
            let outcome = {
                let mut entries = txn.open_table(ENTRIES)?;
                let mut usage = txn.open_table(USAGE)?;
                let mut meta = txn.open_table(META)?;
                let old = entries.get(k.as_slice())?.map(|raw| {
                    let raw = raw.value();
                    let (revision, expires, _) = decode(raw);
                    (revision, live(expires, now), raw.len())
                });
                let current = match old {
                    Some((revision, true, _)) => revision,
                    _ => 0,
                };
                if let Some(expected) = write.expected
                    && expected != current
                {
                    Written::Conflict(current)
                } else {
                    let new_len = HEADER + write.value.len();
                    let old_weight = old.map_or(0, |(_, _, len)| weight(k.len(), len));
                    let new_weight = weight(k.len(), new_len);
                    // What the tenant and the provider would keep with the write.
                    let totals = |usage: &redb::Table<&str, u64>| -> anyhow::Result<(u64, u64)> {
                        let get = |key: &str| -> anyhow::Result<u64> {
                            Ok(usage.get(key)?.map_or(0, |v| v.value()))
                        };
                        let after = |used: u64| used - old_weight.min(used) + new_weight;
                        Ok((after(get(&tenant)?), after(get(&provider)?)))
                    };
                    let mut passed = None;
                    let mut would = (0, 0);
                    // The host's own records (no bounds) are neither bounded nor counted.
                    if let Some(bounds) = write.bounds {
                        would = totals(&usage)?;
                        passed = bounds.passed(would.0, would.1);
                        if passed.is_some() && sweeps.due(&tenant) {
                            purge_expired(&mut entries, &mut usage, &tenant, now)?;
                            swept = true;
                            would = totals(&usage)?;
                            passed = bounds.passed(would.0, would.1);
                        }
                    }
                    if let Some((bound, would_be)) = passed {
                        Written::OverQuota { bound, would_be }
                    } else {
                        let revision = meta.get(REVISION)?.map_or(0, |v| v.value()) + 1;
                        meta.insert(REVISION, revision)?;
                        let expires = write
                            .ttl
                            .map_or(0, |ttl| now.saturating_add(ttl.as_millis() as u64).max(1));
                        let mut raw = Vec::with_capacity(new_len);
                        raw.extend_from_slice(&revision.to_be_bytes());
                        raw.extend_from_slice(&expires.to_be_bytes());
                        raw.extend_from_slice(&write.value);
                        entries.insert(k.as_slice(), raw.as_slice())?;
                        if write.bounds.is_some() {
                            usage.insert(tenant.as_str(), would.0)?;
                            usage.insert(provider.as_str(), would.1)?;
                        }
                        Written::Ok(revision)
                    }
                }
            };
            if matches!(outcome, Written::Ok(_)) || swept {
                txn.commit()?;
            } else {
                txn.abort()?;
            }
            Ok(outcome)
        })
        .await
    }

    async fn delete(&self, ns: &Namespace, key: &str) -> anyhow::Result<bool> {
        let k = full_key(ns, key);
        let tenant = ns.tenant.clone();
        let provider = provider_usage_key(ns);
        let uncounted = ns.provider.contains('#');
        self.blocking(move |db| {
            let now = now_ms();
            let txn = db.begin_write()?;
            let was_live = {
                let mut entries = txn.open_table(ENTRIES)?;
                let mut usage = txn.open_table(USAGE)?;
                let removed = entries.remove(k.as_slice())?.map(|raw| {
                    let raw = raw.value();
                    (live(decode(raw).1, now), raw.len())
                });
                match removed {
                    None => false,
                    // The host's own records were never counted.
                    Some((was_live, _)) if uncounted => was_live,
                    Some((was_live, len)) => {
                        let w = weight(k.len(), len);
                        for key in [tenant.as_str(), provider.as_str()] {
                            let used = usage.get(key)?.map_or(0, |v| v.value());
                            usage.insert(key, used - w.min(used))?;
                        }
                        was_live
                    }
                }
            };
            txn.commit()?;
            Ok(was_live)
        })
        .await
    }

    async fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<(Vec<String>, bool)> {
        let base = ns_prefix(ns);
        let mut start = full_key(ns, prefix);
        if let Some(after) = after {
            let after = full_key(ns, after);
            if after > start {
                start = after;
                start.push(0); // the first key after `after`
            }
        }
        let stop = full_key(ns, prefix);
        self.blocking(move |db| {
            let now = now_ms();
            let txn = db.begin_read()?;
            let table = txn.open_table(ENTRIES)?;
            let mut keys = Vec::new();
            for item in table.range(start.as_slice()..)? {
                let (k, raw) = item?;
                let k = k.value();
                if !k.starts_with(&stop) {
                    break;
                }
                if !live(decode(raw.value()).1, now) {
                    continue;
                }
                if keys.len() == limit {
                    return Ok((keys, true));
                }
                keys.push(String::from_utf8_lossy(&k[base.len()..]).into_owned());
            }
            Ok((keys, false))
        })
        .await
    }

    async fn usage(&self, ns: &Namespace) -> anyhow::Result<(u64, u64)> {
        let (tenant, provider) = (ns.tenant.clone(), provider_usage_key(ns));
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let usage = txn.open_table(USAGE)?;
            let get =
                |key: &str| -> anyhow::Result<u64> { Ok(usage.get(key)?.map_or(0, |v| v.value())) };
            Ok((get(&tenant)?, get(&provider)?))
        })
        .await
    }

    async fn measure(&self, ns: &Namespace) -> anyhow::Result<(u64, u64)> {
        let tenant = tenant_prefix(&ns.tenant);
        let mine = ns_prefix(ns);
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let entries = txn.open_table(ENTRIES)?;
            let (mut all, mut provider) = (0, 0);
            for item in entries.range(tenant.as_slice()..)? {
                let (k, raw) = item?;
                let k = k.value();
                if !k.starts_with(&tenant) {
                    break;
                }
                // The host's own records (a `#` in the provider part) are not counted.
                let provider_part = k[tenant.len()..].split(|b| *b == 0).next().unwrap_or(&[]);
                if provider_part.contains(&b'#') {
                    continue;
                }
                let w = weight(k.len(), raw.value().len());
                all += w;
                if k.starts_with(&mine) {
                    provider += w;
                }
            }
            Ok((all, provider))
        })
        .await
    }
}

/// Removes the tenant's expired entries, taking their bytes off the tenant's and each
/// provider's totals.
fn purge_expired(
    entries: &mut redb::Table<&[u8], &[u8]>,
    usage: &mut redb::Table<&str, u64>,
    tenant: &str,
    now: u64,
) -> anyhow::Result<()> {
    let prefix = tenant_prefix(tenant);
    let mut expired = Vec::new();
    for item in entries.range(prefix.as_slice()..)? {
        let (k, raw) = item?;
        let k = k.value();
        if !k.starts_with(&prefix) {
            break;
        }
        let raw = raw.value();
        if !live(decode(raw).1, now) {
            expired.push((k.to_vec(), weight(k.len(), raw.len())));
        }
    }
    for (k, w) in expired {
        entries.remove(k.as_slice())?;
        let provider = k[prefix.len()..]
            .split(|b| *b == 0)
            .next()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let provider_key = provider_usage_key(&Namespace {
            tenant: tenant.to_string(),
            provider,
        });
        for key in [tenant, provider_key.as_str()] {
            let used = usage.get(key)?.map_or(0, |v| v.value());
            usage.insert(key, used - w.min(used))?;
        }
    }
    Ok(())
}

/// Where a provider's total for a tenant is kept in the usage table (tenant ids hold no NUL,
/// so this never meets a tenant's own key).
fn provider_usage_key(ns: &Namespace) -> String {
    format!("{}\u{0}{}", ns.tenant, ns.provider)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::contract;

    #[tokio::test]
    async fn keeps_the_state_contract_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let db = RedbBackend::new(&path);
        db.open().await.unwrap();
        contract::scoping_revisions_and_cas(&db).await;
        contract::expiry_paging_and_the_tenant_bound(&db).await;
        drop(db);
        let db = RedbBackend::new(&path);
        contract::still_there_after_a_restart(&db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn usage_stays_exact_under_concurrent_storms() {
        let dir = tempfile::tempdir().unwrap();
        let db: Arc<dyn StateBackend> = Arc::new(RedbBackend::new(&dir.path().join("s.redb")));
        contract::usage_is_exact_under_concurrent_storms(&[db]).await;
    }
}
