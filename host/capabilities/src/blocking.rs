//! Running async registry work from synchronous load code.
//!
//! Loading may itself run inside an async runtime (`greentic-host run`), where blocking on a
//! future is not allowed; the work runs on a scoped thread with a runtime of its own.

/// Runs `work` on its own thread with a current-thread runtime and returns its result.
pub fn run<T: Send>(
    what: &str,
    work: impl FnOnce(&tokio::runtime::Runtime) -> Result<T, String> + Send,
) -> Result<T, String> {
    let job = || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("{what}: starting an async runtime: {e}"))?;
        work(&rt)
    };
    std::thread::scope(|s| s.spawn(job).join()).unwrap_or_else(|_| Err(format!("{what} panicked")))
}
