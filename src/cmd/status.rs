//! `sonde status`: the running agent's health report (its `/api/v1/health`),
//! as text or JSON; exit 0 healthy, 1 degraded, 2 unhealthy, 3 otherwise.

use super::{CmdResult, Done, Failure, EXIT_UNKNOWN};
use crate::cli::ListFormat;
use crate::config::{Config, ConfigErrors};

/// The agent's URL: `--remote`, else `http://` and the config's `[api] listen`.
pub fn url(
    remote: Option<String>,
    loaded: &Result<Config, ConfigErrors>,
) -> Result<String, Failure> {
    match (remote, loaded) {
        (Some(url), _) => Ok(url),
        (None, Ok(c)) => match &c.api {
            Some(api) => Ok(crate::remote::url_of_listen(api.listen)),
            None => Err(Failure::unknown(format!(
                "{} has no [api] table: pass --remote URL",
                c.path.display()
            ))),
        },
        (None, Err(e)) => Err(Failure::config(e, EXIT_UNKNOWN).then("sonde: or pass --remote URL")),
    }
}

/// Asks the agent at `url` for its health report.
pub async fn status(url: &str, format: ListFormat) -> CmdResult {
    let report = crate::remote::health(url).await.map_err(Failure::unknown)?;
    Ok(render(&report, format))
}

fn render(report: &serde_json::Value, format: ListFormat) -> Done {
    Done {
        stdout: match format {
            ListFormat::Text => crate::remote::status_text(report),
            ListFormat::Json => format!("{report}\n"),
        },
        code: crate::remote::status_exit_code(report),
        stderr: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::tests_support::load;

    #[test]
    fn the_url_is_remote_or_the_configured_listen_address() {
        let (_dir, c) = load("[api]\nlisten = \"127.0.0.1:9323\"\n");
        let with_api = Ok(c);
        assert_eq!(
            url(Some("http://h:1".into()), &with_api).unwrap(),
            "http://h:1"
        );
        assert_eq!(url(None, &with_api).unwrap(), "http://127.0.0.1:9323");
        let (_dir, c) = load("");
        let failure = url(None, &Ok(c)).unwrap_err();
        assert_eq!(failure.code, EXIT_UNKNOWN);
        assert!(failure
            .stderr
            .ends_with("has no [api] table: pass --remote URL"));
    }

    #[test]
    fn a_config_that_does_not_load_is_needed_only_without_remote() {
        let (dir, _) = load("");
        let broken = crate::config::load(&dir.path().join("missing.toml"));
        assert_eq!(
            url(Some("http://h:1".into()), &broken).unwrap(),
            "http://h:1"
        );
        let failure = url(None, &broken).unwrap_err();
        assert_eq!(failure.code, EXIT_UNKNOWN);
        let lines: Vec<&str> = failure.stderr.lines().collect();
        assert_eq!(
            lines[lines.len() - 2..],
            [
                "sonde: configuration invalid (1 error)",
                "sonde: or pass --remote URL"
            ]
        );
    }

    #[test]
    fn the_exit_code_follows_the_agents_state() {
        for (state, code) in [
            ("healthy", 0),
            ("degraded", 1),
            ("unhealthy", 2),
            ("unknown", 3),
        ] {
            let report = serde_json::json!({"state": state, "health_sets": []});
            assert_eq!(render(&report, ListFormat::Json).code, code, "{state}");
        }
        let report = serde_json::json!({"state": "healthy", "health_sets": []});
        assert_eq!(
            render(&report, ListFormat::Json).stdout,
            format!("{report}\n")
        );
    }
}
