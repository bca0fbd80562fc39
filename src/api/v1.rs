//! The JSON API under `/api/v1/`: the health report (`GET /health`, after
//! Exchange's Get-HealthReport: health sets, then each probe's monitor and last
//! result), the probes (`GET /probes`, `GET /probes/{name}` with its recent
//! results), and the on-demand run (`POST /probes/{name}/run`, bearer token,
//! rate-limited per probe). Monitor states come from the engine's published
//! views, results from the store; an on-demand run goes through the agent's
//! runner and is answered, not recorded: it changes no monitor.

use std::collections::HashMap;
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
use super::{error, ApiState};
use crate::alert::engine::{health_sets_of, MonitorView};
use crate::config::ProbeConfig;
use crate::monitor;
use crate::output::{self, Labels};
use crate::store::ResultRow;

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

#[derive(Serialize)]
struct SetItem<'a> {
    monitor_count: usize,
    name: &'a str,
    probes: Vec<MemberItem<'a>>,
    state: &'static str,
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
    let store = state.store.clone();
    // One query for all of them (`Store::recent_results_of`), not one per probe.
    let read = tokio::task::spawn_blocking(move || store.recent_results_of(&names, limit)).await;
    match read {
        Ok(Ok(map)) => Ok(map),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot read results for the api");
            Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store",
                "cannot read results from the store",
            ))
        }
        Err(_) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "reading results failed",
        )),
    }
}

fn no_such_probe(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no probe named `{name}`"),
    )
}

/// `GET /api/v1/health`
pub(crate) async fn health(State(state): State<Arc<ApiState>>) -> Response {
    let config = state.config();
    let names = config.probes.iter().map(|p| p.name.clone()).collect();
    let last = match recent(&state, names, 1).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let views = state.views.all();
    let view_of = by_name(&views);
    let sets = health_sets_of(&views);
    let now = state.clock.now();
    // The probes of each set in one pass (a filter per set would be
    // quadratic when every probe has a set of its own).
    let mut members: HashMap<&str, Vec<MemberItem<'_>>> = HashMap::new();
    for p in &config.probes {
        let m = shown(view_of.get(p.name.as_str()).copied());
        members
            .entry(p.health_set.as_str())
            .or_default()
            .push(MemberItem {
                flapping: m.flapping,
                kind: p.kind(),
                last_result: last
                    .get(&p.name)
                    .and_then(|r| r.first())
                    .map(ResultItem::of),
                name: &p.name,
                since: m.since,
                state: m.state,
                suppressed_by: m.suppressed_by,
            });
    }
    let health_sets: Vec<SetItem<'_>> = sets
        .iter()
        .map(|(set, set_state)| {
            let probes = members.remove(set.as_str()).unwrap_or_default();
            SetItem {
                monitor_count: probes.len(),
                name: set,
                probes,
                state: set_state.as_str(),
            }
        })
        .collect();
    let overall = monitor::health_set_state(sets.iter().map(|(_, s)| *s));
    #[derive(Serialize)]
    struct Report<'a> {
        generated_at: String,
        health_sets: Vec<SetItem<'a>>,
        state: &'static str,
    }
    Json(Report {
        generated_at: time(now),
        health_sets,
        state: overall.as_str(),
    })
    .into_response()
}

/// `GET /api/v1/probes`
pub(crate) async fn probes(State(state): State<Arc<ApiState>>) -> Response {
    let config = state.config();
    let names = config.probes.iter().map(|p| p.name.clone()).collect();
    let last = match recent(&state, names, 1).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let views = state.views.all();
    let view_of = by_name(&views);
    let probes: Vec<ProbeItem<'_>> = config
        .probes
        .iter()
        .map(|p| {
            let view = view_of.get(p.name.as_str()).copied();
            let row = last.get(&p.name).and_then(|r| r.first());
            ProbeItem::of(p, view, row, state.next_run(p))
        })
        .collect();
    #[derive(Serialize)]
    struct Probes<'a> {
        probes: Vec<ProbeItem<'a>>,
    }
    Json(Probes { probes }).into_response()
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
