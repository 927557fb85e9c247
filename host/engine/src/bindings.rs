//! Host-side bindings of the domain worlds. What every domain shares — `greentic:provider/imports`
//! (types, secrets, telemetry, config, state) — is generated once by the capabilities
//! ([`greentic`]); a domain's own world is generated in its module by [`domain_bindgen!`], with
//! those imports mapped onto them.

#![allow(missing_docs)]

pub use greentic_capabilities::bindings::greentic;

/// Generates the host bindings of one domain's world from `wit/` plus the domain's own WIT
/// file: WASI and the shared greentic imports are mapped onto Wasmtime's and this module's
/// types, so only what the domain adds (its exports) is generated anew. A world whose exports
/// use `greentic:types` maps it too (`"greentic:types": crate::bindings::greentic::types`).
///
/// ```text
/// crate::bindings::domain_bindgen!("greentic:timer/scheduled@1.0.0", "../wit/timer.wit");
/// ```
macro_rules! domain_bindgen {
    ($world:literal, $wit:literal $(, $key:literal: $value:path)* $(,)?) => {
        #[allow(missing_docs)]
        mod generated {
            greentic_capabilities::bindgen_wit!([$wit],
            world: $world,
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
                "greentic:secrets": greentic_capabilities::bindings::greentic::secrets,
                "greentic:telemetry": greentic_capabilities::bindings::greentic::telemetry,
                "greentic:config": greentic_capabilities::bindings::greentic::config,
                "greentic:state": greentic_capabilities::bindings::greentic::state,
                $($key: $value,)*
            },
        );
        }
        pub use generated::*;
    };
}

pub(crate) use domain_bindgen;
