//! The HTTP API and the status page through the real binary: `sonde run` with
//! `[api]` on loopback, three probes in two health sets (an HTTP server that
//! answers, a port nothing listens on, an openssl-made certificate 20 days from
//! expiry); then the JSON endpoints, the bearer token, the rate limit,
//! `sonde status` and `sonde probe --remote` against it, and the page loaded in
//! Debian's headless Chromium. Then `sonde demo`: the URLs it prints answer,
//! and with the OAuth certificate revoked in its lab the page draws the push
//! chain broken at token-issuance, in Chromium at a phone's and a desktop's size.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    client, eventually, free_port, openssl, serve_forever, sonde_in, stderr, stdout, Proc,
};

const CHROMIUM: &str = "/usr/bin/chromium";
const TOKEN: &str = "itest-token-5f3a";

/// Starts the agent in `dir`; returns its API address once `/healthz` answers
/// and every probe has a result.
async fn start_agent(dir: &Path) -> (Proc, SocketAddr) {
    let web = serve_forever(br#"{"ok":true}"#.to_vec()).await;
    let closed = free_port();
    let api = free_port();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "oauth.key",
            "-out",
            "oauth.pem",
            "-days",
            "20",
            "-subj",
            "/CN=Exchange Server Auth Certificate",
        ],
    );
    std::fs::write(dir.join("api.token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(
        dir.join("sonde.toml"),
        format!(
            r#"[api]
listen = "{api}"
token_file = "api.token"

[[probe]]
name = "web-front"
kind = "http"
health_set = "site"
url = "http://{web}/health"
every = "1s"
timeout = "2s"

[[probe]]
name = "api-down"
kind = "http"
health_set = "site"
url = "http://{closed}/health"
every = "1s"
timeout = "2s"
failure_threshold = 1

[[probe]]
name = "oauth-cert"
kind = "certificate"
health_set = "certs"
path = "oauth.pem"
every = "1s"
failure_threshold = 1
"#
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sonde"));
    cmd.current_dir(dir)
        .args(["run", "--config", "sonde.toml"])
        .env_remove("SONDE_CONFIG")
        .env_remove("SONDE_API_TOKEN")
        .env("RUST_LOG", "sonde=info");
    let agent = Proc::spawn("sonde", cmd, dir);
    let http = client();
    eventually(
        "every probe's first result in /api/v1/health",
        Duration::from_secs(30),
        || async {
            let v: Value = http
                .get(format!("http://{api}/api/v1/health"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let sets = v["health_sets"].as_array()?;
            let all = sets
                .iter()
                .flat_map(|s| s["probes"].as_array().into_iter().flatten())
                .all(|p| !p["last_result"].is_null() && p["state"] != "unknown");
            all.then_some(())
        },
    )
    .await;
    (agent, api)
}

fn set<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["health_sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no health set {name} in {report}"))
}

fn probe_in<'a>(set: &'a Value, name: &str) -> &'a Value {
    set["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no probe {name} in {set}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reports_health_and_runs_probes_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let (_agent, api) = start_agent(dir.path()).await;
    let http = client();
    let base = format!("http://{api}");

    // The health report.
    let report: Value = http
        .get(format!("{base}/api/v1/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["state"], "unhealthy", "{report}");
    let site = set(&report, "site");
    assert_eq!(site["state"], "unhealthy");
    assert_eq!(site["monitor_count"], 2);
    let web = probe_in(site, "web-front");
    assert_eq!(web["state"], "healthy");
    assert_eq!(web["last_result"]["status"], "ok");
    assert!(web["since"].is_string());
    let down = probe_in(site, "api-down");
    assert_eq!(down["state"], "unhealthy");
    assert_eq!(down["last_result"]["status"], "critical");
    assert_eq!(down["last_result"]["category"], "network");
    let certs = set(&report, "certs");
    assert_eq!(certs["state"], "degraded");
    let cert = probe_in(certs, "oauth-cert");
    assert_eq!(cert["last_result"]["status"], "warning");
    for key in ["summary", "started_at", "duration_seconds"] {
        assert!(!cert["last_result"][key].is_null(), "{key} in {cert}");
    }

    // The probes, and one with its recent results, newest first and capped.
    let list: Value = http
        .get(format!("{base}/api/v1/probes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-front", "api-down", "oauth-cert"]);
    assert_eq!(list["probes"][0]["schedule"], "every 1s");
    assert_eq!(list["probes"][0]["enabled"], true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let one: Value = http
        .get(format!("{base}/api/v1/probes/web-front?limit=500"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let results = one["results"].as_array().unwrap();
    assert!(
        results.len() >= 2 && results.len() <= 200,
        "{}",
        results.len()
    );
    let times: Vec<&str> = results
        .iter()
        .map(|r| r["started_at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let r = http
        .get(format!("{base}/api/v1/probes/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "not_found");
    assert!(v["message"].is_string());

    // On-demand runs: the token, then the rate limit.
    let run = format!("{base}/api/v1/probes/web-front/run");
    for auth in [None, Some("Bearer not-the-token")] {
        let mut req = http.post(&run);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert!(r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        let text = r.text().await.unwrap();
        assert!(!text.contains(TOKEN));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"], "unauthorized");
    }
    let r = http
        .post(format!("{base}/api/v1/probes/nope/run"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http.post(&run).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys.len(),
        9,
        "the object of `sonde probe --format json`: {v}"
    );
    assert_eq!(v["probe"], "web-front");
    assert_eq!(v["kind"], "http");
    assert_eq!(v["health_set"], "site");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["category"], Value::Null);
    assert_eq!(v["observations"]["status_code"], 200);
    assert!(v["duration_seconds"].as_f64().unwrap() >= 0.0);
    let r = http.post(&run).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "rate_limited");

    // `sonde status` finds the agent through [api] listen.
    let out = sonde_in(dir.path(), &["status", "--config", "sonde.toml"], &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}{}", stderr(&out));
    assert!(text.contains("site: unhealthy\n"), "{text}");
    assert!(text.contains("certs: degraded\n"), "{text}");
    let web_line = text.lines().find(|l| l.contains("web-front")).unwrap();
    assert!(
        web_line.contains("healthy") && web_line.contains("ok"),
        "{web_line}"
    );
    let out = sonde_in(
        Path::new("/"),
        &["status", "--remote", &base, "--format", "json"],
        &[],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["health_sets"].as_array().unwrap().len(), 2);

    // `sonde probe --remote`: the same output and exit codes as a local run.
    let out = sonde_in(
        Path::new("/"),
        &["probe", "oauth-cert", "--remote", &base, "--format", "json"],
        &[("SONDE_API_TOKEN", TOKEN)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "warning");
    assert_eq!(v["category"], "certificate");
    let left = v["observations"]["seconds_left"].as_f64().unwrap();
    assert!(left > 19.0 * 86_400.0 && left <= 20.0 * 86_400.0, "{left}");
    // Rate-limited like any other run: exit 3 with the agent's message.
    let out = sonde_in(
        Path::new("/"),
        &["probe", "oauth-cert", "--remote", &base],
        &[("SONDE_API_TOKEN", TOKEN)],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("429"), "{}", stderr(&out));
    let out = sonde_in(
        dir.path(),
        &[
            "probe",
            "api-down",
            "--remote",
            &base,
            "--token-file",
            "api.token",
            "--format",
            "nagios",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("CRITICAL - "), "{}", stdout(&out));
    // A wrong token: exit 3, the agent's message, and no token on the screen.
    let out = sonde_in(
        Path::new("/"),
        &["probe", "api-down", "--remote", &base],
        &[("SONDE_API_TOKEN", "wrong-token-value")],
    );
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains("401"), "{err}");
    assert!(
        !err.contains("wrong-token-value") && !err.contains(TOKEN),
        "{err}"
    );
}

/// Runs Debian's headless Chromium on `url` with `args` (a profile in `dir`),
/// failing the test if it fails or takes more than 90 s.
fn chromium(dir: &Path, url: &str, args: &[&str]) -> std::process::Output {
    let profile = dir.join("chromium-profile");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chromium");
    // Read stdout on a thread so a large DOM cannot fill the pipe.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut buf);
        buf
    });
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("chromium {args:?} did not finish in 90s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut out = child.wait_with_output().unwrap();
    out.stdout = reader.join().unwrap();
    assert!(
        out.status.success(),
        "chromium {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A screenshot of `url` at `width`x`height`, checked to be a PNG of that
/// width, and copied to `SONDE_KEEP_SCREENSHOT` (a directory) when set, for a
/// person to look at.
fn screenshot(dir: &Path, url: &str, name: &str, width: u32, height: u32) {
    let shot = dir.join(format!("{name}-{width}x{height}.png"));
    chromium(
        dir,
        url,
        &[
            &format!("--screenshot={}", shot.display()),
            &format!("--window-size={width},{height}"),
            "--hide-scrollbars",
        ],
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    // Width and height sit in the IHDR chunk.
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), width);
    println!("screenshot: {}", shot.display());
    if let Some(keep) = std::env::var_os("SONDE_KEEP_SCREENSHOT") {
        let to = Path::new(&keep).join(shot.file_name().unwrap());
        std::fs::copy(&shot, &to).unwrap();
        println!("copied to {}", to.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_in_headless_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/test, which installs Debian's chromium"
    );
    let dir = tempfile::tempdir().unwrap();
    let (_agent, api) = start_agent(dir.path()).await;
    let url = format!("http://{api}/");
    let chromium = |args: &[&str]| chromium(dir.path(), &url, args);
    let dom = String::from_utf8(chromium(&["--dump-dom"]).stdout).unwrap();
    for set in ["site", "certs"] {
        assert!(
            dom.contains(&format!("data-health-set=\"{set}\"")),
            "no health set {set} in\n{dom}"
        );
    }
    for probe in ["web-front", "api-down", "oauth-cert"] {
        assert!(
            dom.contains(&format!("data-probe=\"{probe}\"")),
            "no probe {probe} in\n{dom}"
        );
    }
    assert!(dom.contains("<span class=\"badge unhealthy\">unhealthy</span>"));
    assert!(dom.contains("certificate expires in 19d"), "{dom}");
    assert!(dom.contains("class=\"strip\""));
    let shot = dir.path().join("status-412x915.png");
    chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=412,915",
        "--hide-scrollbars",
    ]);
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    // Width and height sit in the IHDR chunk.
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    assert_eq!(width, 412);
    println!("status page screenshot: {}", shot.display());
    // Kept when SONDE_KEEP_SCREENSHOT names a directory, for a person to look at.
    if let Some(keep) = std::env::var_os("SONDE_KEEP_SCREENSHOT") {
        let to = Path::new(&keep).join("status-412x915.png");
        std::fs::copy(&shot, &to).unwrap();
        println!("copied to {}", to.display());
    }
}

/// `sonde demo` running, its stdout read line by line; stopped with SIGINT
/// (so that it removes its directory) when the test ends.
struct Demo {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn start() -> Demo {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_sonde"))
            .arg("demo")
            .env_remove("SONDE_CONFIG")
            .env_remove("SONDE_API_TOKEN")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        Demo {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line (from now on) for which `f` gives a value, within `within`.
    fn wait_for<T>(&mut self, what: &str, within: Duration, f: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) else {
                continue;
            };
            let got = f(&line);
            self.seen.push(line);
            if let Some(v) = got {
                return v;
            }
        }
        panic!("no {what} in {within:?}:\n{}", self.seen.join("\n"));
    }

    /// The URL printed after `label` (such as `status:`).
    fn url(&mut self, label: &str) -> String {
        self.wait_for(label, Duration::from_secs(60), |l| {
            l.strip_prefix(label)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_string)
        })
    }

    /// Waits until `probe`'s result line says `status` (`OK`, `CRITICAL`).
    fn result(&mut self, probe: &str, status: &str) {
        self.wait_for(
            &format!("{status} result of {probe}"),
            Duration::from_secs(60),
            |l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                (words.len() > 2 && words[1] == status && words[2] == probe).then_some(())
            },
        )
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo prints where its status page, API, `/metrics` and `/healthz` are,
/// on loopback, and they answer there; POST endpoints are off (no token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sonde_demo_serves_the_page_api_and_metrics_at_the_urls_it_prints() {
    let mut demo = Demo::start();
    let page = demo.url("status:");
    let api = demo.url("api:");
    let metrics = demo.url("metrics:");
    let healthz = demo.url("healthz:");
    for url in [&page, &api, &metrics, &healthz] {
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    }
    let base = page.trim_end_matches('/').to_string();
    assert_eq!(api, format!("{base}/api/v1/health"));
    assert_eq!(metrics, format!("{base}/metrics"));
    assert_eq!(healthz, format!("{base}/healthz"));
    // Results appear only once the agent runs, and with it the server.
    demo.result("token-issuance", "OK");
    let http = client();
    let get = |url: String| {
        let http = http.clone();
        async move {
            let r = http.get(&url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, body) = get(healthz).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (status, body) = get(metrics).await;
    assert_eq!(status, 200);
    assert!(body.contains("sonde_build_info{"), "{body}");
    assert!(body.contains("probe=\"token-issuance\""), "{body}");
    let (status, body) = get(page.clone()).await;
    assert_eq!(status, 200);
    for set in ["PushNotifications.Proxy", "Exchange.HybridApp"] {
        assert!(
            body.contains(&format!("data-health-set=\"{set}\"")),
            "{body}"
        );
    }
    let (status, body) = get(api).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["health_sets"].as_array().unwrap().len(), 2, "{v}");
    let run = http
        .post(format!("{base}/api/v1/probes/token-issuance/run"))
        .header("authorization", "Bearer anything")
        .send()
        .await
        .unwrap();
    assert_eq!(run.status().as_u16(), 403);
}

/// The lab revokes the OAuth certificate: token-issuance is refused and
/// push-connectivity, which needs its token, fails with it. The page shows
/// token-issuance as the root cause and its link to push-connectivity as the
/// broken one, and a sparkline for every probe, as Chromium renders it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_marks_the_broken_link_and_root_cause_in_headless_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/test, which installs Debian's chromium"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Demo::start();
    let page = demo.url("status:");
    let revoke = demo.wait_for("the revoke command", Duration::from_secs(10), |l| {
        l.split_whitespace()
            .skip_while(|w| *w != "DELETE")
            .nth(1)
            .filter(|u| u.contains("/admin/credentials/"))
            .map(str::to_string)
    });
    demo.result("token-issuance", "OK");
    demo.result("push-connectivity", "OK");
    let http = client();
    let answer = http.delete(&revoke).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 204, "{revoke}");
    demo.result("token-issuance", "CRITICAL");
    demo.result("push-connectivity", "CRITICAL");
    let dom = String::from_utf8(chromium(dir.path(), &page, &["--dump-dom"]).stdout).unwrap();
    // The set with the failing probes comes first: on a phone, without scrolling.
    let first = |set: &str| dom.find(&format!("data-health-set=\"{set}\"")).unwrap();
    assert!(first("PushNotifications.Proxy") < first("Exchange.HybridApp"));
    let push = dom
        .split("data-health-set=\"PushNotifications.Proxy\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no push health set in\n{dom}"));
    let push = &push[..push.find("</section>").unwrap()];
    assert!(
        push.contains("data-chain=\"PushNotifications.Proxy\""),
        "{push}"
    );
    for (class, probe) in [
        ("ok", "oauth-certificate"),
        ("ok", "auth-metadata"),
        ("root-cause", "token-issuance"),
        ("affected", "push-connectivity"),
    ] {
        assert!(
            push.contains(&format!(
                "<g class=\"node {class}\" data-probe=\"{probe}\">"
            )),
            "{probe} is not {class} in\n{push}"
        );
    }
    assert_eq!(push.matches("class=\"edge broken\"").count(), 1, "{push}");
    assert!(push.contains(
        "<g class=\"edge broken\" data-from=\"token-issuance\" data-to=\"push-connectivity\">"
    ));
    assert!(push.contains(
        "<p class=\"broken-link\" data-from=\"token-issuance\" data-to=\"push-connectivity\">"
    ));
    let cause = push
        .split("<p class=\"root-cause\" data-probe=\"token-issuance\">")
        .nth(1)
        .unwrap_or_else(|| panic!("no root cause line in\n{push}"));
    assert!(
        cause[..cause.find("</p>").unwrap()].contains("ACS50008"),
        "{cause}"
    );
    // The other health set is whole.
    let hybrid = dom
        .split("data-health-set=\"Exchange.HybridApp\"")
        .nth(1)
        .unwrap();
    let hybrid = &hybrid[..hybrid.find("</section>").unwrap()];
    assert!(!hybrid.contains("root-cause") && !hybrid.contains("edge broken"));
    for probe in [
        "oauth-certificate",
        "auth-metadata",
        "token-issuance",
        "push-connectivity",
        "push-end-to-end",
        "auth-certificate",
        "hybrid-app-registration",
        "hybrid-app-token",
    ] {
        let at = format!("<svg class=\"spark\" data-probe=\"{probe}\" data-points=\"");
        let points: usize = dom
            .split(&at)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no sparkline for {probe}"));
        // push-end-to-end runs every 30 s and may not have run yet.
        assert!(points >= 1 || probe == "push-end-to-end", "{probe}");
    }
    screenshot(dir.path(), &page, "demo-broken", 412, 915);
    screenshot(dir.path(), &page, "demo-broken", 1280, 1000);
}
