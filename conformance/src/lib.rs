//! The provider conformance suite — **not implemented yet**.
//!
//! This crate will run any provider under the real host and drive it through the behaviour
//! every provider of its domain must show (error mapping, tenancy scoping, idempotency, retries,
//! telemetry, secret resolution, manifest truth). Until then it exports nothing.
