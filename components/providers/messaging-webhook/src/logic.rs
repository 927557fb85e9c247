//! The provider's pure logic: configuration, payload, ids. Unit-tested on the host.

use greentic_provider_sdk::http::Response;
use greentic_provider_sdk::messaging::exports::greentic::messaging::outbound::Message;
use greentic_provider_sdk::types::ProviderError;
use serde::Deserialize;
use serde_json::{Value, json};

/// The tenant's configuration (validated by the host against `config_schema` first).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The incoming-webhook URL.
    pub url: String,
    /// Optional display name.
    #[serde(default)]
    pub username: Option<String>,
    /// Timeout in milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_timeout() -> u64 {
    10_000
}

/// Largest text accepted (Slack's limit for `text` is 40,000 characters).
pub const MAX_TEXT_CHARS: usize = 40_000;

/// Refuses messages no webhook would accept.
pub fn validate_message(msg: &Message) -> Result<(), ProviderError> {
    if msg.text.trim().is_empty() {
        return Err(ProviderError::InvalidInput("`text` is empty".into()));
    }
    if msg.text.chars().count() > MAX_TEXT_CHARS {
        return Err(ProviderError::InvalidInput(format!(
            "`text` is longer than {MAX_TEXT_CHARS} characters"
        )));
    }
    Ok(())
}

/// The JSON body: Slack and Mattermost incoming-webhook fields.
///
/// `to` becomes `channel` unless empty (the webhook's default channel); `thread` becomes both
/// `thread_ts` (Slack) and `root_id` (Mattermost).
pub fn payload(msg: &Message, config: &Config) -> Value {
    let mut body = json!({ "text": msg.text });
    if !msg.to.is_empty() {
        body["channel"] = json!(msg.to);
    }
    if let Some(thread) = &msg.thread {
        body["thread_ts"] = json!(thread);
        body["root_id"] = json!(thread);
    }
    if let Some(username) = &config.username {
        body["username"] = json!(username);
    }
    body
}

/// The delivered message's id: the upstream's (`id` or `ts` in a JSON body, or the
/// `x-request-id` header), else the idempotency key, else one made from the time.
pub fn result_id(response: &Response, key: Option<&str>, now_ms: u64) -> String {
    if let Ok(body) = serde_json::from_slice::<Value>(&response.body) {
        for field in ["id", "ts"] {
            match body.get(field) {
                Some(Value::String(s)) if !s.is_empty() => return s.clone(),
                Some(Value::Number(n)) => return n.to_string(),
                _ => {}
            }
        }
    }
    if let Some(id) = response.header("x-request-id").filter(|v| !v.is_empty()) {
        return id.to_string();
    }
    match key {
        Some(key) => key.to_string(),
        None => format!("webhook-{now_ms}"),
    }
}

pub use greentic_provider_sdk::errors::{code as error_code, excerpt};
pub use greentic_provider_sdk::now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(to: &str, text: &str) -> Message {
        Message {
            to: to.into(),
            text: text.into(),
            thread: None,
            idempotency_key: None,
        }
    }

    fn config() -> Config {
        serde_json::from_str(r#"{"url": "https://hooks.example.com/x"}"#).unwrap()
    }

    fn response(status: u16, body: &str, headers: &[(&str, &str)]) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn config_defaults_and_rejects_unknown_keys() {
        assert_eq!(config().timeout_ms, 10_000);
        assert!(serde_json::from_str::<Config>(r#"{"url": "u", "color": 1}"#).is_err());
    }

    #[test]
    fn payload_has_slack_and_mattermost_fields() {
        let mut m = msg("#ops", "deploy done");
        m.thread = Some("1712.5".into());
        let mut c = config();
        c.username = Some("greentic".into());
        assert_eq!(
            payload(&m, &c),
            json!({"text": "deploy done", "channel": "#ops", "thread_ts": "1712.5", "root_id": "1712.5", "username": "greentic"})
        );
        assert_eq!(payload(&msg("", "hi"), &config()), json!({"text": "hi"}));
    }

    #[test]
    fn empty_or_huge_text_is_invalid_input() {
        assert!(matches!(
            validate_message(&msg("#a", "  ")),
            Err(ProviderError::InvalidInput(_))
        ));
        let huge = "x".repeat(MAX_TEXT_CHARS + 1);
        assert!(matches!(
            validate_message(&msg("#a", &huge)),
            Err(ProviderError::InvalidInput(_))
        ));
        assert!(validate_message(&msg("#a", "ok")).is_ok());
    }

    #[test]
    fn result_id_prefers_the_upstream_id() {
        assert_eq!(
            result_id(&response(200, r#"{"id":"m-1"}"#, &[]), Some("k"), 5),
            "m-1"
        );
        assert_eq!(
            result_id(&response(200, r#"{"ok":true,"ts":"171.2"}"#, &[]), None, 5),
            "171.2"
        );
        assert_eq!(
            result_id(&response(200, r#"{"id":42}"#, &[]), None, 5),
            "42"
        );
        assert_eq!(
            result_id(
                &response(200, "ok", &[("X-Request-Id", "r-9")]),
                Some("k"),
                5
            ),
            "r-9"
        );
        assert_eq!(result_id(&response(200, "ok", &[]), Some("k"), 5), "k");
        assert_eq!(result_id(&response(200, "ok", &[]), None, 5), "webhook-5");
    }

    #[test]
    fn excerpts_are_short_and_single_line() {
        let body = format!("line1\nline2\t{}", "y".repeat(500));
        let e = excerpt(body.as_bytes());
        assert!(!e.contains('\n'));
        assert_eq!(e.chars().count(), 200);
    }
}
