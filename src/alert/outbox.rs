//! The dispatcher: one task per channel sends the channel's outbox in order,
//! retrying with exponential backoff and jitter. Alerts are marked delivered
//! only after the channel accepted them; a permanent refusal is logged and set
//! aside so it does not block the queue. A channel that cannot deliver for longer
//! than `unhealthy_after` raises a "channel unhealthy" alert on the other
//! channels, and a resolution when it recovers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Alert, AlertEvent, Channel, Severity};
use crate::clock::Clock;
use crate::store::Store;
use crate::telemetry::events::{AlertDeliveryAttempted, OutboxDepth};
use crate::telemetry::metrics::{DeliveryResult, Metrics};

/// First retry after this, doubling per attempt up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// One delivery attempt may take this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle channels look at the store at least this often.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// The wait before retry number `attempts` (1-based), with ±50 % jitter.
pub fn backoff(attempts: u32, jitter: f64) -> Duration {
    let base =
        FIRST_BACKOFF.saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(16)));
    let capped = base.min(MAX_BACKOFF);
    capped.mul_f64(0.5 + jitter.clamp(0.0, 1.0))
}

fn jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
}

pub struct Dispatcher {
    pub store: Arc<Store>,
    pub channels: Vec<Arc<Channel>>,
    pub clock: Arc<dyn Clock>,
    pub wake: Arc<Notify>,
    pub unhealthy_after: Duration,
    /// Deliveries and outbox depths, by channel.
    pub metrics: Arc<Metrics>,
}

impl Dispatcher {
    /// Runs until `shutdown`; an attempt in flight is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        let names: Vec<String> = self.channels.iter().map(|c| c.name().to_string()).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for channel in &self.channels {
            let others: Vec<String> = names
                .iter()
                .filter(|n| *n != channel.name())
                .cloned()
                .collect();
            tasks.spawn(channel_loop(
                channel.clone(),
                others,
                self.store.clone(),
                self.clock.clone(),
                self.wake.clone(),
                self.unhealthy_after,
                self.metrics.clone(),
                shutdown.clone(),
            ));
        }
        while tasks.join_next().await.is_some() {}
    }
}

fn unhealthy_alert(
    channel: &str,
    kind: &str,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    resolved: bool,
    pending: u64,
    last_error: &str,
) -> Alert {
    let event = if resolved {
        AlertEvent::Resolved
    } else {
        AlertEvent::ChannelUnhealthy
    };
    Alert {
        key: format!(
            "channel:{channel}:{}:{}",
            since.timestamp(),
            if resolved { "resolved" } else { "unhealthy" }
        ),
        event,
        severity: if resolved {
            Severity::Info
        } else {
            Severity::Critical
        },
        probe: format!("channel:{channel}"),
        kind: kind.to_string(),
        health_set: "sonde".to_string(),
        state: if resolved { "healthy" } else { "unhealthy" }.to_string(),
        category: Some("channel".to_string()),
        summary: if resolved {
            format!("alert channel {channel} delivers again")
        } else {
            format!("alert channel {channel} has not delivered for {}; {pending} alert(s) waiting; last error: {last_error}",
                crate::probe::certificate::human_duration((now - since).num_seconds()))
        },
        root_cause: None,
        started_at: since,
        ends_at: resolved.then_some(now),
        created_at: now,
        observations: BTreeMap::from([("pending_alerts".to_string(), pending as f64)]),
    }
}

#[allow(clippy::too_many_arguments)]
async fn channel_loop(
    channel: Arc<Channel>,
    others: Vec<String>,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    unhealthy_after: Duration,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let name = channel.name().to_string();
    metrics.register_channel(&name);
    // Since when the channel fails to deliver, and whether that was announced.
    let mut failing_since: Option<DateTime<Utc>> = None;
    let mut announced = false;
    let mut last_error = String::new();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if let Ok((depth, _)) = store.pending(&name) {
            OutboxDepth {
                channel: &name,
                depth,
            }
            .emit(&metrics);
        }
        let now = clock.now();
        let head = {
            let (store, name) = (store.clone(), name.clone());
            tokio::task::spawn_blocking(move || store.next_due(&name, now.timestamp())).await
        };
        let head = match head {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                tracing::error!(channel = %name, error = %e, "outbox unreadable");
                None
            }
            Err(_) => None,
        };
        let Some(entry) = head else {
            // Nothing due: sleep until the head's retry time, a wake-up, or the poll.
            let wait = match store.next_attempt_at(&name) {
                Ok(Some(at)) => {
                    Duration::from_secs(at.saturating_sub(now.timestamp()).max(0) as u64)
                        .min(IDLE_POLL)
                }
                _ => IDLE_POLL,
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            check_unhealthy(
                &channel,
                &others,
                &store,
                &clock,
                unhealthy_after,
                &mut failing_since,
                &mut announced,
                &last_error,
            );
            continue;
        };
        let alert: Alert = match serde_json::from_str(&entry.alert_json) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(channel = %name, key = %entry.key, error = %e, "outbox entry unreadable; set aside");
                let _ = store.mark_failed(entry.id, &format!("unreadable: {e}"), None);
                continue;
            }
        };
        let result = tokio::select! {
            r = tokio::time::timeout(ATTEMPT_TIMEOUT, channel.deliver(&alert)) => r,
            _ = shutdown.cancelled() => return,
        };
        let now = clock.now();
        match result {
            Ok(Ok(())) => {
                let _ = store.mark_delivered(entry.id, now.timestamp());
                AlertDeliveryAttempted {
                    channel: &name,
                    key: &entry.key,
                    attempts: entry.attempts + 1,
                    result: DeliveryResult::Delivered,
                    error: "",
                    retry_in: None,
                }
                .emit(&metrics);
                if failing_since.take().is_some() && announced {
                    announced = false;
                    let since = now;
                    let a = unhealthy_alert(&name, channel.kind(), since, now, true, 0, "");
                    enqueue_to(&store, &others, &a, now);
                    wake.notify_waiters();
                }
                last_error.clear();
            }
            Ok(Err(e)) if e.is_retryable() => {
                let wait = e
                    .retry_after()
                    .unwrap_or_else(|| backoff(entry.attempts + 1, jitter()));
                last_error = e.message().chars().take(300).collect();
                let at = now.timestamp() + wait.as_secs().max(1) as i64;
                let _ = store.mark_failed(entry.id, &last_error, Some(at));
                failing_since.get_or_insert(now);
                AlertDeliveryAttempted {
                    channel: &name,
                    key: &entry.key,
                    attempts: entry.attempts + 1,
                    result: DeliveryResult::Failed,
                    error: &last_error,
                    retry_in: Some(wait),
                }
                .emit(&metrics);
            }
            Ok(Err(e)) => {
                let _ = store.mark_failed(entry.id, e.message(), None);
                AlertDeliveryAttempted {
                    channel: &name,
                    key: &entry.key,
                    attempts: entry.attempts + 1,
                    result: DeliveryResult::Refused,
                    error: e.message(),
                    retry_in: None,
                }
                .emit(&metrics);
            }
            Err(_) => {
                last_error = format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs());
                let wait = backoff(entry.attempts + 1, jitter());
                let _ = store.mark_failed(
                    entry.id,
                    &last_error,
                    Some(now.timestamp() + wait.as_secs().max(1) as i64),
                );
                failing_since.get_or_insert(now);
                AlertDeliveryAttempted {
                    channel: &name,
                    key: &entry.key,
                    attempts: entry.attempts + 1,
                    result: DeliveryResult::Timeout,
                    error: &last_error,
                    retry_in: Some(wait),
                }
                .emit(&metrics);
            }
        }
        check_unhealthy(
            &channel,
            &others,
            &store,
            &clock,
            unhealthy_after,
            &mut failing_since,
            &mut announced,
            &last_error,
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn check_unhealthy(
    channel: &Channel,
    others: &[String],
    store: &Store,
    clock: &Arc<dyn Clock>,
    unhealthy_after: Duration,
    failing_since: &mut Option<DateTime<Utc>>,
    announced: &mut bool,
    last_error: &str,
) {
    let Some(since) = *failing_since else { return };
    let now = clock.now();
    if *announced || (now - since).to_std().unwrap_or_default() < unhealthy_after {
        return;
    }
    let pending = store.pending(channel.name()).map(|(n, _)| n).unwrap_or(0);
    if pending == 0 {
        *failing_since = None;
        return;
    }
    *announced = true;
    let a = unhealthy_alert(
        channel.name(),
        channel.kind(),
        since,
        now,
        false,
        pending,
        last_error,
    );
    tracing::error!(channel = %channel.name(), pending, "alert channel unhealthy");
    enqueue_to(store, others, &a, now);
}

fn enqueue_to(store: &Store, channels: &[String], alert: &Alert, now: DateTime<Utc>) {
    let Ok(json) = serde_json::to_string(alert) else {
        return;
    };
    let rows: Vec<(String, String, String)> = channels
        .iter()
        .map(|c| (c.clone(), alert.key.clone(), json.clone()))
        .collect();
    if let Err(e) = store.enqueue(&rows, now.timestamp()) {
        tracing::error!(error = %e, "cannot queue the channel-health alert");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        assert_eq!(backoff(1, 0.5), Duration::from_secs(1));
        assert_eq!(backoff(2, 0.5), Duration::from_secs(2));
        assert_eq!(backoff(4, 0.5), Duration::from_secs(8));
        assert_eq!(backoff(40, 0.5), MAX_BACKOFF);
        assert_eq!(backoff(3, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(6));
    }
}
