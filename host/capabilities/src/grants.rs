//! `[providers.NAME.grants]`: what a provider may use, one key per capability. The keys are
//! the capabilities' own, listed by [`with_grants!`](crate::with_grants).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
crate::with_grants!(grants_struct);
