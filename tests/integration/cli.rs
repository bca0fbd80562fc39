//! The command line as scripts use it: exit codes, JSON and Nagios output,
//! `list`, and the agent's graceful stop on SIGTERM.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{openssl, sonde_in, stderr, stdout};

/// A directory with certificates made by the openssl CLI and a config probing them.
fn cert_setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "long.key",
            "-out",
            "long.pem",
            "-days",
            "400",
            "-subj",
            "/CN=long.example",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "short.key",
            "-out",
            "short.pem",
            "-days",
            "20",
            "-subj",
            "/CN=short.example",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "soon.key",
            "-out",
            "soon.pem",
            "-days",
            "3",
            "-subj",
            "/CN=soon.example",
        ],
    );
    std::fs::write(
        d.join("sonde.toml"),
        r#"
[agent]
drain_timeout = "3s"

[[probe]]
name = "long"
kind = "certificate"
path = "long.pem"
every = "1s"

[[probe]]
name = "short"
kind = "certificate"
path = "short.pem"
schedule = "*/10 * * * * *"

[[probe]]
name = "soon"
kind = "certificate"
path = "soon.pem"
health_set = "edge"

[[probe]]
name = "gone"
kind = "certificate"
path = "missing.pem"
enabled = false
"#,
    )
    .unwrap();
    dir
}

#[test]
fn probe_exit_codes_follow_nagios() {
    let dir = cert_setup();
    let d = dir.path();
    for (name, code) in [("long", 0), ("short", 1), ("soon", 2), ("gone", 2)] {
        let out = sonde_in(d, &["probe", name], &[]);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{name}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    let out = sonde_in(d, &["probe", "nope"], &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("no probe named `nope`"),
        "{}",
        stderr(&out)
    );
    let out = sonde_in(d, &["probe", "long", "--config", "elsewhere.toml"], &[]);
    assert_eq!(out.status.code(), Some(3), "a config error is unknown");
    assert!(
        stderr(&out).contains("elsewhere.toml: cannot read config file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn probe_json_output_is_the_documented_object() {
    let dir = cert_setup();
    let out = sonde_in(dir.path(), &["probe", "soon", "--format", "json"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON object");
    assert_eq!(v["probe"], "soon");
    assert_eq!(v["kind"], "certificate");
    assert_eq!(v["health_set"], "edge");
    assert_eq!(v["status"], "critical");
    assert_eq!(v["category"], "certificate");
    let left = v["observations"]["seconds_left"].as_f64().unwrap();
    assert!(left > 2.0 * 86400.0 && left <= 3.0 * 86400.0, "{left}");
    assert!(v["started_at"].as_str().unwrap().ends_with('Z'));
    assert!(v["duration_seconds"].as_f64().unwrap() >= 0.0);
}

#[test]
fn probe_nagios_output_has_perfdata() {
    let dir = cert_setup();
    let out = sonde_in(dir.path(), &["probe", "short", "-f", "nagios"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let line = stdout(&out);
    assert!(line.starts_with("WARNING - "), "{line}");
    assert!(line.contains(" | "), "{line}");
    assert!(line.contains("'seconds_left'="), "{line}");
    assert!(line.contains("'key_bits'=256;"), "{line}");
    assert_eq!(line.lines().count(), 1);
}

#[test]
fn list_shows_schedules_and_next_runs() {
    let dir = cert_setup();
    let out = sonde_in(dir.path(), &["list", "--format", "json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 4);
    let short = items.iter().find(|i| i["probe"] == "short").unwrap();
    assert_eq!(short["schedule"], "cron */10 * * * * *");
    let next = chrono::DateTime::parse_from_rfc3339(short["next_run"].as_str().unwrap()).unwrap();
    assert_eq!(chrono::Timelike::second(&next) % 10, 0);
    let gone = items.iter().find(|i| i["probe"] == "gone").unwrap();
    assert_eq!(gone["next_run"], Value::Null);
    assert_eq!(gone["enabled"], false);

    let out = sonde_in(dir.path(), &["list"], &[]);
    let text = stdout(&out);
    assert!(text.starts_with("PROBE"), "{text}");
    assert!(text.contains("every 1s"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("gone") && l.ends_with("disabled")),
        "{text}"
    );
}

#[test]
fn validate_reports_a_valid_config() {
    let dir = cert_setup();
    let out = sonde_in(dir.path(), &["validate"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "sonde.toml: valid: 4 probes (3 enabled), 0 channels\n"
    );
}

fn wait_for(path: &Path, needle: &str, within: Duration) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || start.elapsed() > within {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn run_fires_probes_then_stops_cleanly_on_sigterm() {
    let dir = cert_setup();
    let log = dir.path().join("agent.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .current_dir(dir.path())
        .args(["run"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let text = wait_for(&log, "probe=long", Duration::from_secs(20));
    assert!(text.contains("agent started"), "{text}");
    assert!(text.contains("probe=long"), "{text}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "agent did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
    let mut text = String::new();
    std::fs::File::open(&log)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.contains("shutting down"), "{text}");
    assert!(text.contains("agent stopped"), "{text}");
}

#[test]
fn silences_are_added_listed_and_removed_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sonde.toml"),
        "[store]\npath = \"data/sonde.db\"\n\n[[probe]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\nhealth_set = \"site\"\n",
    )
    .unwrap();
    let run = |args: &[&str]| sonde_in(dir.path(), args, &[]);
    let o = run(&[
        "silence",
        "add",
        "web",
        "--for",
        "2h",
        "--comment",
        "deploy",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("silence 1: web from "),
        "{}",
        stdout(&o)
    );
    let o = run(&[
        "silence",
        "add",
        "set:site",
        "--for",
        "30m",
        "--from",
        "2030-01-01T00:00:00Z",
    ]);
    assert!(
        stdout(&o).contains("until 2030-01-01T00:30:00Z"),
        "{}",
        stdout(&o)
    );
    let o = run(&["silence", "list"]);
    let text = stdout(&o);
    assert!(
        text.contains("web") && text.contains("deploy") && text.contains("set:site"),
        "{text}"
    );
    assert!(dir.path().join("data/sonde.db").exists());
    let o = run(&["silence", "remove", "1"]);
    assert_eq!(stdout(&o).trim(), "silence 1 removed");
    let o = run(&["silence", "list"]);
    assert!(!stdout(&o).contains("deploy"), "{}", stdout(&o));
    // Mistakes are refused with the reason, exit 2.
    let o = run(&["silence", "add", "nope", "--for", "1h"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`nope` is no probe"), "{}", stderr(&o));
    let o = run(&["silence", "add", "web", "--for", "soon"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--for soon"), "{}", stderr(&o));
}

/// The README's first command: `sonde demo` shows every probe of the shipped
/// health sets ok against the lab, and Ctrl-C (SIGINT) stops it cleanly, removing
/// its temporary directory.
#[test]
fn demo_runs_the_health_set_green_and_stops_on_sigint() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_sonde"))
        .arg("demo")
        .env_remove("SONDE_CONFIG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wanted = [
        "oauth-certificate",
        "auth-metadata",
        "token-issuance",
        "push-connectivity",
        "push-end-to-end",
        "auth-certificate",
        "hybrid-app-registration",
        "hybrid-app-token",
    ];
    let mut ok = std::collections::BTreeSet::new();
    let mut seen = Vec::new();
    let mut config_dir = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while ok.len() < wanted.len() && std::time::Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(1)) else {
            continue;
        };
        if let Some(path) = line.strip_prefix("config:") {
            config_dir = std::path::Path::new(path.trim())
                .parent()
                .map(|p| p.to_path_buf());
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() > 2 && words[1] == "OK" && wanted.contains(&words[2]) {
            ok.insert(words[2].to_string());
        }
        seen.push(line);
    }
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        ok.len(),
        wanted.len(),
        "not every probe was ok:\n{}",
        seen.join("\n")
    );
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = config_dir.expect("the demo prints its config path");
    assert!(!dir.exists(), "{} was left behind", dir.display());
}
