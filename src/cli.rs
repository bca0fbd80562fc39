//! Command-line definitions (clap), and what is generated from them: the man
//! page `sonde(1)` and the shell completions. `main.rs` dispatches each command
//! to `crate::cmd`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
pub(crate) use clap_complete::Shell;

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
    /// Run one probe (or a health set) now and exit with its Nagios code (0 ok,
    /// 1 warning, 2 critical, 3 unknown).
    Probe {
        /// The probe: its name, or `HealthSet\Probe` as Invoke-MonitoringProbe
        /// names it (case-insensitive; an exact name match wins).
        #[arg(required_unless_present = "health_set", value_name = "NAME")]
        name: Option<String>,
        /// Run every enabled probe of this health set (case-insensitive), each
        /// after the probes it depends on, and exit with the worst code.
        #[arg(long, value_name = "SET", conflicts_with_all = ["name", "remote"])]
        health_set: Option<String>,
        /// text, json (one object per probe and line), nagios, or ma (as
        /// Invoke-MonitoringProbe | Format-List).
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
    /// Write a commented starter configuration for a use case, and validate it.
    Init {
        #[command(subcommand)]
        template: InitTemplate,
    },
    /// Print the shell completion script for SHELL on stdout.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the man pages, sonde(1) and one per subcommand, into DIR.
    #[command(hide = true)]
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum InitTemplate {
    /// Exchange hybrid push notifications: the PushNotifications.Proxy health set
    /// (OAuth certificate, auth metadata, token issuance, push connectivity).
    Exchange {
        /// The tenant's domain, e.g. contoso.onmicrosoft.com.
        #[arg(long, value_name = "DOMAIN")]
        tenant: String,
        /// The OAuth (Auth) certificate as exported: .cer/.crt, PEM or DER.
        #[arg(long, value_name = "CERT")]
        auth_cert: PathBuf,
        /// The credential that signs the tokens: a .pfx, or a PEM holding key and certificate.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The tenant id (a GUID): the realm the auth metadata must name.
        #[arg(long, value_name = "GUID")]
        tenant_id: Option<String>,
        /// The dedicated Exchange hybrid application's id (a GUID): adds its Entra token probe.
        #[arg(long, value_name = "GUID")]
        app_id: Option<String>,
        #[command(flatten)]
        out: InitOutput,
    },
    /// A blackbox starter: an HTTP check and a TLS endpoint's certificate.
    Blackbox {
        #[command(flatten)]
        out: InitOutput,
    },
}

/// Where `sonde init` writes.
#[derive(Debug, Clone, clap::Args)]
pub struct InitOutput {
    /// The file to write.
    #[arg(long, short = 'o', value_name = "FILE", default_value = "sonde.toml")]
    pub output: PathBuf,
    /// Overwrite the file if it exists.
    #[arg(long)]
    pub force: bool,
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
    // A Managed Availability probe result, as `Invoke-MonitoringProbe | Format-List`.
    Ma,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Text,
    Json,
}

/// The man pages, sonde(1) and sonde-SUBCOMMAND(1) for every visible
/// subcommand (as `clap_mangen::generate_to` names them), rendered from the
/// clap definitions: (file name, roff).
pub(crate) fn man_pages() -> Vec<(String, Vec<u8>)> {
    fn walk(cmd: clap::Command, out: &mut Vec<(String, Vec<u8>)>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            walk(sub, out);
        }
        let man = clap_mangen::Man::new(cmd);
        let mut page = Vec::new();
        // Rendering into a Vec cannot fail: the only error source is the writer.
        let _ = man.render(&mut page);
        out.push((man.get_filename(), page));
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(cmd, &mut out);
    out.sort();
    out
}

/// The completion script for `shell`, from the clap definitions.
pub(crate) fn completions(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "sonde", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    /// The package ships these files from `packaging/` (cargo deb does not run
    /// the binary): they must be what the current definitions generate.
    /// Regenerate with `scripts/gen-packaging`.
    #[test]
    fn the_committed_man_pages_and_completions_are_current() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging");
        let stale = "is stale: run scripts/gen-packaging and commit the result";
        for (path, want) in [
            ("completions/sonde.bash", completions(Shell::Bash)),
            ("completions/_sonde", completions(Shell::Zsh)),
            ("completions/sonde.fish", completions(Shell::Fish)),
        ] {
            let have = std::fs::read(root.join(path)).unwrap_or_default();
            assert!(have == want, "packaging/{path} {stale}");
        }
        let pages = man_pages();
        let mut committed: Vec<String> = std::fs::read_dir(root.join("man"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        committed.sort();
        let names: Vec<String> = pages.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(committed, names, "packaging/man {stale}");
        for (name, want) in pages {
            let have = std::fs::read(root.join("man").join(&name)).unwrap_or_default();
            assert!(have == want, "packaging/man/{name} {stale}");
        }
    }

    #[test]
    fn the_man_pages_cover_the_visible_commands() {
        let pages = man_pages();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for want in [
            "sonde.1",
            "sonde-run.1",
            "sonde-init-exchange.1",
            "sonde-completions.1",
        ] {
            assert!(names.contains(&want), "{want} in {names:?}");
        }
        assert!(
            !names.contains(&"sonde-man.1"),
            "the hidden command stays hidden"
        );
        let main = String::from_utf8(
            pages
                .iter()
                .find(|(n, _)| n == "sonde.1")
                .unwrap()
                .1
                .clone(),
        )
        .unwrap();
        assert!(main.contains(".TH sonde 1"), "{main}");
        assert!(main.contains("sonde\\-init(1)"), "{main}");
    }
}
