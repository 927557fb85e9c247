//! A provider's conformance profile: the configuration template, the domain's call input (a
//! messaging call's `message`, a fired slot's `payload`), and how webhook deliveries are
//! signed. Optional where the suite can derive the configuration from the schema; required for
//! webhook providers (signatures are theirs). What a domain reads of it, and requires, is in
//! the domain's module (`crate::domains`).

use std::collections::BTreeMap;
use std::path::Path;

use greentic_manifest::ProviderManifest;
use serde::Deserialize;
use serde_json::Value;

/// The profile (`conformance.json` by convention).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The tenant configuration; strings may use `{{upstream}}` (the scripted upstream's base
    /// URL, `http://127.0.0.1:PORT`) and `{{tenant}}` (the tenant's id).
    #[serde(default)]
    pub config: Option<Value>,
    /// The message a messaging call sends (read by the messaging domain).
    #[serde(default)]
    pub message: Option<Value>,
    /// How webhook deliveries are made.
    #[serde(default)]
    pub webhook: Option<WebhookProfile>,
    /// The payload of fired slots (trigger domains), as a schedule would carry it.
    #[serde(default)]
    pub payload: Option<Value>,
    /// How the provider keeps a keyed call at most once (default: it forwards the key).
    #[serde(default)]
    pub idempotency: Idempotency,
}

/// How a provider achieves idempotency, which decides what the idempotency and keyed retry
/// cases demand.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum Idempotency {
    /// It forwards the key to an upstream that de-duplicates, in this header
    /// (`{"header": "Idempotency-Key"}`): every attempt must carry the key there.
    Header(String),
    /// The upstream has no such thing, so it de-duplicates itself through `greentic:state`
    /// (`"state"`): two sends of one key reach the upstream once and report the same id, and a
    /// call retried to success is never delivered again.
    State,
    /// It forwards the key somewhere in the request (the default): every attempt must carry it.
    #[default]
    #[serde(skip)]
    Forwarded,
}

impl Idempotency {
    /// Whether the provider de-duplicates through state.
    pub fn through_state(&self) -> bool {
        *self == Idempotency::State
    }

    /// The header the key travels in, if the profile names one.
    pub fn header(&self) -> Option<&str> {
        match self {
            Idempotency::Header(h) => Some(h),
            _ => None,
        }
    }
}

/// How deliveries reach a webhook provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookProfile {
    /// Path under the provider's webhook URL (default `/`).
    #[serde(default = "root")]
    pub path: String,
    /// Headers every delivery carries (event type, content type, ...).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The header carrying a delivery's unique id, if the sender sets one.
    #[serde(default)]
    pub delivery_id_header: Option<String>,
    /// How deliveries are signed.
    pub signature: SignatureScheme,
}

fn root() -> String {
    "/".into()
}

pub use greentic_manifest::SignatureScheme;

impl Profile {
    /// Reads a profile file.
    pub fn load(path: &Path) -> anyhow::Result<Profile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the profile {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a conformance profile ({e}); see the README's \"Conformance\" section for its fields",
                path.display()
            )
        })
    }

    /// The configuration template: the profile's, or one derived from the manifest's schema.
    pub fn config_template(&self, manifest: &ProviderManifest) -> anyhow::Result<Value> {
        if let Some(config) = &self.config {
            return Ok(config.clone());
        }
        derive_config(&manifest.config_schema)
    }
}

/// A configuration for `schema`: every required property from its `default`, or — for strings
/// that name a URL or endpoint — the scripted upstream.
pub fn derive_config(schema: &Value) -> anyhow::Result<Value> {
    let mut config = serde_json::Map::new();
    let required = schema
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let properties = schema.get("properties").and_then(Value::as_object);
    for name in required.iter().filter_map(Value::as_str) {
        let property = properties.and_then(|p| p.get(name));
        let value = match property {
            Some(p) if p.get("default").is_some() => p["default"].clone(),
            Some(p)
                if p.get("type").and_then(Value::as_str) == Some("string")
                    && (p.get("format").and_then(Value::as_str) == Some("uri")
                        || ["url", "endpoint", "base"]
                            .iter()
                            .any(|w| name.to_ascii_lowercase().contains(w))) =>
            {
                Value::String(format!("{{{{upstream}}}}/{name}/{{{{tenant}}}}"))
            }
            _ => anyhow::bail!(
                "the configuration schema requires `{name}` and the suite cannot choose a value for it; pass --profile FILE with a `config` (strings may use {{{{upstream}}}} and {{{{tenant}}}})"
            ),
        };
        config.insert(name.to_string(), value);
    }
    Ok(Value::Object(config))
}

/// Replaces `{{upstream}}` and `{{tenant}}` in every string of `template`.
pub fn instantiate(template: &Value, upstream: &str, tenant: &str) -> Value {
    match template {
        Value::String(s) => Value::String(
            s.replace("{{upstream}}", upstream)
                .replace("{{tenant}}", tenant),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| instantiate(v, upstream, tenant))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), instantiate(v, upstream, tenant)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn derives_urls_and_defaults_and_names_what_it_cannot() {
        let schema = json!({
            "type": "object",
            "required": ["url", "retries"],
            "properties": {
                "url": {"type": "string"},
                "retries": {"type": "integer", "default": 2},
                "optional": {"type": "string"}
            }
        });
        let config = derive_config(&schema).unwrap();
        assert_eq!(
            instantiate(&config, "http://127.0.0.1:9", "t1"),
            json!({"url": "http://127.0.0.1:9/url/t1", "retries": 2})
        );
        let schema =
            json!({"required": ["channel"], "properties": {"channel": {"type": "string"}}});
        let e = derive_config(&schema).unwrap_err().to_string();
        assert!(e.contains("`channel`") && e.contains("--profile"), "{e}");
    }

    #[test]
    fn idempotency_is_forwarded_unless_the_profile_says_otherwise() {
        let parse = |text: &str| serde_json::from_str::<Profile>(text).unwrap().idempotency;
        assert_eq!(parse("{}"), Idempotency::Forwarded);
        assert!(parse(r#"{"idempotency": "state"}"#).through_state());
        assert_eq!(
            parse(r#"{"idempotency": {"header": "Idempotency-Key"}}"#).header(),
            Some("Idempotency-Key")
        );
        assert!(serde_json::from_str::<Profile>(r#"{"idempotency": "telepathy"}"#).is_err());
    }
}
