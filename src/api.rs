//! The agent's HTTP server: `GET /healthz` and `GET /metrics` (Prometheus text).
//! Started by `agent::run_with` only when the config has an `[api]` table, on
//! `[api] listen`; it stops with the agent's shutdown token. The routes get
//! what they need from `ApiState`; the JSON API under `/api/v1/` and the status
//! page join `router` here. What the routes show is computed elsewhere
//! (`telemetry::metrics`, the store): this file only maps HTTP to it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::Store;
use crate::telemetry::metrics::{self, Metrics};

/// What the routes share.
pub struct ApiState {
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    pub store: Arc<Store>,
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
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus))
        .with_state(state)
}

/// A bound, not yet serving, API server: binding first lets the agent refuse
/// to start on a taken port before it schedules anything.
pub struct Server {
    listener: TcpListener,
}

impl Server {
    pub async fn bind(addr: SocketAddr) -> Result<Server, ApiError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ApiError { addr, source })?;
        Ok(Server { listener })
    }

    /// The bound address (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown`, then lets in-flight requests finish.
    pub async fn serve(self, state: Arc<ApiState>, shutdown: CancellationToken) {
        let addr = self.local_addr();
        tracing::info!(listen = ?addr, "api listening");
        if let Err(e) = axum::serve(self.listener, router(state))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "api server stopped");
        }
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn prometheus(State(state): State<Arc<ApiState>>) -> Response {
    // Rendering many probes is CPU work: keep it off the request threads.
    let metrics = state.metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.render()).await {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Loader;

    async fn start(
        metrics: Arc<Metrics>,
    ) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sonde.toml");
        std::fs::write(&path, "[api]\nlisten = \"127.0.0.1:0\"\n").unwrap();
        let config = Loader { env: &|_| None }.load(&path).unwrap();
        let listen = config.api.as_ref().unwrap().listen;
        let store = Arc::new(Store::open(&dir.path().join("s.db")).unwrap());
        let state = Arc::new(ApiState {
            metrics,
            config: Arc::new(config),
            store,
        });
        let server = Server::bind(listen).await.unwrap();
        let addr = server.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.serve(state, stop.clone()));
        (addr, stop, task)
    }

    /// One HTTP/1.1 GET over a plain socket: (status line, headers, body).
    async fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let (status, headers) = head.split_once("\r\n").unwrap();
        (status.to_string(), headers.to_lowercase(), body.to_string())
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
        stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("the server stops on the shutdown token")
            .unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
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
}
