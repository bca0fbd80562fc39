//! The agent's supervision: every long-lived task (scheduler, result consumer,
//! dispatcher, API, reloader, store writer, heartbeat) runs under `Supervisor`,
//! which restarts it with backoff when it panics or ends while the agent runs,
//! logs and counts each restart (`sonde_task_restarts_total{task}`), and stops
//! the agent when a task cannot come back (more than `Policy::max_restarts`
//! restarts within `Policy::window`). `Health` is what `/healthz` answers from:
//! tasks down, the store failing, results that stopped coming.
//!
//! What a restarted task starts from is its own business (the closure given to
//! `Supervisor::spawn` rebuilds it): the supervisor only runs it again.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::schedule::Schedule;
use crate::telemetry::events::{TaskGaveUp, TaskRestarted};
use crate::telemetry::metrics::Metrics;

/// How restarts are paced and when the supervisor gives up.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// The wait before the first restart, doubling with each restart in the window.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// More restarts than this within `window` stop the agent.
    pub max_restarts: u32,
    pub window: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_restarts: 5,
            window: Duration::from_secs(600),
        }
    }
}

impl Policy {
    /// The wait before restart number `n` (1-based) within the window.
    pub(crate) fn backoff(&self, n: u32) -> Duration {
        self.first_backoff
            .saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(16)))
            .min(self.max_backoff)
    }
}

/// A task that gave up: why the agent stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("agent task {task} kept failing ({restarts} restarts within {}s; last: {reason}); the agent stopped", within.as_secs())]
pub struct TaskFailed {
    pub task: &'static str,
    pub reason: String,
    pub restarts: u32,
    pub within: Duration,
}

/// Runs and restarts the agent's tasks.
#[derive(Clone)]
pub(crate) struct Supervisor {
    policy: Policy,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// The agent's shutdown: a task that ends after it ended as asked. A task
    /// that gives up cancels it.
    shutdown: CancellationToken,
    failed: Arc<Mutex<Option<TaskFailed>>>,
}

impl Supervisor {
    pub(crate) fn new(
        policy: Policy,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        shutdown: CancellationToken,
    ) -> Supervisor {
        Supervisor {
            policy,
            metrics,
            health,
            shutdown,
            failed: Arc::default(),
        }
    }

    /// The first task that gave up, if one did.
    pub(crate) fn failure(&self) -> Option<TaskFailed> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs `make()` as task `task`, again after each panic or end that comes
    /// before the shutdown. The handle ends when the task ended after the
    /// shutdown, or gave up.
    pub(crate) fn spawn<F, Fut>(&self, task: &'static str, mut make: F) -> JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        this.metrics.register_task(task);
        tokio::spawn(async move {
            let mut recent: Vec<tokio::time::Instant> = Vec::new();
            loop {
                let reason = match tokio::spawn(make()).await {
                    Ok(()) => "ended".to_string(),
                    Err(e) if e.is_panic() => crate::human::text::panic_text(e.into_panic()),
                    Err(_) => "cancelled".to_string(),
                };
                if this.shutdown.is_cancelled() {
                    if reason != "ended" {
                        tracing::error!(task, reason, "agent task failed during shutdown");
                    }
                    return;
                }
                this.health.task_down(task, &reason);
                let now = tokio::time::Instant::now();
                recent.retain(|t| now.duration_since(*t) < this.policy.window);
                recent.push(now);
                let n = u32::try_from(recent.len()).unwrap_or(u32::MAX);
                if n > this.policy.max_restarts {
                    TaskGaveUp {
                        task,
                        reason: &reason,
                        restarts: n - 1,
                        within: this.policy.window,
                    }
                    .emit();
                    let mut failed = this.failed.lock().unwrap_or_else(|e| e.into_inner());
                    failed.get_or_insert(TaskFailed {
                        task,
                        reason,
                        restarts: n - 1,
                        within: this.policy.window,
                    });
                    drop(failed);
                    this.shutdown.cancel();
                    return;
                }
                let backoff = this.policy.backoff(n);
                TaskRestarted {
                    task,
                    reason: &reason,
                    backoff,
                    recent: n,
                }
                .emit(&this.metrics);
                tokio::select! {
                    _ = this.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                this.health.task_up(task);
            }
        })
    }
}

/// Below this, `Health` never calls results stale: the first runs come within
/// a minute of the start, and a run may take its timeout.
pub(crate) const STALE_FLOOR: Duration = Duration::from_secs(120);

/// How long without a recorded result is too long for `config`: three times
/// its shortest interval, at least `STALE_FLOOR`; `None` when no probe runs.
pub(crate) fn stale_after(config: &Config, now: DateTime<Utc>) -> Option<Duration> {
    config
        .probes
        .iter()
        .filter(|p| p.enabled)
        .filter_map(|p| interval(&p.schedule, now))
        .min()
        .map(|d| d.saturating_mul(3).max(STALE_FLOOR))
}

/// The gap between a schedule's next two instants.
fn interval(schedule: &Schedule, now: DateTime<Utc>) -> Option<Duration> {
    match schedule {
        Schedule::Every { every, .. } => Some(*every),
        Schedule::Cron { .. } => {
            let a = schedule.next_after(now)?;
            let b = schedule.next_after(a)?;
            (b - a).to_std().ok()
        }
    }
}

/// Why the store cannot be written, if it cannot.
pub(crate) type StoreFailing = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// What `/healthz` answers from.
pub(crate) struct Health {
    /// Tasks down, with why.
    down: Mutex<BTreeMap<&'static str, String>>,
    /// When the last result was recorded (or the agent started).
    last_result: Mutex<DateTime<Utc>>,
    stale_after: Mutex<Option<Duration>>,
    /// The store's write failure, if any, when the agent has a store writer.
    store: Mutex<Option<StoreFailing>>,
}

impl Health {
    /// A healthy agent started at `started`, calling results stale after
    /// `stale_after` without one.
    pub(crate) fn new(started: DateTime<Utc>, stale_after: Option<Duration>) -> Health {
        Health {
            down: Mutex::default(),
            last_result: Mutex::new(started),
            stale_after: Mutex::new(stale_after),
            store: Mutex::new(None),
        }
    }

    /// Reports the store failing whenever `failing` says why (the store
    /// writer's state).
    pub(crate) fn watch_store(&self, failing: StoreFailing) {
        *self.store.lock().unwrap_or_else(|e| e.into_inner()) = Some(failing);
    }

    pub(crate) fn task_down(&self, task: &'static str, reason: &str) {
        self.down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(task, reason.to_string());
    }

    pub(crate) fn task_up(&self, task: &'static str) {
        self.down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(task);
    }

    pub(crate) fn result_recorded(&self, at: DateTime<Utc>) {
        let mut last = self.last_result.lock().unwrap_or_else(|e| e.into_inner());
        *last = (*last).max(at);
    }

    /// A reload changed the schedules: the clock restarts at `now` too, as
    /// new probes run within a minute.
    pub(crate) fn set_stale_after(&self, stale_after: Option<Duration>, now: DateTime<Utc>) {
        *self.stale_after.lock().unwrap_or_else(|e| e.into_inner()) = stale_after;
        self.result_recorded(now);
    }

    /// Why the agent is not healthy at `now`; empty when it is.
    pub(crate) fn problems(&self, now: DateTime<Utc>) -> Vec<String> {
        let mut out: Vec<String> = self
            .down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(task, reason)| format!("task {task} is down ({reason})"))
            .collect();
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(error) = store.and_then(|failing| failing()) {
            out.push(format!("the store cannot be written: {error}"));
        }
        let last = *self.last_result.lock().unwrap_or_else(|e| e.into_inner());
        let stale = *self.stale_after.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stale) = stale {
            let quiet = (now - last).to_std().unwrap_or_default();
            if quiet > stale {
                out.push(format!(
                    "no result recorded for {}s (expected at least one every {}s)",
                    quiet.as_secs(),
                    stale.as_secs()
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn supervisor(policy: Policy) -> (Supervisor, Arc<Metrics>, Arc<Health>, CancellationToken) {
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::new(t0(), None));
        let shutdown = CancellationToken::new();
        let s = Supervisor::new(policy, metrics.clone(), health.clone(), shutdown.clone());
        (s, metrics, health, shutdown)
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_is_restarted_after_a_backoff_and_counted() {
        let (s, metrics, health, shutdown) = supervisor(Policy::default());
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let stop = shutdown.clone();
        let task = s.spawn("consumer", move || {
            let n = r.fetch_add(1, Ordering::SeqCst);
            let stop = stop.clone();
            async move {
                if n == 0 {
                    panic!("injected");
                }
                stop.cancelled().await;
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "restarted before the backoff"
        );
        assert_eq!(metrics.task_restarts("consumer"), 1);
        let problems = health.problems(t0());
        assert!(
            problems[0].contains("task consumer is down (panicked: injected)"),
            "{problems:?}"
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert!(health.problems(t0()).is_empty());
        assert!(metrics
            .render()
            .contains("sonde_task_restarts_total{task=\"consumer\"} 1\n"));
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(s.failure(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unexpected_end_restarts_and_an_end_after_shutdown_does_not() {
        let (s, metrics, _, shutdown) = supervisor(Policy::default());
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let task = s.spawn("reloader", move || {
            r.fetch_add(1, Ordering::SeqCst);
            async {}
        });
        // 1 s then 2 s of backoff: three runs within 3.5 s.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(metrics.task_restarts("reloader"), 3);
        shutdown.cancel();
        task.await.unwrap();
        let after = runs.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(runs.load(Ordering::SeqCst), after);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_cannot_come_back_stops_the_agent() {
        let policy = Policy {
            max_restarts: 3,
            ..Policy::default()
        };
        let (s, metrics, _, shutdown) = supervisor(policy);
        let task = s.spawn("dispatcher", || async { panic!("always") });
        task.await.unwrap();
        assert!(shutdown.is_cancelled(), "the agent was not stopped");
        let failed = s.failure().unwrap();
        assert_eq!(failed.task, "dispatcher");
        assert_eq!(failed.restarts, 3);
        assert_eq!(metrics.task_restarts("dispatcher"), 3);
        assert!(failed.to_string().contains("panicked: always"), "{failed}");
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_spread_beyond_the_window_never_give_up() {
        let policy = Policy {
            max_restarts: 2,
            window: Duration::from_secs(60),
            ..Policy::default()
        };
        let (s, metrics, _, shutdown) = supervisor(policy);
        let stop = shutdown.clone();
        let task = s.spawn("api", move || {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(100)) => panic!("once in a while"),
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(1000)).await;
        assert!(!shutdown.is_cancelled());
        assert!(metrics.task_restarts("api") >= 9);
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(s.failure(), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = Policy::default();
        assert_eq!(p.backoff(1), Duration::from_secs(1));
        assert_eq!(p.backoff(3), Duration::from_secs(4));
        assert_eq!(p.backoff(100), Duration::from_secs(30));
    }

    #[test]
    fn results_that_stop_coming_make_the_agent_unhealthy() {
        let t0 = t0();
        let h = Health::new(t0, Some(Duration::from_secs(120)));
        assert!(h.problems(t0 + chrono::Duration::seconds(119)).is_empty());
        let p = h.problems(t0 + chrono::Duration::seconds(121));
        assert!(p[0].starts_with("no result recorded for 121s"), "{p:?}");
        h.result_recorded(t0 + chrono::Duration::seconds(100));
        assert!(h.problems(t0 + chrono::Duration::seconds(200)).is_empty());
    }
}
