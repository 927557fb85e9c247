//! `[[schedules]]`: slots the host fires to timer providers.

use serde::{Deserialize, Serialize};

/// What a schedule does with slots that passed while no host ran.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Missed {
    /// Do not fire them; the next fire counts them.
    #[default]
    Skip,
    /// Fire the latest of them once, counting the others.
    Once,
}

/// `[[schedules]]`: a slot series the host fires to a timer provider for a tenant.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Unique name; providers see it in `fire-info.schedule`.
    pub name: String,
    /// The tenant the provider is fired for (its limits, secrets, config).
    pub tenant: String,
    /// The timer provider.
    pub provider: String,
    /// A cron expression (UTC): five fields, or six with seconds first.
    #[serde(default)]
    pub cron: Option<String>,
    /// An interval: a number and a unit (`ms`, `s`, `m`, `h`, `d`), at least one second.
    #[serde(default)]
    pub every: Option<String>,
    /// Passed to the provider as JSON text.
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
    /// What to do with slots missed while no host ran.
    #[serde(default)]
    pub missed: Missed,
    /// How late a slot may fire before it counts as missed, in milliseconds.
    #[serde(default = "default_grace")]
    pub grace_ms: u64,
}

fn default_grace() -> u64 {
    30_000
}
