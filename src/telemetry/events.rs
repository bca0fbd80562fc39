//! One struct per thing that happens; `emit()` logs it with structured fields
//! and, given the metrics handle, updates the metrics (`super::metrics`) in the
//! same place. Labels stay low-cardinality (probe, kind, status, category,
//! channel); free text goes only into the log fields.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::metrics::{DeliveryResult, Metrics};
use crate::monitor::MonitorState;
use crate::outcome::RunRecord;
use crate::outcome::{Outcome, Status};

/// A probe run finished (any status). Emitted by the runner inside the run's
/// span, which carries `probe` and `kind`. Log only: the runner also serves
/// `sonde probe`, which keeps no metrics; the agent counts the run when it
/// records it (`ProbeRunRecorded`).
pub(crate) struct ProbeRunFinished<'a> {
    pub outcome: &'a Outcome,
}

impl ProbeRunFinished<'_> {
    pub(crate) fn emit(&self) {
        let o = self.outcome;
        let category = o.category.map(|c| c.as_str()).unwrap_or("");
        let duration = o.duration.as_secs_f64();
        match o.status {
            Status::Ok => tracing::info!(
                status = o.status.as_str(),
                duration_seconds = duration,
                summary = %o.summary,
                "probe ok"
            ),
            Status::Warning => tracing::warn!(
                status = o.status.as_str(),
                category,
                duration_seconds = duration,
                summary = %o.summary,
                "probe warning"
            ),
            Status::Critical | Status::Unknown => tracing::error!(
                status = o.status.as_str(),
                category,
                duration_seconds = duration,
                summary = %o.summary,
                "probe failed"
            ),
        }
    }
}

/// The agent received a finished run: counts it, records its duration and its
/// scheduler lateness, and keeps its observations for the probe series.
pub struct ProbeRunRecorded<'a> {
    pub record: &'a RunRecord,
}

impl ProbeRunRecorded<'_> {
    /// Runs starting later than this are logged (at debug).
    const LATE: Duration = Duration::from_secs(1);

    pub fn emit(&self, metrics: &Metrics) {
        let r = self.record;
        if r.lateness > Self::LATE {
            tracing::debug!(
                probe = %r.probe,
                lateness_seconds = r.lateness.as_secs_f64(),
                "run started late"
            );
        }
        metrics.probe_run(&r.probe, r.kind, &r.health_set, &r.outcome);
        metrics.scheduler_lateness(r.lateness);
    }
}

/// A fire was skipped because the probe's previous run was still going.
pub(crate) struct ProbeRunSkipped<'a> {
    pub probe: &'a str,
    pub kind: &'a str,
    pub health_set: &'a str,
    pub total_skipped: u64,
}

impl ProbeRunSkipped<'_> {
    pub(crate) fn emit(&self, metrics: &Metrics) {
        metrics.probe_skipped(self.probe, self.kind, self.health_set);
        tracing::warn!(
            probe = self.probe,
            kind = self.kind,
            total_skipped = self.total_skipped,
            "previous run still going; fire skipped"
        );
    }
}

/// The agent is stopping: how the drain went.
pub(crate) struct ShutdownDrained {
    pub in_flight_at_signal: usize,
    pub aborted: usize,
    pub took: Duration,
}

impl ShutdownDrained {
    pub(crate) fn emit(&self) {
        if self.aborted > 0 {
            tracing::warn!(
                in_flight = self.in_flight_at_signal,
                aborted = self.aborted,
                took_seconds = self.took.as_secs_f64(),
                "shutdown: drain deadline passed, runs aborted"
            );
        } else {
            tracing::info!(
                in_flight = self.in_flight_at_signal,
                took_seconds = self.took.as_secs_f64(),
                "shutdown: in-flight runs drained"
            );
        }
    }
}

/// A monitor moved to another state (or, with `restored`, was read back from
/// the store at start, which is not logged).
pub struct MonitorStateChanged<'a> {
    pub probe: &'a str,
    pub kind: &'a str,
    pub health_set: &'a str,
    pub from: MonitorState,
    pub to: MonitorState,
    pub restored: bool,
}

impl MonitorStateChanged<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        metrics.monitor_state(self.probe, self.kind, self.health_set, self.to);
        if self.restored || self.from == self.to {
            return;
        }
        tracing::info!(
            probe = self.probe,
            health_set = self.health_set,
            from = self.from.as_str(),
            to = self.to.as_str(),
            "monitor state changed"
        );
    }
}

/// One attempt to deliver an alert to a channel, and how it ended. `error` is
/// log-only (never a label).
pub struct AlertDeliveryAttempted<'a> {
    pub channel: &'a str,
    pub key: &'a str,
    /// Attempts so far, this one included.
    pub attempts: u32,
    pub result: DeliveryResult,
    pub error: &'a str,
    /// When it will be tried again (failures that are retried).
    pub retry_in: Option<Duration>,
}

impl AlertDeliveryAttempted<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        metrics.delivery(self.channel, self.result);
        let (channel, key, attempts) = (self.channel, self.key, self.attempts);
        match self.result {
            DeliveryResult::Delivered => {
                tracing::info!(channel, key, attempts, "alert delivered")
            }
            DeliveryResult::Failed => tracing::warn!(
                channel,
                key,
                attempts,
                retry_in_seconds = self.retry_in.unwrap_or_default().as_secs(),
                error = self.error,
                "alert delivery failed; will retry"
            ),
            DeliveryResult::Timeout => tracing::warn!(
                channel,
                key,
                attempts,
                retry_in_seconds = self.retry_in.unwrap_or_default().as_secs(),
                error = self.error,
                "alert delivery timed out; will retry"
            ),
            DeliveryResult::Refused => tracing::error!(
                channel,
                key,
                attempts,
                error = self.error,
                "alert refused by the channel; set aside"
            ),
        }
    }
}

/// How many alerts wait in a channel's outbox (metrics only: it changes often).
pub struct OutboxDepth<'a> {
    pub channel: &'a str,
    pub depth: u64,
}

impl OutboxDepth<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        metrics.outbox_depth(self.channel, self.depth);
    }
}

/// The configuration was loaded (at start) or reloaded; `error` says why not.
pub(crate) struct ConfigLoaded<'a> {
    pub path: &'a std::path::Path,
    pub probes: usize,
    pub at: DateTime<Utc>,
    pub error: Option<&'a str>,
}

impl ConfigLoaded<'_> {
    pub(crate) fn emit(&self, metrics: &Metrics) {
        let at = self.at.timestamp_millis() as f64 / 1000.0;
        metrics.config_loaded(self.error.is_none(), at);
        match self.error {
            None => tracing::debug!(
                config = %self.path.display(),
                probes = self.probes,
                "configuration loaded"
            ),
            Some(error) => tracing::error!(
                config = %self.path.display(),
                error,
                "configuration not loaded; keeping the previous one"
            ),
        }
    }
}

/// A supervised task of the agent panicked or ended while the agent runs; it
/// is restarted after `backoff`.
pub(crate) struct TaskRestarted<'a> {
    pub task: &'a str,
    /// The panic message, or "ended".
    pub reason: &'a str,
    pub backoff: Duration,
    /// Restarts within the current window, this one included.
    pub recent: u32,
}

impl TaskRestarted<'_> {
    pub(crate) fn emit(&self, metrics: &Metrics) {
        metrics.task_restarted(self.task);
        tracing::error!(
            task = self.task,
            reason = self.reason,
            backoff_seconds = self.backoff.as_secs_f64(),
            recent_restarts = self.recent,
            "agent task stopped; restarting it"
        );
    }
}

/// A supervised task kept failing: the agent stops.
pub(crate) struct TaskGaveUp<'a> {
    pub task: &'static str,
    pub reason: &'a str,
    pub restarts: u32,
    pub within: Duration,
}

impl TaskGaveUp<'_> {
    pub(crate) fn emit(&self) {
        tracing::error!(
            task = self.task,
            reason = self.reason,
            restarts = self.restarts,
            within_seconds = self.within.as_secs_f64(),
            "agent task keeps failing; stopping the agent"
        );
    }
}

/// The store's write state after an attempt: `error` is set while it fails.
pub(crate) struct StoreWriteState<'a> {
    pub path: &'a str,
    /// The error of the failed attempt; `None` when the write succeeded.
    pub error: Option<&'a str>,
    /// Whether the state changed with this attempt (logged only then).
    pub changed: bool,
    pub pending: u64,
    pub dropped: u64,
}

impl StoreWriteState<'_> {
    pub(crate) fn emit(&self, metrics: &Metrics) {
        metrics.store_state(self.error.is_none(), self.pending, self.dropped);
        if !self.changed {
            return;
        }
        match self.error {
            Some(error) => tracing::error!(
                store = self.path,
                error,
                pending = self.pending,
                "cannot write the store; results and alerts are kept in memory until it can be written"
            ),
            None => tracing::info!(
                store = self.path,
                dropped = self.dropped,
                "store writable again; the results and alerts kept in memory are written"
            ),
        }
    }
}
