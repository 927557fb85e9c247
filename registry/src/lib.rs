//! OCI distribution of provider components — **not implemented yet**.
//!
//! This crate will push and pull components as CNCF Wasm OCI artifacts (config
//! `application/vnd.wasm.config.v0+json`, one `application/wasm` layer), keep a local OCI
//! image-layout store and a content-addressed cache, and check every fetched byte against its
//! digest. Until then it exports nothing; bundles can only name providers by file path.
