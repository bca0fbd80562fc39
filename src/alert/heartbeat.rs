//! The dead-man's switch (`[agent.heartbeat]`): every `every`, an alert that
//! always fires (`alertname="SondeHeartbeat"`) is posted to each heartbeat
//! channel, with an `endsAt` `BEATS_AHEAD` beats ahead, so that Alertmanager
//! resolves it soon after the agent stops (its absence is the page: the
//! Watchdog pattern); and `url`, when set, gets an HTTP GET (healthchecks-style).
//! Beats do not go through the outbox: a beat that failed is not worth sending
//! late, the next one replaces it. The config refuses heartbeat channels of
//! other kinds than alertmanager.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::channel::{Alert, AlertEvent, Channel, Severity};
use crate::clock::Clock;
use crate::config::HeartbeatConfig;

/// How many beats ahead a heartbeat's `endsAt` is.
pub(crate) const BEATS_AHEAD: u32 = 3;
/// One beat's delivery or GET may take this long (or `every`, if shorter).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The heartbeat alert posted at `now` by an agent started at `started`.
pub(crate) fn alert(every: Duration, started: DateTime<Utc>, now: DateTime<Utc>) -> Alert {
    let ahead = chrono::Duration::from_std(every.saturating_mul(BEATS_AHEAD))
        .unwrap_or(chrono::Duration::hours(1));
    Alert {
        key: format!("heartbeat:{}", now.timestamp_millis()),
        event: AlertEvent::Heartbeat,
        severity: Severity::Info,
        probe: "sonde".into(),
        kind: "heartbeat".into(),
        health_set: "sonde".into(),
        state: "healthy".into(),
        category: None,
        summary:
            "the sonde agent is running; this alert always fires, its absence means sonde stopped"
                .into(),
        root_cause: None,
        started_at: started,
        ends_at: Some(now + ahead),
        created_at: now,
        observations: BTreeMap::new(),
    }
}

/// Beats until `shutdown`: `channels` are the heartbeat's (alertmanager)
/// channels, `http` the client for `config.url` (without one, no GET).
pub(crate) async fn run(
    config: HeartbeatConfig,
    channels: Vec<Arc<Channel>>,
    http: Option<reqwest::Client>,
    clock: Arc<dyn Clock>,
    started: DateTime<Utc>,
    shutdown: CancellationToken,
) {
    let mut beat = tokio::time::interval(config.every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timeout = ATTEMPT_TIMEOUT.min(config.every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = beat.tick() => {}
        }
        let a = alert(config.every, started, clock.now());
        for channel in &channels {
            match tokio::time::timeout(timeout, channel.deliver(&a)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(channel = %channel.name(), error = %e, "heartbeat not delivered")
                }
                Err(_) => {
                    tracing::warn!(channel = %channel.name(), "heartbeat not delivered in time")
                }
            }
        }
        if let (Some(url), Some(http)) = (&config.url, &http) {
            // The URL may carry a token (a check's id): only its origin is logged.
            let origin = crate::net::http::origin(url);
            match tokio::time::timeout(timeout, http.get(url).send()).await {
                Ok(Ok(r)) if r.status().is_success() => {}
                Ok(Ok(r)) => {
                    tracing::warn!(url = %origin, status = r.status().as_u16(), "heartbeat GET refused")
                }
                Ok(Err(e)) => tracing::warn!(
                    url = %origin,
                    error = %crate::net::http::error_chain(&e),
                    "heartbeat GET failed"
                ),
                Err(_) => tracing::warn!(url = %origin, "heartbeat GET got no answer in time"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beat_fires_and_ends_a_few_beats_ahead() {
        let started = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let now = started + chrono::Duration::seconds(90);
        let a = alert(Duration::from_secs(60), started, now);
        assert_eq!(a.event, AlertEvent::Heartbeat);
        assert_eq!(a.ends_at, Some(now + chrono::Duration::seconds(180)));
        let body = crate::channel::alertmanager::payload(&a, now, Duration::from_secs(300));
        assert_eq!(body[0]["labels"]["alertname"], "SondeHeartbeat");
        assert_eq!(body[0]["endsAt"], "2023-11-14T22:17:50.000Z");
    }
}
