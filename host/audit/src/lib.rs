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

mod chain;
mod export;
mod verify;
mod writer;

pub use chain::{CHECKPOINT, Export, GENESIS, checkpoint_message, checkpoint_message_v1};
pub use export::{Exporting, OtlpExport};
pub use verify::{Broken, Verified, verify, verify_reader};

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::mpsc;
use std::time::Duration;

use chain::now_ms;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use writer::{Msg, Writer};

/// `[audit]`: where the audit log goes and the key its checkpoints are signed with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
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

#[cfg(test)]
mod tests {
    use super::chain::sha256;
    use super::verify::{MAX_LINE, parse_line};
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    use greentic_signing::{KeyPair, TrustedKeys};
    use std::io::Write;

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
