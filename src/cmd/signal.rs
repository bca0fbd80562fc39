//! The process's signals: SIGINT/SIGTERM start a graceful shutdown (a second one
//! exits at once), SIGHUP asks the agent to reload. Used by `run`, `lab` and
//! `demo`. The log lines keep the target `sonde` that they had in the binary.

use tokio_util::sync::CancellationToken;

use crate::reload::ReloadHandle;

/// SIGINT/SIGTERM cancel `shutdown`; a second one exits with code 130.
pub fn shutdown_on_signals(shutdown: CancellationToken) -> std::io::Result<()> {
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
                    target: "sonde",
                    signal = name,
                    "shutting down: no new runs, draining in-flight ones"
                );
                shutdown.cancel();
            } else {
                tracing::warn!(target: "sonde", signal = name, "second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}

/// SIGHUP reloads the config; the agent logs the outcome.
pub(crate) fn reload_on_sighup(reload: ReloadHandle) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(target: "sonde", signal = "SIGHUP", "reloading the configuration");
            if reload.reload().await.is_none() {
                return;
            }
        }
    });
    Ok(())
}
