//! The local secret backends: files (a directory per tenant, what a Kubernetes Secret mounted
//! per tenant looks like), systemd credentials (`LoadCredential=`, one file per tenant and
//! name) and environment variables.
//!
//! Values are returned in [`Zeroizing`] buffers and never logged or written anywhere.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{SecretBackend, valid_name};

/// The file a secret is kept in, when `tenant` and `name` are valid names (so no path can
/// leave the backend's directory); absent when there is no such file.
async fn read_secret(
    tenant: &str,
    name: &str,
    path: PathBuf,
) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    if !valid_name(name) || !valid_name(tenant) {
        return Ok(None);
    }
    // tokio reads on its blocking pool: a slow volume never holds an executor thread.
    match tokio::fs::read(path).await {
        Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Files: `<dir>/<tenant>/<NAME>` — what a Kubernetes secret mounted per tenant looks like.
#[derive(Debug, Clone)]
pub struct FileBackend {
    dir: PathBuf,
}

impl FileBackend {
    /// A backend reading under `dir`.
    pub fn new(dir: PathBuf) -> FileBackend {
        FileBackend { dir }
    }

    fn path(&self, tenant: &str, name: &str) -> PathBuf {
        self.dir.join(tenant).join(name)
    }
}

#[async_trait::async_trait]
impl SecretBackend for FileBackend {
    async fn get(&self, tenant: &str, name: &str) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
        read_secret(tenant, name, self.path(tenant, name)).await
    }

    fn locate(&self, tenant: &str, name: &str) -> String {
        format!("file {}", self.path(tenant, name).display())
    }
}

/// Environment variables: `<PREFIX>_<TENANT>_<NAME>`, upper-cased, `-` and `.` as `_`.
#[derive(Debug, Clone)]
pub struct EnvBackend {
    prefix: String,
}

impl EnvBackend {
    /// A backend reading variables with `prefix`.
    pub fn new(prefix: String) -> EnvBackend {
        EnvBackend { prefix }
    }

    /// The variable name for `tenant` and `name`.
    pub fn var(&self, tenant: &str, name: &str) -> String {
        let norm = |s: &str| s.to_ascii_uppercase().replace(['-', '.'], "_");
        format!("{}_{}_{}", self.prefix, norm(tenant), norm(name))
    }
}

#[async_trait::async_trait]
impl SecretBackend for EnvBackend {
    async fn get(&self, tenant: &str, name: &str) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
        Ok(
            std::env::var_os(self.var(tenant, name))
                .map(|v| Zeroizing::new(v.into_encoded_bytes())),
        )
    }

    fn locate(&self, tenant: &str, name: &str) -> String {
        format!("environment variable {}", self.var(tenant, name))
    }
}

/// systemd credentials: `$CREDENTIALS_DIRECTORY/<tenant>.<NAME>`, the files a unit's
/// `LoadCredential=`, `LoadCredentialEncrypted=` or `SetCredentialEncrypted=` lines give the
/// service (systemd decrypts them; they live in memory, readable by the service alone). No
/// secret is in the environment or on a disk the service can write.
#[derive(Debug, Clone)]
pub struct CredentialsBackend {
    dir: PathBuf,
}

impl CredentialsBackend {
    /// A backend reading the credentials in `dir` (what `$CREDENTIALS_DIRECTORY` names).
    pub fn new(dir: PathBuf) -> CredentialsBackend {
        CredentialsBackend { dir }
    }

    /// The backend of this process's service: `$CREDENTIALS_DIRECTORY`, which systemd sets for
    /// a unit with credentials.
    pub fn from_environment() -> anyhow::Result<CredentialsBackend> {
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "[secrets] backend = \"systemd-credentials\" reads $CREDENTIALS_DIRECTORY, which is not set: systemd sets it for a unit with LoadCredential=<tenant>.<NAME>:<file> lines (see deploy/systemd); outside systemd use backend = \"file\""
                )
            })?;
        Ok(CredentialsBackend::new(dir))
    }

    /// The credential's name for `tenant` and `name`.
    pub fn credential(tenant: &str, name: &str) -> String {
        format!("{tenant}.{name}")
    }

    fn path(&self, tenant: &str, name: &str) -> PathBuf {
        self.dir.join(Self::credential(tenant, name))
    }

    /// The directory read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[async_trait::async_trait]
impl SecretBackend for CredentialsBackend {
    async fn get(&self, tenant: &str, name: &str) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
        read_secret(tenant, name, self.path(tenant, name)).await
    }

    fn locate(&self, tenant: &str, name: &str) -> String {
        format!(
            "systemd credential {} (LoadCredential={}:<file> in the unit; looked for {})",
            Self::credential(tenant, name),
            Self::credential(tenant, name),
            self.path(tenant, name).display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_are_per_tenant_and_traversal_is_impossible() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("acme")).unwrap();
        std::fs::write(dir.path().join("acme/TOKEN"), b"s3cret").unwrap();
        let b = FileBackend::new(dir.path().to_path_buf());
        assert_eq!(
            b.get("acme", "TOKEN").await.unwrap().unwrap().as_slice(),
            b"s3cret"
        );
        assert!(b.get("globex", "TOKEN").await.unwrap().is_none());
        assert!(b.get("acme", "../acme/TOKEN").await.unwrap().is_none());
        assert!(b.get("..", "acme").await.unwrap().is_none());
    }

    #[test]
    fn env_names_are_normalised() {
        let b = EnvBackend::new("GREENTIC_SECRET".into());
        assert_eq!(
            b.var("acme-eu", "api.token"),
            "GREENTIC_SECRET_ACME_EU_API_TOKEN"
        );
    }

    #[tokio::test]
    async fn credentials_are_tenant_dot_name_and_traversal_is_impossible() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("acme.TOKEN"), b"s3cret").unwrap();
        std::fs::write(dir.path().join("acme.eu.TOKEN"), b"other").unwrap();
        let b = CredentialsBackend::new(dir.path().to_path_buf());
        assert_eq!(
            b.get("acme", "TOKEN").await.unwrap().unwrap().as_slice(),
            b"s3cret"
        );
        assert!(b.get("globex", "TOKEN").await.unwrap().is_none());
        assert!(b.get("acme", "../acme.TOKEN").await.unwrap().is_none());
        assert!(b.get("..", "acme.TOKEN").await.unwrap().is_none());
        assert!(
            b.locate("acme", "TOKEN")
                .contains("LoadCredential=acme.TOKEN:")
        );
    }
}
