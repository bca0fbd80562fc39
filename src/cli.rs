//! Command-line definitions (clap). `main.rs` dispatches each command to `crate::cmd`.

use std::net::SocketAddr;
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
        /// Run it in the agent at this URL (e.g. http://127.0.0.1:9323) instead of
        /// here; the API token comes from SONDE_API_TOKEN or --token-file.
        #[arg(long, value_name = "URL")]
        remote: Option<String>,
        /// A file holding the API token for --remote.
        #[arg(long, value_name = "FILE", requires = "remote")]
        token_file: Option<PathBuf>,
    },
    /// Print the running agent's health sets and probe states (from its
    /// /api/v1/health); exit 0 healthy, 1 degraded, 2 unhealthy, 3 otherwise.
    Status {
        /// The agent's URL (default: http:// plus [api] listen of the config).
        #[arg(long, value_name = "URL")]
        remote: Option<String>,
        #[arg(long, short = 'f', value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// List probes with kind, health set, schedule and next fire time.
    List {
        #[arg(long, short = 'f', value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// Check the configuration; exit 0 when valid, 2 when not.
    Validate,
    /// Run the lab: a loopback emulation of the cloud side (ACS metadata and
    /// tokens, the push proxy, an APNs-shaped device endpoint, an SMTP mailbox).
    Lab {
        /// HTTP listen address (metadata, tokens, push, devices, admin API).
        #[arg(long, default_value = "127.0.0.1:8480")]
        listen: SocketAddr,
        /// SMTP listen address of the test mailbox.
        #[arg(long, default_value = "127.0.0.1:2525")]
        smtp_listen: SocketAddr,
        /// The tenant's domain; its id is derived from it.
        #[arg(long, default_value = "contoso.onmicrosoft.com")]
        tenant: String,
        /// Register this certificate (PEM or DER) as a credential at start; repeatable.
        #[arg(long, value_name = "CERT")]
        register: Vec<PathBuf>,
    },
    /// Start the lab, make and register an OAuth certificate, and run the shipped
    /// PushNotifications.Proxy health set against it until Ctrl-C.
    Demo,
    /// Silence alerts: one-off windows kept in the store, seen by the running agent.
    Silence {
        #[command(subcommand)]
        action: SilenceAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum SilenceAction {
    /// Silence a probe (`NAME`), a health set (`set:NAME`) or everything (`*`).
    Add {
        target: String,
        /// How long, from now (or from --from): `2h`, `30m`.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Start later: an RFC 3339 time.
        #[arg(long, value_name = "TIME")]
        from: Option<String>,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// The silences not yet over.
    List,
    /// End a silence now.
    Remove { id: i64 },
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
