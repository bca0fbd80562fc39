//! How `sonde probe` prints one outcome: `text` for people, `json` (the object of
//! DESIGN.md) for scripts, `nagios` (status line plus perfdata, per the
//! monitoring-plugins guidelines) for Nagios-compatible schedulers, `ma` (a
//! Managed Availability probe result as `Invoke-MonitoringProbe | Format-List`
//! shows it) for Exchange admins; and a whole health set's results. And how
//! every command writes to stdout: `print!`/`println!` here replace std's (by
//! `use sonde::{print, println}`) so that a closed pipe ends the output quietly.

use serde_json::{json, Map, Value};

use crate::outcome::{Category, Outcome, Status};

/// Which probe an outcome belongs to.
pub(crate) struct Labels<'a> {
    pub probe: &'a str,
    pub kind: &'a str,
    pub health_set: &'a str,
}

/// Nagios warn/crit ranges of one observation, e.g. `seconds_left` with
/// warn `2592000:` (alert below 30 days).
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub observation: &'static str,
    pub warn: Option<String>,
    pub crit: Option<String>,
}

pub(crate) fn json_value(labels: &Labels<'_>, o: &Outcome) -> Value {
    let observations: Map<String, Value> = o
        .observations
        .iter()
        .map(|(k, v)| (k.clone(), number(*v)))
        .collect();
    json!({
        "probe": labels.probe,
        "kind": labels.kind,
        "health_set": labels.health_set,
        "status": o.status.as_str(),
        "category": o.category.map(|c| c.as_str()),
        "summary": o.summary,
        "observations": observations,
        "started_at": o.started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "duration_seconds": o.duration.as_secs_f64(),
    })
}

/// The labels and outcome of a `json_value` object (what `sonde probe --remote`
/// gets back from the agent); `None` when a documented field is missing.
pub(crate) fn from_json(v: &Value) -> Option<(String, String, String, Outcome)> {
    let text = |k: &str| v.get(k)?.as_str().map(str::to_string);
    let status = serde_json::from_value(v.get("status")?.clone()).ok()?;
    let category = match v.get("category") {
        None | Some(Value::Null) => None,
        Some(c) => Some(serde_json::from_value(c.clone()).ok()?),
    };
    let observations = v
        .get("observations")?
        .as_object()?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(f64::NAN)))
        .collect();
    let started_at = chrono::DateTime::parse_from_rfc3339(&text("started_at")?)
        .ok()?
        .to_utc();
    let duration =
        std::time::Duration::try_from_secs_f64(v.get("duration_seconds")?.as_f64()?).ok()?;
    let outcome = Outcome {
        status,
        category,
        summary: text("summary")?,
        observations,
        started_at,
        duration,
        phases: Vec::new(),
    };
    Some((text("probe")?, text("kind")?, text("health_set")?, outcome))
}

/// Whole numbers print without a fraction; non-finite values become null.
fn number(v: f64) -> Value {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

pub(crate) fn json(labels: &Labels<'_>, o: &Outcome) -> String {
    json_value(labels, o).to_string()
}

/// The text form; nothing from the outcome reaches the terminal raw (the
/// summary quotes peers).
pub(crate) fn text(labels: &Labels<'_>, o: &Outcome) -> String {
    use crate::human::text::escape;
    let mut out = format!(
        "{} {} [{}] {}",
        o.status.as_str().to_uppercase(),
        escape(labels.probe),
        labels.kind,
        escape(&o.summary)
    );
    if let Some(c) = o.category {
        out.push_str(&format!(" (category: {c})"));
    }
    out.push('\n');
    for (k, v) in &o.observations {
        out.push_str(&format!("  {k} = {}\n", format_number(*v)));
    }
    out.push_str(&format!(
        "  took {:.3}s, started {}\n",
        o.duration.as_secs_f64(),
        o.started_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
    out
}

fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// `STATUS - summary | 'name'=value[unit];warn;crit;;` — one line.
pub(crate) fn nagios(o: &Outcome, thresholds: &[Threshold]) -> String {
    // `|` starts perfdata in the plugin protocol: keep it out of the summary.
    let summary = o.summary.replace('|', "/").replace('\n', " ");
    let summary = crate::human::text::escape(&summary);
    let mut out = format!("{} - {}", o.status.as_str().to_uppercase(), summary);
    if !o.observations.is_empty() {
        out.push_str(" |");
        perfdata(&mut out, None, o, thresholds);
    }
    out
}

/// Appends ` 'label'=value[unit];warn;crit;;` for each observation of `o`; the
/// label is the observation's name, after `probe::` when `probe` is given (the
/// `check_multi` convention for several checks in one line).
fn perfdata(out: &mut String, probe: Option<&str>, o: &Outcome, thresholds: &[Threshold]) {
    for (k, v) in &o.observations {
        let unit = perf_unit(k);
        let t = thresholds.iter().find(|t| t.observation == k);
        let warn = t.and_then(|t| t.warn.clone()).unwrap_or_default();
        let crit = t.and_then(|t| t.crit.clone()).unwrap_or_default();
        let label = match probe {
            Some(p) => format!("{p}::{k}"),
            None => k.clone(),
        };
        out.push_str(&format!(
            " '{}'={}{};{};{};;",
            label.replace('\'', "''"),
            format_number(*v),
            unit,
            warn,
            crit
        ));
    }
}

/// One probe's result within a health set's output.
pub(crate) struct SetResult<'a> {
    pub labels: Labels<'a>,
    pub outcome: &'a Outcome,
    pub thresholds: &'a [Threshold],
}

/// The status a health set's results add up to: the most severe one, in the
/// order `Status::severity` gives (ok < warning < unknown < critical).
pub(crate) fn worst(results: &[SetResult<'_>]) -> Status {
    results
        .iter()
        .map(|r| r.outcome.status)
        .max_by_key(|s| s.severity())
        .unwrap_or(Status::Unknown)
}

/// `{set}: {names} {status}; N of M ok`: what a health set's run amounts to.
fn set_summary(set: &str, results: &[SetResult<'_>]) -> String {
    let failing: Vec<String> = results
        .iter()
        .filter(|r| r.outcome.status != Status::Ok)
        .map(|r| format!("{} {}", r.labels.probe, r.outcome.status))
        .collect();
    let ok = results.len() - failing.len();
    let counts = format!("{ok} of {} ok", results.len());
    if failing.is_empty() {
        format!("{set}: {counts}")
    } else {
        format!("{set}: {}; {counts}", failing.join(", "))
    }
}

/// A health set as a Nagios plugin reports several checks: the first line is
/// the worst status with a summary and every probe's perfdata (labelled
/// `probe::observation`); then one line of long text per probe, `STATUS probe:
/// summary`, without a `|` (only the first line carries perfdata here).
pub(crate) fn nagios_set(set: &str, results: &[SetResult<'_>]) -> String {
    let status = worst(results).as_str().to_uppercase();
    let mut out = format!("{status} - {}", one_line(&set_summary(set, results)));
    let mut perf = String::new();
    for r in results {
        perfdata(&mut perf, Some(r.labels.probe), r.outcome, r.thresholds);
    }
    if !perf.is_empty() {
        out.push_str(" |");
        out.push_str(&perf);
    }
    out.push('\n');
    for r in results {
        out.push_str(&format!(
            "{} {}: {}\n",
            r.outcome.status.as_str().to_uppercase(),
            r.labels.probe,
            one_line(&r.outcome.summary)
        ));
    }
    out
}

/// A health set as text: each probe's `text`, then the set's line.
pub(crate) fn text_set(set: &str, results: &[SetResult<'_>]) -> String {
    let mut out: String = results.iter().map(|r| text(&r.labels, r.outcome)).collect();
    out.push_str(&format!(
        "{} {}\n",
        worst(results).as_str().to_uppercase(),
        set_summary(set, results)
    ));
    out
}

/// Text safe for one line of plugin output: no `|` (it starts perfdata), no
/// line breaks.
fn one_line(text: &str) -> String {
    text.replace('|', "/").replace(['\n', '\r'], " ")
}

/// Managed Availability's `ResultType` of an outcome: `TimedOut` for a run cut
/// off by its timeout, `Succeeded` when ok, `Failed` otherwise. MA has no
/// warning result (degradation is what its monitors make of failed results),
/// so a warning is `Failed` too, and a filter on `ResultType -ne 'Succeeded'`
/// sees it.
pub(crate) fn ma_result_type(o: &Outcome) -> &'static str {
    match o.status {
        Status::Ok => "Succeeded",
        Status::Warning | Status::Critical | Status::Unknown => match o.category {
            Some(Category::Timeout) => "TimedOut",
            Some(
                Category::Config
                | Category::Network
                | Category::Tls
                | Category::Certificate
                | Category::Auth
                | Category::Protocol
                | Category::Push
                | Category::Security
                | Category::Internal,
            )
            | None => "Failed",
        },
    }
}

/// The failure class that Managed Availability's push connectivity probe puts
/// in `StateAttribute1`, for a category (see README, "`--format ma`"):
/// a missing or wrong configuration is `PushNotifications`; the path to the
/// service (sockets, TLS, a timeout) is `Networking`; the credential and the
/// token (refused, expired, unregistered, exposed) are `Authentication`; an
/// answer the probe does not understand, a push that did not arrive and
/// sonde's own faults are `Unknown`.
pub(crate) fn ma_class(category: Category) -> &'static str {
    match category {
        Category::Config => "PushNotifications",
        Category::Network | Category::Tls | Category::Timeout => "Networking",
        Category::Auth | Category::Certificate | Category::Security => "Authentication",
        Category::Protocol | Category::Push | Category::Internal => "Unknown",
    }
}

/// A time as PowerShell shows a `DateTime` in the en-US culture
/// (`11/30/2026 1:28:54 AM`), here in UTC.
fn ma_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%-m/%-d/%Y %-I:%M:%S %p").to_string()
}

/// `SampleValue`: the latency in milliseconds, as MA's probes record it: the
/// probe's own `latency_seconds` when it measures one, else the run's duration.
fn sample_value(o: &Outcome) -> f64 {
    let seconds = o
        .observations
        .get("latency_seconds")
        .copied()
        .filter(|v| v.is_finite())
        .unwrap_or(o.duration.as_secs_f64());
    // Whole microseconds, so that binary fractions do not print as noise.
    (seconds * 1_000_000.0).round() / 1000.0
}

/// One result as `Invoke-MonitoringProbe … | Format-List` prints it: `Name :
/// value`, the names padded to the longest. `machine` is the host that ran it.
pub(crate) fn ma(machine: &str, labels: &Labels<'_>, o: &Outcome) -> String {
    let end =
        o.started_at + chrono::Duration::from_std(o.duration).unwrap_or(chrono::Duration::zero());
    let error = match o.status {
        Status::Ok => String::new(),
        Status::Warning | Status::Critical | Status::Unknown => {
            o.summary.replace(['\n', '\r'], " ")
        }
    };
    let fields = [
        ("MachineName", machine.to_string()),
        (
            "ResultName",
            format!("{}\\{}", labels.health_set, labels.probe),
        ),
        ("ResultType", ma_result_type(o).to_string()),
        ("Error", error),
        ("ExecutionStartTime", ma_time(o.started_at)),
        ("ExecutionEndTime", ma_time(end)),
        ("SampleValue", format_number(sample_value(o))),
        (
            "StateAttribute1",
            o.category.map(ma_class).unwrap_or_default().to_string(),
        ),
    ];
    let width = fields.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    fields
        .iter()
        .map(|(name, value)| format!("{name:<width$} : {value}\n"))
        .collect()
}

/// Several results as Format-List prints them: one block each, a blank line
/// between.
pub(crate) fn ma_list(machine: &str, results: &[SetResult<'_>]) -> String {
    results
        .iter()
        .map(|r| ma(machine, &r.labels, r.outcome))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The plugin-guideline unit of an observation, from its suffix. The label keeps
/// the full name so that it matches the JSON output.
fn perf_unit(name: &str) -> &'static str {
    if name.ends_with("_seconds") || name == "seconds_left" {
        "s"
    } else if name.ends_with("_bytes") {
        "B"
    } else if name.ends_with("_percent") {
        "%"
    } else if name.ends_with("_total") {
        "c"
    } else {
        ""
    }
}

/// Set once stdout is found closed or broken: later output is dropped.
static STDOUT_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes command output to stdout. std's `print!` panics when the reader
/// has gone (`sonde list | head -1`: "failed printing to stdout: Broken
/// pipe", exit 101); here a closed pipe ends the output quietly and the
/// command keeps its exit code, which for `sonde probe` is the probe's
/// status. Another write error (a full disk) is said once on stderr.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        STDOUT_GONE.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("sonde: cannot write to stdout: {e}");
        }
    }
}

/// `print!` through `output::write_stdout`.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` through `output::write_stdout`.
#[macro_export]
macro_rules! println {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Category;
    use chrono::DateTime;
    use std::time::Duration;

    fn outcome() -> Outcome {
        let mut o = Outcome::warning(Category::Certificate, "certificate expires in 20d | soon")
            .with("seconds_left", 1_728_000.0)
            .with("key_bits", 2048.0)
            .with("latency_seconds", 0.0125);
        o.started_at = DateTime::parse_from_rfc3339("2026-05-01T12:00:00.25Z")
            .unwrap()
            .to_utc();
        o.duration = Duration::from_millis(13);
        o
    }

    const LABELS: Labels<'static> = Labels {
        probe: "oauth-cert",
        kind: "certificate",
        health_set: "PushNotifications.Proxy",
    };

    #[test]
    fn json_has_the_documented_fields() {
        let v: Value = serde_json::from_str(&json(&LABELS, &outcome())).unwrap();
        assert_eq!(v["probe"], "oauth-cert");
        assert_eq!(v["kind"], "certificate");
        assert_eq!(v["health_set"], "PushNotifications.Proxy");
        assert_eq!(v["status"], "warning");
        assert_eq!(v["category"], "certificate");
        assert_eq!(v["observations"]["seconds_left"], 1_728_000);
        assert_eq!(v["observations"]["latency_seconds"], 0.0125);
        assert_eq!(v["started_at"], "2026-05-01T12:00:00.250Z");
        assert_eq!(v["duration_seconds"], 0.013);
        assert_eq!(v.as_object().unwrap().len(), 9);
        let ok = Outcome::ok("fine");
        let v: Value = serde_json::from_str(&json(&LABELS, &ok)).unwrap();
        assert_eq!(v["category"], Value::Null);
    }

    #[test]
    fn json_reads_back_into_the_same_outcome() {
        let o = outcome();
        let (probe, kind, set, back) = from_json(&json_value(&LABELS, &o)).unwrap();
        assert_eq!(
            (probe.as_str(), kind.as_str()),
            ("oauth-cert", "certificate")
        );
        assert_eq!(set, "PushNotifications.Proxy");
        assert_eq!(back, o);
        assert!(from_json(&json!({"probe": "x"})).is_none());
    }

    #[test]
    fn nagios_line_follows_the_plugin_guidelines() {
        let line = nagios(
            &outcome(),
            &[Threshold {
                observation: "seconds_left",
                warn: Some("2592000:".into()),
                crit: Some("604800:".into()),
            }],
        );
        assert_eq!(
            line,
            "WARNING - certificate expires in 20d / soon | 'key_bits'=2048;;;; \
             'latency_seconds'=0.0125s;;;; 'seconds_left'=1728000s;2592000:;604800:;;"
        );
        assert_eq!(nagios(&Outcome::ok("fine"), &[]), "OK - fine");
    }

    #[test]
    fn text_and_nagios_never_print_a_raw_control_character() {
        let o = Outcome::critical(Category::Protocol, "realm x\nOK forged\u{1b}[2J");
        let t = text(&LABELS, &o);
        assert!(t.contains("realm x\\nOK forged\\u{1b}[2J (category: protocol)\n"));
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(!t.chars().any(|c| c.is_control() && c != '\n'));
        let n = nagios(&o, &[]);
        assert_eq!(n, "CRITICAL - realm x OK forged\\u{1b}[2J");
    }

    #[test]
    fn text_names_status_probe_and_observations() {
        let t = text(&LABELS, &outcome());
        assert!(t.starts_with("WARNING oauth-cert [certificate] certificate expires in 20d"));
        assert!(t.contains("(category: certificate)"));
        assert!(t.contains("  seconds_left = 1728000\n"));
        assert!(t.contains("took 0.013s"));
    }

    #[test]
    fn ma_prints_a_result_as_format_list_does() {
        let block = ma("EX01", &LABELS, &outcome());
        assert_eq!(
            block,
            "MachineName        : EX01\n\
             ResultName         : PushNotifications.Proxy\\oauth-cert\n\
             ResultType         : Failed\n\
             Error              : certificate expires in 20d | soon\n\
             ExecutionStartTime : 5/1/2026 12:00:00 PM\n\
             ExecutionEndTime   : 5/1/2026 12:00:00 PM\n\
             SampleValue        : 12.5\n\
             StateAttribute1    : Authentication\n"
        );
        // Ok: no error, no class; without latency_seconds the run's duration.
        let mut ok = Outcome::ok("fine\nreally");
        ok.started_at = DateTime::parse_from_rfc3339("2026-11-30T13:05:09Z")
            .unwrap()
            .to_utc();
        ok.duration = Duration::from_millis(1500);
        let block = ma("EX01", &LABELS, &ok);
        let lines: Vec<&str> = block.lines().collect();
        assert_eq!(lines[2], "ResultType         : Succeeded");
        assert_eq!(lines[3], "Error              : ");
        assert_eq!(lines[4], "ExecutionStartTime : 11/30/2026 1:05:09 PM");
        assert_eq!(lines[5], "ExecutionEndTime   : 11/30/2026 1:05:10 PM");
        assert_eq!(lines[6], "SampleValue        : 1500");
        assert_eq!(lines[7], "StateAttribute1    : ");
        // A failure's summary stays on its line.
        let o = Outcome::critical(Category::Push, "two\nlines");
        assert!(ma("h", &LABELS, &o).contains("Error              : two lines\n"));
    }

    #[test]
    fn ma_result_types_and_classes() {
        let timeout = Outcome::critical(Category::Timeout, "timed out while requesting a token");
        assert_eq!(ma_result_type(&timeout), "TimedOut");
        assert_eq!(ma_result_type(&Outcome::ok("fine")), "Succeeded");
        for status in [Status::Warning, Status::Critical, Status::Unknown] {
            let o = Outcome::new(status, Some(Category::Network), "down");
            assert_eq!(ma_result_type(&o), "Failed", "{status}");
        }
        let class = |c| ma_class(c);
        assert_eq!(class(Category::Config), "PushNotifications");
        for c in [Category::Network, Category::Tls, Category::Timeout] {
            assert_eq!(class(c), "Networking", "{c}");
        }
        for c in [Category::Auth, Category::Certificate, Category::Security] {
            assert_eq!(class(c), "Authentication", "{c}");
        }
        for c in [Category::Protocol, Category::Push, Category::Internal] {
            assert_eq!(class(c), "Unknown", "{c}");
        }
        // Every category has one of MA's four classes.
        for c in Category::ALL {
            assert!(
                [
                    "PushNotifications",
                    "Networking",
                    "Authentication",
                    "Unknown"
                ]
                .contains(&class(c)),
                "{c}"
            );
        }
    }

    fn set_outcomes() -> Vec<Outcome> {
        let mut token = Outcome::ok("token issued").with("latency_seconds", 0.2);
        token.duration = Duration::from_millis(200);
        let push = Outcome::critical(Category::Auth, "push refused | 401");
        vec![outcome(), token, push]
    }

    fn set_results<'a>(outcomes: &'a [Outcome], thresholds: &'a [Threshold]) -> Vec<SetResult<'a>> {
        ["oauth-cert", "token", "push"]
            .into_iter()
            .zip(outcomes)
            .map(|(probe, outcome)| SetResult {
                labels: Labels {
                    probe,
                    kind: "x",
                    health_set: "PushNotifications.Proxy",
                },
                outcome,
                thresholds,
            })
            .collect()
    }

    #[test]
    fn a_health_set_is_as_bad_as_its_worst_probe() {
        let outcomes = set_outcomes();
        let results = set_results(&outcomes, &[]);
        assert_eq!(worst(&results), Status::Critical);
        assert_eq!(worst(&results[..2]), Status::Warning);
        assert_eq!(worst(&results[1..2]), Status::Ok);
        let unknown = Outcome::unknown(Category::Internal, "panicked");
        let mixed = [
            Outcome::warning(Category::Certificate, "soon"),
            unknown.clone(),
        ];
        assert_eq!(worst(&set_results(&mixed, &[])), Status::Unknown);
        let with_critical = [unknown, Outcome::critical(Category::Network, "down")];
        assert_eq!(worst(&set_results(&with_critical, &[])), Status::Critical);
        assert_eq!(worst(&[]), Status::Unknown, "nothing ran: unknown");
    }

    #[test]
    fn nagios_set_puts_the_worst_first_and_each_probe_in_the_long_text() {
        let outcomes = set_outcomes();
        let thresholds = [Threshold {
            observation: "seconds_left",
            warn: Some("2592000:".into()),
            crit: None,
        }];
        let out = nagios_set(
            "PushNotifications.Proxy",
            &set_results(&outcomes, &thresholds),
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "CRITICAL - PushNotifications.Proxy: oauth-cert warning, push critical; 1 of 3 ok \
                 | 'oauth-cert::key_bits'=2048;;;; 'oauth-cert::latency_seconds'=0.0125s;;;; \
                 'oauth-cert::seconds_left'=1728000s;2592000:;;; 'token::latency_seconds'=0.2s;;;;",
                "WARNING oauth-cert: certificate expires in 20d / soon",
                "OK token: token issued",
                "CRITICAL push: push refused / 401",
            ]
        );
    }

    #[test]
    fn text_and_ma_sets_show_every_probe() {
        let outcomes = set_outcomes();
        let results = set_results(&outcomes, &[]);
        let t = text_set("PushNotifications.Proxy", &results);
        assert!(t.starts_with("WARNING oauth-cert [x]"), "{t}");
        assert!(t.contains("\nOK token [x] token issued\n"), "{t}");
        assert!(t.ends_with(
            "\nCRITICAL PushNotifications.Proxy: oauth-cert warning, push critical; 1 of 3 ok\n"
        ));
        let m = ma_list("EX01", &results);
        let blocks: Vec<&str> = m.split("\n\n").collect();
        assert_eq!(blocks.len(), 3, "{m}");
        assert!(blocks[1].contains("ResultName         : PushNotifications.Proxy\\token"));
        assert!(blocks[1].contains("SampleValue        : 200"));
        assert!(blocks[2].contains("StateAttribute1    : Authentication"));
    }
}
