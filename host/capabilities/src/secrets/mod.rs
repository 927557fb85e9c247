//! `greentic:secrets/store`: the calling tenant's secrets, and only the declared, granted, bound
//! ones. Values are never logged, and no copy the host makes outlives the call unzeroized: the
//! backend's buffer is zeroized when dropped, and the value is handed to the guest from a
//! buffer that is zeroized as soon as it has been written into the guest's memory.
//!
//! The capability is this module: its bundle section ([`SecretsSection`]), the import, and the
//! backends behind the async [`SecretBackend`] trait, chosen by `[secrets].backend` (`file`,
//! `env`, `systemd-credentials`, `aws-secrets-manager`). Another remote store (Vault, another
//! cloud's secret manager) is one file implementing [`SecretBackend`] and one arm in [`open`];
//! lookups are awaited, so a slow store never blocks an executor thread.

pub mod aws;
mod backends;

pub use aws::AwsSecretsManager;
pub use backends::{CredentialsBackend, EnvBackend, FileBackend};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use greentic_manifest::ProviderManifest;
use serde::{Deserialize, Serialize};
use wasmtime::StoreContextMut;
use wasmtime::component::Linker;
use zeroize::Zeroizing;

use crate::bindings::greentic::secrets::store::SecretError;
use crate::call::{CallScope, HasImports};
use crate::capability::{BundleFacts, Capability, Configured};
use crate::grants::Grants;
use crate::text::{MAX_GUEST_TEXT, clip};

/// The secrets capability.
pub struct Secrets;

impl Capability for Secrets {
    const NAME: &'static str = "secrets";
    const INTERFACES: &'static [&'static str] = &["greentic:secrets/"];

    fn granted(grants: &Grants) -> bool {
        !grants.secrets.is_empty()
    }

    fn ungranted(provider: &str, manifest: &ProviderManifest) -> String {
        format!(
            "imports `greentic:secrets/store` but the bundle grants it no secrets; add `grants.secrets = [{}]` to [providers.{provider}] or use a provider that needs none",
            manifest
                .secrets
                .iter()
                .map(|s| format!("\"{}\"", s.name()))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn check_manifest(grants: &Grants, manifest: &ProviderManifest) -> Vec<String> {
        grants
            .secrets
            .iter()
            .filter(|secret| !manifest.declares_secret(secret))
            .map(|secret| {
                format!(
                    "grants secret `{secret}`, which its manifest does not declare (declared: {}); remove it from grants.secrets",
                    manifest
                        .secrets
                        .iter()
                        .map(|s| s.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect()
    }

    fn add_to_linker<T: HasImports>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        add_to_linker(linker)
    }
}

impl Configured for Secrets {
    type Section = SecretsSection;
    type Backend = Arc<dyn SecretBackend>;

    fn check(section: &SecretsSection, bundle: &BundleFacts<'_>) -> Vec<String> {
        match section.backend {
            SecretBackendKind::Env => env_collisions(&section.env_prefix, &bundle.tenants),
            SecretBackendKind::AwsSecretsManager => aws_problems(section),
            SecretBackendKind::File | SecretBackendKind::SystemdCredentials => Vec::new(),
        }
    }

    fn open(section: &SecretsSection, dir: &Path) -> anyhow::Result<Arc<dyn SecretBackend>> {
        open(section, dir)
    }
}

/// With the `env` backend, tenants and secret names that map to the same variable (names are
/// upper-cased and `-`/`.` become `_`): each would read the other's values.
fn env_collisions(prefix: &str, tenants: &[(&str, &[String])]) -> Vec<String> {
    let norm = |s: &str| s.to_ascii_uppercase().replace(['-', '.'], "_");
    let mut out = Vec::new();
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for (id, _) in tenants {
        if let Some(other) = seen.insert(norm(id), id) {
            out.push(format!(
                "tenants `{other}` and `{id}` read the same environment variables ({prefix}_{}_…) with the env secret backend; rename one of them, or use the file backend",
                norm(id)
            ));
        }
    }
    let mut vars: BTreeMap<String, (&str, &str)> = BTreeMap::new();
    for (id, secrets) in tenants {
        for name in *secrets {
            let var = format!("{prefix}_{}_{}", norm(id), norm(name));
            let Some((ot, on)) = vars.insert(var.clone(), (id, name)) else {
                continue;
            };
            // Tenants that are one another's alias were named above.
            let aliases = ot != *id && norm(ot) == norm(id);
            if !aliases && (ot, on) != (*id, name.as_str()) {
                out.push(format!(
                    "tenant `{ot}`'s secret `{on}` and tenant `{id}`'s secret `{name}` are both read from {var} with the env secret backend; rename a tenant or a secret, or use the file backend"
                ));
            }
        }
    }
    out
}

/// What is wrong with an `aws-secrets-manager` section: a name template that would give two
/// tenants (or two names) one secret, an endpoint in clear.
fn aws_problems(section: &SecretsSection) -> Vec<String> {
    let mut out = Vec::new();
    let template = &section.name_template;
    if !template.contains("{tenant}") || !template.contains("{name}") {
        out.push(format!(
            "[secrets].name_template `{template}` must contain both {{tenant}} and {{name}}, or tenants would read one another's secrets; e.g. \"greentic/{{tenant}}/{{name}}\""
        ));
    }
    if let Some(problem) = section.endpoint.as_deref().and_then(aws::endpoint_problem) {
        out.push(format!("[secrets].endpoint: {problem}"));
    }
    if section.ttl_secs == 0 {
        out.push(
            "[secrets].ttl_secs is 0, which reads AWS on every call; use a positive number of seconds (default 300)".into(),
        );
    }
    out
}

/// A source of secret values, keyed by tenant and name.
#[async_trait::async_trait]
pub trait SecretBackend: Send + Sync {
    /// The value of `name` for `tenant`, if there is one.
    async fn get(&self, tenant: &str, name: &str) -> std::io::Result<Option<Zeroizing<Vec<u8>>>>;
    /// Describes where `name` would be found for `tenant` (for error messages; no values).
    fn locate(&self, tenant: &str, name: &str) -> String;
}

/// Whether `name` is a valid secret name: `[A-Za-z0-9_.-]{1,128}`, not starting with `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `[secrets]`: where secret values come from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretsSection {
    /// `file` (a directory per tenant, like a Kubernetes secret mount), `env`,
    /// `systemd-credentials` or `aws-secrets-manager`.
    #[serde(default, alias = "type")]
    pub backend: SecretBackendKind,
    /// `file`: the directory holding `<tenant>/<NAME>` files (relative to the bundle).
    #[serde(default = "default_secrets_dir")]
    pub dir: PathBuf,
    /// `env`: variables are named `<prefix>_<TENANT>_<NAME>` (upper-cased, `-`/`.` → `_`).
    #[serde(default = "default_env_prefix")]
    pub env_prefix: String,
    /// `aws-secrets-manager`: the region (default `$AWS_REGION`, else `$AWS_DEFAULT_REGION`).
    #[serde(default)]
    pub region: Option<String>,
    /// `aws-secrets-manager`: the endpoint (default `https://secretsmanager.<region>.amazonaws.com`;
    /// a VPC endpoint, or `http://` to loopback only).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `aws-secrets-manager`: the secret's name for a tenant's secret; `{tenant}` and `{name}`
    /// are replaced.
    #[serde(default = "default_name_template")]
    pub name_template: String,
    /// `aws-secrets-manager`: seconds a value is served from the cache before it is read again.
    #[serde(default = "default_ttl")]
    pub ttl_secs: u64,
    /// `aws-secrets-manager`: seconds a cached value keeps serving while AWS cannot be read
    /// (throttled, down).
    #[serde(default = "default_max_stale")]
    pub max_stale_secs: u64,
}

impl Default for SecretsSection {
    fn default() -> Self {
        SecretsSection {
            backend: SecretBackendKind::default(),
            dir: default_secrets_dir(),
            env_prefix: default_env_prefix(),
            region: None,
            endpoint: None,
            name_template: default_name_template(),
            ttl_secs: default_ttl(),
            max_stale_secs: default_max_stale(),
        }
    }
}

fn default_name_template() -> String {
    "greentic/{tenant}/{name}".into()
}
fn default_ttl() -> u64 {
    300
}
fn default_max_stale() -> u64 {
    3_600
}

fn default_secrets_dir() -> PathBuf {
    PathBuf::from("secrets")
}
fn default_env_prefix() -> String {
    "GREENTIC_SECRET".into()
}

/// Secret backends.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum SecretBackendKind {
    /// Files under a directory per tenant.
    #[default]
    File,
    /// Environment variables.
    Env,
    /// systemd credentials: `$CREDENTIALS_DIRECTORY/<tenant>.<NAME>`.
    SystemdCredentials,
    /// AWS Secrets Manager.
    AwsSecretsManager,
}

/// Opens the backend `section` names, paths relative to the bundle directory `dir`.
pub fn open(section: &SecretsSection, dir: &Path) -> anyhow::Result<Arc<dyn SecretBackend>> {
    Ok(match section.backend {
        SecretBackendKind::File => Arc::new(FileBackend::new(dir.join(&section.dir))),
        SecretBackendKind::Env => Arc::new(EnvBackend::new(section.env_prefix.clone())),
        SecretBackendKind::SystemdCredentials => Arc::new(CredentialsBackend::from_environment()?),
        SecretBackendKind::AwsSecretsManager => Arc::new(AwsSecretsManager::new(
            aws::AwsConfig::from_section(section)?,
        )?),
    })
}

/// Whether `tenant` has a value for `name`, from synchronous load code (the lookup itself is
/// async and may run inside a runtime).
pub fn present(backend: &dyn SecretBackend, tenant: &str, name: &str) -> bool {
    crate::blocking::run("looking up a secret", |rt| {
        Ok(matches!(
            rt.block_on(backend.get(tenant, name)),
            Ok(Some(_))
        ))
    })
    .unwrap_or(false)
}

/// The WIT interface this module implements.
pub const INTERFACE: &str = "greentic:secrets/store@1.0.0";

/// Adds `greentic:secrets/store` to `linker`.
///
/// `get` is registered by hand rather than through the generated bindings, which would hand
/// the value to Wasmtime as a `Vec<u8>` that is freed, not zeroized, once lowered. Here it is a
/// [`Bytes`] owning a [`Zeroizing`] buffer: Wasmtime copies it into the guest's memory and
/// drops it, which zeroizes it.
pub fn add_to_linker<T: HasImports>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut store = linker.instance(INTERFACE)?;
    store.func_wrap_async(
        "get",
        |mut cx: StoreContextMut<'_, T>, (name,): (String,)| {
            let scope = cx.data_mut().imports().scope.clone();
            Box::new(async move { Ok((get(&scope, name).await,)) })
        },
    )?;
    Ok(())
}

/// Resolves secret `name` for the call in `scope`: the outcome the guest sees.
pub async fn get(scope: &CallScope, name: String) -> Result<Bytes, SecretError> {
    let outcome = if !valid_name(&name) {
        Err(SecretError::InvalidName(
            clip(&name, MAX_GUEST_TEXT).to_string(),
        ))
    } else if !scope.granted_secrets.contains(&name) {
        Err(SecretError::Denied(name.clone()))
    } else if !scope.bound_secrets.contains(&name) {
        Err(SecretError::NotFound(name.clone()))
    } else if let Some(backend) = scope.backends.get::<Arc<dyn SecretBackend>>() {
        match backend.get(&scope.tenant, &name).await {
            Ok(Some(value)) => Ok(Bytes::from_owner(ZeroizingBuffer(value))),
            Ok(None) => Err(SecretError::NotFound(name.clone())),
            Err(e) => {
                tracing::error!(
                    tenant = %scope.tenant, provider = %scope.provider, secret = %name,
                    error = %e, "secret backend failed"
                );
                Err(SecretError::NotFound(name.clone()))
            }
        }
    } else {
        tracing::error!(tenant = %scope.tenant, provider = %scope.provider, "no secret backend was opened for the revision");
        Err(SecretError::NotFound(name.clone()))
    };
    let result = match &outcome {
        Ok(_) => "ok",
        Err(SecretError::Denied(_)) => "denied",
        Err(SecretError::NotFound(_)) => "not-found",
        Err(SecretError::InvalidName(_)) => "invalid-name",
    };
    // Audit every read: which name, for whom, with what result — never the value. (Built only
    // when a log keeps it: this is on every call that reads a secret.)
    if greentic_audit::enabled() {
        greentic_audit::record(
            "secret.read",
            serde_json::json!({
                "tenant": scope.tenant,
                "provider": scope.provider,
                "name": clip(&name, MAX_GUEST_TEXT),
                "result": result,
            }),
        );
    }
    tracing::debug!(
        tenant = %scope.tenant, provider = %scope.provider,
        secret = %clip(&name, MAX_GUEST_TEXT), result, "secret read"
    );
    scope.metrics.inc(
        "greentic_secret_reads_total",
        &[
            ("tenant", &scope.tenant),
            ("provider", &scope.provider),
            ("result", result),
        ],
    );
    outcome
}

/// A secret value that zeroizes itself when the last [`Bytes`] referring to it is dropped.
struct ZeroizingBuffer(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for ZeroizingBuffer {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Records whether its bytes were zeroized before it was freed.
    struct Watched(Vec<u8>, Arc<AtomicBool>);

    impl AsRef<[u8]> for Watched {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            self.1.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_buffer_handed_over_is_dropped_and_so_zeroized_with_its_last_reference() {
        // What `get` hands Wasmtime: the owner is dropped (and so zeroized) with the last Bytes.
        let dropped = Arc::new(AtomicBool::new(false));
        let b = Bytes::from_owner(Watched(b"s3cret".to_vec(), dropped.clone()));
        let copy = b.clone();
        drop(b);
        assert!(!dropped.load(Ordering::SeqCst));
        drop(copy);
        assert!(dropped.load(Ordering::SeqCst));
    }
}
