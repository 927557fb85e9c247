//! The host's integration tests, in one test binary (each binary would link the host and
//! Wasmtime again): the real `greentic-host` on loopback with the built components, a real
//! registry, real signatures. `cargo test -p greentic-host --test all MODULE::` runs one part.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod common;

mod attestations;
mod audit;
mod capacity;
mod components;
mod conformance;
mod events;
mod fleet;
mod forms;
mod hostile;
mod image;
mod ingress;
mod instances;
mod load;
mod manifest_cli;
mod metering;
mod native;
mod new_provider;
mod newcomer;
mod operator;
mod platforms;
mod providers;
mod readme;
mod registry_cli;
mod reload;
mod requests;
mod run;
mod telemetry;
mod tested;
mod timer;
mod tls;
