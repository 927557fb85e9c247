//! Host-side bindings of `greentic:provider/imports`, the world every domain world includes:
//! generated once, so each capability implements its `Host` traits once. A domain's own world
//! is generated where the domain lives, with these imports mapped onto this module
//! ([`bindgen_domain!`](crate::bindgen_domain)); [`bindgen_wit!`] lists the WIT files.

#![allow(missing_docs)]

/// `wasmtime::component::bindgen!` over the repository's WIT (WASI, the greentic packages every
/// provider imports, and `greentic:provider`) and the files in brackets; the rest of the options
/// follow. After `host_imports`, with how the capabilities' imports are called (the async
/// ones). Paths are relative to a crate two levels below the repository root (`host/<crate>`).
/// A capability's WIT file is one line here, and one more if its functions are async.
#[macro_export]
macro_rules! bindgen_wit {
    (host_imports [$($wit:literal),* $(,)?], $($options:tt)*) => {
        bindgen_wit!([$($wit),*],
            imports: {
                "greentic:state": async | trappable,
                "greentic:events": async | trappable,
                default: trappable,
            },
            $($options)*
        );
    };
    ([$($wit:literal),* $(,)?], $($options:tt)*) => {
        wasmtime::component::bindgen!({
            path: [
                "../../wit/deps/io.wit",
                "../../wit/deps/clocks.wit",
                "../../wit/deps/random.wit",
                "../../wit/deps/filesystem.wit",
                "../../wit/deps/sockets.wit",
                "../../wit/deps/cli.wit",
                "../../wit/deps/http.wit",
                "../../wit/types.wit",
                "../../wit/secrets.wit",
                "../../wit/telemetry.wit",
                "../../wit/config.wit",
                "../../wit/state.wit",
                "../../wit/events.wit",
                "../../wit/provider.wit",
                $($wit,)*
            ],
            $($options)*
        });
    };
}

mod generated {
    bindgen_wit!(host_imports [],
        world: "greentic:provider/imports@1.0.0",
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:random": wasmtime_wasi::p2::bindings::random,
            "wasi:filesystem": wasmtime_wasi::p2::bindings::filesystem,
            "wasi:sockets": wasmtime_wasi::p2::bindings::sockets,
            "wasi:cli": wasmtime_wasi::p2::bindings::cli,
            "greentic:telemetry/tracing.span": super::GuestSpan,
        },
    );
}

pub use generated::greentic;

/// The host side of a guest's span (`greentic:telemetry/tracing.span`): an OpenTelemetry span,
/// or nothing once over the budget or ended.
pub struct GuestSpan {
    pub(crate) span: Option<opentelemetry::global::BoxedSpan>,
    pub(crate) cx: opentelemetry::Context,
}
