//! Telemetry through the real binary: the agent serves `/healthz` and `/metrics`
//! on its `[api]` address, and Debian's Prometheus scrapes it every second; the
//! test asks Prometheus' HTTP API for the probe's blackbox-style series.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{client, eventually, free_port, serve_forever, Proc};

const PROMETHEUS: &str = "/usr/bin/prometheus";

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
