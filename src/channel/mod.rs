//! Alert channels: the alert every channel receives (`Alert`), the channels'
//! configuration (one file per kind: `email`, `webhook`, `slack`, `teams`,
//! `alertmanager`) and their delivery behind one closed enum (`Channel`). The
//! kinds are declared once (`channel_kinds!` below): adding one is its file,
//! which implements `ChannelKind`, and one line there.
//!
//! A channel is a named instance in `sonde.toml` (`[[channel]]`), routed to from
//! probes with `alert = ["name"]`. Not here: deciding when to alert (the monitor)
//! and retrying with backoff (`crate::alert::outbox`); a delivery is one attempt, and its
//! `DeliveryError` says whether another attempt can help.
//!
//! Secrets named by `*_env` / `*_file` (the SMTP password, the webhook's HMAC
//! secret) are read at each delivery through `crate::secret`, so a rotated
//! secret is used by the next one. Values written in the config itself (webhook
//! header values, Slack and Teams URLs, which carry their token in the path) are
//! taken when the channel is built, and take effect on a reload. None of them
//! appears in a `DeliveryError`: errors show a URL only as `scheme://host[:port]`,
//! and every secret is redacted from text a receiver sends back.

pub mod alertmanager;
pub mod email;
pub mod slack;
pub mod teams;
#[cfg(test)]
pub mod testkind;
pub mod webhook;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, SystemClock};
use crate::secret::SecretError;
use crate::spec::{BuildError, SpecProblem};

/// What every channel receives: one transition (or reminder) of a probe's
/// monitor. It is stored as JSON in the outbox, so its fields only grow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Idempotency key, stable across retries and restarts, e.g.
    /// `token-issuance:17:firing`. Receivers may drop a key they have seen.
    pub key: String,
    pub event: AlertEvent,
    pub severity: Severity,
    pub probe: String,
    pub kind: String,
    pub health_set: String,
    /// The monitor's state: `healthy`, `degraded`, `unhealthy`, ...
    pub state: String,
    pub category: Option<String>,
    pub summary: String,
    pub root_cause: Option<String>,
    /// When the problem started (for a resolution: when the resolved problem started).
    pub started_at: DateTime<Utc>,
    /// When the problem ended; set on resolutions.
    pub ends_at: Option<DateTime<Utc>>,
    /// When this alert was created (not when it is sent: retries keep it).
    pub created_at: DateTime<Utc>,
    pub observations: BTreeMap<String, f64>,
}

/// Which kind of transition an alert announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEvent {
    Firing,
    Resolved,
    Reminder,
    FlappingStarted,
    FlappingStopped,
    ChannelUnhealthy,
    /// The agent's dead-man's switch (`[agent.heartbeat]`): always firing.
    Heartbeat,
}

impl AlertEvent {
    /// The name used in payloads and templates (`firing`, `flapping_started`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEvent::Firing => "firing",
            AlertEvent::Resolved => "resolved",
            AlertEvent::Reminder => "reminder",
            AlertEvent::FlappingStarted => "flapping_started",
            AlertEvent::FlappingStopped => "flapping_stopped",
            AlertEvent::ChannelUnhealthy => "channel_unhealthy",
            AlertEvent::Heartbeat => "heartbeat",
        }
    }

    /// A short upper-case title for chat messages.
    pub fn title(self) -> &'static str {
        match self {
            AlertEvent::Firing => "FIRING",
            AlertEvent::Resolved => "RESOLVED",
            AlertEvent::Reminder => "STILL FIRING",
            AlertEvent::FlappingStarted => "FLAPPING",
            AlertEvent::FlappingStopped => "FLAPPING STOPPED",
            AlertEvent::ChannelUnhealthy => "CHANNEL UNHEALTHY",
            AlertEvent::Heartbeat => "HEARTBEAT",
        }
    }

    /// Whether the event ends a problem (used for colours and Alertmanager's `endsAt`).
    pub fn is_resolution(self) -> bool {
        matches!(self, AlertEvent::Resolved | AlertEvent::FlappingStopped)
    }
}

impl fmt::Display for AlertEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgent an alert is: the monitor's notice severity, one type for both.
pub use crate::monitor::Severity;

/// Why one delivery attempt failed. The message names the channel's host (never
/// a URL path, query or userinfo) and never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Another attempt may succeed: network failure, timeout, HTTP 5xx, 408, 429,
    /// SMTP 4xx. `retry_after` is the receiver's hint (HTTP `Retry-After`).
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help until the configuration or the receiver changes: HTTP
    /// 4xx, SMTP 5xx (a rejected password, an unknown mailbox), a bad address, a
    /// secret that cannot be read.
    #[error("{message}")]
    Permanent { message: String },
}

/// The most characters a delivery error keeps: it quotes peers (an SMTP reply,
/// a webhook's answer) and lands in logs, the store and the status page.
const DELIVERY_ERROR_MAX: usize = 500;

/// A delivery error's message as one bounded line.
fn bounded(message: String) -> String {
    match crate::human::text::bounded(&message, DELIVERY_ERROR_MAX) {
        std::borrow::Cow::Borrowed(_) => message,
        std::borrow::Cow::Owned(m) => m,
    }
}

impl DeliveryError {
    pub fn retryable(message: impl Into<String>) -> Self {
        DeliveryError::Retryable {
            message: bounded(message.into()),
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        DeliveryError::Permanent {
            message: bounded(message.into()),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, DeliveryError::Retryable { .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::Retryable { retry_after, .. } => *retry_after,
            DeliveryError::Permanent { .. } => None,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            DeliveryError::Retryable { message, .. } | DeliveryError::Permanent { message } => {
                message
            }
        }
    }

    /// The same error with every occurrence of each secret replaced, as a last
    /// line of defence for text that comes from a peer (a server's reply may
    /// echo what it was sent).
    pub(crate) fn redacted(mut self, secrets: &[&str]) -> Self {
        match &mut self {
            DeliveryError::Retryable { message, .. } | DeliveryError::Permanent { message } => {
                *message = crate::secret::redact(message, secrets);
            }
        }
        self
    }
}

impl From<SecretError> for DeliveryError {
    /// A secret that cannot be read needs a change of configuration or
    /// environment: retrying cannot help.
    fn from(e: SecretError) -> Self {
        DeliveryError::permanent(e.to_string())
    }
}

/// What each channel kind provides: its settings, their pure checks, how it is
/// built and how it delivers. Implemented by the runnable channel (slack and
/// teams share their settings type, so the settings cannot name the kind).
pub trait ChannelKind: Sized + Send + Sync {
    /// The kind's keys of a `[[channel]]` table (unknown keys are errors).
    type Config;

    /// Pure checks of the settings (no I/O): every problem at once.
    fn validate(config: &Self::Config) -> Vec<SpecProblem>;

    /// The channel ready to deliver. Files it cannot deliver without (a
    /// `ca_file`) are read here, so that `sonde validate` and a start refuse
    /// them alike; secrets are read at each delivery.
    fn build(config: &Self::Config, ctx: &ChannelContext<'_>) -> Result<Self, BuildError>;

    /// One delivery attempt; safe to repeat with the same alert (every kind
    /// carries `alert.key` so that the receiver can recognise a repeat).
    fn deliver(&self, alert: &Alert) -> impl Future<Output = Result<(), DeliveryError>> + Send;

    /// How often the outbox must deliver the latest firing alert of a problem
    /// again while it lasts, or `None` when once is enough.
    fn repost_interval(&self) -> Option<Duration> {
        None
    }
}

/// What building a channel may use besides its settings.
pub struct ChannelContext<'a> {
    /// The directory of the file that defines the channel: relative `*_file` and
    /// `ca_file` paths resolve against it.
    pub base_dir: &'a Path,
    /// Dates what a channel computes at send time (Alertmanager's `endsAt`).
    pub clock: Arc<dyn Clock>,
}

/// Declares the channel kinds, once: `name: Variant(ChannelType)` per kind,
/// where `name` is the `kind = "name"` of the config and `ChannelType`
/// implements `ChannelKind`. It generates the `ChannelSpec` enum (one variant
/// per kind, holding the kind's `Config`), the `CHANNEL_KINDS` list, the
/// `Built` enum of runnable channels and their dispatch. A line may carry
/// attributes, such as `#[cfg(test)]`.
///
/// ```
/// use sonde::channel::{Alert, ChannelContext, ChannelKind, DeliveryError};
/// use sonde::spec::{BuildError, SpecProblem};
///
/// #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
/// pub struct PigeonConfig {
///     loft: String,
/// }
///
/// pub struct Pigeon;
///
/// impl ChannelKind for Pigeon {
///     type Config = PigeonConfig;
///     fn validate(_: &PigeonConfig) -> Vec<SpecProblem> {
///         Vec::new()
///     }
///     fn build(_: &PigeonConfig, _: &ChannelContext<'_>) -> Result<Self, BuildError> {
///         Ok(Pigeon)
///     }
///     async fn deliver(&self, _: &Alert) -> Result<(), DeliveryError> {
///         Ok(())
///     }
/// }
///
/// sonde::channel_kinds! {
///     pigeon: Pigeon(Pigeon),
/// }
///
/// assert_eq!(CHANNEL_KINDS, ["pigeon"]);
/// let spec = ChannelSpec::Pigeon(PigeonConfig { loft: "roof".into() });
/// assert_eq!(spec.kind(), "pigeon");
/// ```
///
/// A kind declared without its implementation does not compile:
///
/// ```compile_fail,E0277
/// #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
/// pub struct PigeonConfig {
///     loft: String,
/// }
///
/// // No `impl ChannelKind for Pigeon`.
/// pub struct Pigeon;
///
/// sonde::channel_kinds! {
///     pigeon: Pigeon(Pigeon),
/// }
/// ```
#[macro_export]
macro_rules! channel_kinds {
    ($( $(#[$attr:meta])* $name:ident : $variant:ident ( $channel:ty ) ),+ $(,)?) => {
        /// Kind-specific channel settings, one variant per kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum ChannelSpec {
            $( $(#[$attr])* $variant(<$channel as $crate::channel::ChannelKind>::Config), )+
        }

        /// The channel kinds the config accepts, in the order the README documents them.
        pub const CHANNEL_KINDS: &[&str] = &[ $( $(#[$attr])* stringify!($name), )+ ];

        impl ChannelSpec {
            pub fn kind(&self) -> &'static str {
                match self {
                    $( $(#[$attr])* ChannelSpec::$variant(_) => stringify!($name), )+
                }
            }

            /// Deserializes the kind-specific keys of a channel table; `None`
            /// for an unknown kind.
            pub fn deserialize<'de, D>(kind: &str, de: D) -> Result<Option<Self>, D::Error>
            where
                D: ::serde::Deserializer<'de>,
            {
                $(
                    $(#[$attr])*
                    if kind == stringify!($name) {
                        return ::serde::Deserialize::deserialize(de)
                            .map(|c| Some(ChannelSpec::$variant(c)));
                    }
                )+
                Ok(None)
            }

            /// Pure checks of the kind's settings: every problem at once.
            pub fn validate(&self) -> Vec<$crate::spec::SpecProblem> {
                match self {
                    $( $(#[$attr])* ChannelSpec::$variant(c) =>
                        <$channel as $crate::channel::ChannelKind>::validate(c), )+
                }
            }

            /// Builds the runnable channel; an invalid spec fails with its
            /// first problem.
            pub fn build(
                &self,
                ctx: &$crate::channel::ChannelContext<'_>,
            ) -> Result<Built, $crate::spec::BuildError> {
                if let Some(p) = self.validate().into_iter().next() {
                    return Err(p.into());
                }
                Ok(match self {
                    $( $(#[$attr])* ChannelSpec::$variant(c) => Built::$variant(
                        <$channel as $crate::channel::ChannelKind>::build(c, ctx)?,
                    ), )+
                })
            }
        }

        /// A runnable channel, one variant per kind.
        pub enum Built {
            $( $(#[$attr])* $variant($channel), )+
        }

        impl Built {
            pub fn kind(&self) -> &'static str {
                match self {
                    $( $(#[$attr])* Built::$variant(_) => stringify!($name), )+
                }
            }

            pub async fn deliver(
                &self,
                alert: &$crate::channel::Alert,
            ) -> Result<(), $crate::channel::DeliveryError> {
                match self {
                    $( $(#[$attr])* Built::$variant(c) =>
                        $crate::channel::ChannelKind::deliver(c, alert).await, )+
                }
            }

            pub fn repost_interval(&self) -> Option<::std::time::Duration> {
                match self {
                    $( $(#[$attr])* Built::$variant(c) =>
                        $crate::channel::ChannelKind::repost_interval(c), )+
                }
            }
        }
    };
}

channel_kinds! {
    email: Email(email::EmailChannel),
    webhook: Webhook(webhook::WebhookChannel),
    slack: Slack(slack::SlackChannel),
    teams: Teams(teams::TeamsChannel),
    alertmanager: Alertmanager(alertmanager::AlertmanagerChannel),
    #[cfg(test)]
    test: Test(testkind::TestChannel),
}

/// A channel ready to deliver: built once from its spec, used for every alert.
pub struct Channel {
    name: String,
    inner: Built,
}

impl Channel {
    /// Builds the channel named `name`; `base_dir` (the directory of the file that
    /// defines it) resolves relative `*_file` and `ca_file` paths. Fails on an
    /// invalid spec (the first validation problem) or an unreadable `ca_file`.
    /// Secrets are not read here but at each delivery.
    pub fn new(name: &str, spec: &ChannelSpec, base_dir: &Path) -> Result<Channel, BuildError> {
        Channel::with_clock(name, spec, base_dir, Arc::new(SystemClock))
    }

    /// Like `new`, with the clock that dates what a channel computes at send time
    /// (Alertmanager's `endsAt` for firing alerts).
    pub fn with_clock(
        name: &str,
        spec: &ChannelSpec,
        base_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<Channel, BuildError> {
        let inner = spec.build(&ChannelContext { base_dir, clock })?;
        Ok(Channel {
            name: name.to_string(),
            inner,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    /// One delivery attempt. Safe to repeat with the same alert: every kind
    /// carries `alert.key` so that the receiver can recognise a repeat.
    pub async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        self.inner.deliver(alert).await
    }

    /// How often the outbox must deliver the latest firing alert of a problem
    /// again while it lasts, or `None` when once is enough. Alertmanager forgets
    /// an alert whose `endsAt` has passed, so its channel needs this (see
    /// `alertmanager::AlertmanagerConfig::repost_every`).
    pub fn repost_interval(&self) -> Option<Duration> {
        self.inner.repost_interval()
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the name and kind: the rest holds URLs that may be secrets.
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

/// Checks a channel's `timeout`.
pub(crate) fn check_timeout(timeout: Duration, problems: &mut Vec<SpecProblem>) {
    if timeout.is_zero() {
        problems.push(SpecProblem::new("timeout", "must be more than 0s"));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An alert with every field set, for the kinds' tests.
    pub(crate) fn sample() -> Alert {
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .unwrap()
        };
        Alert {
            key: "token-issuance:17:firing".into(),
            event: AlertEvent::Firing,
            severity: Severity::Critical,
            probe: "token-issuance".into(),
            kind: "token".into(),
            health_set: "PushNotifications.Proxy".into(),
            state: "unhealthy".into(),
            category: Some("auth".into()),
            summary: "ACS rejected the assertion (HTTP 401): AADSTS700027".into(),
            root_cause: Some("oauth-certificate".into()),
            started_at: at("2026-03-01T10:00:00Z"),
            ends_at: None,
            created_at: at("2026-03-01T10:15:00Z"),
            observations: BTreeMap::from([("latency_seconds".into(), 0.25)]),
        }
    }

    #[test]
    fn alert_round_trips_through_json_with_snake_case_names() {
        let mut a = sample();
        a.event = AlertEvent::FlappingStarted;
        let text = serde_json::to_string(&a).unwrap();
        assert!(text.contains(r#""event":"flapping_started""#), "{text}");
        assert!(text.contains(r#""severity":"critical""#), "{text}");
        assert!(
            text.contains(r#""started_at":"2026-03-01T10:00:00Z""#),
            "{text}"
        );
        let back: Alert = serde_json::from_str(&text).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn event_names_match_their_serde_names() {
        for e in [
            AlertEvent::Firing,
            AlertEvent::Resolved,
            AlertEvent::Reminder,
            AlertEvent::FlappingStarted,
            AlertEvent::FlappingStopped,
            AlertEvent::ChannelUnhealthy,
        ] {
            assert_eq!(
                serde_json::to_value(e).unwrap(),
                serde_json::Value::String(e.as_str().into())
            );
        }
    }

    #[test]
    fn redacted_errors_keep_their_class() {
        let e = DeliveryError::permanent("535 bad password hunter2").redacted(&["hunter2"]);
        assert_eq!(e.to_string(), "535 bad password <redacted>");
        assert!(!e.is_retryable());
    }

    #[tokio::test]
    async fn an_unreadable_secret_is_a_permanent_error_naming_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let missing = crate::secret::SecretSource::File(dir.path().join("nope"));
        let e = DeliveryError::from(missing.read("password").await.unwrap_err());
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("cannot read password file"), "{e}");
    }
}
