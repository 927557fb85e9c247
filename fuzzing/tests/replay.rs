//! Every fuzz target on the stable toolchain: the seeds, every input that ever crashed a target
//! (`fuzz/regressions/<target>/`, kept so a crash once found stays fixed), and a fixed set of
//! mutations of the seeds. `scripts/fuzz.sh` runs the real, coverage-guided fuzzers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::{Path, PathBuf};

use greentic_fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted.
fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Runs `body` on `input`, naming the input if it panics.
fn replay(target: &str, what: &str, body: fn(&[u8]), input: &[u8]) {
    if let Err(panic) = std::panic::catch_unwind(|| body(input)) {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("target `{target}` failed on {what}: {message}");
    }
}

#[test]
fn every_target_has_seeds_and_a_regressions_directory() {
    for (target, _) in TARGETS {
        assert!(
            !inputs("seeds", target).is_empty(),
            "fuzz/seeds/{target}/ is empty: the fuzzer would start from nothing"
        );
        assert!(fuzz_dir().join("regressions").join(target).is_dir());
        assert!(
            fuzz_dir()
                .join("fuzz_targets")
                .join(format!("{target}.rs"))
                .is_file(),
            "fuzz/fuzz_targets/{target}.rs is missing"
        );
    }
}

#[test]
fn seeds_and_past_crashes_pass_every_target() {
    for (target, body) in TARGETS {
        for kind in ["seeds", "regressions"] {
            for (path, bytes) in inputs(kind, target) {
                replay(target, &path.display().to_string(), *body, &bytes);
            }
        }
    }
}

/// Mutations of each seed (byte flips, truncations, splices, repeated runs), the same ones
/// every run: a small, deterministic fuzz on stable.
#[test]
fn mutated_seeds_pass_every_target() {
    for (target, body) in TARGETS {
        let seeds = inputs("seeds", target);
        // The component target compiles a guest per input, and the connection target waits out
        // real (short) deadlines: fewer rounds of those.
        let rounds = match *target {
            "component" => 40,
            "connection" | "tls_connection" => 24,
            _ => 400,
        };
        let mut rng = fastrand::Rng::with_seed(0x6772_6565_6e74_6963);
        for round in 0..rounds {
            let (_, seed) = &seeds[round % seeds.len()];
            let other = rng.usize(..seeds.len());
            let input = mutate(&mut rng, seed, &seeds[other].1);
            replay(target, &format!("mutation {round}"), *body, &input);
        }
    }
}

fn mutate(rng: &mut fastrand::Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.usize(1..=4) {
        match rng.u8(0..5) {
            0 if !v.is_empty() => {
                let i = rng.usize(..v.len());
                v[i] ^= 1 << rng.u8(0..8);
            }
            1 if !v.is_empty() => v.truncate(rng.usize(..v.len())),
            2 if !other.is_empty() => {
                let at = rng.usize(..=v.len());
                let from = rng.usize(..other.len());
                let len = rng.usize(..=(other.len() - from).min(256));
                v.splice(at..at, other[from..from + len].iter().copied());
            }
            3 if !v.is_empty() => {
                let from = rng.usize(..v.len());
                let len = rng.usize(1..=(v.len() - from).min(64));
                let piece = v[from..from + len].repeat(rng.usize(2..64));
                v.splice(from..from, piece);
            }
            _ => {
                let at = rng.usize(..=v.len());
                v.insert(at, rng.u8(..));
            }
        }
    }
    v
}

/// The component target is not vacuous: generated guests get through `wit-component` and the
/// loader to a call, and raw bytes are refused by the loader.
#[test]
fn the_component_target_reaches_the_call() {
    use greentic_fuzzing::component::{Reached, reach};
    let mut reached = std::collections::BTreeMap::<&str, Vec<Reached>>::new();
    for (path, bytes) in inputs("seeds", "component") {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let kind = if name.starts_with("raw-") {
            "raw"
        } else {
            "generated"
        };
        reached.entry(kind).or_default().push(reach(&bytes));
    }
    eprintln!("{reached:?}");
    assert!(
        reached["generated"].contains(&Reached::Called),
        "no generated seed reached a call: {reached:?}"
    );
    // The raw seed is a real provider (an infinite loop) granted nothing: it loads and is
    // stopped by its fuel.
    assert_eq!(reached["raw"], vec![Reached::Called]);
}
