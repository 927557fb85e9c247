//! Loading a bundle into a runtime, shared by `run` and `check`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use greentic_host::bundle::{Bundle, SecretBackendKind};
use greentic_host::engine::{HostEngine, PoolSizing};
use greentic_host::loader::{self, LoadOptions, Loaded};
use greentic_host::secrets::{EnvBackend, FileBackend, SecretBackend};

/// A bundle with its providers loaded and checked.
pub struct LoadedBundle {
    pub bundle: Bundle,
    pub engine: HostEngine,
    pub loaded: Loaded,
    pub backend: Arc<dyn SecretBackend>,
}

pub fn load_bundle(path: &Path, options: LoadOptions) -> anyhow::Result<LoadedBundle> {
    let bundle = Bundle::load(path)?;
    let backend: Arc<dyn SecretBackend> = match bundle.file.secrets.backend {
        SecretBackendKind::File => {
            Arc::new(FileBackend::new(bundle.path(&bundle.file.secrets.dir)))
        }
        SecretBackendKind::Env => Arc::new(EnvBackend::new(bundle.file.secrets.env_prefix.clone())),
    };
    let tenants = &bundle.file.tenants;
    let sizing = PoolSizing {
        instances: tenants
            .values()
            .map(|t| t.limits.max_concurrent)
            .sum::<u32>()
            + 8,
        max_memory_bytes: tenants
            .values()
            .map(|t| t.limits.memory_bytes)
            .max()
            .unwrap_or(64 << 20),
    };
    let engine = HostEngine::new(sizing).context("creating the Wasmtime engine")?;
    let loaded = loader::load(&bundle, &engine, backend.as_ref(), options)?;
    Ok(LoadedBundle {
        bundle,
        engine,
        loaded,
        backend,
    })
}
