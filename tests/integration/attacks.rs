//! Replays of attacks on the real binary (issue 11): a planted SMTP password
//! that must not reach any log, idle and half-sent connections against a
//! lowered descriptor limit, and documents that point sonde at other hosts.
//! Every peer is on 127.0.0.1.

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use tempfile::TempDir;

use crate::channels::{smtp_certificates, SmtpServer, SMTP_USER};
use crate::support::{free_port, Proc};

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
