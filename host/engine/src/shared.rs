//! What a host shares with the other hosts of its fleet, as the runtime sees it: small traits
//! the fleet implements (over NATS JetStream), so the runtime knows nothing of how. A host
//! that joined no fleet has none of them, and the runtime does without.

use std::time::Instant;

use bytes::Bytes;
use greentic_auth::Caller;
use greentic_bundle::{Limits, Route};

use crate::errors::CallError;

/// A tenant's `max_concurrent` and `fuel_per_second`, held across the fleet.
#[async_trait::async_trait]
pub trait SharedLimits: Send + Sync {
    /// Admits one attempt of `tenant` (its gate's `scope`) under `limits`, waiting until
    /// `until` at most; the lease is settled with the fuel the attempt used.
    async fn admit(
        self: std::sync::Arc<Self>,
        scope: &str,
        tenant: &str,
        limits: &Limits,
        until: Instant,
    ) -> Result<Box<dyn FuelLease>, CallError>;
}

/// One admitted attempt's share of the fleet's limits.
#[async_trait::async_trait]
pub trait FuelLease: Send {
    /// Gives the slot back and charges `fuel`.
    async fn settle(self: Box<Self>, fuel: u64);
}

/// Idempotency records: a keyed call runs at most once to completion, whichever host it
/// reaches.
#[async_trait::async_trait]
pub trait IdempotencyRecords: Send + Sync {
    /// What identifies the request behind a key (a key reused for another request is
    /// refused): derived from the operation and the body.
    fn fingerprint(&self, operation: &str, body: &serde_json::Value) -> String;

    /// Claims `key` of `caller` for `operation` (the request's `fingerprint`), waiting until
    /// `until` at most for a claim another host holds.
    async fn claim(
        &self,
        caller: &Caller,
        operation: &str,
        key: &str,
        fingerprint: &str,
        until: Instant,
    ) -> Result<Claim, CallError>;
}

/// What a claim came to.
pub enum Claim {
    /// The call already ran to completion: its result.
    Done(serde_json::Value),
    /// This host runs it, and records the result when it is done.
    Run(Box<dyn Running>),
}

/// A claimed call this host runs.
#[async_trait::async_trait]
pub trait Running: Send {
    /// Records the call's result (a failure gives the key back).
    async fn finish(self: Box<Self>, result: Result<&serde_json::Value, &CallError>);
}

/// The durable queue webhook deliveries on `durable` routes go through.
#[async_trait::async_trait]
pub trait DeliveryQueue: Send + Sync {
    /// Queues `request` for `tenant`'s `provider` on `route`, under `limits`; the answer the
    /// sender gets (`202` once queued).
    async fn accept(
        &self,
        tenant: &str,
        provider: &str,
        route: &Route,
        limits: &Limits,
        max_body_bytes: usize,
        request: hyper::Request<Bytes>,
    ) -> Result<hyper::Response<Bytes>, CallError>;
}
