//! `greentic:secrets/store`: the calling tenant's secrets, and only the declared, granted, bound
//! ones. Values are never logged, and no copy the host makes outlives the call unzeroized: the
//! backend's buffer is zeroized when dropped, and the value is handed to the guest from a
//! buffer that is zeroized as soon as it has been written into the guest's memory.

use bytes::Bytes;
use wasmtime::StoreContextMut;
use wasmtime::component::Linker;
use zeroize::Zeroizing;

use crate::bindings::greentic::secrets::store::SecretError;
use crate::errors::{MAX_GUEST_TEXT, clip};
use crate::secrets::valid_name;
use crate::state::CallState;

/// The WIT interface this module implements.
pub const INTERFACE: &str = "greentic:secrets/store@1.0.0";

/// Adds `greentic:secrets/store` to `linker`.
///
/// `get` is registered by hand rather than through the generated bindings, which would hand
/// the value to Wasmtime as a `Vec<u8>` that is freed, not zeroized, once lowered. Here it is a
/// [`Bytes`] owning a [`Zeroizing`] buffer: Wasmtime copies it into the guest's memory and
/// drops it, which zeroizes it.
pub fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    let mut store = linker.instance(INTERFACE)?;
    store.func_wrap(
        "get",
        |mut cx: StoreContextMut<'_, CallState>, (name,): (String,)| {
            Ok((get(cx.data_mut(), name),))
        },
    )?;
    Ok(())
}

/// Resolves secret `name` for the call in `state`: the outcome the guest sees.
pub fn get(state: &mut CallState, name: String) -> Result<Bytes, SecretError> {
    let scope = &state.scope;
    let outcome = if !valid_name(&name) {
        Err(SecretError::InvalidName(
            clip(&name, MAX_GUEST_TEXT).to_string(),
        ))
    } else if !scope.granted_secrets.contains(&name) {
        Err(SecretError::Denied(name.clone()))
    } else if !scope.bound_secrets.contains(&name) {
        Err(SecretError::NotFound(name.clone()))
    } else {
        match scope.secret_backend.get(&scope.tenant, &name) {
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
    };
    let result = match &outcome {
        Ok(_) => "ok",
        Err(SecretError::Denied(_)) => "denied",
        Err(SecretError::NotFound(_)) => "not-found",
        Err(SecretError::InvalidName(_)) => "invalid-name",
    };
    // Audit every read: which name, for whom, with what result — never the value.
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
