//! The shipped Prometheus rules and Grafana dashboard against the real thing:
//! the agent runs a healthy and a broken health set, a certificate probe, a
//! metadata probe (whose phase feeds the phase-duration panel) and a webhook
//! channel; Debian's Prometheus scrapes it every second and evaluates
//! `packaging/prometheus/sonde-rules.yml`. Every rule must evaluate without
//! error, every recording rule and every alert's expression (without its
//! threshold, so an alert that rightly does not fire is still checked) must
//! return series, and so must every query of the dashboard.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{client, eventually, free_port, root, serve_forever, Proc};

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// What each alert is made of, without its threshold: every piece must be in
/// the alert's expression and return series from a healthy setup. A new alert
/// without an entry fails the test.
const ALERT_SERIES: &[(&str, &[&str])] = &[
    (
        "SondeHealthSetDown",
        &["sonde:health_set_probes_failing:sum"],
    ),
    ("SondeCertificateExpiring", &["sonde:certificate_days_left"]),
    (
        "SondeCertificateExpiringCritical",
        &["sonde:certificate_days_left"],
    ),
    ("SondeAgentDown", &[r#"up{job="sonde"}"#]),
    // absent() returns nothing while the agent is there: check what it watches.
    ("SondeAgentAbsent", &[r#"sonde_build_info{job="sonde"}"#]),
    (
        "SondeOutboxGrowing",
        &["sonde_outbox_depth", "deriv(sonde_outbox_depth[15m])"],
    ),
    (
        "SondeAlertDeliveryFailing",
        &[
            r#"sum by (job, instance, channel) (sonde:alert_deliveries:rate15m{result=~"failed|timeout|refused"})"#,
            r#"sum by (job, instance, channel) (sonde:alert_deliveries:rate15m{result="delivered"})"#,
        ],
    ),
    (
        "SondeAlertRefused",
        &[r#"increase(sonde_alert_deliveries_total{result="refused"}[1h])"#],
    ),
    (
        "SondeSchedulerLate",
        &["sonde:scheduler_lateness_seconds:p99_5m"],
    ),
    ("SondeConfigReloadFailed", &["sonde_config_reload_success"]),
];

/// Runs an instant query; `Err` carries Prometheus' error or the transport's.
async fn query(http: &reqwest::Client, prom: SocketAddr, q: &str) -> Result<Vec<Value>, String> {
    let url =
        reqwest::Url::parse_with_params(&format!("http://{prom}/api/v1/query"), [("query", q)])
            .unwrap();
    let body: Value = http
        .get(url)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("{}: {}", body["errorType"], body["error"]));
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn squeeze(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// A dashboard query with Grafana's variables replaced as "All" would.
fn expand(expr: &str) -> String {
    expr.replace("$instance", ".+")
        .replace("$health_set", ".+")
        .replace("$__rate_interval", "1m")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboard_queries_work_against_a_real_prometheus() {
    assert!(
        Path::new(PROMETHEUS).exists(),
        "{PROMETHEUS} is missing: run scripts/test, which installs Debian's prometheus"
    );
    let web = serve_forever(br#"{"ok":true}"#.to_vec()).await;
    let hook = serve_forever(Vec::new()).await;
    let closed = free_port();
    let api = free_port();
    let prom = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["sonde.test".to_string()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("sonde.toml"),
        format!(
            r#"[api]
listen = "{api}"

[[channel]]
name = "hook"
kind = "webhook"
url = "http://{hook}/alerts"

[[probe]]
name = "web-front"
kind = "http"
health_set = "site"
url = "http://{web}/health"
every = "1s"
timeout = "2s"

[[probe]]
name = "site-cert"
kind = "certificate"
health_set = "site"
path = "cert.pem"
min_key_bits = 256
every = "1s"

[[probe]]
name = "backend"
kind = "http"
health_set = "broken"
url = "http://{closed}/health"
every = "1s"
timeout = "2s"
failure_threshold = 1
alert = ["hook"]

# Not metadata: critical, but its metadata_fetch phase is timed all the same.
[[probe]]
name = "sts-metadata"
kind = "metadata"
health_set = "broken"
url = "http://{web}/metadata"
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

    let rules = root().join("packaging/prometheus/sonde-rules.yml");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - "{}"
scrape_configs:
  - job_name: sonde
    static_configs:
      - targets: ["{api}"]
"#,
            rules.display()
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
    let http = client();

    // Every rule evaluated without error and every recording rule produced
    // series: rates and quantiles need a few scrapes first.
    let groups: Vec<Value> = eventually(
        "every rule evaluated with recorded series",
        Duration::from_secs(90),
        || async {
            let body: Value = http
                .get(format!("http://{prom}/api/v1/rules"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let groups = body["data"]["groups"].as_array()?.clone();
            let rules: Vec<&Value> = groups
                .iter()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            if rules.is_empty() || rules.iter().any(|r| r["health"] != "ok") {
                return None;
            }
            for r in rules.iter().filter(|r| r["type"] == "recording") {
                let name = r["name"].as_str()?;
                if query(&http, prom, name).await.ok()?.is_empty() {
                    return None;
                }
            }
            // The delivery counter moves once the broken probe has alerted.
            let delivered = query(
                &http,
                prom,
                r#"sonde_alert_deliveries_total{channel="hook",result="delivered"} > 0"#,
            )
            .await
            .ok()?;
            (!delivered.is_empty()).then_some(groups)
        },
    )
    .await;
    let rules: Vec<&Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    for r in &rules {
        assert_eq!(r["health"], "ok", "{r}");
        assert!(r["lastError"].as_str().unwrap_or("").is_empty(), "{r}");
    }
    assert_eq!(
        rules.iter().filter(|r| r["type"] == "recording").count(),
        7,
        "the recording rules were checked above"
    );

    // Each alert's pieces, inside its expression, returning series.
    let alerts: Vec<&Value> = rules
        .iter()
        .copied()
        .filter(|r| r["type"] == "alerting")
        .collect();
    assert_eq!(alerts.len(), ALERT_SERIES.len());
    for alert in alerts {
        let name = alert["name"].as_str().unwrap();
        let (_, pieces) = ALERT_SERIES
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} has no entry in ALERT_SERIES"));
        let expr = squeeze(alert["query"].as_str().unwrap());
        for piece in *pieces {
            assert!(
                expr.contains(&squeeze(piece)),
                "{piece} not in {name}: {expr}"
            );
            let got = query(&http, prom, piece)
                .await
                .unwrap_or_else(|e| panic!("{piece}: {e}"));
            assert!(!got.is_empty(), "{name}: {piece} returned no series");
        }
    }
    // The broken health set, and only it, is on its way to SondeHealthSetDown.
    let body: Value = http
        .get(format!("http://{prom}/api/v1/alerts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let down: Vec<&Value> = body["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["alertname"] == "SondeHealthSetDown")
        .collect();
    assert_eq!(down.len(), 1, "{body}");
    assert_eq!(down[0]["labels"]["health_set"], "broken");
    assert_eq!(down[0]["state"], "pending");

    // The dashboard: a datasource variable, and every query returns series.
    let text =
        std::fs::read_to_string(root().join("packaging/grafana/sonde-dashboard.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["type"] == "datasource"
        && v["query"] == "prometheus"
        && v["name"] == "datasource"));
    for var in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(var["datasource"]["uid"], "${datasource}");
        let def = var["definition"].as_str().unwrap();
        let inner = def
            .strip_prefix("label_values(")
            .and_then(|d| d.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{def}"));
        let (metric, label) = inner.rsplit_once(',').unwrap();
        let got = query(&http, prom, &expand(metric)).await.unwrap();
        assert!(!got.is_empty(), "{def}");
        assert!(
            got.iter().all(|s| s["metric"][label.trim()].is_string()),
            "{def}"
        );
    }
    let mut checked = 0;
    for panel in dash["panels"].as_array().unwrap() {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], "${datasource}");
            let expr = expand(target["expr"].as_str().unwrap());
            let got = query(&http, prom, &expr)
                .await
                .unwrap_or_else(|e| panic!("{}: {expr}: {e}", panel["title"]));
            assert!(
                !got.is_empty(),
                "{}: {expr} returned no series",
                panel["title"]
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked} dashboard queries");
}
