//! `kind = "alertmanager"`: alerts posted to Alertmanager's v2 API
//! (`POST <url>/api/v2/alerts`, a JSON array of one alert).
//!
//! Labels identify an alert in Alertmanager (it fingerprints the label set), so
//! they hold only what stays the same from the first firing to the resolution:
//! `alertname`, `probe`, `health_set`, `kind` and `severity`. The per-transition
//! idempotency key changes with every transition, so it is the annotation
//! `sonde_key`: as a label it would make the resolution a different alert and
//! leave the firing one open. `alertname` is `SondeProbe` for a probe's problem,
//! `SondeProbeFlapping` for flapping (a separate alert, so that it neither
//! resolves nor re-opens the problem) and `SondeChannelUnhealthy` for a channel.
//! `severity` stays a label because Alertmanager routes on it; so a resolution
//! must carry the severity of the alert it resolves, and a problem whose
//! severity changes becomes a new alert (the old one expires after the horizon).
//!
//! Like Prometheus, sonde sends firing alerts with an `endsAt` in the future
//! (now + 4 × `repost_every`) and the outbox re-posts them every `repost_every`
//! while the problem lasts (`Channel::repost_interval`): if sonde stops, the
//! alert resolves itself a few intervals later instead of firing forever. A
//! resolution sends `endsAt` = the time it resolved.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::webhook::{key_header, Poster};
use super::{Alert, AlertEvent, ChannelContext, ChannelKind, DeliveryError};
use crate::clock::Clock;
use crate::spec::{BuildError, SpecProblem};

/// The path of the v2 alerts API under the configured `url`.
pub const ALERTS_PATH: &str = "/api/v2/alerts";

/// How many re-post intervals a firing alert stays valid without a re-post.
pub const HORIZON_INTERVALS: u32 = 4;

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_repost() -> Duration {
    Duration::from_secs(60)
}

/// `Debug` is written by hand: the URL may carry credentials (userinfo).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Alertmanager's base URL, e.g. `http://127.0.0.1:9093` (a path prefix, as
    /// with `--web.route-prefix`, is kept).
    pub url: String,
    #[serde(default = "default_timeout", with = "crate::human::duration")]
    pub timeout: Duration,
    /// How often a firing alert is posted again while it lasts (default `1m`,
    /// like Prometheus' `--rules.alert.resend-delay`).
    #[serde(default = "default_repost", with = "crate::human::duration")]
    pub repost_every: Duration,
}

impl fmt::Debug for AlertmanagerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertmanagerConfig")
            .field("url", &crate::net::http::origin(&self.url))
            .field("timeout", &self.timeout)
            .field("repost_every", &self.repost_every)
            .finish()
    }
}

impl AlertmanagerConfig {
    pub fn validate(&self) -> Vec<SpecProblem> {
        let mut p = Vec::new();
        crate::net::http::check_url_key("url", &self.url, &mut p);
        if let Ok(u) = reqwest::Url::parse(&self.url) {
            if u.query().is_some() || u.fragment().is_some() {
                p.push(SpecProblem::new(
                    "url",
                    "must be Alertmanager's base URL, without query or fragment",
                ));
            }
        }
        super::check_timeout(self.timeout, &mut p);
        if self.repost_every < Duration::from_secs(1) {
            p.push(SpecProblem::new("repost_every", "must be at least 1s"));
        }
        p
    }
}

/// A runnable `alertmanager` channel.
pub struct AlertmanagerChannel {
    poster: Poster,
    repost_every: Duration,
    clock: Arc<dyn Clock>,
}

impl ChannelKind for AlertmanagerChannel {
    type Config = AlertmanagerConfig;

    fn validate(config: &AlertmanagerConfig) -> Vec<SpecProblem> {
        config.validate()
    }

    fn build(config: &AlertmanagerConfig, ctx: &ChannelContext<'_>) -> Result<Self, BuildError> {
        AlertmanagerChannel::new(config, ctx.clock.clone())
    }

    async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        AlertmanagerChannel::deliver(self, alert).await
    }

    fn repost_interval(&self) -> Option<Duration> {
        Some(self.repost_every)
    }
}

impl AlertmanagerChannel {
    pub fn new(cfg: &AlertmanagerConfig, clock: Arc<dyn Clock>) -> Result<Self, BuildError> {
        let url = format!("{}{ALERTS_PATH}", cfg.url.trim_end_matches('/'));
        Ok(AlertmanagerChannel {
            poster: Poster::new("alertmanager", &url, cfg.timeout)?,
            repost_every: cfg.repost_every,
            clock,
        })
    }

    pub fn repost_interval(&self) -> Duration {
        self.repost_every
    }

    pub async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let body = payload(alert, self.clock.now(), self.repost_every)
            .to_string()
            .into_bytes();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(super::webhook::KEY_HEADER, key_header(alert)?);
        self.poster.post(body, headers, &[]).await
    }
}

/// `alertname` by event family; see the module doc.
fn alertname(event: AlertEvent) -> &'static str {
    match event {
        AlertEvent::Firing | AlertEvent::Reminder | AlertEvent::Resolved => "SondeProbe",
        AlertEvent::FlappingStarted | AlertEvent::FlappingStopped => "SondeProbeFlapping",
        AlertEvent::ChannelUnhealthy => "SondeChannelUnhealthy",
        AlertEvent::Heartbeat => "SondeHeartbeat",
    }
}

/// `endsAt` for `alert` posted at `now`: the resolution time (never before
/// `startsAt`, which Alertmanager rejects) or now + the horizon.
pub fn ends_at(alert: &Alert, now: DateTime<Utc>, repost_every: Duration) -> DateTime<Utc> {
    if alert.event.is_resolution() {
        alert
            .ends_at
            .unwrap_or(alert.created_at)
            .max(alert.started_at)
    } else if let (AlertEvent::Heartbeat, Some(ends)) = (alert.event, alert.ends_at) {
        // A heartbeat sets its own horizon, a few of its beats ahead.
        ends
    } else {
        let horizon = repost_every.saturating_mul(HORIZON_INTERVALS);
        now + chrono::Duration::from_std(horizon).unwrap_or(chrono::Duration::hours(1))
    }
}

/// The JSON array posted for `alert` at `now`.
pub fn payload(alert: &Alert, now: DateTime<Utc>, repost_every: Duration) -> Value {
    let labels = json!({
        "alertname": alertname(alert.event),
        "probe": alert.probe,
        "health_set": alert.health_set,
        "kind": alert.kind,
        "severity": alert.severity.as_str(),
    });
    let mut annotations = Map::new();
    annotations.insert("summary".into(), alert.summary.clone().into());
    if let Some(c) = &alert.category {
        annotations.insert("category".into(), c.clone().into());
    }
    if let Some(r) = &alert.root_cause {
        annotations.insert("root_cause".into(), r.clone().into());
    }
    annotations.insert("state".into(), alert.state.clone().into());
    annotations.insert("event".into(), alert.event.as_str().into());
    annotations.insert("sonde_key".into(), alert.key.clone().into());
    let rfc3339 = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!([{
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(alert.started_at),
        "endsAt": rfc3339(ends_at(alert, now, repost_every)),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::tests::sample;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T10:20:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn firing_payload_has_stable_labels_and_the_key_as_annotation() {
        let v = payload(&sample(), now(), Duration::from_secs(60));
        let a = &v.as_array().unwrap()[0];
        assert_eq!(
            a["labels"],
            json!({
                "alertname": "SondeProbe",
                "probe": "token-issuance",
                "health_set": "PushNotifications.Proxy",
                "kind": "token",
                "severity": "critical",
            })
        );
        assert_eq!(a["annotations"]["sonde_key"], "token-issuance:17:firing");
        assert_eq!(a["annotations"]["category"], "auth");
        assert_eq!(a["annotations"]["root_cause"], "oauth-certificate");
        assert_eq!(a["startsAt"], "2026-03-01T10:00:00.000Z");
        assert_eq!(a["endsAt"], "2026-03-01T10:24:00.000Z", "now + 4 x 1m");
    }

    #[test]
    fn resolution_keeps_the_labels_and_ends_when_it_resolved() {
        let firing = payload(&sample(), now(), Duration::from_secs(60));
        let mut r = sample();
        r.event = AlertEvent::Resolved;
        r.key = "token-issuance:17:resolved".into();
        r.ends_at = Some(now());
        r.category = None;
        let v = payload(&r, now(), Duration::from_secs(60));
        assert_eq!(v[0]["labels"], firing[0]["labels"]);
        assert_eq!(v[0]["endsAt"], "2026-03-01T10:20:00.000Z");
        assert!(v[0]["annotations"].get("category").is_none());
        // A resolution dated before its start is clamped, not rejected.
        r.ends_at = Some(r.started_at - chrono::Duration::minutes(5));
        assert_eq!(
            payload(&r, now(), Duration::from_secs(60))[0]["endsAt"],
            "2026-03-01T10:00:00.000Z"
        );
    }

    #[test]
    fn flapping_and_channel_alerts_are_separate_alertnames() {
        let mut a = sample();
        a.event = AlertEvent::FlappingStarted;
        assert_eq!(
            payload(&a, now(), Duration::from_secs(60))[0]["labels"]["alertname"],
            "SondeProbeFlapping"
        );
        a.event = AlertEvent::ChannelUnhealthy;
        assert_eq!(
            payload(&a, now(), Duration::from_secs(60))[0]["labels"]["alertname"],
            "SondeChannelUnhealthy"
        );
    }

    #[test]
    fn validation() {
        let c = AlertmanagerConfig {
            url: "http://127.0.0.1:9093/?x=1".into(),
            timeout: Duration::ZERO,
            repost_every: Duration::from_millis(10),
        };
        let keys: Vec<&str> = c.validate().iter().map(|p| p.key).collect();
        assert_eq!(keys, ["url", "timeout", "repost_every"]);
    }
}
