//! Fleet-wide idempotency: a call with an `Idempotency-Key` runs at most once to completion,
//! whichever host it reaches, and a retry gets the first result.
//!
//! The record of (tenant, capability, key) lives in `<prefix>_idempotency` (entries expire
//! after `[cluster].idempotency_ttl_secs`). A host claims it by writing `running` expecting
//! the key's last sequence — only one claim wins — with a short lease it renews while the call
//! runs. A retry that finds `done` gets the stored result; one that finds `running` waits for
//! it, and takes the record over once the lease lapses (the first host died mid-call), so the
//! call runs again there. A call that fails gives its record up, so a retry runs it afresh.
//!
//! What this guarantees: at most one run *completes* per key, and a caller that keeps retrying
//! gets a result. A host killed mid-call may have reached the upstream before it died; the run
//! that takes over reaches it again with the same key (providers pass it on, as
//! `Idempotency-Key`, for the upstream to deduplicate).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use bytes::Bytes;
use greentic_auth::Caller;
use greentic_engine::errors::CallError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Fleet, within};

/// How long a running claim holds without renewal.
const LEASE: Duration = Duration::from_secs(3);
/// How often a running claim is renewed.
const RENEW: Duration = Duration::from_secs(1);

/// The idempotency records of a fleet.
pub struct Records {
    store: kv::Store,
    host_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
enum Record {
    Running {
        host: String,
        lease_until_ms: u64,
        /// The request's fingerprint (absent in records of earlier versions).
        #[serde(default)]
        fingerprint: Option<String>,
    },
    Done {
        result: serde_json::Value,
        #[serde(default)]
        fingerprint: Option<String>,
    },
}

impl Record {
    /// Whether the record is about a request other than the one fingerprinted `fingerprint`.
    fn other_request(&self, fingerprint: &str) -> bool {
        let (Record::Running { fingerprint: f, .. } | Record::Done { fingerprint: f, .. }) = self;
        f.as_deref().is_some_and(|f| f != fingerprint)
    }
}

/// The fingerprint of an invoke: its capability and its body, whatever the order of the
/// body's fields, and whether the key came in the body or the header (the body's
/// `idempotency_key` is left out). A key reused with another fingerprint is another request.
pub fn fingerprint(capability: &str, body: &serde_json::Value) -> String {
    fn canonical(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let sorted: std::collections::BTreeMap<&String, serde_json::Value> =
                    map.iter().map(|(k, v)| (k, canonical(v))).collect();
                serde_json::to_value(sorted).unwrap_or(serde_json::Value::Null)
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(canonical).collect())
            }
            other => other.clone(),
        }
    }
    let mut h = Sha256::new();
    let body = match body {
        serde_json::Value::Object(map) => {
            let mut without = map.clone();
            // Removed before sorting: a removal from an ordered map may reorder it.
            without.shift_remove("idempotency_key");
            canonical(&serde_json::Value::Object(without))
        }
        other => canonical(other),
    };
    let body = serde_json::to_vec(&body).unwrap_or_default();
    for part in [capability.as_bytes(), &body] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

pub use greentic_engine::shared::Claim;

/// A claimed record, renewed in the background until finished.
pub struct Running {
    store: kv::Store,
    key: String,
    fingerprint: String,
    /// The record's last sequence; held while the lease is renewed, so finishing never races
    /// a renewal in flight.
    seq: Arc<tokio::sync::Mutex<u64>>,
    finished: Arc<AtomicBool>,
    renew: tokio::task::JoinHandle<()>,
}

/// How long one JetStream request may take before the claim gives up on it.
const REQUEST: Duration = Duration::from_secs(2);

fn now_ms() -> u64 {
    greentic_capabilities::state::now_ms()
}

fn encode(record: &Record) -> Bytes {
    Bytes::from(serde_json::to_vec(record).expect("a record always serialises"))
}

impl Records {
    /// Opens (creating if missing) the records bucket of `fleet`.
    pub async fn open(fleet: &Fleet) -> anyhow::Result<Arc<Records>> {
        let store = super::bucket(
            &fleet.js,
            kv::Config {
                bucket: format!("{}_idempotency", fleet.section.prefix),
                description: "greentic idempotency records and results, per tenant".into(),
                history: 1,
                max_age: Duration::from_secs(fleet.section.idempotency_ttl_secs),
                num_replicas: fleet.section.replicas,
                max_bytes: super::bound(fleet.section.max_bytes.idempotency),
                ..Default::default()
            },
        )
        .await?;
        Ok(Arc::new(Records {
            store,
            host_id: fleet.host_id.clone(),
        }))
    }

    /// The record key of `key` for the caller (`tenant`, `team`, `user`) and `capability`:
    /// hashed, so any key fits. Two users of a tenant reusing a key are two calls.
    fn record_key(caller: &Caller, capability: &str, key: &str) -> String {
        let mut h = Sha256::new();
        let (team, user) = (
            caller.team.as_deref().unwrap_or(""),
            caller.user.as_deref().unwrap_or(""),
        );
        for part in [caller.tenant.as_str(), team, user, capability, key] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// Claims (caller, capability, key) for the request fingerprinted `fingerprint`: run it,
    /// or its stored result; waits for a running claim of another host until `until` (then
    /// `in-progress`). A key whose record is about another request is refused
    /// (`idempotency-key-reused`), and a bucket with no room left is `storage-full` — never a
    /// call run without its record.
    pub async fn claim(
        &self,
        caller: &Caller,
        capability: &str,
        key: &str,
        fingerprint: &str,
        until: Instant,
    ) -> Result<Claim, CallError> {
        let record = Self::record_key(caller, capability, key);
        let fail = |e: String| {
            CallError::Internal(format!(
                "the fleet's idempotency record cannot be read: {e}"
            ))
        };
        // Most keys are new: claim first, read only if that fails (one round trip, not two).
        if let Some(seq) = self
            .write(&record, self.running_record(fingerprint), 0)
            .await?
        {
            return Ok(Claim::Run(Box::new(self.running(record, seq, fingerprint))));
        }
        let mut pause = Duration::from_millis(5);
        loop {
            let entry = within(REQUEST, self.store.entry(record.as_str()))
                .await
                .map_err(|e| fail(e.to_string()))?;
            let expect = match &entry {
                None => Some(0),
                Some(e) if e.operation != kv::Operation::Put => Some(e.revision),
                Some(e) => match serde_json::from_slice::<Record>(&e.value) {
                    Ok(r) if r.other_request(fingerprint) => {
                        return Err(CallError::IdempotencyKeyReused(format!(
                            "key `{}` was first sent to `{capability}` with another body",
                            greentic_engine::errors::clip(key, 128)
                        )));
                    }
                    Ok(Record::Done { result, .. }) => return Ok(Claim::Done(result)),
                    Ok(Record::Running { lease_until_ms, .. }) if lease_until_ms > now_ms() => None,
                    // A lapsed lease (its host died mid-call), or a record this version cannot
                    // read: take it over.
                    _ => Some(e.revision),
                },
            };
            if let Some(last) = expect {
                if let Some(seq) = self
                    .write(&record, self.running_record(fingerprint), last)
                    .await?
                {
                    return Ok(Claim::Run(Box::new(self.running(record, seq, fingerprint))));
                }
                // Another host claimed it first: look again.
                continue;
            }
            if Instant::now() + pause >= until {
                return Err(CallError::InProgress {
                    retry_after_ms: LEASE.as_millis() as u64,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Writes `value` at `record` expecting revision `last`: its new revision, or `None` when
    /// another revision was there. A full bucket is `storage-full`.
    async fn write(&self, record: &str, value: Bytes, last: u64) -> Result<Option<u64>, CallError> {
        match tokio::time::timeout(REQUEST, self.store.update(record, value, last)).await {
            Ok(Ok(seq)) => Ok(Some(seq)),
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Ok(Err(e)) if greentic_jetstream::is_full(&e.to_string()) => {
                Err(CallError::StorageFull {
                    what: "the fleet's idempotency record".into(),
                    retry_after_ms: 5_000,
                })
            }
            Ok(Err(e)) => Err(CallError::Internal(format!(
                "the fleet's idempotency record cannot be written: {e}"
            ))),
            Err(_) => Err(CallError::Internal(format!(
                "the fleet's idempotency record cannot be written: no answer within {REQUEST:?}"
            ))),
        }
    }

    fn running_record(&self, fingerprint: &str) -> Bytes {
        encode(&Record::Running {
            host: self.host_id.clone(),
            lease_until_ms: now_ms() + LEASE.as_millis() as u64,
            fingerprint: Some(fingerprint.to_string()),
        })
    }

    fn running(&self, key: String, seq: u64, fingerprint: &str) -> Running {
        let seq = Arc::new(tokio::sync::Mutex::new(seq));
        let finished = Arc::new(AtomicBool::new(false));
        let (store, host, renew_key, renew_seq, done, print) = (
            self.store.clone(),
            self.host_id.clone(),
            key.clone(),
            seq.clone(),
            finished.clone(),
            fingerprint.to_string(),
        );
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW).await;
                let mut last = renew_seq.lock().await;
                if done.load(Ordering::SeqCst) {
                    return;
                }
                let value = encode(&Record::Running {
                    host: host.clone(),
                    lease_until_ms: now_ms() + LEASE.as_millis() as u64,
                    fingerprint: Some(print.clone()),
                });
                let renewed =
                    tokio::time::timeout(REQUEST, store.update(renew_key.as_str(), value, *last))
                        .await;
                match renewed {
                    Ok(Ok(next)) => *last = next,
                    // Taken over (this host stalled past its lease): stop renewing.
                    Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => return,
                    // A blip: try again at the next renewal, inside the lease.
                    _ => {}
                }
            }
        });
        Running {
            store: self.store.clone(),
            key,
            fingerprint: fingerprint.to_string(),
            seq,
            finished,
            renew,
        }
    }
}

impl Running {
    /// Stores the result of a call that succeeded, or gives the record up after a failure (a
    /// retry then runs the call afresh).
    pub async fn finish(self, result: Result<&serde_json::Value, &CallError>) {
        // No renewal is in flight while the lock is held, and none starts after it.
        let last = {
            let last = self.seq.lock().await;
            self.finished.store(true, Ordering::SeqCst);
            *last
        };
        self.renew.abort();
        let outcome = match result {
            Ok(value) => self
                .store
                .update(
                    self.key.as_str(),
                    encode(&Record::Done {
                        result: value.clone(),
                        fingerprint: Some(self.fingerprint.clone()),
                    }),
                    last,
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(_) => self
                .store
                .delete_expect_revision(self.key.as_str(), Some(last))
                .await
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "the idempotency record could not be settled (taken over after a stall?)");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.renew.abort();
    }
}

#[async_trait::async_trait]
impl greentic_engine::shared::IdempotencyRecords for Records {
    fn fingerprint(&self, operation: &str, body: &serde_json::Value) -> String {
        fingerprint(operation, body)
    }

    async fn claim(
        &self,
        caller: &Caller,
        operation: &str,
        key: &str,
        fingerprint: &str,
        until: Instant,
    ) -> Result<Claim, CallError> {
        Records::claim(self, caller, operation, key, fingerprint, until).await
    }
}

#[async_trait::async_trait]
impl greentic_engine::shared::Running for Running {
    async fn finish(self: Box<Self>, result: Result<&serde_json::Value, &CallError>) {
        Running::finish(*self, result).await
    }
}

#[cfg(test)]
mod tests {
    use super::fingerprint;
    use serde_json::json;

    #[test]
    fn a_fingerprint_is_of_the_request_not_of_how_it_was_written() {
        let a = fingerprint(
            "send",
            &json!({"to": "a", "text": "b", "idempotency_key": "k"}),
        );
        assert_eq!(a, fingerprint("send", &json!({"text": "b", "to": "a"})));
        assert_eq!(
            a,
            fingerprint(
                "send",
                &json!({"idempotency_key": "k", "text": "b", "to": "a"})
            )
        );
        assert_ne!(a, fingerprint("send", &json!({"to": "a", "text": "c"})));
        assert_ne!(a, fingerprint("post", &json!({"to": "a", "text": "b"})));
        let nested = |x: u8| json!({"to": "a", "text": "b", "meta": {"y": 1, "x": x}});
        assert_eq!(
            fingerprint("send", &nested(1)),
            fingerprint(
                "send",
                &json!({"meta": {"x": 1, "y": 1}, "text": "b", "to": "a"})
            )
        );
        assert_ne!(
            fingerprint("send", &nested(1)),
            fingerprint("send", &nested(2))
        );
    }
}
