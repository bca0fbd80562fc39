//! OpenTelemetry export over OTLP, HTTP/protobuf or gRPC: the tracer provider
//! behind the `tracing` layer (so the runner's `probe_run` span and the probes'
//! phase spans export) and the meter provider behind the OTel instruments that
//! `super::metrics` records into. What is recorded lives there; this file only
//! decides whether, where and how to export.
//!
//! Nothing is built unless an endpoint is configured: `[telemetry]
//! otlp_endpoint` (a base URL; over HTTP `/v1/traces` and `/v1/metrics` are
//! appended, gRPC takes it as is), or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` and `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`
//! (a signal-specific variable alone exports that signal alone). The protocol
//! is `[telemetry] otlp_protocol`, else `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` /
//! `OTEL_EXPORTER_OTLP_METRICS_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`,
//! else `http/protobuf`; a value other than `http/protobuf` or `grpc` is an
//! error. The SDK reads the other standard variables itself:
//! `OTEL_EXPORTER_OTLP_*HEADERS`, `*_TIMEOUT`, `OTEL_BSP_*`,
//! `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`.
//!
//! The SDK exports from its own threads by blocking on the exporter's future.
//! The HTTP exporter is the blocking reqwest client; the gRPC one is a tonic
//! channel whose connections are tokio tasks, so gRPC export gets a small
//! runtime of its own, entered while the channels are built and shut down
//! after the providers have flushed.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt as _;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::trace::SpanData;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{MetricExporter, Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::resource::{
    EnvResourceDetector, ResourceDetector, SdkProvidedResourceDetector, TelemetryResourceDetector,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

pub(crate) use crate::config::OtlpProtocol;
use crate::config::TelemetryConfig;

pub(crate) const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub(crate) const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub(crate) const OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
pub(crate) const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub(crate) const OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
pub(crate) const OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL";
const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

pub(crate) const HTTP_PROTOBUF: &str = "http/protobuf";
pub(crate) const GRPC: &str = "grpc";

#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("{var}={value}: the OTLP protocol must be {HTTP_PROTOBUF} or {GRPC}")]
    Protocol { var: &'static str, value: String },
    #[error("cannot build the OTLP {signal} exporter: {source}")]
    Exporter {
        signal: &'static str,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("cannot start the OTLP/gRPC runtime: {0}")]
    Runtime(std::io::Error),
}

/// Where and how one signal goes. `endpoint: None` leaves the endpoint to the
/// SDK's reading of the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub endpoint: Option<String>,
    pub protocol: OtlpProtocol,
}

/// Each signal's target; `None` for a signal that is not exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoints {
    pub traces: Option<Target>,
    pub metrics: Option<Target>,
}

/// The protocol for one signal: the config's, else the signal's variable, else
/// the general one, else HTTP/protobuf.
pub(crate) fn resolve_protocol(
    cfg: &TelemetryConfig,
    signal_var: &'static str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<OtlpProtocol, OtelError> {
    if let Some(p) = cfg.otlp_protocol {
        return Ok(p);
    }
    for var in [signal_var, OTEL_EXPORTER_OTLP_PROTOCOL] {
        match env(var).as_deref().map(str::trim) {
            None | Some("") => continue,
            Some(HTTP_PROTOBUF) => return Ok(OtlpProtocol::HttpProtobuf),
            Some(GRPC) => return Ok(OtlpProtocol::Grpc),
            Some(other) => {
                return Err(OtelError::Protocol {
                    var,
                    value: other.to_string(),
                })
            }
        }
    }
    Ok(OtlpProtocol::HttpProtobuf)
}

impl Endpoints {
    /// The config's endpoint wins over the environment; `env` looks a variable up.
    pub(crate) fn resolve(
        cfg: &TelemetryConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, OtelError> {
        let set = |name: &str| env(name).is_some_and(|v| !v.is_empty());
        let base = cfg
            .otlp_endpoint
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|b| b.trim_end_matches('/'));
        let general = set(OTEL_EXPORTER_OTLP_ENDPOINT);
        let target = |endpoint_var: &str, protocol_var: &'static str, path: &str| {
            if base.is_none() && !general && !set(endpoint_var) {
                return Ok(None);
            }
            let protocol = resolve_protocol(cfg, protocol_var, &env)?;
            let endpoint = base.map(|b| match protocol {
                OtlpProtocol::HttpProtobuf => format!("{b}{path}"),
                OtlpProtocol::Grpc => b.to_string(),
            });
            Ok(Some(Target { endpoint, protocol }))
        };
        Ok(Endpoints {
            traces: target(
                OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
                OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
                "/v1/traces",
            )?,
            metrics: target(
                OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
                OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
                "/v1/metrics",
            )?,
        })
    }

    pub(crate) fn any(&self) -> bool {
        self.traces.is_some() || self.metrics.is_some()
    }

    fn grpc(&self) -> bool {
        [&self.traces, &self.metrics]
            .into_iter()
            .flatten()
            .any(|t| t.protocol == OtlpProtocol::Grpc)
    }
}

/// Exports whose panic `Guarded` caught, over the process: the
/// `telemetry_export` task's restarts.
static EXPORT_PANICS: AtomicU64 = AtomicU64::new(0);

/// The `telemetry_export` task's restarts, once there was one.
pub(crate) fn export_restarts() -> Option<u64> {
    Some(EXPORT_PANICS.load(Ordering::Relaxed)).filter(|&n| n > 0)
}

/// An exporter run by the SDK's own export thread, supervised the only way
/// that thread allows: a panic in an export is caught, logged and counted
/// (`sonde_task_restarts_total{task="telemetry_export"}`) and that batch
/// fails, instead of the thread dying and export stopping unseen; the next
/// interval's export goes on.
#[derive(Debug)]
pub(crate) struct Guarded<E> {
    exporter: E,
    /// Where caught panics are counted.
    panics: &'static AtomicU64,
}

impl<E> Guarded<E> {
    fn new(exporter: E) -> Guarded<E> {
        Guarded {
            exporter,
            panics: &EXPORT_PANICS,
        }
    }

    /// The export that `start` begins, with a panic caught whether it comes
    /// from `start` or while the export runs.
    fn guard<F>(
        &self,
        signal: &'static str,
        start: impl FnOnce() -> F,
    ) -> impl Future<Output = OTelSdkResult> + Send
    where
        F: Future<Output = OTelSdkResult> + Send,
    {
        let panics = self.panics;
        let started = std::panic::catch_unwind(AssertUnwindSafe(start));
        async move {
            let result = match started {
                Ok(export) => AssertUnwindSafe(export).catch_unwind().await,
                Err(payload) => Err(payload),
            };
            caught(signal, panics, result)
        }
    }
}

/// The outcome of an export that may have panicked, counted in `panics`.
fn caught(
    signal: &'static str,
    panics: &AtomicU64,
    result: Result<OTelSdkResult, Box<dyn std::any::Any + Send>>,
) -> OTelSdkResult {
    result.unwrap_or_else(|payload| {
        let reason = crate::human::text::panic_text(payload);
        let n = panics.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!(
            task = "telemetry_export",
            signal,
            reason = %reason,
            restarts = n,
            "an OTLP export panicked; the batch is lost and export goes on"
        );
        Err(OTelSdkError::InternalFailure(format!(
            "{signal} export {reason}"
        )))
    })
}

impl<E: PushMetricExporter> PushMetricExporter for Guarded<E> {
    fn export(&self, metrics: &ResourceMetrics) -> impl Future<Output = OTelSdkResult> + Send {
        self.guard("metrics", || self.exporter.export(metrics))
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.exporter.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.exporter.temporality()
    }
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Guarded<E>
{
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        self.guard("traces", || self.exporter.export(batch))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.exporter.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.exporter.set_resource(resource)
    }
}

/// The built providers; `shutdown` flushes them (blocking: call it off the
/// async runtime's workers).
pub struct Otel {
    pub tracer_provider: Option<SdkTracerProvider>,
    pub meter_provider: Option<SdkMeterProvider>,
    /// Drives the gRPC channels' connections; `None` over HTTP.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Otel {
    /// The layer that turns `tracing` spans into OTel spans, when traces export.
    pub(crate) fn tracer(&self) -> Option<opentelemetry_sdk::trace::Tracer> {
        self.tracer_provider.as_ref().map(|p| p.tracer("sonde"))
    }

    /// Exports what is pending and stops the exporters' threads.
    pub fn shutdown(mut self) {
        if let Some(p) = self.tracer_provider.take() {
            if let Err(e) = p.shutdown() {
                tracing::warn!(error = %e, "OTLP traces: shutdown failed");
            }
        }
        if let Some(p) = self.meter_provider.take() {
            if let Err(e) = p.shutdown() {
                tracing::warn!(error = %e, "OTLP metrics: shutdown failed");
            }
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for Otel {
    /// Without `shutdown` (an error path), the gRPC runtime must still not be
    /// dropped the blocking way, which panics on an async worker.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Builds the providers for what is configured, reading the process
/// environment; `Ok(None)` when no endpoint is configured. The meter provider
/// is installed as the global one, where `Metrics::new` finds it.
pub fn init(cfg: &TelemetryConfig) -> Result<Option<Otel>, OtelError> {
    init_with(cfg, |name| std::env::var(name).ok())
}

/// `init` with `env` to look variables up (the SDK still reads the process
/// environment for the settings it owns).
pub(crate) fn init_with(
    cfg: &TelemetryConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Otel>, OtelError> {
    let endpoints = Endpoints::resolve(cfg, &env)?;
    if !endpoints.any() {
        return Ok(None);
    }
    let runtime = if endpoints.grpc() {
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("sonde-otlp-grpc")
                .enable_all()
                .build()
                .map_err(OtelError::Runtime)?,
        )
    } else {
        None
    };
    let mut otel = Otel {
        tracer_provider: None,
        meter_provider: None,
        runtime,
    };
    // tonic's channels spawn their workers on the runtime current at build
    // time. On an error `otel` drops, shutting that runtime down in the background.
    let _entered = otel.runtime.as_ref().map(|rt| rt.enter());
    let resource = resource(env(OTEL_SERVICE_NAME).is_some_and(|v| !v.is_empty()));
    if let Some(target) = &endpoints.traces {
        let exporter = span_exporter(target).map_err(|source| OtelError::Exporter {
            signal: "traces",
            source,
        })?;
        otel.tracer_provider = Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(Guarded::new(exporter))
                .with_resource(resource.clone())
                .build(),
        );
    }
    if let Some(target) = &endpoints.metrics {
        let exporter = metric_exporter(target).map_err(|source| OtelError::Exporter {
            signal: "metrics",
            source,
        })?;
        let provider = SdkMeterProvider::builder()
            .with_periodic_exporter(Guarded::new(exporter))
            .with_resource(resource)
            .build();
        opentelemetry::global::set_meter_provider(provider.clone());
        otel.meter_provider = Some(provider);
    }
    drop(_entered);
    Ok(Some(otel))
}

fn span_exporter(t: &Target) -> Result<SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    match t.protocol {
        OtlpProtocol::HttpProtobuf => {
            let mut b = SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary);
            if let Some(e) = &t.endpoint {
                b = b.with_endpoint(e);
            }
            b.build()
        }
        OtlpProtocol::Grpc => {
            let mut b = SpanExporter::builder()
                .with_tonic()
                .with_protocol(Protocol::Grpc);
            if let Some(e) = &t.endpoint {
                b = b.with_endpoint(e);
            }
            b.build()
        }
    }
}

fn metric_exporter(t: &Target) -> Result<MetricExporter, opentelemetry_otlp::ExporterBuildError> {
    match t.protocol {
        OtlpProtocol::HttpProtobuf => {
            let mut b = MetricExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary);
            if let Some(e) = &t.endpoint {
                b = b.with_endpoint(e);
            }
            b.build()
        }
        OtlpProtocol::Grpc => {
            let mut b = MetricExporter::builder()
                .with_tonic()
                .with_protocol(Protocol::Grpc);
            if let Some(e) = &t.endpoint {
                b = b.with_endpoint(e);
            }
            b.build()
        }
    }
}

/// service.name=sonde unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
/// name it, service.version, host.name, and the SDK's telemetry.sdk.*.
fn resource(service_name_from_env: bool) -> Resource {
    let mut detectors: Vec<Box<dyn ResourceDetector>> = vec![
        Box::new(TelemetryResourceDetector),
        Box::new(EnvResourceDetector::new()),
    ];
    if service_name_from_env {
        detectors.push(Box::new(SdkProvidedResourceDetector));
    }
    let mut attributes = vec![
        KeyValue::new("service.name", "sonde"),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    ];
    if let Some(host) = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
    {
        attributes.push(KeyValue::new("host.name", host));
    }
    Resource::builder_empty()
        .with_attributes(attributes)
        .with_detectors(&detectors)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An exporter that panics when `export` is called (`at_once`) or
    /// inside the export it returns.
    #[derive(Debug)]
    struct Panicky {
        at_once: bool,
    }

    impl PushMetricExporter for Panicky {
        fn export(&self, _: &ResourceMetrics) -> impl Future<Output = OTelSdkResult> + Send {
            assert!(!self.at_once, "exporter broke at once");
            async { panic!("exporter broke while sending") }
        }

        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }

        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }

        fn temporality(&self) -> Temporality {
            Temporality::Cumulative
        }
    }

    impl opentelemetry_sdk::trace::SpanExporter for Panicky {
        async fn export(&self, _: Vec<SpanData>) -> OTelSdkResult {
            panic!("span exporter broke")
        }
    }

    /// An exporter that works.
    #[derive(Debug)]
    struct Fine;

    impl opentelemetry_sdk::trace::SpanExporter for Fine {
        async fn export(&self, _: Vec<SpanData>) -> OTelSdkResult {
            Ok(())
        }
    }

    #[test]
    fn a_panicking_export_is_caught_counted_and_the_next_goes_on() {
        static PANICS: AtomicU64 = AtomicU64::new(0);
        let guarded = |exporter| Guarded {
            exporter,
            panics: &PANICS,
        };
        let rm = ResourceMetrics::default();
        for (at_once, said) in [(true, "exporter broke at once"), (false, "while sending")] {
            let e = futures::executor::block_on(PushMetricExporter::export(
                &guarded(Panicky { at_once }),
                &rm,
            ))
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("metrics export panicked: ") && e.contains(said),
                "{e}"
            );
        }
        use opentelemetry_sdk::trace::SpanExporter;
        let spans = guarded(Panicky { at_once: false });
        let e = futures::executor::block_on(SpanExporter::export(&spans, Vec::new())).unwrap_err();
        assert!(e
            .to_string()
            .contains("traces export panicked: span exporter broke"));
        assert_eq!(PANICS.load(Ordering::Relaxed), 3);
        // The same thread exports again, and a working export passes through.
        let e = futures::executor::block_on(SpanExporter::export(&spans, Vec::new())).unwrap_err();
        assert!(e.to_string().contains("span exporter broke"));
        let fine = Guarded {
            exporter: Fine,
            panics: &PANICS,
        };
        assert!(futures::executor::block_on(SpanExporter::export(&fine, Vec::new())).is_ok());
        assert_eq!(PANICS.load(Ordering::Relaxed), 4);
    }

    fn cfg(endpoint: Option<&str>) -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: endpoint.map(str::to_string),
            ..Default::default()
        }
    }

    fn http(endpoint: Option<&str>) -> Option<Target> {
        Some(Target {
            endpoint: endpoint.map(str::to_string),
            protocol: OtlpProtocol::HttpProtobuf,
        })
    }

    #[test]
    fn nothing_configured_builds_no_exporter() {
        let none = Endpoints::resolve(&cfg(None), |_| None).unwrap();
        assert!(!none.any());
        let empty = Endpoints::resolve(&cfg(Some("")), |_| Some(String::new())).unwrap();
        assert!(!empty.any());
    }

    #[test]
    fn init_builds_nothing_without_an_endpoint() {
        assert!(init_with(&cfg(None), |_| None).unwrap().is_none());
    }

    #[test]
    fn an_unknown_protocol_is_refused() {
        let env = |name: &str| (name == OTEL_EXPORTER_OTLP_PROTOCOL).then(|| "http/json".into());
        let err = init_with(&cfg(Some("http://127.0.0.1:1")), env).err();
        assert!(
            matches!(&err, Some(OtelError::Protocol { var, value })
                if *var == OTEL_EXPORTER_OTLP_PROTOCOL && value == "http/json"),
            "{err:?}"
        );
        let env = |name: &str| (name == OTEL_EXPORTER_OTLP_METRICS_PROTOCOL).then(|| "h2".into());
        let err = Endpoints::resolve(&cfg(Some("http://127.0.0.1:1")), env).err();
        assert!(
            matches!(&err, Some(OtelError::Protocol { var, .. })
                if *var == OTEL_EXPORTER_OTLP_METRICS_PROTOCOL),
            "{err:?}"
        );
    }

    #[test]
    fn the_protocol_comes_from_the_config_then_the_signal_then_the_general_variable() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let mut c = cfg(None);
        let traces = OTEL_EXPORTER_OTLP_TRACES_PROTOCOL;
        assert_eq!(
            resolve_protocol(&c, traces, |_| None).unwrap(),
            OtlpProtocol::HttpProtobuf
        );
        let general = vars(&[(OTEL_EXPORTER_OTLP_PROTOCOL, "grpc")]);
        assert_eq!(
            resolve_protocol(&c, traces, general).unwrap(),
            OtlpProtocol::Grpc
        );
        let both = vars(&[
            (OTEL_EXPORTER_OTLP_PROTOCOL, "grpc"),
            (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, "http/protobuf"),
        ]);
        assert_eq!(
            resolve_protocol(&c, traces, both).unwrap(),
            OtlpProtocol::HttpProtobuf
        );
        c.otlp_protocol = Some(OtlpProtocol::Grpc);
        let bad = vars(&[(OTEL_EXPORTER_OTLP_PROTOCOL, "bogus")]);
        assert_eq!(
            resolve_protocol(&c, traces, bad).unwrap(),
            OtlpProtocol::Grpc
        );
    }

    #[test]
    fn over_grpc_the_config_endpoint_is_used_as_is() {
        let mut c = cfg(Some("http://collector:4317/"));
        c.otlp_protocol = Some(OtlpProtocol::Grpc);
        let e = Endpoints::resolve(&c, |_| None).unwrap();
        let want = Some(Target {
            endpoint: Some("http://collector:4317".into()),
            protocol: OtlpProtocol::Grpc,
        });
        assert_eq!((e.traces.clone(), e.metrics), (want.clone(), want));
        // A signal can go over gRPC while the other stays on HTTP.
        let e = Endpoints::resolve(&cfg(None), |name| match name {
            OTEL_EXPORTER_OTLP_ENDPOINT => Some("http://x:4318".into()),
            OTEL_EXPORTER_OTLP_METRICS_PROTOCOL => Some("grpc".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(e.traces, http(None));
        assert_eq!(e.metrics.map(|t| t.protocol), Some(OtlpProtocol::Grpc));
    }

    #[test]
    fn grpc_exporters_build_and_shut_down_without_a_collector() {
        let mut c = cfg(Some("http://127.0.0.1:1"));
        c.otlp_protocol = Some(OtlpProtocol::Grpc);
        let otel = init_with(&c, |_| None).unwrap().expect("exporters");
        assert!(otel.runtime.is_some());
        let started = std::time::Instant::now();
        otel.shutdown();
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_grpc_build_error_inside_the_agent_runtime_does_not_panic() {
        let mut c = cfg(Some("https://127.0.0.1:1"));
        c.otlp_protocol = Some(OtlpProtocol::Grpc);
        let err = init_with(&c, |_| None).err();
        assert!(
            matches!(
                err,
                Some(OtelError::Exporter {
                    signal: "traces",
                    ..
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn the_config_endpoint_is_a_base_url_for_both_signals() {
        let e = Endpoints::resolve(&cfg(Some("http://collector:4318/")), |_| {
            Some("http://elsewhere:4318".into())
        });
        // Every variable reads "http://elsewhere:4318", an invalid protocol.
        assert!(e.is_err());
        let e = Endpoints::resolve(&cfg(Some("http://collector:4318/")), |name| {
            name.ends_with("ENDPOINT")
                .then(|| "http://elsewhere:4318".into())
        })
        .unwrap();
        assert_eq!(e.traces, http(Some("http://collector:4318/v1/traces")));
        assert_eq!(e.metrics, http(Some("http://collector:4318/v1/metrics")));
    }

    #[test]
    fn a_signal_specific_variable_exports_that_signal_alone() {
        let e = Endpoints::resolve(&cfg(None), |name| {
            (name == OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).then(|| "http://x:4318/v1/traces".into())
        })
        .unwrap();
        assert_eq!(e.traces, http(None));
        assert_eq!(e.metrics, None);
        let e = Endpoints::resolve(&cfg(None), |name| {
            (name == OTEL_EXPORTER_OTLP_ENDPOINT).then(|| "http://x:4318".into())
        })
        .unwrap();
        assert_eq!((e.traces, e.metrics), (http(None), http(None)));
    }

    #[test]
    fn the_resource_names_service_version_and_host() {
        let r = resource(false);
        let get = |k: &'static str| r.get(&opentelemetry::Key::new(k)).map(|v| v.to_string());
        assert_eq!(get("service.name").as_deref(), Some("sonde"));
        assert_eq!(
            get("service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert!(get("host.name").is_some_and(|h| !h.is_empty()));
    }
}
