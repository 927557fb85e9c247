//! `greentic-host audit verify`: check an audit log's hash chain and signed checkpoints.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

/// Work with the audit log (`[audit]` in the bundle).
#[derive(Debug, Args)]
pub struct Audit {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    Verify(Verify),
}

impl Audit {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.what {
            What::Verify(cmd) => cmd.run(),
        }
    }
}

/// Verify an audit log: every record's hash covers its content, sequence numbers run without
/// gaps, each record names the previous one's hash, and every checkpoint is signed by a trusted
/// key and names this log's first record. Exits 1 naming the first broken line (a record
/// removed, reordered, inserted or edited, or a checkpoint not signed by a trusted key), and
/// exits 1 for a log that is empty or holds no signed checkpoint (nothing vouches for it)
/// unless --allow-unsigned. Records after the last checkpoint are chained but not yet signed;
/// with --signed-through-end they fail the check too. With --host, every checkpoint must name
/// that host. A file cut short still verifies: compare the printed head with one noted
/// earlier, or with the OTLP copy.
#[derive(Debug, Args)]
struct Verify {
    /// The audit log file.
    file: PathBuf,
    /// The public key the host signs checkpoints with (PEM, the `.pub` of the audit key);
    /// repeatable.
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// Also fail if records follow the last signed checkpoint (a log closed cleanly ends
    /// with one).
    #[arg(long)]
    signed_through_end: bool,
    /// The host whose log this must be: every checkpoint must name it (the `host` of its
    /// `[audit]`, or its host name).
    #[arg(long = "host", value_name = "ID")]
    host: Option<String>,
    /// Accept a log with no signed checkpoint (or no record at all): its chain is checked,
    /// but nothing signed vouches for it.
    #[arg(long)]
    allow_unsigned: bool,
}

impl Verify {
    fn run(self) -> anyhow::Result<ExitCode> {
        let keys = super::sign::trusted_keys(&self.keys)?;
        let file = std::fs::File::open(&self.file)
            .with_context(|| format!("reading {}", self.file.display()))?;
        match crate::audit::verify_reader(std::io::BufReader::new(file), &keys) {
            Ok(verified) => {
                let unsigned = if verified.records == 0 {
                    Some("it holds no record".to_string())
                } else if verified.checkpoints == 0 {
                    Some(format!(
                        "none of its {} record(s) is covered by a signed checkpoint",
                        verified.records
                    ))
                } else {
                    None
                };
                if let Some(why) = &unsigned
                    && !self.allow_unsigned
                {
                    eprintln!(
                        "{}: does not verify: {why}, so nothing vouches for it; a host writes a checkpoint every checkpoint_every records, every checkpoint_secs and when it stops (--allow-unsigned checks the chain alone)",
                        self.file.display()
                    );
                    return Ok(ExitCode::from(1));
                }
                if let Some(host) = &self.host {
                    let others: Vec<&String> =
                        verified.hosts.iter().filter(|h| *h != host).collect();
                    if !others.is_empty()
                        || verified.unnamed_checkpoints > 0
                        || verified.checkpoints == 0
                    {
                        eprintln!(
                            "{}: does not verify as host `{host}`'s log: {}",
                            self.file.display(),
                            if !others.is_empty() {
                                format!(
                                    "its checkpoints name host {}",
                                    others
                                        .iter()
                                        .map(|h| format!("`{h}`"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            } else if verified.unnamed_checkpoints > 0 {
                                format!(
                                    "{} checkpoint(s) name no host (written by an earlier version)",
                                    verified.unnamed_checkpoints
                                )
                            } else {
                                "no checkpoint names a host".into()
                            }
                        );
                        return Ok(ExitCode::from(1));
                    }
                }
                let tail = verified.unsigned_tail();
                outln!(
                    "{}: {} record(s) verified, {} signed checkpoint(s), signed through record {}; host {}; head {}",
                    self.file.display(),
                    verified.records,
                    verified.checkpoints,
                    verified.signed_through,
                    if verified.hosts.is_empty() {
                        "-".to_string()
                    } else {
                        verified.hosts.join(", ")
                    },
                    verified.head
                );
                if tail > 0 {
                    eprintln!(
                        "warning: the last {tail} record(s) follow the last signed checkpoint: chained, but not yet signed (the host signs every checkpoint_every records, every checkpoint_secs, and when it stops)"
                    );
                    if self.signed_through_end {
                        return Ok(ExitCode::from(1));
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(broken) => {
                eprintln!("{}: does not verify: {broken}", self.file.display());
                Ok(ExitCode::from(1))
            }
        }
    }
}
