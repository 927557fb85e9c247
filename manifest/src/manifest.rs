use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compat::WitTarget;
use crate::error::{FieldProblem, ManifestError, clip_middle};

/// A provider's self-description, as written in `provider.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderManifest {
    /// Editors' pointer to the manifest schema; ignored by the host.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Provider name, kebab-case.
    pub name: String,
    /// Provider version.
    pub version: semver::Version,
    /// One sentence saying what the provider does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The domain (messaging, webhook, ...).
    pub domain: String,
    /// Capabilities offered, e.g. `send`.
    pub capabilities: Vec<String>,
    /// JSON Schema 2020-12 of each tenant's configuration of this provider.
    #[serde(default = "empty_object_schema")]
    pub config_schema: Value,
    /// Secrets the provider reads; only these resolve at run time.
    #[serde(default)]
    pub secrets: Vec<SecretSpec>,
    /// What the component is compatible with.
    pub compat: Compat,
    /// Hosts the provider calls over `wasi:http` (`*` = whatever the operator grants).
    #[serde(default)]
    pub outbound_hosts: Vec<String>,
    /// How the host may run its calls: a fresh instance each (the default), or instances kept
    /// for later calls of the same tenant on the same revision (see [`Instances`]).
    #[serde(default, skip_serializing_if = "Instances::is_per_call")]
    pub instances: Instances,
}

/// What a provider lets the host do with an instance after a call (`"instances"` in
/// `provider.json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Instances {
    /// Every call runs in a fresh instance, dropped when the call ends: nothing a call leaves in
    /// the instance's memory reaches another call.
    #[default]
    PerCall,
    /// An instance may serve later calls of the same tenant on the same revision, one call at a
    /// time: what one call leaves in memory (caches, a parsed config, an HTTP client) the next
    /// call of that tenant may see. Never another tenant's, never another revision's. For
    /// providers that keep nothing per call in statics, or only what the tenant may share.
    PerTenant,
}

impl Instances {
    /// Whether it is the default, [`Instances::PerCall`].
    pub fn is_per_call(&self) -> bool {
        *self == Instances::PerCall
    }
}

/// Compatibility declarations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compat {
    /// The targeted world and accepted version range.
    pub wit: WitTarget,
}

/// A secret the provider reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SecretSpec {
    /// A bare name: a required secret.
    Name(String),
    /// A name with details.
    Detailed {
        /// The secret's name.
        name: String,
        /// Whether every tenant routed to the provider must bind it (default true).
        #[serde(default = "yes")]
        required: bool,
        /// What the secret is for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
}

fn yes() -> bool {
    true
}

fn empty_object_schema() -> Value {
    serde_json::json!({ "type": "object" })
}

impl SecretSpec {
    /// The secret's name.
    pub fn name(&self) -> &str {
        match self {
            SecretSpec::Name(name) | SecretSpec::Detailed { name, .. } => name,
        }
    }

    /// Whether tenants must bind it.
    pub fn required(&self) -> bool {
        match self {
            SecretSpec::Name(_) => true,
            SecretSpec::Detailed { required, .. } => *required,
        }
    }
}

const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

fn manifest_validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: Value = serde_json::from_str(crate::MANIFEST_SCHEMA)
            .expect("schemas/provider.schema.json is valid JSON (checked by tests)");
        jsonschema::draft202012::new(&schema)
            .expect("schemas/provider.schema.json is a valid schema (checked by tests)")
    })
}

impl ProviderManifest {
    /// Parses and validates a manifest. `file` names where the text came from, for errors.
    pub fn from_json(file: &str, text: &str) -> Result<Self, ManifestError> {
        let doc: Value = serde_json::from_str(text).map_err(|e| ManifestError::Syntax {
            file: file.to_string(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        Self::from_value(file, &doc)
    }

    /// Validates an already parsed manifest document.
    pub fn from_value(file: &str, doc: &Value) -> Result<Self, ManifestError> {
        let invalid = |problems: Vec<FieldProblem>| ManifestError::Invalid {
            file: file.to_string(),
            problems,
        };

        // 1. The document's shape, against the manifest's own schema.
        let problems: Vec<FieldProblem> = manifest_validator()
            .iter_errors(doc)
            .map(|e| FieldProblem {
                field: clip_middle(&e.instance_path().to_string(), 120),
                problem: clip_middle(&e.to_string(), 240),
                fix: shape_fix(e.instance_path().as_str()),
            })
            .collect();
        if !problems.is_empty() {
            let mut problems = problems;
            problems.extend(Self::problems_beside_shape(doc, &problems));
            return Err(invalid(problems));
        }
        let manifest: ProviderManifest = serde_json::from_value(doc.clone()).map_err(|e| {
            invalid(vec![FieldProblem {
                field: String::new(),
                problem: clip_middle(&e.to_string(), 240),
                fix: "make the manifest match schemas/provider.schema.json".into(),
            }])
        })?;

        // 2 and 3. The embedded config schema and the semantics.
        let problems = manifest.semantic_problems();
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        Ok(manifest)
    }

    /// The semantic problems of the fields that have the right shape, when others do not: the
    /// misshapen fields are set aside (replaced by a placeholder, or removed when optional),
    /// so one pass reports a bad `version` and a misspelt `domain` together.
    fn problems_beside_shape(doc: &Value, shape: &[FieldProblem]) -> Vec<FieldProblem> {
        let Some(object) = doc.as_object() else {
            return Vec::new();
        };
        let top = |pointer: &str| {
            pointer
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or("")
                .to_string()
        };
        let set_aside: BTreeSet<String> = shape.iter().map(|p| top(&p.field)).collect();
        if set_aside.contains("") {
            // A missing or unknown field: the document as a whole is misshapen.
            return Vec::new();
        }
        let mut patched = object.clone();
        for field in &set_aside {
            match field.as_str() {
                "name" => patched.insert(field.clone(), "provider".into()),
                "version" => patched.insert(field.clone(), "0.0.0".into()),
                "capabilities" => patched.insert(field.clone(), Value::Array(Vec::new())),
                // Without a readable domain or target the semantic checks cannot run.
                "domain" | "compat" => return Vec::new(),
                _ => patched.remove(field),
            };
        }
        match serde_json::from_value::<ProviderManifest>(Value::Object(patched)) {
            Ok(manifest) => manifest
                .semantic_problems()
                .into_iter()
                .filter(|p| !set_aside.contains(&top(&p.field)))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Serialises the manifest as pretty JSON.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest always serialises")
    }

    /// Names of the secrets every routed tenant must bind.
    pub fn required_secrets(&self) -> impl Iterator<Item = &str> {
        self.secrets
            .iter()
            .filter(|s| s.required())
            .map(SecretSpec::name)
    }

    /// Whether the manifest declares the secret `name`.
    pub fn declares_secret(&self, name: &str) -> bool {
        self.secrets.iter().any(|s| s.name() == name)
    }

    /// Validates a tenant's configuration against `config_schema`, returning every problem.
    pub fn check_config(&self, config: &Value) -> Vec<FieldProblem> {
        let Ok(validator) = jsonschema::draft202012::new(&self.config_schema) else {
            // `from_value` refuses manifests whose schema does not compile.
            return vec![FieldProblem {
                field: "/config_schema".into(),
                problem: "config_schema does not compile".into(),
                fix: "fix the provider's config_schema".into(),
            }];
        };
        validator
            .iter_errors(config)
            .map(|e| FieldProblem {
                field: clip_middle(&e.instance_path().to_string(), 120),
                problem: clip_middle(&e.to_string(), 240),
                fix: format!(
                    "change the tenant's configuration of `{}` to satisfy its config_schema",
                    self.name
                ),
            })
            .collect()
    }

    fn semantic_problems(&self) -> Vec<FieldProblem> {
        let mut problems = Vec::new();
        let mut push = |field: &str, problem: String, fix: String| {
            problems.push(FieldProblem {
                field: field.to_string(),
                problem,
                fix,
            })
        };

        // config_schema: a JSON Schema 2020-12 document that compiles.
        let schema = &self.config_schema;
        if let Some(dialect) = schema.get("$schema")
            && dialect.as_str() != Some(DRAFT_2020_12)
        {
            push(
                "/config_schema/$schema",
                format!("dialect {dialect} is not JSON Schema 2020-12"),
                format!("set `$schema` to \"{DRAFT_2020_12}\" or remove it"),
            );
        }
        match jsonschema::draft202012::meta::validate(schema) {
            Err(e) => push(
                &format!("/config_schema{}", e.instance_path()),
                format!("not a valid JSON Schema 2020-12: {e}"),
                "fix config_schema so that it validates against the 2020-12 meta-schema".into(),
            ),
            Ok(()) => {
                if let Err(e) = jsonschema::draft202012::new(schema) {
                    push(
                        "/config_schema",
                        format!("JSON Schema does not compile: {e}"),
                        "fix the keyword named above (e.g. a bad regex or an unresolvable $ref; remote $refs are not fetched)".into(),
                    );
                }
            }
        }

        // The domain must agree with a greentic world.
        let wit = &self.compat.wit;
        if wit.namespace == "greentic" && wit.package != self.domain {
            push(
                "/domain",
                format!(
                    "domain `{}` disagrees with compat.wit package `{}`",
                    self.domain,
                    wit.package_name()
                ),
                format!(
                    "set domain to `{}` or target a `greentic:{}/…` world",
                    wit.package, self.domain
                ),
            );
        }

        // Secret names are unique.
        let mut seen = BTreeSet::new();
        for (i, secret) in self.secrets.iter().enumerate() {
            if !seen.insert(secret.name()) {
                push(
                    &format!("/secrets/{i}"),
                    format!("secret `{}` is declared twice", secret.name()),
                    "declare each secret once".into(),
                );
            }
        }

        // Outbound host patterns.
        for (i, host) in self.outbound_hosts.iter().enumerate() {
            if let Err(why) = check_host_pattern(host) {
                push(
                    &format!("/outbound_hosts/{i}"),
                    format!("`{host}` is not a host pattern: {why}"),
                    "use `api.example.com`, `api.example.com:8443`, `*.example.com`, `*`, `http://10.0.0.0/8:*` (plain HTTP and addresses need saying)".into(),
                );
            }
        }
        problems
    }
}

fn check_host_pattern(pattern: &str) -> Result<(), &'static str> {
    pattern.parse::<crate::HostPattern>().map(|_| ())
}

fn shape_fix(pointer: &str) -> String {
    let field = pointer
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("");
    match field {
        "" => "add the missing field, or remove the unknown one; see schemas/provider.schema.json"
            .into(),
        "name" | "domain" | "capabilities" => {
            "use kebab-case names such as `messaging-webhook` or `send`".into()
        }
        "version" => "use a semver version such as `1.0.0`".into(),
        "compat" => "set compat.wit to `namespace:package/world@RANGE`, e.g. `greentic:messaging/provider@1.0.x`".into(),
        "secrets" => "list secret names (`[A-Za-z0-9_.-]`, up to 128) or {\"name\", \"required\", \"description\"} objects".into(),
        "outbound_hosts" => "list host patterns such as `api.example.com`, `*.example.com` or `http://127.0.0.1:8080`".into(),
        "instances" => "say `per-call` (a fresh instance for every call, the default) or `per-tenant` (instances may serve later calls of the same tenant)".into(),
        other => format!("see the `{other}` property in schemas/provider.schema.json"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({
            "name": "messaging-echo",
            "version": "1.0.0",
            "domain": "messaging",
            "capabilities": ["send"],
            "compat": { "wit": "greentic:messaging/provider@1.0.x" }
        })
    }

    fn problems_of(doc: Value) -> Vec<FieldProblem> {
        match ProviderManifest::from_value("provider.json", &doc) {
            Ok(m) => panic!("expected an error, got {m:?}"),
            Err(e) => e.problems().to_vec(),
        }
    }

    #[test]
    fn a_bad_version_and_a_misspelt_domain_are_reported_together() {
        let mut doc = minimal();
        doc["version"] = json!("1.0");
        doc["domain"] = json!("mesaging");
        let fields: Vec<String> = problems_of(doc).into_iter().map(|p| p.field).collect();
        assert!(fields.contains(&"/version".to_string()), "{fields:?}");
        assert!(fields.contains(&"/domain".to_string()), "{fields:?}");
    }

    #[test]
    fn the_shipped_schema_is_valid_2020_12() {
        let schema: Value = serde_json::from_str(crate::MANIFEST_SCHEMA).unwrap();
        jsonschema::draft202012::meta::validate(&schema).unwrap();
    }

    #[test]
    fn minimal_manifest_gets_defaults() {
        let m = ProviderManifest::from_value("provider.json", &minimal()).unwrap();
        assert_eq!(m.config_schema, json!({"type": "object"}));
        assert!(m.secrets.is_empty());
        assert!(m.outbound_hosts.is_empty());
        assert!(m.check_config(&json!({})).is_empty());
        assert_eq!(m.check_config(&json!(3)).len(), 1);
    }

    #[test]
    fn instances_default_to_per_call_and_an_unknown_mode_is_named_with_the_fix() {
        let m = ProviderManifest::from_value("provider.json", &minimal()).unwrap();
        assert_eq!(m.instances, Instances::PerCall);
        // The default is not written back, so existing manifests serialise as before.
        assert!(serde_json::to_value(&m).unwrap().get("instances").is_none());
        let mut doc = minimal();
        doc["instances"] = json!("per-tenant");
        let m = ProviderManifest::from_value("provider.json", &doc).unwrap();
        assert_eq!(m.instances, Instances::PerTenant);
        doc["instances"] = json!("shared");
        let e = ProviderManifest::from_value("provider.json", &doc)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/instances") && e.contains("per-call") && e.contains("per-tenant"),
            "{e}"
        );
    }

    #[test]
    fn secrets_accept_both_forms() {
        let mut doc = minimal();
        doc["secrets"] = json!(["API_TOKEN", {"name": "OPTIONAL", "required": false}]);
        let m = ProviderManifest::from_value("provider.json", &doc).unwrap();
        assert_eq!(m.required_secrets().collect::<Vec<_>>(), ["API_TOKEN"]);
        assert!(m.declares_secret("OPTIONAL"));
        assert!(!m.declares_secret("OTHER"));
    }

    #[test]
    fn syntax_errors_name_file_line_and_column() {
        let e = ProviderManifest::from_json("components/x/provider.json", "{\n  \"name\": ,\n}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("components/x/provider.json"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let mut doc = minimal();
        doc.as_object_mut().unwrap().remove("capabilities");
        doc["transport"] = json!("grpc");
        let problems = problems_of(doc);
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(text.iter().any(|t| t.contains("capabilities")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("transport")), "{text:?}");
    }

    #[test]
    fn wrong_types_name_the_field() {
        let mut doc = minimal();
        doc["capabilities"] = json!("send");
        let problems = problems_of(doc);
        assert_eq!(problems[0].field, "/capabilities");
        assert!(problems[0].fix.contains("kebab-case"));
    }

    #[test]
    fn bad_compat_wit_is_refused() {
        let mut doc = minimal();
        doc["compat"]["wit"] = json!("greentic:messaging/provider@not-a-range");
        let problems = problems_of(doc);
        assert!(
            problems[0].problem.contains("not a semver range"),
            "{problems:?}"
        );
    }

    #[test]
    fn config_schema_must_be_2020_12() {
        let mut doc = minimal();
        doc["config_schema"] = json!({"type": "object", "properties": {"url": {"type": "strnig"}}});
        let problems = problems_of(doc);
        assert!(
            problems[0].field.starts_with("/config_schema"),
            "{problems:?}"
        );
        assert!(problems[0].problem.contains("2020-12"), "{problems:?}");

        let mut doc = minimal();
        doc["config_schema"] = json!({"$schema": "http://json-schema.org/draft-07/schema#"});
        let problems = problems_of(doc);
        assert_eq!(problems[0].field, "/config_schema/$schema");
    }

    #[test]
    fn config_schema_that_does_not_compile_is_refused() {
        let mut doc = minimal();
        doc["config_schema"] = json!({"type": "string", "pattern": "(unclosed"});
        let problems = problems_of(doc);
        assert!(
            problems[0].field.starts_with("/config_schema"),
            "{problems:?}"
        );
    }

    #[test]
    fn domain_must_match_greentic_world() {
        let mut doc = minimal();
        doc["domain"] = json!("webhook");
        let problems = problems_of(doc);
        assert_eq!(problems[0].field, "/domain");
        assert!(problems[0].fix.contains("messaging"));
    }

    #[test]
    fn duplicate_secrets_and_bad_hosts_are_refused() {
        let mut doc = minimal();
        doc["secrets"] = json!(["A", {"name": "A"}]);
        doc["outbound_hosts"] = json!([
            "https://api.example.com/x",
            "api.*.com",
            "ok.example.com:443",
            "*.example.com",
            "*"
        ]);
        let problems = problems_of(doc);
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["/secrets/1", "/outbound_hosts/0", "/outbound_hosts/1"]
        );
    }

    #[test]
    fn round_trips_through_json() {
        let mut doc = minimal();
        doc["secrets"] = json!(["TOKEN"]);
        let m = ProviderManifest::from_value("provider.json", &doc).unwrap();
        let again = ProviderManifest::from_json("again", &m.to_json_pretty()).unwrap();
        assert_eq!(m, again);
    }
}
