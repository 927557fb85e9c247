//! Leader election with a `coordination.k8s.io/v1` `Lease`: of several operator replicas, only
//! the holder publishes revisions and writes statuses.
//!
//! Deciding is pure ([`decide`]: the lease as read, who we are, how long it has stood
//! unchanged); writing uses the lease's `resourceVersion`, so of two replicas that both saw an
//! expired lease only one update succeeds — the other gets a conflict and follows.
//!
//! Expiry is timed on this replica's own clock, from when it last saw the lease change (as
//! client-go does), never by comparing its clock with the holder's `renewTime`: clocks that
//! disagree by more than the lease cannot make two leaders.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};

/// What to do with the lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// There is none: create it, held by us.
    Create(Lease),
    /// We hold it: renew it.
    Renew(Lease),
    /// Its holder let it expire (or released it): take it.
    Take(Lease),
    /// Someone else holds it.
    Follow {
        /// Who.
        holder: String,
    },
}

/// Decides from the lease as read (`None`: it does not exist), which this replica has seen
/// unchanged (same `resourceVersion`) for `unchanged_for`. `now` is only written into the lease
/// (`renewTime`, `acquireTime`), for people.
pub fn decide(
    current: Option<&Lease>,
    name: &str,
    namespace: &str,
    me: &str,
    duration: Duration,
    now: Timestamp,
    unchanged_for: Duration,
) -> Decision {
    let seconds = i32::try_from(duration.as_secs()).unwrap_or(i32::MAX);
    let Some(lease) = current else {
        return Decision::Create(Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(me.into()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        });
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let mut next = lease.clone();
    if holder == me {
        let mut s = spec;
        s.renew_time = Some(MicroTime(now));
        s.lease_duration_seconds = Some(seconds);
        next.spec = Some(s);
        return Decision::Renew(next);
    }
    let held_for =
        u64::try_from(spec.lease_duration_seconds.unwrap_or(seconds).max(1)).unwrap_or(u64::MAX);
    let expired = unchanged_for > Duration::from_secs(held_for);
    if holder.is_empty() || expired {
        let mut s = spec;
        s.holder_identity = Some(me.into());
        s.lease_duration_seconds = Some(seconds);
        s.acquire_time = Some(MicroTime(now));
        s.renew_time = Some(MicroTime(now));
        s.lease_transitions = Some(s.lease_transitions.unwrap_or(0) + 1);
        next.spec = Some(s);
        return Decision::Take(next);
    }
    Decision::Follow { holder }
}

/// One replica's view of the lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    namespace: String,
    me: String,
    duration: Duration,
    /// The `resourceVersion` last seen, and when (this replica's clock).
    seen: std::sync::Mutex<Option<(String, std::time::Instant)>>,
}

impl Elector {
    /// An elector for lease `name` in `namespace`, as `me` (the pod's name).
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        me: &str,
        duration: Duration,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            namespace: namespace.into(),
            me: me.into(),
            duration,
            seen: std::sync::Mutex::new(None),
        }
    }

    /// How long the lease has stood at `version`, on this replica's clock.
    fn unchanged_for(&self, version: Option<&str>) -> Duration {
        let version = version.unwrap_or_default().to_string();
        let Ok(mut seen) = self.seen.lock() else {
            return Duration::ZERO;
        };
        match &*seen {
            Some((v, at)) if *v == version => at.elapsed(),
            _ => {
                *seen = Some((version, std::time::Instant::now()));
                Duration::ZERO
            }
        }
    }

    /// Reads the lease and acts on it: `Ok(true)` when we hold it afterwards.
    pub async fn try_lead(&self) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let unchanged_for = self.unchanged_for(
            current
                .as_ref()
                .and_then(|l| l.metadata.resource_version.as_deref()),
        );
        let decision = decide(
            current.as_ref(),
            &self.name,
            &self.namespace,
            &self.me,
            self.duration,
            Timestamp::now(),
            unchanged_for,
        );
        let written = match decision {
            Decision::Follow { .. } => return Ok(false),
            Decision::Create(lease) => self.api.create(&PostParams::default(), &lease).await,
            Decision::Renew(lease) | Decision::Take(lease) => {
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(_) => Ok(true),
            // Another replica wrote first (its resourceVersion won): it leads.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up if this replica holds it (on shutdown), so another replica takes
    /// over at once rather than after the lease runs out.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(&self.me) {
            return Ok(());
        }
        spec.holder_identity = None;
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}
