//! The agent's HTTP server: `GET /healthz`, `GET /metrics` (Prometheus text),
//! the JSON API under `/api/v1/` (`v1`), and the status page at `/` (`page`).
//! Started by `agent::run_reloadable` only when the config has an `[api]` table, on
//! `[api] listen`; it stops with the agent's shutdown token. The routes get
//! what they need from `ApiState`; the POST endpoints are guarded by `auth`.
//! What the routes show is computed elsewhere (`telemetry::metrics`, the
//! engine's views, the store): these files only map HTTP to it.
//! `Server::serve` runs its own accept loop, bounded by `limits` (connection
//! cap, header-read and idle timeout, connection age), so that no client can
//! take the descriptors the probes need.

pub(crate) mod auth;
pub(crate) mod limits;
pub(crate) mod page;
pub(crate) mod v1;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::auth::{RateLimiter, TokenSource};
pub(crate) use self::limits::Limits;
use crate::alert::engine::SharedViews;
use crate::clock::Clock;
use crate::config::{ApiConfig, Config};
use crate::reload::ReloadHandle;
use crate::scheduler::NextRuns;
use crate::store::Store;
use crate::supervise::Health;
use crate::telemetry::metrics::{self, Metrics};

/// What the agent shares with its API: the parts of `ApiState` it owns too.
pub(crate) struct Shared {
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub views: Arc<SharedViews>,
    pub clock: Arc<dyn Clock>,
    pub health: Arc<Health>,
    pub next_runs: Arc<NextRuns>,
}

/// What the routes share.
pub(crate) struct ApiState {
    pub metrics: Arc<Metrics>,
    /// The config in force; a reload replaces it.
    pub config: std::sync::RwLock<Arc<Config>>,
    pub store: Arc<Store>,
    /// The monitors' states, published by the engine after every result.
    pub views: Arc<SharedViews>,
    /// Where request-time logic and on-demand runs take `now` from.
    pub clock: Arc<dyn Clock>,
    /// The bearer token of the POST endpoints.
    pub token: TokenSource,
    /// The per-probe limit on on-demand runs.
    pub runs: RateLimiter,
    /// Probes built for on-demand runs, reused while their config is unchanged.
    pub built: BuiltProbes,
    /// Where `POST /-/reload` asks the agent to reload its config.
    pub reload: Option<ReloadHandle>,
    /// What `/healthz` answers from; without it, it answers ok.
    pub health: Option<Arc<Health>>,
    /// The scheduler's next instant of each probe; without it, the next one
    /// of its schedule.
    pub next_runs: Option<Arc<NextRuns>>,
    /// `/metrics` renders that may run at once (see `prometheus`).
    pub renders: Arc<tokio::sync::Semaphore>,
}

impl ApiState {
    /// The state of an agent's API: the token from `[api] token_env` or
    /// `token_file` (a relative file resolves against `config_dir`; variables
    /// are read from the process environment), the run limit from
    /// `[api] run_min_interval`. A missing token is logged once here: POST
    /// endpoints are then refused.
    pub(crate) fn new(
        api: &ApiConfig,
        config_dir: &std::path::Path,
        shared: Shared,
        reload: Option<ReloadHandle>,
    ) -> ApiState {
        let token = TokenSource::from_config(
            api,
            config_dir,
            &|name| std::env::var(name).ok(),
            shared.clock.clone(),
        );
        if matches!(token, TokenSource::None) {
            match &api.token_env {
                Some(var) => tracing::warn!(
                    variable = %var,
                    "[api] token_env names an unset or empty variable: POST endpoints are refused"
                ),
                None => tracing::info!("no [api] token configured: POST endpoints are refused"),
            }
        }
        ApiState {
            metrics: shared.metrics,
            config: std::sync::RwLock::new(shared.config),
            store: shared.store,
            views: shared.views,
            clock: shared.clock,
            token,
            runs: RateLimiter::new(api.run_min_interval),
            built: BuiltProbes::default(),
            reload,
            health: Some(shared.health),
            next_runs: Some(shared.next_runs),
            renders: Arc::new(tokio::sync::Semaphore::new(MAX_RENDERS)),
        }
    }

    /// When `p` runs next: the scheduler's instant when it published one.
    pub(crate) fn next_run(
        &self,
        p: &crate::config::ProbeConfig,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        if !p.enabled {
            return None;
        }
        match self.next_runs.as_ref().and_then(|n| n.get(&p.name)) {
            Some(next) => Some(next),
            None => p.schedule.next_after(self.clock.now()),
        }
    }

    /// The config in force.
    pub(crate) fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts a reloaded config in force.
    pub(crate) fn set_config(&self, config: Arc<Config>) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }
}

/// Runnable probes for on-demand runs, built once per probe config (and the
/// configs of the probes it uses, such as a push probe's token probe): building
/// one (an HTTP client, TLS roots) costs far more than a loopback run.
#[derive(Default)]
pub(crate) struct BuiltProbes(std::sync::Mutex<std::collections::HashMap<String, Built>>);

/// The configs a target was built from (the probe's and those it uses), the
/// config they came from, and the target.
type Built = (
    Vec<crate::config::ProbeConfig>,
    std::sync::Weak<Config>,
    Arc<crate::runner::Target>,
);

impl BuiltProbes {
    /// The target for `p`, built now if it was not, or if its config changed.
    pub(crate) fn get(
        &self,
        p: &crate::config::ProbeConfig,
        config: &Arc<Config>,
    ) -> Result<Arc<crate::runner::Target>, crate::config::ConfigError> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Built from this very config: nothing to compare.
        if let Some((_, from, target)) = map.get(&p.name) {
            if std::ptr::eq(from.as_ptr(), Arc::as_ptr(config)) {
                return Ok(target.clone());
            }
        }
        let mut configs = vec![p.clone()];
        for (_, name, _) in p.spec.references() {
            configs.extend(config.probe(name).cloned());
        }
        if let Some((built_from, from, target)) = map.get_mut(&p.name) {
            if *built_from == configs {
                *from = Arc::downgrade(config);
                return Ok(target.clone());
            }
        }
        let target = Arc::new(crate::build::build_target_in(p, config)?);
        map.insert(
            p.name.clone(),
            (configs, Arc::downgrade(config), target.clone()),
        );
        Ok(target)
    }
}

/// Probes whose results one store read fetches while a streamed view is
/// written.
pub(crate) const PROBES_PER_READ: usize = 256;

/// Bytes a streamed answer gathers before it sends them on.
pub(crate) const FLUSH_BYTES: usize = 64 * 1024;

/// The sending end of an answer written by a task of its own and sent as it
/// is written (chunked), so that a large view is never held whole. The
/// receiving end is the response body: when the client goes, the body is
/// dropped and the next `send` says so.
pub(crate) struct Streamed(tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>);

impl Streamed {
    /// The sender and the 200 answer of `content_type` it feeds.
    pub(crate) fn new(content_type: &'static str) -> (Streamed, Response) {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let body = futures::stream::unfold(rx, |mut rx| async move {
            let piece = rx.recv().await?;
            Some((piece, rx))
        });
        let response = (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-store"),
            ],
            axum::body::Body::from_stream(body),
        )
            .into_response();
        (Streamed(tx), response)
    }

    /// Sends what `buf` gathered on once it holds `FLUSH_BYTES`; false once
    /// the client is gone.
    pub(crate) async fn flush<B>(&self, buf: &mut B) -> bool
    where
        B: AsRef<[u8]> + Default + Into<Vec<u8>>,
    {
        buf.as_ref().len() < FLUSH_BYTES || self.send(std::mem::take(buf).into()).await
    }

    /// Sends the rest; false once the client is gone.
    pub(crate) async fn send(&self, piece: Vec<u8>) -> bool {
        self.0.send(Ok(piece)).await.is_ok()
    }

    /// Ends the answer with an error: the connection is cut, so that the
    /// client sees a broken answer rather than a short one taken for whole.
    pub(crate) async fn fail(self, why: String) {
        let _ = self.0.send(Err(std::io::Error::other(why))).await;
    }
}

/// An error answer: `{"error": code, "message": text}` with `status`.
pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": code, "message": message.into() })),
    )
        .into_response()
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ([api] listen): {source}")]
pub struct ApiError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Every route.
pub(crate) fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus))
        .route("/", get(page::page))
        .route("/api/v1/health", get(v1::health))
        .route("/api/v1/probes", get(v1::probes))
        .route("/api/v1/probes/{name}", get(v1::probe))
        .route("/api/v1/probes/{name}/run", post(v1::run))
        .route("/-/reload", post(v1::reload))
        .fallback(not_found)
        .with_state(state)
}

/// A bound, not yet serving, API server: binding first lets the agent refuse
/// to start on a taken port before it schedules anything.
pub(crate) struct Server {
    listener: TcpListener,
    limits: Limits,
    /// The descriptor limit the limits were derived from, for the start log.
    nofile: Option<u64>,
}

impl Server {
    /// Binds `addr`, after raising the process's descriptor limit to derive
    /// the connection cap from it (`Limits::for_descriptors`).
    pub(crate) async fn bind(addr: SocketAddr) -> Result<Server, ApiError> {
        let nofile = limits::raise_descriptor_limit();
        // Unknown (no RLIMIT_NOFILE here): assume the common default of 1,024.
        let limits = Limits::for_descriptors(nofile.unwrap_or(1024));
        let mut server = Server::bind_with(addr, limits).await?;
        server.nofile = nofile;
        Ok(server)
    }

    /// Binds `addr` with the given limits.
    pub(crate) async fn bind_with(addr: SocketAddr, limits: Limits) -> Result<Server, ApiError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ApiError { addr, source })?;
        Ok(Server {
            listener,
            limits,
            nofile: None,
        })
    }

    /// The bound address (the real port when `listen` asked for port 0).
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown`, then lets in-flight requests finish (each for
    /// at most `limits.grace`).
    ///
    /// Each connection holds a permit of a semaphore sized `max_connections`.
    /// A connection beyond the cap is still accepted, answered 503 and closed
    /// at once, rather than left in the kernel's backlog: the client learns at
    /// once that the server is busy instead of hanging behind the connections
    /// that hold it, the backlog never fills, and the descriptor is back a
    /// moment later.
    pub(crate) async fn serve(self, state: Arc<ApiState>, shutdown: CancellationToken) {
        let Server {
            listener,
            limits,
            nofile,
        } = self;
        tracing::info!(
            listen = ?listener.local_addr().ok(),
            descriptor_limit = nofile,
            max_connections = limits.max_connections,
            "api listening"
        );
        let router = router(state);
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let connections = TaskTracker::new();
        let mut refused = Refused::default();
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors or memory: wait for some to be
                        // released instead of spinning on the ready listener.
                        tracing::warn!(error = %e, "api cannot accept a connection");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    connections.spawn(serve_connection(
                        stream,
                        router.clone(),
                        limits,
                        shutdown.clone(),
                        permit,
                    ));
                }
                Err(_) => {
                    // One non-blocking write: a client that does not read gets
                    // nothing more from us.
                    let _ = stream.try_write(BUSY);
                    drop(stream);
                    refused.count(limits.max_connections);
                }
            }
        }
        drop(listener);
        connections.close();
        connections.wait().await;
    }
}

/// How long the accept loop waits after a failed accept (e.g. `EMFILE`).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);

/// The answer to a connection beyond the cap.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: 30\r\nretry-after: 10\r\nconnection: close\r\n\r\ntoo many connections to sonde\n";

/// Connections refused at the cap, logged at most once per `REFUSED_LOG_EVERY`
/// so that a flood does not become a flood of log lines.
#[derive(Default)]
struct Refused {
    since_log: u64,
    logged_at: Option<tokio::time::Instant>,
}

const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

impl Refused {
    fn count(&mut self, max_connections: usize) {
        self.since_log += 1;
        let now = tokio::time::Instant::now();
        if self
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= REFUSED_LOG_EVERY)
        {
            tracing::warn!(
                refused = self.since_log,
                max_connections,
                "api connection cap reached: connections refused"
            );
            self.since_log = 0;
            self.logged_at = Some(now);
        }
    }
}

/// Serves one connection until it ends, it is older than
/// `max_connection_age`, or shutdown; then lets its request finish for at
/// most `limits.grace`. The permit is released when this returns.
async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        ended = conn.as_mut() => {
            if let Err(e) = ended {
                tracing::debug!(error = %e, "api connection ended");
            }
            return;
        }
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(limits.max_connection_age) => {}
    }
    conn.as_mut().graceful_shutdown();
    if tokio::time::timeout(limits.grace, conn).await.is_err() {
        tracing::debug!("api connection dropped after the grace period");
    }
}

/// Unknown paths: a JSON error under `/api/`, plain text elsewhere.
async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint; see /api/v1/health, /api/v1/probes",
        )
    } else {
        (StatusCode::NOT_FOUND, "not found\n").into_response()
    }
}

/// 200 `{"status":"ok"}`, or 503 `{"status":"failing","reasons":[...]}` when
/// a task of the agent is down, the store cannot be written, or results
/// stopped coming (`supervise::Health`).
async fn healthz(State(state): State<Arc<ApiState>>) -> Response {
    let problems = state
        .health
        .as_ref()
        .map(|h| h.problems(state.clock.now()))
        .unwrap_or_default();
    if problems.is_empty() {
        return Json(serde_json::json!({ "status": "ok" })).into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "status": "failing", "reasons": problems })),
    )
        .into_response()
}

/// `/metrics` is rendered in pieces of about this size (10,000 probes make
/// some 16 MB of text)...
const METRICS_PIECE: usize = FLUSH_BYTES;
/// ...of which at most this many wait for the client.
const METRICS_PIECES_AHEAD: usize = 2;
/// Renders of `/metrics` at once. Each runs on a thread of the blocking pool
/// that waits while its client does not read: without a bound, clients that
/// ask and never read would take every thread of the pool, the store
/// writer's included.
const MAX_RENDERS: usize = 4;
/// How long a scrape waits for a render slot before it is answered 503.
const RENDER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long one render may take, its client's reading included; then it
/// stops and the answer is cut off.
const RENDER_TIME: std::time::Duration = std::time::Duration::from_secs(60);

async fn prometheus(State(state): State<Arc<ApiState>>) -> Response {
    // Rendering many probes is CPU work: keep it off the request threads.
    // The renderer hands pieces over as the client takes them, so that a
    // scrape holds a few pieces, not the whole text; when the client goes
    // away the receiver drops, the next send fails and rendering stops.
    let permit =
        match tokio::time::timeout(RENDER_WAIT, state.renders.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    format!("{MAX_RENDERS} renders of /metrics are in progress; retry later"),
                )
            }
        };
    let metrics = state.metrics.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(METRICS_PIECES_AHEAD);
    let runtime = tokio::runtime::Handle::current();
    let render = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let deadline = tokio::time::Instant::now() + RENDER_TIME;
        metrics.render_chunks(METRICS_PIECE, |piece| {
            // A client that stops reading holds this thread until the deadline.
            match runtime.block_on(tokio::time::timeout_at(deadline, tx.send(piece))) {
                Ok(Ok(())) => Ok(()),
                _ => Err(()),
            }
        })
    });
    let headers = [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)];
    let Some(first) = rx.recv().await else {
        // Nothing rendered: the renderer failed.
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Some(second) = rx.recv().await else {
        // It all fits in one piece: an ordinary body, with its length.
        return match render.await {
            Ok(Ok(())) => (headers, first).into_response(),
            _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
    };
    let rest = futures::stream::unfold(Some((rx, render)), |state| async move {
        let (mut rx, render) = state?;
        if let Some(piece) = rx.recv().await {
            return Some((Ok(Bytes::from(piece)), Some((rx, render))));
        }
        match render.await {
            Ok(Ok(())) => None,
            // A renderer that failed midway cuts the body off, which the
            // client sees as an incomplete answer rather than a short one.
            _ => Some((
                Err(std::io::Error::other("rendering /metrics failed")),
                None,
            )),
        }
    });
    let pieces = futures::stream::iter([Ok(Bytes::from(first)), Ok(Bytes::from(second))]);
    (headers, Body::from_stream(pieces.chain(rest))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Loader;

    async fn start(
        metrics: Arc<Metrics>,
    ) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let (addr, stop, task, _) = start_with(metrics, "", TokenSource::None).await;
        (addr, stop, task)
    }

    /// A server for `[api]` plus `extra` config, with the given token.
    async fn start_with(
        metrics: Arc<Metrics>,
        extra: &str,
        token: TokenSource,
    ) -> (
        SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<()>,
        Arc<ApiState>,
    ) {
        start_limited(metrics, extra, token, Limits::for_descriptors(1024)).await
    }

    /// `start_with`, serving with `limits`.
    async fn start_limited(
        metrics: Arc<Metrics>,
        extra: &str,
        token: TokenSource,
        limits: Limits,
    ) -> (
        SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<()>,
        Arc<ApiState>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sonde.toml");
        std::fs::write(&path, format!("[api]\nlisten = \"127.0.0.1:0\"\n{extra}")).unwrap();
        let config = Loader { env: &|_| None }.load(&path).unwrap();
        let listen = config.api.as_ref().unwrap().listen;
        let store = Arc::new(Store::open(&dir.path().join("s.db")).unwrap());
        let config = Arc::new(config);
        let views = crate::alert::engine::Published::unknown(config.clone());
        let state = Arc::new(ApiState {
            metrics,
            config: std::sync::RwLock::new(config),
            store,
            views: Arc::new(SharedViews::new(views)),
            clock: Arc::new(crate::clock::SystemClock),
            token,
            built: BuiltProbes::default(),
            runs: RateLimiter::new(std::time::Duration::from_secs(10)),
            reload: None,
            health: None,
            next_runs: None,
            renders: Arc::new(tokio::sync::Semaphore::new(MAX_RENDERS)),
        });
        let server = Server::bind_with(listen, limits).await.unwrap();
        let addr = server.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.serve(state.clone(), stop.clone()));
        (addr, stop, task, state)
    }

    /// One HTTP/1.1 request over a plain socket: (status line, headers, body).
    async fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        extra_headers: &str,
    ) -> (String, String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n{extra_headers}connection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let (status, headers) = head.split_once("\r\n").unwrap();
        let headers = headers.to_lowercase();
        let body = if headers.contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_string()
        };
        (status.to_string(), headers, body)
    }

    fn json(body: &str) -> serde_json::Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    /// A probe that fails fast: nothing listens on the discard port of loopback.
    const PROBES: &str = r#"
[[probe]]
name = "down"
kind = "http"
health_set = "site"
url = "http://127.0.0.1:9/health"
timeout = "2s"
"#;

    #[tokio::test]
    async fn post_needs_a_configured_token() {
        let metrics = Arc::new(Metrics::new());
        let (addr, stop, _, _) = start_with(metrics, PROBES, TokenSource::None).await;
        let (status, _, body) = request(addr, "POST", "/api/v1/probes/down/run", "").await;
        assert_eq!(status, "HTTP/1.1 403 Forbidden");
        let v = json(&body);
        assert_eq!(v["error"], "forbidden");
        assert!(v["message"]
            .as_str()
            .unwrap()
            .contains("token_env or token_file"));
        stop.cancel();
    }

    #[tokio::test]
    async fn auth_not_found_rate_limit_and_the_run_object() {
        let metrics = Arc::new(Metrics::new());
        let token = TokenSource::Fixed("t0ken-value".into());
        let (addr, stop, _, _) = start_with(metrics, PROBES, token).await;
        let run = "/api/v1/probes/down/run";
        for auth in [
            "",
            "authorization: Bearer wrong\r\n",
            "authorization: Basic dDA=\r\n",
        ] {
            let (status, headers, body) = request(addr, "POST", run, auth).await;
            assert_eq!(status, "HTTP/1.1 401 Unauthorized", "{auth}");
            assert!(headers.contains("www-authenticate: bearer"), "{headers}");
            assert_eq!(json(&body)["error"], "unauthorized");
            assert!(!body.contains("t0ken"));
        }
        let auth = "authorization: Bearer t0ken-value\r\n";
        let (status, _, body) = request(addr, "POST", "/api/v1/probes/nope/run", auth).await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        assert_eq!(json(&body)["error"], "not_found");
        let (status, _, body) = request(addr, "POST", run, auth).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        let v = json(&body);
        assert_eq!(v["probe"], "down");
        assert_eq!(v["health_set"], "site");
        assert_eq!(v["status"], "critical");
        assert_eq!(v["category"], "network");
        assert_eq!(v.as_object().unwrap().len(), 9);
        let (status, headers, body) = request(addr, "POST", run, auth).await;
        assert_eq!(status, "HTTP/1.1 429 Too Many Requests");
        let retry: u64 = headers
            .lines()
            .find_map(|l| l.strip_prefix("retry-after: "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=10).contains(&retry), "{retry}");
        assert_eq!(json(&body)["error"], "rate_limited");
        // A run on demand changes no monitor and stores nothing.
        let (status, _, body) = request(addr, "GET", "/api/v1/probes/down?limit=5", "").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        let v = json(&body);
        assert_eq!(v["state"], "unknown");
        assert_eq!(v["results"], serde_json::json!([]));
        stop.cancel();
    }

    #[tokio::test]
    async fn read_endpoints_show_views_and_stored_results() {
        let metrics = Arc::new(Metrics::new());
        let (addr, stop, _, state) = start_with(metrics, PROBES, TokenSource::None).await;
        for i in 0..3 {
            let row = crate::store::ResultRow {
                probe: "down".into(),
                started_at: 1_800_000_000 + i,
                duration_seconds: 0.5,
                status: "critical".into(),
                category: Some("network".into()),
                summary: format!("refused {i}"),
                observations_json: "{}".into(),
            };
            state.store.record(&row, "{}", &[], 0).unwrap();
        }
        state.views.publish(crate::alert::engine::MonitorView {
            probe: "down".into(),
            health_set: "site".into(),
            state: crate::monitor::MonitorState::Unhealthy,
            since: chrono::DateTime::from_timestamp(1_800_000_000, 0),
            flapping: false,
            suppressed_by: None,
        });
        let (status, _, body) = request(addr, "GET", "/api/v1/health", "").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        let v = json(&body);
        assert_eq!(v["state"], "unhealthy");
        let set = &v["health_sets"][0];
        assert_eq!(set["name"], "site");
        assert_eq!(set["state"], "unhealthy");
        assert_eq!(set["probes"][0]["name"], "down");
        assert_eq!(set["probes"][0]["since"], "2027-01-15T08:00:00Z");
        assert_eq!(set["probes"][0]["last_result"]["summary"], "refused 2");
        let (_, _, body) = request(addr, "GET", "/api/v1/probes", "").await;
        let v = json(&body);
        assert_eq!(v["probes"][0]["kind"], "http");
        assert_eq!(v["probes"][0]["state"], "unhealthy");
        assert!(v["probes"][0]["next_run"].is_string());
        let (_, _, body) = request(addr, "GET", "/api/v1/probes/down?limit=2", "").await;
        let v = json(&body);
        let summaries: Vec<&str> = v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["summary"].as_str().unwrap())
            .collect();
        assert_eq!(summaries, ["refused 2", "refused 1"]);
        let (status, _, body) = request(addr, "GET", "/api/v1/probes/down?limit=x", "").await;
        assert_eq!(status, "HTTP/1.1 400 Bad Request");
        assert_eq!(json(&body)["error"], "bad_request");
        let (status, _, body) = request(addr, "GET", "/api/v1/probes/other", "").await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        assert_eq!(json(&body)["message"], "no probe named `other`");
        let (status, headers, body) = request(addr, "GET", "/", "").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(headers.contains("content-type: text/html; charset=utf-8"));
        assert!(body.contains("data-probe=\"down\""));
        stop.cancel();
    }

    async fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
        request(addr, "GET", path, "").await
    }

    #[tokio::test]
    async fn healthz_and_metrics_then_graceful_stop() {
        let metrics = Arc::new(Metrics::new());
        metrics.register_channel("ops");
        let (addr, stop, task) = start(metrics).await;
        let (status, _, body) = get(addr, "/healthz").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, r#"{"status":"ok"}"#);
        let (status, headers, body) = get(addr, "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            headers.contains("content-type: text/plain; version=0.0.4"),
            "{headers}"
        );
        assert!(body.contains("sonde_build_info{version="));
        assert!(
            body.contains("sonde_alert_deliveries_total{channel=\"ops\",result=\"delivered\"} 0")
        );
        let (status, _, _) = get(addr, "/nope").await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        let (status, _, body) = get(addr, "/api/v2/nope").await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        assert_eq!(json(&body)["error"], "not_found");
        stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("the server stops on the shutdown token")
            .unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    /// The body of a `transfer-encoding: chunked` answer, put together.
    fn dechunk(mut raw: &str) -> String {
        let mut body = String::new();
        loop {
            let (size, rest) = raw.split_once("\r\n").expect("a chunk size line");
            let size = usize::from_str_radix(size, 16).expect("a hex chunk size");
            if size == 0 {
                assert_eq!(rest, "\r\n", "nothing after the last chunk");
                return body;
            }
            body.push_str(&rest[..size]);
            raw = rest[size..]
                .strip_prefix("\r\n")
                .expect("a chunk ends a line");
        }
    }

    #[tokio::test]
    async fn the_status_page_and_json_views_of_hundreds_of_probes_stream_whole() {
        // More probes in one set than one history read takes, and more text
        // than one flush: the page comes in pieces, whole and in order.
        const N: usize = 300;
        let mut extra = String::new();
        for i in 0..N {
            extra.push_str(&format!(
                "[[probe]]\nname = \"p{i:03}\"\nkind = \"http\"\nhealth_set = \"big\"\n\
                 url = \"http://127.0.0.1:9/\"\nevery = \"1h\"\n"
            ));
        }
        let metrics = Arc::new(Metrics::new());
        let (addr, stop, _, state) = start_with(metrics, &extra, TokenSource::None).await;
        // Three results for each probe but the last, which has none.
        for i in 0..N - 1 {
            for k in 0..3 {
                let row = crate::store::ResultRow {
                    probe: format!("p{i:03}"),
                    started_at: 1_800_000_000 + k,
                    duration_seconds: 0.25,
                    status: "ok".into(),
                    category: None,
                    summary: format!("run {k} of p{i:03}"),
                    observations_json: "{}".into(),
                };
                state.store.record(&row, "{}", &[], 0).unwrap();
            }
        }
        let (status, headers, page) = get(addr, "/").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(headers.contains("transfer-encoding: chunked"), "{headers}");
        assert!(page.len() > super::FLUSH_BYTES, "{} bytes", page.len());
        assert!(page.ends_with("</main></body></html>\n"));
        let sections: Vec<&str> = page
            .split("<div class=\"probe\" data-probe=\"")
            .skip(1)
            .collect();
        assert_eq!(sections.len(), N);
        for (i, section) in sections.iter().enumerate() {
            let name = format!("p{i:03}");
            assert!(
                section.starts_with(&format!("{name}\"")),
                "probe {i} out of order"
            );
            let runs = section.matches("title=\"ok at ").count();
            if i < N - 1 {
                assert_eq!(runs, 3, "{name}: {section}");
                assert!(section.contains(&format!("run 0 of {name}")), "{section}");
            } else {
                assert_eq!(runs, 0, "{section}");
                assert!(section.contains("no result yet"), "{section}");
            }
        }
        // The JSON views come in pieces too, each probe with its own last
        // result, in config order.
        let each_probe = |probes: &serde_json::Value| {
            let probes = probes.as_array().unwrap();
            assert_eq!(probes.len(), N);
            for (i, p) in probes.iter().enumerate() {
                assert_eq!(p["name"], format!("p{i:03}"));
                let last = (i < N - 1).then(|| format!("run 2 of p{i:03}"));
                let shown = p["last_result"]["summary"].as_str().map(String::from);
                assert_eq!(shown, last, "{p}");
            }
        };
        let (_, headers, body) = get(addr, "/api/v1/probes").await;
        assert!(headers.contains("transfer-encoding: chunked"), "{headers}");
        assert!(body.len() > super::FLUSH_BYTES, "{} bytes", body.len());
        each_probe(&json(&body)["probes"]);
        let (_, _, body) = get(addr, "/api/v1/health").await;
        let v = json(&body);
        let set = &v["health_sets"][0];
        assert_eq!(
            (&set["name"], &set["monitor_count"]),
            (&serde_json::json!("big"), &serde_json::json!(N))
        );
        each_probe(&set["probes"]);
        assert_eq!(v["state"], "unknown");
        stop.cancel();
    }

    /// Metrics of `n` probes that have each run once.
    fn metrics_of(n: usize) -> Arc<Metrics> {
        let metrics = Arc::new(Metrics::new());
        for i in 0..n {
            let name = format!("probe-{i}");
            metrics.register_probe(&name, "http", "site");
            let o = crate::outcome::Outcome::ok("fine").with("status_code", 200.0);
            metrics.probe_run(&name, "http", "site", &o);
        }
        metrics
    }

    #[test]
    fn scrapers_that_never_read_hold_a_few_threads_not_the_pool() {
        // A blocking pool just larger than the bound: without the bound,
        // renders waiting on clients that never read would take all of it.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(MAX_RENDERS + 2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            use tokio::io::AsyncWriteExt;
            let (addr, stop, _) = start(metrics_of(10_000)).await;
            // Twice as many scrapers as renders may run, each asking and never
            // reading, behind a receive window of 4 KiB.
            let mut stalled = Vec::new();
            for _ in 0..2 * MAX_RENDERS {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.set_recv_buffer_size(4096).unwrap();
                let mut s = socket.connect(addr).await.unwrap();
                s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
                    .await
                    .unwrap();
                stalled.push(s);
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            // The pool still runs other blocking work (the store writer's).
            let other = tokio::task::spawn_blocking(|| 7);
            let done = tokio::time::timeout(std::time::Duration::from_secs(5), other).await;
            assert_eq!(done.expect("a blocking thread is free").unwrap(), 7);
            // A scrape beyond the bound waits for a slot, then is told why not.
            let (status, _, body) = get(addr, "/metrics").await;
            assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
            assert_eq!(json(&body)["error"], "busy");
            // Once they are gone, scrapes are answered again.
            drop(stalled);
            let start = tokio::time::Instant::now();
            loop {
                let (status, _, _) = get(addr, "/metrics").await;
                if status == "HTTP/1.1 200 OK" {
                    break;
                }
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(30),
                    "{status}"
                );
            }
            stop.cancel();
        });
    }

    #[tokio::test]
    async fn metrics_of_thousands_of_probes_stream_whole() {
        let metrics = metrics_of(3000);
        let (addr, stop, _) = start(metrics.clone()).await;
        let (status, headers, body) = get(addr, "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            headers.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{headers}"
        );
        assert!(headers.contains("transfer-encoding: chunked"), "{headers}");
        let text = metrics.render();
        assert!(text.len() > 10 * METRICS_PIECE, "{} bytes", text.len());
        assert_eq!(body, text);
        stop.cancel();
    }

    #[tokio::test]
    async fn metrics_that_fit_one_piece_have_a_length() {
        let metrics = Arc::new(Metrics::new());
        metrics.register_probe("one", "http", "site");
        let (addr, stop, _) = start(metrics.clone()).await;
        let (status, headers, body) = get(addr, "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            headers.contains(&format!("content-length: {}", body.len())),
            "{headers}"
        );
        assert_eq!(body, metrics.render());
        stop.cancel();
    }

    #[tokio::test]
    async fn a_taken_port_is_an_error_naming_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = Server::bind(addr).await.err().unwrap();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot listen on {addr}")),
            "{err}"
        );
    }

    /// Limits short enough for a test: 300 ms to send a head, 2 connections.
    fn tight() -> Limits {
        Limits {
            max_connections: 2,
            header_read_timeout: Duration::from_millis(300),
            max_connection_age: Duration::from_secs(60),
            grace: Duration::from_millis(300),
        }
    }

    /// Reads until the server closes `s`; what it sent, or `None` if it kept
    /// the connection open for `within`. A reset counts as closed.
    async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let read = tokio::time::timeout(within, async {
            let mut buf = [0u8; 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        read.ok()
            .map(|()| String::from_utf8_lossy(&got).into_owned())
    }

    #[tokio::test]
    async fn idle_and_half_sent_connections_are_closed_after_the_header_timeout() {
        use tokio::io::AsyncWriteExt;
        let mut limits = tight();
        limits.max_connections = 10;
        let (addr, stop, _, _) =
            start_limited(Arc::new(Metrics::new()), "", TokenSource::None, limits).await;
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        // A kept-alive connection that went quiet after one request.
        let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        for s in [&mut idle, &mut half] {
            let sent = closed_within(s, Duration::from_secs(5)).await;
            assert!(sent.is_some(), "still open after 5 s");
        }
        let sent = closed_within(&mut kept, Duration::from_secs(5))
            .await
            .expect("the idle kept-alive connection is closed");
        assert!(sent.starts_with("HTTP/1.1 200 OK"), "{sent}");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(250), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        stop.cancel();
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_get_503_at_once_and_slots_come_back() {
        let (addr, stop, _, _) =
            start_limited(Arc::new(Metrics::new()), "", TokenSource::None, tight()).await;
        let _a = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _b = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Let the accept loop take both before the third comes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        let sent = closed_within(&mut third, Duration::from_millis(200))
            .await
            .expect("refused at once");
        // A reset may beat the answer; when it arrives, it is this one.
        if !sent.is_empty() {
            assert!(sent.starts_with("HTTP/1.1 503"), "{sent}");
            assert!(sent.contains("retry-after: 10"), "{sent}");
        }
        // The header timeout frees both slots.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let (status, _, body) = get(addr, "/healthz").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, r#"{"status":"ok"}"#);
        stop.cancel();
    }

    #[tokio::test]
    async fn connections_end_at_their_age_and_shutdown_waits_at_most_the_grace() {
        use tokio::io::AsyncWriteExt;
        let mut limits = tight();
        limits.header_read_timeout = Duration::from_secs(30);
        limits.max_connection_age = Duration::from_millis(300);
        let (addr, stop, _, _) =
            start_limited(Arc::new(Metrics::new()), "", TokenSource::None, limits).await;
        let started = std::time::Instant::now();
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut idle, Duration::from_secs(3))
            .await
            .is_some());
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(250), "{took:?}");
        stop.cancel();

        // A head that never ends keeps the connection in a request: shutdown
        // still ends the server, once the grace is over.
        limits.max_connection_age = Duration::from_secs(60);
        let (addr, stop, task, _) =
            start_limited(Arc::new(Metrics::new()), "", TokenSource::None, limits).await;
        let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .expect("the server stops within the grace period")
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(closed_within(&mut half, Duration::from_secs(1))
            .await
            .is_some());
    }
}
