//! `sonde run`: the agent until SIGINT/SIGTERM, reloading its config on SIGHUP.
//! Logging and OpenTelemetry are set up (and flushed) by `main` around it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{chain, Failure, EXIT_INVALID_CONFIG, EXIT_UNKNOWN};
use crate::agent::AgentError;
use crate::clock::Clock;
use crate::config::Config;

/// Why `sonde run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// Runs the agent on `c` until a signal stops it and the drain is over. The
/// config's warnings are logged first (logging is set up by then).
pub async fn run(c: Config, clock: Arc<dyn Clock>) -> Result<(), RunError> {
    for w in &c.warnings {
        tracing::warn!(target: "sonde", warning = %w, "configuration warning");
    }
    let shutdown = CancellationToken::new();
    super::signal::shutdown_on_signals(shutdown.clone()).map_err(RunError::Signals)?;
    let (reload, requests) = crate::reload::reload_channel();
    super::signal::reload_on_sighup(reload).map_err(RunError::Signals)?;
    crate::agent::run_reloadable(c, clock, shutdown, requests, |_| {}).await?;
    Ok(())
}

/// How a failed run ends: its cause chain; exit 2 when the config was refused
/// (a probe or channel that does not build), 3 otherwise.
pub fn failure(e: &RunError) -> Failure {
    let code = match e {
        RunError::Agent(AgentError::Config(_)) => EXIT_INVALID_CONFIG,
        RunError::Agent(_) | RunError::Signals(_) => EXIT_UNKNOWN,
    };
    Failure {
        stderr: format!("sonde: {}", chain(e)),
        code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, ConfigErrors};

    #[test]
    fn a_refused_config_exits_2_and_anything_else_3() {
        let refused = RunError::Agent(AgentError::Config(ConfigErrors(vec![ConfigError {
            file: "sonde.toml".into(),
            line: 1,
            column: 1,
            key: "probe c".into(),
            message: "ca_file nope.pem: unreadable".into(),
        }])));
        let f = failure(&refused);
        assert_eq!(f.code, EXIT_INVALID_CONFIG);
        assert!(
            f.stderr
                .starts_with("sonde: sonde.toml:1:1: probe c: ca_file nope.pem"),
            "{f:?}"
        );
        let signals = RunError::Signals(std::io::Error::other("no signals here"));
        assert_eq!(
            failure(&signals),
            Failure {
                stderr: "sonde: cannot install signal handlers: no signals here".into(),
                code: EXIT_UNKNOWN
            }
        );
        let taken = RunError::Agent(AgentError::Api(crate::api::ApiError {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: std::io::Error::other("taken"),
        }));
        assert_eq!(failure(&taken).code, EXIT_UNKNOWN);
    }
}
