//! Replays of attacks on the real binary (issue 11): a planted SMTP password
//! that must not reach any log, idle and half-sent connections against a
//! lowered descriptor limit, and documents that point sonde at other hosts.
//! Every peer is on 127.0.0.1.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use base64::Engine;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::channels::{smtp_certificates, SmtpServer, SMTP_USER};
use crate::support::{eventually, free_port, Proc};

// ------------------------------------------------------- secrets in logs

/// A password no other text in a log could contain by chance.
const PLANTED: &str = "planted-Xq7v2Lk9-smtp-secret";

/// Runs the agent with `log` settings and an email channel until aiosmtpd got
/// its alert, then stops it and returns everything it wrote to stderr.
async fn agent_log_with_an_email_alert(log: &str, rust_log: Option<&str>) -> String {
    let dir = TempDir::new().unwrap();
    smtp_certificates(dir.path());
    std::fs::write(dir.path().join("password"), PLANTED).unwrap();
    let server = SmtpServer::start_with(dir.path(), "starttls", PLANTED);
    let down = free_port();
    std::fs::write(
        dir.path().join("sonde.toml"),
        format!(
            r#"[telemetry]
{log}

[store]
path = "sonde.db"

[[channel]]
name = "mail"
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {port}
tls = "starttls"
username = "{SMTP_USER}"
password_file = "password"
ca_file = "ca.pem"
from = "sonde <sonde@example.com>"
to = ["ops@example.com"]
timeout = "10s"

[[probe]]
name = "down"
kind = "http"
url = "http://{down}/health"
every = "1s"
timeout = "2s"
failure_threshold = 1
alert = ["mail"]
"#,
            port = server.port
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sonde"));
    cmd.current_dir(dir.path())
        .args(["run", "--config", "sonde.toml"])
        .env_remove("SONDE_CONFIG")
        .env_remove("RUST_LOG");
    if let Some(filter) = rust_log {
        cmd.env("RUST_LOG", filter);
    }
    let agent = Proc::spawn("sonde", cmd, dir.path());
    let mail = tokio::time::timeout(Duration::from_secs(30), server.message(1))
        .await
        .expect("the alert reaches aiosmtpd");
    assert!(mail.to_string().contains("down"), "{mail}");
    stop(&agent);
    std::fs::read_to_string(dir.path().join("sonde.log")).unwrap()
}

/// SIGTERM, so that the agent writes its last lines; `Proc` kills it anyway.
fn stop(agent: &Proc) {
    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(500));
}

/// Every spelling of the password a log could carry: as is, base64 alone, and
/// base64 of the SASL PLAIN message (`\0user\0password`), padded or not.
fn password_spellings() -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let plain = format!("\0{SMTP_USER}\0{PLANTED}");
    let mut all = vec![PLANTED.to_string()];
    for encoded in [b64.encode(PLANTED), b64.encode(&plain)] {
        all.push(encoded.trim_end_matches('=').to_string());
        all.push(encoded);
    }
    all
}

fn assert_no_password(log: &str, what: &str) {
    assert!(
        log.lines().count() > 20,
        "{what}: the agent logged too little for the check to mean anything:\n{log}"
    );
    for secret in password_spellings() {
        assert!(
            !log.contains(&secret),
            "{what}: the log holds {secret:?}:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smtp_password_is_in_no_log_at_debug_in_text_and_json() {
    let text = agent_log_with_an_email_alert("log_level = \"debug\"", None).await;
    assert_no_password(&text, "text, debug");
    // The debug level really was on: the SMTP client's TLS handshake logs at debug.
    assert!(text.contains("DEBUG"), "{text}");
    let json =
        agent_log_with_an_email_alert("log_level = \"debug\"\nlog_format = \"json\"", None).await;
    assert_no_password(&json, "json, debug");
    assert!(json.contains("\"level\":\"DEBUG\""), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smtp_password_is_in_no_log_even_when_rust_log_asks_for_lettre() {
    let log =
        agent_log_with_an_email_alert("log_format = \"json\"", Some("trace,lettre=trace")).await;
    assert_no_password(&log, "json, RUST_LOG=trace");
    assert!(log.contains("\"level\":\"TRACE\""), "{log}");
}

// ------------------------------------------- idle sockets against the API

/// A target that counts the requests it answers (the probe's runs).
async fn counting_target() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/health",
            axum::routing::get(|State(hits): State<Arc<AtomicUsize>>| async move {
                hits.fetch_add(1, Ordering::SeqCst);
                "ok"
            }),
        )
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

/// `GET path` over a fresh connection: the status line, or `None` if no
/// answer came within `within`.
async fn status_line(api: std::net::SocketAddr, path: &str, within: Duration) -> Option<String> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(api).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        // A refused connection may be reset after its 503: keep what came.
        let _ = s.read_to_end(&mut raw).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        Some(text.lines().next().unwrap_or("").to_string())
    };
    tokio::time::timeout(within, exchange).await.ok().flatten()
}

/// Waits until the server closes `s` (end of stream or reset), at most `within`.
async fn server_closes(mut s: tokio::net::TcpStream, within: Duration) -> bool {
    let drain = async {
        let mut buf = [0u8; 512];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(within, drain).await.is_ok()
}

/// Issue 11, item 1: about 1,010 idle sockets used to exhaust a 1,024
/// descriptor limit; then every probe failed with "Too many open files" and
/// `/healthz` hung. Here the limit is 256 (soft and hard, so the agent cannot
/// raise it) and 400 idle or half-sent connections come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_cannot_starve_the_probes_of_descriptors() {
    let (target, hits) = counting_target().await;
    let api = free_port();
    let dir = TempDir::new().unwrap();
    std::fs::write(
        dir.path().join("sonde.toml"),
        format!(
            r#"[api]
listen = "{api}"

[store]
path = "sonde.db"

[[probe]]
name = "web"
kind = "http"
url = "http://{target}/health"
every = "1s"
timeout = "2s"
"#
        ),
    )
    .unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.current_dir(dir.path())
        .arg("--nofile=256:256")
        .arg(env!("CARGO_BIN_EXE_sonde"))
        .args(["run", "--config", "sonde.toml"])
        .env_remove("SONDE_CONFIG")
        .env_remove("RUST_LOG");
    let _agent = Proc::spawn("sonde", cmd, dir.path());
    let log = || std::fs::read_to_string(dir.path().join("sonde.log")).unwrap_or_default();
    eventually("the api", Duration::from_secs(20), || async {
        let s = status_line(api, "/healthz", Duration::from_secs(1)).await?;
        s.contains("200").then_some(())
    })
    .await;
    let started = log();
    assert!(
        started.contains("descriptor_limit=256") && started.contains("max_connections=64"),
        "{started}"
    );

    // 300 connections that send nothing and 100 that send half a request head.
    let attack_start = Instant::now();
    let mut attackers = Vec::new();
    for i in 0..400 {
        let Ok(mut s) = tokio::net::TcpStream::connect(api).await else {
            continue;
        };
        if i % 4 == 0 {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await;
        }
        attackers.push(s);
    }
    assert!(attackers.len() >= 390, "{} connected", attackers.len());
    let before = hits.load(Ordering::SeqCst);

    // While they hold every slot, /healthz answers at once (a 503 while the
    // cap is reached), and the probe keeps running.
    for _ in 0..5 {
        let status = status_line(api, "/healthz", Duration::from_secs(2))
            .await
            .expect("/healthz answers within 2 s during the attack");
        assert!(
            status.contains(" 200 ") || status.contains(" 503 ") || status.is_empty(),
            "{status}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = hits.load(Ordering::SeqCst) - before;
    assert!(
        during >= 3,
        "the probe ran {during} times in 3.5 s of attack"
    );

    // The header-read timeout (10 s) closes every attacking connection.
    let closing: Vec<_> = attackers
        .into_iter()
        .map(|s| tokio::spawn(server_closes(s, Duration::from_secs(16))))
        .collect();
    let mut open = 0;
    for c in closing {
        if !c.await.unwrap() {
            open += 1;
        }
    }
    assert_eq!(
        open,
        0,
        "connections still open after {:?}",
        attack_start.elapsed()
    );
    assert!(
        attack_start.elapsed() < Duration::from_secs(17),
        "{:?}",
        attack_start.elapsed()
    );
    assert_eq!(
        status_line(api, "/healthz", Duration::from_secs(2))
            .await
            .as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    let probes = status_line(api, "/api/v1/probes", Duration::from_secs(2)).await;
    assert_eq!(probes.as_deref(), Some("HTTP/1.1 200 OK"));
    let text = log();
    assert!(!text.contains("Too many open files"), "{text}");
    assert!(!text.contains("critical"), "a probe failed:\n{text}");
    assert!(text.contains("api connection cap reached"), "{text}");
}

// ------------------------------------------------- documents naming hosts

/// A server answering every request with `body`, counting the requests.
async fn counting_server(body: String) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        counted.fetch_add(1, Ordering::SeqCst);
        async move { ([("content-type", "application/json")], body) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

/// Issue 11, item 4: an OpenID document's `jwks_uri` pointing anywhere was
/// fetched. Another origin (here: another port) is refused unless `jwks_hosts`
/// names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_uri_on_another_origin_is_not_fetched_unless_allowed() {
    let cert = rcgen::generate_simple_self_signed(vec!["keys.example".into()]).unwrap();
    let der = base64::engine::general_purpose::STANDARD.encode(cert.cert.der());
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "use": "sig", "x5c": [der]}]});
    let (keys, fetched) = counting_server(jwks.to_string()).await;
    let discovery = serde_json::json!({
        "issuer": "https://login.example/3f2b6a4e-0000-4000-8000-000000000001/v2.0",
        "token_endpoint": "https://login.example/token",
        "jwks_uri": format!("http://{keys}/keys"),
    });
    let (doc, _) = counting_server(discovery.to_string()).await;
    let dir = TempDir::new().unwrap();
    let probe = |extra: &str| {
        std::fs::write(
            dir.path().join("sonde.toml"),
            format!(
                "[[probe]]\nname = \"meta\"\nkind = \"metadata\"\n\
                 url = \"http://{doc}/.well-known/openid-configuration\"\n{extra}"
            ),
        )
        .unwrap();
        let out = crate::support::sonde_in(dir.path(), &["probe", "meta", "-f", "json"], &[]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", crate::support::stderr(&out)));
        (out.status.code(), v)
    };
    let (code, v) = probe("");
    assert_eq!(code, Some(2), "{v}");
    assert_eq!(v["category"], "protocol", "{v}");
    let summary = v["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!("jwks_uri is on http://{keys}")),
        "{summary}"
    );
    assert!(summary.contains("jwks_hosts"), "{summary}");
    assert_eq!(
        fetched.load(Ordering::SeqCst),
        0,
        "the other origin was contacted"
    );

    let (code, v) = probe(&format!("jwks_hosts = [\"http://{keys}\"]"));
    assert_eq!(fetched.load(Ordering::SeqCst), 1);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["status"], "ok", "{v}");
}

// ------------------------------------------------------------ closed pipes

/// Issue 11, item 9: `sonde list | head -1` panicked on the broken pipe
/// (exit 101). The reader here takes 100 bytes and closes the pipe, with more
/// output to come than a pipe holds (64 KiB).
#[test]
fn list_into_a_reader_that_leaves_ends_quietly() {
    use std::io::Read;
    let dir = TempDir::new().unwrap();
    let mut config = String::new();
    for i in 0..1000 {
        config.push_str(&format!(
            "[[probe]]\nname = \"probe-{i:04}-with-a-long-name\"\nkind = \"http\"\n\
             url = \"http://127.0.0.1:9/{i}\"\nevery = \"1h\"\n\n"
        ));
    }
    std::fs::write(dir.path().join("sonde.toml"), config).unwrap();
    for format in ["text", "json"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sonde"))
            .current_dir(dir.path())
            .args(["list", "--config", "sonde.toml", "--format", format])
            .env_remove("SONDE_CONFIG")
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 100];
        let mut stdout = child.stdout.take().unwrap();
        stdout.read_exact(&mut first).unwrap();
        drop(stdout);
        let first = String::from_utf8_lossy(&first);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{format}: {stderr}");
        assert_eq!(stderr, "", "{format}");
        assert!(
            first.starts_with("PROBE") || first.starts_with('['),
            "{format}: {first}"
        );
    }
}
