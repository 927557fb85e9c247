//! Verifying a log: the hash chain, sequence numbers and signed checkpoints, a line at a time.

use std::io::BufRead;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use serde_json::Value;

use crate::chain::{
    CHECKPOINT, GENESIS, SUFFIX_LEN, checkpoint_message, checkpoint_message_v1, sha256,
};

/// One line, split into what its hash covers and what it says.
pub(crate) struct Line {
    pub(crate) seq: u64,
    pub(crate) kind: String,
    pub(crate) event: Value,
    pub(crate) prev: String,
    pub(crate) hash: String,
}

pub(crate) fn parse_line(line: &str) -> Result<Line, String> {
    if line.len() < SUFFIX_LEN + 2 || !line.is_char_boundary(line.len() - SUFFIX_LEN) {
        return Err("not an audit record (no hash at its end)".into());
    }
    let (body, suffix) = line.split_at(line.len() - SUFFIX_LEN);
    let hash = suffix
        .strip_prefix(",\"hash\":\"")
        .and_then(|s| s.strip_suffix("\"}"))
        .filter(|h| h.len() == 71 && h.starts_with("sha256:"))
        .ok_or("not an audit record (no hash at its end)")?;
    let covered = format!("{body}}}");
    if sha256(covered.as_bytes()) != hash {
        return Err("its content does not match its hash: the record was edited".into());
    }
    let value: Value = serde_json::from_str(&covered).map_err(|e| format!("not JSON: {e}"))?;
    Ok(Line {
        seq: value["seq"].as_u64().ok_or("no seq")?,
        kind: value["kind"].as_str().ok_or("no kind")?.to_string(),
        prev: value["prev"].as_str().ok_or("no prev")?.to_string(),
        event: value["event"].clone(),
        hash: hash.to_string(),
    })
}

/// What a log that verified holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// Records in the file.
    pub records: u64,
    /// Signed checkpoints among them.
    pub checkpoints: u64,
    /// The last record a signed checkpoint covers (0: none).
    pub signed_through: u64,
    /// The key ids that signed checkpoints.
    pub signers: Vec<String>,
    /// The hash of the last record: note it elsewhere to detect a later cut.
    pub head: String,
    /// The hash of the first record (which log this is; checkpoints name it).
    pub first: String,
    /// The hosts the checkpoints name, in order of appearance (an earlier version's
    /// checkpoints name none).
    pub hosts: Vec<String>,
    /// Checkpoints that name no host (written by an earlier version).
    pub unnamed_checkpoints: u64,
}

impl Verified {
    /// Records after the last checkpoint: chained, but not yet covered by a signature.
    pub fn unsigned_tail(&self) -> u64 {
        if self.checkpoints == 0 {
            self.records
        } else {
            // The checkpoint itself is record `signed_through + 1`.
            self.records - (self.signed_through + 1)
        }
    }
}

/// Why a log did not verify: the first broken line and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct Broken {
    /// 1-based line number.
    pub line: u64,
    /// What is wrong.
    pub why: String,
}

/// Verifies an audit log: every line's hash covers its content, sequence numbers run from 1
/// without gaps, each record names the previous one's hash, and every checkpoint is signed by
/// one of `keys` over the head it names. Returns the first break found.
pub fn verify(text: &[u8], keys: &greentic_signing::TrustedKeys) -> Result<Verified, Broken> {
    verify_reader(text, keys)
}

/// [`verify`] reading the log a line at a time (a log of any size verifies in little memory).
pub fn verify_reader(
    reader: impl std::io::BufRead,
    keys: &greentic_signing::TrustedKeys,
) -> Result<Verified, Broken> {
    let scan = scan(reader, keys)?;
    if !scan.torn.is_empty() {
        return Err(Broken {
            line: scan.verified.records + 1,
            why: "the last line is cut short (no newline): a write was interrupted, or the file was truncated".into(),
        });
    }
    Ok(scan.verified)
}

/// The longest line read; no record comes near it.
pub(crate) const MAX_LINE: u64 = 4 << 20;

/// What [`scan`] found: the verified complete lines, their length, and what follows the last
/// newline.
pub(crate) struct Scan {
    pub(crate) verified: Verified,
    pub(crate) complete: u64,
    pub(crate) torn: Vec<u8>,
}

/// Verifies every complete line of `reader` in order; bytes after the last newline are returned,
/// not judged.
pub(crate) fn scan(
    mut reader: impl std::io::BufRead,
    keys: &greentic_signing::TrustedKeys,
) -> Result<Scan, Broken> {
    let mut verified = Verified {
        records: 0,
        checkpoints: 0,
        signed_through: 0,
        signers: Vec::new(),
        head: GENESIS.to_string(),
        first: String::new(),
        hosts: Vec::new(),
        unnamed_checkpoints: 0,
    };
    let mut complete = 0u64;
    let mut raw = Vec::new();
    for n in 1u64.. {
        raw.clear();
        let broken = |why: String| Broken { line: n, why };
        let read = std::io::Read::take(&mut reader, MAX_LINE + 1)
            .read_until(b'\n', &mut raw)
            .map_err(|e| broken(format!("reading: {e}")))?;
        if read == 0 {
            break;
        }
        if raw.last() != Some(&b'\n') {
            if read as u64 > MAX_LINE {
                return Err(broken(format!(
                    "longer than {MAX_LINE} bytes: not an audit record"
                )));
            }
            return Ok(Scan {
                verified,
                complete,
                torn: std::mem::take(&mut raw),
            });
        }
        complete += read as u64;
        let line =
            std::str::from_utf8(&raw[..raw.len() - 1]).map_err(|_| broken("not UTF-8".into()))?;
        let record = parse_line(line).map_err(broken)?;
        let expected = verified.records + 1;
        if record.seq != expected {
            return Err(broken(format!(
                "record {} where {expected} was expected: records were removed, reordered or inserted",
                record.seq
            )));
        }
        if record.prev != verified.head {
            return Err(broken(format!(
                "its prev {} is not the hash of the record before it ({}): records were removed, reordered or inserted",
                record.prev, verified.head
            )));
        }
        if record.kind == CHECKPOINT {
            let covers = record.event["covers"].as_u64().unwrap_or(u64::MAX);
            let named = record.event["head"].as_str().unwrap_or("");
            if covers != record.seq - 1 || named != record.prev {
                return Err(broken(format!(
                    "checkpoint {} names record {covers} and head {named}, not the record before it",
                    record.seq
                )));
            }
            let signature = record.event["signature"]
                .as_str()
                .and_then(|s| B64.decode(s).ok())
                .ok_or_else(|| broken("a checkpoint without a signature".into()))?;
            let host = record.event["host"].as_str();
            let message = match host {
                Some(host) => {
                    let first = record.event["first"].as_str().unwrap_or("");
                    // The first record is this log's; a checkpoint naming another log's is
                    // not about this file.
                    let own_first = if verified.records == 0 {
                        record.prev.as_str()
                    } else {
                        verified.first.as_str()
                    };
                    if verified.records > 0 && first != own_first {
                        return Err(broken(format!(
                            "checkpoint {} names first record {first}, but this log's first record is {own_first}: it belongs to another log",
                            record.seq
                        )));
                    }
                    if !verified.hosts.iter().any(|h| h == host) {
                        verified.hosts.push(host.to_string());
                    }
                    checkpoint_message(host, first, covers, named)
                }
                None => {
                    verified.unnamed_checkpoints += 1;
                    checkpoint_message_v1(covers, named)
                }
            };
            let Some(signer) = keys.verifier(&message, &signature) else {
                return Err(broken(format!(
                    "checkpoint {} is not signed by a trusted key (key id {})",
                    record.seq,
                    record.event["key_id"].as_str().unwrap_or("?")
                )));
            };
            verified.checkpoints += 1;
            verified.signed_through = covers;
            if !verified.signers.contains(&signer) {
                verified.signers.push(signer);
            }
        }
        if record.seq == 1 {
            verified.first = record.hash.clone();
        }
        verified.records = record.seq;
        verified.head = record.hash;
    }
    Ok(Scan {
        verified,
        complete,
        torn: Vec::new(),
    })
}
