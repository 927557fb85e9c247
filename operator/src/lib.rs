//! `greentic-operator`: the Kubernetes control plane of a greentic fleet.
//!
//! It watches [`crd::ProviderClass`], [`crd::ProviderBinding`] and [`crd::RoutingPolicy`]
//! resources, checks each class with the host's own loader ([`observe`]), composes one bundle
//! revision from every resource ([`reconcile`], a pure function), writes each resource's status
//! and publishes the revision, signed, to the fleet's JetStream KV ([`publish`]) — where every
//! host takes it, as from `greentic-host publish`. Two replicas can run: only the holder of a
//! `Lease` ([`lease`]) publishes or writes status.

pub mod cluster;
pub mod crd;
pub mod lease;
pub mod observe;
pub mod publish;
pub mod reconcile;
