//! The command line: one module per verb.

mod inspect;
mod manifest;

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
    Inspect(inspect::Inspect),
    Manifest(manifest::Manifest),
}

impl Cli {
    /// Runs the chosen verb.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Inspect(cmd) => cmd.run(),
            Command::Manifest(cmd) => cmd.run(),
        }
    }
}
