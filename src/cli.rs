//! Command-line definitions (clap). Dispatch lives in `main.rs`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "sonde",
    version,
    about = "Health-monitoring probe agent",
    propagate_version = true
)]
pub struct Cli {
    /// Config file (default ./sonde.toml).
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "SONDE_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: scheduler and probes until SIGINT/SIGTERM.
    Run,
    /// Run one probe now and exit with its Nagios code (0 ok, 1 warning, 2 critical, 3 unknown).
    Probe {
        /// The probe's name.
        name: String,
        #[arg(long, short = 'f', value_enum, default_value_t = ProbeFormat::Text)]
        format: ProbeFormat,
    },
    /// List probes with kind, health set, schedule and next fire time.
    List {
        #[arg(long, short = 'f', value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// Check the configuration; exit 0 when valid, 2 when not.
    Validate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProbeFormat {
    Text,
    Json,
    Nagios,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Text,
    Json,
}
