//! The provider's pure logic: signature verification and outcomes. Unit-tested on the host.

use serde::Deserialize;

/// The tenant's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Largest body accepted.
    #[serde(default = "default_max")]
    pub max_body_bytes: usize,
    /// How long a delivery id is remembered, so its replay is refused.
    #[serde(default = "default_replay_window")]
    pub replay_window_secs: u64,
}

fn default_max() -> usize {
    1 << 20
}

fn default_replay_window() -> u64 {
    7 * 24 * 3600
}

pub use greentic_provider_sdk::incoming::SignatureError;

/// Verifies `X-Hub-Signature-256` (`sha256=<hex>`) over `body` with `secret`, in constant time.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    greentic_provider_sdk::incoming::verify_hmac_sha256(secret, body, header, "sha256=")
}

/// What happened to a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Signed and well-formed.
    Accepted {
        /// `X-GitHub-Event`.
        event: String,
        /// `X-GitHub-Delivery`.
        delivery: String,
    },
    /// Signature missing, malformed or wrong.
    BadSignature(SignatureError),
    /// The body is not a JSON object.
    Malformed(String),
    /// Not a POST.
    WrongMethod,
    /// Larger than the configured limit.
    TooLarge(usize),
    /// The tenant's secret or configuration is missing.
    Misconfigured,
    /// No `X-GitHub-Delivery` id, so a replay could not be recognised.
    MissingDeliveryId,
    /// This delivery id was received before (within the replay window).
    Replayed(String),
    /// The delivery could not be recorded; GitHub should redeliver later.
    StateUnavailable,
}

impl Outcome {
    /// Stable code for logs, spans and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Outcome::Accepted { .. } => "accepted",
            Outcome::BadSignature(SignatureError::Missing) => "signature-missing",
            Outcome::BadSignature(SignatureError::Malformed) => "signature-malformed",
            Outcome::BadSignature(SignatureError::Mismatch) => "signature-mismatch",
            Outcome::Malformed(_) => "malformed-body",
            Outcome::WrongMethod => "method-not-allowed",
            Outcome::TooLarge(_) => "too-large",
            Outcome::Misconfigured => "misconfigured",
            Outcome::MissingDeliveryId => "delivery-id-missing",
            Outcome::Replayed(_) => "replayed",
            Outcome::StateUnavailable => "state-unavailable",
        }
    }

    /// The HTTP status and message to answer with. Messages never include the body or secret.
    pub fn response(&self) -> (u16, String) {
        match self {
            Outcome::Accepted { event, delivery } => {
                (202, format!("accepted {event} delivery {delivery}"))
            }
            Outcome::BadSignature(SignatureError::Missing) => {
                (401, "missing X-Hub-Signature-256".into())
            }
            Outcome::BadSignature(_) => (401, "invalid X-Hub-Signature-256".into()),
            Outcome::Malformed(why) => (400, format!("malformed delivery: {why}")),
            Outcome::WrongMethod => (405, "deliveries must be POSTed".into()),
            Outcome::TooLarge(limit) => (413, format!("delivery larger than {limit} bytes")),
            Outcome::Misconfigured => (
                500,
                "webhook secret or configuration not available for this tenant".into(),
            ),
            Outcome::MissingDeliveryId => (400, "missing X-GitHub-Delivery".into()),
            Outcome::Replayed(delivery) => {
                (409, format!("delivery {delivery} was already received"))
            }
            Outcome::StateUnavailable => (
                503,
                "the delivery could not be recorded; redeliver it later".into(),
            ),
        }
    }
}

/// Whether `id` looks like a GitHub delivery id (a GUID; letters, digits and `-`, at most
/// 128 characters).
pub fn valid_delivery_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Checks that a (verified) body is a JSON object.
pub fn check_payload(body: &[u8], event: String, delivery: String) -> Outcome {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(_)) => Outcome::Accepted { event, delivery },
        Ok(_) => Outcome::Malformed("the body is not a JSON object".into()),
        Err(e) => Outcome::Malformed(format!(
            "invalid JSON at line {}, column {}",
            e.line(),
            e.column()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from GitHub's documentation on validating webhook deliveries.
    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn accepts_githubs_documented_example() {
        assert_eq!(verify_signature(SECRET, BODY, Some(SIGNATURE)), Ok(()));
    }

    #[test]
    fn refuses_missing_malformed_and_wrong_signatures() {
        assert_eq!(
            verify_signature(SECRET, BODY, None),
            Err(SignatureError::Missing)
        );
        for bad in [
            "757107ea",
            "sha1=757107ea",
            "sha256=zz",
            "sha256=7571",
            "sha256=",
        ] {
            assert_eq!(
                verify_signature(SECRET, BODY, Some(bad)),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            verify_signature(b"another secret", BODY, Some(SIGNATURE)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(SECRET, b"Hello, World?", Some(SIGNATURE)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn payload_must_be_a_json_object() {
        let ok = check_payload(br#"{"action":"opened"}"#, "issues".into(), "d-1".into());
        assert_eq!(
            ok,
            Outcome::Accepted {
                event: "issues".into(),
                delivery: "d-1".into()
            }
        );
        assert_eq!(ok.response().0, 202);
        let bad = check_payload(b"{not json", "issues".into(), "d-1".into());
        assert_eq!(bad.response().0, 400);
        assert_eq!(
            check_payload(b"[1]", "e".into(), "d".into()).code(),
            "malformed-body"
        );
    }

    #[test]
    fn responses_never_echo_the_secret_or_body() {
        let outcomes = [
            Outcome::BadSignature(SignatureError::Mismatch),
            Outcome::Malformed("x".into()),
            Outcome::Misconfigured,
        ];
        for o in outcomes {
            let (status, message) = o.response();
            assert!(status >= 400);
            assert!(!message.contains("Secret to Everybody"));
            assert!(!message.contains("Hello, World"));
        }
    }

    #[test]
    fn config_defaults() {
        let c: Config = serde_json::from_str("{}").unwrap();
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(c.replay_window_secs, 7 * 24 * 3600);
    }

    #[test]
    fn delivery_ids_are_guids() {
        assert!(valid_delivery_id("72d3162e-cc78-11e3-81ab-4c9367dc0958"));
        assert!(valid_delivery_id("unknown"));
        for bad in ["", "a/b", "id with space", &"a".repeat(129), "\u{0}"] {
            assert!(!valid_delivery_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn replays_and_missing_ids_are_refused_with_their_own_status() {
        assert_eq!(Outcome::Replayed("d-1".into()).response().0, 409);
        assert_eq!(Outcome::Replayed("d-1".into()).code(), "replayed");
        assert_eq!(Outcome::MissingDeliveryId.response().0, 400);
        // A failure to record asks GitHub to redeliver rather than dropping the delivery.
        assert_eq!(Outcome::StateUnavailable.response().0, 503);
    }
}
