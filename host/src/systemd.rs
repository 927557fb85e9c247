//! The service manager's side of a systemd unit, spoken directly (no libsystemd): readiness and
//! reload notifications with a watchdog (`sd_notify`, `Type=notify`, `WatchdogSec=`), and
//! listeners passed in by socket activation (`sd_listen_fds`, `LISTEN_FDS`/`LISTEN_FDNAMES`).
//! Outside systemd none of the variables is set and every function here does nothing.
//!
//! Unsafe code here is limited to taking ownership of passed descriptors, reading the
//! monotonic clock and unsetting the activation variables before any thread starts.

#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, RawFd};
use std::time::Duration;

/// Sends `state` (`READY=1`, `STATUS=…`, newline-separated) to the service manager, if
/// `$NOTIFY_SOCKET` names one; `Ok(false)` when none does.
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else {
        return Ok(false);
    };
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket (what systemd uses inside some containers).
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Ok(false);
        }
    } else {
        socket.send_to(state.as_bytes(), std::path::Path::new(&path))?;
    }
    Ok(true)
}

/// [`notify`], logging (not failing) when the manager cannot be told.
pub fn tell(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, state = %state.lines().next().unwrap_or(""), "the service manager (NOTIFY_SOCKET) cannot be told");
    }
}

/// `RELOADING=1` with the `MONOTONIC_USEC` systemd wants beside it.
pub fn reloading() -> String {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for clock_gettime to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

/// How often the watchdog wants to hear from this process (`WatchdogSec=` of the unit, as
/// `$WATCHDOG_USEC`), if it watches this process (`$WATCHDOG_PID`, when set, is ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog (`WATCHDOG=1`) at half its interval from a task on the serving runtime,
/// for as long as the runtime runs: a runtime too wedged to run the task misses pings, and
/// systemd kills and restarts the service (`Restart=on-failure`).
pub async fn watchdog(interval: Duration) {
    let mut tick = tokio::time::interval(interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        tell("WATCHDOG=1");
    }
}

/// Listening sockets passed by socket activation, by name: `public` and `admin` (the units'
/// `FileDescriptorName=`); without names, the first is `public` and the second `admin`.
#[derive(Debug, Default)]
pub struct Activated {
    /// The public listener, if one was passed.
    pub public: Option<std::net::TcpListener>,
    /// The admin listener, if one was passed.
    pub admin: Option<std::net::TcpListener>,
}

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Takes the sockets systemd passed to this process (`$LISTEN_PID` is ours), and unsets the
/// variables so nothing started later takes them again. Call before any thread starts.
pub fn take_listeners() -> anyhow::Result<Activated> {
    let Some(count) = std::env::var("LISTEN_FDS").ok() else {
        return Ok(Activated::default());
    };
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let names = std::env::var("LISTEN_FDNAMES").ok();
    // SAFETY: called from `main`'s thread before the runtime or any other thread starts.
    unsafe {
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if !ours {
        return Ok(Activated::default());
    }
    let count: RawFd = count
        .parse()
        .map_err(|_| anyhow::anyhow!("$LISTEN_FDS `{count}` is not a number"))?;
    let names: Vec<String> = match names {
        Some(n) => n.split(':').map(str::to_string).collect(),
        None => ["public", "admin"]
            .iter()
            .take(count as usize)
            .map(|s| s.to_string())
            .collect(),
    };
    let mut activated = Activated::default();
    for i in 0..count {
        let fd = LISTEN_FDS_START + i;
        let name = names.get(i as usize).map(String::as_str).unwrap_or("");
        // SAFETY: systemd passed `fd` to this process for it to own; nothing else uses it.
        let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        // Ours now: not inherited by anything this process starts.
        // SAFETY: fcntl on a descriptor this process owns.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        listener.local_addr().map_err(|e| {
            anyhow::anyhow!(
                "socket activation: descriptor {fd} (`{name}`) is not a listening TCP socket ({e}); use ListenStream= in the .socket unit"
            )
        })?;
        listener.set_nonblocking(true)?;
        let slot = match name {
            "public" => &mut activated.public,
            "admin" => &mut activated.admin,
            other => anyhow::bail!(
                "socket activation passed a socket named `{other}`; name them `public` and `admin` (FileDescriptorName= in the .socket units)"
            ),
        };
        anyhow::ensure!(
            slot.is_none(),
            "socket activation passed two sockets named `{name}`; pass one public and one admin socket"
        );
        *slot = Some(listener);
    }
    Ok(activated)
}
