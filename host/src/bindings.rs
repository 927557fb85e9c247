//! Host-side bindings of the greentic worlds: one `bindgen!` per world, in private modules.
//!
//! The imports both worlds share (secrets, telemetry, config) are generated once, with the
//! messaging world, so the host implements each `Host` trait once.

#![allow(missing_docs)]

/// `greentic:messaging/provider@1.0.0`.
pub mod messaging {
    wasmtime::component::bindgen!({
        world: "greentic:messaging/provider@1.0.0",
        path: [
            "../wit/deps/io.wit",
            "../wit/deps/clocks.wit",
            "../wit/deps/random.wit",
            "../wit/deps/filesystem.wit",
            "../wit/deps/sockets.wit",
            "../wit/deps/cli.wit",
            "../wit/deps/http.wit",
            "../wit/types.wit",
            "../wit/secrets.wit",
            "../wit/telemetry.wit",
            "../wit/config.wit",
            "../wit/messaging.wit",
        ],
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:random": wasmtime_wasi::p2::bindings::random,
            "wasi:filesystem": wasmtime_wasi::p2::bindings::filesystem,
            "wasi:sockets": wasmtime_wasi::p2::bindings::sockets,
            "wasi:cli": wasmtime_wasi::p2::bindings::cli,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "greentic:telemetry/tracing.span": crate::imports::telemetry::GuestSpan,
        },
    });
}

/// `greentic:webhook/handler@1.0.0`.
pub mod webhook {
    wasmtime::component::bindgen!({
        world: "greentic:webhook/handler@1.0.0",
        path: [
            "../wit/deps/io.wit",
            "../wit/deps/clocks.wit",
            "../wit/deps/random.wit",
            "../wit/deps/filesystem.wit",
            "../wit/deps/sockets.wit",
            "../wit/deps/cli.wit",
            "../wit/deps/http.wit",
            "../wit/types.wit",
            "../wit/secrets.wit",
            "../wit/telemetry.wit",
            "../wit/config.wit",
            "../wit/webhook.wit",
        ],
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:random": wasmtime_wasi::p2::bindings::random,
            "wasi:filesystem": wasmtime_wasi::p2::bindings::filesystem,
            "wasi:sockets": wasmtime_wasi::p2::bindings::sockets,
            "wasi:cli": wasmtime_wasi::p2::bindings::cli,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "greentic:secrets": crate::bindings::messaging::greentic::secrets,
            "greentic:telemetry": crate::bindings::messaging::greentic::telemetry,
            "greentic:config": crate::bindings::messaging::greentic::config,
        },
    });
}
