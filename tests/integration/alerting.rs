//! Results to alerts through the real binary: monitors, the SQLite outbox and a
//! webhook receiver on loopback that is down, then up, while the agent is killed
//! with SIGKILL in between. Every alert arrives, once per idempotency key, in order.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;

/// A target whose answer the test sets.
async fn target(status: Arc<AtomicU16>) -> SocketAddr {
    let app = Router::new()
        .route(
            "/health",
            get(|State(s): State<Arc<AtomicU16>>| async move {
                StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap()
            }),
        )
        .with_state(status);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// The webhook receiver, on a given address.
async fn receiver(addr: SocketAddr, got: Received) {
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(got): State<Received>, headers: HeaderMap, body: String| async move {
                    let key = headers
                        .get("x-sonde-alert-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    got.lock()
                        .unwrap()
                        .push((key, serde_json::from_str(&body).unwrap()));
                    StatusCode::OK
                },
            ),
        )
        .with_state(got);
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn start_agent(dir: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sonde"))
        .current_dir(dir)
        .args(["run", "--config", "sonde.toml"])
        .env_remove("SONDE_CONFIG")
        .env("RUST_LOG", "sonde=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The outbox as the agent left it; empty while the agent is still creating it.
fn outbox(db: &std::path::Path) -> Vec<(String, String, Option<i64>)> {
    let read = || -> rusqlite::Result<Vec<(String, String, Option<i64>)>> {
        let c = rusqlite::Connection::open(db)?;
        let mut s = c.prepare("SELECT channel, key, delivered_at FROM outbox ORDER BY id")?;
        let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect()
    };
    read().unwrap_or_default()
}

async fn wait_for(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_survive_a_dead_receiver_and_a_killed_agent() {
    let status = Arc::new(AtomicU16::new(500));
    let web = target(status.clone()).await;
    let hook = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sonde.toml"),
        format!(
            r#"[store]
path = "state/sonde.db"

[[channel]]
name = "hook"
kind = "webhook"
url = "http://{hook}/hook"

[[probe]]
name = "web"
kind = "http"
url = "http://{web}/health"
every = "1s"
timeout = "2s"
failure_threshold = 2
success_threshold = 2
alert = ["hook"]
"#
        ),
    )
    .unwrap();
    let db = dir.path().join("state/sonde.db");
    // The receiver is down: the firing alert waits in the outbox.
    let mut agent = start_agent(dir.path());
    wait_for(
        "the firing alert in the outbox",
        Duration::from_secs(20),
        || {
            db.exists()
                && outbox(&db)
                    .iter()
                    .any(|(c, k, d)| c == "hook" && k.ends_with(":firing") && d.is_none())
        },
    )
    .await;
    // Killed without a chance to clean up.
    agent.kill().unwrap();
    agent.wait().unwrap();
    let pending = outbox(&db);
    assert!(pending.iter().all(|(_, _, d)| d.is_none()), "{pending:?}");

    // The receiver comes up, the target recovers, the agent restarts.
    let got: Received = Arc::default();
    receiver(hook, got.clone()).await;
    status.store(200, Ordering::SeqCst);
    let agent = start_agent(dir.path());
    wait_for(
        "firing then resolved at the receiver",
        Duration::from_secs(30),
        || {
            got.lock()
                .unwrap()
                .iter()
                .any(|(k, _)| k.ends_with(":resolved"))
        },
    )
    .await;
    // A little longer: nothing more may arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let out = agent.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let got = got.lock().unwrap().clone();
    let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.len(), 2, "each alert exactly once: {keys:?}");
    assert!(
        keys[0].starts_with("web:") && keys[0].ends_with(":firing"),
        "{keys:?}"
    );
    assert!(keys[1].ends_with(":resolved"), "{keys:?}");
    let firing = &got[0].1;
    assert_eq!(firing["event"], "firing");
    assert_eq!(firing["probe"], "web");
    assert_eq!(firing["severity"], "critical");
    assert_eq!(firing["key"], keys[0]);
    assert!(
        firing["summary"].as_str().unwrap().contains("500"),
        "{firing}"
    );
    assert_eq!(got[1].1["event"], "resolved");
    // The outbox agrees: both delivered.
    assert!(outbox(&db).iter().all(|(_, _, d)| d.is_some()));
}

/// A channel that cannot deliver for longer than `channel_unhealthy_after` is
/// announced on the other channels, and its recovery too; its own alert is
/// delivered once it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_channel_is_announced_on_the_others() {
    use sonde::alert::outbox::Dispatcher;
    use sonde::channel::{Alert, AlertEvent, Channel, Severity};
    use sonde::clock::SystemClock;
    use sonde::store::Store;
    use sonde::telemetry::metrics::Metrics;
    use tokio::sync::Notify;
    use tokio_util::sync::CancellationToken;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let dead = free_port();
    let live = free_port();
    let got_live: Received = Arc::default();
    receiver(live, got_live.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sonde.toml"),
        format!(
            "[[channel]]\nname = \"dead\"\nkind = \"webhook\"\nurl = \"http://{dead}/hook\"\n\n[[channel]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"http://{live}/hook\"\n"
        ),
    )
    .unwrap();
    let config = sonde::config::Loader { env: &|_| None }
        .load(&dir.path().join("sonde.toml"))
        .unwrap();
    let channels: Vec<Arc<Channel>> = config
        .channels
        .iter()
        .map(|c| Arc::new(c.build().unwrap()))
        .collect();
    let store = Arc::new(Store::open(&dir.path().join("sonde.db")).unwrap());
    let now = chrono::Utc::now();
    let alert = Alert {
        key: "web:1:firing".into(),
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
    store
        .enqueue(&[("dead".into(), alert.key.clone(), json)], now.timestamp())
        .unwrap();
    let stop = CancellationToken::new();
    let dispatcher = tokio::spawn(
        Dispatcher {
            store: store.clone(),
            channels,
            clock: Arc::new(SystemClock),
            wake: Arc::new(Notify::new()),
            unhealthy_after: Duration::from_secs(1),
            metrics: Arc::new(Metrics::new()),
        }
        .run(stop.clone()),
    );
    wait_for(
        "the channel_unhealthy alert on ops",
        Duration::from_secs(20),
        || {
            got_live
                .lock()
                .unwrap()
                .iter()
                .any(|(_, v)| v["event"] == "channel_unhealthy")
        },
    )
    .await;
    {
        let got = got_live.lock().unwrap();
        let (_, v) = got
            .iter()
            .find(|(_, v)| v["event"] == "channel_unhealthy")
            .unwrap();
        assert_eq!(v["probe"], "channel:dead");
        let summary = v["summary"].as_str().unwrap();
        assert!(
            summary.contains("alert channel dead has not delivered"),
            "{summary}"
        );
        assert!(summary.contains("1 alert(s) waiting"), "{summary}");
    }
    // The dead channel's receiver comes up: its alert arrives, and ops hears it recovered.
    let got_dead: Received = Arc::default();
    receiver(dead, got_dead.clone()).await;
    wait_for("recovery", Duration::from_secs(30), || {
        got_live
            .lock()
            .unwrap()
            .iter()
            .any(|(_, v)| v["event"] == "resolved")
    })
    .await;
    let delivered: Vec<String> = got_dead
        .lock()
        .unwrap()
        .iter()
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(delivered, vec!["web:1:firing".to_string()]);
    stop.cancel();
    dispatcher.await.unwrap();
}

/// A reload's new channel set: an unchanged channel keeps delivering, a new one
/// starts, a removed one stops and its undelivered alerts stay in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_channels_stop_and_keep_their_undelivered_alerts() {
    use sonde::alert::outbox::{Dispatcher, ReplaceChannels};
    use sonde::channel::{Alert, AlertEvent, Channel, Severity};
    use sonde::clock::SystemClock;
    use sonde::store::Store;
    use sonde::telemetry::metrics::Metrics;
    use tokio::sync::Notify;
    use tokio_util::sync::CancellationToken;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut got: Vec<Received> = Vec::new();
    let mut lines = String::new();
    for name in ["a", "b", "c"] {
        let addr = free_port();
        let r: Received = Arc::default();
        receiver(addr, r.clone()).await;
        got.push(r);
        lines.push_str(&format!(
            "[[channel]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"http://{addr}/hook\"\n\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sonde.toml"), lines).unwrap();
    let config = sonde::config::Loader { env: &|_| None }
        .load(&dir.path().join("sonde.toml"))
        .unwrap();
    let built: Vec<Arc<Channel>> = config
        .channels
        .iter()
        .map(|c| Arc::new(c.build().unwrap()))
        .collect();
    let store = Arc::new(Store::open(&dir.path().join("sonde.db")).unwrap());
    let wake = Arc::new(Notify::new());
    let enqueue = |key: &str, channels: &[&str]| {
        let now = chrono::Utc::now();
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
        let rows: Vec<_> = channels
            .iter()
            .map(|c| (c.to_string(), key.to_string(), json.clone()))
            .collect();
        store.enqueue(&rows, now.timestamp()).unwrap();
        wake.notify_waiters();
    };
    let keys = |r: &Received| -> Vec<String> {
        r.lock().unwrap().iter().map(|(k, _)| k.clone()).collect()
    };
    let (updates, updates_rx) = tokio::sync::mpsc::channel(1);
    let stop = CancellationToken::new();
    let dispatcher = tokio::spawn(
        Dispatcher {
            store: store.clone(),
            channels: built[..2].to_vec(),
            clock: Arc::new(SystemClock),
            wake: wake.clone(),
            unhealthy_after: Duration::from_secs(60),
            metrics: Arc::new(Metrics::new()),
        }
        .run_replaceable(updates_rx, stop.clone()),
    );
    enqueue("k1", &["a", "b"]);
    wait_for("k1 on a and b", Duration::from_secs(20), || {
        keys(&got[0]) == ["k1"] && keys(&got[1]) == ["k1"]
    })
    .await;
    updates
        .send(ReplaceChannels {
            channels: vec![built[0].clone(), built[2].clone()],
            unchanged: ["a".to_string()].into(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    enqueue("k2", &["a", "b", "c"]);
    wait_for("k2 on a and c", Duration::from_secs(20), || {
        keys(&got[0]) == ["k1", "k2"] && keys(&got[2]) == ["k2"]
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(keys(&got[1]), ["k1"], "the removed channel stopped");
    assert_eq!(
        store.pending("b").unwrap().0,
        1,
        "its alert waits in the store"
    );
    stop.cancel();
    dispatcher.await.unwrap();
}
