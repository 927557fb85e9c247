//! The command line: one module per verb.

/// Writes a line to stdout. A reader that went away (`greentic-host inspect --json X | head`)
/// ends the program quietly with status 0, as a Unix filter does, instead of a panic.
macro_rules! outln {
    () => {
        $crate::cli::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// [`outln!`] without the line break.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!($($arg)*))
    };
}

mod attest;
mod audit;
mod check;
mod conformance;
mod dev_ca;
mod fleet;
mod inspect;
mod manifest;
mod new;
mod push;
mod reload;
mod run;
mod sign;
mod token;
mod version;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The greentic host: runs signed WebAssembly provider components for many tenants.
#[derive(Debug, Parser)]
#[command(name = "greentic-host", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
enum Command {
    Run(run::Run),
    Reload(reload::Reload),
    Check(check::Check),
    Inspect(inspect::Inspect),
    Manifest(manifest::Manifest),
    Token(token::Token),
    DevCa(dev_ca::DevCaCommand),
    Push(push::Push),
    Pull(push::Pull),
    Keygen(sign::Keygen),
    Sign(sign::Sign),
    Verify(sign::Verify),
    Attest(attest::Attest),
    VerifyAttestation(attest::VerifyAttestation),
    Conformance(conformance::Conformance),
    Publish(fleet::Publish),
    Fleet(fleet::FleetCommand),
    New(new::New),
    Audit(audit::Audit),
    Version(version::Version),
    Completions(version::Completions),
    Man(version::Man),
}

impl Cli {
    /// Runs the chosen verb.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Run(cmd) => cmd.run(),
            Command::Reload(cmd) => cmd.run(),
            Command::Check(cmd) => cmd.run(),
            Command::Inspect(cmd) => cmd.run(),
            Command::Manifest(cmd) => cmd.run(),
            Command::Token(cmd) => cmd.run(),
            Command::DevCa(cmd) => cmd.run(),
            Command::Push(cmd) => cmd.run(),
            Command::Pull(cmd) => cmd.run(),
            Command::Keygen(cmd) => cmd.run(),
            Command::Sign(cmd) => cmd.run(),
            Command::Verify(cmd) => cmd.run(),
            Command::Attest(cmd) => cmd.run(),
            Command::VerifyAttestation(cmd) => cmd.run(),
            Command::Conformance(cmd) => cmd.run(),
            Command::Publish(cmd) => cmd.run(),
            Command::Fleet(cmd) => cmd.run(),
            Command::New(cmd) => cmd.run(),
            Command::Audit(cmd) => cmd.run(),
            Command::Version(cmd) => cmd.run(),
            Command::Completions(cmd) => cmd.run(),
            Command::Man(cmd) => cmd.run(),
        }
    }
}

/// What [`outln!`] and [`out!`] write with.
pub fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_fmt(args).and_then(|()| stdout.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: writing to stdout: {e}");
            std::process::exit(1);
        }
    }
}

/// `e` and its causes, each said once: a cause whose words its parent already quotes (`reading
/// X: No such file or directory` caused by `No such file or directory`) is not repeated.
pub fn describe(e: &anyhow::Error) -> String {
    let mut said = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if said.contains(&text) {
            continue;
        }
        if !said.is_empty() {
            said.push_str(": ");
        }
        said.push_str(&text);
    }
    said
}
