//! The command line: one module per verb.

mod attest;
mod audit;
mod check;
mod conformance;
mod fleet;
mod inspect;
mod manifest;
mod new;
mod push;
mod reload;
mod run;
mod sign;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The greentic host: runs signed WebAssembly provider components for many tenants.
#[derive(Debug, Parser)]
#[command(name = "greentic-host", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(run::Run),
    Reload(reload::Reload),
    Check(check::Check),
    Inspect(inspect::Inspect),
    Manifest(manifest::Manifest),
    Token(token::Token),
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
        }
    }
}
