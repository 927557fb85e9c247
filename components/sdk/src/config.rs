//! The calling tenant's configuration of this provider, through `greentic:config/config`.
//!
//! The host validated it against the manifest's `config_schema` before the call, so
//! deserialising into a struct that mirrors the schema only fails on a provider bug.

use serde::de::DeserializeOwned;

use crate::imports::greentic::config::config;
use crate::types::ProviderError;

pub use crate::imports::greentic::config::config::ConfigError;

/// The whole configuration document, as JSON text.
pub fn document() -> String {
    config::document()
}

/// The configuration, deserialised into `T`.
pub fn load<T: DeserializeOwned>() -> Result<T, ProviderError> {
    serde_json::from_str(&document())
        .map_err(|e| ProviderError::InvalidInput(format!("tenant configuration: {e}")))
}

/// One value by JSON Pointer (`/url`), or `None` if absent.
pub fn get<T: DeserializeOwned>(pointer: &str) -> Result<Option<T>, ProviderError> {
    match config::get(pointer) {
        Ok(json) => serde_json::from_str(&json).map(Some).map_err(|e| {
            ProviderError::InvalidInput(format!("tenant configuration {pointer}: {e}"))
        }),
        Err(ConfigError::NotFound(_)) => Ok(None),
        Err(ConfigError::InvalidKey(key)) => Err(ProviderError::Internal(format!(
            "`{key}` is not a JSON Pointer"
        ))),
    }
}
