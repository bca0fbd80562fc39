//! How `sonde probe` prints one outcome: `text` for people, `json` (the object of
//! DESIGN.md) for scripts, `nagios` (status line plus perfdata, per the
//! monitoring-plugins guidelines) for Nagios-compatible schedulers.

use serde_json::{json, Map, Value};

use crate::outcome::Outcome;

/// Which probe an outcome belongs to.
pub struct Labels<'a> {
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

pub fn json_value(labels: &Labels<'_>, o: &Outcome) -> Value {
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
pub fn from_json(v: &Value) -> Option<(String, String, String, Outcome)> {
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

pub fn json(labels: &Labels<'_>, o: &Outcome) -> String {
    json_value(labels, o).to_string()
}

/// The text form; nothing from the outcome reaches the terminal raw (the
/// summary quotes peers).
pub fn text(labels: &Labels<'_>, o: &Outcome) -> String {
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
pub fn nagios(o: &Outcome, thresholds: &[Threshold]) -> String {
    // `|` starts perfdata in the plugin protocol: keep it out of the summary.
    let summary = o.summary.replace('|', "/").replace('\n', " ");
    let summary = crate::human::text::escape(&summary);
    let mut out = format!("{} - {}", o.status.as_str().to_uppercase(), summary);
    if !o.observations.is_empty() {
        out.push_str(" |");
        for (k, v) in &o.observations {
            let unit = perf_unit(k);
            let t = thresholds.iter().find(|t| t.observation == k);
            let warn = t.and_then(|t| t.warn.clone()).unwrap_or_default();
            let crit = t.and_then(|t| t.crit.clone()).unwrap_or_default();
            out.push_str(&format!(
                " '{}'={}{};{};{};;",
                k.replace('\'', "''"),
                format_number(*v),
                unit,
                warn,
                crit
            ));
        }
    }
    out
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
}
