//! `greentic:secrets/store`: the calling tenant's secrets, and only the declared, granted, bound
//! ones. Values are never logged; the host's copy is zeroized when the call returns it.

use crate::bindings::messaging::greentic::secrets::store::{Host, SecretError};
use crate::secrets::valid_name;
use crate::state::CallState;

impl Host for CallState {
    fn get(&mut self, name: String) -> wasmtime::Result<Result<Vec<u8>, SecretError>> {
        let scope = &self.scope;
        let outcome = if !valid_name(&name) {
            Err(SecretError::InvalidName(name.clone()))
        } else if !scope.granted_secrets.contains(&name) {
            Err(SecretError::Denied(name.clone()))
        } else if !scope.bound_secrets.contains(&name) {
            Err(SecretError::NotFound(name.clone()))
        } else {
            match scope.secret_backend.get(&scope.tenant, &name) {
                // The guest gets its own copy; ours is zeroized when `value` drops.
                Ok(Some(value)) => Ok(value.to_vec()),
                Ok(None) => Err(SecretError::NotFound(name.clone())),
                Err(e) => {
                    tracing::error!(
                        tenant = %scope.tenant, provider = %scope.provider, secret = %name,
                        error = %e, "secret backend failed"
                    );
                    Err(SecretError::NotFound(name.clone()))
                }
            }
        };
        let result = match &outcome {
            Ok(_) => "ok",
            Err(SecretError::Denied(_)) => "denied",
            Err(SecretError::NotFound(_)) => "not-found",
            Err(SecretError::InvalidName(_)) => "invalid-name",
        };
        // Audit every read: which name, for whom, with what result — never the value.
        tracing::debug!(
            tenant = %scope.tenant, provider = %scope.provider, secret = %name, result,
            "secret read"
        );
        scope.metrics.inc(
            "greentic_secret_reads_total",
            &[
                ("tenant", &scope.tenant),
                ("provider", &scope.provider),
                ("result", result),
            ],
        );
        Ok(outcome)
    }
}
