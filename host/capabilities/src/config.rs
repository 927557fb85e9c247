//! `greentic:config/config`: the tenant's configuration of this provider, validated at load
//! against the manifest's `config_schema`. Granted by default (`grants.config = true`).

use greentic_manifest::ProviderManifest;
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::greentic::config::config::{self, ConfigError, Host};
use crate::call::{HasImports, Imports};
use crate::capability::Capability;
use crate::grants::Grants;

/// The config capability.
pub struct Config;

impl Capability for Config {
    const NAME: &'static str = "config";
    const INTERFACES: &'static [&'static str] = &["greentic:config/"];

    fn granted(grants: &Grants) -> bool {
        grants.config
    }

    fn ungranted(provider: &str, _: &ProviderManifest) -> String {
        format!(
            "imports `greentic:config/config` but [providers.{provider}].grants.config is false"
        )
    }

    fn add_to_linker<T: HasImports>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        config::add_to_linker::<_, HasSelf<Imports>>(linker, T::imports)
    }
}

impl Host for Imports {
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
