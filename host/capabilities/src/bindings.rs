//! Host-side bindings of `greentic:provider/imports`, the world every domain world includes:
//! generated once, so each capability implements its `Host` traits once. A domain's own world
//! is generated where the domain lives, with these imports mapped onto this module
//! ([`bindgen_domain!`](crate::bindgen_domain)); [`bindgen_wit!`](crate::bindgen_wit) lists the
//! WIT files.

#![allow(missing_docs)]

mod generated {
    crate::bindgen_wit!(host_imports [],
        world: "greentic:provider/imports@1.0.0",
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:random": wasmtime_wasi::p2::bindings::random,
            "wasi:filesystem": wasmtime_wasi::p2::bindings::filesystem,
            "wasi:sockets": wasmtime_wasi::p2::bindings::sockets,
            "wasi:cli": wasmtime_wasi::p2::bindings::cli,
            "greentic:telemetry/tracing.span": crate::telemetry::span::GuestSpan,
        },
    );
}

pub use generated::greentic;
