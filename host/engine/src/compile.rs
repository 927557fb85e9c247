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

use crate::errors::CallError;
use crate::kept::{DEFAULT_MAX_IDLE, KeptInstances};
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

/// Linear memories the pool holds per call: a component built for `wasm32-wasip2` has one, a
/// `cargo component` build (`wasm32-wasip1` and the WASI adapter) two. A component with more
/// runs too, but each of its calls holds more than one call's share of the pool, and past the
/// pool's memories a call is answered `host-at-capacity`.
pub const MEMORIES_PER_CALL: u32 = 2;

/// Resident memory one call waiting on an upstream holds (its instance's touched pages, its
/// fiber stack, its connections and buffers): ~150 KiB measured with `messaging-webhook` at
/// 10 000 calls in flight (`--bench capacity`), with room for larger guests. What the default
/// `max_in_flight` divides the host's memory by.
pub const RESIDENT_PER_CALL: u64 = 256 << 10;

/// Memory mappings one call's slot of the pool holds at most: its async stack and guard
/// (2, while idle too), and per memory its copy-on-write image, its written pages and its
/// inaccessible rest (3), plus its tables — 9 for a slot of [`MEMORIES_PER_CALL`] memories
/// (measured: 2 per idle slot, 6 per busy slot of a one-memory component). Past the process's
/// `vm.max_map_count` every `mmap` and `mprotect` fails, so the pool must fit under it.
pub const MAPS_PER_CALL: u64 = 2 + 3 * MEMORIES_PER_CALL as u64 + 1;

/// Memory mappings left to everything but the pool (the binary, libraries, thread stacks, the
/// heap, the compiled components).
const MAPS_RESERVED: u64 = 4096;

/// Address space the pool may reserve: x86-64 and aarch64 give a process 128 TiB; the rest is
/// left to everything else the process maps.
const POOL_ADDRESS_SPACE: u64 = 96 << 40;

/// Address space one call's slot of the pool reserves: its memories (each a 4 GiB
/// reservation, or the tenants' largest memory if larger, and guard regions) and its stack.
fn slot_address_space(max_memory_bytes: u64) -> u64 {
    let memory = (4u64 << 30).max(max_memory_bytes) + (64 << 20);
    u64::from(MEMORIES_PER_CALL) * memory + (2 << 20)
}

/// Resident memory the pool keeps between calls at most, for a host with `memory` bytes:
/// a sixteenth of it (1.5 GiB of 24 GiB: a pool of up to ~380 calls keeps the full
/// [`KEEP_RESIDENT`] per memory, a pool of 10 000 ~75 KiB).
fn keep_resident_budget(memory: u64) -> u64 {
    memory / 16
}

impl PoolSizing {
    /// Calls this host can hold at once: half its memory (less what the pool keeps resident
    /// between calls) over [`RESIDENT_PER_CALL`], no more slots than the address space can
    /// reserve, and no more than the process's memory mappings can hold
    /// ([`PoolSizing::supported_by_maps`]). `[host] max_in_flight` defaults to the smaller of
    /// this and what the bundle's tenants may run at once.
    pub fn supported_in_flight(max_memory_bytes: u64) -> u32 {
        let by_address = POOL_ADDRESS_SPACE / slot_address_space(max_memory_bytes);
        let by_memory = crate::process::host_memory_bytes().map_or(u64::MAX, |m| {
            (m / 2).saturating_sub(keep_resident_budget(m)) / RESIDENT_PER_CALL
        });
        let by_maps = PoolSizing::supported_by_maps().map_or(u64::MAX, u64::from);
        by_address
            .min(by_memory)
            .min(by_maps)
            .clamp(64, u64::from(u32::MAX)) as u32
    }

    /// Calls whose slots fit in this process's `vm.max_map_count` ([`MAPS_PER_CALL`] each),
    /// where it can be read: 6 826 under Linux's default of 65 530.
    pub fn supported_by_maps() -> Option<u32> {
        crate::process::max_map_count().map(|maps| {
            (maps.saturating_sub(MAPS_RESERVED) / MAPS_PER_CALL).min(u64::from(u32::MAX)) as u32
        })
    }

    /// Bytes of each freed memory and table slot reset in place (and so kept resident) rather
    /// than returned to the kernel: [`KEEP_RESIDENT`], less where the whole pool would keep
    /// more than a sixteenth of the host's memory — a burst of calls in flight must not
    /// leave every slot it touched resident for good.
    pub fn keep_resident(&self) -> usize {
        let slots = u64::from(self.instances.max(1)) * u64::from(MEMORIES_PER_CALL);
        let budget = crate::process::host_memory_bytes()
            .map_or(KEEP_RESIDENT as u64, |m| keep_resident_budget(m) / slots);
        (budget.min(KEEP_RESIDENT as u64) as usize) & !0xfff
    }
}

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
    /// Calls (each one instance) that may run at once: `[host] max_in_flight`, by default what
    /// the tenants may run at once, bounded by what the host can hold
    /// ([`PoolSizing::supported_in_flight`]). Every pool resource is sized from it, and the
    /// engine admits no more calls than it ([`HostEngine::admit`]).
    pub instances: u32,
    /// Largest linear memory any tenant allows.
    pub max_memory_bytes: u64,
    /// How calls are metered (`[host] metering`): fuel, or CPU time with epochs.
    pub metering: crate::metering::Metering,
}

/// The engine and its epoch ticker.
pub struct HostEngine {
    /// The engine.
    pub engine: Engine,
    /// How instances are allocated.
    pub allocation: Allocation,
    /// What it was built with.
    pub options: EngineOptions,
    /// Calls running on this engine: at most its pool's size at once (unbounded without one).
    capacity: Arc<tokio::sync::Semaphore>,
    /// The size of `capacity`.
    max_in_flight: u32,
    /// Instances kept between calls of one tenant, each holding its place in `capacity`.
    pub kept: Arc<KeptInstances>,
    stop: Arc<AtomicBool>,
}

/// A call's place on an engine, held while it runs.
pub type CapacityPermit = tokio::sync::OwnedSemaphorePermit;

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
    /// The host's configuration: pooling sized by `pool`; fuel on and epochs off, or with
    /// `metering = "cpu-time"` the other way round.
    pub fn host(pool: PoolSizing) -> EngineOptions {
        let cpu_time = pool.metering == crate::metering::Metering::CpuTime;
        EngineOptions {
            pool: Some(pool),
            fuel: !cpu_time,
            epoch: cpu_time,
        }
    }
}

fn config(pool: Option<PoolSizing>, fuel: bool, epoch: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Every provider today runs one call per instance (WASI 0.2): the store's data for
    // concurrent guests (component-model async) would be set up and torn down on every call
    // for nothing — about a tenth of a call's time.
    config.concurrency_support(false);
    config.consume_fuel(fuel);
    config.epoch_interruption(epoch);
    config.max_wasm_stack(1 << 20);
    if let Some(p) = pool {
        let mut pooling = PoolingAllocationConfig::default();
        let n = p.instances.max(1);
        // Every resource a call holds is sized together: an instance, its core instances,
        // memories and tables, and the async stack its fiber runs on (left at Wasmtime's
        // default of 1 000 stacks, the 1 001st call in flight failed as if it had trapped).
        pooling
            .total_component_instances(n)
            .total_core_instances(n.saturating_mul(16))
            .total_memories(n.saturating_mul(MEMORIES_PER_CALL))
            .total_tables(n.saturating_mul(8))
            .total_stacks(n)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_core_instances_per_component(16)
            .max_memory_size(p.max_memory_bytes as usize)
            .table_elements(100_000)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            // Reset a freed slot's first pages with memset instead of madvise: fewer
            // syscalls and TLB-shootdown IPIs per call (BENCHMARKS.md, HTTP hello).
            .linear_memory_keep_resident(p.keep_resident())
            .table_keep_resident(p.keep_resident())
            // Of those pages, reset only the ones the call wrote (Linux 6.7+'s PAGEMAP_SCAN,
            // where the kernel has it): a memset of every kept page was ~15% of the host's
            // CPU under HTTP hello load (BENCHMARKS.md).
            .pagemap_scan(wasmtime::Enabled::Auto);
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
        let max_in_flight = pool.map_or(u32::MAX >> 3, |p| p.instances.max(1));
        let capacity = Arc::new(tokio::sync::Semaphore::new(max_in_flight as usize));
        let kept = Arc::new(KeptInstances::new(
            (max_in_flight as usize / 4).min(DEFAULT_MAX_IDLE),
        ));
        sweep_regularly(&kept, &stop)?;
        if !epoch {
            return Ok(HostEngine {
                engine,
                allocation,
                options,
                capacity,
                max_in_flight,
                kept,
                stop,
            });
        }
        let ticker = engine.weak();
        let stop_flag = stop.clone();
        // Without fuel, epochs are what makes guests yield: tick often.
        let tick = if fuel {
            EPOCH_TICK
        } else {
            crate::metering::CPU_TIME_TICK
        };
        std::thread::Builder::new()
            .name("greentic-epoch".into())
            .spawn(move || {
                while !stop_flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
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
            capacity,
            max_in_flight,
            kept,
            stop,
        })
    }

    /// A place for one call on this engine, waiting until `until` for one to free up: the
    /// host at capacity is its own condition (`503 host-at-capacity`, retryable), never a
    /// failure of the provider that would have run.
    pub async fn admit(&self, until: tokio::time::Instant) -> Result<CapacityPermit, CallError> {
        loop {
            if let Ok(permit) = self.capacity.clone().try_acquire_owned() {
                return Ok(permit);
            }
            // An idle kept instance gives its place to a call that would otherwise wait.
            if self.kept.evict_oldest().is_none() {
                break;
            }
        }
        let wait = tokio::time::timeout_at(until, self.capacity.clone().acquire_owned());
        match self.kept.waiting(wait).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(CallError::HostAtCapacity {
                detail: format!(
                    "{} calls in flight, [host] max_in_flight",
                    self.max_in_flight
                ),
                retry_after_ms: 1_000,
            }),
        }
    }

    /// Calls running on this engine now, and how many it admits at once.
    pub fn in_flight(&self) -> (u32, u32) {
        // An idle kept instance holds a place it gives up to the first call that needs it.
        let free = (self.capacity.available_permits() + self.kept.idle()) as u32;
        (self.max_in_flight.saturating_sub(free), self.max_in_flight)
    }

    /// A fingerprint of everything that makes compiled code valid for this engine.
    pub fn fingerprint(&self) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("wasmtime-{}-{:016x}", wasmtime_version(), h.finish())
    }
}

/// Drops idle kept instances past their time every second, on a thread of the engine's own
/// (so an idle host gives their memory back), until the engine is dropped.
fn sweep_regularly(kept: &Arc<KeptInstances>, stop: &Arc<AtomicBool>) -> std::io::Result<()> {
    let kept = Arc::downgrade(kept);
    let stop = stop.clone();
    std::thread::Builder::new()
        .name("greentic-kept".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                match kept.upgrade() {
                    Some(kept) => kept.sweep(|_| false),
                    None => break,
                }
            }
        })?;
    Ok(())
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
const MAGIC: &[u8; 8] = b"GTCWASM2";
/// Bytes of the MAC after the magic.
const MAC_LEN: usize = 32;

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache.
    Hit,
    /// Compiled (and stored).
    Compiled,
    /// An entry was found that this host did not write (or that is corrupt), discarded, and the
    /// component recompiled.
    Recompiled,
    /// Nothing compiled: a provider outside the host (`form = "remote"`).
    Remote,
    /// Nothing compiled: a native provider, compiled into the host (`form = "native"`).
    Native,
}

/// The key compiled-artifact cache entries are authenticated with: only a host holding it can
/// write an entry this host will load as native code.
#[derive(Clone)]
pub struct CacheKey {
    key: ring::hmac::Key,
    /// Where it is kept (`None`: this process only).
    pub path: Option<PathBuf>,
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl CacheKey {
    /// A key for this process only (nothing written; entries it writes are useless to the
    /// next process).
    pub fn ephemeral() -> CacheKey {
        let mut bytes = [0u8; 32];
        // The system's randomness failing leaves an all-zero key only in this process's
        // memory; entries written with it would still be checked against it.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        CacheKey {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes),
            path: None,
        }
    }

    /// The default place for the key: `$GREENTIC_CACHE_KEY_FILE`, else
    /// `$STATE_DIRECTORY/cache.key` (a systemd unit's `StateDirectory=`), else
    /// `$XDG_STATE_HOME/greentic-host/cache.key`, else `~/.local/state/greentic-host/cache.key`.
    pub fn default_path() -> Option<PathBuf> {
        let env = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        env("GREENTIC_CACHE_KEY_FILE")
            .or_else(|| {
                greentic_capabilities::dirs::service_dir("STATE_DIRECTORY")
                    .map(|d| d.join("cache.key"))
            })
            .or_else(|| env("XDG_STATE_HOME").map(|d| d.join("greentic-host/cache.key")))
            .or_else(|| env("HOME").map(|d| d.join(".local/state/greentic-host/cache.key")))
    }

    /// Loads the key at `path`, creating it (32 random bytes; the file mode 0600 in a
    /// directory of mode 0700) when missing. A key file other users could read or write, or
    /// owned by another user, is refused: its key could sign entries this host would run.
    pub fn load_or_create(path: &Path) -> Result<CacheKey, String> {
        let describe = |e: std::io::Error| format!("cache key {}: {e}", path.display());
        if let Some(dir) = path.parent() {
            create_private_dir(dir).map_err(describe)?;
        }
        let bytes = match std::fs::read(path) {
            Ok(bytes) => {
                check_private(path)?;
                bytes
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = vec![0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                    .map_err(|_| "the system's random number generator failed".to_string())?;
                write_private(path, &bytes).map_err(describe)?;
                bytes
            }
            Err(e) => return Err(describe(e)),
        };
        if bytes.len() < 32 {
            return Err(format!(
                "cache key {} holds {} bytes; delete it and a new one is made",
                path.display(),
                bytes.len()
            ));
        }
        Ok(CacheKey {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes),
            path: Some(path.to_path_buf()),
        })
    }

    /// The key at `configured` (or [`CacheKey::default_path`]); on any problem, a key for this
    /// process only, with a warning that says why (the cache then only helps within a run).
    pub fn open(configured: Option<&Path>) -> CacheKey {
        let path = configured
            .map(Path::to_path_buf)
            .or_else(CacheKey::default_path);
        let Some(path) = path else {
            tracing::warn!(
                "no place for the compiled-artifact cache key (set GREENTIC_CACHE_KEY_FILE or [host].cache_key_file); compiled code is cached for this process only"
            );
            return CacheKey::ephemeral();
        };
        match CacheKey::load_or_create(&path) {
            Ok(key) => key,
            Err(why) => {
                tracing::warn!(%why, "compiled-artifact cache key unusable; compiled code is cached for this process only");
                CacheKey::ephemeral()
            }
        }
    }

    fn mac(&self, label: &[u8], payload: &[u8]) -> ring::hmac::Tag {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(&(label.len() as u64).to_le_bytes());
        ctx.update(label);
        ctx.update(payload);
        ctx.sign()
    }

    fn verify(&self, label: &[u8], payload: &[u8], tag: &[u8]) -> bool {
        let expected = self.mac(label, payload);
        // Compared in constant time.
        expected.as_ref().len() == tag.len()
            && expected
                .as_ref()
                .iter()
                .zip(tag)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // Another host process may have made the key meanwhile: keep theirs.
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.error),
    }
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cache key {}: {e}", path.display()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "cache key {} is readable or writable by other users (mode {:o}); `chmod 600` it, or delete it and a new one is made",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    // The owner of /proc/self is this process's user.
    if let Ok(me) = std::fs::metadata("/proc/self")
        && me.uid() != meta.uid()
    {
        return Err(format!(
            "cache key {} belongs to user {}, not to this host's user {}",
            path.display(),
            meta.uid(),
            me.uid()
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path) -> Result<(), String> {
    Ok(())
}

/// The compiled-artifact cache: `<dir>/<sha256(digest, fingerprint)>.cwasm`, each entry
/// `MAGIC || HMAC-SHA256(key; digest, fingerprint, payload) || payload`, written to a temporary
/// file, fsynced, then renamed.
///
/// An entry is native code: loading one runs whatever it holds. So an entry is loaded only if
/// its MAC, under a key only this host's user holds ([`CacheKey`]), covers the component
/// digest, the engine fingerprint and the payload: whoever can write the cache directory but not
/// read the key cannot make the host run their code, and an entry moved between digests does
/// not verify. Anything else is discarded and the component recompiled.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    key: CacheKey,
}

impl CompileCache {
    /// A cache in `dir` (created, mode 0700, on first store), its entries authenticated with
    /// `key`.
    pub fn new(dir: PathBuf, key: CacheKey) -> CompileCache {
        CompileCache { dir, key }
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
        let fingerprint = engine.fingerprint();
        let label = format!("{digest}\n{fingerprint}");
        let path = self.entry(digest, &fingerprint);
        let mut outcome = CacheOutcome::Compiled;
        if let Ok(entry) = std::fs::read(&path) {
            match self.deserialize(&engine.engine, label.as_bytes(), &entry) {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(why) => {
                    tracing::warn!(entry = %path.display(), %why, "discarding a compiled-artifact cache entry");
                    let _ = std::fs::remove_file(&path);
                    outcome = CacheOutcome::Recompiled;
                }
            }
        }
        let compiled = engine
            .engine
            .precompile_component(bytes)
            .map_err(|e| anyhow::anyhow!("compiling: {e}"))?;
        let framed = self.frame(label.as_bytes(), &compiled);
        if let Err(e) = self.store(&path, &framed) {
            tracing::warn!(entry = %path.display(), error = %e, "could not write the compiled-artifact cache; continuing without it");
        }
        let component = self
            .deserialize(&engine.engine, label.as_bytes(), &framed)
            .map_err(|why| anyhow::anyhow!("loading freshly compiled code: {why}"))?;
        Ok((component, outcome))
    }

    fn frame(&self, label: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + MAGIC.len() + MAC_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(self.key.mac(label, payload).as_ref());
        out.extend_from_slice(payload);
        out
    }

    fn deserialize(
        &self,
        engine: &Engine,
        label: &[u8],
        entry: &[u8],
    ) -> Result<Component, String> {
        if entry.len() < MAGIC.len() + MAC_LEN || &entry[..MAGIC.len()] != MAGIC {
            return Err("not an entry of this cache format".into());
        }
        let (tag, payload) = entry[MAGIC.len()..].split_at(MAC_LEN);
        if !self.key.verify(label, payload, tag) {
            return Err(
                "its MAC does not verify under this host's cache key (written by someone else, for another component, or corrupt)"
                    .into(),
            );
        }
        // SAFETY: `payload` was produced by `Engine::precompile_component` of an engine with the
        // same fingerprint, for this component digest: its MAC, under a key only this host's
        // user holds, covers both and the bytes.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, payload) };
        component.map_err(|e| e.to_string())
    }

    fn store(&self, path: &Path, framed: &[u8]) -> std::io::Result<()> {
        create_private_dir(&self.dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(framed)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_bounded_by_what_the_host_can_reserve_and_hold() {
        let supported = PoolSizing::supported_in_flight(64 << 20);
        // 96 TiB over two 4 GiB memory reservations (and guards) per call.
        assert!((1_000..=12_096).contains(&supported), "{supported} calls");
        // Larger memories reserve more: fewer slots.
        assert!(PoolSizing::supported_in_flight(16 << 30) < supported);
    }

    #[test]
    fn a_large_pool_keeps_less_resident_per_slot_than_a_small_one() {
        let pool = |instances| PoolSizing {
            instances,
            max_memory_bytes: 64 << 20,
            metering: crate::metering::Metering::Fuel,
        };
        assert_eq!(pool(16).keep_resident(), KEEP_RESIDENT);
        let large = pool(10_000).keep_resident();
        assert!(large < KEEP_RESIDENT / 4, "{large}");
        assert_eq!(large % 4096, 0);
        // What the whole pool keeps is bounded by a sixteenth of the host's memory.
        let memory = crate::process::host_memory_bytes().unwrap();
        assert!(large as u64 * 10_000 * u64::from(MEMORIES_PER_CALL) <= memory / 16);
    }
}
