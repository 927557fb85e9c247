//! Benchmark provider: CPU-bound workloads for measuring what fuel and epoch interruption cost.
//! `to` names the workload, `text` its size; the id is the result, so nothing is optimised away.
//!
//! - `sha256 N`: SHA-256 over N KiB (hashing: tight arithmetic loops);
//! - `fib N`: naive recursive Fibonacci (calls);
//! - `collatz N`: total Collatz steps of 1..N (branches);
//! - `sieve N`: primes below N with a byte sieve (memory).

use greentic_provider_sdk::messaging::exports::greentic::messaging::outbound::{
    Guest, Message, SendResult,
};
use greentic_provider_sdk::types::{ProviderError, TenantCtx};
use sha2::{Digest, Sha256};

greentic_provider_sdk::provider_manifest!();

/// Naive Fibonacci.
pub fn fib(n: u32) -> u64 {
    if n < 2 {
        n as u64
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

/// Total Collatz steps of 1..=n.
pub fn collatz(n: u64) -> u64 {
    let mut total = 0;
    for start in 1..=n {
        let mut x = start;
        while x != 1 {
            x = if x % 2 == 0 { x / 2 } else { 3 * x + 1 };
            total += 1;
        }
    }
    total
}

/// Number of primes below n.
pub fn sieve(n: usize) -> u64 {
    let mut composite = vec![false; n];
    let mut count = 0;
    for i in 2..n {
        if !composite[i] {
            count += 1;
            let mut j = i * i;
            while j < n {
                composite[j] = true;
                j += i;
            }
        }
    }
    count
}

/// First 8 bytes of SHA-256 over `kib` KiB of a counting pattern, as a number.
pub fn sha256(kib: usize) -> u64 {
    let block: Vec<u8> = (0..1024u32).map(|i| i as u8).collect();
    let mut h = Sha256::new();
    for _ in 0..kib {
        h.update(&block);
    }
    let d = h.finalize();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// Runs workload `name` at `size`.
pub fn run(name: &str, size: u64) -> Option<u64> {
    Some(match name {
        "sha256" => sha256(size as usize),
        "fib" => fib(size as u32),
        "collatz" => collatz(size),
        "sieve" => sieve(size as usize),
        _ => return None,
    })
}

struct Workloads;

impl Guest for Workloads {
    fn send(_ctx: TenantCtx, msg: Message) -> Result<SendResult, ProviderError> {
        let size: u64 = msg
            .text
            .parse()
            .map_err(|_| ProviderError::InvalidInput("text must be the workload size".into()))?;
        let result = run(&msg.to, size).ok_or_else(|| {
            ProviderError::InvalidInput("to must be sha256, fib, collatz or sieve".into())
        })?;
        Ok(SendResult {
            id: result.to_string(),
            delivered_at_ms: 0,
        })
    }
}

greentic_provider_sdk::export_messaging_provider!(Workloads);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_compute_known_values() {
        assert_eq!(fib(20), 6765);
        assert_eq!(collatz(10), 67); // 0+1+7+2+5+8+16+3+19+6
        assert_eq!(sieve(100), 25);
        assert_ne!(sha256(1), sha256(2));
        assert_eq!(run("nope", 1), None);
    }
}
