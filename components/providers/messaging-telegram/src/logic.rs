//! The provider's pure logic: request body, Telegram's answers, idempotency records.
//! Unit-tested on the host.

use greentic_provider_sdk::errors;
use greentic_provider_sdk::http::Response;
use greentic_provider_sdk::messaging::exports::greentic::messaging::outbound::{
    Message, SendResult,
};
use greentic_provider_sdk::types::{ProviderError, RateLimit};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The tenant's configuration (validated by the host against `config_schema` first).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `MarkdownV2` or `HTML`.
    #[serde(default)]
    pub parse_mode: Option<String>,
    /// Deliver silently.
    #[serde(default)]
    pub disable_notification: bool,
    /// Timeout in milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// How long a delivered key is remembered.
    #[serde(default = "default_window")]
    pub dedupe_window_secs: u64,
}

fn default_timeout() -> u64 {
    10_000
}

fn default_window() -> u64 {
    86_400
}

/// Telegram's limit for a message's text, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;

/// What a claimed key holds while its send is in progress.
pub const PENDING: &[u8] = b"pending";

/// What a key holds after a send that certainly did not deliver gave its claim back.
pub const RELEASED: &[u8] = b"released";

/// What an earlier send of a key came to.
#[derive(Debug, Clone)]
pub enum Claim {
    /// This send claimed the key (at this revision): deliver.
    Mine(u64),
    /// An earlier send gave the key back: it may be claimed again.
    Released,
    /// Another send of the key is in progress.
    InFlight,
    /// The key was delivered, with this result.
    Delivered(SendResult),
}

/// Refuses messages Telegram would refuse.
pub fn validate(msg: &Message) -> Result<(), ProviderError> {
    if msg.to.trim().is_empty() {
        return Err(ProviderError::InvalidInput(
            "`to` must be a chat id or @channelusername".into(),
        ));
    }
    if msg.text.trim().is_empty() {
        return Err(ProviderError::InvalidInput("`text` is empty".into()));
    }
    if msg.text.chars().count() > MAX_TEXT_CHARS {
        return Err(ProviderError::InvalidInput(format!(
            "`text` is longer than Telegram's {MAX_TEXT_CHARS} characters"
        )));
    }
    Ok(())
}

/// The `sendMessage` body.
pub fn payload(msg: &Message, config: &Config) -> Result<Value, ProviderError> {
    let mut body = json!({ "chat_id": msg.to, "text": msg.text });
    if let Some(thread) = &msg.thread {
        let id: i64 = thread.parse().map_err(|_| {
            ProviderError::InvalidInput(format!(
                "`thread` must be the numeric id of the message to reply to, not `{thread}`"
            ))
        })?;
        body["reply_to_message_id"] = json!(id);
    }
    if let Some(mode) = &config.parse_mode {
        body["parse_mode"] = json!(mode);
    }
    if config.disable_notification {
        body["disable_notification"] = json!(true);
    }
    Ok(body)
}

/// Telegram's failure, if the answer is one: by status (the one mapping every provider
/// uses), with the retry delay from `parameters.retry_after` when there is no header.
pub fn error(response: &Response, now_ms: u64) -> Option<ProviderError> {
    let parsed: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    let detail = parsed["description"]
        .as_str()
        .map_or_else(|| errors::excerpt(&response.body), str::to_string);
    let mapped = errors::from_status(
        response.status,
        response.header("retry-after"),
        now_ms,
        &detail,
    )?;
    Some(
        match (mapped, parsed["parameters"]["retry_after"].as_u64()) {
            (ProviderError::RateLimited(_), Some(secs))
                if response.header("retry-after").is_none() =>
            {
                ProviderError::RateLimited(RateLimit {
                    retry_after_ms: secs * 1000,
                })
            }
            (mapped, _) => mapped,
        },
    )
}

/// The result of a delivered message: `CHAT:MESSAGE_ID` from Telegram's answer (or the time,
/// if the answer carries no id).
pub fn result(chat: &str, body: &[u8], now_ms: u64) -> SendResult {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let id = match parsed["result"]["message_id"].as_i64() {
        Some(message) => format!("{chat}:{message}"),
        None => format!("{chat}:sent-{now_ms}"),
    };
    SendResult {
        id,
        delivered_at_ms: now_ms,
    }
}

/// The state key of an idempotency key: its SHA-256, so any key fits the store's bounds.
pub fn state_key(idempotency_key: &str) -> String {
    let digest = Sha256::digest(idempotency_key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sent/{hex}")
}

/// The record of a delivered key.
pub fn encode_result(result: &SendResult) -> Vec<u8> {
    json!({ "id": result.id, "delivered_at_ms": result.delivered_at_ms })
        .to_string()
        .into_bytes()
}

/// What a key's record says.
pub fn claimed(record: &[u8]) -> Claim {
    if record == PENDING {
        return Claim::InFlight;
    }
    if record == RELEASED {
        return Claim::Released;
    }
    let parsed: Value = serde_json::from_slice(record).unwrap_or(Value::Null);
    match (parsed["id"].as_str(), parsed["delivered_at_ms"].as_u64()) {
        (Some(id), Some(at)) => Claim::Delivered(SendResult {
            id: id.to_string(),
            delivered_at_ms: at,
        }),
        _ => Claim::InFlight,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(thread: Option<&str>) -> Message {
        Message {
            to: "-100123".into(),
            text: "hi".into(),
            thread: thread.map(str::to_string),
            idempotency_key: None,
        }
    }

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn payloads_follow_the_bot_api() {
        let config: Config = serde_json::from_str(r#"{"parse_mode":"HTML"}"#).unwrap();
        let body = payload(&msg(Some("42")), &config).unwrap();
        assert_eq!(body["chat_id"], "-100123");
        assert_eq!(body["reply_to_message_id"], 42);
        assert_eq!(body["parse_mode"], "HTML");
        assert!(matches!(
            payload(&msg(Some("abc")), &config),
            Err(ProviderError::InvalidInput(_))
        ));
        assert!(
            validate(&Message {
                text: "x".repeat(MAX_TEXT_CHARS + 1),
                ..msg(None)
            })
            .is_err()
        );
    }

    #[test]
    fn answers_map_to_results_and_errors() {
        let ok = r#"{"ok":true,"result":{"message_id":77,"date":1}}"#;
        assert!(error(&response(200, ok), 0).is_none());
        assert_eq!(result("-100123", ok.as_bytes(), 5).id, "-100123:77");
        let limited = r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 9","parameters":{"retry_after":9}}"#;
        assert!(matches!(
            error(&response(429, limited), 0),
            Some(ProviderError::RateLimited(RateLimit {
                retry_after_ms: 9000
            }))
        ));
        let missing =
            r#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#;
        match error(&response(400, missing), 0) {
            Some(ProviderError::InvalidInput(m)) => assert!(m.contains("chat not found"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            error(&response(401, r#"{"ok":false}"#), 0),
            Some(ProviderError::Unauthorized(_))
        ));
    }

    #[test]
    fn records_round_trip_and_keys_are_bounded() {
        let r = SendResult {
            id: "-1:5".into(),
            delivered_at_ms: 9,
        };
        match claimed(&encode_result(&r)) {
            Claim::Delivered(back) => {
                assert_eq!((back.id, back.delivered_at_ms), (r.id, r.delivered_at_ms));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(claimed(PENDING), Claim::InFlight));
        assert!(matches!(claimed(RELEASED), Claim::Released));
        let k = state_key(&"k".repeat(10_000));
        assert_eq!(k.len(), "sent/".len() + 64);
        assert_ne!(state_key("a"), state_key("b"));
    }
}
