//! Telemetry: the tracing subscriber, typed events (`events`) whose `emit()`
//! writes the log line and updates the metrics in one place, and the metrics
//! registry with its Prometheus rendering (`metrics`), and the OTLP export of
//! spans and metrics (`otel`).

pub mod events;
pub mod metrics;
pub mod otel;

use std::io::IsTerminal;

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Crates whose debug output carries secrets: lettre writes the SMTP dialogue,
/// `AUTH PLAIN <base64 of user and password>` included. Its `tracing` feature is
/// off (Cargo.toml), and this filter keeps it out even if a dependency turns
/// the feature back on or `RUST_LOG` asks for `lettre=trace`.
const SECRET_TARGETS: &[&str] = &["lettre"];

/// Whether events of `target` (a module path) are kept out of every log.
fn writes_secrets(target: &str) -> bool {
    SECRET_TARGETS.iter().any(|t| {
        target
            .strip_prefix(t)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// Installs the global subscriber: `RUST_LOG` if set, else `default_filter`.
/// Logs go to stderr, so that stdout carries only command output.
/// Whatever the filter says, events of `SECRET_TARGETS` are never written.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    init_logging_otel(format, default_filter, None)
}

/// `init_logging`, plus a layer exporting spans through `otel`'s tracer
/// provider when it has one.
pub fn init_logging_otel(format: LogFormat, default_filter: &str, otel: Option<&otel::Otel>) {
    let traces = otel
        .and_then(otel::Otel::tracer)
        .map(|t| tracing_opentelemetry::layer().with_tracer(t));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::try_new(default_filter).unwrap_or_else(|_| EnvFilter::new("info"))
    });
    let registry = tracing_subscriber::registry()
        .with(filter_fn(|meta| !writes_secrets(meta.target())))
        .with(filter)
        .with(traces);
    let result = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(escaped_fields())
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

/// Fields of text logs as the default writes them (`message` bare, others
/// `name=value`), but with every control character escaped: a field may quote
/// a peer, and a newline or ESC in it must not forge a line or drive the
/// terminal. (JSON logs escape them by themselves.)
fn escaped_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = format!("{value:?}");
        let text = crate::human::text::escape(&text);
        match field.name() {
            "message" => write!(w, "{text}"),
            name => write!(w, "{}={text}", name.strip_prefix("r#").unwrap_or(name)),
        }
    })
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn text_logs_escape_control_characters_in_every_field() {
        let buf = Buffer::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(escaped_fields())
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let realm = "x\n2026-01-01T00:00:00Z ERROR forged\u{1b}[2J";
            let span = tracing::info_span!("probe_run", probe = "p", kind = "metadata");
            let _in = span.enter();
            tracing::warn!(summary = %realm, error = realm, "probe {realm} failed");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.ends_with('\n'));
        assert!(!out.trim_end().chars().any(char::is_control), "{out}");
        assert!(out.contains("probe x\\n2026-01-01T00:00:00Z ERROR forged\\u{1b}[2J failed"));
        assert!(out.contains("summary=x\\n2026"), "{out}");
        assert!(
            out.contains("probe_run{probe=\"p\" kind=\"metadata\"}"),
            "{out}"
        );
    }

    #[test]
    fn the_smtp_dialogue_is_never_logged() {
        assert!(writes_secrets("lettre"));
        assert!(writes_secrets(
            "lettre::transport::smtp::client::async_connection"
        ));
        assert!(!writes_secrets("lettres"));
        assert!(!writes_secrets("sonde::channel::email"));
    }
}
