//! `[providers.NAME.grants]`: what a provider may use, one key per capability, listed once in
//! [`with_grants!`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Calls `$then!` with every grant key (`name: Type = default,`, each with its docs and serde
/// attributes): [`Grants`] is declared through this, so a capability's grant is one entry here.
#[macro_export]
macro_rules! with_grants {
    ($then:ident) => {
        $then! {
            /// Secret names the provider may read (must also be declared in its manifest).
            #[serde(skip_serializing_if = "Vec::is_empty")]
            secrets: Vec<String> = Vec::new(),
            /// Hosts it may call over `wasi:http`: `[http://|https://]HOST[:PORT|:*]`, HOST a
            /// name, `*.domain`, `*`, an IP address or a network (see
            /// `greentic_manifest::HostPattern`). No scheme means HTTPS, no port the scheme's;
            /// loopback, private and link-local addresses are reached only through patterns that
            /// name them as addresses.
            #[serde(alias = "outboundHosts", skip_serializing_if = "Vec::is_empty")]
            outbound_hosts: Vec<String> = Vec::new(),
            /// Whether it may read its tenant configuration (`greentic:config`).
            config: bool = true,
            /// Whether it may emit telemetry (`greentic:telemetry`).
            telemetry: bool = true,
            /// Whether it may keep state (`greentic:state`), scoped to each tenant and this
            /// provider.
            state: bool = false,
            /// Whether it may publish events (`greentic:events`) for the tenants it serves.
            events: bool = false,
        }
    };
}

macro_rules! grants_struct {
    ($($(#[$attr:meta])* $name:ident: $ty:ty = $default:expr,)*) => {
        /// `[providers.NAME.grants]`: zero trust — nothing not granted here is linked.
        ///
        /// Keys are snake_case in the bundle; the camelCase spelling (`outboundHosts`, as
        /// Kubernetes resources write it) is accepted too. A key left out has its default.
        #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
        #[serde(deny_unknown_fields, default)]
        pub struct Grants {
            $($(#[$attr])* pub $name: $ty,)*
        }

        impl Default for Grants {
            fn default() -> Self {
                Grants {
                    $($name: $default,)*
                }
            }
        }
    };
}
with_grants!(grants_struct);
