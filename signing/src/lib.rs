//! Cosign-compatible signing and verification — **not implemented yet**.
//!
//! This crate will create and verify cosign key-based signatures (simple-signing payloads,
//! `sha256-<hex>.sig` manifests) over component digests, and evaluate a bundle's trust policy,
//! failing closed on unsigned artifacts, untrusted keys and empty key sets. Until then it
//! exports nothing.
