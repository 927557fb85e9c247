//! A host as a member of a fleet: it follows the published revisions, reports itself in
//! heartbeats, and — while it holds the leader's lease — judges canaries.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt as _;
use greentic_bundle::Bundle;
use greentic_engine::runtime::Canary;
use greentic_revisions::load::LoadOptions;
use greentic_revisions::reload::{Outcome, Refusal, Reloader};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::Fleet;
use crate::canary::{self, CanaryPlan, Summary, Verdict};
use crate::revisions::{self, CANARY, Envelope, Published, STABLE};

/// The leader's lease key in the hosts bucket.
const LEADER: &str = "leader";
/// The fleet's high-water mark, in the revisions bucket.
pub const HIGH_WATER: &str = "high-water";
/// The file, in `[cluster].state_dir`, where a host keeps its high-water mark and the signed
/// record of the revision it last applied.
const KEPT_FILE: &str = "applied.json";
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
    /// Where the revision it serves came from: `stable` (the fleet's record), `history` (an
    /// earlier record of the bucket, the newest it could verify, because `stable` was
    /// refused), `kept` (its own copy of the revision it last applied) or `local` (its
    /// bootstrap bundle: it serves no fleet revision yet).
    #[serde(default)]
    pub serving_from: String,
    /// Why it serves no fleet revision, while it does not (it is then unready).
    #[serde(default)]
    pub waiting: Option<String>,
    /// The newest publication it has applied or seen applied: nothing older is served again.
    #[serde(default)]
    pub high_water: HighWater,
}

/// A publication: when it was published and its digest. A host (and the fleet) keeps the
/// newest it applied as its high-water mark: a record published before it is a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HighWater {
    /// When it was published (ms since the epoch).
    pub published_at_ms: u64,
    /// Its digest.
    pub digest: String,
}

impl HighWater {
    /// Whether `published` is older than this mark (the same publication is not).
    fn above(&self, published: &Published) -> bool {
        published.published_at_ms < self.published_at_ms
            || (published.published_at_ms == self.published_at_ms
                && !self.digest.is_empty()
                && published.digest != self.digest)
    }

    fn of(published: &Published) -> HighWater {
        HighWater {
            published_at_ms: published.published_at_ms,
            digest: published.digest.clone(),
        }
    }

    fn newer(self, other: HighWater) -> HighWater {
        if other.published_at_ms > self.published_at_ms {
            other
        } else {
            self
        }
    }
}

/// What a host keeps in its state directory across restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Kept {
    /// Its high-water mark.
    mark: HighWater,
    /// The signed record of the revision it last applied (an [`Envelope`]'s JSON).
    record: String,
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
    /// When the canary judged was published (0 in verdicts of earlier versions): a verdict is
    /// about that publication, whatever key it is written back under.
    #[serde(default)]
    pub published_at_ms: u64,
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
    /// The newest publication this host applied, or knows the fleet applied (its own kept
    /// mark across restarts, and the fleet's): an older record is a replay.
    mark: Mutex<HighWater>,
    /// Where the revision served came from (`local` until a fleet revision is applied).
    serving_from: Mutex<&'static str>,
    /// Where the host keeps its mark and last applied record (`None`: nowhere it can write).
    kept: Option<PathBuf>,
    serial: tokio::sync::Mutex<()>,
}

fn now_ms() -> u64 {
    greentic_capabilities::state::now_ms()
}

impl Member {
    /// A member of `fleet` that swaps revisions in through `reloader`, keeping its high-water
    /// mark in `state_dir` (read back from there if a previous run kept one).
    pub fn new(
        fleet: Arc<Fleet>,
        reloader: Arc<Reloader>,
        options: LoadOptions,
        state_dir: Option<PathBuf>,
    ) -> Arc<Member> {
        let kept = state_dir.map(|d| d.join(KEPT_FILE));
        let mark = kept
            .as_deref()
            .and_then(read_kept)
            .map(|k| k.mark)
            .unwrap_or_default();
        if mark.published_at_ms > 0 {
            tracing::info!(published_at_ms = mark.published_at_ms, digest = %mark.digest, "this host's high-water mark, kept from its last run");
        }
        Arc::new(Member {
            mark: Mutex::new(mark),
            serving_from: Mutex::new("local"),
            kept,
            fleet,
            reloader,
            options: LoadOptions {
                // A published revision carries its lock: never re-locked on a host, and runs
                // only providers signed by provider keys.
                update_lock: false,
                published: true,
                ..options
            },
            started_at_ms: now_ms(),
            canary: Mutex::new(None),
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
        self.learn_fleet_mark().await;
        let stable = self.fleet.revisions.get(STABLE).await?;
        let outcome = match stable {
            Some(bytes) => {
                let outcome = self.on_stable(&bytes).await;
                if matches!(outcome, Outcome::Refused { .. }) && !self.has_applied() {
                    Some(self.fall_back(&bytes, &outcome).await.unwrap_or(outcome))
                } else {
                    Some(outcome)
                }
            }
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

    /// Whether this host serves a revision the fleet published (or found it already running
    /// one).
    pub fn has_applied(&self) -> bool {
        *self.serving_from.lock().unwrap_or_else(|e| e.into_inner()) != "local"
    }

    /// Where the revision it serves came from (see [`HostReport::serving_from`]).
    pub fn serving_from(&self) -> &'static str {
        *self.serving_from.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the host serves no fleet revision, while it does not.
    pub fn waiting(&self) -> Option<String> {
        if self.has_applied() {
            return None;
        }
        Some(match self.reloader.last_refused() {
            Some(r) => format!(
                "the fleet's revision {} was refused ({}), and no earlier revision in the bucket or kept by this host could be verified and applied",
                r.digest.as_deref().unwrap_or("-"),
                r.problems.join("; ")
            ),
            None => "no revision applied from the fleet yet".into(),
        })
    }

    /// The newest publication this host knows was applied.
    pub fn high_water(&self) -> HighWater {
        self.mark.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Why `published` (under `key`) is stale: published before the newest revision this host
    /// (or the fleet) applied — an old signed record written back; `None` when it is not.
    fn stale(&self, published: &Published, key: &str) -> Option<String> {
        let mark = self.high_water();
        mark.above(published).then(|| {
            format!(
                "revision {} under `{key}` was published before the newest revision this host or the fleet applied ({} < {} ms since the epoch, {}): an old record written back is refused; publish it again",
                published.digest, published.published_at_ms, mark.published_at_ms, mark.digest
            )
        })
    }

    /// Raises this host's mark to the fleet's, if the fleet's is newer.
    async fn learn_fleet_mark(&self) {
        match self.fleet.revisions.get(HIGH_WATER).await {
            Ok(Some(bytes)) => {
                if let Ok(fleet) = serde_json::from_slice::<HighWater>(&bytes) {
                    let mut mark = self.mark.lock().unwrap_or_else(|e| e.into_inner());
                    *mark = std::mem::take(&mut *mark).newer(fleet);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "reading the fleet's high-water mark"),
        }
    }

    /// Records that `published` (its signed `record`) is applied: the host's mark, kept on
    /// disk, and the fleet's, raised if it is lower.
    async fn applied(&self, published: &Published, record: &[u8], from: &'static str) {
        let mark = HighWater::of(published);
        {
            let mut current = self.mark.lock().unwrap_or_else(|e| e.into_inner());
            *current = std::mem::take(&mut *current).newer(mark.clone());
        }
        *self.serving_from.lock().unwrap_or_else(|e| e.into_inner()) = from;
        self.reloader.runtime().set_unserved(None);
        if let Some(path) = &self.kept {
            let kept = Kept {
                mark: self.high_water(),
                record: String::from_utf8_lossy(record).into_owned(),
            };
            if let Err(e) = write_kept(path, &kept) {
                tracing::warn!(file = %path.display(), error = %format!("{e:#}"), "the host's high-water mark could not be kept; a restart relies on the fleet's");
            }
        }
        // The fleet's mark only ever rises.
        for _ in 0..8 {
            let entry = match self.fleet.revisions.entry(HIGH_WATER).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the fleet's high-water mark");
                    return;
                }
            };
            let (current, revision) = match &entry {
                Some(e) if e.operation == kv::Operation::Put => (
                    serde_json::from_slice::<HighWater>(&e.value).unwrap_or_default(),
                    e.revision,
                ),
                Some(e) => (HighWater::default(), e.revision),
                None => (HighWater::default(), 0),
            };
            if current.published_at_ms >= mark.published_at_ms {
                return;
            }
            let value = Bytes::from(serde_json::to_vec(&mark).unwrap_or_default());
            if self
                .fleet
                .revisions
                .update(HIGH_WATER, value, revision)
                .await
                .is_ok()
            {
                return;
            }
        }
    }

    /// After `stable` (`refused_bytes`) was refused on a host that serves no fleet revision:
    /// applies the newest earlier record of the bucket's history it can verify that is not
    /// older than its mark, else its own kept copy of the revision it last applied. `None`
    /// when nothing could be (the host then stays unready and says why).
    async fn fall_back(&self, refused_bytes: &[u8], refused: &Outcome) -> Option<Outcome> {
        let mut candidates: Vec<(Vec<u8>, &'static str)> = Vec::new();
        match self.fleet.revisions.history(STABLE).await {
            Ok(mut history) => {
                let mut entries = Vec::new();
                while let Some(Ok(entry)) = history.next().await {
                    if entry.operation == kv::Operation::Put && entry.value[..] != *refused_bytes {
                        entries.push(entry.value.to_vec());
                    }
                }
                candidates.extend(entries.into_iter().rev().map(|v| (v, "history")));
            }
            Err(e) => tracing::warn!(error = %e, "reading the history of the fleet's revisions"),
        }
        if let Some(kept) = self.kept.as_deref().and_then(read_kept) {
            candidates.push((kept.record.into_bytes(), "kept"));
        }
        for (bytes, from) in candidates {
            let Ok(published) = self.open(&bytes) else {
                continue;
            };
            if self.stale(&published, STABLE).is_some()
                || (published.canary.is_some() && !self.promoted(&published.digest).await)
            {
                continue;
            }
            let Ok(bundle) = self.bundle_of(&published) else {
                continue;
            };
            let outcome = self
                .reloader
                .apply_locked(bundle, self.options, Some(published.lock.clone()))
                .await;
            if matches!(outcome, Outcome::Applied { .. } | Outcome::Unchanged { .. }) {
                tracing::warn!(revision = %published.digest, from, refused = ?refused, "the fleet's stable revision was refused; serving the newest earlier revision this host could verify");
                self.applied(&published, &bytes, from).await;
                return Some(outcome);
            }
        }
        let why = self.waiting().unwrap_or_default();
        tracing::error!(%why, "no fleet revision can be served; this host stays unready");
        self.reloader.runtime().set_unserved(Some(why));
        None
    }

    /// The verdicts recorded on the canary `digest` (every time it was published as one).
    async fn verdicts(&self, digest: &str) -> Vec<VerdictRecord> {
        let Ok(keys) =
            super::keys_under(&self.fleet.revisions, &revisions::verdict_prefix(digest)).await
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for key in keys {
            if let Ok(Some(bytes)) = self.fleet.revisions.get(key.as_str()).await
                && let Ok(v) = serde_json::from_slice::<VerdictRecord>(&bytes)
            {
                out.push(v);
            }
        }
        out
    }

    /// Whether the leader promoted the canary `digest` (a canary record under `stable` must
    /// have been).
    async fn promoted(&self, digest: &str) -> bool {
        self.verdicts(digest)
            .await
            .iter()
            .any(|v| matches!(v.verdict, Verdict::Promoted { .. }))
    }

    /// The reason of a rolled-back verdict on the publication `published` (its digest, published
    /// at that time), whatever key its record was written back under.
    async fn rolled_back(&self, published: &Published) -> Option<String> {
        self.verdicts(&published.digest)
            .await
            .into_iter()
            .find_map(|v| match v.verdict {
                Verdict::RolledBack { reason }
                    if (v.published_at_ms > 0
                        && v.published_at_ms == published.published_at_ms)
                        || (v.published_at_ms == 0 && v.at_ms >= published.published_at_ms) =>
                {
                    Some(reason)
                }
                _ => None,
            })
    }

    /// Verifies and applies a published stable revision.
    async fn on_stable(&self, bytes: &[u8]) -> Outcome {
        let _one = self.serial.lock().await;
        let published = match self.open(bytes) {
            Ok(p) => p,
            Err((digest, why)) => return self.reloader.refuse(digest, vec![why]),
        };
        if published.digest == self.reloader.runtime().revision().digest {
            self.applied(&published, bytes, "stable").await;
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
        let outcome = self
            .reloader
            .apply_locked(bundle, self.options, Some(published.lock.clone()))
            .await;
        if matches!(outcome, Outcome::Applied { .. }) {
            self.applied(&published, bytes, "stable").await;
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
        if let Some(verdict) = self.rolled_back(&published).await {
            self.clear_canary("its publication was rolled back already");
            self.reloader.refuse(
                Some(published.digest),
                vec![format!(
                    "this canary publication was rolled back already ({}); a rolled-back canary is never served again: publish it anew",
                    verdict
                )],
            );
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
        let auth = self.reloader.auth();
        let built = tokio::task::spawn_blocking(move || {
            greentic_revisions::reload::build(bundle, options, Some(&lock), &base, Some(&auth))
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
            HIGH_WATER => {}
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
            serving_from: self.serving_from().to_string(),
            waiting: self.waiting(),
            high_water: self.high_water(),
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
                        0,
                        Verdict::RolledBack { reason: why },
                    )
                    .await;
            }
        };
        let Some(plan) = &published.canary else {
            return Ok(());
        };
        let verdict = if let Some(reason) = self.rolled_back(&published).await {
            // A publication rolled back once is withdrawn again, whatever key it came back
            // under.
            Some(Verdict::RolledBack {
                reason: format!("rolled back already: {reason}"),
            })
        } else if let Some((host, refusal)) = reports.iter().find_map(|r| {
            // A host that could not build it: the revision fails a check, fleet-wide. (Only
            // a refusal since it was published counts: the same digest may come back.)
            r.refused
                .as_ref()
                .filter(|f| f.digest.as_deref() == Some(published.digest.as_str()))
                .filter(|f| f.at * 1000.0 >= published.published_at_ms as f64)
                .map(|f| (r.host.clone(), f.clone()))
        }) {
            Some(Verdict::RolledBack {
                reason: format!("host {host} refused it: {}", refusal.problems.join("; ")),
            })
        } else {
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
            canary::judge(plan, &baseline, &on_canary, elapsed)
        };
        if let Some(verdict) = verdict {
            self.decide(
                &entry,
                stable_revision,
                &published.digest,
                &plan.tenants,
                published.published_at_ms,
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
        published_at_ms: u64,
        verdict: Verdict,
    ) -> anyhow::Result<()> {
        let record = VerdictRecord {
            digest: digest.to_string(),
            tenants: tenants.clone(),
            verdict: verdict.clone(),
            at_ms: now_ms(),
            by: self.fleet.host_id.clone(),
            published_at_ms,
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

/// The host's kept mark and record at `path`, if a previous run left a readable one.
fn read_kept(path: &std::path::Path) -> Option<Kept> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(kept) => Some(kept),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "the kept high-water mark is unreadable; ignored");
            None
        }
    }
}

/// Writes `kept` to `path` whole or not at all (a temporary file, synced, renamed over it).
fn write_kept(path: &std::path::Path, kept: &Kept) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no directory", path.display()))?;
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(&serde_json::to_vec_pretty(kept)?)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
