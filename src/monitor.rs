//! Monitors: the pure evaluation that turns a probe's results into a health state
//! and into the notices operators should receive (firing, resolved, reminder,
//! flapping started/stopped). Also maintenance windows and the worst-of rule for
//! health sets.
//!
//! Nothing here does I/O or reads a clock: the caller passes `now`, the previous
//! [`Monitor`] (restored from the store as JSON), the policy of the probe and an
//! [`EvalContext`] saying whether the probe is enabled, in maintenance, or blocked by
//! an unhealthy dependency. Delivering notices (the alert dispatcher), persisting
//! monitors (the store) and deciding which window or dependency applies (the agent,
//! with [`root_cause`] and `Config::maintenance_at`) live elsewhere.
//!
//! # Rules
//!
//! - **Results.** `ok` is good, `warning` is degraded, and both `critical` and
//!   `unknown` are failures: `unknown` means the probe could not tell whether the
//!   target works (a timeout inside the probe, a panic), which an operator must hear
//!   about as much as a failure, as Nagios notifies on UNKNOWN.
//! - **Thresholds.** `failure_threshold` (default 3) consecutive failures make the
//!   monitor `unhealthy`; as many consecutive results that are warning or worse make
//!   it `degraded`. `success_threshold` (default 2) consecutive `ok` results make it
//!   `healthy` again; as many results without a failure turn `unhealthy` into
//!   `degraded`. So one blip neither alerts nor resolves. Before the first result the
//!   state is `unknown`; the first `ok` makes it `healthy` at once, since there is
//!   nothing to resolve.
//! - **Notices reconcile** what receivers were told with the state: a problem
//!   (degraded or unhealthy) that receivers have not heard of fires, on a result
//!   that shows it; a problem they were told of fires again only when it gets
//!   worse (warning to critical; getting better is silent); a healthy monitor whose
//!   problem they were told of sends a resolved notice (unless `notify_resolved` is
//!   off). While notices are held back (maintenance, flapping, a blocking
//!   dependency), the state still moves, and the reconciliation catches up on the
//!   first result after: a problem that outlived the hold fires then, and one that
//!   ended during it resolves then.
//! - **Flapping** (Nagios): over the last 21 results, each change between
//!   consecutive results (ok, degraded, failed) counts with a weight from 0.8 (oldest)
//!   to 1.2 (newest); the sum over 20 possible changes is the percent state change.
//!   Flapping starts when it exceeds `flap_high` and stops when it falls below
//!   `flap_low`. While flapping, one "flapping started" notice replaces the stream of
//!   firing and resolved notices, and no reminders are sent.
//! - **Dependencies.** When the caller says a dependency (the root cause) is
//!   unhealthy, firing, reminder and flapping-started notices are held back and the
//!   monitor records `suppressed_by`; all-clear notices (resolved, flapping stopped)
//!   still go out and name the root cause.
//! - **Maintenance** shows the state `maintenance` and sends nothing; results still
//!   count. **Disabled** shows `disabled`, sends nothing and ignores results: the
//!   streaks and the flapping history start afresh when the probe is enabled again.
//! - **Reminders** repeat a notified problem every `remind_every`, multiplied by
//!   `remind_backoff` after each one and capped at `remind_max`; see [`due_reminder`].
//! - Every notice gets the next value of the monitor's `seq`, which is persisted with
//!   it, so [`Notice::idempotency_key`] is the same when an evaluation is replayed
//!   after a restart.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::outcome::Status;
use crate::schedule::Schedule;
use crate::spec::SpecProblem;

pub(crate) const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
pub(crate) const DEFAULT_SUCCESS_THRESHOLD: u32 = 2;
/// Percent state change under which flapping stops.
pub(crate) const DEFAULT_FLAP_LOW: f64 = 20.0;
/// Percent state change over which flapping starts.
pub(crate) const DEFAULT_FLAP_HIGH: f64 = 30.0;
/// Results kept for flapping detection, as in Nagios.
pub(crate) const HISTORY_LEN: usize = 21;

crate::named_enum! {
    /// The state of one monitor, as operators see it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum MonitorState {
        /// No result yet.
        #[default]
        Unknown = "unknown",
        Healthy = "healthy",
        /// Warnings, at least `failure_threshold` in a row.
        Degraded = "degraded",
        /// Failures, at least `failure_threshold` in a row.
        Unhealthy = "unhealthy",
        /// The probe is disabled in the configuration.
        Disabled = "disabled",
        /// A maintenance window covers the probe.
        Maintenance = "maintenance",
    }
}

impl MonitorState {
    /// Rank for "worst of": healthy 0 < unknown 1 < degraded 2 < unhealthy 3. An
    /// unknown probe ranks above a healthy one, so a set is not shown healthy while
    /// one of its probes has not answered. Disabled and maintenance have no rank:
    /// they say nothing about the target's health.
    pub(crate) fn severity(self) -> Option<u8> {
        match self {
            MonitorState::Healthy => Some(0),
            MonitorState::Unknown => Some(1),
            MonitorState::Degraded => Some(2),
            MonitorState::Unhealthy => Some(3),
            MonitorState::Disabled | MonitorState::Maintenance => None,
        }
    }

    /// Degraded or unhealthy.
    pub(crate) fn is_problem(self) -> bool {
        self.problem_severity().is_some()
    }

    fn problem_severity(self) -> Option<Severity> {
        match self {
            MonitorState::Degraded => Some(Severity::Warning),
            MonitorState::Unhealthy => Some(Severity::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for MonitorState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgent a notice is; ordered `Info < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum NoticeKind {
    /// A problem started, or got worse (warning to critical).
    Firing,
    /// A problem receivers were told of has ended.
    Resolved,
    /// A notified problem goes on.
    Reminder,
    FlappingStarted,
    FlappingStopped,
}

impl NoticeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Firing => "firing",
            NoticeKind::Resolved => "resolved",
            NoticeKind::Reminder => "reminder",
            NoticeKind::FlappingStarted => "flapping_started",
            NoticeKind::FlappingStopped => "flapping_stopped",
        }
    }
}

impl fmt::Display for NoticeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something to tell operators about one monitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Notice {
    pub kind: NoticeKind,
    /// Firing and reminder: the problem's severity. Resolved: the severity of the
    /// last firing notice, so that receivers keying alerts on their labels (such as
    /// Alertmanager) match it. Flapping started: warning; flapping stopped: info.
    pub severity: Severity,
    /// The monitor's sequence number for this notice; unique per probe.
    pub seq: u64,
    /// When the problem (or the flapping) began.
    pub since: DateTime<Utc>,
    /// When the notice was made.
    pub at: DateTime<Utc>,
    /// The unhealthy dependency blocking the monitor when the notice was made.
    pub root_cause: Option<String>,
}

impl Notice {
    /// `"{probe}:{seq}:{kind}"`: the same for the same transition across restarts,
    /// since `seq` is persisted with the monitor.
    pub(crate) fn idempotency_key(&self, probe: &str) -> String {
        format!("{probe}:{}:{}", self.seq, self.kind)
    }
}

/// The monitor settings of one probe: the keys of a `[[probe]]` table listed in
/// [`Policy::KEYS`], each with its default. The config loader deserializes them
/// once from the probe's table and reports what [`Policy::validate`] finds; the
/// evaluation below still guards against values it would refuse.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Consecutive bad results before a problem; 0 is taken as 1.
    pub failure_threshold: u32,
    /// Consecutive good results before recovery; 0 is taken as 1.
    pub success_threshold: u32,
    /// Interval of reminders while a notified problem lasts; `None` (or zero): none.
    #[serde(with = "crate::human::duration::option")]
    pub remind_every: Option<Duration>,
    /// Factor applied to the reminder interval after each reminder; values below
    /// 1.0 (or not finite) are taken as 1.0.
    pub remind_backoff: f64,
    /// Cap of the reminder interval; never below `remind_every`.
    #[serde(with = "crate::human::duration::option")]
    pub remind_max: Option<Duration>,
    pub notify_resolved: bool,
    /// Percent state change under which flapping stops.
    pub flap_low: f64,
    /// Percent state change over which flapping starts.
    pub flap_high: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            success_threshold: DEFAULT_SUCCESS_THRESHOLD,
            remind_every: None,
            remind_backoff: 1.0,
            remind_max: None,
            notify_resolved: true,
            flap_low: DEFAULT_FLAP_LOW,
            flap_high: DEFAULT_FLAP_HIGH,
        }
    }
}

impl Policy {
    /// The probe-table keys that belong to the policy (its serde field names).
    pub(crate) const KEYS: &'static [&'static str] = &[
        "failure_threshold",
        "success_threshold",
        "remind_every",
        "remind_backoff",
        "remind_max",
        "notify_resolved",
        "flap_low",
        "flap_high",
    ];

    /// Every value out of bounds, by key. `given` says whether a key was written
    /// in the table: a setting that only matters with another one is refused when
    /// given alone, and a message quoting a default says so.
    pub(crate) fn validate(&self, given: &dyn Fn(&str) -> bool) -> Vec<SpecProblem> {
        let mut problems = Vec::new();
        self.check_reminders(given, &mut problems);
        self.check_flapping(given, &mut problems);
        for (key, v) in [
            ("failure_threshold", self.failure_threshold),
            ("success_threshold", self.success_threshold),
        ] {
            if v == 0 {
                problems.push(SpecProblem::new(key, "must be at least 1"));
            }
        }
        problems
    }

    fn check_reminders(&self, given: &dyn Fn(&str) -> bool, problems: &mut Vec<SpecProblem>) {
        if self.remind_every.is_some_and(|d| d.is_zero()) {
            problems.push(SpecProblem::new("remind_every", "must be more than 0s"));
        }
        let backoff = self.remind_backoff;
        if !(backoff.is_finite() && backoff >= 1.0) {
            problems.push(SpecProblem::new(
                "remind_backoff",
                format!(
                    "must be at least 1.0, not {backoff} (1.0 keeps the interval, \
                     2.0 doubles it after each reminder)"
                ),
            ));
        }
        match (self.remind_every, self.remind_max) {
            (Some(every), Some(max)) if max < every => problems.push(SpecProblem::new(
                "remind_max",
                format!(
                    "must be at least `remind_every` ({})",
                    humantime::format_duration(every)
                ),
            )),
            _ => {}
        }
        if self.remind_every.is_none() {
            for key in ["remind_backoff", "remind_max"] {
                if given(key) {
                    problems.push(SpecProblem::new(
                        key,
                        "has no effect without `remind_every`",
                    ));
                }
            }
        }
    }

    fn check_flapping(&self, given: &dyn Fn(&str) -> bool, problems: &mut Vec<SpecProblem>) {
        let mut in_range = true;
        for (key, v) in [("flap_low", self.flap_low), ("flap_high", self.flap_high)] {
            if !(v > 0.0 && v <= 100.0) {
                problems.push(SpecProblem::new(
                    key,
                    format!("must be a percentage above 0 and at most 100, not {v}"),
                ));
                in_range = false;
            }
        }
        let (low, high) = (self.flap_low, self.flap_high);
        if in_range && low >= high {
            let default = |key| if given(key) { "" } else { ", the default" };
            let key = if given("flap_low") {
                "flap_low"
            } else {
                "flap_high"
            };
            problems.push(SpecProblem::new(
                key,
                format!(
                    "`flap_low` ({low}{}) must be below `flap_high` ({high}{})",
                    default("flap_low"),
                    default("flap_high")
                ),
            ));
        }
    }

    /// The wait after the last notice when `sent` reminders have gone out since
    /// the problem fired: `remind_every × remind_backoff^sent`, capped.
    pub(crate) fn reminder_interval(&self, sent: u32) -> Option<Duration> {
        let base = self.remind_every.filter(|d| !d.is_zero())?;
        let backoff = if self.remind_backoff.is_finite() && self.remind_backoff >= 1.0 {
            self.remind_backoff
        } else {
            1.0
        };
        let secs = base.as_secs_f64() * backoff.powf(f64::from(sent));
        let interval = Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX);
        Some(match self.remind_max {
            Some(max) => interval.min(max.max(base)),
            None => interval,
        })
    }

    fn failures_needed(&self) -> u32 {
        self.failure_threshold.max(1)
    }

    fn successes_needed(&self) -> u32 {
        self.success_threshold.max(1)
    }
}

/// What the caller knows about the probe beyond its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EvalContext {
    pub enabled: bool,
    pub in_maintenance: bool,
    /// The unhealthy dependency at the root of the probe's `depends_on` chain, if
    /// any (see [`root_cause`]).
    pub blocked_by: Option<String>,
}

impl Default for EvalContext {
    fn default() -> Self {
        EvalContext {
            enabled: true,
            in_maintenance: false,
            blocked_by: None,
        }
    }
}

/// Consecutive results of each kind, newest last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Streaks {
    /// `ok` results.
    pub ok: u32,
    /// Results that are not failures (`ok` or `warning`).
    pub not_failing: u32,
    /// Results that are not `ok`.
    pub bad: u32,
    /// Failures (`critical` or `unknown`).
    pub failing: u32,
    /// When the current run of bad results began.
    pub bad_since: Option<DateTime<Utc>>,
}

impl Streaks {
    fn push(&mut self, level: Level, now: DateTime<Utc>) {
        fn bump(n: u32, counts: bool) -> u32 {
            if counts {
                n.saturating_add(1)
            } else {
                0
            }
        }
        self.ok = bump(self.ok, level == Level::Ok);
        self.not_failing = bump(self.not_failing, level != Level::Failed);
        if level == Level::Ok {
            self.bad_since = None;
        } else if self.bad == 0 || self.bad_since.is_none() {
            self.bad_since = Some(now);
        }
        self.bad = bump(self.bad, level != Level::Ok);
        self.failing = bump(self.failing, level == Level::Failed);
    }
}

/// An open problem: the monitor is (or, until receivers hear it ended, was)
/// degraded or unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Problem {
    /// The first bad result of the run that opened it.
    pub since: DateTime<Utc>,
    /// Warning while degraded, critical while unhealthy.
    pub severity: Severity,
    /// The highest severity receivers were told of; `None` until it fires.
    pub notified: Option<Severity>,
    /// The last firing or reminder notice.
    pub last_notified_at: Option<DateTime<Utc>>,
    /// Reminders since the last firing notice.
    pub reminders_sent: u32,
}

/// Everything a monitor remembers between results; persisted as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Monitor {
    /// What operators see.
    pub state: MonitorState,
    /// When `state` last changed.
    pub state_since: Option<DateTime<Utc>>,
    /// The state the results alone give: unknown, healthy, degraded or unhealthy.
    /// It differs from `state` during maintenance and while disabled.
    pub health: MonitorState,
    /// The state the latest result points to, while thresholds hold it back.
    pub pending: Option<MonitorState>,
    pub streaks: Streaks,
    /// The last [`HISTORY_LEN`] results, oldest first.
    pub history: VecDeque<Status>,
    pub flapping: bool,
    /// The percent state change after the latest result.
    pub flap_percent: f64,
    /// When the current (or last) flapping began.
    pub flapping_since: Option<DateTime<Utc>>,
    /// Whether receivers were told flapping started (and not yet that it stopped).
    pub flap_notified: bool,
    pub problem: Option<Problem>,
    /// The root cause holding this monitor's alerts back.
    pub suppressed_by: Option<String>,
    /// The last notice's sequence number.
    pub seq: u64,
    pub last_result_at: Option<DateTime<Utc>>,
}

impl Monitor {
    #[cfg(test)]
    pub(crate) fn new() -> Monitor {
        Monitor::default()
    }

    /// When the next reminder is due under `policy`, if one will be: the problem
    /// was notified, still holds, and nothing holds notices back. The agent sleeps
    /// until then and calls [`due_reminder`].
    pub(crate) fn reminder_due_at(&self, policy: &Policy) -> Option<DateTime<Utc>> {
        if matches!(
            self.state,
            MonitorState::Disabled | MonitorState::Maintenance
        ) || !self.health.is_problem()
            || self.flapping
            || self.suppressed_by.is_some()
        {
            return None;
        }
        let problem = self.problem.as_ref()?;
        problem.notified?;
        let last = problem.last_notified_at?;
        let wait = policy.reminder_interval(problem.reminders_sent)?;
        last.checked_add_signed(chrono::Duration::from_std(wait).ok()?)
    }

    fn set_state(&mut self, state: MonitorState, now: DateTime<Utc>) {
        if self.state != state || self.state_since.is_none() {
            self.state = state;
            self.state_since = Some(now);
        }
    }

    fn notice(
        &mut self,
        kind: NoticeKind,
        severity: Severity,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
        root_cause: Option<String>,
    ) -> Notice {
        self.seq = self.seq.saturating_add(1);
        Notice {
            kind,
            severity,
            seq: self.seq,
            since,
            at: now,
            root_cause,
        }
    }
}

/// What one result says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Ok,
    Degraded,
    Failed,
}

impl Level {
    fn of(status: Status) -> Level {
        match status {
            Status::Ok => Level::Ok,
            Status::Warning => Level::Degraded,
            Status::Critical | Status::Unknown => Level::Failed,
        }
    }

    fn state(self) -> MonitorState {
        match self {
            Level::Ok => MonitorState::Healthy,
            Level::Degraded => MonitorState::Degraded,
            Level::Failed => MonitorState::Unhealthy,
        }
    }

    /// Whether a result of this level shows a problem of `severity`.
    fn shows(self, severity: Severity) -> bool {
        match severity {
            Severity::Critical => self == Level::Failed,
            Severity::Warning => self != Level::Ok,
            Severity::Info => true,
        }
    }
}

/// The health after the streaks moved; see the module doc for the rules.
fn next_health(health: MonitorState, s: &Streaks, policy: &Policy) -> MonitorState {
    let (fail, succeed) = (policy.failures_needed(), policy.successes_needed());
    if s.failing >= fail {
        return MonitorState::Unhealthy;
    }
    if s.ok >= succeed {
        return MonitorState::Healthy;
    }
    match health {
        MonitorState::Unhealthy if s.not_failing >= succeed => MonitorState::Degraded,
        MonitorState::Unhealthy | MonitorState::Degraded => health,
        MonitorState::Healthy if s.bad >= fail => MonitorState::Degraded,
        MonitorState::Healthy => health,
        // Unknown (the others are never stored as health).
        _ if s.ok >= 1 => MonitorState::Healthy,
        _ if s.bad >= fail => MonitorState::Degraded,
        _ => MonitorState::Unknown,
    }
}

/// Nagios' weighted percent state change over `history` (oldest first): change
/// number x of the 20 a full window holds weighs 0.8 + 0.4 (x - 1) / 19, and the sum
/// is taken over 20, so a short history counts as one without the missing changes.
pub(crate) fn flap_percent(history: &VecDeque<Status>) -> f64 {
    let n = history.len().min(HISTORY_LEN);
    let changes = (HISTORY_LEN - 1) as f64;
    let mut sum = 0.0;
    let mut prev: Option<Level> = None;
    for (i, status) in history.iter().skip(history.len() - n).enumerate() {
        let level = Level::of(*status);
        if prev.is_some_and(|p| p != level) {
            // The change between entries i-1 and i; the newest change is number 20.
            let x = (HISTORY_LEN - n + i) as f64;
            sum += 0.8 + 0.4 * (x - 1.0) / (changes - 1.0);
        }
        prev = Some(level);
    }
    sum * 100.0 / changes
}

/// Evaluates one result: the monitor after it, and the notices to send, in order.
pub(crate) fn evaluate(
    prev: &Monitor,
    status: Status,
    now: DateTime<Utc>,
    policy: &Policy,
    ctx: &EvalContext,
) -> (Monitor, Vec<Notice>) {
    let mut m = prev.clone();
    let mut notices = Vec::new();
    m.last_result_at = Some(now);

    if !ctx.enabled {
        // A disabled probe's results (a run on demand, say) are not what the
        // operator asked to watch; when it is enabled again it starts afresh, but
        // keeps its problem so that receivers still hear when it ends.
        m.streaks = Streaks::default();
        m.history.clear();
        m.pending = None;
        m.suppressed_by = None;
        m.set_state(MonitorState::Disabled, now);
        return (m, notices);
    }

    let level = Level::of(status);
    m.streaks.push(level, now);
    m.history.push_back(status);
    while m.history.len() > HISTORY_LEN {
        m.history.pop_front();
    }
    m.health = next_health(m.health, &m.streaks, policy);
    m.pending = (level.state() != m.health).then_some(level.state());

    m.flap_percent = flap_percent(&m.history);
    if !m.flapping && m.flap_percent > policy.flap_high {
        m.flapping = true;
        m.flapping_since = Some(now);
    } else if m.flapping && m.flap_percent < policy.flap_low {
        m.flapping = false;
    }

    match m.health.problem_severity() {
        Some(severity) => {
            let since = m.streaks.bad_since.unwrap_or(now);
            let problem = m.problem.get_or_insert(Problem {
                since,
                severity,
                notified: None,
                last_notified_at: None,
                reminders_sent: 0,
            });
            problem.severity = severity;
        }
        // A problem nobody was told of ends quietly; a notified one stays until its
        // resolved notice can go out.
        None if m.health == MonitorState::Healthy
            && m.problem.as_ref().is_some_and(|p| p.notified.is_none()) =>
        {
            m.problem = None;
        }
        None => {}
    }
    m.suppressed_by = ctx
        .blocked_by
        .clone()
        .filter(|_| m.health.is_problem() || m.flapping);
    let shown = if ctx.in_maintenance {
        MonitorState::Maintenance
    } else {
        m.health
    };
    m.set_state(shown, now);
    if ctx.in_maintenance {
        return (m, notices);
    }

    let blocked = ctx.blocked_by.is_some();
    let flap_since = m.flapping_since.unwrap_or(now);
    if m.flapping && !m.flap_notified && !blocked {
        notices.push(m.notice(
            NoticeKind::FlappingStarted,
            Severity::Warning,
            flap_since,
            now,
            None,
        ));
        m.flap_notified = true;
    } else if !m.flapping && m.flap_notified {
        notices.push(m.notice(
            NoticeKind::FlappingStopped,
            Severity::Info,
            flap_since,
            now,
            ctx.blocked_by.clone(),
        ));
        m.flap_notified = false;
    }
    if m.flapping {
        return (m, notices);
    }

    if m.health == MonitorState::Healthy {
        if let Some(problem) = m.problem.take() {
            if let (Some(told), true) = (problem.notified, policy.notify_resolved) {
                notices.push(m.notice(
                    NoticeKind::Resolved,
                    told,
                    problem.since,
                    now,
                    ctx.blocked_by.clone(),
                ));
            }
        }
    } else if let (Some(problem), false) = (m.problem.as_ref(), blocked) {
        let severity = problem.severity;
        let news = problem.notified.is_none_or(|told| told < severity);
        if news && level.shows(severity) {
            let since = problem.since;
            notices.push(m.notice(NoticeKind::Firing, severity, since, now, None));
            if let Some(problem) = m.problem.as_mut() {
                problem.notified = Some(severity);
                problem.last_notified_at = Some(now);
                problem.reminders_sent = 0;
            }
        }
    }
    (m, notices)
}

/// A reminder, if one is due at `now` (see [`Monitor::reminder_due_at`]), with the
/// monitor after sending it. The next one waits `remind_backoff` times longer (up
/// to `remind_max`), counted from `now`, so a late timer does not cause a burst.
pub(crate) fn due_reminder(
    m: &Monitor,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Option<(Monitor, Notice)> {
    let due = m.reminder_due_at(policy)?;
    if now < due {
        return None;
    }
    let mut next = m.clone();
    let problem = next.problem.as_mut()?;
    problem.reminders_sent = problem.reminders_sent.saturating_add(1);
    problem.last_notified_at = Some(now);
    let (severity, since) = (problem.severity, problem.since);
    let notice = next.notice(NoticeKind::Reminder, severity, since, now, None);
    Some((next, notice))
}

/// A health set's state: its worst monitor's (unhealthy > degraded > unknown >
/// healthy). Disabled and maintenance monitors do not count unless all are such:
/// then the set is in maintenance if any is, else disabled. An empty set is unknown.
pub(crate) fn health_set_state(states: impl IntoIterator<Item = MonitorState>) -> MonitorState {
    let mut worst: Option<MonitorState> = None;
    let mut any_maintenance = false;
    let mut any_disabled = false;
    for state in states {
        match state {
            MonitorState::Maintenance => any_maintenance = true,
            MonitorState::Disabled => any_disabled = true,
            _ => {
                if worst.is_none_or(|w| w.severity() < state.severity()) {
                    worst = Some(state);
                }
            }
        }
    }
    match worst {
        Some(state) => state,
        None if any_maintenance => MonitorState::Maintenance,
        None if any_disabled => MonitorState::Disabled,
        None => MonitorState::Unknown,
    }
}

/// The root cause blocking `probe`: walking its `depends_on` transitively (first
/// listed first), the deepest dependency that is unhealthy. `None` when no
/// dependency is. Cycles (which the config rejects) are walked once.
pub(crate) fn root_cause<'a>(
    probe: &str,
    depends_on: impl Fn(&str) -> &'a [String],
    unhealthy: impl Fn(&str) -> bool,
) -> Option<String> {
    // Depth-first with an explicit path (a dependency, its dependencies, the
    // next one to look at): a long chain must not exhaust the stack. A
    // dependency is judged once all of its own are: the deepest one wins.
    let mut seen = HashSet::from([probe.to_string()]);
    let mut path: Vec<(Option<&'a str>, &'a [String], usize)> = vec![(None, depends_on(probe), 0)];
    while let Some(top) = path.last_mut() {
        let (name, deps, next) = *top;
        if let Some(dep) = deps.get(next) {
            top.2 += 1;
            if seen.insert(dep.clone()) {
                path.push((Some(dep.as_str()), depends_on(dep), 0));
            }
            continue;
        }
        path.pop();
        if let Some(name) = name.filter(|name| unhealthy(name)) {
            return Some(name.to_string());
        }
    }
    None
}

/// When a `[[maintenance]]` window holds a probe's notices back.
#[derive(Debug, Clone, PartialEq)]
pub enum MaintenanceWindow {
    /// From each fire time of `schedule`, for `duration`.
    Recurring {
        schedule: Schedule,
        duration: Duration,
    },
    /// Once, from `from` (inclusive) to `to` (exclusive).
    OneOff {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

impl MaintenanceWindow {
    /// Whether `now` falls in the window: for a recurring one, whether some fire
    /// time `t` has `t <= now < t + duration`, i.e. whether the first fire after
    /// `now - duration` is not after `now`.
    pub(crate) fn active_at(&self, now: DateTime<Utc>) -> bool {
        match self {
            MaintenanceWindow::OneOff { from, to } => *from <= now && now < *to,
            MaintenanceWindow::Recurring { schedule, duration } => {
                let Ok(duration) = chrono::Duration::from_std(*duration) else {
                    return false;
                };
                let Some(start) = now.checked_sub_signed(duration) else {
                    return false;
                };
                schedule.next_after(start).is_some_and(|t| t <= now)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use Status::{Critical as C, Ok as O, Unknown as U, Warning as W};

    #[test]
    fn policy_keys_are_its_serde_fields_and_missing_keys_take_the_defaults() {
        let err = toml::from_str::<Policy>("bogus = 1")
            .unwrap_err()
            .to_string();
        let listed: Vec<&str> = err
            .split("expected one of ")
            .nth(1)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .split(", ")
            .map(|k| k.trim_matches('`'))
            .collect();
        assert_eq!(listed, Policy::KEYS, "{err}");
        assert_eq!(toml::from_str::<Policy>("").unwrap(), Policy::default());
        let p: Policy = toml::from_str(
            "failure_threshold = 1\nremind_every = \"1h\"\nremind_backoff = 2\nflap_low = 10",
        )
        .unwrap();
        assert_eq!(p.failure_threshold, 1);
        assert_eq!(p.remind_every, Some(Duration::from_secs(3600)));
        assert_eq!(
            (p.remind_backoff, p.flap_low, p.flap_high),
            (2.0, 10.0, 30.0)
        );
        assert!(p.validate(&|_| true).is_empty());
    }

    #[test]
    fn policy_bounds_name_the_key_and_the_defaults_they_compare_with() {
        let keys = |p: &Policy, given: &dyn Fn(&str) -> bool| {
            p.validate(given)
                .into_iter()
                .map(|problem| (problem.key, problem.message))
                .collect::<Vec<_>>()
        };
        let all = |_: &str| true;
        let bad = Policy {
            failure_threshold: 0,
            success_threshold: 0,
            remind_every: Some(Duration::ZERO),
            remind_backoff: f64::NAN,
            ..Policy::default()
        };
        let found: Vec<&str> = keys(&bad, &all).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            found,
            [
                "remind_every",
                "remind_backoff",
                "failure_threshold",
                "success_threshold"
            ]
        );
        // Backoff and cap alone: both refused, the bad backoff twice.
        let alone = Policy {
            remind_backoff: 0.5,
            remind_max: Some(Duration::from_secs(60)),
            ..Policy::default()
        };
        let found = keys(&alone, &all);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].1.starts_with("must be at least 1.0, not 0.5"));
        assert_eq!(
            found[1],
            (
                "remind_backoff",
                "has no effect without `remind_every`".into()
            )
        );
        assert_eq!(found[2].0, "remind_max");
        let short_cap = Policy {
            remind_every: Some(Duration::from_secs(3600)),
            remind_max: Some(Duration::from_secs(60)),
            ..Policy::default()
        };
        assert_eq!(
            keys(&short_cap, &all),
            [(
                "remind_max",
                "must be at least `remind_every` (1h)".to_string()
            )]
        );
        // Out of range: the order of the two is not checked.
        let range = Policy {
            flap_low: 0.0,
            flap_high: 150.0,
            ..Policy::default()
        };
        let found: Vec<&str> = keys(&range, &|k| k.starts_with("flap_"))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(found, ["flap_low", "flap_high"]);
        let high_low = Policy {
            flap_low: 40.0,
            ..Policy::default()
        };
        assert_eq!(
            keys(&high_low, &|k| k == "flap_low"),
            [(
                "flap_low",
                "`flap_low` (40) must be below `flap_high` (30, the default)".to_string()
            )]
        );
        let low_high = Policy {
            flap_high: 15.0,
            ..Policy::default()
        };
        assert_eq!(
            keys(&low_high, &|k| k == "flap_high"),
            [(
                "flap_high",
                "`flap_low` (20, the default) must be below `flap_high` (15)".to_string()
            )]
        );
    }

    #[test]
    fn state_names_match_the_serde_names_and_indexes_follow_all() {
        for (i, s) in MonitorState::ALL.into_iter().enumerate() {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(s.index(), i);
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-06-02T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn t(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn minutes(n: i64) -> chrono::Duration {
        chrono::Duration::minutes(n)
    }

    /// A monitor fed one result a minute from `t0`.
    struct Feed {
        m: Monitor,
        policy: Policy,
        ctx: EvalContext,
        now: DateTime<Utc>,
        sent: Vec<Notice>,
    }

    impl Feed {
        fn new(policy: Policy) -> Feed {
            Feed {
                m: Monitor::new(),
                policy,
                ctx: EvalContext::default(),
                now: t0(),
                sent: Vec::new(),
            }
        }

        /// Feeds the results; returns the notices they caused.
        fn feed(&mut self, results: &[Status]) -> Vec<Notice> {
            let mut out = Vec::new();
            for &s in results {
                self.now += minutes(1);
                let (m, notices) = evaluate(&self.m, s, self.now, &self.policy, &self.ctx);
                self.m = m;
                out.extend(notices);
            }
            self.sent.extend(out.clone());
            out
        }

        fn remind_at(&mut self, at: DateTime<Utc>) -> Option<Notice> {
            let (m, n) = due_reminder(&self.m, at, &self.policy)?;
            self.m = m;
            self.sent.push(n.clone());
            Some(n)
        }
    }

    fn kinds(notices: &[Notice]) -> Vec<(NoticeKind, Severity)> {
        notices.iter().map(|n| (n.kind, n.severity)).collect()
    }

    fn count(notices: &[Notice], kind: NoticeKind) -> usize {
        notices.iter().filter(|n| n.kind == kind).count()
    }

    #[test]
    fn a_single_blip_neither_fires_nor_resolves() {
        let mut f = Feed::new(Policy::default());
        assert!(f.feed(&[O, O, C, O, O, C, C, O]).is_empty());
        assert_eq!(f.m.state, MonitorState::Healthy);

        let mut f = Feed::new(Policy::default());
        f.feed(&[C, C, C]);
        assert_eq!(f.m.state, MonitorState::Unhealthy);
        assert!(f.feed(&[O, C, O, C]).is_empty(), "one ok does not resolve");
        assert_eq!(f.m.state, MonitorState::Unhealthy);
    }

    #[test]
    fn the_first_ok_result_makes_an_unknown_monitor_healthy() {
        let mut f = Feed::new(Policy::default());
        assert_eq!(f.m.state, MonitorState::Unknown);
        assert!(f.feed(&[C, C]).is_empty());
        assert_eq!(f.m.state, MonitorState::Unknown);
        assert_eq!(f.m.pending, Some(MonitorState::Unhealthy));
        assert!(f.feed(&[O]).is_empty());
        assert_eq!(f.m.state, MonitorState::Healthy);
        assert_eq!(f.m.pending, None);
    }

    #[test]
    fn fires_exactly_at_the_third_failure_with_the_first_failure_as_since() {
        let mut f = Feed::new(Policy::default());
        f.feed(&[O, O]);
        let first_failure = f.now + minutes(1);
        assert!(f.feed(&[C, C]).is_empty());
        assert_eq!(f.m.state, MonitorState::Healthy);
        assert_eq!(f.m.pending, Some(MonitorState::Unhealthy));
        let n = f.feed(&[C]);
        assert_eq!(kinds(&n), [(NoticeKind::Firing, Severity::Critical)]);
        assert_eq!(n[0].since, first_failure);
        assert_eq!(n[0].at, f.now);
        assert_eq!(f.m.state, MonitorState::Unhealthy);
        assert_eq!(f.m.state_since, Some(f.now));
        assert!(f.feed(&[C, C, C]).is_empty(), "fires once per problem");
    }

    #[test]
    fn unknown_results_count_as_failures() {
        let mut f = Feed::new(Policy::default());
        let n = f.feed(&[O, U, C, U]);
        assert_eq!(kinds(&n), [(NoticeKind::Firing, Severity::Critical)]);
    }

    #[test]
    fn resolves_after_two_successes() {
        let mut f = Feed::new(Policy::default());
        f.feed(&[O, C, C, C]);
        let since = f.sent[0].since;
        assert!(f.feed(&[O]).is_empty());
        let n = f.feed(&[O]);
        assert_eq!(kinds(&n), [(NoticeKind::Resolved, Severity::Critical)]);
        assert_eq!(n[0].since, since);
        assert_eq!(f.m.state, MonitorState::Healthy);
        assert_eq!(f.m.problem, None);
    }

    #[test]
    fn notify_resolved_false_resolves_silently() {
        let mut f = Feed::new(Policy {
            notify_resolved: false,
            ..Policy::default()
        });
        f.feed(&[O, C, C, C]);
        assert!(f.feed(&[O, O]).is_empty());
        assert_eq!(f.m.state, MonitorState::Healthy);
        assert_eq!(f.m.problem, None);
    }

    #[test]
    fn warnings_degrade_and_failures_escalate_to_critical() {
        let mut f = Feed::new(Policy::default());
        let n = f.feed(&[O, W, W, W]);
        assert_eq!(kinds(&n), [(NoticeKind::Firing, Severity::Warning)]);
        assert_eq!(f.m.state, MonitorState::Degraded);
        let since = n[0].since;

        let n = f.feed(&[C, C, C]);
        assert_eq!(kinds(&n), [(NoticeKind::Firing, Severity::Critical)]);
        assert_eq!(n[0].since, since, "the same problem, worse");
        assert_eq!(f.m.state, MonitorState::Unhealthy);

        // Better, but not well: degraded again, silently.
        assert!(f.feed(&[W]).is_empty());
        assert_eq!(f.m.state, MonitorState::Unhealthy);
        assert!(f.feed(&[W, W, W]).is_empty());
        assert_eq!(f.m.state, MonitorState::Degraded);
        // Receivers were told critical: worse again is nothing new.
        assert!(f.feed(&[C, C, C]).is_empty());

        let n = f.feed(&[O, O]);
        assert_eq!(kinds(&n), [(NoticeKind::Resolved, Severity::Critical)]);
    }

    #[test]
    fn mixed_warnings_and_failures_degrade() {
        let mut f = Feed::new(Policy::default());
        let n = f.feed(&[O, C, W, C]);
        assert_eq!(kinds(&n), [(NoticeKind::Firing, Severity::Warning)]);
    }

    #[test]
    fn reminders_back_off_up_to_the_cap() {
        let mut f = Feed::new(Policy {
            remind_every: Some(Duration::from_secs(600)),
            remind_backoff: 2.0,
            remind_max: Some(Duration::from_secs(1800)),
            ..Policy::default()
        });
        f.feed(&[C, C, C]);
        let fired = f.now;
        let at = |m: i64| fired + minutes(m);
        assert_eq!(f.m.reminder_due_at(&f.policy), Some(at(10)));
        assert!(f.remind_at(at(9)).is_none());
        let r = f.remind_at(at(10)).unwrap();
        assert_eq!(
            (r.kind, r.severity),
            (NoticeKind::Reminder, Severity::Critical)
        );
        assert_eq!(r.since, f.sent[0].since);
        // 20 minutes, then 40 capped at 30, then 30 again.
        assert_eq!(f.m.reminder_due_at(&f.policy), Some(at(30)));
        assert!(f.remind_at(at(29)).is_none());
        assert!(f.remind_at(at(30)).is_some());
        assert_eq!(f.m.reminder_due_at(&f.policy), Some(at(60)));
        assert!(f.remind_at(at(60)).is_some());
        assert_eq!(f.m.reminder_due_at(&f.policy), Some(at(90)));
        // A late timer counts from when it fired.
        assert!(f.remind_at(at(100)).is_some());
        assert_eq!(f.m.reminder_due_at(&f.policy), Some(at(130)));
        assert_eq!(f.m.problem.as_ref().unwrap().reminders_sent, 4);

        // Results in between do not re-fire; recovery ends the reminders.
        f.now = at(101);
        assert!(f.feed(&[C]).is_empty());
        let n = f.feed(&[O, O]);
        assert_eq!(kinds(&n), [(NoticeKind::Resolved, Severity::Critical)]);
        assert_eq!(f.m.reminder_due_at(&f.policy), None);
        assert!(f.remind_at(at(1000)).is_none());
    }

    #[test]
    fn reminders_keep_their_interval_without_backoff_and_restart_on_escalation() {
        let mut f = Feed::new(Policy {
            remind_every: Some(Duration::from_secs(600)),
            ..Policy::default()
        });
        f.feed(&[W, W, W]);
        let fired = f.now;
        assert!(f.remind_at(fired + minutes(10)).is_some());
        assert!(f.remind_at(fired + minutes(20)).is_some());
        assert_eq!(f.m.reminder_due_at(&f.policy), Some(fired + minutes(30)));
        f.now = fired + minutes(25);
        let n = f.feed(&[C, C, C]);
        assert_eq!(kinds(&n), [(NoticeKind::Firing, Severity::Critical)]);
        assert_eq!(f.m.reminder_due_at(&f.policy), Some(f.now + minutes(10)));
        let r = f.remind_at(f.now + minutes(10)).unwrap();
        assert_eq!(r.severity, Severity::Critical);
    }

    #[test]
    fn no_reminders_without_remind_every() {
        let mut f = Feed::new(Policy::default());
        f.feed(&[C, C, C]);
        assert_eq!(f.m.reminder_due_at(&f.policy), None);
        assert!(f.remind_at(f.now + minutes(100_000)).is_none());
    }

    #[test]
    fn flapping_replaces_the_stream_of_alerts_with_one_notice() {
        // Thresholds of 1 would alert on every change without flap detection.
        let mut f = Feed::new(Policy {
            failure_threshold: 1,
            success_threshold: 1,
            ..Policy::default()
        });
        let alternating: Vec<Status> = (0..40).map(|i| if i % 2 == 0 { C } else { O }).collect();
        let n = f.feed(&alternating);
        // Six changes are needed to pass 30 %: the first six results alert.
        assert_eq!(count(&n, NoticeKind::Firing), 3);
        assert_eq!(count(&n, NoticeKind::Resolved), 3);
        assert_eq!(count(&n, NoticeKind::FlappingStarted), 1);
        assert_eq!(n.len(), 7);
        assert_eq!(n[6].kind, NoticeKind::FlappingStarted);
        assert_eq!(n[6].severity, Severity::Warning);
        assert!(f.m.flapping);
        assert!(f.m.flap_percent > 90.0);
        assert_eq!(f.m.state, MonitorState::Healthy, "the state still moves");

        // Stable results: once the percentage falls under 20 %, it stops.
        let mut stopped_after = None;
        for i in 1..=21 {
            let n = f.feed(&[O]);
            if !n.is_empty() {
                assert_eq!(kinds(&n), [(NoticeKind::FlappingStopped, Severity::Info)]);
                stopped_after = Some(i);
                break;
            }
        }
        let i = stopped_after.expect("flapping stopped");
        assert!(i > 10, "it takes a while for changes to age out: {i}");
        assert!(!f.m.flapping);
        // The normal logic applies again.
        let n = f.feed(&[C]);
        assert_eq!(kinds(&n), [(NoticeKind::Firing, Severity::Critical)]);
    }

    #[test]
    fn flapping_with_default_thresholds_and_a_problem_that_outlives_it() {
        let mut f = Feed::new(Policy::default());
        let n = f.feed(&[C, C, C]);
        assert_eq!(count(&n, NoticeKind::Firing), 1);
        let n = f.feed(&[O, C, O, C, O, C, O, C, O, C]);
        assert_eq!(
            kinds(&n),
            [(NoticeKind::FlappingStarted, Severity::Warning)]
        );
        // Failures until flapping stops: it stops with no new firing (receivers
        // know of the problem), and a recovery then resolves it.
        let mut n = Vec::new();
        for _ in 0..21 {
            n.extend(f.feed(&[C]));
            if !f.m.flapping {
                break;
            }
        }
        assert_eq!(kinds(&n), [(NoticeKind::FlappingStopped, Severity::Info)]);
        let n = f.feed(&[O, O]);
        assert_eq!(kinds(&n), [(NoticeKind::Resolved, Severity::Critical)]);
    }

    #[test]
    fn flap_percent_follows_nagios_weights() {
        let h = |s: &[Status]| flap_percent(&s.iter().copied().collect());
        assert_eq!(h(&[]), 0.0);
        assert_eq!(h(&[O; 21]), 0.0);
        let all: Vec<Status> = (0..21).map(|i| if i % 2 == 0 { O } else { W }).collect();
        assert!((h(&all) - 100.0).abs() < 1e-9);
        // One change, newest: weight 1.2 of 20 -> 6 %; oldest: 0.8 -> 4 %.
        assert!((h(&[O, C]) - 6.0).abs() < 1e-9);
        let mut oldest = vec![C];
        oldest.extend([O; 20]);
        assert!((h(&oldest) - 4.0).abs() < 1e-9);
        // Critical and unknown are the same state for flapping.
        assert_eq!(h(&[C, U, C, U]), 0.0);
    }

    #[test]
    fn a_dependency_holds_alerts_back_and_the_dependent_fires_after_it_recovers() {
        let mut f = Feed::new(Policy {
            remind_every: Some(Duration::from_secs(60)),
            ..Policy::default()
        });
        f.feed(&[O, O]);
        f.ctx.blocked_by = Some("token".into());
        assert!(f.feed(&[C, C, C, C]).is_empty());
        assert_eq!(f.m.state, MonitorState::Unhealthy, "the operator sees it");
        assert_eq!(f.m.suppressed_by.as_deref(), Some("token"));
        assert_eq!(f.m.reminder_due_at(&f.policy), None);
        assert!(f.remind_at(f.now + minutes(60)).is_none());

        f.ctx.blocked_by = None;
        let n = f.feed(&[C]);
        assert_eq!(kinds(&n), [(NoticeKind::Firing, Severity::Critical)]);
        assert_eq!(n[0].since, t0() + minutes(3), "since the first failure");
        assert_eq!(f.m.suppressed_by, None);
    }

    #[test]
    fn a_problem_that_ends_while_blocked_was_never_news() {
        let mut f = Feed::new(Policy::default());
        f.ctx.blocked_by = Some("token".into());
        assert!(f.feed(&[O, C, C, C, O, O]).is_empty());
        assert_eq!(f.m.suppressed_by, None);
        f.ctx.blocked_by = None;
        assert!(f.feed(&[O]).is_empty());
    }

    #[test]
    fn a_notified_problem_resolves_while_blocked_naming_the_root_cause() {
        let mut f = Feed::new(Policy::default());
        f.feed(&[C, C, C]);
        f.ctx.blocked_by = Some("metadata".into());
        assert!(f.feed(&[C]).is_empty());
        let n = f.feed(&[O, O]);
        assert_eq!(kinds(&n), [(NoticeKind::Resolved, Severity::Critical)]);
        assert_eq!(n[0].root_cause.as_deref(), Some("metadata"));
    }

    #[test]
    fn root_cause_is_the_deepest_unhealthy_dependency() {
        let deps: std::collections::HashMap<&str, Vec<String>> = [
            ("push", vec!["token".to_string()]),
            ("token", vec!["metadata".to_string(), "cert".to_string()]),
            ("metadata", vec![]),
            ("cert", vec![]),
        ]
        .into_iter()
        .collect();
        let lookup = |n: &str| deps.get(n).map(Vec::as_slice).unwrap_or(&[]);
        let rc = |bad: &[&str]| root_cause("push", lookup, |n| bad.contains(&n));
        assert_eq!(rc(&[]), None);
        assert_eq!(rc(&["push"]), None, "itself is not a dependency");
        assert_eq!(rc(&["token"]).as_deref(), Some("token"));
        assert_eq!(rc(&["token", "cert"]).as_deref(), Some("cert"));
        assert_eq!(rc(&["cert"]).as_deref(), Some("cert"), "transitively");
        // A cycle does not loop.
        let cyc: std::collections::HashMap<&str, Vec<String>> =
            [("a", vec!["b".to_string()]), ("b", vec!["a".to_string()])]
                .into_iter()
                .collect();
        let lookup = |n: &str| cyc.get(n).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(root_cause("a", lookup, |_| false), None);
        // A chain of 200,000 probes is walked without exhausting the stack;
        // the deepest unhealthy one is the cause.
        let chain: Vec<Vec<String>> = (0..200_000)
            .map(|i| vec![format!("p{}", i + 1)])
            .chain(std::iter::once(Vec::new()))
            .collect();
        let lookup = |n: &str| {
            let i: usize = n[1..].parse().unwrap();
            chain[i].as_slice()
        };
        let bad = |n: &str| n == "p7" || n == "p150000";
        assert_eq!(root_cause("p0", lookup, bad).as_deref(), Some("p150000"));
    }

    #[test]
    fn maintenance_shows_and_sends_nothing_and_an_open_problem_fires_after_it() {
        let mut f = Feed::new(Policy::default());
        f.feed(&[O, O]);
        f.ctx.in_maintenance = true;
        assert!(f.feed(&[C, C, C, C]).is_empty());
        assert_eq!(f.m.state, MonitorState::Maintenance);
        assert_eq!(f.m.health, MonitorState::Unhealthy);
        f.ctx.in_maintenance = false;
        let n = f.feed(&[C]);
        assert_eq!(kinds(&n), [(NoticeKind::Firing, Severity::Critical)]);
        assert_eq!(f.m.state, MonitorState::Unhealthy);
    }

    #[test]
    fn maintenance_ending_on_a_recovering_result_does_not_fire() {
        let mut f = Feed::new(Policy::default());
        f.feed(&[O, O]);
        f.ctx.in_maintenance = true;
        f.feed(&[C, C, C]);
        f.ctx.in_maintenance = false;
        assert!(f.feed(&[O, O]).is_empty());
        assert_eq!(f.m.state, MonitorState::Healthy);
    }

    #[test]
    fn a_notified_problem_that_ends_in_maintenance_resolves_after_it() {
        let mut f = Feed::new(Policy {
            remind_every: Some(Duration::from_secs(60)),
            ..Policy::default()
        });
        f.feed(&[C, C, C]);
        f.ctx.in_maintenance = true;
        assert!(f.feed(&[C]).is_empty());
        assert!(f.remind_at(f.now + minutes(30)).is_none(), "no reminders");
        assert!(f.feed(&[O, O, O]).is_empty());
        assert_eq!(f.m.state, MonitorState::Maintenance);
        f.ctx.in_maintenance = false;
        let n = f.feed(&[O]);
        assert_eq!(kinds(&n), [(NoticeKind::Resolved, Severity::Critical)]);
    }

    #[test]
    fn a_recurring_window_is_active_across_midnight() {
        let w = MaintenanceWindow::Recurring {
            schedule: Schedule::cron("0 22 * * *").unwrap(),
            duration: Duration::from_secs(4 * 3600),
        };
        assert!(!w.active_at(t("2025-06-02T21:59:59Z")));
        assert!(w.active_at(t("2025-06-02T22:00:00Z")));
        assert!(w.active_at(t("2025-06-02T23:59:59Z")));
        assert!(w.active_at(t("2025-06-03T00:00:00Z")));
        assert!(w.active_at(t("2025-06-03T01:59:59Z")));
        assert!(!w.active_at(t("2025-06-03T02:00:00Z")));
        assert!(!w.active_at(t("2025-06-03T12:00:00Z")));

        let weekend = MaintenanceWindow::Recurring {
            schedule: Schedule::cron("0 23 * * SAT").unwrap(),
            duration: Duration::from_secs(2 * 3600),
        };
        // 2025-06-07 is a Saturday.
        assert!(weekend.active_at(t("2025-06-08T00:30:00Z")));
        assert!(!weekend.active_at(t("2025-06-09T00:30:00Z")));

        let zero = MaintenanceWindow::Recurring {
            schedule: Schedule::cron("0 22 * * *").unwrap(),
            duration: Duration::ZERO,
        };
        assert!(!zero.active_at(t("2025-06-02T22:00:00Z")));
    }

    #[test]
    fn a_one_off_window_includes_from_and_excludes_to() {
        let w = MaintenanceWindow::OneOff {
            from: t("2025-06-02T22:00:00Z"),
            to: t("2025-06-03T02:00:00Z"),
        };
        assert!(!w.active_at(t("2025-06-02T21:59:59Z")));
        assert!(w.active_at(t("2025-06-02T22:00:00Z")));
        assert!(w.active_at(t("2025-06-03T01:59:59Z")));
        assert!(!w.active_at(t("2025-06-03T02:00:00Z")));
    }

    #[test]
    fn disabled_shows_disabled_sends_nothing_and_starts_afresh() {
        let mut f = Feed::new(Policy::default());
        f.feed(&[O, C, C]);
        f.ctx.enabled = false;
        assert!(f.feed(&[C, C, C]).is_empty());
        assert_eq!(f.m.state, MonitorState::Disabled);
        assert!(f.m.history.is_empty());
        f.ctx.enabled = true;
        assert!(
            f.feed(&[C]).is_empty(),
            "the earlier failures are forgotten"
        );
        let n = f.feed(&[C, C]);
        assert_eq!(kinds(&n), [(NoticeKind::Firing, Severity::Critical)]);
        f.ctx.enabled = false;
        f.feed(&[O]);
        assert_eq!(f.m.reminder_due_at(&Policy::default()), None);
        f.ctx.enabled = true;
        let n = f.feed(&[O, O]);
        assert_eq!(kinds(&n), [(NoticeKind::Resolved, Severity::Critical)]);
    }

    #[test]
    fn a_health_set_is_as_healthy_as_its_worst_monitor() {
        use MonitorState::*;
        assert_eq!(health_set_state([]), Unknown);
        assert_eq!(health_set_state([Healthy, Healthy]), Healthy);
        assert_eq!(health_set_state([Healthy, Unknown]), Unknown);
        assert_eq!(health_set_state([Unknown, Degraded, Healthy]), Degraded);
        assert_eq!(health_set_state([Degraded, Unhealthy, Healthy]), Unhealthy);
        assert_eq!(health_set_state([Healthy, Maintenance, Disabled]), Healthy);
        assert_eq!(health_set_state([Disabled, Maintenance]), Maintenance);
        assert_eq!(health_set_state([Disabled, Disabled]), Disabled);
        let ranks: Vec<Option<u8>> = [Healthy, Unknown, Degraded, Unhealthy]
            .iter()
            .map(|s| s.severity())
            .collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_monitor_survives_a_json_round_trip() {
        let mut f = Feed::new(Policy::default());
        f.ctx.blocked_by = Some("token".into());
        f.feed(&[O, W, C, C, C, O, C]);
        let json = serde_json::to_string(&f.m).unwrap();
        assert!(json.contains(r#""state":"unhealthy""#), "{json}");
        assert!(
            json.contains(r#""history":["ok","warning","critical""#),
            "{json}"
        );
        let back: Monitor = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f.m);
        // Fields added later default when an older record is restored.
        let old: Monitor = serde_json::from_str(r#"{"state":"healthy","seq":7}"#).unwrap();
        assert_eq!(
            (old.state, old.seq, old.health),
            (MonitorState::Healthy, 7, MonitorState::Unknown)
        );
        assert_eq!(MonitorState::Maintenance.as_str(), "maintenance");
        assert_eq!(
            serde_json::to_string(&NoticeKind::FlappingStarted).unwrap(),
            r#""flapping_started""#
        );
    }

    #[test]
    fn idempotency_keys_are_distinct_per_notice_and_stable_across_restarts() {
        let mut f = Feed::new(Policy {
            remind_every: Some(Duration::from_secs(60)),
            ..Policy::default()
        });
        f.feed(&[C, C, C]);
        f.remind_at(f.now + minutes(1));
        f.feed(&[O, O, W, W, W, C, C, C, O, O]);
        let keys: Vec<String> = f.sent.iter().map(|n| n.idempotency_key("push")).collect();
        assert_eq!(
            keys,
            [
                "push:1:firing",
                "push:2:reminder",
                "push:3:resolved",
                "push:4:firing",
                "push:5:firing",
                "push:6:resolved"
            ]
        );
        // Replaying a result from the persisted monitor (say, after a crash
        // before the outbox commit) yields the same keys.
        let mut f = Feed::new(Policy::default());
        f.feed(&[C, C]);
        let stored = serde_json::to_string(&f.m).unwrap();
        let now = f.now + minutes(1);
        let run = |json: &str| {
            let m: Monitor = serde_json::from_str(json).unwrap();
            let (_, n) = evaluate(&m, C, now, &Policy::default(), &EvalContext::default());
            n.iter()
                .map(|n| n.idempotency_key("push"))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(&stored), ["push:1:firing"]);
        assert_eq!(run(&stored), run(&stored));
    }

    #[test]
    fn odd_policies_do_not_panic() {
        let policy = Policy {
            failure_threshold: 0,
            success_threshold: 0,
            remind_every: Some(Duration::MAX),
            remind_backoff: f64::NAN,
            remind_max: Some(Duration::ZERO),
            notify_resolved: true,
            flap_low: f64::NAN,
            flap_high: -1.0,
        };
        let mut f = Feed::new(policy);
        f.feed(&[C, O, C, W, U]);
        assert_eq!(f.m.reminder_due_at(&f.policy), None);
        let p = Policy {
            remind_every: Some(Duration::from_secs(1)),
            remind_backoff: 1e300,
            ..Policy::default()
        };
        assert_eq!(p.reminder_interval(0), Some(Duration::from_secs(1)));
        assert_eq!(p.reminder_interval(5), Some(Duration::MAX));
        let m = Monitor {
            seq: u64::MAX,
            ..Monitor::default()
        };
        let once = Policy {
            failure_threshold: 1,
            ..Policy::default()
        };
        let (m, n) = evaluate(&m, C, t0(), &once, &EvalContext::default());
        assert_eq!((m.seq, n[0].seq), (u64::MAX, u64::MAX));
    }

    fn status() -> impl Strategy<Value = Status> {
        prop_oneof![Just(O), Just(W), Just(C), Just(U)]
    }

    #[derive(Debug, Clone)]
    enum Step {
        Result {
            status: Status,
            maintenance: bool,
            blocked: bool,
            enabled: bool,
        },
        Remind(i64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            8 => (status(), prop::bool::weighted(0.1), prop::bool::weighted(0.1), prop::bool::weighted(0.95))
                .prop_map(|(status, maintenance, blocked, enabled)| Step::Result {
                    status,
                    maintenance,
                    blocked,
                    enabled,
                }),
            1 => (0i64..300).prop_map(Step::Remind),
        ]
    }

    proptest! {
        /// Whatever the results, evaluation does not panic, sequence numbers rise,
        /// a problem fires again only when it gets worse, every resolved notice
        /// follows a firing one, and flapping notices alternate.
        #[test]
        fn notices_follow_the_receivers_view(
            steps in prop::collection::vec(step(), 0..120),
            fail in 1u32..5,
            succeed in 1u32..4,
            notify_resolved in any::<bool>(),
        ) {
            let policy = Policy {
                failure_threshold: fail,
                success_threshold: succeed,
                remind_every: Some(Duration::from_secs(120)),
                remind_backoff: 1.5,
                notify_resolved,
                ..Policy::default()
            };
            let mut m = Monitor::new();
            let mut now = t0();
            let mut told: Option<Severity> = None;
            let mut flap_told = false;
            let mut last_seq = 0;
            for s in steps {
                let notices = match s {
                    Step::Result { status, maintenance, blocked, enabled } => {
                        now += minutes(1);
                        let ctx = EvalContext {
                            enabled,
                            in_maintenance: maintenance,
                            blocked_by: blocked.then(|| "dep".to_string()),
                        };
                        let (next, notices) = evaluate(&m, status, now, &policy, &ctx);
                        prop_assert!(next.history.len() <= HISTORY_LEN);
                        if maintenance && enabled {
                            prop_assert_eq!(next.state, MonitorState::Maintenance);
                        }
                        if maintenance || !enabled {
                            prop_assert!(notices.is_empty());
                        }
                        m = next;
                        notices
                    }
                    Step::Remind(secs) => {
                        let at = now + chrono::Duration::seconds(secs);
                        match due_reminder(&m, at, &policy) {
                            Some((next, n)) => { m = next; vec![n] }
                            None => vec![],
                        }
                    }
                };
                for n in notices {
                    prop_assert!(n.seq > last_seq);
                    last_seq = n.seq;
                    match n.kind {
                        NoticeKind::Firing => {
                            prop_assert!(told.is_none_or(|t| t < n.severity),
                                "fired {:?} while {:?} was known", n.severity, told);
                            told = Some(n.severity);
                        }
                        NoticeKind::Resolved => {
                            prop_assert_eq!(told, Some(n.severity));
                            told = None;
                        }
                        NoticeKind::Reminder => prop_assert!(told.is_some()),
                        NoticeKind::FlappingStarted => {
                            prop_assert!(!flap_told);
                            flap_told = true;
                        }
                        NoticeKind::FlappingStopped => {
                            prop_assert!(flap_told);
                            flap_told = false;
                        }
                    }
                }
                // Without resolved notices the receivers' view is reset by recovery.
                if !notify_resolved && m.problem.is_none() {
                    told = None;
                }
            }
        }
    }
}
