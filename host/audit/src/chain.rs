//! The chain's format: what a record's hash covers, what a checkpoint signs, and the export
//! every written record is handed to. The writer and the verifier both read it here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The kind of a checkpoint record.
pub const CHECKPOINT: &str = "audit.checkpoint";
/// `prev` of the first record.
pub const GENESIS: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
/// What a checkpoint of an earlier version signed: the covered sequence number and the chain's
/// head (verified still; it names no host).
pub fn checkpoint_message_v1(covered_seq: u64, head: &str) -> Vec<u8> {
    format!("greentic-audit-checkpoint/v1\n{covered_seq}\n{head}\n").into_bytes()
}

/// What a checkpoint signs: the host that keeps the log, the hash of the log's first record
/// (which log it is), the covered sequence number and the chain's head.
pub fn checkpoint_message(host: &str, first: &str, covered_seq: u64, head: &str) -> Vec<u8> {
    format!("greentic-audit-checkpoint/v2\n{host}\n{first}\n{covered_seq}\n{head}\n").into_bytes()
}

/// How long the writer lets records gather after the first of a batch arrives.
pub(crate) const BATCH_WAIT: Duration = Duration::from_millis(1);

/// The length of `,"hash":"sha256:<64 hex>"}` at the end of every line.
pub(crate) const SUFFIX_LEN: usize = ",\"hash\":\"sha256:".len() + 64 + "\"}".len();

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Where records are exported besides the file.
pub trait Export: Send {
    /// Exports one written record.
    fn export(&mut self, seq: u64, kind: &str, event: &Value, hash: &str, prev: &str);
}
