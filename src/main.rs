//! sonde's entry point: parse the command line, load the config, dispatch, and map
//! every failure to an exit code with its whole cause chain on stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use sonde::cli::{Cli, Command, ListFormat, ProbeFormat};
use sonde::clock::{Clock, SystemClock};
use sonde::config::{self, Config, ConfigErrors};
use sonde::output::{self, Labels};
use sonde::telemetry;

/// Exit codes besides the Nagios ones of `sonde probe`.
const EXIT_INVALID_CONFIG: u8 = 2;
const EXIT_UNKNOWN: u8 = 3;

fn main() -> ExitCode {
    // reqwest and rustls are built without a default crypto provider: pick ring
    // before anything makes a TLS config.
    let _ = rustls::crypto::ring::default_provider().install_default();
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

fn config_path(cli: &Cli) -> PathBuf {
    cli.config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH))
}

fn print_config_errors(errors: &ConfigErrors) {
    for e in &errors.0 {
        eprintln!("{e}");
    }
    let n = errors.0.len();
    eprintln!(
        "sonde: configuration invalid ({n} error{})",
        if n == 1 { "" } else { "s" }
    );
}

async fn dispatch(cli: Cli) -> ExitCode {
    let path = config_path(&cli);
    match cli.command {
        Command::Lab {
            listen,
            smtp_listen,
            tenant,
            register,
        } => {
            telemetry::init_logging(config::LogFormat::Text, "info");
            return exit_on_error(run_lab(listen, smtp_listen, tenant, register).await);
        }
        Command::Demo => {
            // The demo prints every result itself; the log keeps to what else goes wrong.
            telemetry::init_logging(config::LogFormat::Text, "warn,sonde::telemetry::events=off");
            let shutdown = CancellationToken::new();
            if let Err(e) = spawn_signal_handler(shutdown.clone()) {
                eprintln!("sonde: cannot install signal handlers: {e}");
                return ExitCode::from(EXIT_UNKNOWN);
            }
            return exit_on_error(sonde::demo::run(Arc::new(SystemClock), shutdown).await);
        }
        _ => {}
    }
    let loaded = config::load(&path);
    match cli.command {
        Command::Lab { .. } | Command::Demo => unreachable!("handled above"),
        Command::Silence { action } => match loaded {
            Ok(c) => silence(&c, action),
            Err(e) => {
                print_config_errors(&e);
                ExitCode::from(EXIT_INVALID_CONFIG)
            }
        },
        Command::Validate => match loaded.and_then(sonde::build::validated) {
            Ok(c) => {
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
                let enabled = c.probes.iter().filter(|p| p.enabled).count();
                println!(
                    "{}: valid: {} probe{} ({enabled} enabled), {} channel{}",
                    path.display(),
                    c.probes.len(),
                    if c.probes.len() == 1 { "" } else { "s" },
                    c.channels.len(),
                    if c.channels.len() == 1 { "" } else { "s" },
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                print_config_errors(&e);
                ExitCode::from(EXIT_INVALID_CONFIG)
            }
        },
        Command::List { format } => match loaded {
            Ok(c) => {
                list(&c, format, &SystemClock);
                ExitCode::SUCCESS
            }
            Err(e) => {
                print_config_errors(&e);
                ExitCode::from(EXIT_INVALID_CONFIG)
            }
        },
        Command::Probe {
            name,
            format,
            remote: Some(url),
            token_file,
        } => probe_remote(loaded.ok().as_ref(), &url, &name, format, token_file).await,
        Command::Status { remote, format } => {
            let url = match (remote, &loaded) {
                (Some(url), _) => url,
                (None, Ok(c)) => match &c.api {
                    Some(api) => sonde::remote::url_of_listen(api.listen),
                    None => {
                        eprintln!(
                            "sonde: {} has no [api] table: pass --remote URL",
                            c.path.display()
                        );
                        return ExitCode::from(EXIT_UNKNOWN);
                    }
                },
                (None, Err(e)) => {
                    print_config_errors(e);
                    eprintln!("sonde: or pass --remote URL");
                    return ExitCode::from(EXIT_UNKNOWN);
                }
            };
            status(&url, format).await
        }
        Command::Probe { name, format, .. } => {
            let c = match loaded {
                Ok(c) => c,
                Err(e) => {
                    print_config_errors(&e);
                    return ExitCode::from(EXIT_UNKNOWN);
                }
            };
            telemetry::init_logging(c.telemetry.log_format, "warn");
            probe_now(&c, &name, format).await
        }
        Command::Run => {
            let c = match loaded {
                Ok(c) => c,
                Err(e) => {
                    print_config_errors(&e);
                    return ExitCode::from(EXIT_INVALID_CONFIG);
                }
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
            for w in &c.warnings {
                tracing::warn!(warning = %w, "configuration warning");
            }
            let result = run_agent(c).await;
            if let Some(o) = otel {
                // Flushing blocks on the exporters' threads.
                let _ = tokio::task::spawn_blocking(move || o.shutdown()).await;
            }
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sonde: {e:#}");
                    let invalid = matches!(
                        e.downcast_ref::<sonde::agent::AgentError>(),
                        Some(sonde::agent::AgentError::Config(_))
                    );
                    ExitCode::from(if invalid {
                        EXIT_INVALID_CONFIG
                    } else {
                        EXIT_UNKNOWN
                    })
                }
            }
        }
    }
}

async fn probe_now(c: &Config, name: &str, format: ProbeFormat) -> ExitCode {
    let Some(p) = c.probe(name) else {
        let mut names: Vec<&str> = c.probes.iter().map(|p| p.name.as_str()).collect();
        names.sort();
        eprintln!(
            "sonde: no probe named `{name}` in {} (probes: {})",
            c.path.display(),
            names.join(", ")
        );
        return ExitCode::from(EXIT_UNKNOWN);
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let outcome = match sonde::agent::run_probe_now(p, &c.probes, clock).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_UNKNOWN);
        }
    };
    let labels = Labels {
        probe: &p.name,
        kind: p.kind(),
        health_set: &p.health_set,
    };
    match format {
        ProbeFormat::Text => print!("{}", output::text(&labels, &outcome)),
        ProbeFormat::Json => println!("{}", output::json(&labels, &outcome)),
        ProbeFormat::Nagios => println!("{}", output::nagios(&outcome, &p.spec.perf_thresholds())),
    }
    ExitCode::from(outcome.status.exit_code() as u8)
}

/// The token for `--remote`: `--token-file`, else `SONDE_API_TOKEN`.
fn api_token(token_file: Option<PathBuf>) -> Result<String, String> {
    let token = match token_file {
        Some(f) => std::fs::read_to_string(&f)
            .map_err(|e| format!("cannot read --token-file {}: {e}", f.display()))?,
        None => std::env::var("SONDE_API_TOKEN").map_err(|_| {
            "--remote needs the API token: set SONDE_API_TOKEN or pass --token-file".to_string()
        })?,
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err("the API token is empty".into());
    }
    Ok(token)
}

/// `sonde probe NAME --remote URL`: the agent runs it; printed and exited on
/// like a local run. The local config, when there is one, only lends the
/// probe's Nagios thresholds.
async fn probe_remote(
    c: Option<&Config>,
    url: &str,
    name: &str,
    format: ProbeFormat,
    token_file: Option<PathBuf>,
) -> ExitCode {
    let token = match api_token(token_file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sonde: {e}");
            return ExitCode::from(EXIT_UNKNOWN);
        }
    };
    let value = match sonde::remote::run_probe(url, name, &token).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("sonde: {e}");
            return ExitCode::from(EXIT_UNKNOWN);
        }
    };
    let Some((probe, kind, health_set, outcome)) = output::from_json(&value) else {
        eprintln!("sonde: the agent's answer is not a probe result: {value}");
        return ExitCode::from(EXIT_UNKNOWN);
    };
    let labels = Labels {
        probe: &probe,
        kind: &kind,
        health_set: &health_set,
    };
    match format {
        ProbeFormat::Text => print!("{}", output::text(&labels, &outcome)),
        ProbeFormat::Json => println!("{value}"),
        ProbeFormat::Nagios => {
            let thresholds = c
                .and_then(|c| c.probe(name))
                .map(|p| p.spec.perf_thresholds())
                .unwrap_or_default();
            println!("{}", output::nagios(&outcome, &thresholds))
        }
    }
    ExitCode::from(outcome.status.exit_code() as u8)
}

/// `sonde status`: the agent's health report.
async fn status(url: &str, format: ListFormat) -> ExitCode {
    match sonde::remote::health(url).await {
        Ok(report) => {
            match format {
                ListFormat::Text => print!("{}", sonde::remote::status_text(&report)),
                ListFormat::Json => println!("{report}"),
            }
            ExitCode::from(sonde::remote::status_exit_code(&report))
        }
        Err(e) => {
            eprintln!("sonde: {e}");
            ExitCode::from(EXIT_UNKNOWN)
        }
    }
}

fn list(c: &Config, format: ListFormat, clock: &dyn Clock) {
    let now = clock.now();
    let rows: Vec<_> = c
        .probes
        .iter()
        .map(|p| {
            let next = p.enabled.then(|| p.schedule.next_after(now)).flatten();
            (p, next)
        })
        .collect();
    match format {
        ListFormat::Json => {
            let items: Vec<_> = rows
                .iter()
                .map(|(p, next)| {
                    serde_json::json!({
                        "probe": p.name,
                        "kind": p.kind(),
                        "health_set": p.health_set,
                        "schedule": p.schedule.to_string(),
                        "timeout_seconds": p.timeout.as_secs_f64(),
                        "enabled": p.enabled,
                        "next_run": next.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                        "depends_on": p.depends_on,
                        "alert": p.alert,
                    })
                })
                .collect();
            println!("{}", serde_json::Value::Array(items));
        }
        ListFormat::Text => {
            let header = ["PROBE", "KIND", "HEALTH SET", "SCHEDULE", "NEXT RUN"];
            let table: Vec<[String; 5]> = rows
                .iter()
                .map(|(p, next)| {
                    [
                        p.name.clone(),
                        p.kind().to_string(),
                        p.health_set.clone(),
                        p.schedule.to_string(),
                        match next {
                            Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            None if !p.enabled => "disabled".into(),
                            None => "never".into(),
                        },
                    ]
                })
                .collect();
            let mut widths = header.map(str::len);
            for row in &table {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            let line = |cells: &[&str]| {
                let parts: Vec<String> = cells
                    .iter()
                    .zip(widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                println!("{}", parts.join("  ").trim_end());
            };
            line(&header);
            for row in &table {
                line(&row.iter().map(String::as_str).collect::<Vec<_>>());
            }
        }
    }
}

fn exit_on_error(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sonde: {e:#}");
            ExitCode::from(EXIT_UNKNOWN)
        }
    }
}

async fn run_lab(
    listen: std::net::SocketAddr,
    smtp_listen: std::net::SocketAddr,
    tenant: String,
    register: Vec<PathBuf>,
) -> anyhow::Result<()> {
    use sonde::lab::{self, Lab, LabConfig};
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now().timestamp();
    let signer = sonde::credential::generate_self_signed(
        "sonde lab ACS signing",
        2048,
        now - 60,
        now + 2 * 365 * 86_400,
    )
    .context("cannot make the lab's signing key")?;
    let lab = Lab::new(&tenant, signer.credential, clock);
    for file in &register {
        let data =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let der = lab::cert_der_from(&data)
            .map_err(|e| anyhow::anyhow!("{} is not a certificate: {e}", file.display()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| anyhow::anyhow!("{} is not an X.509 certificate: {e}", file.display()))?;
        let (start, end) = (
            cert.validity().not_before.timestamp(),
            cert.validity().not_after.timestamp(),
        );
        let r = lab
            .state()
            .register(&der, start, end)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "registered {} (thumbprint {})",
            file.display(),
            r.thumbprint
        );
    }
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone()).context("cannot install signal handlers")?;
    let config = LabConfig {
        listen,
        smtp_listen,
        tenant_domain: tenant.clone(),
    };
    let mut running = lab::start(&config, lab, shutdown.clone())
        .await
        .context("the lab cannot start")?;
    let base = running.base_url();
    let id = running.lab.tenant_id();
    println!("sonde lab for tenant {tenant} (id {id})");
    println!("  ACS metadata   {base}/metadata/json/1/?realm={tenant}");
    println!("  OpenID         {base}/{id}/v2.0/.well-known/openid-configuration");
    println!("  token (ACS)    {base}/{id}/tokens/OAuth/2");
    println!("  token (Entra)  {base}/{id}/oauth2/v2.0/token");
    println!("  push proxy     {base}/PushNotifications");
    println!("  devices        {base}/devices/<token>, APNs-style POST {base}/3/device/<token>");
    println!(
        "  SMTP mailbox   {} for {}",
        running.smtp,
        lab::default_mailbox(&tenant)
    );
    println!(
        "  admin          {base}/admin/state, /admin/credentials, /admin/faults, /admin/mailboxes"
    );
    while running.tasks.join_next().await.is_some() {}
    Ok(())
}

async fn run_agent(c: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone()).context("cannot install signal handlers")?;
    let (reload, requests) = sonde::agent::reload_channel();
    spawn_reload_on_sighup(reload).context("cannot install signal handlers")?;
    Ok(sonde::agent::run_reloadable(c, Arc::new(SystemClock), shutdown, requests, |_| {}).await?)
}

/// SIGHUP reloads the config; the agent logs the outcome.
fn spawn_reload_on_sighup(reload: sonde::agent::ReloadHandle) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(signal = "SIGHUP", "reloading the configuration");
            if reload.reload().await.is_none() {
                return;
            }
        }
    });
    Ok(())
}

/// `sonde silence add|list|remove`: silences live in the store, where the
/// running agent reads them before each evaluation.
fn silence(c: &Config, action: sonde::cli::SilenceAction) -> ExitCode {
    use sonde::cli::SilenceAction;
    let path = sonde::agent::store_path(c);
    let store = match sonde::store::Store::open(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sonde: {e}");
            return ExitCode::from(EXIT_UNKNOWN);
        }
    };
    let now = SystemClock.now();
    let at = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default()
    };
    let result = match action {
        SilenceAction::Add {
            target,
            duration,
            from,
            comment,
        } => {
            let known = target == "*"
                || c.probe(&target).is_some()
                || target
                    .strip_prefix("set:")
                    .is_some_and(|set| c.probes.iter().any(|p| p.health_set == set));
            if !known {
                eprintln!(
                    "sonde: `{target}` is no probe of {} (use a probe name, set:HEALTH_SET or *)",
                    c.path.display()
                );
                return ExitCode::from(EXIT_INVALID_CONFIG);
            }
            let length = match sonde::human::duration::parse(&duration) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    eprintln!("sonde: --for must be longer than 0s");
                    return ExitCode::from(EXIT_INVALID_CONFIG);
                }
                Err(e) => {
                    eprintln!("sonde: --for {duration}: {e}");
                    return ExitCode::from(EXIT_INVALID_CONFIG);
                }
            };
            let start = match from.as_deref().map(chrono::DateTime::parse_from_rfc3339) {
                None => now.timestamp(),
                Some(Ok(t)) => t.timestamp(),
                Some(Err(e)) => {
                    eprintln!("sonde: --from: not an RFC 3339 time ({e})");
                    return ExitCode::from(EXIT_INVALID_CONFIG);
                }
            };
            let end = start.saturating_add(length.as_secs().min(i64::MAX as u64) as i64);
            store.add_silence(&target, start, end, &comment).map(|id| {
                println!(
                    "silence {id}: {target} from {} until {}",
                    at(start),
                    at(end)
                );
            })
        }
        SilenceAction::List => store.silences(now.timestamp()).map(|list| {
            if list.is_empty() {
                println!("no silences");
            }
            for s in list {
                println!(
                    "{:>4}  {:<32} {} .. {}  {}",
                    s.id,
                    s.target,
                    at(s.from),
                    at(s.to),
                    s.comment
                );
            }
        }),
        SilenceAction::Remove { id } => store.remove_silence(id).map(|removed| {
            if removed {
                println!("silence {id} removed");
            } else {
                println!("no silence {id}");
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sonde: {e}");
            ExitCode::from(EXIT_UNKNOWN)
        }
    }
}

/// SIGINT/SIGTERM start a graceful shutdown; a second one exits at once.
fn spawn_signal_handler(shutdown: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            count += 1;
            if count == 1 {
                tracing::info!(
                    signal = name,
                    "shutting down: no new runs, draining in-flight ones"
                );
                shutdown.cancel();
            } else {
                tracing::warn!(signal = name, "second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}
