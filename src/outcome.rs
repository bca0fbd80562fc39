//! What one probe run is: the `Probe` trait every kind implements, the
//! `ProbeContext` a run gets and the `Outcome` it gives (Nagios `Status`, failure
//! `Category`, summary, observations). Everything downstream of a run (runner,
//! store, telemetry, monitors, alerts, outputs) speaks these types; kinds live in
//! `crate::probe`, one file each.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;

crate::named_enum! {
    /// Nagios-compatible result status; `exit_code` is the plugin exit code.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Status {
        Ok = "ok",
        Warning = "warning",
        Critical = "critical",
        Unknown = "unknown",
    }
}

impl Status {
    pub(crate) fn exit_code(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }

    /// Severity order used to combine checks: ok < warning < unknown < critical.
    pub(crate) fn severity(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Unknown => 2,
            Status::Critical => 3,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

crate::named_enum! {
    /// Why a run was not ok. Low-cardinality: it is a metric label.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Category {
        Config = "config",
        Network = "network",
        Tls = "tls",
        Certificate = "certificate",
        Auth = "auth",
        Protocol = "protocol",
        Timeout = "timeout",
        Push = "push",
        /// A finding that exposes the tenant (e.g. CVE-2025-53786's shared key).
        Security = "security",
        Internal = "internal",
    }
}

crate::named_enum! {
    /// A phase of a run: the `phase` label of the phase-duration histogram and
    /// the name of the phase's span. A fixed set, so the label stays
    /// low-cardinality; `text` is how a timeout summary names it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Phase {
        CredentialRead = "credential_read",
        MetadataFetch = "metadata_fetch",
        AssertionSigning = "assertion_signing",
        TokenRequest = "token_request",
        TokenCheck = "token_check",
        PushPost = "push_post",
        BadgeRead = "badge_read",
        MailSend = "mail_send",
        EndToEndWait = "end_to_end_wait",
    }
}

impl Phase {
    /// The phase as a person would say it ("waiting for the badge ...").
    pub(crate) fn text(self) -> &'static str {
        match self {
            Phase::CredentialRead => "reading the signing credential",
            Phase::MetadataFetch => "fetching the metadata",
            Phase::AssertionSigning => "signing the assertion",
            Phase::TokenRequest => "requesting a token",
            Phase::TokenCheck => "checking the token",
            Phase::PushPost => "posting the monitoring batch",
            Phase::BadgeRead => "reading the badge before the test mail",
            Phase::MailSend => "sending the test mail",
            Phase::EndToEndWait => "waiting for the badge to rise after the test mail",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one probe run. Failures are data: a bad target is an `Outcome`,
/// never an `Err` or a panic.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: Status,
    /// Set when `status` is not ok.
    pub category: Option<Category>,
    /// One line, safe to show anywhere: never a secret.
    pub summary: String,
    /// Named numbers, snake_case with a unit suffix (`seconds_left`, `key_bits`).
    pub observations: BTreeMap<String, f64>,
    /// Filled in by the runner.
    pub started_at: DateTime<Utc>,
    /// Filled in by the runner.
    pub duration: Duration,
    /// How long each phase the run entered took, in order (filled in by the
    /// runner from `Progress`; empty for kinds without phases). Metrics only:
    /// not stored, not in the JSON output.
    pub phases: Vec<(Phase, Duration)>,
}

impl Outcome {
    pub(crate) fn new(
        status: Status,
        category: Option<Category>,
        summary: impl Into<String>,
    ) -> Self {
        Outcome {
            status,
            category: if status == Status::Ok { None } else { category },
            summary: summary.into(),
            observations: BTreeMap::new(),
            started_at: DateTime::<Utc>::UNIX_EPOCH,
            duration: Duration::ZERO,
            phases: Vec::new(),
        }
    }

    pub fn ok(summary: impl Into<String>) -> Self {
        Self::new(Status::Ok, None, summary)
    }

    pub fn warning(category: Category, summary: impl Into<String>) -> Self {
        Self::new(Status::Warning, Some(category), summary)
    }

    pub fn critical(category: Category, summary: impl Into<String>) -> Self {
        Self::new(Status::Critical, Some(category), summary)
    }

    pub(crate) fn unknown(category: Category, summary: impl Into<String>) -> Self {
        Self::new(Status::Unknown, Some(category), summary)
    }

    #[cfg(test)]
    /// Adds an observation (builder style).
    pub(crate) fn with(mut self, name: &str, value: f64) -> Self {
        self.observations.insert(name.to_string(), value);
        self
    }

    pub fn observe(&mut self, name: &str, value: f64) {
        self.observations.insert(name.to_string(), value);
    }
}

/// What a probe may use while it runs. Time comes from `clock`, never from
/// the system clock directly.
#[derive(Clone)]
pub struct ProbeContext {
    pub clock: Arc<dyn Clock>,
    /// The probe's configured timeout; the runner enforces it, probes may use it
    /// to size their own inner deadlines (connect, read).
    pub timeout: Duration,
    /// Where the run is and what it has measured so far: a run cut off by its
    /// timeout still names its phase and keeps these observations.
    pub progress: Progress,
}

/// The phase a run is in and the observations it has gathered, shared with the
/// runner so that a timeout can say where it struck. Cheap to clone; one per run.
#[derive(Clone, Default)]
pub struct Progress(Arc<std::sync::Mutex<ProgressState>>);

#[derive(Default)]
struct ProgressState {
    /// Every phase entered, with when (tokio's clock, so paused-time tests
    /// measure it); the last is the current one.
    phases: Vec<(Phase, tokio::time::Instant)>,
    observations: BTreeMap<String, f64>,
}

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enters a phase; the previous one, if any, ends now.
    pub(crate) fn phase(&self, phase: Phase) {
        let now = tokio::time::Instant::now();
        self.lock().phases.push((phase, now));
    }

    /// Records an observation now, so that it survives a timeout.
    pub(crate) fn observe(&self, name: &str, value: f64) {
        self.lock().observations.insert(name.to_string(), value);
    }

    /// The current phase and the observations so far.
    pub(crate) fn snapshot(&self) -> (Option<Phase>, BTreeMap<String, f64>) {
        let s = self.lock();
        (s.phases.last().map(|(p, _)| *p), s.observations.clone())
    }

    /// How long each phase entered so far took: from its start to the next
    /// phase's start, the last one to `end`.
    pub(crate) fn durations(&self, end: tokio::time::Instant) -> Vec<(Phase, Duration)> {
        let s = self.lock();
        let ends = s.phases.iter().skip(1).map(|(_, at)| *at).chain([end]);
        s.phases
            .iter()
            .zip(ends)
            .map(|((phase, start), end)| (*phase, end.saturating_duration_since(*start)))
            .collect()
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (phase, observations) = self.snapshot();
        f.debug_struct("Progress")
            .field("phase", &phase)
            .field("observations", &observations)
            .finish()
    }
}

/// A runnable probe. Implementations live one per file in this module.
pub trait Probe: Send + Sync {
    fn run<'a>(&'a self, ctx: &'a ProbeContext) -> BoxFuture<'a, Outcome>;
}

/// One finished run of a scheduled probe, as the scheduler hands it on to be
/// recorded (store, telemetry, monitors).
#[derive(Clone)]
pub struct RunRecord {
    pub probe: Arc<str>,
    pub kind: &'static str,
    pub health_set: Arc<str>,
    /// The instant the schedule asked for.
    pub due: DateTime<Utc>,
    /// How late the run started against `due` (waiting for a concurrency slot included).
    pub lateness: Duration,
    pub outcome: Outcome,
}

/// Request failures shared by the HTTP-based probe kinds (metadata, token, push).
impl Outcome {
    /// A request that got no response, as an outcome: `tls`, `network` or
    /// `protocol`. `what` names the request, e.g. "token request to https://...".
    pub(crate) fn request_failure(err: &reqwest::Error, what: &str) -> Outcome {
        use crate::net::http::{classify, error_chain, ErrorClass};
        let detail = error_chain(err);
        match classify(err) {
            ErrorClass::Tls(tls) => Outcome::critical(Category::Tls, format!("{what}: TLS: {tls}")),
            ErrorClass::Redirect(message) => {
                Outcome::critical(Category::Protocol, format!("{what}: {message}"))
            }
            ErrorClass::Connect | ErrorClass::Io => {
                Outcome::critical(Category::Network, format!("{what}: {detail}"))
            }
            ErrorClass::Other => Outcome::critical(Category::Protocol, format!("{what}: {detail}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_serde_names_and_indexes_follow_all() {
        for (i, s) in Status::ALL.into_iter().enumerate() {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(s.index(), i);
        }
        for (i, c) in Category::ALL.into_iter().enumerate() {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
            assert_eq!(c.index(), i);
        }
    }
}
