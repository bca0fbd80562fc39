//! The status page at `GET /`: one server-rendered HTML page, inline CSS, no
//! script, refreshed by the browser every 10 s. Health sets with their state,
//! then each probe: monitor state, last status and summary, last run, a strip of
//! its last results, and for certificates the countdown to expiry (the
//! `seconds_left` observation). Every text that comes from the config or a
//! result goes through `escape`.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};

use super::ApiState;
use crate::alert::engine::{health_sets_of, MonitorView};
use crate::human::format_duration;
use crate::monitor::MonitorState;
use crate::store::ResultRow;

/// Results shown in each probe's history strip.
pub const HISTORY: usize = 20;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One probe as the page shows it.
pub struct PageProbe<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub health_set: &'a str,
    pub view: Option<MonitorView>,
    /// Newest first.
    pub results: &'a [ResultRow],
    /// When the schedule fires it next (`None`: disabled).
    pub next_run: Option<DateTime<Utc>>,
}

/// The certificate countdown of a result, from its `seconds_left` observation,
/// corrected for the time since the run.
fn countdown(row: &ResultRow, now: DateTime<Utc>) -> Option<String> {
    let obs: HashMap<String, f64> = serde_json::from_str(&row.observations_json).ok()?;
    let left = *obs.get("seconds_left")?;
    if !left.is_finite() {
        return None;
    }
    let left = left as i64 - (now.timestamp() - row.started_at).max(0);
    Some(if left > 0 {
        format!("expires in {}", format_duration(left))
    } else {
        format!("expired {} ago", format_duration(left.saturating_neg()))
    })
}

const CSS: &str = "\
*{box-sizing:border-box}\
body{margin:0;font:15px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#f4f5f7;color:#1d2125}\
header{background:#1d2125;color:#fff;padding:12px 16px}\
header h1{margin:0;font-size:20px}header p{margin:2px 0 0;font-size:13px;color:#b6bcc3}\
main{max-width:1100px;margin:0 auto;padding:12px}\
section{background:#fff;border-radius:8px;margin:0 0 14px;box-shadow:0 1px 2px rgba(0,0,0,.12);overflow:hidden}\
section>h2{margin:0;padding:10px 14px;font-size:17px;display:flex;flex-wrap:wrap;gap:8px;align-items:center;border-bottom:1px solid #e4e6ea}\
.probe{padding:10px 14px;border-bottom:1px solid #eef0f2}.probe:last-child{border-bottom:0}\
.top{display:flex;flex-wrap:wrap;gap:6px 10px;align-items:baseline}\
.name{font-weight:600;word-break:break-all}.kind{color:#5e6c84;font-size:13px}\
.summary{margin:4px 0;overflow-wrap:anywhere}.meta{color:#5e6c84;font-size:13px}\
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;text-transform:uppercase;color:#fff;background:#8993a4}\
.healthy,.ok{background:#1f845a}.degraded,.warning{background:#cf7a00}.unhealthy,.critical{background:#c9372c}\
.unknown{background:#8993a4}.maintenance{background:#5e4db2}.disabled{background:#b3b9c4}\
.strip{display:flex;gap:2px;margin-top:6px}.strip span{flex:0 0 auto;width:10px;height:18px;border-radius:2px}\
.strip .none{background:#e4e6ea}.cert{font-weight:600}\
@media (max-width:600px){main{padding:8px}body{font-size:14px}.strip span{width:9px}}";

/// Renders the whole page.
pub fn render(probes: &[PageProbe<'_>], now: DateTime<Utc>) -> String {
    let views: Vec<MonitorView> = probes
        .iter()
        .map(|p| {
            p.view.clone().unwrap_or(MonitorView {
                probe: p.name.to_string(),
                health_set: p.health_set.to_string(),
                state: MonitorState::Unknown,
                since: None,
                flapping: false,
                suppressed_by: None,
            })
        })
        .collect();
    let sets = health_sets_of(&views);
    let mut html = String::with_capacity(4096 + probes.len() * 1024);
    html.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"10\"><title>sonde status</title><style>",
    );
    html.push_str(CSS);
    let _ = write!(
        html,
        "</style></head><body><header><h1>sonde status</h1><p>{} health set{}, {} probe{} &middot; updated {}</p></header><main>",
        sets.len(),
        if sets.len() == 1 { "" } else { "s" },
        probes.len(),
        if probes.len() == 1 { "" } else { "s" },
        escape(&now.to_rfc3339_opts(SecondsFormat::Secs, true)),
    );
    for (set, state) in &sets {
        let _ = write!(
            html,
            "<section class=\"set\" data-health-set=\"{s}\"><h2><span class=\"set-name\">{s}</span> <span class=\"badge {st}\">{st}</span></h2>",
            s = escape(set),
            st = state.as_str(),
        );
        for (p, view) in probes
            .iter()
            .zip(&views)
            .filter(|(p, _)| p.health_set == set)
        {
            probe_html(&mut html, p, view, now);
        }
        html.push_str("</section>");
    }
    if probes.is_empty() {
        html.push_str("<section><h2>No probes configured</h2></section>");
    }
    html.push_str("</main></body></html>\n");
    html
}

fn probe_html(html: &mut String, p: &PageProbe<'_>, view: &MonitorView, now: DateTime<Utc>) {
    let last = p.results.first();
    let _ = write!(
        html,
        "<div class=\"probe\" data-probe=\"{n}\"><div class=\"top\"><span class=\"name\">{n}</span> <span class=\"kind\">{k}</span> <span class=\"badge {st}\" title=\"monitor state\">{st}</span>",
        n = escape(p.name),
        k = escape(p.kind),
        st = view.state.as_str(),
    );
    if let Some(r) = last {
        let status = escape(&r.status);
        let _ = write!(
            html,
            " <span class=\"badge {status}\" title=\"last result\">{status}</span>"
        );
    }
    if view.flapping {
        html.push_str(" <span class=\"badge degraded\">flapping</span>");
    }
    html.push_str("</div>");
    match last {
        Some(r) => {
            let mut summary = escape(&r.summary);
            if let Some(c) = &r.category {
                let _ = write!(summary, " <span class=\"meta\">({})</span>", escape(c));
            }
            let _ = write!(html, "<div class=\"summary\">{summary}</div>");
            let at = DateTime::from_timestamp(r.started_at, 0).unwrap_or(now);
            let _ = write!(
                html,
                "<div class=\"meta\">last run <time datetime=\"{iso}\">{ago} ago</time>, took {:.3}s",
                r.duration_seconds,
                iso = escape(&at.to_rfc3339_opts(SecondsFormat::Secs, true)),
                ago = format_duration((now - at).num_seconds().max(0)),
            );
            if let Some(next) = p.next_run {
                let _ = write!(
                    html,
                    ", next in <time datetime=\"{}\">{}</time>",
                    escape(&next.to_rfc3339_opts(SecondsFormat::Secs, true)),
                    format_duration((next - now).num_seconds().max(0)),
                );
            }
            if let Some(c) = countdown(r, now) {
                let _ = write!(
                    html,
                    " &middot; <span class=\"cert\">certificate {}</span>",
                    escape(&c)
                );
            }
            html.push_str("</div>");
        }
        None => html.push_str("<div class=\"summary meta\">no result yet</div>"),
    }
    if let Some(by) = &view.suppressed_by {
        let _ = write!(
            html,
            "<div class=\"meta\">alerts held back: depends on {}</div>",
            escape(by)
        );
    }
    // Oldest on the left, newest on the right; empty cells pad to HISTORY.
    html.push_str("<div class=\"strip\" aria-label=\"last results, oldest first\">");
    for _ in p.results.len()..HISTORY {
        html.push_str("<span class=\"none\"></span>");
    }
    for r in p.results.iter().take(HISTORY).rev() {
        let at = DateTime::from_timestamp(r.started_at, 0)
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
            .unwrap_or_default();
        let _ = write!(
            html,
            "<span class=\"{s}\" title=\"{s} at {at}: {sum}\"></span>",
            s = escape(&r.status),
            at = escape(&at),
            sum = escape(&r.summary),
        );
    }
    html.push_str("</div></div>");
}

/// `GET /`
pub async fn page(State(state): State<Arc<ApiState>>) -> Response {
    let config = state.config();
    let names = config.probes.iter().map(|p| p.name.clone()).collect();
    let results = match super::v1::recent(&state, names, HISTORY).await {
        Ok(r) => r,
        Err(_) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read results from the store",
            )
                .into_response()
        }
    };
    let empty = Vec::new();
    let probes: Vec<PageProbe<'_>> = config
        .probes
        .iter()
        .map(|p| PageProbe {
            name: &p.name,
            kind: p.kind(),
            health_set: &p.health_set,
            view: state.views.get(&p.name),
            results: results.get(&p.name).unwrap_or(&empty),
            next_run: state.next_run(p),
        })
        .collect();
    let html = render(&probes, state.clock.now());
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: &str, summary: &str, at: i64, obs: &str) -> ResultRow {
        ResultRow {
            probe: "p".into(),
            started_at: at,
            duration_seconds: 0.25,
            status: status.into(),
            category: (status != "ok").then(|| "certificate".to_string()),
            summary: summary.into(),
            observations_json: obs.into(),
        }
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x&y")</script> it's"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt; it&#39;s"
        );
        assert_eq!(escape("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn the_page_escapes_every_text_and_shows_history_and_countdown() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let t = now.timestamp();
        let results = vec![
            row(
                "warning",
                "expires <soon> & \"then\"",
                t - 60,
                r#"{"seconds_left":1814460}"#,
            ),
            row("ok", "fine", t - 120, "{}"),
            row("critical", "down", t - 180, "{}"),
        ];
        let probes = [
            PageProbe {
                name: "cert<1>",
                kind: "certificate",
                health_set: "Push\"Proxy",
                view: Some(MonitorView {
                    probe: "cert<1>".into(),
                    health_set: "Push\"Proxy".into(),
                    state: MonitorState::Degraded,
                    since: None,
                    flapping: false,
                    suppressed_by: Some("<token>".into()),
                }),
                results: &results,
                next_run: Some(now + chrono::Duration::seconds(42)),
            },
            PageProbe {
                name: "web",
                kind: "http",
                health_set: "site",
                view: None,
                results: &[],
                next_run: None,
            },
        ];
        let html = render(&probes, now);
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
        assert!(html.contains("name=\"viewport\""));
        for raw in ["<soon>", "cert<1>", "Push\"Proxy", "<token>"] {
            assert!(!html.contains(raw), "{raw} unescaped");
        }
        assert!(html.contains("expires &lt;soon&gt; &amp; &quot;then&quot;"));
        assert!(html.contains("data-health-set=\"Push&quot;Proxy\""));
        assert!(
            html.contains("<span class=\"badge degraded\" title=\"monitor state\">degraded</span>")
        );
        // 21 days left at the run, a minute ago.
        assert!(html.contains("certificate expires in 21d"), "{html}");
        assert!(!html.contains("21d 0h"), "{html}");
        assert!(html.contains("last run <time datetime=\""));
        assert!(html.contains(", next in <time datetime=\""), "{html}");
        assert!(html.contains(">42s</time>"), "{html}");
        // 17 padding cells and three results, oldest first.
        let strip = html
            .split("aria-label=\"last results, oldest first\">")
            .nth(1)
            .unwrap();
        let strip = &strip[..strip.find("</div>").unwrap()];
        assert_eq!(strip.matches("class=\"none\"").count(), HISTORY - 3);
        let order: Vec<usize> = ["critical", "ok", "warning"]
            .iter()
            .map(|s| strip.find(&format!("<span class=\"{s}\"")).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{strip}");
        assert!(html.contains("no result yet"));
        assert!(
            html.contains("<span class=\"set-name\">site</span> <span class=\"badge unknown\">")
        );
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(format_duration(17), "17s");
        assert_eq!(format_duration(42 * 60 + 5), "42m");
        assert_eq!(format_duration(5 * 3600 + 12 * 60), "5h 12m");
        assert_eq!(format_duration(3 * 86_400 + 4 * 3600), "3d 4h");
        // The one format of summaries and alerts: a zero lower unit is left out.
        assert_eq!(format_duration(21 * 86_400), "21d");
    }
}
