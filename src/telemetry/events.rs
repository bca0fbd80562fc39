//! One struct per thing that happens; `emit()` logs it with structured fields.
//! Labels that will become metric labels stay low-cardinality (probe, kind,
//! status, category); free text goes only into the log message fields.

use std::time::Duration;

use crate::probe::{Outcome, Status};

/// A probe run finished (any status). Emitted inside the run's span, which
/// carries `probe` and `kind`; the fields stay here for the metrics to come.
pub struct ProbeRunFinished<'a> {
    pub probe: &'a str,
    pub kind: &'a str,
    pub outcome: &'a Outcome,
}

impl ProbeRunFinished<'_> {
    pub fn emit(&self) {
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

/// A fire was skipped because the probe's previous run was still going.
pub struct ProbeRunSkipped<'a> {
    pub probe: &'a str,
    pub kind: &'a str,
    pub total_skipped: u64,
}

impl ProbeRunSkipped<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            probe = self.probe,
            kind = self.kind,
            total_skipped = self.total_skipped,
            "previous run still going; fire skipped"
        );
    }
}

/// The agent is stopping: how the drain went.
pub struct ShutdownDrained {
    pub in_flight_at_signal: usize,
    pub aborted: usize,
    pub took: Duration,
}

impl ShutdownDrained {
    pub fn emit(&self) {
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
