//! The Wasmtime engine: component model, async, pooling allocator (or on-demand where the
//! machine cannot reserve the pool) and fuel, with guests yielding to the executor every
//! [`YIELD_FUEL`] units; plus the compiled-artifact cache on disk.
//!
//! Epoch interruption is available ([`EngineOptions::epoch`], with a ticker thread) but off:
//! measured on CPU-bound workloads it cost +8% on its own and +38% together with fuel
//! (geometric means, `BENCHMARKS.md`), while fuel alone — which per-call budgets and fuel
//! rates need anyway — also drives the yields that let a call's deadline (a timeout around the
//! call) fire and keep one tenant's spinning guest from holding an executor thread.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances, when epochs are on.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of each memory and table slot reset in place rather than returned to the kernel.
pub const KEEP_RESIDENT: usize = 2 << 20;

/// Fuel between a guest's yields to the executor: 0.1–0.5 ms of guest code on a current x86
/// core (one unit per Wasm operator, and several operators retire per cycle). Shorter slices
/// cost measurably more (BENCHMARKS.md); longer ones let a spinning tenant delay others.
pub const YIELD_FUEL: u64 = 1_000_000;

/// How instances are allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Pre-reserved, copy-on-write slots.
    Pooling,
    /// Allocated per instance (fallback).
    OnDemand,
}

/// Sizing of the pool, derived from the bundle.
#[derive(Debug, Clone, Copy)]
pub struct PoolSizing {
    /// Instances that may be alive at once (sum of tenants' concurrency, plus headroom).
    pub instances: u32,
    /// Largest linear memory any tenant allows.
    pub max_memory_bytes: u64,
}

/// The engine and its epoch ticker.
pub struct HostEngine {
    /// The engine.
    pub engine: Engine,
    /// How instances are allocated.
    pub allocation: Allocation,
    /// What it was built with.
    pub options: EngineOptions,
    stop: Arc<AtomicBool>,
}

/// What an engine is built with. The host runs with [`EngineOptions::host`]; the others exist
/// to measure what each part costs (see `BENCHMARKS.md`).
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Pooling allocator sizing; `None` allocates each instance on demand.
    pub pool: Option<PoolSizing>,
    /// Count fuel (per-call fuel budgets and the tenants' fuel rate need it).
    pub fuel: bool,
    /// Epoch interruption, with the ticker thread (guests yield at each tick).
    pub epoch: bool,
}

impl EngineOptions {
    /// The host's configuration: pooling sized by `pool`, fuel on, epochs off.
    pub fn host(pool: PoolSizing) -> EngineOptions {
        EngineOptions {
            pool: Some(pool),
            fuel: true,
            epoch: false,
        }
    }
}

fn config(pool: Option<PoolSizing>, fuel: bool, epoch: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.consume_fuel(fuel);
    config.epoch_interruption(epoch);
    config.max_wasm_stack(1 << 20);
    if let Some(p) = pool {
        let mut pooling = PoolingAllocationConfig::default();
        let n = p.instances.max(1);
        pooling
            .total_component_instances(n)
            .total_core_instances(n * 16)
            .total_memories(n * 4)
            .total_tables(n * 8)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_core_instances_per_component(16)
            .max_memory_size(p.max_memory_bytes as usize)
            .table_elements(100_000)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            // Reset a freed slot's first pages with memset instead of madvise: fewer
            // syscalls and TLB-shootdown IPIs per call (BENCHMARKS.md, HTTP hello).
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    }
    config
}

impl HostEngine {
    /// Builds the engine with a pool sized by `pool`, falling back to on-demand allocation (with
    /// a warning) if the pool cannot be reserved.
    pub fn new(pool: PoolSizing) -> anyhow::Result<HostEngine> {
        HostEngine::with_options(EngineOptions::host(pool))
    }

    /// Builds an engine with `options` (pooling falls back to on-demand with a warning).
    pub fn with_options(options: EngineOptions) -> anyhow::Result<HostEngine> {
        let EngineOptions { pool, fuel, epoch } = options;
        let on_demand = || {
            Engine::new(&config(None, fuel, epoch))
                .map(|e| (e, Allocation::OnDemand))
                .map_err(|e| anyhow::anyhow!("{e}"))
        };
        let (engine, allocation) = match pool {
            None => on_demand()?,
            Some(pool) => match Engine::new(&config(Some(pool), fuel, epoch)) {
                Ok(engine) => (engine, Allocation::Pooling),
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "could not reserve the pooling allocator ({} instances, {} byte memories); falling back to on-demand allocation",
                        pool.instances, pool.max_memory_bytes
                    );
                    on_demand()?
                }
            },
        };
        let stop = Arc::new(AtomicBool::new(false));
        if !epoch {
            return Ok(HostEngine {
                engine,
                allocation,
                options,
                stop,
            });
        }
        let ticker = engine.weak();
        let stop_flag = stop.clone();
        std::thread::Builder::new()
            .name("greentic-epoch".into())
            .spawn(move || {
                while !stop_flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        Ok(HostEngine {
            engine,
            allocation,
            options,
            stop,
        })
    }

    /// A fingerprint of everything that makes compiled code valid for this engine.
    pub fn fingerprint(&self) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("wasmtime-{}-{:016x}", wasmtime_version(), h.finish())
    }
}

impl Drop for HostEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn wasmtime_version() -> &'static str {
    "48.0.8"
}

/// Magic at the start of every cache entry.
const MAGIC: &[u8; 8] = b"GTCWASM1";

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache.
    Hit,
    /// Compiled (and stored).
    Compiled,
    /// A corrupt entry was found, discarded, and the component recompiled.
    Recompiled,
}

/// The compiled-artifact cache: `<dir>/<sha256(digest, fingerprint)>.cwasm`, each entry
/// `MAGIC || sha256(payload) || payload`, written to a temporary file, fsynced, then renamed.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// A cache in `dir` (created on first store).
    pub fn new(dir: PathBuf) -> CompileCache {
        CompileCache { dir }
    }

    /// The entry path for a component digest under an engine fingerprint.
    pub fn entry(&self, digest: &str, fingerprint: &str) -> PathBuf {
        let key = Sha256::digest(format!("{digest}\n{fingerprint}").as_bytes());
        self.dir.join(format!("{key:x}.cwasm"))
    }

    /// Loads the compiled form of `bytes` (digest `digest`), compiling and storing on a miss.
    pub fn load(
        &self,
        engine: &HostEngine,
        digest: &str,
        bytes: &[u8],
    ) -> anyhow::Result<(Component, CacheOutcome)> {
        let path = self.entry(digest, &engine.fingerprint());
        let mut outcome = CacheOutcome::Compiled;
        if let Ok(entry) = std::fs::read(&path) {
            match Self::deserialize(&engine.engine, &entry) {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(why) => {
                    tracing::warn!(entry = %path.display(), %why, "discarding corrupt compiled-artifact cache entry");
                    let _ = std::fs::remove_file(&path);
                    outcome = CacheOutcome::Recompiled;
                }
            }
        }
        let compiled = engine
            .engine
            .precompile_component(bytes)
            .map_err(|e| anyhow::anyhow!("compiling: {e}"))?;
        if let Err(e) = self.store(&path, &compiled) {
            tracing::warn!(entry = %path.display(), error = %e, "could not write the compiled-artifact cache; continuing without it");
        }
        let component = Self::deserialize(&engine.engine, &Self::frame(&compiled))
            .map_err(|why| anyhow::anyhow!("loading freshly compiled code: {why}"))?;
        Ok((component, outcome))
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 40);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&Sha256::digest(payload));
        out.extend_from_slice(payload);
        out
    }

    fn deserialize(engine: &Engine, entry: &[u8]) -> Result<Component, String> {
        if entry.len() < 40 || &entry[..8] != MAGIC {
            return Err("bad header".into());
        }
        let (sum, payload) = entry[8..].split_at(32);
        if Sha256::digest(payload).as_slice() != sum {
            return Err("checksum mismatch".into());
        }
        // SAFETY: `payload` was produced by `Engine::precompile_component` of an engine with the
        // same fingerprint (the fingerprint is part of the entry's name), and its checksum
        // matches, so it is the bytes we wrote; the cache directory is trusted host state.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, payload) };
        component.map_err(|e| e.to_string())
    }

    fn store(&self, path: &Path, payload: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(&Self::frame(payload))?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}
