//! From results to alerts: each probe's monitor (`crate::monitor`) is fed every
//! outcome, with the maintenance windows, silences and dependencies that hold its
//! notices back; each notice becomes one `Alert` per routed channel. The result,
//! the monitor's new state and the alerts are written to the store in one
//! transaction before the dispatcher (`outbox`) is woken to send them, so a crash
//! between the two loses nothing. Monitor states are restored from the store at
//! start, so a restart neither re-fires open problems nor forgets them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::alert::pending::PendingWrites;
use crate::channel::{Alert, AlertEvent};
use crate::config::Config;
use crate::monitor::{self, EvalContext, Monitor, MonitorState, Notice, NoticeKind};
use crate::outcome::Outcome;
use crate::store::{PendingWrite, ResultRow, Store, StoreError};
use crate::telemetry::events::MonitorStateChanged;
use crate::telemetry::metrics::Metrics;

/// How long silences read from the store are trusted before reading again.
const SILENCES_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Delivered (and set-aside) alerts stay in the outbox this long.
const OUTBOX_KEEP: chrono::Duration = chrono::Duration::days(7);

/// A monitor's public view (API, status page, gauges).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MonitorView {
    pub probe: String,
    pub health_set: String,
    pub state: MonitorState,
    pub since: Option<DateTime<Utc>>,
    pub flapping: bool,
    pub suppressed_by: Option<String>,
}

pub struct Engine {
    config: Arc<Config>,
    store: Arc<Store>,
    /// Each probe's monitor, by its position in `config.probes`.
    monitors: Vec<Monitor>,
    /// Channels whose receivers expire alerts (Alertmanager): re-post interval.
    repost: HashMap<String, std::time::Duration>,
    /// Last re-post per probe and channel (by probe first: a probe's entries
    /// go at once when its problem ends).
    reposted: HashMap<String, HashMap<String, DateTime<Utc>>>,
    /// When delivered outbox entries were last pruned.
    pruned_at: Option<DateTime<Utc>>,
    /// The silences, and when they were read from the store.
    silences: Option<(std::time::Instant, Vec<crate::store::Silence>)>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// Where writes go in the agent (`with_pending`); without it they go to
    /// the store at once.
    pending: Option<Arc<PendingWrites>>,
}

fn event_of(kind: NoticeKind) -> AlertEvent {
    match kind {
        NoticeKind::Firing => AlertEvent::Firing,
        NoticeKind::Resolved => AlertEvent::Resolved,
        NoticeKind::Reminder => AlertEvent::Reminder,
        NoticeKind::FlappingStarted => AlertEvent::FlappingStarted,
        NoticeKind::FlappingStopped => AlertEvent::FlappingStopped,
    }
}

/// Reads the stored monitors of `probes` (those of `config` with these
/// names) into `monitors` (by position in `config.probes`) and reports their
/// states.
fn restore(
    store: &Store,
    config: &Config,
    probes: &HashSet<&str>,
    monitors: &mut [Monitor],
    metrics: &Metrics,
) -> Result<(), StoreError> {
    for (probe, json) in store.monitors()? {
        if !probes.contains(probe.as_str()) {
            continue;
        }
        let Some(slot) = config
            .probe_position(&probe)
            .and_then(|i| monitors.get_mut(i))
        else {
            continue;
        };
        match serde_json::from_str::<Monitor>(&json) {
            Ok(m) => *slot = m,
            Err(e) => {
                tracing::warn!(%probe, error = %e, "stored monitor state unreadable; starting it afresh")
            }
        }
    }
    for (info, m) in config
        .probes
        .iter()
        .zip(monitors.iter())
        .filter(|(p, _)| probes.contains(p.name.as_str()))
    {
        let name = &info.name;
        // A disabled probe never runs: its stored state would stay stale.
        let to = if info.enabled {
            m.state
        } else {
            MonitorState::Disabled
        };
        MonitorStateChanged {
            probe: name,
            kind: info.kind(),
            health_set: &info.health_set,
            from: to,
            to,
            restored: true,
        }
        .emit(metrics);
    }
    Ok(())
}

impl Engine {
    /// Restores monitor states from `store`. `repost` names the channels whose
    /// firing alerts must be re-posted, and how often. State changes go to
    /// `metrics`.
    pub fn new(
        config: Arc<Config>,
        store: Arc<Store>,
        repost: HashMap<String, std::time::Duration>,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Result<Engine, StoreError> {
        let mut monitors = vec![Monitor::default(); config.probes.len()];
        let all = config.probes.iter().map(|p| p.name.as_str()).collect();
        restore(&store, &config, &all, &mut monitors, &metrics)?;
        Ok(Engine {
            config,
            store,
            monitors,
            repost,
            reposted: HashMap::new(),
            pruned_at: None,
            silences: None,
            wake,
            metrics,
            pending: None,
        })
    }

    /// Hands every write to `pending` instead of writing the store: results
    /// and alerts never wait on the disk.
    pub(crate) fn with_pending(mut self, pending: Arc<PendingWrites>) -> Engine {
        self.pending = Some(pending);
        self
    }

    /// Writes `w` (through `pending` when set); returns how many alerts
    /// were queued.
    fn write(&self, w: PendingWrite) -> Result<usize, StoreError> {
        if let Some(pending) = &self.pending {
            let n = w.alerts.len();
            pending.push(w);
            return Ok(n);
        }
        match (&w.result, &w.monitor) {
            (Some(result), Some((_, state))) => self.store.record(result, state, &w.alerts, w.now),
            (_, Some((probe, state))) => self.store.update(probe, state, &w.alerts, w.now),
            _ => self.store.enqueue(&w.alerts, w.now),
        }
    }

    /// Takes a reloaded config: the monitors of probes still configured (by
    /// name) are kept, those of removed probes dropped; new probes' states are
    /// restored from the store like at start. Policies, routes, maintenance
    /// windows and re-post intervals come from the new config.
    pub(crate) fn reconfigure(
        &mut self,
        config: Arc<Config>,
        repost: HashMap<String, std::time::Duration>,
    ) -> Result<(), StoreError> {
        // The monitors follow the new config's order: kept ones move to their
        // new position, new probes start from their stored state (or afresh).
        let mut old = std::mem::take(&mut self.monitors);
        let monitors = config
            .probes
            .iter()
            .map(|p| {
                self.config
                    .probe_position(&p.name)
                    .and_then(|i| old.get_mut(i))
                    .map(std::mem::take)
                    .unwrap_or_default()
            })
            .collect();
        drop(old);
        self.reposted.retain(|p, channels| {
            let Some(probe) = config.probe(p) else {
                return false;
            };
            channels.retain(|c, _| probe.alert.contains(c));
            !channels.is_empty()
        });
        let old_config = std::mem::replace(&mut self.config, config);
        self.monitors = monitors;
        self.repost = repost;
        let fresh: HashSet<&str> = self
            .config
            .probes
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| old_config.probe(name).is_none())
            .collect();
        restore(
            &self.store,
            &self.config,
            &fresh,
            &mut self.monitors,
            &self.metrics,
        )
    }

    fn in_maintenance(&mut self, probe: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        if !self.config.maintenance.is_empty() {
            if let Some(p) = self.config.probe(probe) {
                if self.config.maintenance_at(p, now).is_some() {
                    return Ok(true);
                }
            }
        }
        // Silences come from the CLI, through the store: re-read at most every
        // SILENCES_FRESH, not for every result.
        if self
            .silences
            .as_ref()
            .is_none_or(|(read, _)| read.elapsed() > SILENCES_FRESH)
        {
            // An unreadable store keeps the silences last read: evaluation
            // goes on.
            match self.store.silences(i64::MIN) {
                Ok(list) => self.silences = Some((std::time::Instant::now(), list)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the silences; using those last read");
                    let list = self.silences.take().map(|(_, l)| l).unwrap_or_default();
                    self.silences = Some((std::time::Instant::now(), list));
                }
            }
        }
        let Some(health_set) = self.info(probe).map(|p| p.health_set.as_str()) else {
            return Ok(false);
        };
        let t = now.timestamp();
        Ok(self.silences.as_ref().is_some_and(|(_, list)| {
            list.iter().any(|s| {
                s.from <= t
                    && t < s.to
                    && (s.target == "*"
                        || s.target == probe
                        || s.target.strip_prefix("set:") == Some(health_set))
            })
        }))
    }

    fn root_cause(&self, probe: &str) -> Option<String> {
        let empty: &[String] = &[];
        monitor::root_cause(
            probe,
            |name| {
                self.info(name)
                    .map(|p| p.depends_on.as_slice())
                    .unwrap_or(empty)
            },
            |name| {
                self.monitor(name)
                    .is_some_and(|m| m.state == MonitorState::Unhealthy)
            },
        )
    }

    fn alert_for(
        &self,
        info: &crate::config::ProbeConfig,
        m: &Monitor,
        notice: &Notice,
        category: Option<String>,
        summary: &str,
        observations: &std::collections::BTreeMap<String, f64>,
    ) -> Alert {
        let probe = info.name.as_str();
        Alert {
            key: notice.idempotency_key(probe),
            event: event_of(notice.kind),
            severity: notice.severity,
            probe: probe.to_string(),
            kind: info.kind().to_string(),
            health_set: info.health_set.clone(),
            state: m.state.as_str().to_string(),
            category,
            summary: summary.to_string(),
            root_cause: notice
                .root_cause
                .clone()
                .or_else(|| m.suppressed_by.clone()),
            started_at: notice.since,
            ends_at: (notice.kind == NoticeKind::Resolved).then_some(notice.at),
            created_at: notice.at,
            observations: observations.clone(),
        }
    }

    fn rows(&self, probe: &str, alerts: &[Alert]) -> Vec<(String, String, String)> {
        let mut rows = Vec::new();
        for alert in alerts {
            let json = match serde_json::to_string(alert) {
                Ok(j) => j,
                Err(e) => {
                    tracing::error!(%probe, error = %e, "cannot serialise an alert");
                    continue;
                }
            };
            let channels = self
                .info(probe)
                .map(|p| p.alert.as_slice())
                .unwrap_or_default();
            for channel in channels {
                rows.push((channel.clone(), alert.key.clone(), json.clone()));
            }
        }
        rows
    }

    /// Feeds one outcome to its probe's monitor; returns the alerts it raised
    /// (already stored in the outbox).
    pub fn on_outcome(
        &mut self,
        probe: &str,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> Result<Vec<Alert>, StoreError> {
        let config = self.config.clone();
        let Some(at) = config.probe_position(probe) else {
            return Ok(Vec::new());
        };
        let info = &config.probes[at];
        let in_maintenance = self.in_maintenance(probe, now)?;
        let ctx = EvalContext {
            enabled: info.enabled,
            in_maintenance,
            blocked_by: self.root_cause(probe),
        };
        let prev = self.monitors[at].clone();
        let (m, notices) = monitor::evaluate(&prev, outcome.status, now, &info.policy, &ctx);
        let category = outcome.category.map(|c| c.as_str().to_string());
        let alerts: Vec<Alert> = notices
            .iter()
            .map(|n| {
                self.alert_for(
                    info,
                    &m,
                    n,
                    category.clone(),
                    &outcome.summary,
                    &outcome.observations,
                )
            })
            .collect();
        let row = ResultRow {
            probe: probe.to_string(),
            started_at: outcome.started_at.timestamp(),
            duration_seconds: outcome.duration.as_secs_f64(),
            status: outcome.status.as_str().to_string(),
            category,
            summary: outcome.summary.clone(),
            observations_json: serde_json::to_string(&outcome.observations)
                .unwrap_or_else(|_| "{}".into()),
        };
        let state = serde_json::to_string(&m).unwrap_or_else(|_| "{}".into());
        let added = self.write(PendingWrite {
            result: Some(row),
            monitor: Some((probe.to_string(), state)),
            alerts: self.rows(probe, &alerts),
            now: now.timestamp(),
        })?;
        if m.problem.as_ref().is_none_or(|p| p.notified.is_none()) {
            self.reposted.remove(probe);
        }
        MonitorStateChanged {
            probe,
            kind: info.kind(),
            health_set: &info.health_set,
            from: prev.state,
            to: m.state,
            restored: false,
        }
        .emit(&self.metrics);
        self.monitors[at] = m;
        if added > 0 {
            self.wake.notify_one();
        }
        Ok(alerts)
    }

    /// Reminders that are due, and re-posts of firing alerts to channels whose
    /// receivers expire them. Call it periodically.
    pub(crate) fn tick(&mut self, now: DateTime<Utc>) -> Result<Vec<Alert>, StoreError> {
        if self
            .pruned_at
            .is_none_or(|t| now - t > chrono::Duration::hours(1))
        {
            if let Err(e) = self.store.prune_delivered((now - OUTBOX_KEEP).timestamp()) {
                tracing::warn!(error = %e, "cannot prune delivered alerts");
            }
            self.pruned_at = Some(now);
        }
        let mut raised = Vec::new();
        // Only a monitor with a problem has reminders or re-posts: the tick
        // costs nothing per healthy probe, and reads the store only for a
        // probe with something to send.
        let due: Vec<usize> = (self.monitors.iter().enumerate())
            .filter(|(_, m)| m.problem.is_some())
            .map(|(i, _)| i)
            .collect();
        let config = self.config.clone();
        for at in due {
            let info = &config.probes[at];
            let probe = info.name.clone();
            let m = &self.monitors[at];
            let reminder = monitor::due_reminder(m, now, &info.policy);
            if reminder.is_none()
                && !info
                    .alert
                    .iter()
                    .any(|channel| self.repost_due(&probe, channel, m, now))
            {
                continue;
            }
            // The last stored result, for the reminder's text: an unreadable
            // store leaves it out rather than the reminder.
            let last = self
                .store
                .recent_results(&probe, 1)
                .unwrap_or_default()
                .into_iter()
                .next();
            let (category, summary) = last
                .as_ref()
                .map(|r| (r.category.clone(), r.summary.clone()))
                .unwrap_or_default();
            let observations = last
                .as_ref()
                .and_then(|r| serde_json::from_str(&r.observations_json).ok())
                .unwrap_or_default();
            if let Some((next, notice)) = reminder {
                let alert = self.alert_for(
                    info,
                    &next,
                    &notice,
                    category.clone(),
                    &summary,
                    &observations,
                );
                let state = serde_json::to_string(&next).unwrap_or_else(|_| "{}".into());
                self.write(PendingWrite {
                    result: None,
                    monitor: Some((probe.clone(), state)),
                    alerts: self.rows(&probe, std::slice::from_ref(&alert)),
                    now: now.timestamp(),
                })?;
                self.monitors[at] = next;
                raised.push(alert);
            }
            // Re-posts keep an alert alive where receivers expire it.
            let m = &self.monitors[at];
            let Some(problem) = m.problem.as_ref().filter(|p| p.notified.is_some()) else {
                continue;
            };
            let mut rows = Vec::new();
            for channel in &info.alert {
                if !self.repost_due(&probe, channel, m, now) {
                    continue;
                }
                let notice = Notice {
                    kind: NoticeKind::Firing,
                    severity: problem.notified.unwrap_or(problem.severity),
                    seq: m.seq,
                    since: problem.since,
                    at: now,
                    root_cause: m.suppressed_by.clone(),
                };
                let mut alert =
                    self.alert_for(info, m, &notice, category.clone(), &summary, &observations);
                alert.key = format!("{}:repost:{}", alert.key, now.timestamp());
                if let Ok(json) = serde_json::to_string(&alert) {
                    rows.push((channel.clone(), alert.key.clone(), json));
                }
                self.reposted
                    .entry(probe.clone())
                    .or_default()
                    .insert(channel.clone(), now);
            }
            if !rows.is_empty() {
                self.write(PendingWrite {
                    result: None,
                    monitor: None,
                    alerts: rows,
                    now: now.timestamp(),
                })?;
            }
        }
        if !raised.is_empty() {
            self.wake.notify_one();
        }
        Ok(raised)
    }

    /// Whether a firing alert of `probe` is due to be re-posted to `channel`
    /// (a channel whose receiver expires alerts).
    fn repost_due(&self, probe: &str, channel: &str, m: &Monitor, now: DateTime<Utc>) -> bool {
        let Some(problem) = m.problem.as_ref().filter(|p| p.notified.is_some()) else {
            return false;
        };
        let Some(every) = self.repost.get(channel) else {
            return false;
        };
        let last = self
            .reposted
            .get(probe)
            .and_then(|channels| channels.get(channel))
            .copied()
            .or(problem.last_notified_at)
            .unwrap_or(problem.since);
        now - last >= chrono::Duration::from_std(*every).unwrap_or(chrono::Duration::MAX)
    }

    /// A configured probe's config.
    fn info(&self, probe: &str) -> Option<&crate::config::ProbeConfig> {
        self.config.probe(probe)
    }

    #[cfg(test)]
    /// Every configured probe's monitor, in config order.
    pub(crate) fn views(&self) -> Vec<MonitorView> {
        (0..self.config.probes.len())
            .map(|i| self.view_at(i))
            .collect()
    }

    #[cfg(test)]
    /// One probe's monitor view; `None` for a probe not in the config.
    pub(crate) fn view(&self, probe: &str) -> Option<MonitorView> {
        self.config.probe_position(probe).map(|i| self.view_at(i))
    }

    #[cfg(test)]
    /// The view of the probe at position `i` of the config.
    fn view_at(&self, i: usize) -> MonitorView {
        view_of(&self.config.probes[i], self.state_at(i))
    }

    /// What the view of the probe at position `i` holds beyond its config.
    fn state_at(&self, i: usize) -> ViewState {
        let m = &self.monitors[i];
        ViewState {
            state: if self.config.probes[i].enabled {
                m.state
            } else {
                MonitorState::Disabled
            },
            since: m.state_since,
            flapping: m.flapping,
            suppressed_by: m.suppressed_by.clone(),
        }
    }

    /// Whether `probe` is in the engine's config.
    pub(crate) fn knows(&self, probe: &str) -> bool {
        self.config.probe_position(probe).is_some()
    }

    /// Publishes the view of `probe` (one of the config's) to `views`.
    pub(crate) fn publish_to(&self, probe: &str, views: &SharedViews) {
        if let Some(i) = self.config.probe_position(probe) {
            views.publish_state(probe, self.state_at(i));
        }
    }

    /// The monitor of the probe `name`, if it is configured.
    fn monitor(&self, name: &str) -> Option<&Monitor> {
        self.config
            .probe_position(name)
            .and_then(|i| self.monitors.get(i))
    }

    #[cfg(test)]
    /// Each health set and its state (its worst monitor's).
    pub(crate) fn health_sets(&self) -> Vec<(String, MonitorState)> {
        health_sets_of(&self.views())
    }
}

/// Each health set of `views`, sorted by name, and its state (its worst monitor's).
pub(crate) fn health_sets_of(views: &[MonitorView]) -> Vec<(String, MonitorState)> {
    // Each set's states in one pass, sets in name order: a filter of every
    // view per set would be quadratic when sets are as many as probes.
    let mut sets: std::collections::BTreeMap<&str, Vec<MonitorState>> = Default::default();
    for v in views {
        sets.entry(v.health_set.as_str()).or_default().push(v.state);
    }
    sets.into_iter()
        .map(|(set, states)| (set.to_string(), monitor::health_set_state(states)))
        .collect()
}

/// What a view holds beyond its probe's config.
#[derive(Debug, Clone, Default, PartialEq)]
struct ViewState {
    state: MonitorState,
    since: Option<DateTime<Utc>>,
    flapping: bool,
    suppressed_by: Option<String>,
}

impl From<MonitorView> for ViewState {
    fn from(v: MonitorView) -> ViewState {
        ViewState {
            state: v.state,
            since: v.since,
            flapping: v.flapping,
            suppressed_by: v.suppressed_by,
        }
    }
}

/// The view of probe `p` in state `s`.
fn view_of(p: &crate::config::ProbeConfig, s: ViewState) -> MonitorView {
    MonitorView {
        probe: p.name.clone(),
        health_set: p.health_set.clone(),
        state: s.state,
        since: s.since,
        flapping: s.flapping,
        suppressed_by: s.suppressed_by,
    }
}

/// Views to publish: the config they are of and each of its probes' state, in
/// config order. Names and health sets stay in the config: a view costs its
/// state only.
pub(crate) struct Published {
    config: Arc<Config>,
    states: Vec<ViewState>,
}

impl Published {
    #[cfg(test)]
    /// Every probe of `config` without a result yet (a disabled one disabled).
    pub(crate) fn unknown(config: Arc<Config>) -> Published {
        let states = (config.probes.iter())
            .map(|p| ViewState {
                state: if p.enabled {
                    MonitorState::Unknown
                } else {
                    MonitorState::Disabled
                },
                ..ViewState::default()
            })
            .collect();
        Published { config, states }
    }

    fn view(&self, i: usize) -> MonitorView {
        view_of(&self.config.probes[i], self.states[i].clone())
    }
}

impl Engine {
    /// Every probe's view, to publish.
    pub(crate) fn published(&self) -> Published {
        Published {
            config: self.config.clone(),
            states: (0..self.monitors.len()).map(|i| self.state_at(i)).collect(),
        }
    }
}

/// The monitors' views as last published by the engine's task, for readers
/// outside it (the API and the status page). The engine lives in the task that
/// consumes results; after each result that task replaces the one view that
/// changed, so a publish costs one probe, not the whole config.
pub(crate) struct SharedViews {
    inner: RwLock<Published>,
}

impl SharedViews {
    pub(crate) fn new(views: Published) -> SharedViews {
        SharedViews {
            inner: RwLock::new(views),
        }
    }

    #[cfg(test)]
    /// Replaces the view of `view.probe`; a probe not in the published config
    /// is ignored.
    pub(crate) fn publish(&self, view: MonitorView) {
        let probe = view.probe.clone();
        self.publish_state(&probe, view.into());
    }

    fn publish_state(&self, probe: &str, state: ViewState) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = inner.config.probe_position(probe) {
            inner.states[i] = state;
        }
    }

    /// Replaces every view (a reload changed the probe set).
    pub(crate) fn replace(&self, views: Published) {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = views;
    }

    /// Every view, in config order.
    pub(crate) fn all(&self) -> Vec<MonitorView> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        (0..inner.states.len()).map(|i| inner.view(i)).collect()
    }

    pub(crate) fn get(&self, probe: &str) -> Option<MonitorView> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let i = inner.config.probe_position(probe)?;
        Some(inner.view(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Loader;
    use crate::outcome::Category;

    const CONFIG: &str = r#"
[[channel]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:9/hook"

[[channel]]
name = "am"
kind = "alertmanager"
url = "http://127.0.0.1:9"

[[probe]]
name = "token"
kind = "http"
url = "http://127.0.0.1:9/t"
failure_threshold = 2
alert = ["hook", "am"]

[[probe]]
name = "push"
kind = "http"
url = "http://127.0.0.1:9/p"
failure_threshold = 2
depends_on = ["token"]
alert = ["hook"]

[[probe]]
name = "cert"
kind = "http"
url = "http://127.0.0.1:9/c"
health_set = "certs"
failure_threshold = 1
remind_every = "1h"
alert = ["hook"]

[[maintenance]]
name = "nightly"
probes = ["cert"]
schedule = "0 2 * * *"
duration = "1h"
"#;

    fn setup(dir: &std::path::Path, store: Arc<Store>) -> Engine {
        let path = dir.join("sonde.toml");
        std::fs::write(&path, CONFIG).unwrap();
        let config = Loader { env: &|_| None }.load(&path).unwrap();
        let repost = HashMap::from([("am".to_string(), std::time::Duration::from_secs(60))]);
        Engine::new(
            Arc::new(config),
            store,
            repost,
            Arc::new(Notify::new()),
            Arc::new(Metrics::new()),
        )
        .unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn bad(summary: &str, t: DateTime<Utc>) -> Outcome {
        let mut o = Outcome::critical(Category::Network, summary);
        o.started_at = t;
        o
    }

    fn good(t: DateTime<Utc>) -> Outcome {
        let mut o = Outcome::ok("fine");
        o.started_at = t;
        o
    }

    fn queued(store: &Store, channel: &str, now: i64) -> Vec<String> {
        let mut keys = Vec::new();
        while let Some(e) = store.next_due(channel, now).unwrap() {
            store.mark_delivered(e.id, now).unwrap();
            keys.push(e.key);
        }
        keys
    }

    #[test]
    fn a_locked_store_neither_stops_evaluation_nor_holds_alerts_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Arc::new(Store::open(&path).unwrap());
        store
            .set_busy_timeout(std::time::Duration::from_millis(10))
            .unwrap();
        let pending = Arc::new(PendingWrites::new(
            "s.db",
            Arc::new(Notify::new()),
            Arc::new(Metrics::new()),
        ));
        let mut e = setup(dir.path(), store.clone()).with_pending(pending.clone());
        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let t = at("2026-11-29T10:00:00Z");
        let mut raised = Vec::new();
        for i in 0..2 {
            let now = t + chrono::Duration::seconds(i);
            raised.extend(e.on_outcome("token", &bad("ACS50008", now), now).unwrap());
        }
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert_eq!(e.view("token").unwrap().state, MonitorState::Unhealthy);
        let unsent = pending.unsent("hook", tokio::time::Instant::now());
        assert_eq!(unsent[0].key, "token:1:firing");
        assert!(pending.flush(&store, t.timestamp()).is_err());
        other.execute_batch("COMMIT").unwrap();
        pending.flush(&store, t.timestamp()).unwrap();
        assert_eq!(
            queued(&store, "hook", t.timestamp() + 1),
            vec!["token:1:firing"]
        );
    }

    #[test]
    fn a_dependency_problem_alerts_once_and_names_the_root_cause() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::in_memory().unwrap());
        let mut e = setup(dir.path(), store.clone());
        let t = at("2026-11-29T10:00:00Z");
        for i in 0..2 {
            let now = t + chrono::Duration::seconds(i);
            e.on_outcome("token", &bad("ACS50008", now), now).unwrap();
            let raised = e
                .on_outcome("push", &bad("token: ACS50008", now), now)
                .unwrap();
            assert!(
                raised.is_empty(),
                "push stays quiet while token is unhealthy"
            );
        }
        let now = t.timestamp() + 1;
        assert_eq!(queued(&store, "hook", now), vec!["token:1:firing"]);
        assert_eq!(queued(&store, "am", now), vec!["token:1:firing"]);
        let views = e.views();
        let push = views.iter().find(|v| v.probe == "push").unwrap();
        assert_eq!(push.state, MonitorState::Unhealthy);
        assert_eq!(push.suppressed_by.as_deref(), Some("token"));
        let sets = e.health_sets();
        assert_eq!(
            sets,
            vec![
                ("certs".into(), MonitorState::Unknown),
                ("default".into(), MonitorState::Unhealthy)
            ]
        );
        // What the API reads: published one probe at a time.
        let shared = SharedViews::new(Published::unknown(e.config.clone()));
        assert_eq!(views[0].probe, "token");
        assert_eq!(shared.get("token").unwrap().state, MonitorState::Unknown);
        shared.publish(e.view("token").unwrap());
        assert_eq!(shared.get("token"), Some(views[0].clone()));
        assert_eq!(
            shared.get("push").unwrap().state,
            MonitorState::Unknown,
            "not published yet"
        );
        // A probe outside the published config is ignored.
        shared.publish(MonitorView {
            probe: "nonesuch".into(),
            ..views[1].clone()
        });
        assert!(shared.get("nonesuch").is_none());
        for v in &views {
            shared.publish(v.clone());
        }
        assert_eq!(shared.all(), views);
        assert_eq!(health_sets_of(&shared.all()), sets);
    }

    #[test]
    fn maintenance_and_silences_hold_notices_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::in_memory().unwrap());
        let mut e = setup(dir.path(), store.clone());
        // A silence from the CLI on the token probe (read by the engine within 1 s).
        let t = at("2026-11-29T10:00:00Z");
        store
            .add_silence(
                "token",
                t.timestamp() - 60,
                t.timestamp() + 3600,
                "rotating the key",
            )
            .unwrap();
        // 02:30 is inside the nightly window: no notice, state maintenance.
        let night = at("2026-11-29T02:30:00Z");
        assert!(e
            .on_outcome("cert", &bad("expired", night), night)
            .unwrap()
            .is_empty());
        assert_eq!(
            e.views().iter().find(|v| v.probe == "cert").unwrap().state,
            MonitorState::Maintenance
        );
        for i in 0..3 {
            let now = t + chrono::Duration::seconds(i);
            assert!(e
                .on_outcome("token", &bad("ACS50008", now), now)
                .unwrap()
                .is_empty());
        }
        // After the silence, the problem that persists fires.
        let later = t + chrono::Duration::hours(2);
        let raised = e
            .on_outcome("token", &bad("ACS50008", later), later)
            .unwrap();
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert_eq!(raised[0].event, AlertEvent::Firing);
    }

    #[test]
    fn reminders_reposts_and_a_restart_that_forgets_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::in_memory().unwrap());
        let t = at("2026-11-29T10:00:00Z");
        {
            let mut e = setup(dir.path(), store.clone());
            let raised = e.on_outcome("cert", &bad("expires in 3d", t), t).unwrap();
            assert_eq!(raised[0].key, "cert:1:firing");
            for i in 0..2 {
                let now = t + chrono::Duration::seconds(i);
                e.on_outcome("token", &bad("ACS50008", now), now).unwrap();
            }
        }
        // Restarted: the open problems are not fired again.
        let mut e = setup(dir.path(), store.clone());
        let now = t + chrono::Duration::seconds(30);
        assert!(e
            .on_outcome("cert", &bad("expires in 3d", now), now)
            .unwrap()
            .is_empty());
        // An hour later the reminder is due; the Alertmanager channel got re-posts.
        let hour = t + chrono::Duration::minutes(61);
        let reminders = e.tick(hour).unwrap();
        assert_eq!(reminders.len(), 1, "{reminders:?}");
        assert_eq!(reminders[0].event, AlertEvent::Reminder);
        assert_eq!(reminders[0].summary, "expires in 3d");
        let am = queued(&store, "am", hour.timestamp());
        assert_eq!(am.len(), 2, "{am:?}");
        assert!(am[1].starts_with("token:1:firing:repost:"), "{am:?}");
        // (`queued` marks what it returns delivered: each call shows what is new.)
        // The next re-post waits for its interval after the last one.
        let soon = hour + chrono::Duration::seconds(30);
        assert!(e.tick(soon).unwrap().is_empty());
        assert_eq!(queued(&store, "am", soon.timestamp()), Vec::<String>::new());
        let later = hour + chrono::Duration::seconds(61);
        e.tick(later).unwrap();
        let am = queued(&store, "am", later.timestamp());
        assert_eq!(am.len(), 1, "{am:?}");
        assert!(am[0].starts_with("token:1:firing:repost:"), "{am:?}");
        // Once the token probe recovers, its alert is resolved and no longer re-posted.
        for i in 0..2 {
            let now = later + chrono::Duration::seconds(i);
            e.on_outcome("token", &good(now), now).unwrap();
        }
        let am = queued(&store, "am", later.timestamp() + 1);
        assert_eq!(am, ["token:2:resolved"], "{am:?}");
        let much_later = later + chrono::Duration::minutes(10);
        e.tick(much_later).unwrap();
        assert_eq!(
            queued(&store, "am", much_later.timestamp()),
            Vec::<String>::new()
        );
        // Recovery resolves, once.
        let r = e.on_outcome("cert", &good(hour), hour).unwrap();
        assert!(r.is_empty());
        let r = e.on_outcome("cert", &good(hour), hour).unwrap();
        assert_eq!(
            r.iter().map(|a| a.event).collect::<Vec<_>>(),
            vec![AlertEvent::Resolved]
        );
        assert!(r[0].ends_at.is_some());
    }

    #[test]
    fn reconfigure_keeps_monitors_by_name_drops_removed_ones_and_takes_new_policies() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::in_memory().unwrap());
        let mut e = setup(dir.path(), store.clone());
        let t = at("2026-11-29T10:00:00Z");
        for i in 0..2 {
            let now = t + chrono::Duration::seconds(i);
            e.on_outcome("token", &bad("ACS50008", now), now).unwrap();
        }
        assert_eq!(e.view("token").unwrap().state, MonitorState::Unhealthy);
        let since = e.view("token").unwrap().since;
        // `push` removed, `token` resolves after one success now, `extra` is new.
        let path = dir.path().join("sonde.toml");
        let new = CONFIG
            .replace(
                "name = \"push\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/p\"\nfailure_threshold = 2\ndepends_on = [\"token\"]\nalert = [\"hook\"]",
                "name = \"extra\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/x\"",
            )
            .replace(
                "url = \"http://127.0.0.1:9/t\"\n",
                "url = \"http://127.0.0.1:9/t\"\nsuccess_threshold = 1\n",
            );
        assert_ne!(new, CONFIG);
        std::fs::write(&path, new).unwrap();
        let config = Loader { env: &|_| None }.load(&path).unwrap();
        let shared = SharedViews::new(e.published());
        assert!(shared.get("push").is_some());
        e.reconfigure(Arc::new(config), HashMap::new()).unwrap();
        let names: Vec<String> = e.views().into_iter().map(|v| v.probe).collect();
        assert_eq!(names, ["token", "extra", "cert"]);
        assert!(e.view("push").is_none());
        let token = e.view("token").unwrap();
        assert_eq!(
            token.state,
            MonitorState::Unhealthy,
            "kept across the reload"
        );
        assert_eq!(token.since, since);
        assert_eq!(e.view("extra").unwrap().state, MonitorState::Unknown);
        let now = t + chrono::Duration::seconds(10);
        e.on_outcome("token", &good(now), now).unwrap();
        assert_eq!(e.view("token").unwrap().state, MonitorState::Healthy);
        shared.replace(e.published());
        assert_eq!(shared.get("extra").unwrap().state, MonitorState::Unknown);
        assert!(shared.get("push").is_none());
    }
}
