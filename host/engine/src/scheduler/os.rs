//! What the scheduler asks of the operating system: a thread's CPU time, and a lower priority
//! for the guest threads.
#![allow(unsafe_code)]

use std::time::Duration;

use greentic_bundle::GuestPriority;

/// CPU time the calling thread has used (not wall time: a turn preempted by the host's own
/// threads is charged only what it ran).
#[cfg(unix)]
pub(crate) fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID needs nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wall time where no per-thread CPU clock exists.
#[cfg(not(unix))]
pub(crate) fn thread_cpu() -> Duration {
    use std::sync::OnceLock;
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// Gives the calling thread `priority` (lowering a thread's priority needs no privilege).
#[cfg(target_os = "linux")]
pub(crate) fn set_priority(priority: GuestPriority) -> std::io::Result<()> {
    match priority {
        GuestPriority::Normal => Ok(()),
        GuestPriority::Low => {
            // On Linux, PRIO_PROCESS with 0 is the calling thread, not the whole process.
            // SAFETY: plain syscall on the calling thread.
            let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
        GuestPriority::Idle => {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: `param` is valid for the call; pid 0 is the calling thread.
            let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
    }
}

/// Thread priorities are left alone off Linux.
#[cfg(not(target_os = "linux"))]
pub(crate) fn set_priority(priority: GuestPriority) -> std::io::Result<()> {
    match priority {
        GuestPriority::Normal => Ok(()),
        _ => Err(std::io::Error::other(
            "guest thread priorities are only set on Linux",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_counts_work_not_sleep() {
        let t0 = thread_cpu();
        std::thread::sleep(Duration::from_millis(50));
        let slept = thread_cpu() - t0;
        let t1 = thread_cpu();
        let until = std::time::Instant::now() + Duration::from_millis(20);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        let spun = thread_cpu() - t1;
        assert!(slept < Duration::from_millis(10), "sleeping cost {slept:?}");
        assert!(
            spun >= Duration::from_millis(5),
            "spinning 20 ms counted {spun:?}"
        );
    }

    #[test]
    fn a_thread_can_lower_its_own_priority() {
        std::thread::spawn(|| {
            set_priority(GuestPriority::Low).expect("nice 10");
            set_priority(GuestPriority::Idle).expect("SCHED_IDLE");
        })
        .join()
        .unwrap();
    }
}
