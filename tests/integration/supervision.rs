//! The agent is never silently dead: a panic in the result consumer is
//! restarted and counted while the probes keep running; a store that cannot be
//! written (an immutable directory, a lock held by another connection) turns
//! `/healthz` to 503 while alerts still go out, and everything lands once it
//! can be written; the heartbeat keeps a `SondeHeartbeat` alert firing in a
//! real Alertmanager while the agent runs and pings a URL each beat.
//!
//! The agent runs in-process through `sonde::agent::run_supervised`, so that
//! the test can hand it a consumer hook that panics (no switch in the binary).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use sonde::clock::Clock;
use sonde::outcome::RunRecord;
use sonde::supervise::Policy;

use crate::support::{eventually, free_port};

/// `sonde`'s main installs the TLS provider; in-process, the test does.
fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

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
    serve(app).await
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

type Received = Arc<Mutex<Vec<String>>>;

/// A webhook receiver: the alert keys it got, in order.
async fn receiver(got: Received) -> SocketAddr {
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(got): State<Received>, headers: HeaderMap| async move {
                    let key = headers
                        .get("x-sonde-alert-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    got.lock().unwrap().push(key);
                    StatusCode::OK
                },
            ),
        )
        .with_state(got);
    serve(app).await
}

/// An agent running in this process.
struct Agent {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), sonde::agent::AgentError>>,
    api: SocketAddr,
    http: reqwest::Client,
}

impl Agent {
    fn start(
        dir: &Path,
        config: &str,
        on_record: impl FnMut(&RunRecord) + Send + 'static,
    ) -> Agent {
        install_provider();
        let path = dir.join("sonde.toml");
        std::fs::write(&path, config).unwrap();
        let config = sonde::config::load(&path).unwrap();
        let api = config.api.as_ref().unwrap().listen;
        let stop = CancellationToken::new();
        let (_, requests) = sonde::reload::reload_channel();
        let task = tokio::spawn(sonde::agent::run_supervised(
            config,
            Arc::new(sonde::clock::SystemClock),
            stop.clone(),
            requests,
            on_record,
            Policy::default(),
        ));
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        Agent {
            stop,
            task,
            api,
            http,
        }
    }

    async fn healthz(&self) -> Option<(u16, Value)> {
        let r = self
            .http
            .get(format!("http://{}/healthz", self.api))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.ok()?))
    }

    async fn metrics(&self) -> String {
        match self
            .http
            .get(format!("http://{}/metrics", self.api))
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_consumer_is_restarted_and_counted_while_probes_keep_running() {
    let web = target(Arc::new(AtomicU16::new(200))).await;
    let api = free_port();
    let dir = tempfile::tempdir().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let panicked = Arc::new(AtomicBool::new(false));
    let (s, p) = (seen.clone(), panicked.clone());
    // The test-only hook: the consumer calls it with every result.
    let hook = move |r: &RunRecord| {
        s.lock().unwrap().push(r.probe.to_string());
        if &*r.probe == "a" && !p.swap(true, Ordering::SeqCst) {
            panic!("injected into the consumer");
        }
    };
    let agent = Agent::start(
        dir.path(),
        &format!(
            r#"[api]
listen = "{api}"

[[probe]]
name = "a"
kind = "http"
url = "http://{web}/health"
every = "1s"

[[probe]]
name = "b"
kind = "http"
url = "http://{web}/health"
every = "1s"
"#
        ),
        hook,
    );
    eventually("the injected panic", Duration::from_secs(70), || async {
        panicked.load(Ordering::SeqCst).then_some(())
    })
    .await;
    let runs_of_b = || seen.lock().unwrap().iter().filter(|p| *p == "b").count();
    let before = runs_of_b();
    eventually("the restart counted", Duration::from_secs(10), || async {
        agent
            .metrics()
            .await
            .contains("sonde_task_restarts_total{task=\"consumer\"} 1\n")
            .then_some(())
    })
    .await;
    eventually(
        "more runs of b after the restart",
        Duration::from_secs(10),
        || async { (runs_of_b() >= before + 2).then_some(()) },
    )
    .await;
    let (status, body) = eventually("a healthy agent", Duration::from_secs(10), || async {
        agent.healthz().await.filter(|(s, _)| *s == 200)
    })
    .await;
    assert_eq!((status, &body["status"]), (200, &Value::from("ok")));
    agent.stop().await;
}

/// How the store fails in `store_fault`.
enum Fault {
    /// `chattr +i` on the store's directory and files: as root, `chmod` does
    /// not stop writes, an immutable file does.
    Immutable,
    /// `BEGIN EXCLUSIVE` from another connection.
    Locked,
    /// The store's directory is a small tmpfs, filled up by another file: a
    /// real "no space left on device" (SQLite's "database or disk is full").
    Full,
}

/// The tmpfs mounted over a directory (`mount` needs root, as `chattr` does),
/// unmounted however the test ends.
struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(dir: &Path, size: &str) -> Mounted {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::inherit())
            .status()
            .expect("mount (util-linux) is needed for this test");
        assert!(
            ok.success(),
            "mount -t tmpfs on {}: this test runs as root",
            dir.display()
        );
        Mounted(dir.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the file system refuses: what a full disk is.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = [0u8; 64 * 1024];
    let err = loop {
        if let Err(e) = f.write_all(&block).and_then(|()| f.sync_data()) {
            break e;
        }
    };
    assert_eq!(err.raw_os_error(), Some(28), "ENOSPC expected: {err}");
}

fn chattr(flag: &str, paths: &[PathBuf]) {
    let ok = Command::new("chattr")
        .arg(flag)
        .args(paths)
        .stderr(Stdio::inherit())
        .status()
        .expect("chattr (e2fsprogs) is needed for this test");
    assert!(ok.success(), "chattr {flag} {paths:?}");
}

/// Undoes `chattr +i` however the test ends, so that the directory can go.
struct Mutable(Vec<PathBuf>);

impl Drop for Mutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").args(&self.0).status();
    }
}

/// The runs of every probe so far, from `/metrics` text.
fn runs_total(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("sonde_probe_runs_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The results stored after the row `id` that started no later than
/// `until` (unix seconds, as stored).
fn results_between(db: &Path, id: i64, until: i64) -> u64 {
    let c = rusqlite::Connection::open(db).unwrap();
    let n: i64 = c
        .query_row(
            "SELECT count(*) FROM results WHERE id > ?1 AND started_at <= ?2",
            [id, until],
            |r| r.get(0),
        )
        .unwrap();
    u64::try_from(n).unwrap()
}

fn outbox(db: &Path) -> Vec<(String, Option<i64>)> {
    let read = || -> rusqlite::Result<Vec<(String, Option<i64>)>> {
        let c = rusqlite::Connection::open(db)?;
        let mut s = c.prepare("SELECT key, delivered_at FROM outbox ORDER BY id")?;
        let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    };
    read().unwrap_or_default()
}

async fn store_fault(fault: Fault) {
    let status = Arc::new(AtomicU16::new(200));
    let web = target(status.clone()).await;
    let got: Received = Arc::default();
    let hook = receiver(got.clone()).await;
    let api = free_port();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let db = state.join("sonde.db");
    // Unmounted after the agent stops (declared before it: dropped after).
    let _tmpfs = matches!(fault, Fault::Full).then(|| Mounted::tmpfs(&state, "2m"));
    let agent = Agent::start(
        dir.path(),
        &format!(
            r#"[api]
listen = "{api}"

[store]
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
failure_threshold = 1
alert = ["hook"]
"#
        ),
        |_| {},
    );
    eventually("a first result", Duration::from_secs(70), || async {
        agent
            .metrics()
            .await
            .contains("sonde_store_up 1\n")
            .then_some(())
    })
    .await;

    let last_stored = eventually("a stored result", Duration::from_secs(10), || async {
        rusqlite::Connection::open(&db)
            .ok()?
            .query_row("SELECT max(id) FROM results", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .ok()?
    })
    .await;
    // Every run counted from here on must be in the store at the end. (A run
    // is counted before it is stored: the row read first, then the count.)
    let runs_before = runs_total(&agent.metrics().await);
    let mut _guard = None;
    let mut lock = None;
    match fault {
        Fault::Immutable => {
            let mut paths = vec![state.clone()];
            for e in std::fs::read_dir(&state).unwrap() {
                paths.push(e.unwrap().path());
            }
            chattr("+i", &paths);
            _guard = Some(Mutable(paths));
        }
        Fault::Locked => {
            let c = rusqlite::Connection::open(&db).unwrap();
            c.execute_batch("BEGIN EXCLUSIVE").unwrap();
            lock = Some(c);
        }
        Fault::Full => fill(&state.join("filler")),
    }
    let (code, body) = eventually("/healthz 503", Duration::from_secs(15), || async {
        agent.healthz().await.filter(|(s, _)| *s == 503)
    })
    .await;
    assert_eq!(code, 503);
    let reasons = body["reasons"].to_string();
    assert!(
        reasons.contains("the store cannot be written") && reasons.contains("sonde"),
        "{body}"
    );
    if matches!(fault, Fault::Full) {
        assert!(reasons.contains("full"), "{body}");
    }
    let text = agent.metrics().await;
    assert!(text.contains("sonde_store_up 0\n"), "{text}");

    // The outage starts while the store fails: it is announced all the same.
    status.store(500, Ordering::SeqCst);
    eventually("the firing alert", Duration::from_secs(15), || async {
        let keys = got.lock().unwrap().clone();
        keys.iter().any(|k| k.ends_with(":firing")).then_some(())
    })
    .await;
    // A few more runs while the store fails, their results kept in memory.
    eventually(
        "runs during the outage",
        Duration::from_secs(15),
        || async { (runs_total(&agent.metrics().await) >= runs_before + 4).then_some(()) },
    )
    .await;
    let (code, _) = agent.healthz().await.unwrap();
    assert_eq!(code, 503, "the store came back by itself");

    // The store comes back: everything kept in memory lands, nothing twice.
    drop(_guard);
    if let Some(c) = lock.take() {
        c.execute_batch("COMMIT").unwrap();
    }
    if matches!(fault, Fault::Full) {
        std::fs::remove_file(state.join("filler")).unwrap();
    }
    eventually("/healthz 200", Duration::from_secs(40), || async {
        agent.healthz().await.filter(|(s, _)| *s == 200)
    })
    .await;
    let runs = runs_total(&agent.metrics().await) - runs_before;
    let now = sonde::clock::SystemClock.now().timestamp();
    assert!(
        runs >= 3,
        "the probe ran {runs} times while the store failed"
    );
    // Every run's result is written, those kept in memory included: the runs
    // counted so far all started by now (a lost one would leave a result short).
    eventually(
        "every result of the outage in the store",
        Duration::from_secs(10),
        || async { (results_between(&db, last_stored, now) >= runs).then_some(()) },
    )
    .await;
    eventually(
        "the alert delivered in the outbox",
        Duration::from_secs(10),
        || async {
            let rows = outbox(&db);
            rows.iter()
                .any(|(k, d)| k.ends_with(":firing") && d.is_some())
                .then_some(rows)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let keys = got.lock().unwrap().clone();
    let firing = keys.iter().filter(|k| k.ends_with(":firing")).count();
    assert_eq!(firing, 1, "sent once: {keys:?}");
    assert!(
        outbox(&db).iter().all(|(_, d)| d.is_some()),
        "{:?}",
        outbox(&db)
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_store_directory_fails_healthz_and_alerts_still_go_out() {
    store_fault(Fault::Immutable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_another_connection_does_not_stall_alerting() {
    store_fault(Fault::Locked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_healthz_keeps_results_and_writes_them_once_space_is_back() {
    store_fault(Fault::Full).await;
}

#[test]
fn a_store_that_cannot_be_opened_stops_the_start_with_exit_3_and_advice() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sonde.toml"),
        "[store]\npath = \"state/sonde.db\"\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    // A damaged store: not a database at all.
    std::fs::write(
        dir.path().join("state/sonde.db"),
        "not a database, only some text long enough to be read as a header",
    )
    .unwrap();
    let out = crate::support::sonde_in(dir.path(), &["run", "--config", "sonde.toml"], &[]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = crate::support::stderr(&out);
    assert!(err.contains("state/sonde.db"), "{err}");
    assert!(err.contains("move it aside"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_heartbeat_on_a_channel_other_than_alertmanager_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sonde.toml");
    std::fs::write(
        &path,
        r#"[agent.heartbeat]
every = "1m"
channels = ["hook", "nope"]

[[channel]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:9/hook"
"#,
    )
    .unwrap();
    let err = sonde::config::load(&path).err().unwrap().to_string();
    assert!(
        err.contains("sonde.toml:1:1: agent.heartbeat: heartbeat channel `hook` is a webhook channel: a heartbeat goes to alertmanager channels only"),
        "{err}"
    );
    assert!(
        err.contains("heartbeat channel `nope` is not defined"),
        "{err}"
    );
}

// ---------------------------------------------------------------- heartbeat

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// A real Alertmanager on a free loopback port, killed on drop.
struct Alertmanager {
    child: std::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Alertmanager {
    async fn start() -> Alertmanager {
        install_provider();
        assert!(
            Path::new(ALERTMANAGER).exists(),
            "{ALERTMANAGER} is missing: install Debian's prometheus-alertmanager"
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
        )
        .unwrap();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        for _ in 0..3 {
            let port = free_port().port();
            let mut child = Command::new(ALERTMANAGER)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=")
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let base = format!("http://127.0.0.1:{port}");
            for _ in 0..150 {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                let ready = http.get(format!("{base}/-/ready")).send().await;
                if ready.is_ok_and(|r| r.status().is_success()) {
                    return Alertmanager {
                        child,
                        base,
                        _dir: dir,
                    };
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("Alertmanager did not become ready");
    }

    /// The active `SondeHeartbeat` alerts.
    async fn heartbeats(&self) -> Vec<Value> {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v2/alerts", self.base),
            [
                ("active", "true"),
                ("silenced", "false"),
                ("inhibited", "false"),
                ("filter", "alertname=\"SondeHeartbeat\""),
            ],
        )
        .unwrap();
        let list: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        list.as_array().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_fires_in_alertmanager_while_the_agent_runs_and_resolves_after() {
    let am = Alertmanager::start().await;
    let pings = Arc::new(AtomicUsize::new(0));
    let ping = serve(
        Router::new()
            .route(
                "/ping/check-1",
                get(|State(n): State<Arc<AtomicUsize>>| async move {
                    n.fetch_add(1, Ordering::SeqCst);
                    "OK"
                }),
            )
            .with_state(pings.clone()),
    )
    .await;
    let api = free_port();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        dir.path(),
        &format!(
            r#"[api]
listen = "{api}"

[agent.heartbeat]
every = "1s"
channels = ["am"]
url = "http://{ping}/ping/check-1"

[[channel]]
name = "am"
kind = "alertmanager"
url = "{}/"
"#,
            am.base
        ),
        |_| {},
    );
    let listed = eventually("SondeHeartbeat firing", Duration::from_secs(15), || async {
        let l = am.heartbeats().await;
        (l.len() == 1).then_some(l)
    })
    .await;
    assert_eq!(listed[0]["status"]["state"], "active");
    assert_eq!(listed[0]["labels"]["alertname"], "SondeHeartbeat");
    eventually("three heartbeat GETs", Duration::from_secs(10), || async {
        (pings.load(Ordering::SeqCst) >= 3).then_some(())
    })
    .await;

    agent.stop().await;
    let after_stop = pings.load(Ordering::SeqCst);
    // endsAt is three beats ahead: Alertmanager resolves it soon after.
    eventually(
        "SondeHeartbeat resolved",
        Duration::from_secs(20),
        || async { am.heartbeats().await.is_empty().then_some(()) },
    )
    .await;
    assert_eq!(
        pings.load(Ordering::SeqCst),
        after_stop,
        "a GET after the agent stopped"
    );
}
