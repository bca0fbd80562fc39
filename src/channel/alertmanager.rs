//! `kind = "alertmanager"`: alerts posted to Alertmanager's v2 API
//! (`POST <url>/api/v2/alerts`, a JSON array of one alert).
//!
//! `url` names one Alertmanager, `urls` every node of an Alertmanager cluster.
//! Like Prometheus, sonde posts each alert to every node, concurrently and each
//! with the channel's `timeout`: the alert is delivered when at least one node
//! took it (the cluster's gossip shares it with the others), so a node that is
//! down neither holds the others back nor fails the delivery; each node's
//! failure is logged with its `scheme://host[:port]` only. When no node took
//! it, the delivery fails, retryable if any node may take it on another attempt.
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
//! The labels are a pure function of the probe and the event: nothing about the
//! agent that sends them (no host name, no instance, no time). So two agents
//! running the same probes produce the same alert, and Alertmanager
//! de-duplicates them. What may differ between agents (`summary`, `sonde_key`,
//! `startsAt`) is in the annotations and timestamps, where Alertmanager keeps
//! the earliest start and the latest report's annotations.
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
pub(crate) const ALERTS_PATH: &str = "/api/v2/alerts";

/// How many re-post intervals a firing alert stays valid without a re-post.
pub(crate) const HORIZON_INTERVALS: u32 = 4;

/// The most nodes `urls` may list.
pub(crate) const MAX_NODES: usize = 32;

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_repost() -> Duration {
    Duration::from_secs(60)
}

/// `Debug` is written by hand: the URLs may carry credentials (userinfo).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Alertmanager's base URL, e.g. `http://127.0.0.1:9093` (a path prefix, as
    /// with `--web.route-prefix`, is kept). Empty when `urls` is given instead.
    #[serde(default)]
    pub url: String,
    /// The base URLs of every node of an Alertmanager cluster, instead of `url`.
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default = "default_timeout", with = "crate::human::duration")]
    pub timeout: Duration,
    /// How often a firing alert is posted again while it lasts (default `1m`,
    /// like Prometheus' `--rules.alert.resend-delay`).
    #[serde(default = "default_repost", with = "crate::human::duration")]
    pub repost_every: Duration,
}

impl fmt::Debug for AlertmanagerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self
            .urls
            .iter()
            .map(|u| crate::net::http::origin(u))
            .collect();
        f.debug_struct("AlertmanagerConfig")
            .field("url", &crate::net::http::origin(&self.url))
            .field("urls", &urls)
            .field("timeout", &self.timeout)
            .field("repost_every", &self.repost_every)
            .finish()
    }
}

impl AlertmanagerConfig {
    /// The nodes' base URLs: `url` alone, or `urls`.
    pub(crate) fn nodes(&self) -> Vec<&str> {
        if self.url.is_empty() {
            self.urls.iter().map(String::as_str).collect()
        } else {
            vec![self.url.as_str()]
        }
    }

    pub(crate) fn validate(&self) -> Vec<SpecProblem> {
        let mut p = Vec::new();
        match (self.url.is_empty(), self.urls.is_empty()) {
            (true, true) => p.push(SpecProblem::new(
                "url",
                "give `url` (one Alertmanager) or `urls` (every node of a cluster)",
            )),
            (false, false) => p.push(SpecProblem::new("urls", "give `url` or `urls`, not both")),
            (false, true) => check_base_url("url", &self.url, &mut p),
            (true, false) => {
                if self.urls.len() > MAX_NODES {
                    p.push(SpecProblem::new(
                        "urls",
                        format!("lists {} nodes; at most {MAX_NODES}", self.urls.len()),
                    ));
                }
                for (i, url) in self.urls.iter().enumerate() {
                    let mut found = Vec::new();
                    check_base_url("urls", url, &mut found);
                    p.extend(found.into_iter().map(|f| {
                        SpecProblem::new("urls", format!("item {}: {}", i + 1, f.message))
                    }));
                    if self.urls[..i].contains(url) {
                        p.push(SpecProblem::new(
                            "urls",
                            format!("item {}: lists the same node as an earlier item", i + 1),
                        ));
                    }
                }
            }
        }
        super::check_timeout(self.timeout, &mut p);
        if self.repost_every < Duration::from_secs(1) {
            p.push(SpecProblem::new("repost_every", "must be at least 1s"));
        }
        p
    }
}

/// An Alertmanager base URL: http(s), with a host, no query or fragment.
fn check_base_url(key: &'static str, url: &str, p: &mut Vec<SpecProblem>) {
    crate::net::http::check_url_key(key, url, p);
    if let Ok(u) = reqwest::Url::parse(url) {
        if u.query().is_some() || u.fragment().is_some() {
            p.push(SpecProblem::new(
                key,
                "must be Alertmanager's base URL, without query or fragment",
            ));
        }
    }
}

/// One Alertmanager node: where its alerts API is, and how it is shown in logs.
struct Node {
    poster: Poster,
    /// `scheme://host[:port]`, all a log line shows of the node's URL.
    shown: String,
}

/// A runnable `alertmanager` channel.
pub struct AlertmanagerChannel {
    nodes: Vec<Node>,
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
    pub(crate) fn new(cfg: &AlertmanagerConfig, clock: Arc<dyn Clock>) -> Result<Self, BuildError> {
        let key = if cfg.url.is_empty() { "urls" } else { "url" };
        let nodes = cfg
            .nodes()
            .into_iter()
            .map(|base| {
                let url = format!("{}{ALERTS_PATH}", base.trim_end_matches('/'));
                let poster = Poster::new("alertmanager", &url, cfg.timeout).map_err(|e| {
                    BuildError::new(if e.key.is_empty() { "" } else { key }, e.message)
                })?;
                Ok(Node {
                    poster,
                    shown: crate::net::http::origin(base),
                })
            })
            .collect::<Result<Vec<Node>, BuildError>>()?;
        if nodes.is_empty() {
            return Err(BuildError::new(
                "url",
                "give `url` (one Alertmanager) or `urls` (every node of a cluster)",
            ));
        }
        Ok(AlertmanagerChannel {
            nodes,
            repost_every: cfg.repost_every,
            clock,
        })
    }

    /// Posts `alert` to every node at once; see the module doc for when that
    /// counts as delivered.
    pub(crate) async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let body = payload(alert, self.clock.now(), self.repost_every)
            .to_string()
            .into_bytes();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(super::webhook::KEY_HEADER, key_header(alert)?);
        let results = futures::future::join_all(
            self.nodes
                .iter()
                .map(|node| node.poster.post(body.clone(), headers.clone(), &[])),
        )
        .await;
        let took = results.iter().filter(|r| r.is_ok()).count();
        let mut errors = Vec::new();
        for (node, result) in self.nodes.iter().zip(results) {
            if let Err(e) = result {
                if took > 0 {
                    tracing::warn!(
                        node = %node.shown,
                        key = %alert.key,
                        error = %e,
                        "an Alertmanager node did not take the alert; {took} other(s) did"
                    );
                }
                errors.push(e);
            }
        }
        if took > 0 {
            return Ok(());
        }
        Err(none_took(errors))
    }
}

/// The error when no node took the alert: a single node's own error; for a
/// cluster, every node's, retryable when any of them is (with the earliest
/// `Retry-After` when every retryable one gave one).
fn none_took(mut errors: Vec<DeliveryError>) -> DeliveryError {
    if errors.len() == 1 {
        if let Some(e) = errors.pop() {
            return e;
        }
    }
    let messages: Vec<&str> = errors.iter().map(DeliveryError::message).collect();
    let message = format!(
        "alertmanager: no node took the alert: {}",
        messages.join("; ")
    );
    let retryable: Vec<&DeliveryError> = errors.iter().filter(|e| e.is_retryable()).collect();
    if retryable.is_empty() {
        return DeliveryError::Permanent { message };
    }
    let retry_after = retryable
        .iter()
        .map(|e| e.retry_after())
        .collect::<Option<Vec<Duration>>>()
        .and_then(|hints| hints.into_iter().min());
    DeliveryError::Retryable {
        message,
        retry_after,
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
pub(crate) fn ends_at(alert: &Alert, now: DateTime<Utc>, repost_every: Duration) -> DateTime<Utc> {
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
pub(crate) fn payload(alert: &Alert, now: DateTime<Utc>, repost_every: Duration) -> Value {
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

    fn config(url: &str, urls: &[&str]) -> AlertmanagerConfig {
        AlertmanagerConfig {
            url: url.into(),
            urls: urls.iter().map(|u| u.to_string()).collect(),
            timeout: Duration::from_secs(2),
            repost_every: Duration::from_secs(60),
        }
    }

    fn problems(c: &AlertmanagerConfig) -> Vec<(&'static str, String)> {
        c.validate()
            .into_iter()
            .map(|p| (p.key, p.message))
            .collect()
    }

    #[test]
    fn exactly_one_of_url_and_urls() {
        assert!(problems(&config("http://127.0.0.1:9093", &[])).is_empty());
        assert!(problems(&config("", &["http://a:9093", "http://b:9093/am/"])).is_empty());
        assert_eq!(
            problems(&config("", &[])),
            [(
                "url",
                "give `url` (one Alertmanager) or `urls` (every node of a cluster)".to_string()
            )]
        );
        assert_eq!(
            problems(&config("http://a:9093", &["http://b:9093"])),
            [("urls", "give `url` or `urls`, not both".to_string())]
        );
    }

    #[test]
    fn every_node_url_is_checked_and_named_by_its_place() {
        let c = config(
            "",
            &[
                "http://a:9093",
                "ftp://b:9093",
                "http://c:9093/?token=s3cret",
                "http://a:9093",
            ],
        );
        let found = problems(&c);
        assert_eq!(
            found,
            [
                ("urls", "item 2: must be an http(s) URL".to_string()),
                (
                    "urls",
                    "item 3: must be Alertmanager's base URL, without query or fragment"
                        .to_string()
                ),
                (
                    "urls",
                    "item 4: lists the same node as an earlier item".to_string()
                ),
            ]
        );
        assert!(!format!("{found:?}{c:?}").contains("s3cret"));
        let many: Vec<String> = (0..=MAX_NODES)
            .map(|i| format!("http://n{i}:9093"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            problems(&config("", &many)),
            [(
                "urls",
                format!("lists {} nodes; at most {MAX_NODES}", MAX_NODES + 1)
            )]
        );
    }

    /// A node on 127.0.0.1: answers every request with `status` (`None`: accepts
    /// and never answers) and counts the requests it read.
    async fn node(status: Option<u16>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16384];
                    let mut got = Vec::new();
                    // Headers, then the body its content-length announces.
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                        let text = String::from_utf8_lossy(&got).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>().unwrap())
                                })
                                .unwrap_or(0);
                            if got.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    match status {
                        Some(code) => {
                            let head = format!(
                                "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            );
                            let _ = stream.write_all(head.as_bytes()).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(60)).await,
                    }
                });
            }
        });
        (format!("http://127.0.0.1:{}", addr.port()), seen)
    }

    /// A loopback URL where nothing listens.
    fn down() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    }

    fn channel(urls: &[&str]) -> AlertmanagerChannel {
        let _ = rustls::crypto::ring::default_provider().install_default();
        AlertmanagerChannel::new(&config("", urls), Arc::new(crate::clock::SystemClock)).unwrap()
    }

    #[tokio::test]
    async fn one_node_taking_the_alert_is_enough() {
        use std::sync::atomic::Ordering;
        let (up, seen) = node(Some(200)).await;
        let (refusing, refused) = node(Some(400)).await;
        let dead = down();
        channel(&[&dead, &up, &refusing])
            .deliver(&sample())
            .await
            .unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        assert_eq!(refused.load(Ordering::SeqCst), 1, "every node gets it");
    }

    #[tokio::test]
    async fn a_hanging_node_does_not_hold_the_others_back() {
        use std::sync::atomic::Ordering;
        let (hanging, _) = node(None).await;
        let (up, seen) = node(Some(200)).await;
        let ch = channel(&[&hanging, &up]);
        let start = std::time::Instant::now();
        let delivering = tokio::spawn(async move { ch.deliver(&sample()).await });
        // The live node has the alert long before the hanging one times out.
        while seen.load(Ordering::SeqCst) == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "posted one by one"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        delivering.await.unwrap().unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "each node has the timeout"
        );
    }

    #[tokio::test]
    async fn no_node_taking_it_is_retryable_unless_every_node_refused() {
        let (bad, _) = node(Some(400)).await;
        let (also_bad, _) = node(Some(422)).await;
        let dead = down();
        let e = channel(&[&bad, &dead])
            .deliver(&sample())
            .await
            .unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(
            e.message().starts_with(
                "alertmanager: no node took the alert: alertmanager http://127.0.0.1:"
            ),
            "{e}"
        );
        assert!(e.message().contains("HTTP 400"), "{e}");
        let e = channel(&[&bad, &also_bad])
            .deliver(&sample())
            .await
            .unwrap_err();
        assert!(!e.is_retryable(), "{e}");
        // A single node's error is its own, as before `urls`.
        let e = channel(&[&dead]).deliver(&sample()).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(
            e.message().starts_with("alertmanager http://127.0.0.1:"),
            "{e}"
        );
    }

    #[test]
    fn earliest_retry_after_only_when_every_retryable_node_gave_one() {
        let hint = |s| DeliveryError::Retryable {
            message: "x".into(),
            retry_after: Some(Duration::from_secs(s)),
        };
        let e = none_took(vec![hint(30), hint(5), DeliveryError::permanent("p")]);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(5)));
        let e = none_took(vec![hint(30), DeliveryError::retryable("r")]);
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), None);
    }

    #[test]
    fn labels_are_the_same_whichever_agent_sends_them() {
        // Two agents see the same incident at different times, number it
        // differently and word it differently: only annotations and times differ.
        let a = sample();
        let mut b = sample();
        b.key = "token-issuance:3:firing".into();
        b.summary = "ACS rejected the assertion (HTTP 401) after 0.3 s".into();
        b.started_at += chrono::Duration::seconds(7);
        b.created_at += chrono::Duration::seconds(7);
        b.observations.insert("latency_seconds".into(), 0.3);
        let later = now() + chrono::Duration::seconds(9);
        let pa = payload(&a, now(), Duration::from_secs(60));
        let pb = payload(&b, later, Duration::from_secs(60));
        assert_eq!(pa[0]["labels"], pb[0]["labels"]);
        assert_ne!(pa[0]["annotations"], pb[0]["annotations"]);
    }

    #[test]
    fn validation() {
        let c = AlertmanagerConfig {
            url: "http://127.0.0.1:9093/?x=1".into(),
            urls: Vec::new(),
            timeout: Duration::ZERO,
            repost_every: Duration::from_millis(10),
        };
        let keys: Vec<&str> = c.validate().iter().map(|p| p.key).collect();
        assert_eq!(keys, ["url", "timeout", "repost_every"]);
    }
}
