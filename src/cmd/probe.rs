//! `sonde probe NAME`: runs one probe now, here through the same runner as the
//! agent, or in a running agent with `--remote URL`; prints its outcome as text,
//! JSON or a Nagios line and exits with its Nagios code.

use std::path::Path;
use std::sync::Arc;

use super::{CmdResult, Done, Failure, EXIT_UNKNOWN};
use crate::cli::ProbeFormat;
use crate::clock::Clock;
use crate::config::{Config, ProbeConfig};
use crate::outcome::Outcome;
use crate::output::{self, Labels, Threshold};

/// Runs the probe `name` of `c` here.
pub async fn local(
    c: &Config,
    name: &str,
    format: ProbeFormat,
    clock: Arc<dyn Clock>,
) -> CmdResult {
    let p = select(c, name)?;
    // A probe that does not build (an unreadable CA file) prints its located error.
    let outcome = crate::agent::run_probe_now(p, &c.probes, clock)
        .await
        .map_err(|e| Failure {
            stderr: e.to_string(),
            code: EXIT_UNKNOWN,
        })?;
    let labels = Labels {
        probe: &p.name,
        kind: p.kind(),
        health_set: &p.health_set,
    };
    let stdout = render(format, &labels, &outcome, &p.spec.perf_thresholds());
    Ok(verdict(stdout, &outcome))
}

/// The probe called `name`, or a failure listing the names there are.
fn select<'c>(c: &'c Config, name: &str) -> Result<&'c ProbeConfig, Failure> {
    c.probe(name).ok_or_else(|| {
        let mut names: Vec<&str> = c.probes.iter().map(|p| p.name.as_str()).collect();
        names.sort();
        Failure::unknown(format!(
            "no probe named `{name}` in {} (probes: {})",
            c.path.display(),
            names.join(", ")
        ))
    })
}

/// An outcome as text, JSON or a Nagios line, with its final newline. (A remote
/// run prints the agent's JSON object as it came.)
fn render(
    format: ProbeFormat,
    labels: &Labels<'_>,
    outcome: &Outcome,
    thresholds: &[Threshold],
) -> String {
    match format {
        ProbeFormat::Text => output::text(labels, outcome),
        ProbeFormat::Json => format!("{}\n", output::json(labels, outcome)),
        ProbeFormat::Nagios => format!("{}\n", output::nagios(outcome, thresholds)),
    }
}

/// `stdout` with the outcome's Nagios exit code.
fn verdict(stdout: String, outcome: &Outcome) -> Done {
    Done {
        stdout,
        // 0 to 3: always fits.
        code: outcome.status.exit_code() as u8,
        stderr: String::new(),
    }
}

/// The token for `--remote`: `--token-file`, else `SONDE_API_TOKEN` (read
/// through `env`); trimmed, and never empty.
fn api_token(
    token_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Failure> {
    let token = match token_file {
        Some(f) => std::fs::read_to_string(f).map_err(|e| {
            Failure::unknown(format!("cannot read --token-file {}: {e}", f.display()))
        })?,
        None => env("SONDE_API_TOKEN").ok_or_else(|| {
            Failure::unknown(
                "--remote needs the API token: set SONDE_API_TOKEN or pass --token-file",
            )
        })?,
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(Failure::unknown("the API token is empty"));
    }
    Ok(token)
}

/// `sonde probe NAME --remote URL`: the agent runs it; printed and exited on
/// like a local run. The local config, when there is one, only lends the
/// probe's Nagios thresholds. `env` reads `SONDE_API_TOKEN`.
pub async fn remote(
    c: Option<&Config>,
    url: &str,
    name: &str,
    format: ProbeFormat,
    token_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> CmdResult {
    let token = api_token(token_file, env)?;
    let value = crate::remote::run_probe(url, name, &token)
        .await
        .map_err(Failure::unknown)?;
    remote_answer(c, name, format, &value)
}

/// What a remote run prints for the agent's answer `value`.
fn remote_answer(
    c: Option<&Config>,
    name: &str,
    format: ProbeFormat,
    value: &serde_json::Value,
) -> CmdResult {
    let Some((probe, kind, health_set, outcome)) = output::from_json(value) else {
        return Err(Failure::unknown(format!(
            "the agent's answer is not a probe result: {value}"
        )));
    };
    let labels = Labels {
        probe: &probe,
        kind: &kind,
        health_set: &health_set,
    };
    let stdout = match format {
        ProbeFormat::Json => format!("{value}\n"),
        ProbeFormat::Text | ProbeFormat::Nagios => {
            let thresholds = c
                .and_then(|c| c.probe(name))
                .map(|p| p.spec.perf_thresholds())
                .unwrap_or_default();
            render(format, &labels, &outcome, &thresholds)
        }
    };
    Ok(verdict(stdout, &outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::tests_support::load;

    const PROBES: &str =
        "[[probe]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n\
                          timeout = \"5s\"\n\n[[probe]]\nname = \"api\"\nkind = \"http\"\n\
                          url = \"http://127.0.0.1:9/\"\n";

    #[test]
    fn an_unknown_name_lists_the_probes_in_order() {
        let (_dir, c) = load(PROBES);
        assert_eq!(select(&c, "web").unwrap().name, "web");
        let failure = select(&c, "nope").unwrap_err();
        assert_eq!(failure.code, EXIT_UNKNOWN);
        assert_eq!(
            failure.stderr,
            format!(
                "sonde: no probe named `nope` in {} (probes: api, web)",
                c.path.display()
            )
        );
    }

    #[test]
    fn the_token_comes_from_the_file_then_the_environment_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  from-file\n").unwrap();
        let env = |_: &str| Some("from-env\n".to_string());
        let none = |_: &str| None;
        assert_eq!(api_token(Some(&file), &env).unwrap(), "from-file");
        assert_eq!(api_token(None, &env).unwrap(), "from-env");
        assert_eq!(
            api_token(None, &none).unwrap_err(),
            Failure::unknown(
                "--remote needs the API token: set SONDE_API_TOKEN or pass --token-file"
            )
        );
        assert_eq!(
            api_token(None, &|_| Some(" \n".into())).unwrap_err(),
            Failure::unknown("the API token is empty")
        );
        let missing = dir.path().join("missing");
        let failure = api_token(Some(&missing), &env).unwrap_err();
        assert!(
            failure.stderr.starts_with(&format!(
                "sonde: cannot read --token-file {}: ",
                missing.display()
            )),
            "{failure:?}"
        );
    }

    fn answer() -> serde_json::Value {
        serde_json::json!({
            "probe": "web", "kind": "http", "health_set": "default",
            "status": "warning", "category": "protocol", "summary": "slow",
            "observations": {"latency_seconds": 1.5},
            "started_at": "2027-01-15T08:00:00.000Z", "duration_seconds": 1.5,
        })
    }

    #[test]
    fn a_remote_answer_prints_like_a_local_run_and_exits_with_its_status() {
        let value = answer();
        let json = remote_answer(None, "web", ProbeFormat::Json, &value).unwrap();
        assert_eq!((json.stdout, json.code), (format!("{value}\n"), 1));
        let text = remote_answer(None, "web", ProbeFormat::Text, &value).unwrap();
        assert!(
            text.stdout.starts_with("WARNING web [http] slow"),
            "{}",
            text.stdout
        );
        let nagios = remote_answer(None, "web", ProbeFormat::Nagios, &value).unwrap();
        assert_eq!(nagios.stdout.lines().count(), 1);
        assert!(
            nagios.stdout.starts_with("WARNING - slow |"),
            "{}",
            nagios.stdout
        );
        let broken = serde_json::json!({"status": "ok"});
        let failure = remote_answer(None, "web", ProbeFormat::Text, &broken).unwrap_err();
        assert_eq!(
            failure,
            Failure::unknown(r#"the agent's answer is not a probe result: {"status":"ok"}"#)
        );
    }

    #[tokio::test]
    async fn a_local_run_exits_with_the_probes_nagios_code() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (_dir, c) = load(PROBES);
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::SystemClock);
        let done = local(&c, "web", ProbeFormat::Json, clock.clone())
            .await
            .unwrap();
        assert_eq!(done.code, 2, "nothing listens on the discard port");
        let v: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
        assert_eq!(
            (v["probe"].as_str(), v["category"].as_str()),
            (Some("web"), Some("network"))
        );
        let failure = local(&c, "nope", ProbeFormat::Text, clock)
            .await
            .unwrap_err();
        assert_eq!(failure.code, EXIT_UNKNOWN);
    }
}
