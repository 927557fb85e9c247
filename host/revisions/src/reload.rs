//! Live reload: a new bundle revision is built off the hot path and swapped in whole.
//!
//! A candidate (the bundle file again, on SIGHUP, `greentic-host reload` or a watched change;
//! or a revision a fleet published) is parsed, every provider resolved, signature-verified,
//! WIT-checked and compiled, every tenant's configuration and secrets checked, on a blocking
//! thread while calls keep being served. Only a candidate that passes every check replaces the
//! active revision (one atomic swap); one that fails any check is refused as a whole, with
//! every problem logged, and the active revision keeps serving. Calls in flight finish on the
//! revision they started on. The lock file is written only once the new revision is active.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use greentic_auth::Authenticator;
use greentic_bundle::{Bundle, Lock};
use greentic_capabilities::Backends;
use greentic_engine::compile::{HostEngine, PoolSizing};
use greentic_engine::domain::Triggers;
use greentic_engine::domains::start_triggers;
use greentic_engine::revision::Revision;
use greentic_engine::runtime::Runtime;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::load::{self as loader, LoadOptions};

/// What a reload came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// The candidate is now the active revision.
    Applied {
        /// The new revision's digest.
        digest: String,
        /// The revision it replaced.
        previous: String,
        /// Milliseconds from the start of the reload until the swap.
        took_ms: u64,
    },
    /// The candidate is the active revision already; nothing changed.
    Unchanged {
        /// The active revision's digest.
        digest: String,
    },
    /// The candidate failed a check; the active revision keeps serving.
    Refused {
        /// The candidate's digest, when its text could be read.
        digest: Option<String>,
        /// Every problem found.
        problems: Vec<String>,
    },
}

impl Outcome {
    /// `applied`, `unchanged` or `refused` (the metric label).
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::Unchanged { .. } => "unchanged",
            Outcome::Refused { .. } => "refused",
        }
    }
}

/// The last candidate refused, for `/readyz`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Refusal {
    /// Its digest, when its text could be read.
    pub digest: Option<String>,
    /// Seconds since the epoch when it was refused.
    pub at: f64,
    /// Every problem found.
    pub problems: Vec<String>,
}

/// The triggers (schedules) of the active revision, and those of earlier revisions still
/// finishing a fire.
struct TriggerTasks {
    /// The schedules the running triggers were started from.
    schedules: serde_json::Value,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Builds candidates and swaps them into a runtime, one at a time.
pub struct Reloader {
    runtime: Arc<Runtime>,
    auth: Arc<ArcSwap<Authenticator>>,
    path: PathBuf,
    options: LoadOptions,
    serial: tokio::sync::Mutex<()>,
    triggers: Mutex<TriggerTasks>,
    refused: Mutex<Option<Refusal>>,
    halted: AtomicBool,
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The providers of `current` loaded from a file whose content on disk is no longer what was
/// loaded (or cannot be read now), when `bundle` still names the same file.
fn rebuilt_files(bundle: &Bundle, current: &greentic_engine::revision::Revision) -> Vec<String> {
    current
        .providers
        .iter()
        .filter(|(name, loaded)| {
            let Some(section) = bundle.file.providers.get(name.as_str()) else {
                return false;
            };
            if section.source != loaded.source {
                return false;
            }
            let greentic_trust::sources::SourceRef::File(path) =
                greentic_trust::sources::SourceRef::parse(&bundle.dir, &section.source)
            else {
                return false;
            };
            std::fs::read(path).map_or(true, |bytes| {
                greentic_engine::revision::digest_of(&bytes) != loaded.digest
            })
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Whether an engine with pool `have` can run a revision that needs `need`.
fn fits(have: Option<PoolSizing>, need: PoolSizing) -> bool {
    have.is_some_and(|have| {
        have.instances >= need.instances
            && have.max_memory_bytes >= need.max_memory_bytes
            && have.metering == need.metering
    })
}

impl Reloader {
    /// A reloader of `runtime` from the bundle at `path` (loaded with `options`), that swaps
    /// `auth` along with the runtime's revision and starts the active revision's triggers.
    pub fn new(
        runtime: Arc<Runtime>,
        auth: Arc<ArcSwap<Authenticator>>,
        path: &Path,
        options: LoadOptions,
    ) -> Arc<Reloader> {
        let revision = runtime.revision();
        let (stop, stopped) = watch::channel(false);
        let host: Arc<dyn Triggers> = runtime.clone();
        let tasks = start_triggers(&host, &revision.bundle, &stopped);
        Arc::new(Reloader {
            triggers: Mutex::new(TriggerTasks {
                schedules: schedules(&revision.bundle),
                stop,
                tasks,
            }),
            runtime,
            auth,
            path: path.to_path_buf(),
            options,
            serial: tokio::sync::Mutex::new(()),
            refused: Mutex::new(None),
            halted: AtomicBool::new(false),
        })
    }

    /// The keys callers' tokens are verified with now.
    pub fn auth(&self) -> Arc<Authenticator> {
        self.auth.load_full()
    }

    /// The options revisions are loaded with.
    pub fn options(&self) -> LoadOptions {
        self.options
    }

    /// The runtime it swaps revisions into.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The last candidate refused, if any was.
    pub fn last_refused(&self) -> Option<Refusal> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The digest of the bundle file as it is on disk now (`None`: unreadable).
    pub fn file_digest(&self) -> Option<String> {
        let (_, file) = Bundle::locate(&self.path);
        std::fs::read(file)
            .ok()
            .map(|text| greentic_engine::revision::digest_of(&text))
    }

    /// Reads the bundle file again and applies it (see [`Reloader::apply`]).
    pub async fn reload(&self) -> Outcome {
        self.reload_with(self.options).await
    }

    /// [`Reloader::reload`] with `options` for this once: `update_lock` re-locks providers
    /// whose digest changed under the same source (`greentic-host reload --update-lock`).
    pub async fn reload_with(&self, options: LoadOptions) -> Outcome {
        let (dir, file) = Bundle::locate(&self.path);
        let read = std::fs::read_to_string(&file);
        let outcome = match read {
            Err(e) => Outcome::Refused {
                digest: None,
                problems: vec![format!("reading {}: {e}", file.display())],
            },
            Ok(text) => match Bundle::from_text(dir, &file.display().to_string(), &text) {
                Ok(bundle) => return self.apply(bundle, options).await,
                Err(e) => Outcome::Refused {
                    digest: Some(greentic_engine::revision::digest_of(text.as_bytes())),
                    problems: vec![e.to_string()],
                },
            },
        };
        self.settle(outcome)
    }

    /// Builds a revision of `bundle` off the hot path and, if every check passes, swaps it in;
    /// otherwise refuses it whole and keeps the active revision.
    pub async fn apply(&self, bundle: Bundle, options: LoadOptions) -> Outcome {
        self.apply_locked(bundle, options, None).await
    }

    /// [`Reloader::apply`], holding providers to `lock` (a published revision's) instead of
    /// the bundle directory's.
    pub async fn apply_locked(
        &self,
        bundle: Bundle,
        options: LoadOptions,
        lock: Option<Lock>,
    ) -> Outcome {
        let _one_at_a_time = self.serial.lock().await;
        let started = Instant::now();
        let current = self.runtime.revision();
        // Unchanged only if the text is the same and so is every component read from a file:
        // a provider rebuilt under the same path is a new revision (the lock rule applies).
        let rebuilt = rebuilt_files(&bundle, &current);
        if bundle.digest == current.digest && rebuilt.is_empty() {
            return self.settle(Outcome::Unchanged {
                digest: current.digest.clone(),
            });
        }
        if !rebuilt.is_empty() {
            tracing::info!(providers = ?rebuilt, "provider files changed on disk");
        }
        let digest = bundle.digest.clone();
        let base = current.clone();
        let auth = self.auth.load_full();
        let built = tokio::task::spawn_blocking(move || {
            build(bundle, options, lock.as_ref(), &base, Some(&auth))
        })
        .await;
        let (revision, auth, lock) = match built {
            Ok(Ok(built)) => built,
            Ok(Err(problems)) => {
                return self.settle(Outcome::Refused {
                    digest: Some(digest),
                    problems,
                });
            }
            Err(e) => {
                return self.settle(Outcome::Refused {
                    digest: Some(digest),
                    problems: vec![format!("building the revision failed: {e}")],
                });
            }
        };
        let dir = revision.bundle.dir.clone();
        let bundle = revision.bundle.clone();
        self.auth.store(auth);
        let previous = self.runtime.swap(revision);
        let took_ms = started.elapsed().as_millis() as u64;
        // The lock follows the revision that is active, never a candidate.
        if let Some(lock) = lock
            && let Err(e) = lock.save(&dir)
        {
            tracing::error!(error = %e, "the new revision is active, but greentic.lock could not be written");
        }
        self.restart_triggers(&bundle);
        self.settle(Outcome::Applied {
            digest,
            previous: previous.digest.clone(),
            took_ms,
        })
    }

    /// Starts the triggers of `bundle` if its schedules differ from the running ones (a fire
    /// in progress on the old ones finishes; a slot is claimed once whichever fires it).
    fn restart_triggers(&self, bundle: &Bundle) {
        let wanted = schedules(bundle);
        let mut triggers = self.triggers.lock().unwrap_or_else(|e| e.into_inner());
        if triggers.schedules == wanted || self.halted.load(Ordering::SeqCst) {
            return;
        }
        let _ = triggers.stop.send(true);
        let (stop, stopped) = watch::channel(false);
        let host: Arc<dyn Triggers> = self.runtime.clone();
        let mut tasks = start_triggers(&host, bundle, &stopped);
        tasks.extend(triggers.tasks.drain(..).filter(|t| !t.is_finished()));
        *triggers = TriggerTasks {
            schedules: wanted,
            stop,
            tasks,
        };
    }

    /// Stops every trigger: no new fire starts (nor do triggers of later revisions).
    pub fn halt_triggers(&self) {
        self.halted.store(true, Ordering::SeqCst);
        let triggers = self.triggers.lock().unwrap_or_else(|e| e.into_inner());
        let _ = triggers.stop.send(true);
    }

    /// Stops every trigger and waits for fires in progress until `until`.
    pub async fn stop_triggers(&self, until: tokio::time::Instant) {
        self.halt_triggers();
        let tasks = {
            let mut triggers = self.triggers.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut triggers.tasks)
        };
        for task in tasks {
            let _ = tokio::time::timeout_at(until, task).await;
        }
    }

    /// Refuses a candidate that could not even be built (a published record that does not
    /// verify): recorded and logged like any refusal.
    pub fn refuse(&self, digest: Option<String>, problems: Vec<String>) -> Outcome {
        self.settle(Outcome::Refused { digest, problems })
    }

    /// Records and logs `outcome`.
    fn settle(&self, outcome: Outcome) -> Outcome {
        self.runtime
            .metrics
            .inc("greentic_reloads_total", &[("outcome", outcome.label())]);
        match &outcome {
            Outcome::Applied {
                digest,
                previous,
                took_ms,
            } => {
                tracing::info!(%digest, %previous, took_ms, "new bundle revision active");
                greentic_audit::record(
                    "revision.activated",
                    serde_json::json!({ "revision": digest, "previous": previous, "took_ms": took_ms }),
                );
            }
            Outcome::Unchanged { digest } => {
                tracing::info!(%digest, "bundle unchanged; nothing to reload");
            }
            Outcome::Refused { digest, problems } => {
                tracing::error!(
                    digest = digest.as_deref().unwrap_or("-"),
                    problems = %problems.join("\n  - "),
                    "bundle revision refused; the active revision keeps serving"
                );
                greentic_audit::record(
                    "revision.refused",
                    serde_json::json!({ "revision": digest, "problems": problems }),
                );
                *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(Refusal {
                    digest: digest.clone(),
                    at: secs(SystemTime::now()),
                    problems: problems.clone(),
                });
            }
        }
        outcome
    }

    /// Reloads whenever the bundle file's content changes, checking every `every`, until
    /// `stop` is set. A refused text is not retried until it changes again.
    pub async fn watch(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        let mut seen = self.runtime.revision().digest.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let Some(now) = self.file_digest() else {
                continue;
            };
            if now != seen {
                seen = now;
                self.reload().await;
            }
        }
    }
}

fn schedules(bundle: &Bundle) -> serde_json::Value {
    serde_json::to_value(&bundle.file.schedules).unwrap_or_default()
}

/// A candidate that passed every check: the revision, its callers' keys, and the lock to
/// write once it is active (`None`: unchanged).
pub type Built = (Revision, Arc<Authenticator>, Option<Lock>);

/// Everything a candidate is checked for, on a blocking thread: what cannot change without a
/// restart, every provider (through [`loader::load_locked`], against `lock` or else the bundle
/// directory's), the tenants, and the callers' keys. `current` is the revision it would
/// replace (or serve beside).
pub fn build(
    bundle: Bundle,
    options: LoadOptions,
    lock: Option<&Lock>,
    current: &Revision,
    current_auth: Option<&Arc<Authenticator>>,
) -> Result<Built, Vec<String>> {
    let mut problems = Vec::new();
    if bundle.file.host.scheduler != current.bundle.file.host.scheduler {
        problems.push(
            "[host.scheduler] differs from the running host's; its guest threads are fixed for the host's life: restart the host to change it".to_string(),
        );
    }
    if bundle.file.host.tls != current.bundle.file.host.tls
        || bundle.file.host.admin_tls != current.bundle.file.host.admin_tls
    {
        problems.push(
            "[host.tls] or [host.admin_tls] differs from the running host's; a listener's TLS settings are fixed for the host's life (the files they name are re-read when they change, without a reload): restart the host to change them".to_string(),
        );
    }
    if bundle.file.audit != current.bundle.file.audit {
        problems.push(
            "[audit] differs from the running host's; the audit log's file and key are fixed for the host's life (a chain does not change hands mid-run): restart the host to change it".to_string(),
        );
    }
    problems.extend(greentic_capabilities::live_changes(
        &current.bundle.file.sections(),
        &bundle.file.sections(),
    ));
    let auth =
        Authenticator::reuse_or_load(&bundle, current_auth).map_err(|e| format!("[auth]: {e}"));
    if let Err(e) = &auth {
        problems.push(e.clone());
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    for (what, before, after) in [
        (
            "[host].listen",
            &current.bundle.file.host.listen,
            &bundle.file.host.listen,
        ),
        (
            "[host].admin_listen",
            &current.bundle.file.host.admin_listen,
            &bundle.file.host.admin_listen,
        ),
    ] {
        if before != after {
            tracing::warn!(
                setting = what,
                "changed; listeners are bound at start, so this takes effect at the next restart"
            );
        }
    }
    let sizing = loader::pool_sizing(&bundle);
    let engine = if fits(current.engine.options.pool, sizing) {
        current.engine.clone()
    } else {
        Arc::new(HostEngine::new(sizing).map_err(|e| vec![format!("creating the engine: {e:#}")])?)
    };
    let backends = Backends::open(
        &bundle.file.sections(),
        &bundle.dir,
        Some((&current.bundle.file.sections(), &current.backends)),
    )
    .map_err(|e| vec![format!("opening the capabilities' backends: {e:#}")])?;
    let loaded = match lock {
        Some(lock) => {
            loader::load_locked(&bundle, &engine, backends.secrets().as_ref(), options, lock)
        }
        None => loader::load(&bundle, &engine, backends.secrets().as_ref(), options),
    }
    .map_err(|e| e.problems)?;
    let lock = loaded.lock_changed.then_some(loaded.lock);
    let revision = Revision::new(
        Arc::new(bundle),
        engine,
        loaded.providers,
        backends,
        Some(current),
    );
    Ok((revision, auth.map_err(|e| vec![e])?, lock))
}
