//! What the host process may hold, asked of the operating system.

#![allow(unsafe_code)]

/// Turns off the backtraces errors capture when they are built (`RUST_LIB_BACKTRACE=0`),
/// unless the operator set `RUST_LIB_BACKTRACE` themselves; panics still print theirs under
/// `RUST_BACKTRACE=1`. Wasmtime builds an error on every store it drops, and with
/// `RUST_BACKTRACE=1` in the environment each one walked the stack: ~30% of the host's CPU
/// under HTTP load (BENCHMARKS.md). Call first thing in `main`, before any thread starts.
pub fn quiet_library_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: called at the start of `main`, before the process has a second thread that
        // could read the environment concurrently.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
}

/// Raises this process's open-file limit to its hard limit (as Go's runtime does at start);
/// the soft limit in force afterwards, `None` where it cannot be read.
pub fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Some(limit.rlim_cur)
}

/// How many memory mappings this process may hold (`vm.max_map_count`; Linux's default is
/// 65 530); `None` where it cannot be read.
pub fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

/// The memory this host may use: its cgroup's limit (`memory.max`) where it has one, else the
/// machine's (`MemTotal`); `None` where neither can be read.
pub fn host_memory_bytes() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    let machine = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib << 10)
    });
    match (cgroup, machine) {
        (Some(c), Some(m)) => Some(c.min(m)),
        (c, m) => c.or(m),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let soft = super::raise_open_file_limit().unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(soft, limit.rlim_cur);
        assert_eq!(limit.rlim_cur, limit.rlim_max);
    }

    #[test]
    fn the_host_memory_is_read() {
        let memory = super::host_memory_bytes().unwrap();
        assert!(memory > 64 << 20, "{memory}");
    }
}
