//! `greentic-host`: runs and inspects greentic provider components.

use clap::Parser;
use greentic_host::cli;

/// jemalloc, not the C library's allocator: under load the host allocates and frees small
/// objects on one worker thread and frees them on another, which glibc's arenas serve slowly
/// (a sixth of a webhook call's CPU was in `malloc`/`free`). Measured in BENCHMARKS.md.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read once when it starts: a background thread returns freed pages to
/// the system within about a second of being freed (`dirty_decay_ms`), so a host that loaded
/// 100 000 tenants or served a burst idles near what it holds, instead of keeping every page it
/// ever used until more allocations happen to purge them. `_RJEM_MALLOC_CONF` in the
/// environment overrides these (jemalloc's own `MALLOC_CONF`, under this build's prefix).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
// SAFETY: jemalloc reads this symbol as a `const char *` to a NUL-terminated string; a static
// reference to a byte array is exactly that pointer, never written.
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static JEMALLOC_CONF: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    greentic_engine::process::quiet_library_backtraces();
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", cli::describe(&e));
            std::process::ExitCode::from(1)
        }
    }
}
