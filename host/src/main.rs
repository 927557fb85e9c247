//! `greentic-host`: runs and inspects greentic provider components.

use clap::Parser;
use greentic_host::cli;

fn main() -> std::process::ExitCode {
    greentic_engine::process::quiet_library_backtraces();
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", cli::describe(&e));
            std::process::ExitCode::from(1)
        }
    }
}
