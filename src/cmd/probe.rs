//! `sonde probe NAME`: runs one probe now, here through the same runner as the
//! agent, or in a running agent with `--remote URL`; prints its outcome as text,
//! JSON, a Nagios line or a Managed Availability result and exits with its
//! Nagios code. `NAME` may be `HealthSet\Probe`, as `Invoke-MonitoringProbe`
//! names a probe. `sonde probe --health-set SET` runs a whole set here, each
//! probe after those it depends on, and exits with the worst code.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::{CmdResult, Done, Failure, EXIT_UNKNOWN};
use crate::cli::ProbeFormat;
use crate::clock::Clock;
use crate::config::{Config, ProbeConfig};
use crate::outcome::{Category, Outcome};
use crate::output::{self, Labels, SetResult, Threshold};

/// Runs the probe `name` of `c` here: a probe's name, or `HealthSet\Probe`.
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
    let stdout = render(
        format,
        &machine_name(),
        &labels,
        &outcome,
        &p.spec.perf_thresholds(),
    );
    Ok(verdict(stdout, &outcome))
}

/// Runs every enabled probe of the health set `set` (case-insensitive) here,
/// one after the other, each after the probes it depends on; prints each
/// result and exits with the worst status's code (critical > unknown >
/// warning > ok). A probe that does not build counts as unknown, `config`.
pub async fn health_set(
    c: &Config,
    set: &str,
    format: ProbeFormat,
    clock: Arc<dyn Clock>,
) -> CmdResult {
    let set = find_set(c, set)?;
    let mut stderr = String::new();
    let mut probes = Vec::new();
    for p in in_dependency_order(c, set) {
        if p.enabled {
            probes.push(p);
        } else {
            stderr.push_str(&format!("sonde: skipped `{}` (enabled = false)\n", p.name));
        }
    }
    if probes.is_empty() {
        return Err(Failure::unknown(format!(
            "health set `{set}` has no enabled probe"
        )));
    }
    let mut outcomes = Vec::with_capacity(probes.len());
    for p in &probes {
        let outcome = match crate::agent::run_probe_now(p, &c.probes, clock.clone()).await {
            Ok(o) => o,
            Err(e) => {
                let mut o = Outcome::unknown(Category::Config, e.to_string());
                o.started_at = clock.now();
                o
            }
        };
        outcomes.push(outcome);
    }
    let thresholds: Vec<Vec<Threshold>> = probes.iter().map(|p| p.spec.perf_thresholds()).collect();
    let results: Vec<SetResult<'_>> = probes
        .iter()
        .zip(&outcomes)
        .zip(&thresholds)
        .map(|((p, outcome), thresholds)| SetResult {
            labels: Labels {
                probe: &p.name,
                kind: p.kind(),
                health_set: &p.health_set,
            },
            outcome,
            thresholds,
        })
        .collect();
    let stdout = match format {
        ProbeFormat::Text => output::text_set(set, &results),
        ProbeFormat::Json => results
            .iter()
            .map(|r| format!("{}\n", output::json(&r.labels, r.outcome)))
            .collect(),
        ProbeFormat::Nagios => output::nagios_set(set, &results),
        ProbeFormat::Ma => output::ma_list(&machine_name(), &results),
    };
    Ok(Done {
        stdout,
        stderr,
        // 0 to 3: always fits.
        code: output::worst(&results).exit_code() as u8,
    })
}

/// The probe `name` names: first the probe of that exact name; then
/// `HealthSet\Probe` (each part case-insensitive, an exact case winning); a
/// plain name then matches case-insensitively when only one probe fits.
/// Otherwise a failure listing the names there are.
fn select<'c>(c: &'c Config, name: &str) -> Result<&'c ProbeConfig, Failure> {
    if let Some(p) = c.probe(name) {
        return Ok(p);
    }
    if let Some((set, probe)) = name.split_once('\\') {
        let set = find_set(c, set)?;
        let members: Vec<&ProbeConfig> = c.probes.iter().filter(|p| p.health_set == set).collect();
        return pick(&members, probe)?.ok_or_else(|| {
            Failure::unknown(format!(
                "no probe named `{probe}` in health set `{set}` of {} (its probes: {})",
                c.path.display(),
                sorted(members.iter().map(|p| p.name.as_str()))
            ))
        });
    }
    let all: Vec<&ProbeConfig> = c.probes.iter().collect();
    pick(&all, name)?.ok_or_else(|| {
        Failure::unknown(format!(
            "no probe named `{name}` in {} (probes: {})",
            c.path.display(),
            sorted(c.probes.iter().map(|p| p.name.as_str()))
        ))
    })
}

/// The one probe of `candidates` named `name`: exactly, else ignoring case;
/// several that differ only in case are a failure naming them.
fn pick<'c>(
    candidates: &[&'c ProbeConfig],
    name: &str,
) -> Result<Option<&'c ProbeConfig>, Failure> {
    if let Some(p) = candidates.iter().find(|p| p.name == name) {
        return Ok(Some(p));
    }
    let fits: Vec<&ProbeConfig> = candidates
        .iter()
        .copied()
        .filter(|p| p.name.eq_ignore_ascii_case(name))
        .collect();
    match fits.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        several => Err(Failure::unknown(format!(
            "`{name}` matches several probes that differ only in case: {}; give the exact name",
            sorted(several.iter().map(|p| p.name.as_str()))
        ))),
    }
}

/// The configured health set `set` names: exactly, else ignoring case (as
/// Managed Availability's health set names are); unknown or ambiguous is a
/// failure naming the sets there are.
fn find_set<'c>(c: &'c Config, set: &str) -> Result<&'c str, Failure> {
    let mut sets: Vec<&str> = c.probes.iter().map(|p| p.health_set.as_str()).collect();
    sets.sort();
    sets.dedup();
    if let Some(s) = sets.iter().find(|s| **s == set) {
        return Ok(s);
    }
    let fits: Vec<&str> = sets
        .iter()
        .copied()
        .filter(|s| s.eq_ignore_ascii_case(set))
        .collect();
    match fits.as_slice() {
        [one] => Ok(one),
        [] => Err(Failure::unknown(format!(
            "no health set `{set}` in {} (health sets: {})",
            c.path.display(),
            sets.join(", ")
        ))),
        several => Err(Failure::unknown(format!(
            "`{set}` matches several health sets that differ only in case: {}; give the exact name",
            several.join(", ")
        ))),
    }
}

/// `names` sorted and joined with `, `.
fn sorted<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut names: Vec<&str> = names.collect();
    names.sort();
    names.join(", ")
}

/// The probes of health set `set` in the order to run them: in the order of
/// the configuration, each after the probes it depends on (directly or through
/// probes of other sets, which are not run). The config refuses dependency
/// cycles; the walk would stop on one anyway, as it visits each probe once.
fn in_dependency_order<'c>(c: &'c Config, set: &str) -> Vec<&'c ProbeConfig> {
    let probes = &c.probes;
    let index: HashMap<&str, usize> = probes
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let mut seen = vec![false; probes.len()];
    let mut order = Vec::new();
    for (start, p) in probes.iter().enumerate() {
        if p.health_set != set || seen[start] {
            continue;
        }
        seen[start] = true;
        // Depth first without recursion: (probe, its next dependency to visit).
        let mut stack = vec![(start, 0usize)];
        while let Some(&(i, next)) = stack.last() {
            match probes[i].depends_on.get(next) {
                Some(dep) => {
                    if let Some(top) = stack.last_mut() {
                        top.1 += 1;
                    }
                    if let Some(&j) = index.get(dep.as_str()) {
                        if !seen[j] {
                            seen[j] = true;
                            stack.push((j, 0));
                        }
                    }
                }
                None => {
                    stack.pop();
                    if probes[i].health_set == set {
                        order.push(&probes[i]);
                    }
                }
            }
        }
    }
    order
}

/// The host this runs on, for `MachineName`.
fn machine_name() -> String {
    hostname::get()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// An outcome as text, JSON, a Nagios line or an MA result run on `machine`,
/// with its final newline. (A remote run prints the agent's JSON object as it
/// came.)
fn render(
    format: ProbeFormat,
    machine: &str,
    labels: &Labels<'_>,
    outcome: &Outcome,
    thresholds: &[Threshold],
) -> String {
    match format {
        ProbeFormat::Text => output::text(labels, outcome),
        ProbeFormat::Json => format!("{}\n", output::json(labels, outcome)),
        ProbeFormat::Nagios => format!("{}\n", output::nagios(outcome, thresholds)),
        ProbeFormat::Ma => output::ma(machine, labels, outcome),
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
/// like a local run. The local config, when there is one, resolves a
/// `HealthSet\Probe` or case-insensitive name and lends the probe's Nagios
/// thresholds; without it the name goes to the agent as given. `env` reads
/// `SONDE_API_TOKEN`.
pub async fn remote(
    c: Option<&Config>,
    url: &str,
    name: &str,
    format: ProbeFormat,
    token_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> CmdResult {
    let token = api_token(token_file, env)?;
    let name = c
        .and_then(|c| select(c, name).ok())
        .map_or(name, |p| p.name.as_str());
    let value = crate::remote::run_probe(url, name, &token)
        .await
        .map_err(Failure::unknown)?;
    remote_answer(c, url, name, format, &value)
}

/// What a remote run prints for the agent's answer `value`.
fn remote_answer(
    c: Option<&Config>,
    url: &str,
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
        ProbeFormat::Text | ProbeFormat::Nagios | ProbeFormat::Ma => {
            let thresholds = c
                .and_then(|c| c.probe(name))
                .map(|p| p.spec.perf_thresholds())
                .unwrap_or_default();
            // The machine that ran it is the agent's.
            let machine = reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| url.to_string());
            render(format, &machine, &labels, &outcome, &thresholds)
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
        let json = remote_answer(
            None,
            "http://10.0.0.5:9323",
            "web",
            ProbeFormat::Json,
            &value,
        )
        .unwrap();
        assert_eq!((json.stdout, json.code), (format!("{value}\n"), 1));
        let text = remote_answer(
            None,
            "http://10.0.0.5:9323",
            "web",
            ProbeFormat::Text,
            &value,
        )
        .unwrap();
        assert!(
            text.stdout.starts_with("WARNING web [http] slow"),
            "{}",
            text.stdout
        );
        let nagios = remote_answer(
            None,
            "http://10.0.0.5:9323",
            "web",
            ProbeFormat::Nagios,
            &value,
        )
        .unwrap();
        assert_eq!(nagios.stdout.lines().count(), 1);
        assert!(
            nagios.stdout.starts_with("WARNING - slow |"),
            "{}",
            nagios.stdout
        );
        let broken = serde_json::json!({"status": "ok"});
        let failure = remote_answer(
            None,
            "http://10.0.0.5:9323",
            "web",
            ProbeFormat::Text,
            &broken,
        )
        .unwrap_err();
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

    /// Two health sets; `push` depends on `token`, which depends on `cert` in
    /// the other set, which depends on `meta`; `Web` and `web` differ in case.
    const SETS: &str =
        "[[probe]]\nname = \"push\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n\
        health_set = \"PushNotifications.Proxy\"\ndepends_on = [\"token\"]\n\n\
        [[probe]]\nname = \"meta\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n\
        health_set = \"PushNotifications.Proxy\"\n\n\
        [[probe]]\nname = \"token\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n\
        health_set = \"PushNotifications.Proxy\"\ndepends_on = [\"cert\"]\n\n\
        [[probe]]\nname = \"cert\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n\
        health_set = \"Certs\"\ndepends_on = [\"meta\"]\n\n\
        [[probe]]\nname = \"Web\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n\n\
        [[probe]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n\
        health_set = \"Certs\"\n\n\
        [[probe]]\nname = \"off\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n\
        health_set = \"Certs\"\nenabled = false\n";

    #[test]
    fn a_probe_is_addressed_as_invoke_monitoringprobe_does() {
        let (_dir, c) = load(SETS);
        let name = |n: &str| select(&c, n).map(|p| p.name.clone());
        assert_eq!(name("push").unwrap(), "push");
        assert_eq!(name("PushNotifications.Proxy\\push").unwrap(), "push");
        assert_eq!(name("pushnotifications.proxy\\PUSH").unwrap(), "push");
        // An exact name wins over a case-insensitive one, in a set too.
        assert_eq!(name("Web").unwrap(), "Web");
        assert_eq!(name("web").unwrap(), "web");
        assert_eq!(name("default\\WEB").unwrap(), "Web");
        assert_eq!(name("certs\\WEB").unwrap(), "web");
        // A plain name that fits one probe only when case is ignored.
        assert_eq!(name("TOKEN").unwrap(), "token");
        let failure = select(&c, "WEB").unwrap_err();
        assert_eq!(failure.code, EXIT_UNKNOWN);
        assert_eq!(
            failure.stderr,
            "sonde: `WEB` matches several probes that differ only in case: Web, web; give the exact name"
        );
        let failure = select(&c, "Certs\\push").unwrap_err();
        assert_eq!(
            failure.stderr,
            format!(
                "sonde: no probe named `push` in health set `Certs` of {} (its probes: cert, off, web)",
                c.path.display()
            )
        );
        let failure = select(&c, "Nope\\push").unwrap_err();
        assert_eq!(failure.code, EXIT_UNKNOWN);
        assert_eq!(
            failure.stderr,
            format!(
                "sonde: no health set `Nope` in {} (health sets: Certs, PushNotifications.Proxy, default)",
                c.path.display()
            )
        );
    }

    #[test]
    fn a_set_runs_in_dependency_order() {
        let (_dir, c) = load(SETS);
        let order = |set: &str| {
            in_dependency_order(&c, set)
                .into_iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
        };
        // token after meta through cert, which is in another set and not run.
        assert_eq!(order("PushNotifications.Proxy"), ["meta", "token", "push"]);
        assert_eq!(order("Certs"), ["cert", "web", "off"]);
        assert!(order("nope").is_empty());
        assert_eq!(
            find_set(&c, "pushnotifications.PROXY").unwrap(),
            "PushNotifications.Proxy"
        );
    }

    #[tokio::test]
    async fn a_health_set_prints_each_result_and_exits_with_the_worst() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (_dir, c) = load(SETS);
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::SystemClock);
        let done = health_set(&c, "certs", ProbeFormat::Json, clock.clone())
            .await
            .unwrap();
        assert_eq!(done.code, 2, "nothing listens on the discard port");
        assert_eq!(done.stderr, "sonde: skipped `off` (enabled = false)\n");
        let probes: Vec<String> = done
            .stdout
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(v["health_set"], "Certs");
                v["probe"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(probes, ["cert", "web"]);
        let ma = health_set(&c, "Certs", ProbeFormat::Ma, clock.clone())
            .await
            .unwrap();
        assert_eq!(ma.stdout.split("\n\n").count(), 2, "{}", ma.stdout);
        assert!(ma.stdout.contains("ResultName         : Certs\\cert\n"));
        assert!(ma.stdout.contains("StateAttribute1    : Networking\n"));
        let failure = health_set(&c, "Nope", ProbeFormat::Text, clock)
            .await
            .unwrap_err();
        assert_eq!(failure.code, EXIT_UNKNOWN);
        assert!(
            failure
                .stderr
                .ends_with("(health sets: Certs, PushNotifications.Proxy, default)"),
            "{}",
            failure.stderr
        );
    }
}
