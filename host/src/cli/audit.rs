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
/// key. Exits 1 naming the first broken line (a record removed, reordered, inserted or edited,
/// or a checkpoint not signed by a trusted key). Records after the last checkpoint are chained
/// but not yet signed; with --signed-through-end they fail the check too. A file cut short
/// still verifies: compare the printed head with one noted earlier, or with the OTLP copy.
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
}

impl Verify {
    fn run(self) -> anyhow::Result<ExitCode> {
        let keys = super::sign::trusted_keys(&self.keys)?;
        let file = std::fs::File::open(&self.file)
            .with_context(|| format!("reading {}", self.file.display()))?;
        match greentic_host::audit::verify_reader(std::io::BufReader::new(file), &keys) {
            Ok(verified) => {
                let tail = verified.unsigned_tail();
                println!(
                    "{}: {} record(s) verified, {} signed checkpoint(s), signed through record {}; head {}",
                    self.file.display(),
                    verified.records,
                    verified.checkpoints,
                    verified.signed_through,
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
