//! One probe run: the common work every kind shares. The runner stamps the start
//! time, opens the span, enforces the timeout, turns a panic into an `unknown`
//! outcome, bounds the summary (escaped, at most `SUMMARY_MAX` characters),
//! measures the duration and emits the finished event. Probes only probe.

use std::any::Any;
use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tracing::Instrument;

use crate::clock::Clock;
use crate::outcome::{Category, Outcome, Probe, ProbeContext, Progress, Status};
use crate::telemetry::events::ProbeRunFinished;

/// What the runner needs to know about a probe.
pub struct Target {
    pub name: Arc<str>,
    pub kind: &'static str,
    pub health_set: Arc<str>,
    pub timeout: Duration,
    /// Extra attempts after a failed one, within the same run and `timeout`.
    pub retries: u32,
    pub probe: Arc<dyn Probe>,
}

/// Runs `target` once and returns its outcome, whatever the probe does.
pub(crate) async fn run_once(target: &Target, clock: &Arc<dyn Clock>) -> Outcome {
    let span = tracing::info_span!("probe_run", probe = %target.name, kind = target.kind);
    let ctx = ProbeContext {
        clock: clock.clone(),
        timeout: target.timeout,
        progress: Progress::default(),
    };
    let started_at = clock.now();
    let start = tokio::time::Instant::now();
    // Config bounds `timeout` to a year; the cap keeps `Instant + Duration` from
    // overflowing (a panic) for a target built any other way.
    let deadline = start + target.timeout.min(crate::human::duration::MAX);
    let mut attempt = 0u32;
    let mut outcome = loop {
        let outcome = attempt_once(target, &ctx, deadline)
            .instrument(span.clone())
            .await;
        let retryable = matches!(outcome.status, Status::Critical | Status::Unknown)
            && !matches!(outcome.category, Some(Category::Config | Category::Timeout));
        // A short pause between attempts, never past the deadline.
        let pause =
            RETRY_PAUSE.min(deadline.saturating_duration_since(tokio::time::Instant::now()) / 4);
        if !retryable || attempt >= target.retries || pause.is_zero() {
            break outcome;
        }
        attempt += 1;
        tracing::debug!(
            parent: &span,
            attempt,
            summary = %crate::human::text::bounded(&outcome.summary, SUMMARY_MAX),
            "retrying"
        );
        tokio::time::sleep(pause).await;
    };
    if attempt > 0 {
        let retries = if attempt == 1 {
            "1 retry".to_string()
        } else {
            format!("{attempt} retries")
        };
        outcome.summary = if outcome.status == Status::Ok {
            format!("ok after {retries}: {}", outcome.summary)
        } else {
            format!("{} (after {retries})", outcome.summary)
        };
        outcome.observe("retries", f64::from(attempt));
    }
    // The central guard on peer text: whatever a kind quoted, the summary that
    // reaches logs, the store, alerts and outputs is one bounded line.
    if let Cow::Owned(bounded) = crate::human::text::bounded(&outcome.summary, SUMMARY_MAX) {
        outcome.summary = bounded;
    }
    outcome.started_at = started_at;
    outcome.duration = start.elapsed();
    span.in_scope(|| ProbeRunFinished { outcome: &outcome }.emit());
    outcome
}

/// The most characters a summary keeps (1 KiB of ASCII).
pub(crate) const SUMMARY_MAX: usize = 1024;

/// Pause between a failed attempt and its retry.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// One attempt, cut off at `deadline`; a panic becomes `unknown`/`internal`. A
/// timed-out attempt names the phase the probe was in and keeps the
/// observations it had gathered.
async fn attempt_once(
    target: &Target,
    ctx: &ProbeContext,
    deadline: tokio::time::Instant,
) -> Outcome {
    // A fresh record per attempt: a retry starts from nothing.
    let ctx = ProbeContext {
        progress: Progress::default(),
        ..ctx.clone()
    };
    let run = AssertUnwindSafe(target.probe.run(&ctx)).catch_unwind();
    let mut outcome = match tokio::time::timeout_at(deadline, run).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(panic)) => Outcome::unknown(
            Category::Internal,
            format!("probe panicked: {}", panic_message(&panic)),
        ),
        Err(_) => {
            let (phase, observations) = ctx.progress.snapshot();
            let mut summary = format!(
                "timed out after {}",
                humantime::format_duration(target.timeout)
            );
            if let Some(phase) = phase {
                summary.push_str(&format!(" while {}", phase.text()));
            }
            let mut o = Outcome::critical(Category::Timeout, summary);
            o.observations = observations;
            o
        }
    };
    // The phases of the attempt that gave the outcome, the last one ending now.
    outcome.phases = ctx.progress.durations(tokio::time::Instant::now());
    outcome
}

fn panic_message(panic: &Box<dyn Any + Send>) -> String {
    let text = if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    };
    // One line, bounded: the summary is a log field and a metric-free label source.
    let line = text.lines().next().unwrap_or("").to_string();
    if line.chars().count() > 200 {
        format!("{}…", line.chars().take(200).collect::<String>())
    } else {
        line
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::outcome::{Phase, RunRecord, Status};
    use chrono::DateTime;
    use futures::future::BoxFuture;

    /// A test probe: sleeps, then returns ok, or panics.
    pub(crate) struct TestProbe {
        pub sleep: Duration,
        pub panic: bool,
    }

    impl Probe for TestProbe {
        fn run<'a>(&'a self, _ctx: &'a ProbeContext) -> BoxFuture<'a, Outcome> {
            Box::pin(async move {
                tokio::time::sleep(self.sleep).await;
                if self.panic {
                    panic!("boom in test probe");
                }
                Outcome::ok("fine").with("answer_count", 42.0)
            })
        }
    }

    pub(crate) fn target(name: &str, timeout: Duration, probe: TestProbe) -> Target {
        Target {
            name: name.into(),
            kind: "test",
            health_set: "default".into(),
            timeout,
            retries: 0,
            probe: Arc::new(probe),
        }
    }

    fn clock() -> Arc<dyn Clock> {
        Arc::new(ManualClock::new(
            DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z")
                .unwrap()
                .to_utc(),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn ok_run_is_stamped_and_timed() {
        let clock = clock();
        let t = target(
            "a",
            Duration::from_secs(5),
            TestProbe {
                sleep: Duration::from_millis(1500),
                panic: false,
            },
        );
        let o = run_once(&t, &clock).await;
        assert_eq!(o.status, Status::Ok);
        assert_eq!(o.category, None);
        assert_eq!(
            o.started_at,
            DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z")
                .unwrap()
                .to_utc()
        );
        assert_eq!(o.duration, Duration::from_millis(1500));
        assert_eq!(o.observations["answer_count"], 42.0);
    }

    /// Fails `failures` times (critical, network), then is ok.
    struct Flaky {
        failures: usize,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Probe for Flaky {
        fn run<'a>(&'a self, _ctx: &'a ProbeContext) -> BoxFuture<'a, Outcome> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n < self.failures {
                    Outcome::critical(Category::Network, format!("refused #{}", n + 1))
                } else {
                    Outcome::ok("fine")
                }
            })
        }
    }

    fn flaky(failures: usize, retries: u32) -> (Target, Arc<Flaky>) {
        let probe = Arc::new(Flaky {
            failures,
            calls: Default::default(),
        });
        let t = Target {
            name: "flaky".into(),
            kind: "test",
            health_set: "default".into(),
            timeout: Duration::from_secs(30),
            retries,
            probe: probe.clone(),
        };
        (t, probe)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_visible_in_the_outcome() {
        let clock = clock();
        let (t, p) = flaky(2, 3);
        let o = run_once(&t, &clock).await;
        assert_eq!(o.status, Status::Ok);
        assert_eq!(o.summary, "ok after 2 retries: fine");
        assert_eq!(o.observations["retries"], 2.0);
        assert_eq!(p.calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        // Out of retries: the last failure, saying how hard it tried.
        let (t, p) = flaky(5, 1);
        let o = run_once(&t, &clock).await;
        assert_eq!(
            (o.status, o.category),
            (Status::Critical, Some(Category::Network))
        );
        assert_eq!(o.summary, "refused #2 (after 1 retry)");
        assert_eq!(p.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        // No retries configured: one attempt, summary untouched.
        let (t, p) = flaky(1, 0);
        let o = run_once(&t, &clock).await;
        assert_eq!(o.summary, "refused #1");
        assert!(!o.observations.contains_key("retries"));
        assert_eq!(p.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn hung_probe_times_out_as_critical() {
        let clock = clock();
        let t = target(
            "hung",
            Duration::from_secs(3),
            TestProbe {
                sleep: Duration::from_secs(3600),
                panic: false,
            },
        );
        let o = run_once(&t, &clock).await;
        assert_eq!(o.status, Status::Critical);
        assert_eq!(o.category, Some(Category::Timeout));
        assert_eq!(o.summary, "timed out after 3s");
        assert_eq!(o.duration, Duration::from_secs(3));
    }

    /// Gathers an observation, enters a phase, then hangs.
    struct HangingInPhase;

    impl Probe for HangingInPhase {
        fn run<'a>(&'a self, ctx: &'a ProbeContext) -> BoxFuture<'a, Outcome> {
            Box::pin(async move {
                ctx.progress.phase(Phase::MailSend);
                ctx.progress.observe("badge_before", 3.0);
                tokio::time::sleep(Duration::from_secs(1)).await;
                ctx.progress.phase(Phase::EndToEndWait);
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Outcome::ok("never")
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_run_names_its_phase_and_keeps_its_observations() {
        let t = Target {
            probe: Arc::new(HangingInPhase),
            ..target(
                "hung",
                Duration::from_secs(5),
                TestProbe {
                    sleep: Duration::ZERO,
                    panic: false,
                },
            )
        };
        let o = run_once(&t, &clock()).await;
        assert_eq!(o.status, Status::Critical);
        assert_eq!(o.category, Some(Category::Timeout));
        assert_eq!(
            o.summary,
            "timed out after 5s while waiting for the badge to rise after the test mail"
        );
        assert_eq!(o.observations.get("badge_before"), Some(&3.0));
        // Each phase lasts until the next one; the last until the timeout.
        assert_eq!(
            o.phases,
            vec![
                (Phase::MailSend, Duration::from_secs(1)),
                (Phase::EndToEndWait, Duration::from_secs(4)),
            ]
        );
    }

    /// Two phases, 200 ms then 1.5 s, then ok.
    struct TwoPhases;

    impl Probe for TwoPhases {
        fn run<'a>(&'a self, ctx: &'a ProbeContext) -> BoxFuture<'a, Outcome> {
            Box::pin(async move {
                ctx.progress.phase(Phase::MetadataFetch);
                tokio::time::sleep(Duration::from_millis(200)).await;
                ctx.progress.phase(Phase::TokenRequest);
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Outcome::ok("token")
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_with_two_phases_is_two_phase_observations() {
        use crate::telemetry::events::ProbeRunRecorded;
        use crate::telemetry::metrics::Metrics;
        let t = Target {
            probe: Arc::new(TwoPhases),
            kind: "token",
            ..target(
                "tok",
                Duration::from_secs(5),
                TestProbe {
                    sleep: Duration::ZERO,
                    panic: false,
                },
            )
        };
        let outcome = run_once(&t, &clock()).await;
        assert_eq!(outcome.status, Status::Ok);
        let record = RunRecord {
            probe: t.name.clone(),
            kind: t.kind,
            health_set: t.health_set.clone(),
            due: outcome.started_at,
            lateness: Duration::ZERO,
            outcome,
        };
        let metrics = Metrics::new();
        ProbeRunRecorded { record: &record }.emit(&metrics);
        let text = metrics.render();
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("sonde_probe_phase_duration_seconds_sum{")
                    || l.starts_with("sonde_probe_phase_duration_seconds_count{")
            })
            .collect();
        assert_eq!(
            samples,
            [
                r#"sonde_probe_phase_duration_seconds_sum{probe="tok",kind="token",phase="metadata_fetch"} 0.2"#,
                r#"sonde_probe_phase_duration_seconds_count{probe="tok",kind="token",phase="metadata_fetch"} 1"#,
                r#"sonde_probe_phase_duration_seconds_sum{probe="tok",kind="token",phase="token_request"} 1.5"#,
                r#"sonde_probe_phase_duration_seconds_count{probe="tok",kind="token",phase="token_request"} 1"#,
            ],
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_without_phases_has_none() {
        let t = target(
            "plain",
            Duration::from_secs(5),
            TestProbe {
                sleep: Duration::from_millis(10),
                panic: false,
            },
        );
        assert!(run_once(&t, &clock()).await.phases.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn panicking_probe_is_unknown_internal() {
        let clock = clock();
        let t = target(
            "p",
            Duration::from_secs(3),
            TestProbe {
                sleep: Duration::ZERO,
                panic: true,
            },
        );
        let o = run_once(&t, &clock).await;
        assert_eq!(o.status, Status::Unknown);
        assert_eq!(o.category, Some(Category::Internal));
        assert_eq!(o.summary, "probe panicked: boom in test probe");
    }

    /// Quotes a hostile peer without care: half a megabyte with a forged log line.
    struct Careless;

    impl Probe for Careless {
        fn run<'a>(&'a self, _ctx: &'a ProbeContext) -> BoxFuture<'a, Outcome> {
            Box::pin(async move {
                let realm = format!("x\nINFO forged line\u{1b}[2J{}", "y".repeat(500_000));
                Outcome::critical(Category::Protocol, format!("realm {realm}"))
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_summary_is_one_bounded_line() {
        let t = Target {
            name: "careless".into(),
            kind: "test",
            health_set: "default".into(),
            timeout: Duration::from_secs(3),
            retries: 0,
            probe: Arc::new(Careless),
        };
        let o = run_once(&t, &clock()).await;
        assert_eq!(o.summary.chars().count(), SUMMARY_MAX);
        assert!(o
            .summary
            .starts_with("realm x\\nINFO forged line\\u{1b}[2Jyyy"));
        assert!(o.summary.ends_with('…'));
        assert!(!o.summary.chars().any(char::is_control));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_past_any_deadline_does_not_panic() {
        let clock = clock();
        let t = target(
            "forever",
            Duration::MAX,
            TestProbe {
                sleep: Duration::from_millis(10),
                panic: false,
            },
        );
        let o = run_once(&t, &clock).await;
        assert_eq!(o.status, Status::Ok);
    }
}
