//! The agent: turns a validated `Config` into runnable probes, runs the scheduler
//! until shutdown, and consumes the results. Also the on-demand path
//! (`sonde probe`), which uses the same runner.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::alert::engine::{Engine, SharedViews};
use crate::alert::outbox::Dispatcher;
use crate::api::auth::{RateLimiter, TokenSource};
use crate::api::{ApiState, Server};
use crate::clock::Clock;
use crate::config::{Config, ConfigError, ConfigErrors, ProbeConfig};
use crate::probe::Outcome;
use crate::runner::{run_once, Target};
use crate::scheduler::{RunRecord, Scheduled, Scheduler};
use crate::store::Store;
use crate::telemetry::events::{ConfigLoaded, ProbeRunRecorded};
use crate::telemetry::metrics::Metrics;
use tokio::sync::Notify;

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

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Api(#[from] crate::api::ApiError),
}

/// The main config file's directory, where relative paths start.
fn config_dir(config: &Config) -> std::path::PathBuf {
    config
        .path
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf()
}

/// Where the store lives: `[store] path`, relative to the main config file.
pub fn store_path(config: &Config) -> std::path::PathBuf {
    config_dir(config).join(&config.store.path)
}

/// Runs the agent until `shutdown` is cancelled; returns after the drain.
pub async fn run(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    run_with(config, clock, shutdown, |_| {}).await
}

/// `run`, handing every finished run to `on_record` as well (the demo prints them).
///
/// Results go through the monitors (`alert::engine`) into the store, and the
/// dispatcher (`alert::outbox`) sends the alerts they raise.
pub async fn run_with(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    on_record: impl FnMut(&RunRecord) + Send + 'static,
) -> Result<(), AgentError> {
    let scheduled = build_scheduled(&config)?;
    let mut channel_errors = Vec::new();
    let mut channels = Vec::new();
    for c in &config.channels {
        match c.build() {
            Ok(ch) => channels.push(Arc::new(ch)),
            Err(message) => channel_errors.push(ConfigError {
                file: config.path.clone(),
                line: 0,
                column: 0,
                key: format!("channel {}", c.name),
                message,
            }),
        }
    }
    if !channel_errors.is_empty() {
        return Err(ConfigErrors(channel_errors).into());
    }
    // Bound before anything runs: a taken port stops the start.
    let api = match &config.api {
        Some(a) => Some(Server::bind(a.listen).await?),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    for p in &config.probes {
        metrics.register_probe(&p.name, p.kind(), &p.health_set);
    }
    ConfigLoaded {
        path: &config.path,
        probes: config.probes.len(),
        at: clock.now(),
        error: None,
    }
    .emit(&metrics);
    let store_path = store_path(&config);
    let store = Store::open(&store_path)?;
    let store = Arc::new(store);
    let wake = Arc::new(Notify::new());
    let repost = channels
        .iter()
        .filter_map(|c| c.repost_interval().map(|d| (c.name().to_string(), d)))
        .collect();
    let config = Arc::new(config);
    let engine = Engine::new(
        config.clone(),
        store.clone(),
        repost,
        wake.clone(),
        metrics.clone(),
    )?;
    // What the API shows of the monitors, republished after each result.
    let views = Arc::new(SharedViews::new(engine.views()));
    tracing::info!(
        probes = scheduled.len(),
        disabled = config.probes.len() - scheduled.len(),
        channels = channels.len(),
        max_concurrent = config.agent.max_concurrent,
        config = %config.path.display(),
        store = %store_path.display(),
        "agent started"
    );
    let dispatcher_stop = CancellationToken::new();
    let dispatcher = tokio::spawn(
        Dispatcher {
            store: store.clone(),
            channels,
            clock: clock.clone(),
            wake,
            unhealthy_after: config.agent.channel_unhealthy_after,
            metrics: metrics.clone(),
        }
        .run(dispatcher_stop.clone()),
    );
    let api = api.zip(config.api.as_ref()).map(|(server, api_config)| {
        let token = TokenSource::from_config(api_config, &config_dir(&config), &|name| {
            std::env::var(name).ok()
        });
        if matches!(token, TokenSource::None) {
            match &api_config.token_env {
                Some(var) => tracing::warn!(
                    variable = %var,
                    "[api] token_env names an unset or empty variable: POST endpoints are refused"
                ),
                None => tracing::info!("no [api] token configured: POST endpoints are refused"),
            }
        }
        let state = Arc::new(ApiState {
            metrics: metrics.clone(),
            config: config.clone(),
            store: store.clone(),
            views: views.clone(),
            clock: clock.clone(),
            token,
            runs: RateLimiter::new(api_config.run_min_interval),
            built: crate::api::BuiltProbes::default(),
        });
        tokio::spawn(server.serve(state, shutdown.clone()))
    });
    let scheduler = Scheduler::new(
        clock.clone(),
        config.agent.max_concurrent,
        config.agent.drain_timeout,
    )
    .with_metrics(metrics.clone());
    let (tx, rx) = mpsc::channel::<RunRecord>(1024);
    let consumer = tokio::spawn(consume(rx, engine, views, clock, metrics, on_record));
    scheduler.run(scheduled, tx, shutdown).await;
    let _ = consumer.await;
    if let Some(api) = api {
        let _ = api.await;
    }
    // Whatever is still in the outbox is sent at the next start.
    dispatcher_stop.cancel();
    let _ = dispatcher.await;
    tracing::info!("agent stopped");
    Ok(())
}

/// How often reminders and re-posts are looked for.
const TICK: std::time::Duration = std::time::Duration::from_secs(5);

/// Where results go once recorded: the monitors, the store and the outbox. Each
/// run already logged itself in the runner.
async fn consume(
    mut rx: mpsc::Receiver<RunRecord>,
    mut engine: Engine,
    views: Arc<SharedViews>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    mut on_record: impl FnMut(&RunRecord),
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            record = rx.recv() => {
                let Some(record) = record else { return };
                ProbeRunRecorded { record: &record }.emit(&metrics);
                if let Err(e) = engine.on_outcome(&record.probe, &record.outcome, clock.now()) {
                    tracing::error!(probe = %record.probe, error = %e, "cannot record the result");
                }
                if let Some(view) = engine.view(&record.probe) {
                    views.publish(view);
                }
                on_record(&record);
            }
            _ = tick.tick() => {
                if let Err(e) = engine.tick(clock.now()) {
                    tracing::error!(error = %e, "cannot look for reminders");
                }
            }
        }
    }
}
