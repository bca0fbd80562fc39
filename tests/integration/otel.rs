//! OTLP export from the real `sonde run`: an OTLP/HTTP receiver on 127.0.0.1
//! port 0 decodes the protobuf bodies the agent posts, while the agent runs a
//! token probe and an end-to-end push probe against the lab; an OTLP/gRPC
//! receiver (tonic with opentelemetry-proto's services) takes an http probe's
//! exports over gRPC.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use sonde::lab;

use crate::hybrid::{keys, start_lab, TENANT};
use crate::support::{eventually, serve_forever, Proc};

#[derive(Default)]
struct Received {
    traces: Vec<ExportTraceServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
    errors: Vec<String>,
}

type Shared = Arc<Mutex<Received>>;

async fn receiver() -> (SocketAddr, Shared) {
    let got = Shared::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(g): State<Shared>, body: Bytes| async move {
                let mut g = g.lock().unwrap();
                match ExportTraceServiceRequest::decode(body) {
                    Ok(r) => g.traces.push(r),
                    Err(e) => g.errors.push(format!("traces: {e}")),
                }
            }),
        )
        .route(
            "/v1/metrics",
            post(|State(g): State<Shared>, body: Bytes| async move {
                let mut g = g.lock().unwrap();
                match ExportMetricsServiceRequest::decode(body) {
                    Ok(r) => g.metrics.push(r),
                    Err(e) => g.errors.push(format!("metrics: {e}")),
                }
            }),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, got)
}

/// An OTLP/gRPC collector: both services on one tonic server, which stops
/// (closing its connections) when `stop` fires.
#[derive(Clone)]
struct GrpcReceiver(Shared);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().traces.push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().metrics.push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

async fn grpc_receiver() -> (
    SocketAddr,
    Shared,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let got = Shared::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let svc = GrpcReceiver(got.clone());
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(svc.clone()))
            .add_service(MetricsServiceServer::new(svc))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap()
    });
    (addr, got, stop, server)
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    let v = attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match v.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn check_resource(r: Option<&Resource>) {
    let attrs = &r.expect("a resource").attributes;
    assert_eq!(attr(attrs, "service.name").as_deref(), Some("sonde"));
    assert_eq!(
        attr(attrs, "service.version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(attr(attrs, "host.name").is_some_and(|h| !h.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_run_exports_its_span_tree_and_metrics_over_otlp_http() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (otlp, got) = receiver().await;
    let (lab, stop) = start_lab("lab").await;
    let k = keys();
    let base = lab.base_url();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sonde.toml"),
        format!(
            r#"[telemetry]
otlp_endpoint = "http://{otlp}"

[[probe]]
name = "token-entra"
kind = "token"
every = "1s"
mode = "entra"
tenant = "{TENANT}"
client_id = "11111111-2222-3333-4444-555555555555"
metadata_url = "{base}/{TENANT}/v2.0/.well-known/openid-configuration"
key_path = "{pfx}"
password_file = "{pfx_pass}"

[[probe]]
name = "push-end-to-end"
kind = "push"
every = "2s"
timeout = "10s"
mode = "end_to_end"
smtp_host = "127.0.0.1"
smtp_port = {smtp}
tls = "none"
from = "sonde@{TENANT}"
to = "{mailbox}"
badge_url = "{base}/devices/{device}"
deadline = "3s"
warn_latency = "2s"
poll_every = "100ms"
"#,
            pfx = k.path("oauth.pfx").display(),
            pfx_pass = k.path("oauth.pfx.pass").display(),
            smtp = lab.smtp.port(),
            mailbox = lab::default_mailbox(TENANT),
            device = lab::DEFAULT_DEVICE,
        ),
    )
    .unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_sonde"));
    agent
        .current_dir(dir.path())
        .args(["run", "--config", "sonde.toml"])
        .env_remove("SONDE_CONFIG")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "500")
        .env("RUST_LOG", "sonde=info");
    let _agent = Proc::spawn("sonde", agent, dir.path());

    // Every span received so far, with the resource it came with.
    let spans = |got: &Shared| -> Vec<(Span, Option<Resource>)> {
        let g = got.lock().unwrap();
        assert!(g.errors.is_empty(), "undecodable bodies: {:?}", g.errors);
        g.traces
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| {
                rs.scope_spans
                    .iter()
                    .flat_map(|ss| &ss.spans)
                    .map(|s| (s.clone(), rs.resource.clone()))
            })
            .collect()
    };
    // A span tree: the run and its children, by name.
    let tree = |probe: &'static str, children: &'static [&'static str]| {
        let got = got.clone();
        move || {
            let all = spans(&got);
            let found = all.iter().find_map(|(run, resource)| {
                if run.name != "probe_run"
                    || attr(&run.attributes, "probe").as_deref() != Some(probe)
                {
                    return None;
                }
                let kids: Vec<&Span> = all
                    .iter()
                    .map(|(s, _)| s)
                    .filter(|s| s.parent_span_id == run.span_id && s.trace_id == run.trace_id)
                    .collect();
                children
                    .iter()
                    .all(|c| kids.iter().any(|s| s.name == *c))
                    .then(|| (run.clone(), resource.clone()))
            });
            std::future::ready(found)
        }
    };
    let (run, resource) = eventually(
        "a token probe_run span with its phases",
        Duration::from_secs(30),
        tree(
            "token-entra",
            &["metadata_fetch", "assertion_signing", "token_request"],
        ),
    )
    .await;
    assert_eq!(attr(&run.attributes, "kind").as_deref(), Some("token"));
    check_resource(resource.as_ref());
    let (run, _) = eventually(
        "a push probe_run span with its wait",
        Duration::from_secs(30),
        tree("push-end-to-end", &["end_to_end_wait"]),
    )
    .await;
    assert_eq!(attr(&run.attributes, "kind").as_deref(), Some("push"));

    // The runs counter, with its labels, and the duration histogram.
    let (runs, resource) = eventually("sonde.probe.runs", Duration::from_secs(30), || {
        let g = got.lock().unwrap();
        let mut found = None;
        let mut histogram = false;
        for rm in g.metrics.iter().flat_map(|r| &r.resource_metrics) {
            for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                match (m.name.as_str(), &m.data) {
                    ("sonde.probe.runs", Some(metric::Data::Sum(sum))) => {
                        assert!(sum.is_monotonic);
                        for p in &sum.data_points {
                            let labels = [
                                attr(&p.attributes, "probe"),
                                attr(&p.attributes, "kind"),
                                attr(&p.attributes, "status"),
                                attr(&p.attributes, "category"),
                            ];
                            let want = ["token-entra", "token", "ok", ""].map(|s| Some(s.into()));
                            if labels == want {
                                if let Some(number_data_point::Value::AsInt(n)) = p.value {
                                    found = Some((n, rm.resource.clone()));
                                }
                            }
                        }
                    }
                    ("sonde.probe.duration", Some(metric::Data::Histogram(h))) => {
                        histogram |= h.data_points.iter().any(|p| {
                            attr(&p.attributes, "probe").as_deref() == Some("token-entra")
                                && p.count > 0
                        });
                    }
                    _ => {}
                }
            }
        }
        std::future::ready(found.filter(|_| histogram))
    })
    .await;
    assert!(runs >= 1, "{runs}");
    check_resource(resource.as_ref());
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_run_exports_over_otlp_grpc_and_stops_promptly_once_the_collector_is_gone() {
    let (otlp, got, stop_collector, collector) = grpc_receiver().await;
    let web = serve_forever(b"{}".to_vec()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sonde.toml"),
        format!(
            r#"[telemetry]
otlp_endpoint = "http://{otlp}"
otlp_protocol = "grpc"

[[probe]]
name = "web"
kind = "http"
every = "1s"
url = "http://{web}/healthz"
"#
        ),
    )
    .unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_sonde"));
    agent
        .current_dir(dir.path())
        .args(["run", "--config", "sonde.toml"])
        .env_remove("SONDE_CONFIG")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "500")
        .env("RUST_LOG", "sonde=info");
    let mut agent = Proc::spawn("sonde", agent, dir.path());

    let resource = eventually(
        "a probe_run span over gRPC",
        Duration::from_secs(30),
        || {
            let g = got.lock().unwrap();
            let found = g
                .traces
                .iter()
                .flat_map(|r| &r.resource_spans)
                .find_map(|rs| {
                    rs.scope_spans
                        .iter()
                        .flat_map(|ss| &ss.spans)
                        .any(|s| {
                            s.name == "probe_run"
                                && attr(&s.attributes, "probe").as_deref() == Some("web")
                                && attr(&s.attributes, "kind").as_deref() == Some("http")
                        })
                        .then(|| rs.resource.clone())
                });
            std::future::ready(found)
        },
    )
    .await;
    check_resource(resource.as_ref());
    let (runs, resource) = eventually(
        "sonde.probe.runs over gRPC",
        Duration::from_secs(30),
        || {
            let g = got.lock().unwrap();
            let found = g
                .metrics
                .iter()
                .flat_map(|r| &r.resource_metrics)
                .find_map(|rm| {
                    rm.scope_metrics
                        .iter()
                        .flat_map(|s| &s.metrics)
                        .filter(|m| m.name == "sonde.probe.runs")
                        .filter_map(|m| match &m.data {
                            Some(metric::Data::Sum(sum)) => Some(sum),
                            _ => None,
                        })
                        .flat_map(|sum| &sum.data_points)
                        .find(|p| {
                            attr(&p.attributes, "probe").as_deref() == Some("web")
                                && attr(&p.attributes, "status").as_deref() == Some("ok")
                        })
                        .and_then(|p| match p.value {
                            Some(number_data_point::Value::AsInt(n)) => {
                                Some((n, rm.resource.clone()))
                            }
                            _ => None,
                        })
                });
            std::future::ready(found)
        },
    )
    .await;
    assert!(runs >= 1, "{runs}");
    check_resource(resource.as_ref());

    // With the collector gone, SIGTERM still stops the agent promptly.
    let _ = stop_collector.send(());
    tokio::time::timeout(Duration::from_secs(10), collector)
        .await
        .expect("the collector stops")
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = std::time::Instant::now();
    let exit = loop {
        if let Some(s) = agent.try_wait() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "the agent did not stop within 8 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exit.code(), Some(0));
}
