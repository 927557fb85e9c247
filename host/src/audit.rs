//! The audit log: every trust and load decision, every secret read and every admin action, as
//! an append-only hash chain with periodic signed checkpoints, written to a file and exported as
//! OTLP log records.
//!
//! Each record is one line of JSON:
//!
//! ```text
//! {"seq":7,"ts_ms":1764576000123,"kind":"secret.read","event":{…},"prev":"sha256:…","hash":"sha256:…"}
//! ```
//!
//! `hash` is the SHA-256 of the line's own bytes up to `,"hash"` (closed with `}`), and `prev`
//! is the previous record's `hash` (zeros for the first), so removing, reordering, inserting or
//! editing a record anywhere but at the very end breaks the chain; a file cut short is seen
//! only against a copy kept elsewhere (the OTLP export, or a head noted from `verify`). Every `checkpoint_every` records, every `checkpoint_secs`
//! when something was written, and when the host stops, an `audit.checkpoint` record signs the
//! head of the chain (its `prev`) with the host's audit key (ECDSA P-256, the cosign key
//! format): rewriting the chain after an edit needs that key. `greentic-host audit verify FILE
//! --key audit.pub` checks all of it ([`verify`]).
//!
//! Records are written by one thread in the order [`record`] was called, in batches (a record
//! reaches the file about a millisecond after it is made); callers never wait for the disk. A
//! secret read records the tenant, provider, secret name and result — never the value.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// `[audit]`: where the audit log goes and the key its checkpoints are signed with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// The log file (relative to the bundle); appended to, created `0600` if missing.
    pub file: PathBuf,
    /// The private key checkpoints are signed with (cosign's encrypted format, from
    /// `greentic-host keygen`), relative to the bundle.
    pub key_file: PathBuf,
    /// The environment variable holding the key's password.
    #[serde(default = "default_password_env")]
    pub password_env: String,
    /// A checkpoint after this many records.
    #[serde(default = "default_every")]
    pub checkpoint_every: u64,
    /// A checkpoint this many seconds after the last one, if anything was written since.
    #[serde(default = "default_secs")]
    pub checkpoint_secs: u64,
    /// The host id checkpoints name (default: `--host-id` if given, else the machine's host
    /// name), so another host's log signed with the same key does not verify as this one's
    /// (`audit verify --host ID`). Keep it stable across restarts.
    #[serde(default)]
    pub host: Option<String>,
}

fn default_password_env() -> String {
    "GREENTIC_AUDIT_KEY_PASSWORD".into()
}

fn default_every() -> u64 {
    256
}

fn default_secs() -> u64 {
    30
}

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

/// The id an audit log's checkpoints name by default: the machine's host name (`$HOSTNAME`,
/// else `/etc/hostname`), stable across restarts.
pub fn default_host_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "host".into())
}

/// How long the writer lets records gather after the first of a batch arrives.
const BATCH_WAIT: Duration = Duration::from_millis(1);

/// The length of `,"hash":"sha256:<64 hex>"}` at the end of every line.
const SUFFIX_LEN: usize = ",\"hash\":\"sha256:".len() + 64 + "\"}".len();

enum Msg {
    Record {
        kind: String,
        event: Value,
        at_ms: u64,
    },
    Stop(mpsc::Sender<()>),
}

static SINK: RwLock<Option<mpsc::Sender<Msg>>> = RwLock::new(None);
/// Whether [`SINK`] is set, read without the lock: callers on a call's path skip building a
/// record nobody keeps.
static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Appends a record of `kind` (e.g. `secret.read`) with `event`'s fields to the audit log, if
/// this process keeps one. Never blocks on the disk.
pub fn record(kind: &str, event: Value) {
    let sink = SINK.read().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = sink.as_ref() {
        let _ = tx.send(Msg::Record {
            kind: kind.to_string(),
            event,
            at_ms: now_ms(),
        });
    }
}

/// Whether this process keeps an audit log.
pub fn enabled() -> bool {
    ENABLED.load(std::sync::atomic::Ordering::Relaxed)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Where records are exported besides the file.
pub trait Export: Send {
    /// Exports one written record.
    fn export(&mut self, seq: u64, kind: &str, event: &Value, hash: &str, prev: &str);
}

/// The running audit log; stopping it (drop) writes a final checkpoint and syncs the file.
pub struct AuditLog {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AuditLog {
    /// Opens (or creates) the log `section` names, relative to `dir`, continuing its chain, and
    /// makes [`record`] write to it. Fails if the key cannot be read or the file opened.
    pub fn start(
        section: &AuditSection,
        dir: &Path,
        host: &str,
        export: Option<Box<dyn Export>>,
    ) -> anyhow::Result<AuditLog> {
        let key_path = dir.join(&section.key_file);
        let pem = std::fs::read_to_string(&key_path)
            .map_err(|e| anyhow::anyhow!("[audit] key_file {}: {e}", key_path.display()))?;
        let password = std::env::var(&section.password_env).map_err(|_| {
            anyhow::anyhow!(
                "[audit] the password of {} is read from ${}, which is not set",
                key_path.display(),
                section.password_env
            )
        })?;
        let key = greentic_signing::KeyPair::from_encrypted_pem(&pem, password.as_bytes())
            .map_err(|e| anyhow::anyhow!("[audit] key_file {}: {e}", key_path.display()))?;
        AuditLog::with_key(
            &dir.join(&section.file),
            key,
            section.host.as_deref().unwrap_or(host),
            section.checkpoint_every,
            Duration::from_secs(section.checkpoint_secs),
            export,
        )
    }

    /// Opens (or creates) the log at `path`, signing checkpoints with `key` every `every`
    /// records and every `period` when something was written, and makes [`record`] write to
    /// it.
    pub fn with_key(
        path: &Path,
        key: greentic_signing::KeyPair,
        host: &str,
        every: u64,
        period: Duration,
        export: Option<Box<dyn Export>>,
    ) -> anyhow::Result<AuditLog> {
        let path = path.to_path_buf();
        let (mut writer, inherited_unsigned) = Writer::open(&path, key, host, export)?;
        let every = every.max(1);
        let period = period.max(Duration::from_millis(1));
        let (tx, rx) = mpsc::channel();
        writer.write(
            "audit.opened",
            json!({
                "file": path.display().to_string(),
                "host_version": env!("CARGO_PKG_VERSION"),
                "pid": std::process::id(),
                "key_id": writer.key.key_id(),
                "host": writer.host,
                // Records the last run wrote after its last checkpoint (it stopped without one):
                // the next checkpoint signs them as found.
                "inherited_unsigned": inherited_unsigned,
            }),
            now_ms(),
        )?;
        writer.flush()?;
        let thread = std::thread::Builder::new()
            .name("greentic-audit".into())
            .spawn(move || writer.run(rx, every, period))?;
        *SINK.write().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        ENABLED.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(AuditLog {
            thread: Some(thread),
        })
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        ENABLED.store(false, std::sync::atomic::Ordering::Relaxed);
        let tx = SINK.write().unwrap_or_else(|e| e.into_inner()).take();
        let mut stopped = false;
        if let Some(tx) = tx {
            let (done, wait) = mpsc::channel();
            if tx.send(Msg::Stop(done)).is_ok() {
                stopped = wait.recv_timeout(Duration::from_secs(10)).is_ok();
            }
        }
        // A writer stuck on the disk past the timeout is left behind rather than waited for.
        if let Some(thread) = self.thread.take()
            && (stopped || thread.is_finished())
        {
            let _ = thread.join();
        }
    }
}

/// A record formatted but not yet on disk.
struct Pending {
    seq: u64,
    kind: String,
    event: Value,
    hash: String,
    prev: String,
}

struct Writer {
    file: std::fs::File,
    path: PathBuf,
    key: greentic_signing::KeyPair,
    /// The host its checkpoints name.
    host: String,
    /// The hash of the log's first record, once there is one.
    first: Option<String>,
    export: Option<Box<dyn Export>>,
    /// The file's length up to the last record known to be written whole.
    good_len: u64,
    /// Sequence number and hash of the last record on disk.
    seq: u64,
    head: String,
    /// Lines formatted since the last write, and what they are.
    buffer: Vec<u8>,
    pending: Vec<Pending>,
    /// Records lost to failed writes, reported in the next record that reaches the file.
    lost: u64,
    since_checkpoint: u64,
    /// When the oldest record not yet covered by a checkpoint was made.
    oldest_unsigned: Option<Instant>,
}

impl Writer {
    /// Opens `path` for appending, holding an exclusive lock on it for as long as the writer
    /// lives, and continues its chain after checking it with `key`: a file that does not verify
    /// is refused. A last line cut short (a write interrupted by a crash) is cut off and
    /// recorded; records the previous run left after its last checkpoint are counted in
    /// `audit.opened`.
    fn open(
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
    fn write(&mut self, kind: &str, event: Value, at_ms: u64) -> anyhow::Result<()> {
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
    fn flush(&mut self) -> anyhow::Result<()> {
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
    fn checkpoint(&mut self) -> anyhow::Result<()> {
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

    fn run(mut self, rx: mpsc::Receiver<Msg>, every: u64, period: Duration) {
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

/// One line, split into what its hash covers and what it says.
struct Line {
    seq: u64,
    kind: String,
    event: Value,
    prev: String,
    hash: String,
}

fn parse_line(line: &str) -> Result<Line, String> {
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
const MAX_LINE: u64 = 4 << 20;

/// What [`scan`] found: the verified complete lines, their length, and what follows the last
/// newline.
struct Scan {
    verified: Verified,
    complete: u64,
    torn: Vec<u8>,
}

/// Verifies every complete line of `reader` in order; bytes after the last newline are returned,
/// not judged.
fn scan(
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

/// An [`Export`] as OTLP log records (body: the kind; attributes: seq, hash, prev and the
/// event's fields as `event.<name>`).
pub struct OtlpExport {
    logger: opentelemetry_sdk::logs::SdkLogger,
}

impl OtlpExport {
    /// Exports through `provider`.
    pub fn new(provider: &opentelemetry_sdk::logs::SdkLoggerProvider) -> OtlpExport {
        use opentelemetry::logs::LoggerProvider as _;
        OtlpExport {
            logger: provider.logger("greentic-audit"),
        }
    }
}

impl Export for OtlpExport {
    fn export(&mut self, seq: u64, kind: &str, event: &Value, hash: &str, prev: &str) {
        use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
        let mut record = self.logger.create_log_record();
        record.set_event_name("greentic.audit");
        record.set_severity_number(Severity::Info);
        record.set_severity_text("INFO");
        record.set_body(AnyValue::from(kind.to_string()));
        record.add_attribute("audit.seq", seq as i64);
        record.add_attribute("audit.kind", kind.to_string());
        record.add_attribute("audit.hash", hash.to_string());
        record.add_attribute("audit.prev", prev.to_string());
        if let Some(fields) = event.as_object() {
            for (name, value) in fields {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                record.add_attribute(format!("event.{name}"), text);
            }
        }
        self.logger.emit(record);
    }
}

/// Keeps the OTLP logger provider alive (and flushes it) for as long as the audit log runs.
pub struct Exporting {
    /// The provider.
    pub provider: Option<Arc<opentelemetry_sdk::logs::SdkLoggerProvider>>,
}

impl Drop for Exporting {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use greentic_signing::{KeyPair, TrustedKeys};

    fn log(key: KeyPair, records: &[(&str, Value)], checkpoint_every: u64) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (mut w, _) = Writer::open(&path, key, "h1", None).unwrap();
        for (kind, event) in records {
            w.write(kind, event.clone(), 1).unwrap();
            if w.since_checkpoint >= checkpoint_every {
                w.checkpoint().unwrap();
            }
        }
        w.checkpoint().unwrap();
        drop(w);
        std::fs::read(&path).unwrap()
    }

    fn lines(text: &[u8]) -> Vec<String> {
        String::from_utf8(text.to_vec())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn join(lines: &[String]) -> Vec<u8> {
        let mut s = lines.join("\n");
        s.push('\n');
        s.into_bytes()
    }

    fn ten() -> Vec<(&'static str, Value)> {
        (0..10)
            .map(|i| {
                (
                    "secret.read",
                    json!({"tenant": "acme", "name": format!("S{i}")}),
                )
            })
            .collect()
    }

    #[test]
    fn a_log_verifies_and_every_kind_of_tampering_is_found() {
        let key = KeyPair::generate();
        let trusted = TrustedKeys::from_pems(&[key.public_pem()]).unwrap();
        let text = log(key, &ten(), 4);
        let ok = verify(&text, &trusted).unwrap();
        assert_eq!(ok.records, 13, "10 records and 3 checkpoints");
        assert_eq!(ok.checkpoints, 3);
        assert_eq!(ok.unsigned_tail(), 0);
        let original = lines(&text);

        // Removed.
        let mut removed = original.clone();
        removed.remove(2);
        let err = verify(&join(&removed), &trusted).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.why.contains("removed, reordered or inserted"), "{err}");
        // Reordered.
        let mut reordered = original.clone();
        reordered.swap(1, 2);
        assert_eq!(verify(&join(&reordered), &trusted).unwrap_err().line, 2);
        // Edited in place.
        let mut edited = original.clone();
        edited[3] = edited[3].replace("S3", "S9");
        let err = verify(&join(&edited), &trusted).unwrap_err();
        assert_eq!(err.line, 4);
        assert!(err.why.contains("edited"), "{err}");
        // Edited, and the chain after it rewritten by someone without the key.
        let forger = KeyPair::generate();
        let mut forged = original.clone();
        let mut head = parse_line(&forged[2]).unwrap().hash;
        for line in forged.iter_mut().skip(3) {
            let parsed = parse_line(line).unwrap();
            let mut event = parsed.event.clone();
            if parsed.kind == CHECKPOINT {
                event["head"] = json!(head);
                let first = event["first"].as_str().unwrap_or("").to_string();
                event["signature"] = json!(B64.encode(forger.sign(&checkpoint_message(
                    "h1",
                    &first,
                    parsed.seq - 1,
                    &head
                ))));
            } else if event["name"] == "S3" {
                event["name"] = json!("S9");
            }
            let body = serde_json::to_string(&json!({
                "seq": parsed.seq, "ts_ms": 1, "kind": parsed.kind, "event": event, "prev": head,
            }))
            .unwrap();
            let hash = sha256(body.as_bytes());
            *line = format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]);
            head = hash;
        }
        let err = verify(&join(&forged), &trusted).unwrap_err();
        assert!(err.why.contains("not signed by a trusted key"), "{err}");
        // Cut short.
        let mut cut = text.clone();
        cut.truncate(cut.len() - 5);
        assert!(
            verify(&cut, &trusted)
                .unwrap_err()
                .why
                .contains("cut short")
        );
        // Another key.
        let other = TrustedKeys::from_pems(&[KeyPair::generate().public_pem()]).unwrap();
        assert!(verify(&text, &other).is_err());
        // A line no record comes near is refused without being held whole.
        let mut huge = text.clone();
        huge.extend(std::iter::repeat_n(b'x', (MAX_LINE + 10) as usize));
        huge.push(b'\n');
        let err = verify(&huge, &trusted).unwrap_err();
        assert_eq!(err.line, 14);
        assert!(err.why.contains("longer than"), "{err}");
    }

    #[test]
    fn checkpoints_name_the_host_and_the_log_they_belong_to() {
        let key = KeyPair::generate();
        let trusted = TrustedKeys::from_pems(&[key.public_pem()]).unwrap();
        let text = log(key, &ten(), 4);
        let ok = verify(&text, &trusted).unwrap();
        assert_eq!(ok.hosts, ["h1"]);
        assert_eq!(ok.unnamed_checkpoints, 0);
        assert_eq!(ok.first, parse_line(&lines(&text)[0]).unwrap().hash);
        // A checkpoint that names another log's first record is refused, even when the key
        // signed it: it is about another file.
        let key = KeyPair::generate();
        let pem = key.to_encrypted_pem(b"pw").unwrap();
        let trusted = TrustedKeys::from_pems(&[key.public_pem()]).unwrap();
        let text = log(key, &ten(), 100);
        let signer = KeyPair::from_encrypted_pem(&pem, b"pw").unwrap();
        let mut all = lines(&text);
        let last = all.len() - 1;
        let parsed = parse_line(&all[last]).unwrap();
        let mut event = parsed.event.clone();
        let other_first = sha256(b"another log");
        event["first"] = json!(other_first);
        event["signature"] = json!(B64.encode(signer.sign(&checkpoint_message(
            "h1",
            &other_first,
            parsed.seq - 1,
            &parsed.prev
        ))));
        let body = serde_json::to_string(&json!({
            "seq": parsed.seq, "ts_ms": 1, "kind": parsed.kind, "event": event, "prev": parsed.prev,
        }))
        .unwrap();
        let hash = sha256(body.as_bytes());
        all[last] = format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]);
        let err = verify(&join(&all), &trusted).unwrap_err();
        assert!(err.why.contains("belongs to another log"), "{err}");
    }

    #[test]
    fn reopening_continues_the_chain_and_records_a_torn_tail() {
        let key_pem = KeyPair::generate();
        let trusted = TrustedKeys::from_pems(&[key_pem.public_pem()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (mut w, _) = Writer::open(&path, key_pem, "h1", None).unwrap();
        w.write("a", json!({}), 1).unwrap();
        w.checkpoint().unwrap();
        let key = std::mem::replace(&mut w.key, KeyPair::generate());
        drop(w);
        // A crash mid-write leaves half a line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"seq\":3,\"ts_").unwrap();
        drop(f);
        assert!(verify(&std::fs::read(&path).unwrap(), &trusted).is_err());
        let (mut w, unsigned) = Writer::open(&path, key, "h1", None).unwrap();
        assert_eq!(unsigned, 0);
        // One writer per file: a second process (or host) is refused.
        let err = Writer::open(&path, KeyPair::generate(), "h1", None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("another process"), "{err}");
        w.write("b", json!({}), 2).unwrap();
        w.checkpoint().unwrap();
        let key = std::mem::replace(&mut w.key, KeyPair::generate());
        drop(w);
        let text = std::fs::read(&path).unwrap();
        let ok = verify(&text, &trusted).unwrap();
        assert_eq!(ok.records, 5);
        let all = lines(&text);
        assert!(
            all[2].contains("\"kind\":\"audit.torn_tail\""),
            "{}",
            all[2]
        );
        assert!(all[2].contains("\"bytes\":13"), "{}", all[2]);

        // A file edited while no host held it is not continued (nor signed over).
        let mut edited = all.clone();
        edited[0] = edited[0].replace("\"kind\":\"a\"", "\"kind\":\"x\"");
        std::fs::write(&path, join(&edited)).unwrap();
        let err = Writer::open(&path, key, "h1", None).err().unwrap();
        assert!(err.to_string().contains("does not verify"), "{err}");
        // Neither is one signed with another key (a new key starts a new file).
        std::fs::write(&path, &text).unwrap();
        let err = Writer::open(&path, KeyPair::generate(), "h1", None)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("not signed by a trusted key"),
            "{err}"
        );
    }

    #[test]
    fn a_failed_write_leaves_no_fragment_and_is_reported() {
        let key = KeyPair::generate();
        let trusted = TrustedKeys::from_pems(&[key.public_pem()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (mut w, _) = Writer::open(&path, key, "h1", None).unwrap();
        w.write("a", json!({}), 1).unwrap();
        w.flush().unwrap();
        // The next batch fails: the file is swapped for one opened read-only.
        let good = std::mem::replace(
            &mut w.file,
            std::fs::OpenOptions::new().read(true).open(&path).unwrap(),
        );
        w.write("b", json!({"big": "x".repeat(10_000)}), 2).unwrap();
        assert!(w.flush().is_err());
        assert_eq!(w.lost, 1);
        w.file = good;
        w.write("c", json!({}), 3).unwrap();
        w.checkpoint().unwrap();
        drop(w);
        let text = std::fs::read(&path).unwrap();
        let ok = verify(&text, &trusted).unwrap();
        let all = lines(&text);
        assert_eq!(ok.records, 4, "{all:?}");
        assert!(all[1].contains("\"kind\":\"c\""), "{}", all[1]);
        assert!(
            all[2].contains("\"kind\":\"audit.records_lost\"") && all[2].contains("\"records\":1"),
            "{}",
            all[2]
        );
    }
}
