//! The agent: builds a validated `Config` (`crate::build`), runs the scheduler
//! until shutdown, and consumes the results. Also the on-demand path
//! (`sonde probe`), which uses the same runner.
//!
//! A running agent reloads its config on request (`ReloadHandle`: SIGHUP, or
//! `POST /-/reload`): the file is read and every probe and channel built before
//! anything is swapped; a refused config leaves the old one running.
//!
//! Every long-lived task runs under `crate::supervise::Supervisor` (restarted
//! with backoff after a panic, the agent stopped when one cannot come back),
//! and the engine's writes go through `alert::pending`, so that neither
//! evaluation nor alerting waits on the store.

use std::sync::Arc;

use std::collections::{HashMap, HashSet};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::alert::engine::{Engine, SharedViews};
use crate::alert::outbox::{Dispatcher, ReplaceChannels};
use crate::alert::pending::{run_writer, PendingWrites, BUSY_TIMEOUT};
use crate::api::{ApiState, Server, Shared};
use crate::channel::Channel;
use crate::clock::Clock;
use crate::config::{ChannelConfig, Config, ConfigError, ConfigErrors, ProbeConfig};
use crate::outcome::Outcome;
use crate::outcome::RunRecord;
use crate::reload::{reload_channel, ReloadReply, ReloadRequests, ReloadSummary};
use crate::runner::run_once;
use crate::scheduler::{NextRuns, Replace, Scheduled, Scheduler};
use crate::store::Store;
use crate::supervise::{stale_after, Health, Policy, Supervisor, TaskFailed};
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
    #[error("{0}")]
    Task(#[from] TaskFailed),
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
pub(crate) fn store_path(config: &Config) -> std::path::PathBuf {
    config_dir(config).join(&config.store.path)
}

/// Runs the agent until `shutdown` is cancelled and returns after the drain,
/// handing every finished run to `on_record` as well (the demo prints them).
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
pub(crate) async fn run_reloadable(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    reloads: ReloadRequests,
    on_record: impl FnMut(&RunRecord) + Send + 'static,
) -> Result<(), AgentError> {
    run_supervised(
        config,
        clock,
        shutdown,
        reloads,
        on_record,
        Policy::default(),
    )
    .await
}

/// Shared with a task's restarts: what it runs on, as the last reload left it.
type Latest<T> = Arc<std::sync::Mutex<T>>;

fn latest<T: Clone>(cell: &Latest<T>) -> T {
    cell.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn set_latest<T>(cell: &Latest<T>, value: T) {
    *cell.lock().unwrap_or_else(|e| e.into_inner()) = value;
}

/// `run_reloadable` with the supervisor's restart `policy`. Every long-lived
/// task runs under `crate::supervise::Supervisor`; when one gives up, the
/// agent drains and returns `AgentError::Task`.
pub async fn run_supervised(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    reloads: ReloadRequests,
    on_record: impl FnMut(&RunRecord) + Send + 'static,
    policy: Policy,
) -> Result<(), AgentError> {
    // A task that gives up stops the agent through this token.
    let shutdown = shutdown.child_token();
    let (scheduled, channels) = built(&config, &clock)?;
    // Probes and API clients share the descriptor limit: raise it whether or
    // not there is an API.
    crate::api::limits::raise_descriptor_limit();
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
    store.set_busy_timeout(BUSY_TIMEOUT)?;
    let store = Arc::new(store);
    let wake = Arc::new(Notify::new());
    let pending = Arc::new(PendingWrites::new(
        &store_path.display().to_string(),
        wake.clone(),
        metrics.clone(),
    ));
    let repost = repost_of(&channels);
    let config = Arc::new(config);
    let engine = Engine::new(
        config.clone(),
        store.clone(),
        repost.clone(),
        wake.clone(),
        metrics.clone(),
    )
    .map_err(|e| e.at(&store_path))?
    .with_pending(pending.clone());
    // What the API shows of the monitors, republished after each result.
    let views = Arc::new(SharedViews::new(engine.published()));
    let health = Arc::new(Health::new(clock.now(), stale_after(&config, clock.now())));
    health.watch_store({
        let pending = pending.clone();
        Arc::new(move || pending.failing())
    });
    let supervisor = Supervisor::new(policy, metrics.clone(), health.clone(), shutdown.clone());
    let next_runs = Arc::new(NextRuns::default());
    tracing::info!(
        probes = scheduled.len(),
        disabled = config.probes.len() - scheduled.len(),
        channels = channels.len(),
        max_concurrent = config.agent.max_concurrent,
        config = %config.path.display(),
        store = %store_path.display(),
        "agent started"
    );

    let writer_stop = CancellationToken::new();
    let writer = supervisor.spawn("store_writer", {
        let (pending, store, clock, stop) = (
            pending.clone(),
            store.clone(),
            clock.clone(),
            writer_stop.clone(),
        );
        move || run_writer(pending.clone(), store.clone(), clock.clone(), stop.clone())
    });

    let heartbeat = match &config.agent.heartbeat {
        Some(h) => {
            let to: Vec<Arc<Channel>> = channels
                .iter()
                .filter(|c| h.channels.iter().any(|n| n == c.name()))
                .cloned()
                .collect();
            // Cannot fail short of a broken TLS set-up, which the probes
            // would meet first: then the beats go to the channels only.
            let http = crate::net::http::client(true, None)
                .map_err(|e| tracing::error!(error = %e, "heartbeat GETs disabled"))
                .ok();
            let (h, clock, shutdown, started) =
                (h.clone(), clock.clone(), shutdown.clone(), clock.now());
            Some(supervisor.spawn("heartbeat", move || {
                crate::alert::heartbeat::run(
                    h.clone(),
                    to.clone(),
                    http.clone(),
                    clock.clone(),
                    started,
                    shutdown.clone(),
                )
            }))
        }
        None => None,
    };

    let dispatcher_stop = CancellationToken::new();
    let (channel_updates, channel_updates_rx) = mpsc::channel(1);
    let current_channels: Latest<Vec<Arc<Channel>>> = Arc::new(std::sync::Mutex::new(channels));
    let dispatcher = supervisor.spawn("dispatcher", {
        let updates = Arc::new(tokio::sync::Mutex::new(channel_updates_rx));
        let channels = current_channels.clone();
        let (store, clock, wake, metrics, pending, stop) = (
            store.clone(),
            clock.clone(),
            wake.clone(),
            metrics.clone(),
            pending.clone(),
            dispatcher_stop.clone(),
        );
        let unhealthy_after = config.agent.channel_unhealthy_after;
        move || {
            let dispatcher = Dispatcher {
                store: store.clone(),
                channels: latest(&channels),
                clock: clock.clone(),
                wake: wake.clone(),
                unhealthy_after,
                metrics: metrics.clone(),
            };
            let (updates, pending, stop) = (updates.clone(), pending.clone(), stop.clone());
            async move {
                let mut updates = updates.lock_owned().await;
                // Each channel's loop is restarted on its own under `policy`.
                dispatcher
                    .run_with_pending(Some(pending), &mut updates, stop, policy)
                    .await
            }
        }
    });

    let api_state = api
        .as_ref()
        .zip(config.api.as_ref())
        .map(|(_, api_config)| {
            let shared = Shared {
                metrics: metrics.clone(),
                config: config.clone(),
                store: store.clone(),
                views: views.clone(),
                clock: clock.clone(),
                health: health.clone(),
                next_runs: next_runs.clone(),
            };
            Arc::new(ApiState::new(
                api_config,
                &config_dir(&config),
                shared,
                Some(reloads.handle.clone()),
            ))
        });
    let api = api.zip(api_state.clone()).map(|(server, state)| {
        let addr = server.local_addr();
        let mut first = Some(server);
        let shutdown = shutdown.clone();
        supervisor.spawn("api", move || {
            let server = first.take();
            let (state, shutdown) = (state.clone(), shutdown.clone());
            async move {
                // A restart binds the address again.
                let server = match (server, addr) {
                    (Some(s), _) => s,
                    (None, Some(addr)) => match Server::bind(addr).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot listen again");
                            return;
                        }
                    },
                    (None, None) => return,
                };
                server.serve(state, shutdown).await
            }
        })
    });

    let (tx, rx) = mpsc::channel::<RunRecord>(1024);
    let (engine_updates, engine_updates_rx) = mpsc::channel(1);
    let (probe_updates, probe_updates_rx) = mpsc::channel(1);
    let current_config: Latest<Arc<Config>> = Arc::new(std::sync::Mutex::new(config.clone()));
    let reloader = supervisor.spawn("reloader", {
        let requests = Arc::new(tokio::sync::Mutex::new(reloads.rx));
        let current = current_config.clone();
        let (clock, metrics, shutdown, health) = (
            clock.clone(),
            metrics.clone(),
            shutdown.clone(),
            health.clone(),
        );
        let channels = current_channels.clone();
        move || {
            let reloader = Reloader {
                config: latest(&current),
                current: current.clone(),
                current_channels: channels.clone(),
                clock: clock.clone(),
                metrics: metrics.clone(),
                health: health.clone(),
                probes: probe_updates.clone(),
                channels: channel_updates.clone(),
                engine: engine_updates.clone(),
                api: api_state.clone(),
            };
            let (requests, shutdown) = (requests.clone(), shutdown.clone());
            async move {
                let mut requests = requests.lock_owned().await;
                reloader.run(&mut requests, shutdown).await
            }
        }
    });

    let consumer = supervisor.spawn("consumer", {
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let updates = Arc::new(tokio::sync::Mutex::new(engine_updates_rx));
        let on_record = Arc::new(std::sync::Mutex::new(on_record));
        let engine_config: Latest<EngineUpdate> =
            Arc::new(std::sync::Mutex::new((config.clone(), repost)));
        let mut first = Some(engine);
        let (store, wake, metrics, pending, clock, health) = (
            store.clone(),
            wake.clone(),
            metrics.clone(),
            pending.clone(),
            clock.clone(),
            health.clone(),
        );
        move || {
            let engine = first.take();
            let sinks = Sinks {
                views: views.clone(),
                clock: clock.clone(),
                metrics: metrics.clone(),
                health: health.clone(),
                engine_config: engine_config.clone(),
            };
            let (rx, updates, on_record) = (rx.clone(), updates.clone(), on_record.clone());
            let (store, wake, pending) = (store.clone(), wake.clone(), pending.clone());
            async move {
                let engine = match engine {
                    Some(e) => e,
                    // A restart starts from the monitors the store holds.
                    None => {
                        let (config, repost) = latest(&sinks.engine_config);
                        match Engine::new(config, store, repost, wake, sinks.metrics.clone()) {
                            Ok(e) => {
                                sinks.views.replace(e.published());
                                e.with_pending(pending)
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "cannot restore the monitors");
                                return;
                            }
                        }
                    }
                };
                let mut rx = rx.lock_owned().await;
                let mut updates = updates.lock_owned().await;
                consume(&mut rx, &mut updates, engine, sinks, move |r| {
                    (on_record.lock().unwrap_or_else(|e| e.into_inner()))(r)
                })
                .await
            }
        }
    });

    let scheduler = supervisor.spawn("scheduler", {
        let updates = Arc::new(tokio::sync::Mutex::new(probe_updates_rx));
        let mut first = Some(scheduled);
        let current = current_config.clone();
        // A restarted scheduler skips the probes whose runs the failed one
        // left in flight (a probe never overlaps itself) and shares their
        // permits.
        let carry = Arc::new(crate::scheduler::Carry::default());
        let (clock, metrics, next_runs, shutdown) = (
            clock.clone(),
            metrics.clone(),
            next_runs.clone(),
            shutdown.clone(),
        );
        move || {
            let probes = first.take();
            let scheduler = Scheduler::new(
                clock.clone(),
                config.agent.max_concurrent,
                config.agent.drain_timeout,
            )
            .with_metrics(metrics.clone())
            .with_next_runs(next_runs.clone())
            .with_carry(carry.clone());
            let (updates, tx, shutdown) = (updates.clone(), tx.clone(), shutdown.clone());
            let (current, clock) = (current.clone(), clock.clone());
            async move {
                let probes = match probes {
                    Some(p) => p,
                    // A restart schedules the config in force.
                    None => match built(&latest::<Arc<Config>>(&current), &clock) {
                        Ok((p, _)) => p,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot rebuild the probes");
                            return;
                        }
                    },
                };
                let mut updates = updates.lock_owned().await;
                scheduler.run_from(probes, &mut updates, tx, shutdown).await
            }
        }
    });

    let _ = scheduler.await;
    let _ = reloader.await;
    let _ = consumer.await;
    if let Some(api) = api {
        let _ = api.await;
    }
    if let Some(heartbeat) = heartbeat {
        let _ = heartbeat.await;
    }
    // Whatever is still in the outbox is sent at the next start.
    dispatcher_stop.cancel();
    let _ = dispatcher.await;
    // The writer makes one last attempt at what waits in memory.
    writer_stop.cancel();
    let _ = writer.await;
    if let Some(failed) = supervisor.failure() {
        return Err(AgentError::Task(failed));
    }
    tracing::info!("agent stopped");
    Ok(())
}

/// How often reminders and re-posts are looked for.
const TICK: std::time::Duration = std::time::Duration::from_secs(5);

/// Where the consumer publishes what it learns.
struct Sinks {
    views: Arc<SharedViews>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// The engine's config as the last reload left it, for a restart.
    engine_config: Latest<EngineUpdate>,
}

/// Where results go once recorded: the monitors, the store and the outbox. Each
/// run already logged itself in the runner.
async fn consume(
    rx: &mut mpsc::Receiver<RunRecord>,
    updates: &mut mpsc::Receiver<EngineUpdate>,
    mut engine: Engine,
    sinks: Sinks,
    mut on_record: impl FnMut(&RunRecord),
) {
    let Sinks {
        views,
        clock,
        metrics,
        health,
        engine_config,
    } = sinks;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            record = rx.recv() => {
                let Some(record) = record else { return };
                if !engine.knows(&record.probe) {
                    // A run of a probe a reload removed: its series are gone.
                    continue;
                }
                ProbeRunRecorded { record: &record }.emit(&metrics);
                health.result_recorded(clock.now());
                if let Err(e) = engine.on_outcome(&record.probe, &record.outcome, clock.now()) {
                    tracing::error!(probe = %record.probe, error = %e, "cannot record the result");
                }
                engine.publish_to(&record.probe, &views);
                on_record(&record);
            }
            Some((config, repost)) = updates.recv() => {
                set_latest(&engine_config, (config.clone(), repost.clone()));
                if let Err(e) = engine.reconfigure(config, repost) {
                    tracing::error!(error = %e, "cannot restore the monitors of new probes");
                }
                views.replace(engine.published());
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
    /// Where the config in force is kept for restarts of the tasks.
    current: Latest<Arc<Config>>,
    current_channels: Latest<Vec<Arc<Channel>>>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    probes: mpsc::Sender<Replace>,
    channels: mpsc::Sender<ReplaceChannels>,
    engine: mpsc::Sender<EngineUpdate>,
    api: Option<Arc<ApiState>>,
}

impl Reloader {
    async fn run(
        mut self,
        requests: &mut mpsc::Receiver<oneshot::Sender<ReloadReply>>,
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
        for w in &new.warnings {
            tracing::warn!(target: "sonde", warning = %w, "configuration warning");
        }

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
        set_latest(&self.current_channels, channels.clone());
        let _ = self
            .channels
            .send(ReplaceChannels {
                channels,
                unchanged: unchanged_channels,
            })
            .await;
        set_latest(&self.current, new.clone());
        self.health
            .set_stale_after(stale_after(&new, self.clock.now()), self.clock.now());
        if let Some(api) = &self.api {
            api.set_config(new.clone());
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

    /// `[store] path`, `[api] listen` and `[agent.heartbeat]` apply at start
    /// only: a change is reported and the running values are kept, the rest
    /// of the config applies.
    fn keep_restart_only_settings(&self, new: &mut Config) {
        let old = &self.config;
        if new.agent.heartbeat != old.agent.heartbeat {
            tracing::warn!(
                "[agent.heartbeat] changed: it applies at the next restart; the rest of the config applies now"
            );
            new.agent.heartbeat.clone_from(&old.agent.heartbeat);
        }
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
