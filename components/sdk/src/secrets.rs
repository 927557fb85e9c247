//! The calling tenant's secrets, through `greentic:secrets/store`.
//!
//! Values are wrapped in [`Secret`], which never prints its contents and zeroes its buffer
//! when dropped. Only names declared in the provider's manifest resolve.

use crate::imports::greentic::secrets::store;
use crate::types::ProviderError;

pub use crate::imports::greentic::secrets::store::SecretError;

/// A secret value. `Debug` prints `Secret(<redacted>)`; the bytes are zeroed on drop.
pub struct Secret(Vec<u8>);

impl Secret {
    /// The raw bytes. Do not log or return them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value as UTF-8 text (trailing newlines, as left by files and Kubernetes mounts,
    /// removed).
    pub fn expose_str(&self) -> Result<&str, ProviderError> {
        core::str::from_utf8(&self.0)
            .map(|s| s.trim_end_matches(['\n', '\r']))
            .map_err(|_| ProviderError::Internal("a secret value is not UTF-8".into()))
    }
}

impl core::fmt::Debug for Secret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        for byte in self.0.iter_mut() {
            // Volatile so the zeroing is not optimised away.
            unsafe { core::ptr::write_volatile(byte, 0) };
        }
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
    }
}

/// Reads secret `name` of the calling tenant.
pub fn get(name: &str) -> Result<Secret, SecretError> {
    store::get(name).map(Secret)
}

/// Reads a secret that must be there: any failure becomes a [`ProviderError`].
pub fn required(name: &str) -> Result<Secret, ProviderError> {
    get(name).map_err(ProviderError::from)
}

/// Reads a secret that may be unbound: `not-found` is `None`; `denied`/`invalid-name` are errors.
pub fn optional(name: &str) -> Result<Option<Secret>, ProviderError> {
    match get(name) {
        Ok(secret) => Ok(Some(secret)),
        Err(SecretError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl From<SecretError> for ProviderError {
    /// `denied` and `not-found` mean the operator's bindings do not let this call authenticate
    /// (`unauthorized`); an invalid name is a bug in the provider (`internal`).
    fn from(e: SecretError) -> ProviderError {
        match e {
            SecretError::Denied(name) => ProviderError::Unauthorized(format!(
                "secret `{name}` is not granted to this provider"
            )),
            SecretError::NotFound(name) => {
                ProviderError::Unauthorized(format!("secret `{name}` is not bound for this tenant"))
            }
            SecretError::InvalidName(name) => {
                ProviderError::Internal(format!("`{name}` is not a valid secret name"))
            }
        }
    }
}
