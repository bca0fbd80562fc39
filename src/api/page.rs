//! The status page at `GET /`: one server-rendered HTML page, inline CSS, no
//! script, refreshed by the browser every 10 s. Health sets with their state
//! (those with a failing probe first, then by name),
//! each with its dependency chain (`depends_on` and the probes a probe uses,
//! such as a push probe's `token_probe`) drawn as inline SVG, the root cause
//! and the broken links marked; then each probe: monitor state, last status and
//! summary, last run, a strip of its last results and a latency sparkline (SVG)
//! of the same runs, and for certificates the countdown to expiry (the
//! `seconds_left` observation). Every text that comes from the config or a
//! result goes through `escape`, in HTML and in SVG alike. The work is linear in
//! probes, dependencies and results shown: nothing is looked up per pair.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};

use super::{ApiState, Streamed, PROBES_PER_READ};
use crate::alert::engine::MonitorView;
use crate::human::format_duration;
use crate::monitor::{self, MonitorState};
use crate::store::ResultRow;

/// Results shown in each probe's history strip.
pub(crate) const HISTORY: usize = 20;

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
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
pub(crate) struct PageProbe<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub health_set: &'a str,
    pub view: Option<MonitorView>,
    /// Newest first.
    pub results: &'a [ResultRow],
    /// When the schedule fires it next (`None`: disabled).
    pub next_run: Option<DateTime<Utc>>,
}

/// One edge of a dependency chain: `probe` needs `on` (it `depends_on` it, or
/// uses it, as a push probe uses its `token_probe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Dependency<'a> {
    pub probe: &'a str,
    pub on: &'a str,
}

/// The dependencies of the configured probes, each edge once.
pub(crate) fn dependencies(config: &crate::config::Config) -> Vec<Dependency<'_>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for p in &config.probes {
        let used = p.spec.references().into_iter().map(|(_, name, _)| name);
        for on in p.depends_on.iter().map(String::as_str).chain(used) {
            let edge = Dependency { probe: &p.name, on };
            if on != p.name && seen.insert(edge) {
                out.push(edge);
            }
        }
    }
    out
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
.runs{display:flex;flex-wrap:wrap;gap:4px 12px;align-items:center;margin-top:6px}.runs .strip{margin-top:0}\
.spark{display:block;width:132px;height:28px;flex:0 0 auto}.lat{color:#5e6c84;font-size:12px;white-space:nowrap}\
.chain{padding:8px 14px 10px;border-bottom:1px solid #e4e6ea}.chain svg{display:block;max-width:100%;height:auto;margin:0 auto}\
.chain p{margin:6px 0 0;font-size:13px;overflow-wrap:anywhere}.chain .why{color:#c9372c;font-weight:600}\
@media (max-width:600px){main{padding:8px}body{font-size:14px}.strip span{width:9px}.chain{padding:6px 8px 8px}}";

#[cfg(test)]
/// Renders the whole page, without dependency chains.
pub(crate) fn render(probes: &[PageProbe<'_>], now: DateTime<Utc>) -> String {
    render_with(probes, &[], now)
}

#[cfg(test)]
/// Renders the whole page, drawing each health set's chain from `deps`.
pub(crate) fn render_with(
    probes: &[PageProbe<'_>],
    deps: &[Dependency<'_>],
    now: DateTime<Utc>,
) -> String {
    let layout = Layout::new(probes, deps);
    let mut html = String::with_capacity(4096 + probes.len() * 2048);
    layout.head(probes.len(), now, &mut html);
    for n in 0..layout.sets.len() {
        layout.open_set(n, &mut html);
        for &i in &layout.sets[n].1 {
            probe_html(&mut html, &probes[i], &layout.views[i], now);
        }
        html.push_str(SET_END);
    }
    layout.tail(probes.len(), &mut html);
    html
}

/// How the page is laid out: each probe's monitor (unknown when none is
/// published), the health sets in page order with their members, and the
/// dependency graph. Only each probe's last result counts for the layout, so
/// that the handler can write the page a few probes at a time, reading their
/// history as it goes.
struct Layout<'p> {
    views: Vec<MonitorView>,
    sets: Vec<(&'p str, Vec<usize>)>,
    graph: Graph<'p>,
}

impl<'p> Layout<'p> {
    fn new(probes: &[PageProbe<'p>], deps: &[Dependency<'_>]) -> Layout<'p> {
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
        // Probes by health set (sets sorted by name, probes in config order), in
        // one pass: a filter per set would be quadratic in a large config.
        let mut sets: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, p) in probes.iter().enumerate() {
            sets.entry(p.health_set).or_default().push(i);
        }
        let graph = Graph::new(probes, &views, deps);
        // Sets with a failing probe first, so that a broken chain is what a
        // phone shows without scrolling; then by name.
        let mut sets: Vec<(&str, Vec<usize>)> = sets.into_iter().collect();
        sets.sort_by_key(|(name, members)| (!members.iter().any(|&i| graph.failing[i]), *name));
        Layout { views, sets, graph }
    }

    /// The page up to its first health set.
    fn head(&self, probes: usize, now: DateTime<Utc>, html: &mut String) {
        let sets = self.sets.len();
        html.push_str(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta http-equiv=\"refresh\" content=\"10\"><title>sonde status</title><style>",
        );
        html.push_str(CSS);
        let _ = write!(
            html,
            "</style></head><body><header><h1>sonde status</h1><p>{} health set{}, {} probe{} &middot; updated {}</p></header><main>",
            sets,
            if sets == 1 { "" } else { "s" },
            probes,
            if probes == 1 { "" } else { "s" },
            escape(&now.to_rfc3339_opts(SecondsFormat::Secs, true)),
        );
    }

    /// The heading and chain of the `n`th health set; its probes follow, then
    /// `SET_END`.
    fn open_set(&self, n: usize, html: &mut String) {
        let (set, members) = &self.sets[n];
        let state = monitor::health_set_state(members.iter().map(|&i| self.views[i].state));
        let _ = write!(
            html,
            "<section class=\"set\" data-health-set=\"{s}\"><h2><span class=\"set-name\">{s}</span> <span class=\"badge {st}\">{st}</span></h2>",
            s = escape(set),
            st = state.as_str(),
        );
        chain_html(html, n, set, members, &self.graph);
    }

    /// The end of the page.
    fn tail(&self, probes: usize, html: &mut String) {
        if probes == 0 {
            html.push_str("<section><h2>No probes configured</h2></section>");
        }
        html.push_str("</main></body></html>\n");
    }
}

const SET_END: &str = "</section>";

/// How a probe stands in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Ok,
    Warning,
    /// Failing, and none of what it needs is: where the trouble starts.
    RootCause,
    /// Failing (or held back) because something it needs is failing.
    Affected,
    /// No result yet, or its monitor is off.
    Unknown,
}

impl Standing {
    fn class(self) -> &'static str {
        match self {
            Standing::Ok => "ok",
            Standing::Warning => "warning",
            Standing::RootCause => "root-cause",
            Standing::Affected => "affected",
            Standing::Unknown => "unknown",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Standing::Ok => "ok",
            Standing::Warning => "warning",
            Standing::RootCause => "root cause",
            Standing::Affected => "affected",
            Standing::Unknown => "no result",
        }
    }
}

/// The dependencies of all probes, indexed once for the page.
struct Graph<'p> {
    /// Per probe, the positions of the probes it needs (configured ones only).
    needs: Vec<Vec<usize>>,
    /// Per probe: failing (its monitor is unhealthy or its last run critical).
    failing: Vec<bool>,
    standing: Vec<Standing>,
    /// Per probe, its summary line for the chain's caption.
    summary: Vec<&'p str>,
    names: Vec<&'p str>,
}

impl<'p> Graph<'p> {
    fn new(probes: &[PageProbe<'p>], views: &[MonitorView], deps: &[Dependency<'_>]) -> Self {
        let index: HashMap<&'p str, usize> = probes
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name, i))
            .collect();
        let mut needs = vec![Vec::new(); probes.len()];
        let mut seen = HashSet::new();
        for d in deps {
            if let (Some(&p), Some(&on)) = (index.get(d.probe), index.get(d.on)) {
                if p != on && seen.insert((p, on)) {
                    needs[p].push(on);
                }
            }
        }
        let failing: Vec<bool> = probes
            .iter()
            .zip(views)
            .map(|(p, v)| {
                v.state == MonitorState::Unhealthy
                    || p.results.first().is_some_and(|r| r.status == "critical")
            })
            .collect();
        let standing = probes
            .iter()
            .zip(views)
            .enumerate()
            .map(|(i, (p, v))| {
                let upstream = needs[i].iter().any(|&d| failing[d]);
                if failing[i] || (upstream && v.suppressed_by.is_some()) {
                    if upstream {
                        Standing::Affected
                    } else {
                        Standing::RootCause
                    }
                } else if v.state == MonitorState::Degraded
                    || p.results.first().is_some_and(|r| r.status == "warning")
                {
                    Standing::Warning
                } else if v.state == MonitorState::Healthy
                    || p.results.first().is_some_and(|r| r.status == "ok")
                {
                    Standing::Ok
                } else {
                    Standing::Unknown
                }
            })
            .collect();
        Graph {
            needs,
            failing,
            standing,
            summary: probes
                .iter()
                .map(|p| p.results.first().map_or("", |r| r.summary.as_str()))
                .collect(),
            names: probes.iter().map(|p| p.name).collect(),
        }
    }
}

/// Chain geometry, in SVG user units: node size, gaps, nodes per row (two
/// keep the names legible at a phone's width).
const NODE_W: usize = 184;
const NODE_H: usize = 38;
const GAP_X: usize = 16;
const ROW_PITCH: usize = 62;
const PAD: usize = 6;
const PER_ROW: usize = 2;
/// Name characters shown in a node; the full name is in its tooltip.
const NODE_CHARS: usize = 24;

/// Clips `text` to `max` characters, marking the cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// The health set's dependency chain: its probes that take part in an edge
/// (and the probes of other sets they need), layered so that what a probe
/// needs sits above it, as SVG; then the root causes and broken links in words.
/// A set without dependencies gets no drawing.
fn chain_html(html: &mut String, n: usize, set: &str, members: &[usize], g: &Graph<'_>) {
    // Nodes: members with an edge, plus what they need from elsewhere.
    let mut nodes: Vec<usize> = Vec::new();
    let mut in_chain: HashMap<usize, usize> = HashMap::new();
    let mut needed: HashSet<usize> = HashSet::new();
    for &i in members {
        needed.extend(g.needs[i].iter().copied());
    }
    for &i in members {
        if !g.needs[i].is_empty() || needed.contains(&i) {
            in_chain.insert(i, nodes.len());
            nodes.push(i);
        }
    }
    for &i in members {
        for &d in &g.needs[i] {
            if let std::collections::hash_map::Entry::Vacant(e) = in_chain.entry(d) {
                e.insert(nodes.len());
                nodes.push(d);
            }
        }
    }
    if nodes.is_empty() {
        return;
    }
    // Depth: 0 for a node needing nothing in the chain, else one more than the
    // deepest it needs. Iterative, each node settled once; a cycle (refused by
    // validation) is cut where it closes.
    let mut depth: Vec<Option<usize>> = vec![None; nodes.len()];
    let mut on_stack = vec![false; nodes.len()];
    for start in 0..nodes.len() {
        let mut stack = vec![(start, 0usize)];
        while let Some(&mut (k, ref mut next)) = stack.last_mut() {
            if depth[k].is_some() {
                stack.pop();
                continue;
            }
            on_stack[k] = true;
            let needs = &g.needs[nodes[k]];
            if let Some(&d) = needs.get(*next) {
                *next += 1;
                let dk = in_chain[&d];
                if depth[dk].is_none() && !on_stack[dk] {
                    stack.push((dk, 0));
                }
                continue;
            }
            let deepest = needs
                .iter()
                .filter_map(|d| depth[in_chain[d]])
                .max()
                .map_or(0, |m| m + 1);
            depth[k] = Some(deepest);
            on_stack[k] = false;
            stack.pop();
        }
    }
    // Rows: each depth in config order, PER_ROW nodes a row.
    let mut by_depth: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (k, d) in depth.iter().enumerate() {
        by_depth.entry(d.unwrap_or(0)).or_default().push(k);
    }
    let mut pos = vec![(0usize, 0usize); nodes.len()];
    let cols = by_depth
        .values()
        .map(|v| v.len().min(PER_ROW))
        .max()
        .unwrap_or(1);
    let width = 2 * PAD + cols * NODE_W + (cols - 1) * GAP_X;
    let mut row = 0;
    for level in by_depth.values() {
        for chunk in level.chunks(PER_ROW) {
            let used = chunk.len() * NODE_W + (chunk.len() - 1) * GAP_X;
            let left = (width - used) / 2;
            for (c, &k) in chunk.iter().enumerate() {
                pos[k] = (left + c * (NODE_W + GAP_X), PAD + row * ROW_PITCH);
            }
            row += 1;
        }
    }
    let height = 2 * PAD + (row.max(1) - 1) * ROW_PITCH + NODE_H;
    let _ = write!(
        html,
        "<div class=\"chain\"><svg class=\"chain-graph\" data-chain=\"{s}\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"dependency chain of {s}\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"system-ui,-apple-system,Segoe UI,Roboto,sans-serif\">\
         <defs><marker id=\"arrow{n}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0 0L10 5L0 10z\" fill=\"#8993a4\"/></marker>\
         <marker id=\"arrowb{n}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0 0L10 5L0 10z\" fill=\"#c9372c\"/></marker></defs>",
        s = escape(set),
    );
    let mut broken: Vec<(usize, usize)> = Vec::new();
    for (k, &i) in nodes.iter().enumerate() {
        for &d in &g.needs[i] {
            let dk = in_chain[&d];
            let ((x1, y1), (x2, y2)) = (pos[dk], pos[k]);
            let (x1, y1) = (x1 + NODE_W / 2, y1 + NODE_H);
            let (x2, y2) = (x2 + NODE_W / 2, y2);
            // The chain breaks where the root cause meets what needs it;
            // further down the failure is only passed on.
            let is_broken = g.standing[d] == Standing::RootCause;
            let passed_on = !is_broken && g.failing[d];
            if is_broken {
                broken.push((d, i));
            }
            let _ = write!(
                html,
                "<g class=\"edge{b}\" data-from=\"{from}\" data-to=\"{to}\"><title>{to} needs {from}{why}</title>\
                 <line x1=\"{x1}\" y1=\"{y1}\" x2=\"{x2}\" y2=\"{y2}\" stroke=\"{color}\" stroke-width=\"{sw}\"{dash} marker-end=\"url(#arrow{m}{n})\"/>",
                b = if is_broken {
                    " broken"
                } else if passed_on {
                    " passed-on"
                } else {
                    ""
                },
                from = escape(g.names[d]),
                to = escape(g.names[i]),
                why = if is_broken {
                    " (broken: the root cause)"
                } else if passed_on {
                    " (failing because of what it needs)"
                } else {
                    ""
                },
                color = if is_broken || passed_on { "#c9372c" } else { "#8993a4" },
                sw = if is_broken { 2.5 } else { 1.5 },
                dash = if is_broken || passed_on { " stroke-dasharray=\"6 4\"" } else { "" },
                m = if is_broken || passed_on { "b" } else { "" },
            );
            if is_broken {
                let (mx, my) = ((x1 + x2) / 2, (y1 + y2) / 2);
                let _ = write!(
                    html,
                    "<circle cx=\"{mx}\" cy=\"{my}\" r=\"8\" fill=\"#fff\" stroke=\"#c9372c\" stroke-width=\"2\"/>\
                     <path d=\"M{a} {b}l8 8M{a} {c}l8 -8\" stroke=\"#c9372c\" stroke-width=\"2\"/>",
                    a = mx - 4,
                    b = my - 4,
                    c = my + 4,
                );
            }
            html.push_str("</g>");
        }
    }
    for (k, &i) in nodes.iter().enumerate() {
        let (x, y) = pos[k];
        let standing = g.standing[i];
        let (fill, stroke, sw) = match standing {
            Standing::Ok => ("#e3fcef", "#1f845a", 1.5),
            Standing::Warning => ("#fff4e0", "#cf7a00", 1.5),
            Standing::RootCause => ("#ffeceb", "#c9372c", 3.0),
            Standing::Affected => ("#f4f5f7", "#c9372c", 1.5),
            Standing::Unknown => ("#f4f5f7", "#8993a4", 1.5),
        };
        let _ = write!(
            html,
            "<g class=\"node {c}\" data-probe=\"{name}\"><title>{name}: {label}{sep}{sum}</title>\
             <rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"6\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{sw}\"{dash}/>\
             <text x=\"{tx}\" y=\"{ty1}\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"600\" fill=\"#1d2125\">{shown}</text>\
             <text x=\"{tx}\" y=\"{ty2}\" text-anchor=\"middle\" font-size=\"11\" font-weight=\"{lw}\" fill=\"{lc}\">{label}</text></g>",
            c = standing.class(),
            name = escape(g.names[i]),
            label = standing.label(),
            sep = if g.summary[i].is_empty() { "" } else { " \u{2014} " },
            sum = escape(&clip(g.summary[i], 300)),
            dash = if standing == Standing::Affected { " stroke-dasharray=\"4 3\"" } else { "" },
            tx = x + NODE_W / 2,
            ty1 = y + 16,
            ty2 = y + 31,
            shown = escape(&clip(g.names[i], NODE_CHARS)),
            lw = if standing == Standing::RootCause { 700 } else { 400 },
            lc = match standing {
                Standing::RootCause | Standing::Affected => "#c9372c",
                Standing::Warning => "#a35f00",
                _ => "#5e6c84",
            },
        );
    }
    html.push_str("</svg>");
    for &i in &nodes {
        if g.standing[i] == Standing::RootCause {
            let _ = write!(
                html,
                "<p class=\"root-cause\" data-probe=\"{name}\"><span class=\"why\">Root cause:</span> {name}{sep}{sum}</p>",
                name = escape(g.names[i]),
                sep = if g.summary[i].is_empty() { "" } else { " \u{2014} " },
                sum = escape(&clip(g.summary[i], 300)),
            );
        }
    }
    for (from, to) in broken {
        let _ = write!(
            html,
            "<p class=\"broken-link\" data-from=\"{f}\" data-to=\"{t}\"><span class=\"why\">Broken link:</span> {f} \u{2192} {t}</p>",
            f = escape(g.names[from]),
            t = escape(g.names[to]),
        );
    }
    html.push_str("</div>");
}

/// Sparkline geometry: the SVG's size in user units.
const SPARK_W: f64 = 132.0;
const SPARK_H: f64 = 28.0;

/// A duration for people: milliseconds under a second.
fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0}ms", s * 1000.0)
    } else {
        format!("{s:.2}s")
    }
}

/// The latency sparkline of `results` (newest first), oldest on the left and
/// the newest at the right edge, in the same slots as the status strip. A dot
/// marks each run that did not end ok, in its status colour.
fn sparkline(html: &mut String, name: &str, results: &[ResultRow]) {
    let runs: Vec<(f64, &str)> = results
        .iter()
        .take(HISTORY)
        .rev()
        .map(|r| {
            let d = if r.duration_seconds.is_finite() {
                r.duration_seconds.max(0.0)
            } else {
                0.0
            };
            (d, r.status.as_str())
        })
        .collect();
    let max = runs.iter().map(|r| r.0).fold(0.0_f64, f64::max);
    let min = runs.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
    let scale = if max > 0.0 { max } else { 1.0 };
    let step = (SPARK_W - 6.0) / (HISTORY - 1) as f64;
    let first_slot = HISTORY - runs.len();
    let point = |j: usize, d: f64| {
        let x = 3.0 + (first_slot + j) as f64 * step;
        let y = SPARK_H - 3.0 - d / scale * (SPARK_H - 6.0);
        (x, y)
    };
    let title = match runs.last() {
        Some((last, _)) => format!(
            "latency of the last {} run{}: last {}, min {}, max {}",
            runs.len(),
            if runs.len() == 1 { "" } else { "s" },
            seconds(*last),
            seconds(min),
            seconds(max),
        ),
        None => "latency: no runs yet".to_string(),
    };
    let _ = write!(
        html,
        "<svg class=\"spark\" data-probe=\"{n}\" data-points=\"{c}\" viewBox=\"0 0 {SPARK_W} {SPARK_H}\" role=\"img\" aria-label=\"{t}\" xmlns=\"http://www.w3.org/2000/svg\"><title>{t}</title>\
         <line x1=\"3\" y1=\"{b}\" x2=\"{e}\" y2=\"{b}\" stroke=\"#e4e6ea\" stroke-width=\"1\"/>",
        n = escape(name),
        c = runs.len(),
        t = escape(&title),
        b = SPARK_H - 3.0,
        e = SPARK_W - 3.0,
    );
    if !runs.is_empty() {
        html.push_str("<polyline fill=\"none\" stroke=\"#0c66e4\" stroke-width=\"1.5\" stroke-linejoin=\"round\" points=\"");
        for (j, (d, _)) in runs.iter().enumerate() {
            let (x, y) = point(j, *d);
            let _ = write!(html, "{x:.1},{y:.1} ");
        }
        html.push_str("\"/>");
        // The newest run, visible even when it is the only one.
        let (x, y) = point(runs.len() - 1, runs[runs.len() - 1].0);
        let _ = write!(
            html,
            "<circle class=\"last\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2\" fill=\"#0c66e4\"/>"
        );
        for (j, (d, status)) in runs.iter().enumerate() {
            let color = match *status {
                "ok" => continue,
                "warning" => "#cf7a00",
                "critical" => "#c9372c",
                _ => "#8993a4",
            };
            let (x, y) = point(j, *d);
            let _ = write!(
                html,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.2\" fill=\"{color}\"/>"
            );
        }
    }
    html.push_str("</svg>");
    if let Some((last, _)) = runs.last() {
        let _ = write!(
            html,
            "<span class=\"lat\">{} &middot; max {}</span>",
            seconds(*last),
            seconds(max)
        );
    }
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
    html.push_str(
        "<div class=\"runs\"><div class=\"strip\" aria-label=\"last results, oldest first\">",
    );
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
    html.push_str("</div>");
    sparkline(html, p.name, p.results);
    html.push_str("</div></div>");
}

/// `GET /`: laid out from each probe's last result, then written set by set
/// and sent as it is written, reading the history of `PROBES_PER_READ` probes at
/// a time, so that what the page holds at once is a chunk's rows and text,
/// not every probe's history (20 rows each) and the whole page (16 MB at
/// 10,000 probes).
pub(crate) async fn page(State(state): State<Arc<ApiState>>) -> Response {
    let config = state.config();
    let names = config.probes.iter().map(|p| p.name.clone()).collect();
    let last = match super::v1::recent(&state, names, 1).await {
        Ok(r) => r,
        Err(_) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read results from the store",
            )
                .into_response()
        }
    };
    let views: Vec<Option<MonitorView>> = config
        .probes
        .iter()
        .map(|p| state.views.get(&p.name))
        .collect();
    let next_runs: Vec<_> = config.probes.iter().map(|p| state.next_run(p)).collect();
    let store = state.store.clone();
    let now = state.clock.now();
    let (out, response) = Streamed::new("text/html; charset=utf-8");
    // The writer ends when the page is written or the client is gone. A slow
    // reader holds this task and two pieces of text, not a thread.
    tokio::spawn(async move {
        let empty = Vec::new();
        let probes: Vec<PageProbe<'_>> = config
            .probes
            .iter()
            .zip(views)
            .zip(next_runs)
            .map(|((p, view), next_run)| PageProbe {
                name: &p.name,
                kind: p.kind(),
                health_set: &p.health_set,
                view,
                results: last.get(&p.name).unwrap_or(&empty),
                next_run,
            })
            .collect();
        let deps = dependencies(&config);
        let layout = Layout::new(&probes, &deps);
        let mut html = String::with_capacity(2 * super::FLUSH_BYTES);
        layout.head(probes.len(), now, &mut html);
        for n in 0..layout.sets.len() {
            layout.open_set(n, &mut html);
            for chunk in layout.sets[n].1.chunks(PROBES_PER_READ) {
                let names: Vec<String> =
                    chunk.iter().map(|&i| probes[i].name.to_string()).collect();
                let history = (super::v1::read_recent(&store, names, HISTORY).await)
                    .unwrap_or_else(|e| {
                        // The page still shows each probe's last result.
                        tracing::warn!(error = %e, "cannot read results for the status page");
                        HashMap::new()
                    });
                for &i in chunk {
                    let p = &probes[i];
                    let shown = PageProbe {
                        name: p.name,
                        kind: p.kind,
                        health_set: p.health_set,
                        view: None,
                        results: history.get(p.name).map_or(p.results, Vec::as_slice),
                        next_run: p.next_run,
                    };
                    probe_html(&mut html, &shown, &layout.views[i], now);
                }
                if !out.flush(&mut html).await {
                    return;
                }
            }
            html.push_str(SET_END);
        }
        layout.tail(probes.len(), &mut html);
        out.send(html.into_bytes()).await;
    });
    response
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

    fn view(probe: &str, set: &str, state: MonitorState, by: Option<&str>) -> MonitorView {
        MonitorView {
            probe: probe.into(),
            health_set: set.into(),
            state,
            since: None,
            flapping: false,
            suppressed_by: by.map(str::to_string),
        }
    }

    fn timed(status: &str, summary: &str, at: i64, seconds: f64) -> ResultRow {
        ResultRow {
            duration_seconds: seconds,
            ..row(status, summary, at, "{}")
        }
    }

    /// The push chain with the token refused: token-issuance is the root
    /// cause, its link to push-connectivity is the broken one, and what
    /// push-connectivity passes on is not counted twice.
    #[test]
    fn the_chain_marks_the_root_cause_and_the_broken_link() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let t = now.timestamp();
        let ok = vec![
            timed("ok", "fine", t - 20, 0.2),
            timed("ok", "fine", t - 10, 0.4),
        ];
        let refused = vec![
            timed("critical", "refused <ACS50008> & \"x\"", t - 5, 0.05),
            timed("ok", "fine", t - 15, 0.3),
        ];
        let no_token = vec![timed("critical", "token: refused", t - 4, 0.01)];
        let set = "Push<Proxy>";
        let probes = [
            PageProbe {
                name: "oauth-certificate",
                kind: "certificate",
                health_set: set,
                view: Some(view("oauth-certificate", set, MonitorState::Healthy, None)),
                results: &ok,
                next_run: None,
            },
            PageProbe {
                name: "token-issuance",
                kind: "token",
                health_set: set,
                view: Some(view("token-issuance", set, MonitorState::Unhealthy, None)),
                results: &refused,
                next_run: None,
            },
            PageProbe {
                name: "push-connectivity",
                kind: "push",
                health_set: set,
                view: Some(view(
                    "push-connectivity",
                    set,
                    MonitorState::Unhealthy,
                    Some("token-issuance"),
                )),
                results: &no_token,
                next_run: None,
            },
            PageProbe {
                name: "push-<end>",
                kind: "push",
                health_set: set,
                view: None,
                results: &[],
                next_run: None,
            },
            PageProbe {
                name: "alone",
                kind: "http",
                health_set: "other",
                view: None,
                results: &ok,
                next_run: None,
            },
        ];
        let deps = [
            Dependency {
                probe: "token-issuance",
                on: "oauth-certificate",
            },
            Dependency {
                probe: "push-connectivity",
                on: "token-issuance",
            },
            // depends_on and token_probe name the same edge: drawn once.
            Dependency {
                probe: "push-connectivity",
                on: "token-issuance",
            },
            Dependency {
                probe: "push-<end>",
                on: "push-connectivity",
            },
            Dependency {
                probe: "alone",
                on: "not-configured",
            },
        ];
        let html = render_with(&probes, &deps, now);
        for raw in ["<ACS50008>", "push-<end>", "Push<Proxy>"] {
            assert!(!html.contains(raw), "{raw} unescaped");
        }
        assert_eq!(
            html.matches("<svg class=\"chain-graph\"").count(),
            1,
            "{html}"
        );
        assert!(html.contains("data-chain=\"Push&lt;Proxy&gt;\""));
        assert!(html.contains("<g class=\"node ok\" data-probe=\"oauth-certificate\">"));
        assert!(html.contains("<g class=\"node root-cause\" data-probe=\"token-issuance\">"));
        assert!(html.contains("<g class=\"node affected\" data-probe=\"push-connectivity\">"));
        assert!(html.contains("<g class=\"node unknown\" data-probe=\"push-&lt;end&gt;\">"));
        assert_eq!(html.matches("class=\"edge broken\"").count(), 1, "{html}");
        assert!(html.contains(
            "<g class=\"edge broken\" data-from=\"token-issuance\" data-to=\"push-connectivity\">"
        ));
        assert!(html.contains(
            "<g class=\"edge passed-on\" data-from=\"push-connectivity\" data-to=\"push-&lt;end&gt;\">"
        ));
        assert!(html.contains(
            "<g class=\"edge\" data-from=\"oauth-certificate\" data-to=\"token-issuance\">"
        ));
        assert!(html.contains(
            "<span class=\"why\">Root cause:</span> token-issuance \u{2014} refused &lt;ACS50008&gt; &amp; &quot;x&quot;"
        ));
        assert!(html.contains(
            "<p class=\"broken-link\" data-from=\"token-issuance\" data-to=\"push-connectivity\">"
        ));
        assert_eq!(html.matches("class=\"root-cause\"").count(), 1);
        // What needs something nobody configured has no chain to draw.
        assert!(!html.contains("data-chain=\"other\""));
        // Layered: what a probe needs sits above it.
        let y = |name: &str| -> usize {
            let node = html
                .split(&format!("data-probe=\"{name}\"><title>"))
                .nth(1)
                .unwrap();
            let at = node.find(" y=\"").unwrap() + 4;
            node[at..].split('"').next().unwrap().parse().unwrap()
        };
        assert!(y("oauth-certificate") < y("token-issuance"));
        assert!(y("token-issuance") < y("push-connectivity"));
        assert!(y("push-connectivity") < y("push-&lt;end&gt;"));
    }

    #[test]
    fn every_probe_gets_a_latency_sparkline_of_its_runs() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let t = now.timestamp();
        // Newest first, as the store gives them; one non-finite duration.
        let results: Vec<ResultRow> = (0..25)
            .map(|i| {
                let s = if i == 3 {
                    f64::NAN
                } else {
                    0.1 * f64::from(i + 1)
                };
                timed(
                    if i == 0 { "critical" } else { "ok" },
                    "r",
                    t - i64::from(i),
                    s,
                )
            })
            .collect();
        let probes = [
            PageProbe {
                name: "a\"b",
                kind: "http",
                health_set: "s",
                view: None,
                results: &results,
                next_run: None,
            },
            PageProbe {
                name: "fresh",
                kind: "http",
                health_set: "s",
                view: None,
                results: &[],
                next_run: None,
            },
        ];
        let html = render(&probes, now);
        assert_eq!(html.matches("<svg class=\"spark\"").count(), 2);
        assert!(html.contains(&format!(
            "<svg class=\"spark\" data-probe=\"a&quot;b\" data-points=\"{HISTORY}\""
        )));
        assert!(html.contains("<svg class=\"spark\" data-probe=\"fresh\" data-points=\"0\""));
        assert!(html.contains("latency: no runs yet"));
        assert!(!html.contains("NaN"), "{html}");
        // The newest run (critical, 100 ms) is marked and is the last point.
        assert!(html.contains("latency of the last 20 runs: last 100ms, min 0ms, max 2.00s"));
        let spark = html
            .split("data-probe=\"a&quot;b\" data-points")
            .nth(1)
            .unwrap();
        let points = spark.split("points=\"").nth(1).unwrap();
        let points: Vec<&str> = points[..points.find('"').unwrap()]
            .split_whitespace()
            .collect();
        assert_eq!(points.len(), HISTORY);
        assert!(spark.contains("fill=\"#c9372c\""));
        assert!(html.contains("<span class=\"lat\">100ms &middot; max 2.00s</span>"));
    }

    /// 10,000 probes in 2,000 sets of five-probe chains: one pass per part, so
    /// this stays well within a test's time even in a debug build.
    #[test]
    fn ten_thousand_probes_render_with_their_chains() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let names: Vec<String> = (0..10_000).map(|i| format!("p{i}")).collect();
        let sets: Vec<String> = (0..2_000).map(|i| format!("set{i}")).collect();
        let results = vec![timed("ok", "fine", now.timestamp(), 0.1)];
        let probes: Vec<PageProbe<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, n)| PageProbe {
                name: n,
                kind: "http",
                health_set: &sets[i / 5],
                view: None,
                results: &results,
                next_run: None,
            })
            .collect();
        let deps: Vec<Dependency<'_>> = (0..10_000)
            .filter(|i| i % 5 != 0)
            .map(|i| Dependency {
                probe: &names[i],
                on: &names[i - 1],
            })
            .collect();
        let started = std::time::Instant::now();
        let html = render_with(&probes, &deps, now);
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        assert_eq!(html.matches("<svg class=\"chain-graph\"").count(), 2_000);
        assert_eq!(html.matches("<svg class=\"spark\"").count(), 10_000);
        assert_eq!(html.matches("<g class=\"edge\"").count(), 8_000);
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
