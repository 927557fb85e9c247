//! Host-side bindings of the domain worlds. What every domain shares — `greentic:provider/imports`
//! (types and every capability's imports) — is generated once by the capabilities
//! ([`greentic`]); a domain's own world is generated in its module by [`domain_bindgen!`], with
//! those imports mapped onto them.

#![allow(missing_docs)]

pub use greentic_capabilities::bindings::greentic;

/// Generates the host bindings of one domain's world from `wit/` plus the domain's own WIT
/// file ([`greentic_capabilities::bindgen_domain!`]): WASI and the shared greentic imports are
/// mapped onto Wasmtime's and the capabilities' types, so only what the domain adds (its
/// exports) is generated anew. A world whose exports
/// use `greentic:types` maps it too (`"greentic:types": crate::bindings::greentic::types`).
///
/// ```text
/// crate::bindings::domain_bindgen!("greentic:timer/scheduled@1.0.0", "../wit/timer.wit");
/// ```
macro_rules! domain_bindgen {
    ($world:literal, $wit:literal $(, $key:literal: $value:path)* $(,)?) => {
        #[allow(missing_docs)]
        mod generated {
            greentic_capabilities::bindgen_domain!($world, $wit $(, $key: $value)*);
        }
        pub use generated::*;
    };
}

pub(crate) use domain_bindgen;
