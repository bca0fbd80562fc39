//! The agent: turns a validated `Config` into runnable probes, runs the scheduler
//! until shutdown, and consumes the results. Also the on-demand path
//! (`sonde probe`), which uses the same runner.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Config, ConfigError, ConfigErrors, ProbeConfig};
use crate::probe::Outcome;
use crate::runner::{run_once, Target};
use crate::scheduler::{RunRecord, Scheduled, Scheduler};

/// Builds the runnable probe of one config entry. A failure (say, an unreadable
/// CA file) is reported like a config error, at the probe's table.
pub fn build_target(p: &ProbeConfig, all: &[ProbeConfig]) -> Result<Target, ConfigError> {
    let lookup = |name: &str| {
        all.iter()
            .find(|o| o.name == name)
            .map(|o| (&o.spec, o.base_dir.as_path()))
    };
    let probe = p
        .spec
        .build(&p.base_dir, &lookup)
        .map_err(|message| ConfigError {
            file: p.file.clone(),
            line: p.line,
            column: 1,
            key: format!("probe {}", p.name),
            message,
        })?;
    Ok(Target {
        name: p.name.as_str().into(),
        kind: p.kind(),
        health_set: p.health_set.as_str().into(),
        timeout: p.timeout,
        retries: p.retries,
        probe,
    })
}

/// Builds every enabled probe; all failures at once.
pub fn build_scheduled(config: &Config) -> Result<Vec<Scheduled>, ConfigErrors> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for p in config.probes.iter().filter(|p| p.enabled) {
        match build_target(p, &config.probes) {
            Ok(target) => out.push(Scheduled {
                target,
                schedule: p.schedule.clone(),
            }),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Runs one probe now, through the same runner the scheduler uses.
pub async fn run_probe_now(
    p: &ProbeConfig,
    all: &[ProbeConfig],
    clock: Arc<dyn Clock>,
) -> Result<Outcome, ConfigError> {
    let target = build_target(p, all)?;
    Ok(run_once(&target, &clock).await)
}

/// Runs the agent until `shutdown` is cancelled; returns after the drain.
pub async fn run(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<(), ConfigErrors> {
    run_with(config, clock, shutdown, |_| {}).await
}

/// `run`, handing every finished run to `on_record` as well (the demo prints them).
pub async fn run_with(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    on_record: impl FnMut(&RunRecord) + Send + 'static,
) -> Result<(), ConfigErrors> {
    let scheduled = build_scheduled(&config)?;
    tracing::info!(
        probes = scheduled.len(),
        disabled = config.probes.len() - scheduled.len(),
        max_concurrent = config.agent.max_concurrent,
        config = %config.path.display(),
        "agent started"
    );
    let scheduler = Scheduler::new(
        clock,
        config.agent.max_concurrent,
        config.agent.drain_timeout,
    );
    let (tx, rx) = mpsc::channel::<RunRecord>(1024);
    let consumer = tokio::spawn(consume(rx, on_record));
    scheduler.run(scheduled, tx, shutdown).await;
    let _ = consumer.await;
    tracing::info!("agent stopped");
    Ok(())
}

/// Where results go once recorded. Each run already logged itself in the runner;
/// the store, monitors and alerts plug in here.
async fn consume(mut rx: mpsc::Receiver<RunRecord>, mut on_record: impl FnMut(&RunRecord)) {
    while let Some(record) = rx.recv().await {
        if record.lateness > std::time::Duration::from_secs(1) {
            tracing::debug!(
                probe = %record.probe,
                lateness_seconds = record.lateness.as_secs_f64(),
                "run started late"
            );
        }
        on_record(&record);
    }
}
