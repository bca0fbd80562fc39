//! OpenTelemetry export over OTLP/HTTP (protobuf): the tracer provider behind
//! the `tracing` layer (so the runner's `probe_run` span and the probes' phase
//! spans export) and the meter provider behind the OTel instruments that
//! `super::metrics` records into. What is recorded lives there; this file only
//! decides whether and where to export.
//!
//! Nothing is built unless an endpoint is configured: `[telemetry]
//! otlp_endpoint` (a base URL, `/v1/traces` and `/v1/metrics` are appended), or
//! the standard `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! and `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (a signal-specific variable alone
//! exports that signal alone). The SDK reads the other standard variables
//! itself: `OTEL_EXPORTER_OTLP_*HEADERS`, `*_TIMEOUT`, `OTEL_BSP_*`,
//! `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`.
//! gRPC is not built in: `OTEL_EXPORTER_OTLP_PROTOCOL` other than
//! `http/protobuf` is an error.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{MetricExporter, Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::resource::{
    EnvResourceDetector, ResourceDetector, SdkProvidedResourceDetector, TelemetryResourceDetector,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

use crate::config::TelemetryConfig;

pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
pub const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

/// The one protocol this build speaks.
pub const HTTP_PROTOBUF: &str = "http/protobuf";

#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("{OTEL_EXPORTER_OTLP_PROTOCOL}={0}: only {HTTP_PROTOBUF} is supported")]
    Protocol(String),
    #[error("cannot build the OTLP {signal} exporter: {source}")]
    Exporter {
        signal: &'static str,
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Where each signal goes; `None` for a signal that is not exported.
/// `Some(None)` leaves the endpoint to the SDK's reading of the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub traces: Option<Option<String>>,
    pub metrics: Option<Option<String>>,
}

impl Endpoints {
    /// The config's endpoint wins over the environment; `env` looks a variable up.
    pub fn resolve(cfg: &TelemetryConfig, env: impl Fn(&str) -> Option<String>) -> Self {
        if let Some(base) = cfg.otlp_endpoint.as_deref().filter(|s| !s.is_empty()) {
            let base = base.trim_end_matches('/');
            return Endpoints {
                traces: Some(Some(format!("{base}/v1/traces"))),
                metrics: Some(Some(format!("{base}/v1/metrics"))),
            };
        }
        let set = |name: &str| env(name).is_some_and(|v| !v.is_empty());
        let general = set(OTEL_EXPORTER_OTLP_ENDPOINT);
        Endpoints {
            traces: (general || set(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)).then_some(None),
            metrics: (general || set(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)).then_some(None),
        }
    }

    pub fn any(&self) -> bool {
        self.traces.is_some() || self.metrics.is_some()
    }
}

/// The built providers; `shutdown` flushes them (blocking: call it off the
/// async runtime's workers).
pub struct Otel {
    pub tracer_provider: Option<SdkTracerProvider>,
    pub meter_provider: Option<SdkMeterProvider>,
}

impl Otel {
    /// The layer that turns `tracing` spans into OTel spans, when traces export.
    pub fn tracer(&self) -> Option<opentelemetry_sdk::trace::Tracer> {
        self.tracer_provider.as_ref().map(|p| p.tracer("sonde"))
    }

    /// Exports what is pending and stops the exporters' threads.
    pub fn shutdown(self) {
        if let Some(p) = self.tracer_provider {
            if let Err(e) = p.shutdown() {
                tracing::warn!(error = %e, "OTLP traces: shutdown failed");
            }
        }
        if let Some(p) = self.meter_provider {
            if let Err(e) = p.shutdown() {
                tracing::warn!(error = %e, "OTLP metrics: shutdown failed");
            }
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
pub fn init_with(
    cfg: &TelemetryConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Otel>, OtelError> {
    let endpoints = Endpoints::resolve(cfg, &env);
    if !endpoints.any() {
        return Ok(None);
    }
    if let Some(p) = env(OTEL_EXPORTER_OTLP_PROTOCOL).filter(|p| !p.is_empty()) {
        if p != HTTP_PROTOBUF {
            return Err(OtelError::Protocol(p));
        }
    }
    let resource = resource(env(OTEL_SERVICE_NAME).is_some_and(|v| !v.is_empty()));
    let tracer_provider = match &endpoints.traces {
        None => None,
        Some(endpoint) => {
            let mut b = SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary);
            if let Some(e) = endpoint {
                b = b.with_endpoint(e);
            }
            let exporter = b.build().map_err(|source| OtelError::Exporter {
                signal: "traces",
                source,
            })?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource.clone())
                    .build(),
            )
        }
    };
    let meter_provider = match &endpoints.metrics {
        None => None,
        Some(endpoint) => {
            let mut b = MetricExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary);
            if let Some(e) = endpoint {
                b = b.with_endpoint(e);
            }
            let exporter = b.build().map_err(|source| OtelError::Exporter {
                signal: "metrics",
                source,
            })?;
            let provider = SdkMeterProvider::builder()
                .with_periodic_exporter(exporter)
                .with_resource(resource)
                .build();
            opentelemetry::global::set_meter_provider(provider.clone());
            Some(provider)
        }
    };
    Ok(Some(Otel {
        tracer_provider,
        meter_provider,
    }))
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

    fn cfg(endpoint: Option<&str>) -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: endpoint.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn nothing_configured_builds_no_exporter() {
        let none = Endpoints::resolve(&cfg(None), |_| None);
        assert!(!none.any());
        let empty = Endpoints::resolve(&cfg(Some("")), |_| Some(String::new()));
        assert!(!empty.any());
    }

    #[test]
    fn init_builds_nothing_without_an_endpoint() {
        assert!(init_with(&cfg(None), |_| None).unwrap().is_none());
    }

    #[test]
    fn grpc_is_refused_rather_than_sent_over_http() {
        let env = |name: &str| (name == OTEL_EXPORTER_OTLP_PROTOCOL).then(|| "grpc".to_string());
        let err = init_with(&cfg(Some("http://127.0.0.1:1")), env).err();
        assert!(matches!(err, Some(OtelError::Protocol(p)) if p == "grpc"));
    }

    #[test]
    fn the_config_endpoint_is_a_base_url_for_both_signals() {
        let e = Endpoints::resolve(&cfg(Some("http://collector:4318/")), |_| {
            Some("http://elsewhere:4318".into())
        });
        assert_eq!(
            e.traces,
            Some(Some("http://collector:4318/v1/traces".to_string()))
        );
        assert_eq!(
            e.metrics,
            Some(Some("http://collector:4318/v1/metrics".to_string()))
        );
    }

    #[test]
    fn a_signal_specific_variable_exports_that_signal_alone() {
        let e = Endpoints::resolve(&cfg(None), |name| {
            (name == OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).then(|| "http://x:4318/v1/traces".into())
        });
        assert_eq!(e.traces, Some(None));
        assert_eq!(e.metrics, None);
        let e = Endpoints::resolve(&cfg(None), |name| {
            (name == OTEL_EXPORTER_OTLP_ENDPOINT).then(|| "http://x:4318".into())
        });
        assert_eq!((e.traces, e.metrics), (Some(None), Some(None)));
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
