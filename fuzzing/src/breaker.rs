//! The circuit breaker's state machine under any sequence of calls, outcomes, abandoned calls
//! and passing time.
//!
//! Each input byte is one step on a virtual clock, for one of two circuits: admit a call, settle
//! one in flight as a success or a failure, abandon one (its future dropped: the client went
//! away, or its handler returned early), or let time pass. After every step:
//!
//! - a closed circuit admits;
//! - an open circuit within its cool-down refuses;
//! - while a circuit is not closed, at most one unexpired probe admitted since it opened is in
//!   flight (probes of an earlier episode, which the circuit closing made moot, are not
//!   counted: their late outcomes are ignored);
//! - other circuits are not affected (each circuit's state follows from its own steps only);
//!
//! and at the end, once every call in flight is settled or abandoned and the cool-down and
//! probe timeout have passed, every circuit admits a call again: nothing wedges it.

use std::time::{Duration, Instant};

use greentic_host::resilience::{Admission, BreakerPolicy, BreakerState, Breakers};

const COOL_DOWN: Duration = Duration::from_millis(50);
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
const TENANTS: [&str; 2] = ["a", "b"];

/// One input: a sequence of steps.
pub fn run(data: &[u8]) {
    let breakers = Breakers::new(BreakerPolicy {
        failure_threshold: 2,
        cool_down: COOL_DOWN,
        probe_timeout: PROBE_TIMEOUT,
    });
    let start = Instant::now();
    let mut now = start;
    // Calls in flight: which circuit, when admitted, in which of its openings (if it was not
    // closed then), the admission.
    let mut flight: Vec<(usize, Instant, Option<u32>, Admission<'_>)> = Vec::new();
    // Each circuit's current opening (None while closed), counted from 1.
    let mut opened: [Option<u32>; 2] = [None, None];
    let mut openings = [0u32; 2];
    let mut bytes = data.iter().copied();
    while let Some(b) = bytes.next() {
        let circuit = usize::from(b >> 7);
        let tenant = TENANTS[circuit];
        let arg = bytes.next().unwrap_or(0);
        match b & 0x3 {
            0 => {
                let before = breakers.state(tenant, "p");
                match breakers.admit_at(tenant, "p", now) {
                    Ok(admission) => {
                        if admission.is_probe() {
                            assert_ne!(before, BreakerState::Closed, "a closed circuit probed");
                        }
                        flight.push((circuit, now, opened[circuit], admission));
                    }
                    Err(e) => {
                        assert_ne!(
                            before,
                            BreakerState::Closed,
                            "a closed circuit refused: {e}"
                        );
                        assert_eq!(e.code(), "circuit-open");
                    }
                }
            }
            1 | 2 if !flight.is_empty() => {
                let (_, _, _, admission) = flight.remove(usize::from(arg) % flight.len());
                if b & 0x3 == 1 {
                    admission.settle_at(arg & 0x80 != 0, now);
                } else {
                    admission.abandon_at(now);
                }
            }
            _ => now += Duration::from_millis(u64::from(arg) * 5),
        }
        for (c, tenant) in TENANTS.iter().enumerate() {
            let closed = breakers.state(tenant, "p") == BreakerState::Closed;
            match (opened[c], closed) {
                (_, true) => opened[c] = None,
                (None, false) => {
                    openings[c] += 1;
                    opened[c] = Some(openings[c]);
                }
                (Some(_), false) => {}
            }
            let Some(opening) = opened[c] else { continue };
            let live_probes = flight
                .iter()
                .filter(|(fc, at, during, a)| {
                    *fc == c
                        && a.is_probe()
                        && *during == Some(opening)
                        && now.duration_since(*at) < PROBE_TIMEOUT
                })
                .count();
            assert!(
                live_probes <= 1,
                "{tenant}: {live_probes} probes in flight at once"
            );
        }
    }
    // Every call ends, one way or another; after the cool-down and the probe timeout, every
    // circuit lets a call through again.
    for (i, (_, _, _, admission)) in flight.drain(..).enumerate() {
        if i % 2 == 0 {
            admission.abandon_at(now);
        } else {
            admission.settle_at(true, now);
        }
    }
    now += COOL_DOWN + PROBE_TIMEOUT;
    for tenant in TENANTS {
        let admitted = breakers.admit_at(tenant, "p", now);
        assert!(
            admitted.is_ok(),
            "{tenant}: wedged ({:?})",
            breakers.state(tenant, "p")
        );
        if let Ok(admission) = admitted {
            assert_eq!(admission.settle_at(false, now), BreakerState::Closed);
        }
    }
}
