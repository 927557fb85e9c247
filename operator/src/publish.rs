//! The fleet side: the revision the fleet serves now, and publishing a new one — signed with
//! the operator's publisher key, exactly as `greentic-host publish` does, so hosts verify it
//! against their `[cluster].publishers` like any other.

use anyhow::Context as _;
use bytes::Bytes;
use greentic_bundle::Bundle;
use greentic_fleet::Fleet;
use greentic_fleet::revisions::{CANARY, Envelope, Published, STABLE, publisher_keys};

use crate::reconcile::{Publication, PublishedState};

/// The bucket sequence of the stable revision as read (`None`: there was none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen(pub Option<u64>);

/// A connection to the fleet, with the keys its hosts accept revisions from.
pub struct Publisher {
    fleet: Fleet,
    keys: greentic_signing::TrustedKeys,
    key: greentic_signing::KeyPair,
    identity: String,
}

impl Publisher {
    /// Connects to the fleet `base` names (`url` overrides `[cluster].url`), signing with
    /// `key`, as `identity` (recorded with every revision).
    pub async fn connect(
        base: &Bundle,
        url: &str,
        key: greentic_signing::KeyPair,
        identity: &str,
    ) -> anyhow::Result<Publisher> {
        let keys = publisher_keys(base).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            keys.verifies(b"probe", &key.sign(b"probe")),
            "the publisher key is not one of [cluster].publishers in the hosts' bundle: hosts would refuse every revision it signs; add its public key to [trust.keys] and name it in [cluster].publishers"
        );
        let fleet = Fleet::connect(&base.file.cluster, url, &base.dir, identity)
            .await
            .with_context(|| format!("connecting to the fleet at {url}"))?;
        Ok(Publisher {
            fleet,
            keys,
            key,
            identity: identity.into(),
        })
    }

    /// The fleet's stable revision, if one was published and a publisher key signed it, and
    /// the bucket's sequence for it (what [`Publisher::publish`] must still find there).
    pub async fn published(&self) -> anyhow::Result<(Option<PublishedState>, Seen)> {
        let entry = self
            .fleet
            .revisions
            .entry(STABLE)
            .await
            .context("reading the fleet's stable revision")?;
        let Some(entry) = entry else {
            return Ok((None, Seen(None)));
        };
        let seen = Seen(Some(entry.revision));
        if entry.operation != async_nats::jetstream::kv::Operation::Put {
            return Ok((None, seen));
        }
        let published = Envelope::open(&entry.value, &self.keys).map_err(anyhow::Error::msg)?;
        let bundle = Bundle::parse("the published revision", &published.bundle)
            .context("the fleet's stable revision does not parse")?;
        Ok((
            Some(PublishedState {
                digest: published.digest,
                bundle,
                lock: published.lock,
            }),
            seen,
        ))
    }

    /// Publishes `revision` as the fleet's stable revision (withdrawing a canary) — only if the
    /// stable revision is still the one read as `seen`: a replica that lost the lease mid-pass,
    /// or read an older revision, cannot overwrite a newer one.
    pub async fn publish(&self, revision: &Publication, seen: Seen) -> anyhow::Result<()> {
        let published = Published {
            digest: revision.digest.clone(),
            bundle: revision.text.clone(),
            lock: revision.lock.clone(),
            published_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            publisher: format!("greentic-operator/{}", self.identity),
            canary: None,
        };
        let envelope = Envelope::sign(&published, &self.key);
        let bytes = Bytes::from(serde_json::to_vec(&envelope)?);
        match seen.0 {
            Some(last) => self
                .fleet
                .revisions
                .update(STABLE, bytes, last)
                .await
                .map(|_| ())
                .context("publishing the revision (the stable revision changed since it was read; the next pass reads it again)")?,
            None => self
                .fleet
                .revisions
                .create(STABLE, bytes)
                .await
                .map(|_| ())
                .context("publishing the first revision (another publisher was first; the next pass reads it)")?,
        }
        self.fleet
            .revisions
            .delete(CANARY)
            .await
            .context("withdrawing the canary")?;
        Ok(())
    }
}
