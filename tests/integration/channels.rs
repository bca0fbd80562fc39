//! Alert channels against real receivers on 127.0.0.1: Debian's aiosmtpd (AUTH,
//! STARTTLS and implicit TLS, openssl-made certificates), Debian's Alertmanager,
//! and loopback HTTP receivers for the webhook, Slack and Teams payloads, whose
//! HMAC signature Python's `hmac` checks independently.
//!
//! aiosmtpd and Alertmanager come from `scripts/test`; a missing one fails the
//! test with what to install, it never skips.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::Utc;
use serde_json::Value;
use sonde::channel::{Alert, AlertEvent, Channel, ChannelSpec, DeliveryError, Severity};
use tempfile::TempDir;

use crate::support::{openssl, root};

const PYTHON: &str = "/usr/bin/python3";
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
pub(crate) const SMTP_USER: &str = "sonde";
const SMTP_PASSWORD: &str = "correct horse battery staple";

fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn alert(probe: &str, event: AlertEvent) -> Alert {
    let now = Utc::now();
    Alert {
        key: format!("{probe}:17:{event}"),
        event,
        severity: Severity::Critical,
        probe: probe.into(),
        kind: "token".into(),
        health_set: "PushNotifications.Proxy".into(),
        state: if event == AlertEvent::Resolved {
            "healthy".into()
        } else {
            "unhealthy".into()
        },
        category: Some("auth".into()),
        summary: "ACS rejected the assertion (HTTP 401)".into(),
        root_cause: Some("oauth-certificate".into()),
        started_at: now - chrono::Duration::minutes(5),
        ends_at: (event == AlertEvent::Resolved).then_some(now),
        created_at: now,
        observations: BTreeMap::from([("latency_seconds".into(), 0.25)]),
    }
}

/// A channel from the TOML of its kind-specific keys.
fn channel(kind: &str, toml_text: &str, base_dir: &Path) -> Channel {
    let value: toml::Value = toml::from_str(toml_text).unwrap();
    let spec = ChannelSpec::deserialize(kind, value).unwrap().unwrap();
    Channel::new("test", &spec, base_dir).unwrap()
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------- email

/// A test CA and a certificate for 127.0.0.1 signed by it, made by openssl.
pub(crate) fn smtp_certificates(d: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=sonde test CA",
    ]);
    openssl(d, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "smtp.key",
        "-out",
        "smtp.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(d, &csr);
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "smtp.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "smtp.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// aiosmtpd (tests/support/smtp_server.py) in `mode` ("starttls" or "tls").
pub(crate) struct SmtpServer {
    _child: Reaped,
    pub(crate) port: u16,
    out: PathBuf,
}

impl SmtpServer {
    fn start(dir: &Path, mode: &str) -> SmtpServer {
        SmtpServer::start_with(dir, mode, SMTP_PASSWORD)
    }

    /// aiosmtpd accepting `password` for `SMTP_USER`.
    pub(crate) fn start_with(dir: &Path, mode: &str, password: &str) -> SmtpServer {
        let ok = Command::new(PYTHON)
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "{PYTHON} cannot import aiosmtpd: install Debian's python3-aiosmtpd (scripts/test does)"
        );
        let out = dir.join(format!("mail-{mode}"));
        std::fs::create_dir_all(&out).unwrap();
        let script = root().join("tests/support/smtp_server.py");
        let mut child = Command::new(PYTHON)
            .arg(script)
            .args(["--mode", mode, "--user", SMTP_USER, "--password", password])
            .arg("--cert")
            .arg(dir.join("smtp.pem"))
            .arg("--key")
            .arg(dir.join("smtp.key"))
            .arg("--out")
            .arg(&out)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let child = Reaped(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("aiosmtpd did not print its port within 30 s");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("aiosmtpd printed {line:?} instead of its port"));
        SmtpServer {
            _child: child,
            port,
            out,
        }
    }

    /// The `n`th message received (1-based), waiting up to 10 s for it.
    pub(crate) async fn message(&self, n: usize) -> Value {
        let path = self.out.join(format!("{n}.json"));
        for _ in 0..100 {
            if let Ok(text) = std::fs::read_to_string(&path) {
                return serde_json::from_str(&text).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("aiosmtpd received no message {n}");
    }

    fn received(&self) -> usize {
        std::fs::read_dir(&self.out)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "json")
            })
            .count()
    }
}

fn email_channel(dir: &Path, tls: &str, port: u16, password_file: &str) -> Channel {
    channel(
        "email",
        &format!(
            r#"
            smtp_host = "127.0.0.1"
            smtp_port = {port}
            tls = "{tls}"
            username = "{SMTP_USER}"
            password_file = "{password_file}"
            ca_file = "ca.pem"
            from = "sonde <sonde@example.com>"
            to = ["ops@example.com", "oncall@example.com"]
            cc = ["lead@example.com"]
            timeout = "10s"
            "#
        ),
        dir,
    )
}

fn check_received_mail(mail: &Value, a: &Alert) {
    let mut rcpt: Vec<&str> = mail["rcpt_tos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    rcpt.sort();
    assert_eq!(
        rcpt,
        ["lead@example.com", "oncall@example.com", "ops@example.com"]
    );
    assert_eq!(mail["mail_from"], "sonde@example.com");
    let data = mail["data"].as_str().unwrap();
    let headers = data.split("\r\n\r\n").next().unwrap();
    for needle in [
        "Subject: [sonde] critical token-issuance is unhealthy\r\n".to_string(),
        "To: ops@example.com, oncall@example.com\r\n".to_string(),
        "Cc: lead@example.com\r\n".to_string(),
        format!("X-Sonde-Alert-Key: {}\r\n", a.key),
        "Auto-Submitted: auto-generated\r\n".to_string(),
    ] {
        assert!(
            format!("{headers}\r\n").contains(&needle),
            "{needle:?} not in headers:\n{headers}"
        );
    }
    assert!(headers.contains("Message-ID: <"), "{headers}");
    for needle in [
        "ACS rejected the assertion (HTTP 401)",
        "Probe:        token-issuance",
        "Severity:     critical",
        "Root cause:   oauth-certificate",
        "  latency_seconds = 0.25",
        "Alert key:    token-issuance:17:firing",
    ] {
        assert!(data.contains(needle), "{needle:?} not in mail:\n{data}");
    }
}

#[tokio::test]
async fn email_over_starttls_with_auth_reaches_aiosmtpd() {
    install_provider();
    let dir = TempDir::new().unwrap();
    smtp_certificates(dir.path());
    std::fs::write(dir.path().join("password"), format!("{SMTP_PASSWORD}\n")).unwrap();
    let server = SmtpServer::start(dir.path(), "starttls");
    let ch = email_channel(dir.path(), "starttls", server.port, "password");
    let a = alert("token-issuance", AlertEvent::Firing);
    ch.deliver(&a).await.unwrap();
    check_received_mail(&server.message(1).await, &a);
}

#[tokio::test]
async fn email_over_implicit_tls_reaches_aiosmtpd() {
    install_provider();
    let dir = TempDir::new().unwrap();
    smtp_certificates(dir.path());
    std::fs::write(dir.path().join("password"), SMTP_PASSWORD).unwrap();
    let server = SmtpServer::start(dir.path(), "tls");
    let ch = email_channel(dir.path(), "tls", server.port, "password");
    let a = alert("token-issuance", AlertEvent::Firing);
    ch.deliver(&a).await.unwrap();
    check_received_mail(&server.message(1).await, &a);
}

#[tokio::test]
async fn email_wrong_password_is_permanent_and_a_rotated_one_is_used_next_time() {
    install_provider();
    let dir = TempDir::new().unwrap();
    smtp_certificates(dir.path());
    let password = dir.path().join("password");
    std::fs::write(&password, "wrong-password-value\n").unwrap();
    let server = SmtpServer::start(dir.path(), "starttls");
    let ch = email_channel(dir.path(), "starttls", server.port, "password");
    let a = alert("token-issuance", AlertEvent::Firing);

    let e = ch.deliver(&a).await.unwrap_err();
    assert!(matches!(e, DeliveryError::Permanent { .. }), "{e:?}");
    let text = format!("{e} {e:?}");
    assert!(text.contains("535"), "{text}");
    assert!(!text.contains("wrong-password-value"), "{text}");
    assert_eq!(server.received(), 0);

    // The password is read at send time: the rotated file is used at once.
    std::fs::write(&password, SMTP_PASSWORD).unwrap();
    ch.deliver(&a).await.unwrap();
    check_received_mail(&server.message(1).await, &a);
}

#[tokio::test]
async fn email_to_a_dead_port_is_retryable() {
    install_provider();
    let dir = TempDir::new().unwrap();
    smtp_certificates(dir.path());
    std::fs::write(dir.path().join("password"), SMTP_PASSWORD).unwrap();
    let port = free_port();
    let ch = email_channel(dir.path(), "starttls", port, "password");
    let e = ch
        .deliver(&alert("token-issuance", AlertEvent::Firing))
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert!(
        e.to_string()
            .starts_with(&format!("email 127.0.0.1:{port}: ")),
        "{e}"
    );
}

// ---------------------------------------------------------------- alertmanager

/// Debian's Alertmanager on 127.0.0.1, clustering off, a null receiver.
struct Alertmanager {
    _child: Reaped,
    base: String,
    _dir: TempDir,
}

impl Alertmanager {
    async fn start() -> Alertmanager {
        assert!(
            Path::new(ALERTMANAGER).exists(),
            "{ALERTMANAGER} is missing: install Debian's prometheus-alertmanager (scripts/test does)"
        );
        let dir = TempDir::new().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
        )
        .unwrap();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        // The port is picked free and then handed over, so another process may
        // take it in between: try again with another one.
        for _ in 0..3 {
            let port = free_port();
            let mut child = Reaped(
                Command::new(ALERTMANAGER)
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
                    .unwrap(),
            );
            let base = format!("http://127.0.0.1:{port}");
            for _ in 0..150 {
                if child.0.try_wait().unwrap().is_some() {
                    break;
                }
                let ready = http.get(format!("{base}/-/ready")).send().await;
                if ready.is_ok_and(|r| r.status().is_success()) {
                    return Alertmanager {
                        _child: child,
                        base,
                        _dir: dir,
                    };
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.0.kill();
        }
        panic!("Alertmanager did not become ready");
    }

    /// The alerts Alertmanager lists as active for `probe`.
    async fn active(&self, probe: &str) -> Vec<Value> {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let filter = format!("probe=\"{probe}\"");
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v2/alerts", self.base),
            [
                ("active", "true"),
                ("silenced", "false"),
                ("inhibited", "false"),
                ("filter", filter.as_str()),
            ],
        )
        .unwrap();
        let list: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        list.as_array().unwrap().clone()
    }

    /// Waits up to 10 s for `pred` to hold of the active alerts of `probe`.
    async fn wait_for(
        &self,
        probe: &str,
        what: &str,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let mut last = Vec::new();
        for _ in 0..100 {
            last = self.active(probe).await;
            if pred(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}: Alertmanager lists {last:#?}");
    }
}

#[tokio::test]
async fn alertmanager_shows_the_alert_firing_then_resolved() {
    install_provider();
    let am = Alertmanager::start().await;
    let dir = TempDir::new().unwrap();
    let ch = channel(
        "alertmanager",
        &format!("url = \"{}/\"\nrepost_every = \"1m\"", am.base),
        dir.path(),
    );
    assert_eq!(ch.repost_interval(), Some(Duration::from_secs(60)));

    let firing = alert("token-issuance", AlertEvent::Firing);
    ch.deliver(&firing).await.unwrap();
    let listed = am
        .wait_for("token-issuance", "firing alert", |l| {
            l.len() == 1 && l[0]["status"]["state"] == "active"
        })
        .await;
    let a = &listed[0];
    assert_eq!(a["labels"]["alertname"], "SondeProbe");
    assert_eq!(a["labels"]["health_set"], "PushNotifications.Proxy");
    assert_eq!(a["labels"]["kind"], "token");
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["annotations"]["sonde_key"], firing.key);
    assert_eq!(a["annotations"]["root_cause"], "oauth-certificate");
    let ends: chrono::DateTime<Utc> = a["endsAt"].as_str().unwrap().parse().unwrap();
    assert!(
        ends > Utc::now() + chrono::Duration::minutes(3),
        "firing endsAt is 4 x repost_every ahead: {ends}"
    );

    // A reminder is the same alert (same labels), with its own key.
    let mut reminder = alert("token-issuance", AlertEvent::Reminder);
    reminder.key = "token-issuance:17:reminder:1".into();
    reminder.started_at = firing.started_at;
    ch.deliver(&reminder).await.unwrap();
    am.wait_for("token-issuance", "reminder", |l| {
        l.len() == 1 && l[0]["annotations"]["sonde_key"] == "token-issuance:17:reminder:1"
    })
    .await;

    let mut resolved = alert("token-issuance", AlertEvent::Resolved);
    resolved.started_at = firing.started_at;
    ch.deliver(&resolved).await.unwrap();
    am.wait_for("token-issuance", "resolution", <[Value]>::is_empty)
        .await;
}

// ---------------------------------------------------------------- webhook, slack, teams

#[derive(Debug, Clone)]
struct Request {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Vec<Request>>>,
    status: StatusCode,
    extra: Vec<(&'static str, &'static str)>,
    /// Answers with the request's headers as the body, like a debugging endpoint.
    echo: bool,
}

/// An HTTP receiver on 127.0.0.1 port 0 answering every request with `status`.
async fn receiver(
    status: u16,
    extra: Vec<(&'static str, &'static str)>,
    echo: bool,
) -> (SocketAddr, Arc<Mutex<Vec<Request>>>) {
    async fn handle(
        State(rx): State<Receiver>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::response::Response {
        let reply = if rx.echo {
            format!("{headers:?}")
        } else {
            "ok".to_string()
        };
        rx.seen.lock().unwrap().push(Request {
            path: uri.path().to_string(),
            headers,
            body,
        });
        let mut response = (rx.status, reply).into_response();
        for (k, v) in &rx.extra {
            response.headers_mut().insert(*k, v.parse().unwrap());
        }
        response
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = Receiver {
        seen: seen.clone(),
        status: StatusCode::from_u16(status).unwrap(),
        extra,
        echo,
    };
    let app = axum::Router::new().fallback(handle).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen)
}

/// `sha256=<hex>` computed by Python's hmac module, independently of ring.
fn python_signature(secret: &str, body: &[u8], dir: &Path) -> String {
    let path = dir.join("body.json");
    std::fs::write(&path, body).unwrap();
    let out = Command::new(PYTHON)
        .args([
            "-c",
            "import hashlib, hmac, sys\n\
             body = open(sys.argv[2], 'rb').read()\n\
             print('sha256=' + hmac.new(sys.argv[1].encode(), body, hashlib.sha256).hexdigest())",
            secret,
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn webhook_posts_a_signed_versioned_payload() {
    install_provider();
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("hook-secret"), "s3cret-for-hmac\n").unwrap();
    let (addr, seen) = receiver(204, vec![], false).await;
    let ch = channel(
        "webhook",
        &format!(
            r#"
            url = "http://{addr}/hooks/sonde"
            secret_file = "hook-secret"
            timeout = "5s"
            headers = {{ "X-Team" = "platform", "Authorization" = "Bearer header-token" }}
            "#
        ),
        dir.path(),
    );
    let a = alert("token-issuance", AlertEvent::Firing);
    ch.deliver(&a).await.unwrap();

    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.path, "/hooks/sonde");
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["x-sonde-alert-key"], a.key.as_str());
    assert_eq!(r.headers["x-team"], "platform");
    assert_eq!(r.headers["authorization"], "Bearer header-token");
    assert_eq!(
        r.headers["x-sonde-signature"].to_str().unwrap(),
        python_signature("s3cret-for-hmac", &r.body, dir.path()),
        "the signature covers the exact body"
    );
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["version"], "1");
    assert_eq!(body["key"], a.key);
    assert_eq!(body["event"], "firing");
    assert_eq!(body["probe"], "token-issuance");
    assert_eq!(body["observations"]["latency_seconds"], 0.25);
    let back: Alert = serde_json::from_value(body).unwrap();
    assert_eq!(back, a, "the payload holds the whole alert");
}

#[tokio::test]
async fn webhook_without_secret_sends_no_signature() {
    install_provider();
    let dir = TempDir::new().unwrap();
    let (addr, seen) = receiver(200, vec![], false).await;
    let ch = channel("webhook", &format!("url = \"http://{addr}/\""), dir.path());
    ch.deliver(&alert("p", AlertEvent::Resolved)).await.unwrap();
    let requests = seen.lock().unwrap().clone();
    assert!(!requests[0].headers.contains_key("x-sonde-signature"));
}

#[tokio::test]
async fn webhook_503_and_429_are_retryable_400_is_permanent() {
    install_provider();
    let dir = TempDir::new().unwrap();
    let a = alert("token-issuance", AlertEvent::Firing);

    let (addr, _) = receiver(503, vec![("retry-after", "7")], false).await;
    let ch = channel("webhook", &format!("url = \"http://{addr}/x\""), dir.path());
    let e = ch.deliver(&a).await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(
        e.to_string(),
        format!("webhook http://{addr}: HTTP 503 Service Unavailable: ok")
    );

    let (addr, _) = receiver(429, vec![], false).await;
    let ch = channel("webhook", &format!("url = \"http://{addr}/x\""), dir.path());
    assert!(ch.deliver(&a).await.unwrap_err().is_retryable());

    let (addr, _) = receiver(400, vec![], false).await;
    let ch = channel("webhook", &format!("url = \"http://{addr}/x\""), dir.path());
    let e = ch.deliver(&a).await.unwrap_err();
    assert!(matches!(e, DeliveryError::Permanent { .. }), "{e:?}");
    assert!(e.to_string().contains("HTTP 400 Bad Request"), "{e}");

    let port = free_port();
    let ch = channel(
        "webhook",
        &format!("url = \"http://127.0.0.1:{port}/x\""),
        dir.path(),
    );
    let e = ch.deliver(&a).await.unwrap_err();
    assert!(e.is_retryable(), "connection refused: {e:?}");
}

#[tokio::test]
async fn an_echoing_receiver_cannot_leak_secrets_into_errors() {
    install_provider();
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("hook-secret"), "s3cret-for-hmac").unwrap();
    let (addr, _) = receiver(400, vec![], true).await;
    let ch = channel(
        "webhook",
        &format!(
            r#"
            url = "http://{addr}/hooks/path-token-1234"
            secret_file = "hook-secret"
            headers = {{ "Authorization" = "Bearer header-token" }}
            "#
        ),
        dir.path(),
    );
    let e = ch
        .deliver(&alert("token-issuance", AlertEvent::Firing))
        .await
        .unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(text.contains("HTTP 400"), "{text}");
    for secret in ["header-token", "path-token-1234", "s3cret-for-hmac"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

#[tokio::test]
async fn slack_and_teams_post_their_payload_shapes() {
    install_provider();
    let dir = TempDir::new().unwrap();
    let a = alert("token-issuance", AlertEvent::Firing);

    let (addr, seen) = receiver(200, vec![], false).await;
    let slack = channel(
        "slack",
        &format!("url = \"http://{addr}/services/T000/B000/XXXX\""),
        dir.path(),
    );
    slack.deliver(&a).await.unwrap();
    let body: Value = serde_json::from_slice(&seen.lock().unwrap()[0].body).unwrap();
    assert!(body["text"]
        .as_str()
        .unwrap()
        .contains("FIRING: token-issuance is unhealthy"));
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert!(blocks.iter().any(|b| b["type"] == "section"));

    let (addr, seen) = receiver(202, vec![], false).await;
    let teams = channel(
        "teams",
        &format!("url = \"http://{addr}/workflows/abc\""),
        dir.path(),
    );
    teams.deliver(&a).await.unwrap();
    let body: Value = serde_json::from_slice(&seen.lock().unwrap()[0].body).unwrap();
    assert_eq!(body["type"], "message");
    let card = &body["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    let facts = card["content"]["body"][2]["facts"].as_array().unwrap();
    assert!(facts
        .iter()
        .any(|f| f["title"] == "Key" && f["value"] == a.key.as_str()));
}

#[test]
fn readme_channel_examples_are_valid_configuration() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("### Channels\n")
        .expect("README has ### Channels");
    let section = &readme[start..];
    let section = &section[..section[4..].find("\n## ").map_or(section.len(), |i| i + 4)];
    let mut config = String::new();
    let mut rest = section;
    while let Some(open) = rest.find("```toml\n") {
        let body = &rest[open + 8..];
        let close = body.find("```").unwrap();
        config.push_str(&body[..close]);
        config.push('\n');
        rest = &body[close..][3..];
    }
    for kind in ["email", "webhook", "slack", "alertmanager"] {
        assert!(
            config.contains(&format!("kind = \"{kind}\"")),
            "no {kind} example"
        );
    }
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("sonde.toml"), &config).unwrap();
    let out = crate::support::sonde_in(
        dir.path(),
        &["validate", "--config", "sonde.toml"],
        &[(
            "SONDE_SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/X",
        )],
    );
    assert!(
        out.status.success(),
        "{config}\n{}",
        crate::support::stderr(&out)
    );
}

/// The push probe's end-to-end mode over STARTTLS with AUTH, as a real relay asks:
/// aiosmtpd receives the tagged mail, and the device side (a loopback badge that
/// counts aiosmtpd's messages) rises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_end_to_end_sends_its_mail_over_starttls_with_auth() {
    install_provider();
    let dir = TempDir::new().unwrap();
    smtp_certificates(dir.path());
    std::fs::write(dir.path().join("password"), SMTP_PASSWORD).unwrap();
    let server = SmtpServer::start(dir.path(), "starttls");
    let out = server.out.clone();
    let app = axum::Router::new().route(
        "/badge",
        axum::routing::get(move || {
            let out = out.clone();
            async move {
                let n = std::fs::read_dir(&out)
                    .map(|d| {
                        d.filter(|e| {
                            e.as_ref()
                                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
                        })
                        .count()
                    })
                    .unwrap_or(0);
                axum::Json(serde_json::json!({"badge": n}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let badge = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    std::fs::write(
        dir.path().join("sonde.toml"),
        format!(
            r#"[[probe]]
name = "push-e2e"
kind = "push"
mode = "end_to_end"
smtp_host = "127.0.0.1"
smtp_port = {port}
tls = "starttls"
ca_file = "ca.pem"
username = "{SMTP_USER}"
password_file = "password"
from = "sonde@contoso.example"
to = "monitoring@contoso.example"
badge_url = "http://{badge}/badge"
deadline = "5s"
warn_latency = "3s"
poll_every = "100ms"
timeout = "10s"
"#,
            port = server.port
        ),
    )
    .unwrap();
    let config = sonde::config::Loader { env: &|_| None }
        .load(&dir.path().join("sonde.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let p = config.probe("push-e2e").unwrap();
    let clock: Arc<dyn sonde::clock::Clock> = Arc::new(sonde::clock::SystemClock);
    let o = sonde::agent::run_probe_now(p, &config.probes, clock)
        .await
        .unwrap();
    assert_eq!(o.status, sonde::outcome::Status::Ok, "{o:?}");
    assert!(o.summary.contains("badge rose from 0 to 1"), "{o:?}");
    let mail = server.message(1).await;
    let text = mail.to_string();
    assert!(text.contains("monitoring@contoso.example"), "{text}");
    assert_eq!(server.received(), 1);
}
