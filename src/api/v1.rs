//! The JSON API under `/api/v1/`: the health report (`GET /health`, after
//! Exchange's Get-HealthReport: health sets, then each probe's monitor and last
//! result), the probes (`GET /probes`, `GET /probes/{name}` with its recent
//! results), and the on-demand run (`POST /probes/{name}/run`, bearer token,
//! rate-limited per probe). Monitor states come from the engine's published
//! views, results from the store; an on-demand run goes through the agent's
//! runner and is answered, not recorded: it changes no monitor.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::auth::Verdict;
use super::{error, ApiState, Streamed, FLUSH_BYTES, PROBES_PER_READ};
use crate::alert::engine::{health_sets_of, MonitorView};
use crate::config::{Config, ProbeConfig};
use crate::monitor;
use crate::output::{self, Labels};
use crate::store::{ResultRow, Store};

/// Results per probe when `?limit=` is absent, and the most it may ask for.
pub(crate) const DEFAULT_LIMIT: usize = 20;
pub(crate) const MAX_LIMIT: usize = 200;

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn timestamp(t: i64) -> Option<String> {
    DateTime::from_timestamp(t, 0).map(time)
}

/// One stored result as the API shows it. The views are written straight
/// from the config, the published monitors and the stored rows, without a JSON
/// tree in between (a tree of 10,000 probes took 70 MB for a 4 MB answer);
/// fields are in alphabetical order, as the API has always written them.
#[derive(Serialize)]
struct ResultItem<'a> {
    category: Option<&'a str>,
    duration_seconds: f64,
    /// The stored JSON text as it is, once checked to be JSON.
    observations: &'a RawValue,
    started_at: Option<String>,
    status: &'a str,
    summary: &'a str,
}

impl<'a> ResultItem<'a> {
    fn of(r: &'a ResultRow) -> ResultItem<'a> {
        ResultItem {
            category: r.category.as_deref(),
            duration_seconds: r.duration_seconds,
            // A damaged row shows no observations rather than failing the view.
            observations: serde_json::from_str(&r.observations_json).unwrap_or_else(|_| no_json()),
            started_at: timestamp(r.started_at),
            status: &r.status,
            summary: &r.summary,
        }
    }
}

/// `{}`, for observations that do not read back.
fn no_json() -> &'static RawValue {
    serde_json::from_str("{}").expect("`{}` is JSON")
}

/// A probe's monitor as the API shows it: `unknown` before the engine has
/// published one.
struct Shown<'a> {
    flapping: bool,
    since: Option<String>,
    state: &'static str,
    suppressed_by: Option<&'a str>,
}

fn shown(view: Option<&MonitorView>) -> Shown<'_> {
    Shown {
        flapping: view.is_some_and(|v| v.flapping),
        since: view.and_then(|v| v.since).map(time),
        state: view.map_or("unknown", |v| v.state.as_str()),
        suppressed_by: view.and_then(|v| v.suppressed_by.as_deref()),
    }
}

/// A probe: its config, its monitor, and its last result; for
/// `GET /probes/{name}` also its dependencies, channels and recent results.
#[derive(Serialize)]
struct ProbeItem<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    depends_on: Option<&'a [String]>,
    enabled: bool,
    flapping: bool,
    health_set: &'a str,
    kind: &'static str,
    last_result: Option<ResultItem<'a>>,
    name: &'a str,
    next_run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    results: Option<Vec<ResultItem<'a>>>,
    schedule: String,
    since: Option<String>,
    state: &'static str,
    suppressed_by: Option<&'a str>,
}

impl<'a> ProbeItem<'a> {
    fn of(
        p: &'a ProbeConfig,
        view: Option<&'a MonitorView>,
        last: Option<&'a ResultRow>,
        next: Option<DateTime<Utc>>,
    ) -> ProbeItem<'a> {
        let m = shown(view);
        ProbeItem {
            alert: None,
            depends_on: None,
            enabled: p.enabled,
            flapping: m.flapping,
            health_set: &p.health_set,
            kind: p.kind(),
            last_result: last.map(ResultItem::of),
            name: &p.name,
            next_run: next.map(time),
            results: None,
            schedule: p.schedule.to_string(),
            since: m.since,
            state: m.state,
            suppressed_by: m.suppressed_by,
        }
    }
}

/// A probe of a health set in the health report.
#[derive(Serialize)]
struct MemberItem<'a> {
    flapping: bool,
    kind: &'static str,
    last_result: Option<ResultItem<'a>>,
    name: &'a str,
    since: Option<String>,
    state: &'static str,
    suppressed_by: Option<&'a str>,
}

/// Each probe's published monitor view, by name.
fn by_name(views: &[MonitorView]) -> HashMap<&str, &MonitorView> {
    views.iter().map(|v| (v.probe.as_str(), v)).collect()
}

/// The `limit` latest results of each probe in `names`, newest first. SQLite
/// is blocking work: it runs off the request threads.
pub(crate) async fn recent(
    state: &Arc<ApiState>,
    names: Vec<String>,
    limit: usize,
) -> Result<HashMap<String, Vec<ResultRow>>, Response> {
    read_recent(&state.store, names, limit).await.map_err(|e| {
        tracing::error!(error = %e, "cannot read results for the api");
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store",
            "cannot read results from the store",
        )
    })
}

/// `recent` for a writer task: the error as text.
pub(crate) async fn read_recent(
    store: &Arc<Store>,
    names: Vec<String>,
    limit: usize,
) -> Result<HashMap<String, Vec<ResultRow>>, String> {
    let store = store.clone();
    // One query for all of them (`Store::recent_results_of`), not one per probe.
    match tokio::task::spawn_blocking(move || store.recent_results_of(&names, limit)).await {
        Ok(Ok(map)) => Ok(map),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("reading results failed".into()),
    }
}

/// The last result of each probe of `config` at the positions of `order`, read
/// `PROBES_PER_READ` probes at a time as a writer walks `order`.
struct LastResults {
    store: Arc<Store>,
    config: Arc<Config>,
    order: Vec<usize>,
    /// The start in `order` of the chunk whose rows are held.
    chunk: usize,
    rows: HashMap<String, Vec<ResultRow>>,
}

impl LastResults {
    /// With the first chunk read, here, so that a store that cannot be read
    /// is an error answer rather than a cut one.
    async fn start(
        state: &Arc<ApiState>,
        config: Arc<Config>,
        order: Vec<usize>,
    ) -> Result<LastResults, Response> {
        let first = &order[..order.len().min(PROBES_PER_READ)];
        let names = first
            .iter()
            .map(|&i| config.probes[i].name.clone())
            .collect();
        let rows = recent(state, names, 1).await?;
        Ok(LastResults {
            store: state.store.clone(),
            config,
            order,
            chunk: 0,
            rows,
        })
    }

    /// The last result of the probe at `order[k]` (`k` from 0 up).
    async fn at(&mut self, k: usize) -> Result<Option<&ResultRow>, String> {
        let chunk = k / PROBES_PER_READ * PROBES_PER_READ;
        if chunk != self.chunk {
            let end = self.order.len().min(chunk + PROBES_PER_READ);
            let names = (self.order[chunk..end].iter())
                .map(|&i| self.config.probes[i].name.clone())
                .collect();
            self.rows = read_recent(&self.store, names, 1).await?;
            self.chunk = chunk;
        }
        let name = &self.config.probes[self.order[k]].name;
        Ok(self.rows.get(name).and_then(|r| r.first()))
    }
}

/// `value` as JSON at the end of `buf` (what the API writes always serializes).
fn json_into(buf: &mut Vec<u8>, value: &impl Serialize) {
    let _ = serde_json::to_writer(buf, value);
}

fn no_such_probe(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no probe named `{name}`"),
    )
}

/// `GET /api/v1/health`: written as it is read (see `Streamed`).
pub(crate) async fn health(State(state): State<Arc<ApiState>>) -> Response {
    let config = state.config();
    let views = state.views.all();
    let sets = health_sets_of(&views);
    let overall = monitor::health_set_state(sets.iter().map(|(_, s)| *s));
    // The probes of each set in one pass (a filter per set would be
    // quadratic when every probe has a set of its own), in config order.
    let mut members: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, p) in config.probes.iter().enumerate() {
        members.entry(p.health_set.as_str()).or_default().push(i);
    }
    let sets: Vec<(String, &'static str, usize)> = sets
        .iter()
        .map(|(set, s)| {
            let n = members.get(set.as_str()).map_or(0, Vec::len);
            (set.clone(), s.as_str(), n)
        })
        .collect();
    let order: Vec<usize> = (sets.iter())
        .flat_map(|(set, _, _)| members.remove(set.as_str()).unwrap_or_default())
        .collect();
    let mut last = match LastResults::start(&state, config.clone(), order).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let now = state.clock.now();
    let (out, response) = Streamed::new("application/json");
    tokio::spawn(async move {
        let view_of = by_name(&views);
        let mut buf = Vec::with_capacity(2 * FLUSH_BYTES);
        buf.extend_from_slice(b"{\"generated_at\":");
        json_into(&mut buf, &time(now));
        buf.extend_from_slice(b",\"health_sets\":[");
        let mut k = 0;
        for (n, (set, set_state, count)) in sets.iter().enumerate() {
            if n > 0 {
                buf.push(b',');
            }
            let _ = write!(buf, "{{\"monitor_count\":{count},\"name\":");
            json_into(&mut buf, set);
            buf.extend_from_slice(b",\"probes\":[");
            for m in 0..*count {
                if m > 0 {
                    buf.push(b',');
                }
                let p = &config.probes[last.order[k]];
                let row = match last.at(k).await {
                    Ok(row) => row,
                    Err(e) => return out.fail(e).await,
                };
                let shown = shown(view_of.get(p.name.as_str()).copied());
                let item = MemberItem {
                    flapping: shown.flapping,
                    kind: p.kind(),
                    last_result: row.map(ResultItem::of),
                    name: &p.name,
                    since: shown.since,
                    state: shown.state,
                    suppressed_by: shown.suppressed_by,
                };
                json_into(&mut buf, &item);
                k += 1;
                if !out.flush(&mut buf).await {
                    return;
                }
            }
            let _ = write!(buf, "],\"state\":\"{set_state}\"}}");
        }
        let _ = write!(buf, "],\"state\":\"{}\"}}", overall.as_str());
        out.send(buf).await;
    });
    response
}

/// `GET /api/v1/probes`: written as it is read (see `Streamed`).
pub(crate) async fn probes(State(state): State<Arc<ApiState>>) -> Response {
    let config = state.config();
    let views = state.views.all();
    let order = (0..config.probes.len()).collect();
    let mut last = match LastResults::start(&state, config.clone(), order).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let (out, response) = Streamed::new("application/json");
    tokio::spawn(async move {
        let view_of = by_name(&views);
        let mut buf = Vec::with_capacity(2 * FLUSH_BYTES);
        buf.extend_from_slice(b"{\"probes\":[");
        for (k, p) in config.probes.iter().enumerate() {
            if k > 0 {
                buf.push(b',');
            }
            let row = match last.at(k).await {
                Ok(row) => row,
                Err(e) => return out.fail(e).await,
            };
            let view = view_of.get(p.name.as_str()).copied();
            json_into(&mut buf, &ProbeItem::of(p, view, row, state.next_run(p)));
            if !out.flush(&mut buf).await {
                return;
            }
        }
        buf.extend_from_slice(b"]}");
        out.send(buf).await;
    });
    response
}

/// `GET /api/v1/probes/{name}?limit=N`
pub(crate) async fn probe(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let config = state.config();
    let Some(p) = config.probe(&name) else {
        return no_such_probe(&name);
    };
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) => n.min(MAX_LIMIT),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("limit must be a whole number from 0 to {MAX_LIMIT}"),
            )
        }
    };
    let rows = match recent(&state, vec![p.name.clone()], limit).await {
        Ok(mut l) => l.remove(&p.name).unwrap_or_default(),
        Err(r) => return r,
    };
    let view = state.views.get(&p.name);
    let item = ProbeItem {
        alert: Some(&p.alert),
        depends_on: Some(&p.depends_on),
        results: Some(rows.iter().map(ResultItem::of).collect()),
        ..ProbeItem::of(p, view.as_ref(), rows.first(), state.next_run(p))
    };
    Json(item).into_response()
}

/// `POST /api/v1/probes/{name}/run`: runs the probe now and answers with the
/// object of `sonde probe --format json`.
pub(crate) async fn run(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let config = state.config();
    // Authentication first, so that an anonymous caller learns nothing, not
    // even which probes exist.
    if let Some(r) = refusal(&state, &headers) {
        return r;
    }
    let Some(p) = config.probe(&name) else {
        return no_such_probe(&name);
    };
    if let Err(wait) = state.runs.take(&p.name, tokio::time::Instant::now()) {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let secs = secs.max(1);
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "probe `{}` runs on demand at most once every {}; retry in {secs}s",
                p.name,
                humantime::format_duration(state.runs.min_interval())
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        return r;
    }
    let outcome = match state.built.get(p, &config) {
        Ok(target) => crate::runner::run_once(&target, &state.clock).await,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "config",
                format!("the probe cannot be built: {}", e.message),
            )
        }
    };
    tracing::info!(probe = %p.name, kind = p.kind(), status = %outcome.status, "on-demand run");
    let labels = Labels {
        probe: &p.name,
        kind: p.kind(),
        health_set: &p.health_set,
    };
    Json(output::json_value(&labels, &outcome)).into_response()
}

/// The bearer-token check of the POST endpoints: the answer when refused.
fn refusal(state: &ApiState, headers: &HeaderMap) -> Option<Response> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.token.check(authorization) {
        Verdict::Allowed => {}
        Verdict::NotConfigured => return Some(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "POST endpoints are off: no API token is configured; set [api] token_env or token_file",
        )),
        Verdict::Unavailable(reason) => {
            tracing::error!(error = %reason, "api token unavailable");
            return Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "token_unavailable",
                "the API token ([api] token_file) cannot be read; see the agent's log",
            ));
        }
        Verdict::Denied => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid `Authorization: Bearer <token>` header is required",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"sonde\""),
            );
            return Some(r);
        }
    }
    None
}

/// `POST /-/reload`: re-reads the config file and applies it, like SIGHUP.
/// 200 `{"status":"reloaded","probes":N}`; 400 `{"error":"invalid_config",
/// "errors":[...]}` when the new config is refused (the old one keeps running).
pub(crate) async fn reload(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if let Some(r) = refusal(&state, &headers) {
        return r;
    }
    let Some(handle) = &state.reload else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this server cannot reload its config",
        );
    };
    match handle.reload().await {
        Some(Ok(summary)) => {
            Json(json!({ "status": "reloaded", "probes": summary.probes })).into_response()
        }
        Some(Err(errors)) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid_config", "errors": errors })),
        )
            .into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the agent is shutting down",
        ),
    }
}
