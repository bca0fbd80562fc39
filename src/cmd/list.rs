//! `sonde list`: the probes with kind, health set, schedule and next fire time,
//! as an aligned table or a JSON array.

use chrono::{DateTime, SecondsFormat, Utc};

use super::{CmdResult, Done, Failure, EXIT_INVALID_CONFIG};
use crate::cli::ListFormat;
use crate::config::{Config, ConfigErrors};

/// The listing of the loaded config; next fire times are computed from `now`.
pub fn list(
    loaded: Result<Config, ConfigErrors>,
    format: ListFormat,
    now: DateTime<Utc>,
) -> CmdResult {
    let c = loaded.map_err(|e| Failure::config(&e, EXIT_INVALID_CONFIG))?;
    Ok(Done::ok(render(&c, format, now)))
}

fn render(c: &Config, format: ListFormat, now: DateTime<Utc>) -> String {
    let rows: Vec<_> = c
        .probes
        .iter()
        .map(|p| {
            let next = p.enabled.then(|| p.schedule.next_after(now)).flatten();
            (p, next)
        })
        .collect();
    let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    match format {
        ListFormat::Json => {
            let items: Vec<_> = rows
                .iter()
                .map(|(p, next)| {
                    serde_json::json!({
                        "probe": p.name,
                        "kind": p.kind(),
                        "health_set": p.health_set,
                        "schedule": p.schedule.to_string(),
                        "timeout_seconds": p.timeout.as_secs_f64(),
                        "enabled": p.enabled,
                        "next_run": next.as_ref().map(time),
                        "depends_on": p.depends_on,
                        "alert": p.alert,
                    })
                })
                .collect();
            format!("{}\n", serde_json::Value::Array(items))
        }
        ListFormat::Text => {
            let header = ["PROBE", "KIND", "HEALTH SET", "SCHEDULE", "NEXT RUN"];
            let table: Vec<[String; 5]> = rows
                .iter()
                .map(|(p, next)| {
                    [
                        p.name.clone(),
                        p.kind().to_string(),
                        p.health_set.clone(),
                        p.schedule.to_string(),
                        match next {
                            Some(t) => time(t),
                            None if !p.enabled => "disabled".into(),
                            None => "never".into(),
                        },
                    ]
                })
                .collect();
            let mut widths = header.map(str::len);
            for row in &table {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            let line = |cells: &[&str]| {
                let parts: Vec<String> = cells
                    .iter()
                    .zip(widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                format!("{}\n", parts.join("  ").trim_end())
            };
            let mut out = line(&header);
            for row in &table {
                out.push_str(&line(&row.iter().map(String::as_str).collect::<Vec<_>>()));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::tests_support::load;

    const PROBES: &str = r#"
[[probe]]
name = "web"
kind = "http"
health_set = "site"
url = "http://127.0.0.1:9/"
schedule = "0 0 1 1 *"
timeout = "2s"
alert = []

[[probe]]
name = "off"
kind = "http"
url = "http://127.0.0.1:9/"
enabled = false

[[probe]]
name = "a-much-longer-name"
kind = "http"
url = "http://127.0.0.1:9/"
every = "1h"
depends_on = ["web"]
"#;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn text_is_a_table_aligned_on_its_widest_cells() {
        let (_dir, c) = load(PROBES);
        let out = render(&c, ListFormat::Text, now());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[..3],
            [
                "PROBE               KIND  HEALTH SET  SCHEDULE        NEXT RUN",
                "web                 http  site        cron 0 0 1 1 *  2028-01-01T00:00:00Z",
                "off                 http  default     every 1m        disabled",
            ]
        );
        // The splay of `every` depends on the name: the column only is pinned.
        let last = lines[3];
        assert!(
            last.starts_with("a-much-longer-name  http  default     every 1h        2027-01-15T0"),
            "{last}"
        );
        assert_eq!(lines.len(), 4);
        assert!(out.ends_with('\n'));
    }

    #[test]
    fn json_is_one_array_of_the_documented_fields() {
        let (_dir, c) = load(PROBES);
        let out = render(&c, ListFormat::Json, now());
        assert_eq!(out.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v[0],
            serde_json::json!({
                "probe": "web", "kind": "http", "health_set": "site",
                "schedule": "cron 0 0 1 1 *", "timeout_seconds": 2.0, "enabled": true,
                "next_run": "2028-01-01T00:00:00Z", "depends_on": [], "alert": [],
            })
        );
        assert_eq!(v[1]["next_run"], serde_json::Value::Null);
        assert_eq!(v[2]["depends_on"], serde_json::json!(["web"]));
    }

    #[test]
    fn an_invalid_config_exits_2() {
        let (dir, _) = load("");
        let path = dir.path().join("missing.toml");
        let failure = list(crate::config::load(&path), ListFormat::Text, now()).unwrap_err();
        assert_eq!(failure.code, EXIT_INVALID_CONFIG);
    }
}
