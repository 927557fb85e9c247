//! `greentic:config/config`: the tenant's configuration of this provider, validated at load.

use crate::bindings::greentic::config::config::{ConfigError, Host};
use crate::state::CallState;

impl Host for CallState {
    fn document(&mut self) -> wasmtime::Result<String> {
        Ok(self.scope.config.to_string())
    }

    fn get(&mut self, pointer: String) -> wasmtime::Result<Result<String, ConfigError>> {
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            return Ok(Err(ConfigError::InvalidKey(pointer)));
        }
        Ok(match self.scope.config.pointer(&pointer) {
            Some(value) => Ok(value.to_string()),
            None => Err(ConfigError::NotFound(pointer)),
        })
    }
}
