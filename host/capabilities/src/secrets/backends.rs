//! The built-in secret backends: files (a directory per tenant, what a Kubernetes Secret
//! mounted per tenant looks like) and environment variables.
//!
//! Values are returned in [`Zeroizing`] buffers and never logged or written anywhere.

use std::path::PathBuf;

use zeroize::Zeroizing;

use super::{SecretBackend, valid_name};

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
        if !valid_name(name) || !valid_name(tenant) {
            return Ok(None);
        }
        // tokio reads on its blocking pool: a slow volume never holds an executor thread.
        match tokio::fs::read(self.path(tenant, name)).await {
            Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
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
}
