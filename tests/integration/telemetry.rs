//! Telemetry through the real binary: the agent serves `/healthz` and `/metrics`
//! on its `[api]` address, and Debian's Prometheus scrapes it every second; the
//! test asks Prometheus' HTTP API for the probe's blackbox-style series.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::serve_forever;

const PROMETHEUS: &str = "/usr/bin/prometheus";

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A child process killed when the test ends, however it ends; its stderr
/// goes to a file that is printed if the test fails.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name, child, log }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- {} (last lines) ---", self.name);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Polls `f` until it gives a value, or fails the test after `deadline`.
async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The instant vector of a PromQL query, as (labels, value) pairs.
async fn query(http: &reqwest::Client, prom: SocketAddr, q: &str) -> Option<Vec<(Value, f64)>> {
    let url =
        reqwest::Url::parse_with_params(&format!("http://{prom}/api/v1/query"), [("query", q)])
            .unwrap();
    let body: Value = http.get(url).send().await.ok()?.json().await.ok()?;
    if body["status"] != "success" {
        return None;
    }
    let result = body["data"]["result"].as_array()?;
    Some(
        result
            .iter()
            .filter_map(|s| {
                let v = s["value"][1].as_str()?.parse().ok()?;
                Some((s["metric"].clone(), v))
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_probe_success_from_the_agent() {
    assert!(
        Path::new(PROMETHEUS).exists(),
        "{PROMETHEUS} is missing: run scripts/test, which installs Debian's prometheus"
    );
    let web = serve_forever(br#"{"ok":true}"#.to_vec()).await;
    let api = free_port();
    let prom = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sonde.toml"),
        format!(
            r#"[api]
listen = "{api}"

[[probe]]
name = "web-front"
kind = "http"
health_set = "site"
url = "http://{web}/health"
every = "1s"
timeout = "2s"
"#
        ),
    )
    .unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_sonde"));
    agent
        .current_dir(dir.path())
        .args(["run", "--config", "sonde.toml"])
        .env_remove("SONDE_CONFIG")
        .env("RUST_LOG", "sonde=info");
    let _agent = Proc::spawn("sonde", agent, dir.path());

    let http = client();
    // The agent's own endpoints first.
    let health: Value = eventually("/healthz", Duration::from_secs(20), || async {
        http.get(format!("http://{api}/healthz"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    })
    .await;
    assert_eq!(health, serde_json::json!({"status": "ok"}));
    let text = eventually(
        "a probe run in /metrics",
        Duration::from_secs(20),
        || async {
            let r = http
                .get(format!("http://{api}/metrics"))
                .send()
                .await
                .ok()?;
            let ct = r.headers().get("content-type")?.to_str().ok()?.to_string();
            assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
            let text = r.text().await.ok()?;
            text.contains("probe_success{").then_some(text)
        },
    )
    .await;
    let labels = r#"probe="web-front",kind="http",health_set="site""#;
    for want in [
        format!("probe_success{{{labels}}} 1"),
        format!("probe_http_status_code{{{labels}}} 200"),
        "sonde_config_reload_success 1".to_string(),
    ] {
        assert!(text.lines().any(|l| l == want), "missing {want} in\n{text}");
    }

    // Then a real Prometheus scraping it every second.
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: sonde
    static_configs:
      - targets: ["{api}"]
"#
        ),
    )
    .unwrap();
    let mut cmd = Command::new(PROMETHEUS);
    cmd.current_dir(dir.path()).args([
        "--config.file=prometheus.yml",
        &format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()),
        &format!("--web.listen-address={prom}"),
    ]);
    let _prometheus = Proc::spawn("prometheus", cmd, dir.path());

    let q = r#"probe_success{probe="web-front"}"#;
    let got = eventually(
        "probe_success = 1 in Prometheus",
        Duration::from_secs(60),
        || async {
            let v = query(&http, prom, q).await?;
            v.into_iter().find(|(_, v)| *v == 1.0)
        },
    )
    .await;
    assert_eq!(got.0["kind"], "http");
    assert_eq!(got.0["health_set"], "site");
    assert_eq!(got.0["job"], "sonde");
    // Prometheus parsed the whole exposition: the scrape is up and the
    // histogram and counters arrived with it.
    let up = query(&http, prom, r#"up{job="sonde"}"#).await.unwrap();
    assert_eq!(up.first().map(|u| u.1), Some(1.0));
    let count = query(
        &http,
        prom,
        r#"sonde_probe_duration_seconds_count{probe="web-front"}"#,
    )
    .await
    .unwrap();
    assert!(count.first().is_some_and(|c| c.1 >= 1.0), "{count:?}");
    let runs = query(
        &http,
        prom,
        r#"sum(sonde_probe_runs_total{kind="http",status="ok"})"#,
    )
    .await
    .unwrap();
    assert!(runs.first().is_some_and(|c| c.1 >= 1.0), "{runs:?}");
}
