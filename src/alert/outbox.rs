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

use crate::alert::pending::PendingWrites;
use crate::channel::{Alert, AlertEvent, Channel, Severity};
use crate::clock::Clock;
use crate::store::{OutboxEntry, PendingWrite, Store};
use crate::telemetry::events::{AlertDeliveryAttempted, OutboxDepth, TaskRestarted};
use crate::telemetry::metrics::{DeliveryResult, Metrics};

/// First retry after this, doubling per attempt up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// One delivery attempt may take this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle channels look at the store at least this often.
const IDLE_POLL: Duration = Duration::from_secs(5);
/// Entries read from the store at once.
const BATCH: usize = 64;

/// The wait before retry number `attempts` (1-based), with ±50 % jitter.
pub(crate) fn backoff(attempts: u32, jitter: f64) -> Duration {
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

/// A new channel set for a running dispatcher: a channel named in `unchanged`
/// keeps its loop; others start afresh; a channel absent from `channels` stops
/// after its in-flight attempt, its undelivered alerts staying in the store.
pub struct ReplaceChannels {
    pub channels: Vec<Arc<Channel>>,
    pub unchanged: std::collections::HashSet<String>,
}

impl Dispatcher {
    /// Runs until `shutdown`; an attempt in flight is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        let (_keep, updates) = tokio::sync::mpsc::channel(1);
        self.run_replaceable(updates, shutdown).await
    }

    /// `run`, replacing the channel set with each `ReplaceChannels` received.
    pub async fn run_replaceable(
        self,
        mut updates: tokio::sync::mpsc::Receiver<ReplaceChannels>,
        shutdown: CancellationToken,
    ) {
        (self.run_with_pending(None, &mut updates, shutdown, Default::default())).await
    }

    /// `run_replaceable`, also sending the alerts `pending` holds before the
    /// store takes them (the agent's writes go through it), and queuing the
    /// channel-health alerts there.
    ///
    /// Each channel's loop is supervised on its own under `restart`: one that
    /// panics or ends unasked is restarted after a backoff, logged and counted
    /// (`sonde_task_restarts_total{task="channel:NAME"}`) while the other
    /// channels go on; one that keeps failing (more than `max_restarts` within
    /// `window`) takes the dispatcher down, whose own supervisor restarts every
    /// channel or stops the agent. A restarted loop starts from its outbox.
    pub(crate) async fn run_with_pending(
        self,
        pending: Option<Arc<PendingWrites>>,
        updates: &mut tokio::sync::mpsc::Receiver<ReplaceChannels>,
        shutdown: CancellationToken,
        restart: crate::supervise::Policy,
    ) {
        let loops = Loops {
            names: Arc::default(),
            store: self.store.clone(),
            pending,
            clock: self.clock.clone(),
            wake: self.wake.clone(),
            unhealthy_after: self.unhealthy_after,
            metrics: self.metrics.clone(),
            shutdown: shutdown.clone(),
        };
        let mut tasks = tokio::task::JoinSet::new();
        let mut running: std::collections::HashMap<String, Running> =
            std::collections::HashMap::new();
        // One loop per channel name at a time: a changed channel's new loop waits
        // for the old one's in-flight attempt, so no entry is sent twice at once.
        let mut turns: std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>> =
            std::collections::HashMap::new();
        let mut start =
            |update: ReplaceChannels,
             tasks: &mut tokio::task::JoinSet<()>,
             running: &mut std::collections::HashMap<String, Running>| {
                *loops.names.write().unwrap_or_else(|e| e.into_inner()) = update
                    .channels
                    .iter()
                    .map(|c| c.name().to_string())
                    .collect();
                let mut next = std::collections::HashMap::new();
                for channel in update.channels {
                    let name = channel.name().to_string();
                    if let Some(old) = running.remove(&name) {
                        if update.unchanged.contains(&name) {
                            next.insert(name, old);
                            continue;
                        }
                        old.stop.cancel();
                    }
                    let stop = shutdown.child_token();
                    let turn = turns.entry(name.clone()).or_default().clone();
                    loops.metrics.register_task(&format!("channel:{name}"));
                    let task = loops.spawn(
                        tasks,
                        channel.clone(),
                        turn.clone(),
                        stop.clone(),
                        Duration::ZERO,
                    );
                    next.insert(
                        name,
                        Running {
                            stop,
                            channel,
                            turn,
                            task,
                            restarts: Vec::new(),
                        },
                    );
                }
                for (_, old) in running.drain() {
                    old.stop.cancel();
                }
                *running = next;
            };
        start(
            ReplaceChannels {
                channels: self.channels.clone(),
                unchanged: Default::default(),
            },
            &mut tasks,
            &mut running,
        );
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                update = updates.recv() => match update {
                    Some(update) => start(update, &mut tasks, &mut running),
                    None => {
                        shutdown.cancelled().await;
                        break;
                    }
                },
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let (id, reason) = match done {
                        Ok((id, ())) => (id, "ended".to_string()),
                        Err(e) if e.is_panic() => {
                            let id = e.id();
                            (id, crate::human::text::panic_text(e.into_panic()))
                        }
                        Err(e) => (e.id(), "cancelled".to_string()),
                    };
                    // A replaced or removed channel's loop ended as asked.
                    let Some((name, r)) = running.iter_mut().find(|(_, r)| r.task == id) else {
                        continue;
                    };
                    if r.stop.is_cancelled() || shutdown.is_cancelled() {
                        continue;
                    }
                    let now = tokio::time::Instant::now();
                    r.restarts.retain(|t| now.duration_since(*t) < restart.window);
                    r.restarts.push(now);
                    let n = u32::try_from(r.restarts.len()).unwrap_or(u32::MAX);
                    if n > restart.max_restarts {
                        panic!(
                            "channel {name} kept failing ({} restarts within {}s; last: {reason})",
                            n - 1,
                            restart.window.as_secs()
                        );
                    }
                    let backoff = restart.backoff(n);
                    TaskRestarted {
                        task: &format!("channel:{name}"),
                        reason: &reason,
                        backoff,
                        recent: n,
                    }
                    .emit(&self.metrics);
                    r.task = loops.spawn(
                        &mut tasks,
                        r.channel.clone(),
                        r.turn.clone(),
                        r.stop.clone(),
                        backoff,
                    );
                }
            }
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// A channel's current loop.
struct Running {
    stop: CancellationToken,
    channel: Arc<Channel>,
    turn: Arc<tokio::sync::Mutex<()>>,
    task: tokio::task::Id,
    /// Its restarts within the restart policy's window.
    restarts: Vec<tokio::time::Instant>,
}

/// What every channel loop of a dispatcher shares.
#[derive(Clone)]
struct Loops {
    /// The names of the current channel set (where health alerts go).
    names: Arc<std::sync::RwLock<Vec<String>>>,
    store: Arc<Store>,
    pending: Option<Arc<PendingWrites>>,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    unhealthy_after: Duration,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl Loops {
    /// Starts `channel`'s loop after `delay` (a restart's backoff).
    fn spawn(
        &self,
        tasks: &mut tokio::task::JoinSet<()>,
        channel: Arc<Channel>,
        turn: Arc<tokio::sync::Mutex<()>>,
        stop: CancellationToken,
        delay: Duration,
    ) -> tokio::task::Id {
        let run = channel_loop(channel, turn, self.clone(), stop.clone());
        tasks
            .spawn(async move {
                if !delay.is_zero() {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                run.await
            })
            .id()
    }
}

/// The "channel unhealthy" alert of `channel`, failing since `since`, or with
/// `resolved` its resolution ("delivers again"), which keeps `since` as its
/// start and ends at `now`.
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
                crate::human::format_duration((now - since).num_seconds()))
        },
        root_cause: None,
        started_at: since,
        ends_at: resolved.then_some(now),
        created_at: now,
        observations: BTreeMap::from([("pending_alerts".to_string(), pending as f64)]),
    }
}

/// A channel's delivery state between attempts.
struct Health {
    /// Since when the channel fails to deliver.
    failing_since: Option<DateTime<Utc>>,
    /// Whether that was announced on the other channels.
    announced: bool,
    last_error: String,
}

async fn channel_loop(
    channel: Arc<Channel>,
    turn: Arc<tokio::sync::Mutex<()>>,
    shared: Loops,
    stop: CancellationToken,
) {
    let Loops {
        names,
        store,
        pending,
        clock,
        wake,
        unhealthy_after,
        metrics,
        shutdown,
    } = shared;
    let _turn = tokio::select! {
        t = turn.lock_owned() => t,
        _ = stop.cancelled() => return,
    };
    let name = channel.name().to_string();
    // The other channels of the current set, where health alerts go.
    let others = || -> Vec<String> {
        names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|n| **n != name)
            .cloned()
            .collect()
    };
    metrics.register_channel(&name);
    let mut health = Health {
        failing_since: None,
        announced: false,
        last_error: String::new(),
    };
    while !stop.is_cancelled() {
        #[cfg(test)]
        tests::injected_panic(&name);
        // Alerts the store has not taken yet go first: alerting does not wait
        // on the disk.
        if let Some(pending) = &pending {
            for alert in pending.unsent(&name, tokio::time::Instant::now()) {
                let entry = OutboxEntry {
                    id: 0,
                    channel: name.clone(),
                    key: alert.key.clone(),
                    alert_json: alert.json.clone(),
                    attempts: alert.attempts,
                    created_at: 0,
                };
                let delivered = tokio::select! {
                    d = deliver_one(&channel, None, &clock, &metrics, &entry, &mut health) => d,
                    _ = shutdown.cancelled() => return,
                };
                match delivered {
                    Delivery::Sent => {
                        if !pending.delivered(&alert) {
                            // It reached the store while it was being sent.
                            let now = clock.now().timestamp();
                            if let Err(e) = store.mark_delivered_key(&name, &alert.key, now) {
                                tracing::error!(channel = %name, error = %e, "cannot mark an alert delivered");
                            }
                        }
                    }
                    // Refused: the store sets it aside once it has it.
                    Delivery::SetAside => pending.failed(&alert, MAX_BACKOFF),
                    Delivery::Retry => {
                        pending.failed(&alert, backoff(alert.attempts + 1, jitter()));
                        break;
                    }
                }
                if stop.is_cancelled() {
                    return;
                }
            }
        }
        if let Ok((depth, _)) = store.pending(&name) {
            OutboxDepth {
                channel: &name,
                depth,
            }
            .emit(&metrics);
        }
        let now = clock.now();
        let batch = match store.due_batch(&name, now.timestamp(), BATCH) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(channel = %name, error = %e, "outbox unreadable");
                Vec::new()
            }
        };
        if batch.is_empty() {
            // Nothing due: sleep until the head's retry time, a wake-up, or the poll.
            let wait = match store.next_attempt_at(&name) {
                Ok(Some(at)) => {
                    Duration::from_secs(at.saturating_sub(now.timestamp()).max(0) as u64)
                        .min(IDLE_POLL)
                }
                _ => IDLE_POLL,
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // Delivered entries are marked once per batch: one write instead of one
        // per alert. A crash before the mark re-sends at most this batch, with the
        // same idempotency keys.
        let mut sent: Vec<i64> = Vec::new();
        let mark = |sent: &[i64]| {
            if !sent.is_empty() {
                if let Err(e) = store.mark_delivered_many(sent, clock.now().timestamp()) {
                    tracing::error!(channel = %name, error = %e, "cannot mark alerts delivered");
                }
            }
        };
        for entry in batch {
            if pending
                .as_ref()
                .is_some_and(|p| p.take_sent(&name, &entry.key))
            {
                // Sent from memory before it reached the store.
                sent.push(entry.id);
                continue;
            }
            let delivered = tokio::select! {
                ok = deliver_one(&channel, Some(&store), &clock, &metrics, &entry, &mut health) => ok,
                // An attempt cut short is not marked: it is sent again at the next start.
                _ = shutdown.cancelled() => {
                    mark(&sent);
                    return;
                }
            };
            if let Delivery::Sent = delivered {
                sent.push(entry.id);
            }
            let delivered = !matches!(delivered, Delivery::Retry);
            let failed_since = if delivered {
                health.failing_since.take()
            } else {
                None
            };
            if let (Some(since), true) = (failed_since, health.announced) {
                health.announced = false;
                let now = clock.now();
                // The resolution starts when the failure did (as `Alert::started_at`
                // says) and ends now; its key pairs with the unhealthy alert's.
                let a = unhealthy_alert(&name, channel.kind(), since, now, true, 0, "");
                enqueue_to(&store, pending.as_deref(), &others(), &a, now);
                wake.notify_waiters();
            }
            if !delivered || stop.is_cancelled() {
                // The rest of the batch waits behind the head, in order.
                break;
            }
        }
        mark(&sent);
        check_unhealthy(
            &channel,
            &others(),
            &store,
            pending.as_deref(),
            &clock,
            unhealthy_after,
            &mut health,
        );
    }
}

/// What one attempt did.
enum Delivery {
    /// Accepted by the channel; to be marked delivered.
    Sent,
    /// Set aside for good (unreadable, or refused): the queue moves on.
    SetAside,
    /// Failed; retried later. The rest of the queue waits behind it.
    Retry,
}

/// One attempt at one entry.
async fn deliver_one(
    channel: &Channel,
    store: Option<&Store>,
    clock: &Arc<dyn Clock>,
    metrics: &Metrics,
    entry: &OutboxEntry,
    health: &mut Health,
) -> Delivery {
    let name = channel.name();
    let alert: Alert = match serde_json::from_str(&entry.alert_json) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(channel = %name, key = %entry.key, error = %e, "outbox entry unreadable; set aside");
            if let Some(store) = store {
                let _ = store.mark_failed(entry.id, &format!("unreadable: {e}"), None);
            }
            return Delivery::SetAside;
        }
    };
    let result = tokio::time::timeout(ATTEMPT_TIMEOUT, channel.deliver(&alert)).await;
    let now = clock.now();
    let retry = |wait: Duration| now.timestamp() + wait.as_secs().max(1) as i64;
    let attempted = |result: DeliveryResult, error: &str, retry_in: Option<Duration>| {
        AlertDeliveryAttempted {
            channel: name,
            key: &entry.key,
            attempts: entry.attempts + 1,
            result,
            error,
            retry_in,
        }
        .emit(metrics)
    };
    match result {
        Ok(Ok(())) => {
            attempted(DeliveryResult::Delivered, "", None);
            health.last_error.clear();
            Delivery::Sent
        }
        Ok(Err(e)) if e.is_retryable() => {
            let wait = e
                .retry_after()
                .unwrap_or_else(|| backoff(entry.attempts + 1, jitter()));
            health.last_error = crate::human::text::bounded(e.message(), 300).into_owned();
            if let Some(store) = store {
                let _ = store.mark_failed(entry.id, &health.last_error, Some(retry(wait)));
            }
            health.failing_since.get_or_insert(now);
            attempted(DeliveryResult::Failed, &health.last_error, Some(wait));
            Delivery::Retry
        }
        Ok(Err(e)) => {
            if let Some(store) = store {
                let _ = store.mark_failed(entry.id, e.message(), None);
            }
            attempted(DeliveryResult::Refused, e.message(), None);
            Delivery::SetAside
        }
        Err(_) => {
            health.last_error = format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs());
            let wait = backoff(entry.attempts + 1, jitter());
            if let Some(store) = store {
                let _ = store.mark_failed(entry.id, &health.last_error, Some(retry(wait)));
            }
            health.failing_since.get_or_insert(now);
            attempted(DeliveryResult::Timeout, &health.last_error, Some(wait));
            Delivery::Retry
        }
    }
}

fn check_unhealthy(
    channel: &Channel,
    others: &[String],
    store: &Store,
    queue: Option<&PendingWrites>,
    clock: &Arc<dyn Clock>,
    unhealthy_after: Duration,
    health: &mut Health,
) {
    let Some(since) = health.failing_since else {
        return;
    };
    let now = clock.now();
    if health.announced || (now - since).to_std().unwrap_or_default() < unhealthy_after {
        return;
    }
    let pending = store.pending(channel.name()).map(|(n, _)| n).unwrap_or(0);
    if pending == 0 {
        health.failing_since = None;
        return;
    }
    health.announced = true;
    let a = unhealthy_alert(
        channel.name(),
        channel.kind(),
        since,
        now,
        false,
        pending,
        &health.last_error,
    );
    tracing::error!(channel = %channel.name(), pending, "alert channel unhealthy");
    enqueue_to(store, queue, others, &a, now);
}

fn enqueue_to(
    store: &Store,
    pending: Option<&PendingWrites>,
    channels: &[String],
    alert: &Alert,
    now: DateTime<Utc>,
) {
    let Ok(json) = serde_json::to_string(alert) else {
        return;
    };
    let rows: Vec<(String, String, String)> = channels
        .iter()
        .map(|c| (c.clone(), alert.key.clone(), json.clone()))
        .collect();
    if let Some(pending) = pending {
        pending.push(PendingWrite {
            result: None,
            monitor: None,
            alerts: rows,
            now: now.timestamp(),
        });
        return;
    }
    if let Err(e) = store.enqueue(&rows, now.timestamp()) {
        tracing::error!(error = %e, "cannot queue the channel-health alert");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Channels whose loop panics at its next turns, and how many times.
    static PANICS: Mutex<Vec<(String, u32)>> = Mutex::new(Vec::new());

    /// The test hook every channel loop calls at each turn.
    pub(super) fn injected_panic(channel: &str) {
        let mut panics = PANICS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, n)) = panics.iter_mut().find(|(c, n)| c == channel && *n > 0) {
            *n -= 1;
            drop(panics);
            panic!("injected into channel {channel}");
        }
    }

    fn inject(channel: &str, times: u32) {
        let mut panics = PANICS.lock().unwrap_or_else(|e| e.into_inner());
        panics.retain(|(c, _)| c != channel);
        panics.push((channel.to_string(), times));
    }

    /// A webhook receiver on 127.0.0.1 that answers 200 and keeps each
    /// request's path.
    async fn receiver() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let kept = got.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // The head, then as much body as it announces.
                    loop {
                        let Ok(n) = conn.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        let Some(end) = text.find("\r\n\r\n") else {
                            continue;
                        };
                        let length = (text[..end].lines())
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0usize);
                        if buf.len() >= end + 4 + length {
                            let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
                            kept.lock().unwrap().push(path);
                            break;
                        }
                    }
                    let _ = conn
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        (addr, got)
    }

    #[tokio::test]
    async fn a_panicking_channel_loop_is_restarted_alone_and_gives_up_when_it_keeps_failing() {
        let (addr, got) = receiver().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sonde.toml");
        std::fs::write(
            &path,
            format!(
                "[[channel]]\nname = \"steady\"\nkind = \"webhook\"\nurl = \"http://{addr}/steady\"\n\n\
                 [[channel]]\nname = \"panicky\"\nkind = \"webhook\"\nurl = \"http://{addr}/panicky\"\n"
            ),
        )
        .unwrap();
        let config = crate::config::Loader { env: &|_| None }
            .load(&path)
            .unwrap();
        let channels = (config.channels.iter())
            .map(|c| Arc::new(c.build().unwrap()))
            .collect();
        let store = Arc::new(Store::in_memory().unwrap());
        let metrics = Arc::new(Metrics::new());
        let wake = Arc::new(Notify::new());
        // Due at once: the dispatcher sends what is due by the system clock.
        let now = crate::clock::SystemClock.now();
        let enqueue = |key: &str| {
            let alert = Alert {
                key: key.into(),
                event: AlertEvent::Firing,
                severity: Severity::Critical,
                probe: "web".into(),
                kind: "http".into(),
                health_set: "default".into(),
                state: "unhealthy".into(),
                category: Some("network".into()),
                summary: "HTTP 500".into(),
                root_cause: None,
                started_at: now,
                ends_at: None,
                created_at: now,
                observations: Default::default(),
            };
            let json = serde_json::to_string(&alert).unwrap();
            let rows =
                ["steady", "panicky"].map(|c| (c.to_string(), key.to_string(), json.clone()));
            store.enqueue(&rows, now.timestamp()).unwrap();
        };
        let policy = crate::supervise::Policy {
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            max_restarts: 3,
            window: Duration::from_secs(600),
        };
        // The panicky channel's loop panics at its first two turns.
        inject("panicky", 2);
        enqueue("k1");
        let dispatcher = Dispatcher {
            store: store.clone(),
            channels,
            clock: Arc::new(crate::clock::SystemClock),
            wake: wake.clone(),
            unhealthy_after: Duration::from_secs(60),
            metrics: metrics.clone(),
        };
        let (_updates, mut updates_rx) = tokio::sync::mpsc::channel(1);
        let stop = CancellationToken::new();
        let mut running = tokio::spawn({
            let stop = stop.clone();
            async move {
                dispatcher
                    .run_with_pending(None, &mut updates_rx, stop, policy)
                    .await
            }
        });
        let delivered = |path: &str| got.lock().unwrap().iter().any(|p| p == path);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !(delivered("/steady") && delivered("/panicky")) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "got {:?}",
                got.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Restarted twice on its own, from its outbox: nothing lost.
        assert_eq!(metrics.task_restarts("channel:panicky"), 2);
        assert_eq!(metrics.task_restarts("channel:steady"), 0);
        assert!(!running.is_finished());
        let text = metrics.render();
        assert!(text.contains("sonde_task_restarts_total{task=\"channel:panicky\"} 2\n"));
        assert!(text.contains("sonde_task_restarts_total{task=\"channel:steady\"} 0\n"));

        // Failing for good: one more restart, then past `max_restarts` within
        // the window the dispatcher itself goes down, for its supervisor.
        inject("panicky", 100);
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                wake.notify_waiters();
                tokio::select! {
                    ended = &mut running => break ended,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        })
        .await
        .expect("the dispatcher gave up on the channel");
        let e = ended.unwrap_err();
        assert!(e.is_panic());
        let text = crate::human::text::panic_text(e.into_panic());
        assert!(
            text.contains("channel panicky kept failing (3 restarts within 600s; last: panicked: injected into channel panicky)"),
            "{text}"
        );
        assert_eq!(metrics.task_restarts("channel:panicky"), 3);
        inject("panicky", 0);
        stop.cancel();
    }

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        assert_eq!(backoff(1, 0.5), Duration::from_secs(1));
        assert_eq!(backoff(2, 0.5), Duration::from_secs(2));
        assert_eq!(backoff(4, 0.5), Duration::from_secs(8));
        assert_eq!(backoff(40, 0.5), MAX_BACKOFF);
        assert_eq!(backoff(3, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(6));
    }

    #[test]
    fn a_channel_recovery_resolves_from_when_the_channel_started_failing() {
        let since = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let now = DateTime::from_timestamp(1_800_000_900, 0).unwrap();
        let fired = unhealthy_alert("hook", "webhook", since, now, false, 3, "refused");
        assert_eq!(fired.event, AlertEvent::ChannelUnhealthy);
        assert_eq!(fired.key, "channel:hook:1800000000:unhealthy");
        assert_eq!((fired.started_at, fired.ends_at), (since, None));
        assert!(fired
            .summary
            .contains("3 alert(s) waiting; last error: refused"));
        let resolved = unhealthy_alert("hook", "webhook", since, now, true, 0, "");
        assert_eq!(resolved.event, AlertEvent::Resolved);
        assert_eq!(resolved.key, "channel:hook:1800000000:resolved");
        assert_eq!((resolved.started_at, resolved.ends_at), (since, Some(now)));
        assert_eq!(resolved.created_at, now);
        assert_eq!(resolved.summary, "alert channel hook delivers again");
    }
}
