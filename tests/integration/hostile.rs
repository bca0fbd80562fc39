//! Hostile input through the real binary, each test replaying one attack: a
//! server whose text is half a megabyte of forged log lines and terminal codes,
//! certificate paths that block (a FIFO) or never end (/dev/zero), a name too
//! long to list, includes that name the main file again or walk the whole file
//! system, and a damaged store.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::{
    client, eventually, free_port, serve_forever, sonde_in, stderr, stdout, Proc,
};

/// No raw control character but line ends: nothing that forges a line inside
/// one, or drives a terminal.
#[track_caller]
fn assert_no_control(what: &str, text: &str) {
    let bad = text.chars().find(|c| c.is_control() && *c != '\n');
    assert!(bad.is_none(), "{what}: raw {bad:?} in {text:.400}");
}

/// An ACS metadata document whose realm is 500 KB of forged log lines and ESC
/// codes.
fn hostile_metadata() -> Vec<u8> {
    let g =
        sonde::credential::generate_self_signed("acs", 2048, 1_700_000_000, 4_000_000_000).unwrap();
    let cert = base64::engine::general_purpose::STANDARD.encode(g.credential.cert_der());
    let realm = format!(
        "r\n2026-01-01T00:00:00Z ERROR forged line\u{1b}[2J\u{1b}]0;owned\u{7}{}",
        "x".repeat(500_000)
    );
    json!({
        "version": "1.0",
        "realm": realm,
        "keys": [{"usage": "signing", "keyValue": {"type": "x509Certificate", "value": cert}}],
        "endpoints": [{"location": "https://sts.example/t/tokens/OAuth/2", "protocol": "OAuth2", "usage": "issuance"}]
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn server_text_is_clipped_and_escaped_in_every_output() {
    let server = serve_forever(hostile_metadata()).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let api = free_port();
    std::fs::write(d.join("api.token"), "hostile-token\n").unwrap();
    std::fs::write(
        d.join("sonde.toml"),
        format!(
            r#"[store]
path = "sonde.db"

[api]
listen = "{api}"
token_file = "api.token"

[[probe]]
name = "acs"
kind = "metadata"
url = "http://{server}/metadata/json/1"
max_body = "2MiB"
every = "1s"
"#
        ),
    )
    .unwrap();

    // `sonde probe`, text and JSON.
    let out = sonde_in(d, &["probe", "acs", "--format", "text"], &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("realm r\\n2026-01-01T00:00:00Z ERROR forged line\\u{1b}[2J"));
    assert!(text.len() < 2_000, "{} bytes", text.len());
    assert_no_control("probe --format text", &text);
    assert_no_control("probe stderr", &stderr(&out));
    let out = sonde_in(d, &["probe", "acs", "--format", "json"], &[]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let summary = v["summary"].as_str().unwrap();
    assert!(summary.chars().count() <= 1024, "{}", summary.len());
    assert_no_control("json summary", summary);

    // The agent: text logs at debug, the stored rows, the status page, `sonde status`.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sonde"));
    cmd.current_dir(d)
        .args(["run", "--config", "sonde.toml"])
        .env_remove("SONDE_CONFIG")
        .env("RUST_LOG", "sonde=debug");
    let agent = Proc::spawn("sonde", cmd, d);
    let http = client();
    let base = format!("http://{api}");
    eventually(
        "three results of the hostile probe",
        Duration::from_secs(30),
        || async {
            let v: Value = http
                .get(format!("{base}/api/v1/probes/acs"))
                .bearer_auth("hostile-token")
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (v["results"].as_array()?.len() >= 3).then_some(())
        },
    )
    .await;
    let page = http
        .get(format!("{base}/"))
        .bearer_auth("hostile-token")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.len() < 100_000, "status page of {} bytes", page.len());
    let out = sonde_in(
        d,
        &["status", "--remote", &base],
        &[("SONDE_API_TOKEN", "hostile-token")],
    );
    let status = stdout(&out);
    assert!(status.contains("forged line"), "{status}");
    assert_no_control("sonde status", &status);
    drop(agent);
    let log = std::fs::read_to_string(d.join("sonde.log")).unwrap();
    assert!(log.contains("forged line"), "the summary is logged");
    assert_no_control("text log", &log);
    assert!(
        !log.lines()
            .any(|l| l.starts_with("2026-01-01T00:00:00Z ERROR forged")),
        "a forged log line"
    );
    let db = rusqlite::Connection::open(d.join("sonde.db")).unwrap();
    let longest: i64 = db
        .query_row("SELECT max(length(summary)) FROM results", [], |r| r.get(0))
        .unwrap();
    assert!((1..=1024).contains(&longest), "stored summary of {longest}");
}

/// Writes `sonde.toml` in `dir` with one certificate probe reading `path`.
fn cert_config(dir: &Path, path: &str) {
    std::fs::write(
        dir.join("sonde.toml"),
        format!("[[probe]]\nname = \"cert\"\nkind = \"certificate\"\npath = {path:?}\ntimeout = \"3s\"\n"),
    )
    .unwrap();
}

#[test]
fn a_fifo_or_dev_zero_as_certificate_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = d.join("cert.pem");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    for (path, reason) in [
        ("cert.pem", "not a regular file (a FIFO)"),
        ("/dev/zero", "not a regular file (a character device)"),
    ] {
        cert_config(d, path);
        let started = Instant::now();
        let out = sonde_in(d, &["probe", "cert", "--format", "json"], &[]);
        assert!(started.elapsed() < Duration::from_secs(10), "{path}: hung");
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["category"], "config");
        let summary = v["summary"].as_str().unwrap();
        assert!(summary.ends_with(reason), "{summary}");
    }
    // An include naming the FIFO is refused the same way by `validate`.
    std::fs::write(d.join("sonde.toml"), "include = [\"cert.pem\"]\n").unwrap();
    let started = Instant::now();
    let out = sonde_in(d, &["validate", "--config", "sonde.toml"], &[]);
    assert!(started.elapsed() < Duration::from_secs(10), "validate hung");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cert.pem: cannot read config file: not a regular file (a FIFO)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_huge_name_is_refused_by_validate_and_list_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let name = "n".repeat(65_536);
    std::fs::write(
        d.join("sonde.toml"),
        format!("[[probe]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n"),
    )
    .unwrap();
    for cmd in ["validate", "list"] {
        let out = sonde_in(d, &[cmd, "--config", "sonde.toml"], &[]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("65536 characters long, at most 128 are allowed"),
            "{cmd}: {err:.300}"
        );
        assert!(err.len() < 1_000, "{cmd}: the name is not echoed whole");
    }
}

#[test]
fn the_main_file_is_loaded_once_and_a_walk_of_everything_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("self.toml"),
        "include = [\"*.toml\"]\n\n[[probe]]\nname = \"a\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("more.toml"),
        "[[probe]]\nname = \"b\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n",
    )
    .unwrap();
    let out = sonde_in(d, &["validate", "--config", "./self.toml"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("2 probes"), "{}", stdout(&out));

    std::fs::write(d.join("self.toml"), "include = [\"/**/*.toml\"]\n").unwrap();
    let started = Instant::now();
    let out = sonde_in(d, &["validate", "--config", "self.toml"], &[]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "walked too long"
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("include `/**/*.toml` "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_damaged_store_is_one_line_naming_the_file_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("sonde.db"), "not a database ".repeat(400)).unwrap();
    std::fs::write(
        d.join("sonde.toml"),
        "[store]\npath = \"sonde.db\"\n\n[[probe]]\nname = \"a\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n",
    )
    .unwrap();
    for args in [&["silence", "list"][..], &["run"][..]] {
        let mut all = args.to_vec();
        all.extend(["--config", "sonde.toml"]);
        let out = sonde_in(d, &all, &[]);
        assert_ne!(out.status.code(), Some(0));
        let err = stderr(&out);
        let line = err
            .lines()
            .find(|l| l.starts_with("sonde: store "))
            .unwrap_or_else(|| panic!("{args:?}: {err}"));
        assert!(
            line.contains("sonde.db: file is not a database; "),
            "{line}"
        );
        assert!(line.contains("move it aside"), "{line}");
        assert_eq!(
            line.matches("not a database").count(),
            1,
            "said once: {line}"
        );
    }
}
