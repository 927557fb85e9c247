//! What the fuzz targets run.
//!
//! Each target is a function from bytes to nothing that panics only when a property the host
//! promises is broken: nothing in here may panic, abort, or hang on any input, and each target
//! also checks what must hold of what it accepted (a parsed value survives a round trip, an
//! error does not quote megabytes of input, a forged signature never verifies, a generated guest
//! ends in a typed error). The `fuzz/` directory wraps each in a `cargo fuzz` target; the tests
//! of this crate replay the seeds and every input that ever crashed a target
//! (`fuzz/regressions/<target>/`) on the stable toolchain, so a crash once found stays fixed.
//!
//! | target | feeds |
//! |---|---|
//! | [`bundle`] | `greentic.toml` text to the bundle parser and its cross-field checks |
//! | [`provider_manifest`] | provider-manifest JSON, a tenant config against its schema, and raw bytes to the embedded-manifest extractor |
//! | [`oci`] | OCI manifests, artifact configs and artifact references |
//! | [`signature`] | cosign signature manifests, simple-signing payloads, signatures and key files |
//! | [`attestation`] | DSSE envelopes, in-toto statements, conformance and SBOM predicates, audit log files |
//! | [`component`] | `wasm-smith` guests made messaging components (and raw bytes) to the loader, then one call |
//! | [`breaker`] | sequences of admitted, settled and abandoned calls and passing time to the circuit breaker |
//! | [`connection`] | any bytes, in pieces, to one connection of the real server on a paused clock |
//! | [`tls_connection`] | any bytes, in pieces, to the server's TLS listener: raw (handshake bytes), or inside a session a real client opened |

pub mod attestation;
pub mod breaker;
pub mod bundle;
pub mod component;
pub mod connection;
pub mod oci;
pub mod provider_manifest;
pub mod signature;
pub mod tls_connection;

/// A target's body: one input, a panic if a property breaks.
pub type Body = fn(&[u8]);

/// Every target: its name (as under `fuzz/fuzz_targets/` and `fuzz/seeds/`) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("bundle", bundle::run),
    ("provider_manifest", provider_manifest::run),
    ("oci", oci::run),
    ("signature", signature::run),
    ("attestation", attestation::run),
    ("component", component::run),
    ("breaker", breaker::run),
    ("connection", connection::run),
    ("tls_connection", tls_connection::run),
];

/// Longest line an error message may have: values are quoted cut in the middle, never whole.
pub const MAX_MESSAGE_LINE: usize = 2048;

/// Asserts that no line of `message` is longer than [`MAX_MESSAGE_LINE`] characters.
pub fn assert_bounded(what: &str, message: &str) {
    if let Some(line) = message
        .lines()
        .find(|l| l.chars().count() > MAX_MESSAGE_LINE)
    {
        panic!(
            "{what}: an error line of {} characters (the input is quoted whole?): {}…",
            line.chars().count(),
            line.chars().take(200).collect::<String>()
        );
    }
}

/// Splits `data` at its first NUL byte: the part before, and the part after (if any).
pub fn split_at_nul(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    }
}
