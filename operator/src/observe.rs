//! Observing classes: each `ProviderClass` is loaded by the host's own loader — resolved,
//! fetched by digest, its signature and attestations verified, its WIT checked against its
//! grants, compiled — exactly as every host will load it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use greentic_bundle::{Bundle, BundleFile, Lock, LockEntry, ProviderSection};
use greentic_engine::compile::{HostEngine, PoolSizing};
use greentic_engine::provider::LoadedProvider;
use greentic_revisions::{LoadOptions, load_each};

use crate::crd::ProviderClass;
use crate::reconcile::{
    ClassCheck, KeyNames, Publication, PublishedState, Resolved, class_section,
};

/// Checks classes with the host's loader, remembering each result for a while (a tag is
/// resolved again after `recheck`; a changed spec at once).
pub struct Checker {
    dir: PathBuf,
    base: BundleFile,
    engine: HostEngine,
    recheck: Duration,
    memo: Mutex<BTreeMap<String, (String, Instant, ClassCheck)>>,
}

impl Checker {
    /// A checker resolving paths (keys, caches) against `dir`, with `base`'s `[trust]`.
    pub fn new(dir: &Path, base: &BundleFile, recheck: Duration) -> anyhow::Result<Checker> {
        let engine = HostEngine::new(PoolSizing {
            instances: 4,
            max_memory_bytes: 64 << 20,
            metering: Default::default(),
        })?;
        Ok(Checker {
            dir: dir.to_path_buf(),
            base: base.clone(),
            engine,
            recheck,
            memo: Mutex::new(BTreeMap::new()),
        })
    }

    /// Checks `class`; `published` is the fleet's revision, whose provider of the same name is
    /// loaded too when it differs (what the fleet keeps if the class now fails).
    pub fn check(&self, class: &ProviderClass, published: Option<&PublishedState>) -> ClassCheck {
        let name = class.metadata.name.clone().unwrap_or_default();
        let pinned = published.and_then(|p| {
            Some((
                p.bundle.providers.get(&name)?.clone(),
                p.lock.providers.get(&name)?.clone(),
            ))
        });
        let key = format!(
            "{}|{:?}|{:?}",
            serde_json::to_string(&class.spec).unwrap_or_default(),
            class.metadata.generation,
            pinned.as_ref().map(|(_, l)| &l.digest)
        );
        if let Ok(memo) = self.memo.lock()
            && let Some((k, at, check)) = memo.get(&name)
            && *k == key
            && at.elapsed() < self.recheck
        {
            return check.clone();
        }
        let section = class_section(class);
        let current = self.load_with(&name, &section, None, false);
        let published = match (&current, pinned) {
            // The fleet serves this very component: if a reconcile-level check (such as a
            // tightened `compat`) now refuses it, the served version is this one.
            (Ok(r), Some((_, lock))) if r.lock.digest == lock.digest => Some(r.clone()),
            (_, Some((section, lock))) => self.load_published(&name, &section, lock),
            (_, None) => None,
        };
        let check = ClassCheck {
            generation: class.metadata.generation,
            current,
            published,
        };
        if let Ok(mut memo) = self.memo.lock() {
            memo.insert(name, (key, Instant::now(), check.clone()));
        }
        check
    }

    /// The published provider `name`, by its published digest: from the cache first (so a
    /// registry that is down does not lose it), else from the registry.
    fn load_published(
        &self,
        name: &str,
        section: &ProviderSection,
        lock: LockEntry,
    ) -> Option<Resolved> {
        self.load_with(name, section, Some(lock.clone()), true)
            .or_else(|_| self.load_with(name, section, Some(lock), false))
            .ok()
    }

    /// Loads one provider: following its tag (`locked` none), or held to a published digest
    /// (`offline`: from the cache only).
    fn load_with(
        &self,
        name: &str,
        section: &ProviderSection,
        locked: Option<LockEntry>,
        offline: bool,
    ) -> Result<Resolved, Vec<String>> {
        let mut file = self.base.clone();
        file.providers = BTreeMap::from([(name.to_string(), section.clone())]);
        file.tenants.clear();
        file.routes.clear();
        file.schedules.clear();
        let bundle = Bundle {
            dir: self.dir.clone(),
            file,
            digest: String::new(),
        };
        let mut old = Lock::default();
        let options = match locked {
            Some(l) => {
                old.providers.insert(name.to_string(), l);
                LoadOptions {
                    update_lock: false,
                    offline,
                    published: true,
                    bootstrap: false,
                }
            }
            None => LoadOptions {
                update_lock: true,
                offline: false,
                published: true,
                bootstrap: false,
            },
        };
        let mut each = load_each(&bundle, &self.engine, options, &old).map_err(|e| e.problems)?;
        let loaded = each
            .remove(name)
            .unwrap_or_else(|| Err(vec![format!("provider `{name}` was not loaded")]))?;
        Ok(resolved(section, &loaded))
    }
}

impl Checker {
    /// Loads `revision` as a host will — every provider by its locked digest, every tenant and
    /// route checked, secrets against `secrets`' key names — before it is published. From the
    /// cache first (every provider in it was just checked), so a registry that is down for
    /// one class does not stop every tenant's revision; online when the cache lacks something.
    pub fn verify(
        &self,
        revision: &Publication,
        secrets: &BTreeMap<String, BTreeSet<String>>,
    ) -> Result<(), Vec<String>> {
        let bundle = Bundle::from_text(self.dir.clone(), "the composed revision", &revision.text)
            .map_err(|e| vec![e.to_string()])?;
        let load = |offline| {
            greentic_revisions::load_locked(
                &bundle,
                &self.engine,
                &KeyNames(secrets),
                LoadOptions {
                    update_lock: false,
                    offline,
                    published: true,
                    bootstrap: false,
                },
                &revision.lock,
            )
            .map(|_| ())
            .map_err(|e| e.problems)
        };
        load(true).or_else(|_| load(false))
    }
}

fn resolved(section: &ProviderSection, p: &LoadedProvider) -> Resolved {
    Resolved {
        section: section.clone(),
        lock: LockEntry {
            source: section.source.clone(),
            digest: p.digest.clone(),
            manifest_digest: p.manifest_digest.clone(),
        },
        facts: p.facts(),
        signer: p.signer_key_id.clone(),
    }
}

/// The key names under a `file` secrets directory: `<dir>/<tenant>/<NAME>` (a mounted
/// Secret's `..data` links and dot-files are not keys). Values are not read.
pub fn key_names(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    let Ok(tenants) = std::fs::read_dir(dir) else {
        return out;
    };
    for tenant in tenants.flatten() {
        let Some(t) = tenant.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if t.starts_with('.') || !tenant.path().is_dir() {
            continue;
        }
        let keys: BTreeSet<String> = std::fs::read_dir(tenant.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|k| !k.starts_with('.'))
            .collect();
        out.insert(t, keys);
    }
    out
}
