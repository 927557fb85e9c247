//! A host as a member of a fleet: it follows the published revisions, reports itself in
//! heartbeats, and — while it holds the leader's lease — judges canaries.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::bundle::Bundle;
use crate::fleet::Fleet;
use crate::fleet::canary::{self, CanaryPlan, Summary, Verdict};
use crate::fleet::revisions::{self, CANARY, Envelope, Published, STABLE};
use crate::loader::LoadOptions;
use crate::reload::{Outcome, Refusal, Reloader};
use crate::runtime::Canary;

/// The leader's lease key in the hosts bucket.
const LEADER: &str = "leader";
/// Prefix of heartbeat keys.
const HOST: &str = "host.";

/// What a host reports in each heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostReport {
    /// Its id.
    pub host: String,
    /// When it reported (ms since the epoch).
    pub at_ms: u64,
    /// When it started.
    pub started_at_ms: u64,
    /// The revision serving every tenant.
    pub revision: String,
    /// Since when (ms since the epoch).
    pub revision_since_ms: u64,
    /// The canary it serves, if any.
    pub canary: Option<String>,
    /// The last revision it refused, and why.
    pub refused: Option<Refusal>,
    /// Whether it holds the leader's lease.
    pub leader: bool,
    /// What the canary tenants saw on the canary and, before it, on the stable revision.
    pub canary_stats: Option<CanaryStats>,
}

/// A host's view of a canary, for the leader to merge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CanaryStats {
    /// The canary revision.
    pub digest: String,
    /// Its tenants' calls on it.
    pub canary: Summary,
    /// The same tenants' calls on the stable revision, over the window before the canary.
    pub baseline: Summary,
}

/// The verdict record on a canary, kept in the revisions bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerdictRecord {
    /// The canary revision.
    pub digest: String,
    /// Its tenants.
    pub tenants: BTreeSet<String>,
    /// What became of it, and why.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// The leader that decided.
    pub by: String,
}

#[derive(Debug, Clone)]
struct CanaryState {
    digest: String,
    plan: CanaryPlan,
    published_at_ms: u64,
}

/// A host following its fleet.
pub struct Member {
    fleet: Arc<Fleet>,
    reloader: Arc<Reloader>,
    options: LoadOptions,
    started_at_ms: u64,
    canary: Mutex<Option<CanaryState>>,
    /// When the stable record this host runs was published: an older record is a replay.
    applied_at_ms: Mutex<u64>,
    serial: tokio::sync::Mutex<()>,
}

fn now_ms() -> u64 {
    crate::imports::state::now_ms()
}

impl Member {
    /// A member of `fleet` that swaps revisions in through `reloader`.
    pub fn new(fleet: Arc<Fleet>, reloader: Arc<Reloader>, options: LoadOptions) -> Arc<Member> {
        Arc::new(Member {
            fleet,
            reloader,
            options: LoadOptions {
                // A published revision carries its lock: never re-locked on a host.
                update_lock: false,
                ..options
            },
            started_at_ms: now_ms(),
            canary: Mutex::new(None),
            applied_at_ms: Mutex::new(0),
            serial: tokio::sync::Mutex::new(()),
        })
    }

    /// The fleet.
    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// Applies the published stable revision and canary, as they are now; the outcome for the
    /// stable one (`None`: nothing published yet).
    pub async fn sync(&self) -> anyhow::Result<Option<Outcome>> {
        let stable = self.fleet.revisions.get(STABLE).await?;
        let outcome = match stable {
            Some(bytes) => Some(self.on_stable(&bytes).await),
            None => None,
        };
        let canary = self.fleet.revisions.entry(CANARY).await?;
        match canary {
            Some(e) if e.operation == kv::Operation::Put => self.on_canary(Some(&e.value)).await,
            _ => self.on_canary(None).await,
        }
        Ok(outcome)
    }

    /// Opens a published record with the keys the active revision trusts.
    fn open(&self, bytes: &[u8]) -> Result<Published, (Option<String>, String)> {
        let active = self.reloader.runtime().revision();
        let keys = revisions::publisher_keys(&active.bundle).map_err(|e| (None, e))?;
        Envelope::open(bytes, &keys).map_err(|e| {
            let digest = serde_json::from_slice::<Envelope>(bytes)
                .ok()
                .and_then(|env| serde_json::from_str::<serde_json::Value>(&env.payload).ok())
                .and_then(|v| v["digest"].as_str().map(str::to_string));
            (digest, e)
        })
    }

    /// The bundle a published revision makes, its paths resolved in this host's bundle
    /// directory.
    fn bundle_of(&self, published: &Published) -> Result<Bundle, String> {
        let dir = self.reloader.runtime().revision().bundle.dir.clone();
        Bundle::from_text(
            dir,
            &format!("published revision {}", published.digest),
            &published.bundle,
        )
        .map(|mut bundle| {
            // The published identity covers the lock too.
            bundle.digest = published.digest.clone();
            bundle
        })
        .map_err(|e| e.to_string())
    }

    /// Whether this host has applied a revision the fleet published (or found it already
    /// running one).
    pub fn has_applied(&self) -> bool {
        self.applied_at() > 0
    }

    fn applied_at(&self) -> u64 {
        *self.applied_at_ms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why `published` (under `key`) is stale: published no later than the stable revision
    /// this host runs (an old signed record written back); `None` when it is newer.
    fn stale(&self, published: &Published, key: &str) -> Option<String> {
        let applied = self.applied_at();
        (published.published_at_ms <= applied).then(|| {
            format!(
                "revision {} under `{key}` was published before the revision this host runs ({} <= {} ms since the epoch): an old record written back is refused; publish it again",
                published.digest, published.published_at_ms, applied
            )
        })
    }

    /// Whether the leader promoted the canary `digest` (a canary record under `stable` must
    /// have been).
    async fn promoted(&self, digest: &str) -> bool {
        let Ok(keys) =
            super::keys_under(&self.fleet.revisions, &revisions::verdict_prefix(digest)).await
        else {
            return false;
        };
        for key in keys {
            if let Ok(Some(bytes)) = self.fleet.revisions.get(key.as_str()).await
                && let Ok(v) = serde_json::from_slice::<VerdictRecord>(&bytes)
                && matches!(v.verdict, Verdict::Promoted { .. })
            {
                return true;
            }
        }
        false
    }

    /// Verifies and applies a published stable revision.
    async fn on_stable(&self, bytes: &[u8]) -> Outcome {
        let _one = self.serial.lock().await;
        let published = match self.open(bytes) {
            Ok(p) => p,
            Err((digest, why)) => return self.reloader.refuse(digest, vec![why]),
        };
        if published.digest == self.reloader.runtime().revision().digest {
            let mut applied = self.applied_at_ms.lock().unwrap_or_else(|e| e.into_inner());
            *applied = (*applied).max(published.published_at_ms);
            return Outcome::Unchanged {
                digest: published.digest,
            };
        }
        if let Some(why) = self.stale(&published, STABLE) {
            return self.reloader.refuse(Some(published.digest), vec![why]);
        }
        if published.canary.is_some() && !self.promoted(&published.digest).await {
            return self.reloader.refuse(
                Some(published.digest),
                vec!["a canary revision under `stable` that the fleet never promoted is refused; publish it without --canary to roll it out to every tenant".into()],
            );
        }
        let bundle = match self.bundle_of(&published) {
            Ok(b) => b,
            Err(e) => return self.reloader.refuse(Some(published.digest), vec![e]),
        };
        let published_at = published.published_at_ms;
        let outcome = self
            .reloader
            .apply_locked(bundle, self.options, Some(published.lock))
            .await;
        if matches!(outcome, Outcome::Applied { .. }) {
            *self.applied_at_ms.lock().unwrap_or_else(|e| e.into_inner()) = published_at;
        }
        // A canary that is now every tenant's revision is no longer a canary.
        let promoted = matches!(&outcome, Outcome::Applied { digest, .. }
            if self.canary_digest().as_deref() == Some(digest.as_str()));
        if promoted {
            self.clear_canary("promoted");
        }
        outcome
    }

    fn canary_digest(&self) -> Option<String> {
        self.canary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.digest.clone())
    }

    fn clear_canary(&self, why: &str) {
        let before = self.canary.lock().unwrap_or_else(|e| e.into_inner()).take();
        let runtime = self.reloader.runtime();
        runtime.set_canary(None);
        if let Some(c) = before {
            tracing::info!(canary = %c.digest, why, "canary withdrawn from this host");
        }
    }

    /// Verifies and serves a published canary (`None`: there is none now).
    async fn on_canary(&self, bytes: Option<&[u8]>) {
        let _one = self.serial.lock().await;
        let Some(bytes) = bytes else {
            self.clear_canary("no canary published");
            return;
        };
        let published = match self.open(bytes) {
            Ok(p) => p,
            Err((digest, why)) => {
                self.reloader.refuse(digest, vec![why]);
                return;
            }
        };
        if let Some(why) = self.stale(&published, CANARY) {
            self.reloader.refuse(Some(published.digest), vec![why]);
            return;
        }
        let Some(plan) = published.canary.clone() else {
            self.reloader.refuse(
                Some(published.digest),
                vec!["a revision under `canary` names no canary tenants".into()],
            );
            return;
        };
        let runtime = self.reloader.runtime().clone();
        let stable = runtime.revision();
        if published.digest == stable.digest {
            self.clear_canary("it is the stable revision");
            return;
        }
        if self.canary_digest().as_deref() == Some(published.digest.as_str()) {
            return;
        }
        let bundle = match self.bundle_of(&published) {
            Ok(b) => b,
            Err(e) => {
                self.reloader.refuse(Some(published.digest), vec![e]);
                return;
            }
        };
        let (options, lock, base) = (self.options, published.lock.clone(), stable.clone());
        let built = tokio::task::spawn_blocking(move || {
            crate::reload::build(bundle, options, Some(&lock), &base)
        })
        .await;
        match built {
            Ok(Ok((mut revision, _, _))) => {
                revision.since = std::time::SystemTime::now();
                runtime.set_canary(Some(Canary {
                    revision: Arc::new(revision),
                    tenants: plan.tenants.clone(),
                }));
                tracing::info!(canary = %published.digest, tenants = ?plan.tenants, "canary serving its tenants");
                *self.canary.lock().unwrap_or_else(|e| e.into_inner()) = Some(CanaryState {
                    digest: published.digest,
                    plan,
                    published_at_ms: published.published_at_ms,
                });
            }
            Ok(Err(problems)) => {
                self.reloader.refuse(Some(published.digest), problems);
            }
            Err(e) => {
                self.reloader.refuse(
                    Some(published.digest),
                    vec![format!("building the canary failed: {e}")],
                );
            }
        }
    }

    /// Follows the revisions bucket until `stop`, reporting a heartbeat every
    /// `[cluster].heartbeat_ms` (and judging canaries while leader).
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let beats = tokio::spawn(self.clone().heartbeats(stop.clone()));
        let mut stop = stop;
        loop {
            let watch = self.fleet.revisions.watch_all().await;
            match watch {
                Ok(mut entries) => loop {
                    tokio::select! {
                        _ = stop.changed() => { beats.abort(); return; }
                        next = entries.next() => match next {
                            Some(Ok(entry)) => self.on_entry(entry).await,
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "watching the fleet's revisions");
                                break;
                            }
                            None => break,
                        },
                    }
                },
                Err(e) => tracing::warn!(error = %e, "watching the fleet's revisions"),
            }
            // Lost the watch: look again from the current state.
            tokio::select! {
                _ = stop.changed() => { beats.abort(); return; }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if let Err(e) = self.sync().await {
                tracing::warn!(error = %format!("{e:#}"), "reading the fleet's revisions");
            }
        }
    }

    async fn on_entry(&self, entry: kv::Entry) {
        let put = entry.operation == kv::Operation::Put;
        match entry.key.as_str() {
            STABLE if put => {
                self.on_stable(&entry.value).await;
            }
            CANARY => self.on_canary(put.then_some(&entry.value[..])).await,
            key if key.starts_with("verdict.") && put => {
                if let Ok(v) = serde_json::from_slice::<VerdictRecord>(&entry.value) {
                    tracing::info!(canary = %v.digest, verdict = ?v.verdict, by = %v.by, "canary verdict");
                }
            }
            _ => {}
        }
    }

    /// This host's report now.
    fn report(&self, leader: bool) -> HostReport {
        let runtime = self.reloader.runtime();
        let revision = runtime.revision();
        let canary = self
            .canary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let now = now_ms();
        let canary_stats = canary.as_ref().map(|c| {
            let window = c.plan.window_secs * 1000;
            CanaryStats {
                digest: c.digest.clone(),
                canary: runtime.stats.summary(
                    &c.digest,
                    &c.plan.tenants,
                    c.published_at_ms,
                    now + 1,
                ),
                baseline: runtime.stats.summary(
                    &revision.digest,
                    &c.plan.tenants,
                    c.published_at_ms.saturating_sub(window),
                    c.published_at_ms,
                ),
            }
        });
        HostReport {
            host: self.fleet.host_id.clone(),
            at_ms: now,
            started_at_ms: self.started_at_ms,
            revision: revision.digest.clone(),
            revision_since_ms: (revision.since_secs() * 1000.0) as u64,
            canary: canary.map(|c| c.digest),
            refused: self.reloader.last_refused(),
            leader,
            canary_stats,
        }
    }

    async fn heartbeats(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let every = Duration::from_millis(self.fleet.section.heartbeat_ms);
        loop {
            let leader = self.lead_lease().await;
            let report = self.report(leader);
            let key = format!("{HOST}{}", self.fleet.host_id);
            if let Err(e) = self
                .fleet
                .hosts
                .put(
                    key,
                    Bytes::from(serde_json::to_vec(&report).unwrap_or_default()),
                )
                .await
            {
                tracing::warn!(error = %e, "sending the fleet heartbeat");
            }
            if leader && let Err(e) = self.judge_canary().await {
                tracing::warn!(error = %format!("{e:#}"), "judging the canary");
            }
            // Keep only the series a canary may still be judged on.
            let mut keep: BTreeSet<String> =
                [self.reloader.runtime().revision().digest.clone()].into();
            keep.extend(self.canary_digest());
            self.reloader.runtime().stats.retain(&keep);
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Takes or keeps the leader's lease; whether this host holds it.
    async fn lead_lease(&self) -> bool {
        let me = Bytes::from(self.fleet.host_id.clone());
        if self.fleet.hosts.create(LEADER, me.clone()).await.is_ok() {
            tracing::info!(host = %self.fleet.host_id, "this host leads the fleet");
            return true;
        }
        match self.fleet.hosts.entry(LEADER).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put && e.value == me => {
                // Refresh it before the bucket's age limit removes it.
                self.fleet
                    .hosts
                    .update(LEADER, me, e.revision)
                    .await
                    .is_ok()
            }
            _ => false,
        }
    }

    /// As leader: merges the hosts' reports on the canary and promotes or rolls it back.
    async fn judge_canary(&self) -> anyhow::Result<()> {
        let Some(entry) = self.fleet.revisions.entry(CANARY).await? else {
            return Ok(());
        };
        if entry.operation != kv::Operation::Put {
            return Ok(());
        }
        let reports = hosts(&self.fleet.hosts).await?;
        // Promotion replaces `stable` only as it is now: a revision published meanwhile wins.
        let stable_revision = match self.fleet.revisions.entry(STABLE).await? {
            Some(e) => e.revision,
            None => 0,
        };
        let published = match self.open(&entry.value) {
            Ok(p) => p,
            Err((digest, why)) => {
                // Nothing unsigned is served: withdraw it.
                let digest = digest.unwrap_or_else(|| "unsigned".into());
                return self
                    .decide(
                        &entry,
                        stable_revision,
                        &digest,
                        &BTreeSet::new(),
                        Verdict::RolledBack { reason: why },
                    )
                    .await;
            }
        };
        let Some(plan) = &published.canary else {
            return Ok(());
        };
        // A host that could not build it: the revision fails a check, fleet-wide.
        // (Only a refusal since it was published counts: the same digest may come back.)
        if let Some((host, refusal)) = reports.iter().find_map(|r| {
            r.refused
                .as_ref()
                .filter(|f| f.digest.as_deref() == Some(published.digest.as_str()))
                .filter(|f| f.at * 1000.0 >= published.published_at_ms as f64)
                .map(|f| (r.host.clone(), f.clone()))
        }) {
            let reason = format!("host {host} refused it: {}", refusal.problems.join("; "));
            return self
                .decide(
                    &entry,
                    stable_revision,
                    &published.digest,
                    &plan.tenants,
                    Verdict::RolledBack { reason },
                )
                .await;
        }
        let (mut on_canary, mut baseline) = (Summary::default(), Summary::default());
        for stats in reports
            .iter()
            .filter_map(|r| r.canary_stats.as_ref())
            .filter(|s| s.digest == published.digest)
        {
            on_canary.merge(&stats.canary);
            baseline.merge(&stats.baseline);
        }
        let elapsed = now_ms().saturating_sub(published.published_at_ms) / 1000;
        if let Some(verdict) = canary::judge(plan, &baseline, &on_canary, elapsed) {
            self.decide(
                &entry,
                stable_revision,
                &published.digest,
                &plan.tenants,
                verdict,
            )
            .await?;
        }
        Ok(())
    }

    /// Records `verdict` on the canary in `entry` and carries it out: a promoted canary
    /// becomes the stable record (its signed bytes, unchanged); either way the canary key goes.
    async fn decide(
        &self,
        entry: &kv::Entry,
        stable_revision: u64,
        digest: &str,
        tenants: &BTreeSet<String>,
        verdict: Verdict,
    ) -> anyhow::Result<()> {
        let record = VerdictRecord {
            digest: digest.to_string(),
            tenants: tenants.clone(),
            verdict: verdict.clone(),
            at_ms: now_ms(),
            by: self.fleet.host_id.clone(),
        };
        let key = revisions::verdict_key(digest, entry.revision);
        // The first verdict stands (a leader that changed mid-way carries it out again).
        let _ = self
            .fleet
            .revisions
            .create(key.as_str(), Bytes::from(serde_json::to_vec(&record)?))
            .await;
        let stood: VerdictRecord = match self.fleet.revisions.get(key.as_str()).await? {
            Some(bytes) => serde_json::from_slice(&bytes)?,
            None => record,
        };
        tracing::warn!(canary = %digest, verdict = ?stood.verdict, "canary decided");
        self.reloader.runtime().metrics.inc(
            "greentic_canary_verdicts_total",
            &[(
                "verdict",
                match stood.verdict {
                    Verdict::Promoted { .. } => "promoted",
                    Verdict::RolledBack { .. } => "rolled-back",
                },
            )],
        );
        if matches!(stood.verdict, Verdict::Promoted { .. })
            && let Err(e) = self
                .fleet
                .revisions
                .update(STABLE, entry.value.clone(), stable_revision)
                .await
        {
            tracing::warn!(canary = %digest, error = %e, "not promoted: a revision was published meanwhile");
        }
        self.fleet
            .revisions
            .delete_expect_revision(CANARY, Some(entry.revision))
            .await?;
        Ok(())
    }
}

/// Every live host's last report.
pub async fn hosts(store: &kv::Store) -> anyhow::Result<Vec<HostReport>> {
    let mut out = Vec::new();
    for key in super::keys_under(store, HOST).await? {
        if let Some(bytes) = store.get(key.as_str()).await?
            && let Ok(report) = serde_json::from_slice::<HostReport>(&bytes)
        {
            out.push(report);
        }
    }
    out.sort_by(|a, b| a.host.cmp(&b.host));
    Ok(out)
}
