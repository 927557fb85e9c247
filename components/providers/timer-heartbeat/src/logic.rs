//! The provider's pure logic: configuration, payload, sequence encoding. Unit-tested on the
//! host.

use greentic_provider_sdk::timer::exports::greentic::timer::schedule::FireInfo;
use serde::Deserialize;
use serde_json::{Value, json};

/// The state key of the tenant's heartbeat counter.
pub const SEQUENCE_KEY: &str = "sequence";

/// The tenant's configuration (validated by the host against `config_schema` first).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where heartbeats go.
    pub url: String,
    /// Timeout in milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_timeout() -> u64 {
    5_000
}

/// The heartbeat's JSON body. The payload is the schedule's JSON, or `null` if it does not
/// parse (the host always passes JSON text).
pub fn payload(tenant: &str, info: &FireInfo, sequence: u64) -> Value {
    json!({
        "tenant": tenant,
        "schedule": info.schedule,
        "scheduled_at_ms": info.scheduled_at_ms,
        "fired_at_ms": info.fired_at_ms,
        "missed": info.missed,
        "sequence": sequence,
        "payload": serde_json::from_str::<Value>(&info.payload).unwrap_or(Value::Null),
    })
}

/// The state key of a slot's heartbeat number.
pub fn slot_key(info: &FireInfo) -> String {
    format!("slot/{}/{}", info.schedule, info.scheduled_at_ms)
}

/// The stored counter (8 bytes, big-endian); anything else counts as 0.
pub fn decode_sequence(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

pub use greentic_provider_sdk::errors::{code as error_code, excerpt};
pub use greentic_provider_sdk::now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_carries_slot_sequence_and_payload() {
        let info = FireInfo {
            schedule: "beat".into(),
            scheduled_at_ms: 60_000,
            fired_at_ms: 60_012,
            missed: 2,
            payload: r#"{"service":"billing"}"#.into(),
        };
        let body = payload("acme", &info, 7);
        assert_eq!(body["tenant"], "acme");
        assert_eq!(body["scheduled_at_ms"], 60_000);
        assert_eq!(body["missed"], 2);
        assert_eq!(body["sequence"], 7);
        assert_eq!(body["payload"]["service"], "billing");
        let junk = FireInfo {
            payload: "not json".into(),
            ..info
        };
        assert_eq!(payload("acme", &junk, 1)["payload"], Value::Null);
    }

    #[test]
    fn sequences_round_trip_and_junk_counts_as_zero() {
        assert_eq!(decode_sequence(&41u64.to_be_bytes()), 41);
        assert_eq!(decode_sequence(b"junk"), 0);
        assert_eq!(decode_sequence(&[]), 0);
    }
}
