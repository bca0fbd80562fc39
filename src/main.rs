//! sonde's entry point: parse the command line, set up logging and telemetry,
//! call the command (`sonde::cmd`), and turn what it returns into stdout, stderr
//! (the whole cause chain) and the exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use sonde::cli::{Cli, Command};
use sonde::clock::{Clock, SystemClock};
use sonde::cmd::{self, CmdResult, Done, Failure, EXIT_INVALID_CONFIG, EXIT_UNKNOWN};
use sonde::config::{self, LogFormat};
use sonde::telemetry;
// Command output that ends quietly on a closed pipe (see `output::write_stdout`).
use sonde::print;

fn main() -> ExitCode {
    // reqwest and rustls are built without a default crypto provider: pick ring
    // before anything makes a TLS config.
    let _ = rustls::crypto::ring::default_provider().install_default();
    return_large_blocks_to_the_system();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sonde: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_UNKNOWN);
        }
    };
    let code = runtime.block_on(dispatch(cli));
    // A blocking-pool thread stuck in a file system (a hung mount) must not keep
    // the process alive after it said it stopped.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// glibc raises its mmap threshold to the size of the largest block freed
/// (up to 32 MiB): after one large temporary buffer (a config file being
/// parsed, a rendering of many probes) every later one comes from the heap,
/// whose pages a long-running agent then keeps. A fixed threshold of 128 KiB
/// (glibc's starting value) keeps large blocks in their own mappings, given
/// back when freed. Measured with 10,000 probes: 4 MiB less resident while
/// running, and nothing kept after a large `/metrics` read.
fn return_large_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Prints a command's output or failure and exits with its code.
fn finish(result: CmdResult) -> ExitCode {
    match result {
        Ok(Done {
            stdout,
            stderr,
            code,
        }) => {
            eprint!("{stderr}");
            print!("{stdout}");
            ExitCode::from(code)
        }
        Err(Failure { stderr, code }) => {
            eprintln!("{stderr}");
            ExitCode::from(code)
        }
    }
}

async fn dispatch(cli: Cli) -> ExitCode {
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    match cli.command {
        Command::Run => {
            let c = match config::load(&path) {
                Ok(c) => c,
                Err(e) => return finish(Err(Failure::config(&e, EXIT_INVALID_CONFIG))),
            };
            // Built before the agent, whose metrics record into the global meter.
            let otel = telemetry::otel::init(&c.telemetry);
            telemetry::init_logging_otel(
                c.telemetry.log_format,
                c.telemetry.log_level.as_deref().unwrap_or("info"),
                otel.as_ref().ok().and_then(Option::as_ref),
            );
            let otel = match otel {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(error = %e, "OTLP export disabled");
                    None
                }
            };
            let result = cmd::run::run(c, clock).await;
            if let Some(o) = otel {
                // Flushing blocks on the exporters' threads.
                let _ = tokio::task::spawn_blocking(move || o.shutdown()).await;
            }
            finish(
                result
                    .map(|()| Done::default())
                    .map_err(|e| cmd::run::failure(&e)),
            )
        }
        Command::Probe {
            name: Some(name),
            format,
            remote: Some(url),
            token_file,
            ..
        } => {
            let loaded = config::load(&path).ok();
            let env = |name: &str| std::env::var(name).ok();
            finish(
                cmd::probe::remote(
                    loaded.as_ref(),
                    &url,
                    &name,
                    format,
                    token_file.as_deref(),
                    &env,
                )
                .await,
            )
        }
        Command::Probe {
            name,
            health_set,
            format,
            ..
        } => {
            let c = match config::load(&path) {
                Ok(c) => c,
                Err(e) => return finish(Err(Failure::config(&e, EXIT_UNKNOWN))),
            };
            telemetry::init_logging(c.telemetry.log_format, "warn");
            finish(match (health_set, name) {
                (Some(set), _) => cmd::probe::health_set(&c, &set, format, clock).await,
                (None, Some(name)) => cmd::probe::local(&c, &name, format, clock).await,
                // clap requires one of them.
                (None, None) => Err(Failure::unknown("give a probe NAME or --health-set SET")),
            })
        }
        Command::Status { remote, format } => {
            let url = match cmd::status::url(remote, &config::load(&path)) {
                Ok(url) => url,
                Err(failure) => return finish(Err(failure)),
            };
            finish(cmd::status::status(&url, format).await)
        }
        Command::List { format } => {
            finish(cmd::list::list(config::load(&path), format, clock.now()))
        }
        Command::Validate => finish(validate(&path)),
        Command::Lab {
            listen,
            smtp_listen,
            tenant,
            register,
        } => {
            telemetry::init_logging(LogFormat::Text, "info");
            let args = cmd::lab::LabArgs {
                listen,
                smtp_listen,
                tenant,
                register,
            };
            finish(cmd::lab::lab(args, clock).await.map(|()| Done::default()))
        }
        Command::Demo => {
            // The demo prints every result itself; the log keeps to what else goes wrong.
            telemetry::init_logging(LogFormat::Text, "warn,sonde::telemetry::events=off");
            let shutdown = CancellationToken::new();
            if let Err(e) = cmd::signal::shutdown_on_signals(shutdown.clone()) {
                return finish(Err(Failure::unknown(format!(
                    "cannot install signal handlers: {e}"
                ))));
            }
            match sonde::demo::run(clock, shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => finish(Err(Failure::unknown(format!("{e:#}")))),
            }
        }
        Command::Init { template } => finish(cmd::init::init(&template)),
        Command::Completions { shell } => finish(cmd::init::completions(shell)),
        Command::Man { dir } => finish(cmd::init::man(&dir)),
        Command::Silence { action } => finish(cmd::silence::silence(
            config::load(&path),
            action,
            clock.now(),
        )),
    }
}

/// `sonde validate`: loads and builds the config, as `sonde run` would.
fn validate(path: &std::path::Path) -> CmdResult {
    cmd::validate::validate(path, config::load(path).and_then(sonde::build::validated))
}
