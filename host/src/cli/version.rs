//! `greentic-host version`, `completions SHELL` and `man`: what this build is, and the CLI's
//! shell completions and manual page, generated from the same definitions the parser uses.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory};
use greentic_interfaces::Contracts;

/// Print this build's version, its commit, the Wasmtime it runs components on, the WIT
/// packages and worlds it implements and the native providers compiled into it.
#[derive(Debug, Args)]
pub struct Version {
    /// Print it as JSON.
    #[arg(long)]
    json: bool,
}

impl Version {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let contracts = Contracts::embedded().map_err(|e| anyhow::anyhow!("{e}"))?;
        let worlds = contracts.worlds();
        // `greentic:messaging/provider@1.0.0` is world `provider` of package
        // `greentic:messaging@1.0.0`.
        let mut packages: Vec<String> = worlds
            .iter()
            .map(|w| match (w.split_once('/'), w.rsplit_once('@')) {
                (Some((package, _)), Some((_, version))) => format!("{package}@{version}"),
                _ => w.clone(),
            })
            .collect();
        packages.dedup();
        let natives = crate::native_providers();
        if self.json {
            outln!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "version": env!("CARGO_PKG_VERSION"),
                    "commit": env!("GREENTIC_COMMIT"),
                    "wasmtime": env!("GREENTIC_WASMTIME_VERSION"),
                    "wit_packages": packages,
                    "worlds": worlds,
                    "native_providers": natives,
                }))?
            );
        } else {
            outln!(
                "greentic-host {} (commit {})",
                env!("CARGO_PKG_VERSION"),
                env!("GREENTIC_COMMIT")
            );
            outln!("wasmtime {}", env!("GREENTIC_WASMTIME_VERSION"));
            outln!("WIT packages: {}", packages.join(", "));
            outln!("worlds: {}", worlds.join(", "));
            outln!(
                "native providers: {}",
                if natives.is_empty() {
                    "none".to_string()
                } else {
                    natives.join(", ")
                }
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Print a shell completion script: `greentic-host completions bash > /etc/bash_completion.d/greentic-host`
/// (or `zsh`, `fish`, `elvish`, `powershell`).
#[derive(Debug, Args)]
pub struct Completions {
    /// The shell.
    shell: clap_complete::Shell,
}

impl Completions {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let mut command = super::Cli::command();
        let mut script = Vec::new();
        clap_complete::generate(self.shell, &mut command, "greentic-host", &mut script);
        out!("{}", String::from_utf8_lossy(&script));
        Ok(ExitCode::SUCCESS)
    }
}

/// Write the manual page (roff): to stdout, or with `--out DIR` one page per command
/// (`greentic-host.1`, `greentic-host-run.1`, …).
#[derive(Debug, Args)]
pub struct Man {
    /// A directory to write every command's page to.
    #[arg(long)]
    out: Option<PathBuf>,
}

impl Man {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let command = super::Cli::command();
        match self.out {
            Some(dir) => {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                clap_mangen::generate_to(command, &dir)
                    .with_context(|| format!("writing the pages to {}", dir.display()))?;
                outln!("wrote the manual pages to {}", dir.display());
            }
            None => {
                let mut page = Vec::new();
                clap_mangen::Man::new(command).render(&mut page)?;
                out!("{}", String::from_utf8_lossy(&page));
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
