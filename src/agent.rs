//! The agent: builds a validated `Config` (`crate::build`), runs the scheduler
//! until shutdown, and consumes the results. Also the on-demand path
//! (`sonde probe`), which uses the same runner.
//!
//! A running agent reloads its config on request (`ReloadHandle`: SIGHUP, or
//! `POST /-/reload`): the file is read and every probe and channel built before
//! anything is swapped; a refused config leaves the old one running.

use std::sync::Arc;

use std::collections::{HashMap, HashSet};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::alert::engine::{Engine, SharedViews};
use crate::alert::outbox::{Dispatcher, ReplaceChannels};
use crate::api::auth::{RateLimiter, TokenSource};
use crate::api::{ApiState, Server};
use crate::channel::Channel;
use crate::clock::Clock;
use crate::config::{ChannelConfig, Config, ConfigError, ConfigErrors, ProbeConfig};
use crate::outcome::Outcome;
use crate::outcome::RunRecord;
use crate::runner::run_once;
use crate::scheduler::{Replace, Scheduled, Scheduler};
use crate::store::Store;
use crate::telemetry::events::{ConfigLoaded, ProbeRunRecorded};
use crate::telemetry::metrics::Metrics;
use tokio::sync::Notify;

/// Runs one probe now, through the same runner the scheduler uses.
pub async fn run_probe_now(
    p: &ProbeConfig,
    all: &[ProbeConfig],
    clock: Arc<dyn Clock>,
) -> Result<Outcome, ConfigError> {
    let target = crate::build::build_target(p, all)?;
    Ok(run_once(&target, &clock).await)
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    // Transparent: the store's message is one line; a cause chain would repeat it.
    #[error(transparent)]
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
    let (_, requests) = reload_channel();
    run_reloadable(config, clock, shutdown, requests, on_record).await
}

/// `config` built (`crate::build::build`, the one `sonde validate` uses), in the
/// scheduler's terms.
fn built(
    config: &Config,
    clock: &Arc<dyn Clock>,
) -> Result<(Vec<Scheduled>, Vec<Arc<Channel>>), ConfigErrors> {
    let built = crate::build::build(config, clock.clone())?;
    let scheduled = built
        .probes
        .into_iter()
        .map(|(target, schedule)| Scheduled { target, schedule })
        .collect();
    Ok((scheduled, built.channels))
}

/// Channels whose receivers expire alerts, and their re-post interval.
fn repost_of(channels: &[Arc<Channel>]) -> HashMap<String, std::time::Duration> {
    channels
        .iter()
        .filter_map(|c| c.repost_interval().map(|d| (c.name().to_string(), d)))
        .collect()
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Probes in the new config.
    pub probes: usize,
    pub added: usize,
    pub removed: usize,
    pub changed: usize,
    pub unchanged: usize,
}

/// A reload's answer: what changed, or every reason the new config was refused.
pub type ReloadReply = Result<ReloadSummary, Vec<String>>;

/// Asks a running agent to reload its config from its file.
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<oneshot::Sender<ReloadReply>>);

impl ReloadHandle {
    /// Requests a reload and waits for its answer; `None` when the agent is gone.
    pub async fn reload(&self) -> Option<ReloadReply> {
        let (tx, rx) = oneshot::channel();
        self.0.send(tx).await.ok()?;
        rx.await.ok()
    }
}

/// The agent's end of `reload_channel`.
pub struct ReloadRequests {
    handle: ReloadHandle,
    rx: mpsc::Receiver<oneshot::Sender<ReloadReply>>,
}

/// A handle for the triggers (SIGHUP) and the requests for `run_reloadable`.
pub fn reload_channel() -> (ReloadHandle, ReloadRequests) {
    let (tx, rx) = mpsc::channel(4);
    let handle = ReloadHandle(tx);
    (handle.clone(), ReloadRequests { handle, rx })
}

/// Whether two versions of a probe are the same, wherever their tables sit.
fn same_probe(a: &ProbeConfig, b: &ProbeConfig) -> bool {
    let mut b = b.clone();
    b.site.clone_from(&a.site);
    *a == b
}

/// Whether two versions of a channel are the same, wherever their tables sit.
fn same_channel(a: &ChannelConfig, b: &ChannelConfig) -> bool {
    a.name == b.name && a.spec == b.spec && a.base_dir == b.base_dir
}

/// `run_with`, reloading the config at each request from `reloads`.
pub async fn run_reloadable(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    reloads: ReloadRequests,
    on_record: impl FnMut(&RunRecord) + Send + 'static,
) -> Result<(), AgentError> {
    let (scheduled, channels) = built(&config, &clock)?;
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
    let repost = repost_of(&channels);
    let config = Arc::new(config);
    let engine = Engine::new(
        config.clone(),
        store.clone(),
        repost,
        wake.clone(),
        metrics.clone(),
    )
    .map_err(|e| e.at(&store_path))?;
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
    let (channel_updates, channel_updates_rx) = mpsc::channel(1);
    let dispatcher = tokio::spawn(
        Dispatcher {
            store: store.clone(),
            channels,
            clock: clock.clone(),
            wake,
            unhealthy_after: config.agent.channel_unhealthy_after,
            metrics: metrics.clone(),
        }
        .run_replaceable(channel_updates_rx, dispatcher_stop.clone()),
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
            config: std::sync::RwLock::new(config.clone()),
            store: store.clone(),
            views: views.clone(),
            clock: clock.clone(),
            token,
            runs: RateLimiter::new(api_config.run_min_interval),
            built: crate::api::BuiltProbes::default(),
            reload: Some(reloads.handle.clone()),
        });
        (
            state.clone(),
            tokio::spawn(server.serve(state, shutdown.clone())),
        )
    });
    let (api_state, api) = match api {
        Some((state, task)) => (Some(state), Some(task)),
        None => (None, None),
    };
    let scheduler = Scheduler::new(
        clock.clone(),
        config.agent.max_concurrent,
        config.agent.drain_timeout,
    )
    .with_metrics(metrics.clone());
    let (tx, rx) = mpsc::channel::<RunRecord>(1024);
    let (engine_updates, engine_updates_rx) = mpsc::channel(1);
    let (probe_updates, probe_updates_rx) = mpsc::channel(1);
    let reloader = tokio::spawn(
        Reloader {
            config: config.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            probes: probe_updates,
            channels: channel_updates,
            engine: engine_updates,
            api: api_state,
        }
        .run(reloads.rx, shutdown.clone()),
    );
    let consumer = tokio::spawn(consume(
        rx,
        engine_updates_rx,
        engine,
        views,
        clock,
        metrics,
        on_record,
    ));
    scheduler
        .run_replaceable(scheduled, probe_updates_rx, tx, shutdown)
        .await;
    let _ = reloader.await;
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
    mut updates: mpsc::Receiver<EngineUpdate>,
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
                if engine.view(&record.probe).is_none() {
                    // A run of a probe a reload removed: its series are gone.
                    continue;
                }
                ProbeRunRecorded { record: &record }.emit(&metrics);
                if let Err(e) = engine.on_outcome(&record.probe, &record.outcome, clock.now()) {
                    tracing::error!(probe = %record.probe, error = %e, "cannot record the result");
                }
                if let Some(view) = engine.view(&record.probe) {
                    views.publish(view);
                }
                on_record(&record);
            }
            Some((config, repost)) = updates.recv() => {
                if let Err(e) = engine.reconfigure(config, repost) {
                    tracing::error!(error = %e, "cannot restore the monitors of new probes");
                }
                views.replace(engine.views());
            }
            _ = tick.tick() => {
                if let Err(e) = engine.tick(clock.now()) {
                    tracing::error!(error = %e, "cannot look for reminders");
                }
            }
        }
    }
}

/// A reloaded config for the engine, and its channels' re-post intervals.
type EngineUpdate = (Arc<Config>, HashMap<String, std::time::Duration>);

/// Applies reloads: reads and builds the new config, then hands each part to
/// its owner (scheduler, engine, dispatcher, metrics, API).
struct Reloader {
    config: Arc<Config>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    probes: mpsc::Sender<Replace>,
    channels: mpsc::Sender<ReplaceChannels>,
    engine: mpsc::Sender<EngineUpdate>,
    api: Option<Arc<ApiState>>,
}

impl Reloader {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<oneshot::Sender<ReloadReply>>,
        shutdown: CancellationToken,
    ) {
        loop {
            let reply = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = requests.recv() => match r {
                    Some(r) => r,
                    None => return,
                },
            };
            let answer = self.reload().await;
            let _ = reply.send(answer);
        }
    }

    async fn reload(&mut self) -> ReloadReply {
        let path = self.config.path.clone();
        let refused = |errors: Vec<String>, metrics: &Metrics, at| {
            ConfigLoaded {
                path: &path,
                probes: 0,
                at,
                error: Some(&errors.join("; ")),
            }
            .emit(metrics);
            Err(errors)
        };
        let strings = |e: ConfigErrors| e.0.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        let mut new = match crate::config::load(&path) {
            Ok(c) => c,
            Err(e) => return refused(strings(e), &self.metrics, self.clock.now()),
        };
        self.keep_restart_only_settings(&mut new);
        let (scheduled, channels) = match built(&new, &self.clock) {
            Ok(b) => b,
            Err(e) => return refused(strings(e), &self.metrics, self.clock.now()),
        };

        let old = &self.config;
        let mut summary = ReloadSummary {
            probes: new.probes.len(),
            added: 0,
            removed: 0,
            changed: 0,
            unchanged: 0,
        };
        let mut unchanged = HashSet::new();
        // A push probe is built with its token probe's settings: it changes
        // when they do.
        let same_refs = |p: &ProbeConfig| {
            p.spec.references().iter().all(|(_, name, _)| {
                match (old.probe(name), new.probe(name)) {
                    (Some(o), Some(n)) => o.spec == n.spec && o.base_dir == n.base_dir,
                    (None, None) => true,
                    _ => false,
                }
            })
        };
        for p in &new.probes {
            match old.probe(&p.name) {
                None => summary.added += 1,
                Some(o) if same_probe(o, p) && same_refs(p) => {
                    summary.unchanged += 1;
                    unchanged.insert(p.name.clone());
                }
                Some(_) => summary.changed += 1,
            }
        }
        summary.removed = old
            .probes
            .iter()
            .filter(|o| new.probe(&o.name).is_none())
            .count();
        let unchanged_channels = new
            .channels
            .iter()
            .filter(|c| old.channels.iter().any(|o| same_channel(o, c)))
            .map(|c| c.name.clone())
            .collect();
        let repost = repost_of(&channels);
        let new = Arc::new(new);

        self.metrics.retain_probes(|name| new.probe(name).is_some());
        self.metrics
            .retain_channels(|name| new.channels.iter().any(|c| c.name == name));
        for p in &new.probes {
            self.metrics
                .register_probe(&p.name, p.kind(), &p.health_set);
        }
        // The engine first, so that results of new probes find their monitors.
        let _ = self.engine.send((new.clone(), repost)).await;
        let _ = self
            .probes
            .send(Replace {
                probes: scheduled,
                unchanged,
            })
            .await;
        let _ = self
            .channels
            .send(ReplaceChannels {
                channels,
                unchanged: unchanged_channels,
            })
            .await;
        if let Some(api) = &self.api {
            *api.config.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
        }
        ConfigLoaded {
            path: &path,
            probes: new.probes.len(),
            at: self.clock.now(),
            error: None,
        }
        .emit(&self.metrics);
        tracing::info!(
            config = %path.display(),
            probes = summary.probes,
            added = summary.added,
            removed = summary.removed,
            changed = summary.changed,
            unchanged = summary.unchanged,
            "configuration reloaded"
        );
        self.config = new;
        Ok(summary)
    }

    /// `[store] path` and `[api] listen` apply at start only: a change is
    /// reported and the running values are kept, the rest of the config applies.
    fn keep_restart_only_settings(&self, new: &mut Config) {
        let old = &self.config;
        if store_path(new) != store_path(old) {
            tracing::warn!(
                running = %store_path(old).display(),
                configured = %store_path(new).display(),
                "[store] path changed: it applies at the next restart; the rest of the config applies now"
            );
            new.store.path.clone_from(&old.store.path);
        }
        let listen = |c: &Config| c.api.as_ref().map(|a| a.listen);
        if listen(new) != listen(old) {
            tracing::warn!(
                running = ?listen(old),
                configured = ?listen(new),
                "[api] listen changed: it applies at the next restart; the rest of the config applies now"
            );
            match (&mut new.api, &old.api) {
                (Some(n), Some(o)) => n.listen = o.listen,
                (n, o) => n.clone_from(o),
            }
        }
    }
}
