//! An HA pair on Alertmanager's own cluster: two real `prometheus-alertmanager`
//! nodes on loopback gossiping with each other, a webhook receiver counting
//! their notifications, and two `sonde run` agents with the same probes, each
//! posting to both nodes (`urls`). One incident is notified once, not once per
//! agent or per node; with one agent and one node killed, the next incident is
//! still notified once.
//!
//! Alertmanager comes from `scripts/test`; a missing one fails the test with
//! what to install, it never skips.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use tempfile::TempDir;

use crate::support::{eventually, free_port, Proc};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// Alertmanager's timers, short so that the test takes seconds: a node waits
/// `group_wait` before its first notification of a group, and a node at
/// position n in the cluster waits n × `PEER_TIMEOUT` more, by which time the
/// first node's notification log has reached it by gossip.
const GROUP_WAIT: &str = "1s";
const GROUP_INTERVAL: &str = "2s";
const PEER_TIMEOUT: &str = "2s";

/// How long after a notification a duplicate could still arrive: the other
/// node's wait (group_wait + peer timeout), plus two group intervals, plus slack.
const QUIET: Duration = Duration::from_secs(9);

/// The notifications the receiver got: Alertmanager's webhook payloads.
type Notifications = Arc<Mutex<Vec<Value>>>;

/// A webhook receiver on 127.0.0.1 port 0 recording every notification.
async fn receiver() -> (SocketAddr, Notifications) {
    let got: Notifications = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(got): State<Notifications>, body: String| async move {
                    got.lock()
                        .unwrap()
                        .push(serde_json::from_str(&body).unwrap());
                    StatusCode::OK
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, got)
}

/// The firing notifications that name `probe`.
fn notified(got: &Notifications, probe: &str) -> Vec<Value> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|n| {
            n["status"] == "firing"
                && n["alerts"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a["labels"]["probe"] == probe))
        })
        .cloned()
        .collect()
}

/// The probes' target: `/a` and `/b` answer the status the test sets.
async fn target(a: Arc<AtomicU16>, b: Arc<AtomicU16>) -> SocketAddr {
    let app = Router::new()
        .route(
            "/{which}",
            get(
                |State((a, b)): State<(Arc<AtomicU16>, Arc<AtomicU16>)>,
                 UrlPath(which): UrlPath<String>| async move {
                    let status = if which == "a" { &a } else { &b };
                    StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap()
                },
            ),
        )
        .with_state((a, b));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// One Alertmanager node of the cluster.
struct Node {
    proc: Option<Proc>,
    base: String,
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Starts Alertmanager node `name` on `web` and `cluster`, peering with `peer`.
fn start_node(dir: &Path, name: &'static str, web: u16, cluster: u16, peer: u16) -> Node {
    let config = dir.join("alertmanager.yml");
    let mut cmd = Command::new(ALERTMANAGER);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join(name).display()))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .arg(format!("--cluster.listen-address=127.0.0.1:{cluster}"))
        .arg(format!("--cluster.advertise-address=127.0.0.1:{cluster}"))
        .arg(format!("--cluster.peer=127.0.0.1:{peer}"))
        .arg(format!("--cluster.peer-timeout={PEER_TIMEOUT}"))
        .arg("--cluster.gossip-interval=100ms")
        .arg("--cluster.pushpull-interval=2s")
        .arg("--cluster.settle-timeout=10s")
        .arg("--log.level=debug");
    Node {
        proc: Some(Proc::spawn(name, cmd, dir)),
        base: format!("http://127.0.0.1:{web}"),
    }
}

/// Two nodes that see each other, their cluster settled.
async fn cluster(dir: &Path, hook: SocketAddr) -> [Node; 2] {
    assert!(
        Path::new(ALERTMANAGER).exists(),
        "{ALERTMANAGER} is missing: install Debian's prometheus-alertmanager (scripts/test does)"
    );
    std::fs::write(
        dir.join("alertmanager.yml"),
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname, probe]\n  group_wait: {GROUP_WAIT}\n  group_interval: {GROUP_INTERVAL}\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: http://{hook}/hook\n        send_resolved: false\n"
        ),
    )
    .unwrap();
    let ports: Vec<u16> = (0..4).map(|_| free_port().port()).collect();
    let nodes = [
        start_node(dir, "am1", ports[0], ports[2], ports[3]),
        start_node(dir, "am2", ports[1], ports[3], ports[2]),
    ];
    let http = http();
    for node in &nodes {
        eventually(
            "a settled two-node cluster",
            Duration::from_secs(30),
            || {
                let http = http.clone();
                let url = format!("{}/api/v2/status", node.base);
                async move {
                    let status: Value = http.get(url).send().await.ok()?.json().await.ok()?;
                    let cluster = &status["cluster"];
                    (cluster["status"] == "ready"
                        && cluster["peers"].as_array().map(Vec::len) == Some(2))
                    .then_some(())
                }
            },
        )
        .await;
    }
    nodes
}

/// The alerts `node` lists as active for `probe`.
async fn active(node: &Node, probe: &str) -> Vec<Value> {
    let url = reqwest::Url::parse_with_params(
        &format!("{}/api/v2/alerts", node.base),
        [
            ("active", "true"),
            ("filter", &format!("probe=\"{probe}\"")),
        ],
    )
    .unwrap();
    let list: Value = http().get(url).send().await.unwrap().json().await.unwrap();
    list.as_array().unwrap().clone()
}

/// An agent's directory and process.
struct Agent {
    proc: Option<Proc>,
    db: PathBuf,
    /// Its stderr.
    log: PathBuf,
}

/// Starts `sonde run` in `dir` with probes `web-a` and `web-b` on `target`,
/// both in one health set, alerting the cluster through `urls`.
fn start_agent(dir: &Path, name: &'static str, target: SocketAddr, nodes: &[Node; 2]) -> Agent {
    std::fs::create_dir_all(dir).unwrap();
    let probe = |p: &str| {
        format!(
            "[[probe]]\nname = \"web-{p}\"\nkind = \"http\"\nhealth_set = \"Shop.Frontend\"\nurl = \"http://{target}/{p}\"\nevery = \"1s\"\ntimeout = \"1s\"\nfailure_threshold = 2\nalert = [\"am\"]\n\n"
        )
    };
    std::fs::write(
        dir.join("sonde.toml"),
        format!(
            "[store]\npath = \"sonde.db\"\n\n[[channel]]\nname = \"am\"\nkind = \"alertmanager\"\nurls = [\"{}\", \"{}\"]\ntimeout = \"2s\"\nrepost_every = \"5s\"\n\n{}{}",
            nodes[0].base,
            nodes[1].base,
            probe("a"),
            probe("b"),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sonde"));
    cmd.current_dir(dir)
        .args(["run", "--config", "sonde.toml"])
        .env_remove("SONDE_CONFIG")
        .env("RUST_LOG", "sonde=info");
    Agent {
        proc: Some(Proc::spawn(name, cmd, dir)),
        db: dir.join("sonde.db"),
        log: dir.join(format!("{name}.log")),
    }
}

/// Whether the agent's outbox holds the firing alert of `probe`, delivered.
fn delivered(agent: &Agent, probe: &str) -> bool {
    let read = || -> rusqlite::Result<bool> {
        let c = rusqlite::Connection::open(&agent.db)?;
        let n: i64 = c.query_row(
            "SELECT count(*) FROM outbox WHERE channel = 'am' AND key LIKE ?1 \
             AND key LIKE '%:firing' AND delivered_at IS NOT NULL",
            [format!("{probe}:%")],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    };
    agent.db.exists() && read().unwrap_or(false)
}

/// Waits for the first firing notification of `probe`, then long enough for
/// any duplicate to arrive, and returns them all.
async fn notifications_of(got: &Notifications, probe: &str) -> Vec<Value> {
    eventually(
        &format!("a notification for {probe}"),
        Duration::from_secs(40),
        || async { (!notified(got, probe).is_empty()).then_some(()) },
    )
    .await;
    tokio::time::sleep(QUIET).await;
    notified(got, probe)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ha_pair_notifies_each_incident_once_even_with_a_node_and_an_agent_down() {
    let dir = TempDir::new().unwrap();
    let (hook, got) = receiver().await;
    let (a, b) = (Arc::new(AtomicU16::new(200)), Arc::new(AtomicU16::new(200)));
    let web = target(a.clone(), b.clone()).await;
    let mut nodes = cluster(dir.path(), hook).await;
    let mut agents = [
        start_agent(&dir.path().join("agent1"), "agent1", web, &nodes),
        start_agent(&dir.path().join("agent2"), "agent2", web, &nodes),
    ];

    // The first incident: both agents see it and post it to both nodes.
    a.store(500, Ordering::SeqCst);
    eventually(
        "both agents delivered the firing alert",
        Duration::from_secs(30),
        || async { agents.iter().all(|g| delivered(g, "web-a")).then_some(()) },
    )
    .await;
    let first = notifications_of(&got, "web-a").await;
    assert_eq!(first.len(), 1, "one incident, one notification: {first:#?}");
    let alerts = first[0]["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{first:#?}");
    assert_eq!(alerts[0]["labels"]["alertname"], "SondeProbe");
    assert_eq!(alerts[0]["labels"]["health_set"], "Shop.Frontend");
    // Both agents' reports are one alert on each node: their labels match.
    for node in &nodes {
        let listed = active(node, "web-a").await;
        assert_eq!(listed.len(), 1, "{}: {listed:#?}", node.base);
    }

    // One agent and one node go down without a word; the next incident is
    // seen by the survivor, which the dead node does not hold back.
    drop(agents[0].proc.take());
    drop(nodes[0].proc.take());
    b.store(500, Ordering::SeqCst);
    eventually(
        "the surviving agent delivered the second incident",
        Duration::from_secs(30),
        || async { delivered(&agents[1], "web-b").then_some(()) },
    )
    .await;
    let second = notifications_of(&got, "web-b").await;
    assert_eq!(
        second.len(),
        1,
        "the next incident, one notification: {second:#?}"
    );
    assert_eq!(
        notified(&got, "web-a").len(),
        1,
        "the first incident is not notified again"
    );
    let listed = active(&nodes[1], "web-b").await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    // The survivor logged the dead node, by its address only.
    let log = std::fs::read_to_string(&agents[1].log).unwrap();
    let dead = nodes[0].base.clone();
    assert!(
        log.lines().any(
            |l| l.contains("an Alertmanager node did not take the alert")
                && l.contains(&format!("node={dead}"))
        ),
        "{log}"
    );
    // The survivor is still running.
    assert!(agents[1].proc.as_mut().unwrap().try_wait().is_none());
}
