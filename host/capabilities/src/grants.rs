//! `[providers.NAME.grants]`: what a provider may use, one key per capability.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `[providers.NAME.grants]`: zero trust — nothing not granted here is linked.
///
/// Keys are snake_case in the bundle; the camelCase spelling (`outboundHosts`, as Kubernetes
/// resources write it) is accepted too.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Secret names the provider may read (must also be declared in its manifest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Hosts it may call over `wasi:http`: `[http://|https://]HOST[:PORT|:*]`, HOST a name,
    /// `*.domain`, `*`, an IP address or a network (see `greentic_manifest::HostPattern`). No
    /// scheme means HTTPS, no port the scheme's; loopback, private and link-local addresses are
    /// reached only through patterns that name them as addresses.
    #[serde(
        default,
        alias = "outboundHosts",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub outbound_hosts: Vec<String>,
    /// Whether it may read its tenant configuration (`greentic:config`).
    #[serde(default = "yes")]
    pub config: bool,
    /// Whether it may emit telemetry (`greentic:telemetry`).
    #[serde(default = "yes")]
    pub telemetry: bool,
    /// Whether it may keep state (`greentic:state`), scoped to each tenant and this provider.
    #[serde(default)]
    pub state: bool,
}

fn yes() -> bool {
    true
}

impl Default for Grants {
    fn default() -> Self {
        Grants {
            secrets: Vec::new(),
            outbound_hosts: Vec::new(),
            config: true,
            telemetry: true,
            state: false,
        }
    }
}
