//! Writes on their way to the store. In the agent the engine never writes the
//! store itself: it hands each result, monitor state and alert here and goes on,
//! and the store writer (`run_writer`) writes them in order, in batches. When
//! the store cannot be written (directory read-only, disk full, database corrupt
//! or locked by another process) they wait here, bounded, counted and logged,
//! and are written once it can; the dispatcher meanwhile sends the alerts from
//! here (`unsent`), so alerting never waits on the disk. Alerts are never
//! dropped; past `MAX_PENDING` writes the oldest results without an alert are
//! (their monitor state follows in later writes).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::store::{PendingWrite, Store, StoreError};
use crate::telemetry::events::StoreWriteState;
use crate::telemetry::metrics::Metrics;

/// Writes kept in memory at most (alerts excepted).
pub(crate) const MAX_PENDING: usize = 50_000;
/// How long an agent's write waits for another process's lock: what cannot be
/// written at once waits in memory.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_millis(200);
/// Writes per transaction.
const BATCH: usize = 512;
/// How long the writer gathers results without an alert before it writes
/// them: one transaction per result would cost a commit (the WAL pages of the
/// results table, its index and the monitors) each, most of a write's cost at
/// a thousand results a second. Alerts and full batches are written at once.
const GATHER: Duration = Duration::from_millis(100);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// An alert not in the store yet, for the dispatcher to send from memory.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MemoryAlert {
    pub channel: String,
    pub key: String,
    pub json: String,
    pub attempts: u32,
    /// Not retried before this (after a failed attempt).
    pub not_before: Option<tokio::time::Instant>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<PendingWrite>,
    /// The error of the last failed write; `None` while writes succeed.
    failing: Option<String>,
    dropped: u64,
    unsent: Vec<MemoryAlert>,
    /// Sent from memory before they reached the store: marked delivered there
    /// when they do.
    sent: Vec<(String, String)>,
}

pub(crate) struct PendingWrites {
    /// The store's file, for the logs.
    path: String,
    state: Mutex<State>,
    /// Wakes the writer.
    wake: Notify,
    /// Wakes a gathering writer at once: an alert or a full batch waits.
    urgent: Notify,
    /// Wakes the dispatcher: alerts to send.
    dispatch: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl PendingWrites {
    pub(crate) fn new(path: &str, dispatch: Arc<Notify>, metrics: Arc<Metrics>) -> PendingWrites {
        PendingWrites {
            path: path.to_string(),
            state: Mutex::default(),
            wake: Notify::new(),
            urgent: Notify::new(),
            dispatch,
            metrics,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a write; returns at once.
    pub(crate) fn push(&self, write: PendingWrite) {
        let has_alerts = !write.alerts.is_empty();
        let urgent = {
            let mut s = self.state();
            for (channel, key, json) in &write.alerts {
                s.unsent.push(MemoryAlert {
                    channel: channel.clone(),
                    key: key.clone(),
                    json: json.clone(),
                    attempts: 0,
                    not_before: None,
                });
            }
            s.queue.push_back(write);
            if s.queue.len() > MAX_PENDING {
                if let Some(i) = s.queue.iter().position(|w| w.alerts.is_empty()) {
                    s.queue.remove(i);
                    s.dropped += 1;
                    if s.dropped == 1 || s.dropped.is_multiple_of(1000) {
                        tracing::error!(
                            store = %self.path,
                            dropped = s.dropped,
                            "too many results waiting for the store; the oldest are dropped (alerts are kept)"
                        );
                    }
                }
            }
            has_alerts || s.queue.len() >= BATCH
        };
        self.wake.notify_one();
        if urgent {
            self.urgent.notify_one();
        }
        if has_alerts {
            self.dispatch.notify_waiters();
        }
    }

    /// Writes waiting.
    pub(crate) fn len(&self) -> usize {
        self.state().queue.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Why the store cannot be written, while it cannot.
    pub(crate) fn failing(&self) -> Option<String> {
        self.state().failing.clone()
    }

    /// The alerts of `channel` not in the store yet and due for an attempt.
    pub(crate) fn unsent(&self, channel: &str, now: tokio::time::Instant) -> Vec<MemoryAlert> {
        self.state()
            .unsent
            .iter()
            .filter(|a| a.channel == channel && a.not_before.is_none_or(|t| t <= now))
            .cloned()
            .collect()
    }

    /// The channel took `alert` from memory. False when it reached the store
    /// meanwhile: the caller marks it there.
    pub(crate) fn delivered(&self, alert: &MemoryAlert) -> bool {
        let mut s = self.state();
        let before = s.unsent.len();
        s.unsent
            .retain(|a| !(a.channel == alert.channel && a.key == alert.key));
        if s.unsent.len() == before {
            return false;
        }
        s.sent.push((alert.channel.clone(), alert.key.clone()));
        true
    }

    /// An attempt from memory failed: not again before `retry_in`.
    pub(crate) fn failed(&self, alert: &MemoryAlert, retry_in: Duration) {
        let mut s = self.state();
        if let Some(a) = s
            .unsent
            .iter_mut()
            .find(|a| a.channel == alert.channel && a.key == alert.key)
        {
            a.attempts += 1;
            a.not_before = Some(tokio::time::Instant::now() + retry_in);
        }
    }

    /// Whether (channel, key) was sent from memory and not marked in the store
    /// yet; forgets it.
    pub(crate) fn take_sent(&self, channel: &str, key: &str) -> bool {
        let mut s = self.state();
        let before = s.sent.len();
        s.sent.retain(|(c, k)| !(c == channel && k == key));
        s.sent.len() != before
    }

    /// Writes what waits, batch by batch, until nothing does; stops at the
    /// first failure, keeping what was not written. Blocking (SQLite).
    pub(crate) fn flush(&self, store: &Store, now: i64) -> Result<(), StoreError> {
        loop {
            let (batch, sent) = {
                let s = self.state();
                if s.queue.is_empty() && s.sent.is_empty() {
                    drop(s);
                    self.written(None);
                    return Ok(());
                }
                let batch: Vec<PendingWrite> = s.queue.iter().take(BATCH).cloned().collect();
                (batch, s.sent.clone())
            };
            if let Err(e) = store.write_all(&batch, &sent, now) {
                let text = match &e {
                    StoreError::Sql(source) => {
                        format!("{}: {source}; {}", self.path, crate::store::advice(source))
                    }
                    other => format!("{}: {other}", self.path),
                };
                self.written(Some(text));
                return Err(e);
            }
            let mut s = self.state();
            for w in s.queue.drain(..batch.len()).collect::<Vec<_>>() {
                for (channel, key, _) in &w.alerts {
                    s.unsent
                        .retain(|a| !(&a.channel == channel && &a.key == key));
                }
            }
            s.sent.retain(|x| !sent.contains(x));
        }
    }

    /// Reports the write state (logged when it changes).
    fn written(&self, error: Option<String>) {
        let (changed, pending, dropped) = {
            let mut s = self.state();
            let changed = s.failing.is_some() != error.is_some();
            s.failing.clone_from(&error);
            (changed, s.queue.len() as u64, s.dropped)
        };
        StoreWriteState {
            path: &self.path,
            error: error.as_deref(),
            changed,
            pending,
            dropped,
        }
        .emit(&self.metrics);
    }
}

/// The store writer: writes what `pending` holds as it comes, retrying with
/// backoff while the store fails. On `stop` it makes one last attempt.
pub(crate) async fn run_writer(
    pending: Arc<PendingWrites>,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    let mut retry = FIRST_RETRY;
    loop {
        let (p, s, now) = (pending.clone(), store.clone(), clock.now().timestamp());
        let ok = matches!(
            tokio::task::spawn_blocking(move || p.flush(&s, now)).await,
            Ok(Ok(()))
        );
        if stop.is_cancelled() {
            let left = pending.len();
            if left > 0 {
                tracing::error!(
                    store = %pending.path,
                    pending = left,
                    "stopping with writes the store did not take; they are lost"
                );
            }
            return;
        }
        let wait = if ok {
            retry = FIRST_RETRY;
            None
        } else {
            let wait = retry;
            retry = (retry * 2).min(MAX_RETRY);
            Some(wait)
        };
        tokio::select! {
            _ = stop.cancelled() => continue,
            _ = pending.wake.notified(), if wait.is_none() => {}
            _ = tokio::time::sleep(wait.unwrap_or(MAX_RETRY)) => continue,
        }
        // Something came: gather more unless it is urgent.
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = pending.urgent.notified() => {}
            _ = tokio::time::sleep(GATHER) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ResultRow;

    fn write(probe: &str, alerts: &[(&str, &str)]) -> PendingWrite {
        PendingWrite {
            result: Some(ResultRow {
                probe: probe.into(),
                started_at: 1,
                duration_seconds: 0.1,
                status: "critical".into(),
                category: None,
                summary: "down".into(),
                observations_json: "{}".into(),
            }),
            monitor: Some((probe.into(), "{}".into())),
            alerts: alerts
                .iter()
                .map(|(c, k)| (c.to_string(), k.to_string(), "{}".to_string()))
                .collect(),
            now: 1,
        }
    }

    #[test]
    fn a_locked_store_keeps_writes_in_memory_until_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sonde.db");
        let store = Store::open(&path).unwrap();
        store.set_busy_timeout(Duration::from_millis(10)).unwrap();
        let metrics = Arc::new(Metrics::new());
        let p = PendingWrites::new("sonde.db", Arc::new(Notify::new()), metrics.clone());
        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();

        p.push(write("a", &[("mail", "a:1")]));
        p.push(write("b", &[]));
        assert!(p.flush(&store, 2).is_err());
        let failing = p.failing().unwrap();
        assert!(
            failing.contains("another process holds a lock"),
            "{failing}"
        );
        assert_eq!(p.len(), 2);
        let text = metrics.render();
        assert!(text.contains("sonde_store_up 0\n"), "{text}");
        assert!(text.contains("sonde_store_pending 2\n"), "{text}");

        // Sent from memory meanwhile: it reaches the store delivered.
        let now = tokio::time::Instant::now();
        let unsent = p.unsent("mail", now);
        assert_eq!(unsent.len(), 1);
        assert!(p.delivered(&unsent[0]));
        assert!(p.unsent("mail", now).is_empty());

        other.execute_batch("COMMIT").unwrap();
        p.flush(&store, 3).unwrap();
        assert_eq!(p.failing(), None);
        assert!(p.is_empty());
        assert_eq!(store.recent_results("a", 5).unwrap().len(), 1);
        assert_eq!(store.recent_results("b", 5).unwrap().len(), 1);
        assert_eq!(store.pending("mail").unwrap().0, 0, "sent twice");
        assert!(metrics.render().contains("sonde_store_up 1\n"));
    }

    #[test]
    fn past_the_bound_results_are_dropped_and_alerts_kept() {
        let p = PendingWrites::new("x", Arc::new(Notify::new()), Arc::new(Metrics::new()));
        p.push(write("a", &[("mail", "k")]));
        for _ in 0..MAX_PENDING {
            p.push(write("b", &[]));
        }
        assert_eq!(p.len(), MAX_PENDING);
        assert_eq!(p.state().dropped, 1);
        assert_eq!(p.state().queue[0].alerts.len(), 1, "the alert was dropped");
    }

    #[test]
    fn a_failed_attempt_from_memory_waits_for_its_retry() {
        let p = PendingWrites::new("x", Arc::new(Notify::new()), Arc::new(Metrics::new()));
        p.push(write("a", &[("mail", "k")]));
        let now = tokio::time::Instant::now();
        let a = p.unsent("mail", now).remove(0);
        p.failed(&a, Duration::from_secs(5));
        assert!(p.unsent("mail", now).is_empty());
        let later = p.unsent("mail", now + Duration::from_secs(6));
        assert_eq!(later[0].attempts, 1);
        assert!(p.unsent("hook", now + Duration::from_secs(6)).is_empty());
    }
}
