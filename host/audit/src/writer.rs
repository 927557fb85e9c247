//! The writer: one thread appending records in batches, signing checkpoints, and cutting the
//! file back to its last whole record when a write fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::chain::{BATCH_WAIT, CHECKPOINT, Export, checkpoint_message, now_ms, sha256};
use crate::verify::{Scan, scan};

/// What the writer thread is sent.
pub(crate) enum Msg {
    Record {
        kind: String,
        event: Value,
        at_ms: u64,
    },
    Stop(mpsc::Sender<()>),
}

/// A record formatted but not yet on disk.
pub(crate) struct Pending {
    seq: u64,
    kind: String,
    event: Value,
    hash: String,
    prev: String,
}

pub(crate) struct Writer {
    pub(crate) file: std::fs::File,
    pub(crate) path: PathBuf,
    pub(crate) key: greentic_signing::KeyPair,
    /// The host its checkpoints name.
    pub(crate) host: String,
    /// The hash of the log's first record, once there is one.
    pub(crate) first: Option<String>,
    pub(crate) export: Option<Box<dyn Export>>,
    /// The file's length up to the last record known to be written whole.
    pub(crate) good_len: u64,
    /// Sequence number and hash of the last record on disk.
    pub(crate) seq: u64,
    pub(crate) head: String,
    /// Lines formatted since the last write, and what they are.
    pub(crate) buffer: Vec<u8>,
    pub(crate) pending: Vec<Pending>,
    /// Records lost to failed writes, reported in the next record that reaches the file.
    pub(crate) lost: u64,
    pub(crate) since_checkpoint: u64,
    /// When the oldest record not yet covered by a checkpoint was made.
    pub(crate) oldest_unsigned: Option<Instant>,
}

impl Writer {
    /// Opens `path` for appending, holding an exclusive lock on it for as long as the writer
    /// lives, and continues its chain after checking it with `key`: a file that does not verify
    /// is refused. A last line cut short (a write interrupted by a crash) is cut off and
    /// recorded; records the previous run left after its last checkpoint are counted in
    /// `audit.opened`.
    pub(crate) fn open(
        path: &Path,
        key: greentic_signing::KeyPair,
        host: &str,
        export: Option<Box<dyn Export>>,
    ) -> anyhow::Result<(Writer, u64)> {
        let io = |e: std::io::Error| anyhow::anyhow!("[audit] {}: {e}", path.display());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path).map_err(io)?;
        if let Err(e) = file.try_lock() {
            anyhow::bail!(
                "[audit] {}: another process is writing this audit log ({e}); give each host its own file",
                path.display()
            );
        }
        let own = greentic_signing::TrustedKeys::from_pems(&[key.public_pem()])?;
        let Scan {
            verified: found,
            complete,
            torn,
        } = scan(std::io::BufReader::new(&file), &own).map_err(|broken| {
            anyhow::anyhow!(
                "[audit] {} does not verify with the audit key ({broken}); keep it as evidence, move it aside, and start a new file (a new key also starts a new file)",
                path.display()
            )
        })?;
        let (seq, head) = (found.records, found.head.clone());
        if !torn.is_empty() {
            file.set_len(complete).map_err(io)?;
        }
        let first = (found.records > 0).then(|| found.first.clone());
        let mut writer = Writer {
            file,
            path: path.to_path_buf(),
            key,
            host: host.to_string(),
            first,
            export,
            good_len: complete,
            seq,
            head,
            buffer: Vec::new(),
            pending: Vec::new(),
            lost: 0,
            since_checkpoint: 0,
            oldest_unsigned: None,
        };
        if !torn.is_empty() {
            writer.write(
                "audit.torn_tail",
                json!({ "bytes": torn.len(), "sha256": sha256(&torn) }),
                now_ms(),
            )?;
        }
        Ok((writer, found.unsigned_tail()))
    }

    /// Formats a record after the last one (on disk or pending).
    pub(crate) fn write(&mut self, kind: &str, event: Value, at_ms: u64) -> anyhow::Result<()> {
        let (last_seq, prev) = match self.pending.last() {
            Some(p) => (p.seq, p.hash.clone()),
            None => (self.seq, self.head.clone()),
        };
        let seq = last_seq
            .checked_add(1)
            .ok_or_else(|| anyhow::anyhow!("[audit] the sequence number is exhausted"))?;
        let body = serde_json::to_string(&json!({
            "seq": seq,
            "ts_ms": at_ms,
            "kind": kind,
            "event": event,
            "prev": prev,
        }))?;
        let hash = sha256(body.as_bytes());
        if seq == 1 {
            self.first = Some(hash.clone());
        }
        self.buffer.extend_from_slice(
            format!("{},\"hash\":\"{hash}\"}}\n", &body[..body.len() - 1]).as_bytes(),
        );
        self.pending.push(Pending {
            seq,
            kind: kind.to_string(),
            event,
            hash,
            prev,
        });
        self.since_checkpoint += 1;
        self.oldest_unsigned.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Writes the formatted records in one go. If that fails, the file is cut back to its last
    /// whole record and the batch is dropped (counted, and reported by the next record that
    /// reaches the file), so the file never holds a fragment in its middle.
    pub(crate) fn flush(&mut self) -> anyhow::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        match self.file.write_all(&self.buffer) {
            Ok(()) => {
                self.good_len += self.buffer.len() as u64;
                self.buffer.clear();
                for p in std::mem::take(&mut self.pending) {
                    if let Some(export) = &mut self.export {
                        export.export(p.seq, &p.kind, &p.event, &p.hash, &p.prev);
                    }
                    self.seq = p.seq;
                    self.head = p.hash;
                }
                if self.lost > 0 {
                    let lost = std::mem::take(&mut self.lost);
                    self.write("audit.records_lost", json!({ "records": lost }), now_ms())?;
                    return self.flush();
                }
                Ok(())
            }
            Err(e) => {
                let dropped = self.pending.len() as u64;
                self.lost += dropped;
                self.since_checkpoint = self.since_checkpoint.saturating_sub(dropped);
                self.buffer.clear();
                self.pending.clear();
                let _ = self.file.set_len(self.good_len);
                Err(anyhow::anyhow!(
                    "[audit] writing {}: {e}; {dropped} record(s) dropped, the file cut back to its last whole record",
                    self.path.display()
                ))
            }
        }
    }

    /// Signs the head of the chain, writes the checkpoint, and syncs the file.
    pub(crate) fn checkpoint(&mut self) -> anyhow::Result<()> {
        self.flush()?;
        let first = self.first.clone().unwrap_or_else(|| self.head.clone());
        let signature = B64.encode(self.key.sign(&checkpoint_message(
            &self.host, &first, self.seq, &self.head,
        )));
        let event = json!({
            "covers": self.seq,
            "head": self.head,
            "host": self.host,
            "first": first,
            "key_id": self.key.key_id(),
            "signature": signature,
        });
        self.write(CHECKPOINT, event, now_ms())?;
        self.flush()?;
        self.file
            .sync_data()
            .map_err(|e| anyhow::anyhow!("[audit] syncing {}: {e}", self.path.display()))?;
        self.since_checkpoint = 0;
        self.oldest_unsigned = None;
        Ok(())
    }

    pub(crate) fn run(mut self, rx: mpsc::Receiver<Msg>, every: u64, period: Duration) {
        let failed =
            |e: anyhow::Error| tracing::error!(error = %e, "the audit log could not be written");
        loop {
            // Nothing unsigned: wait for a record as long as it takes. Otherwise only until the
            // oldest unsigned record is `period` old.
            let first = match self.oldest_unsigned {
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(oldest) => rx.recv_timeout(period.saturating_sub(oldest.elapsed())),
            };
            let first = match first {
                Ok(msg) => Some(msg),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if self.since_checkpoint > 0
                        && let Err(e) = self.checkpoint()
                    {
                        failed(e);
                    }
                    return;
                }
            };
            if first.is_some() {
                // Let a batch gather: one write and no wake-up per record while calls keep
                // coming (a record reaches the file within about a millisecond).
                std::thread::sleep(BATCH_WAIT);
            }
            let mut stop = None;
            for msg in first
                .into_iter()
                .chain(std::iter::from_fn(|| rx.try_recv().ok()))
            {
                match msg {
                    Msg::Record { kind, event, at_ms } => {
                        if let Err(e) = self.write(&kind, event, at_ms) {
                            failed(e);
                        }
                        if self.since_checkpoint >= every
                            && let Err(e) = self.checkpoint()
                        {
                            failed(e);
                        }
                    }
                    Msg::Stop(done) => {
                        stop = Some(done);
                        break;
                    }
                }
            }
            if let Err(e) = self.flush() {
                failed(e);
            }
            if let Some(done) = stop {
                let closed = self
                    .write(
                        "audit.closed",
                        json!({ "last_seq": self.seq.saturating_add(1) }),
                        now_ms(),
                    )
                    .and_then(|()| self.checkpoint());
                if let Err(e) = closed {
                    failed(e);
                }
                let _ = done.send(());
                return;
            }
            if self
                .oldest_unsigned
                .is_some_and(|oldest| oldest.elapsed() >= period)
                && let Err(e) = self.checkpoint()
            {
                failed(e);
            }
        }
    }
}
