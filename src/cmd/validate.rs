//! `sonde validate`: loads the configuration and says what it holds; exit 0 when
//! it is valid, 2 with every error when it is not.

use std::path::Path;

use super::{CmdResult, Done, Failure, EXIT_INVALID_CONFIG};
use crate::config::{Config, ConfigErrors};

/// The verdict on the config at `path`, as `config::load` found it; its
/// warnings go to stderr.
pub fn validate(path: &Path, loaded: Result<Config, ConfigErrors>) -> CmdResult {
    let c = loaded.map_err(|e| Failure::config(&e, EXIT_INVALID_CONFIG))?;
    Ok(Done {
        stdout: summary(path, &c),
        stderr: c
            .warnings
            .iter()
            .map(|w| format!("warning: {w}\n"))
            .collect(),
        code: 0,
    })
}

/// `{path}: valid: N probes (M enabled), K channels`.
fn summary(path: &Path, c: &Config) -> String {
    let enabled = c.probes.iter().filter(|p| p.enabled).count();
    format!(
        "{}: valid: {} probe{} ({enabled} enabled), {} channel{}\n",
        path.display(),
        c.probes.len(),
        if c.probes.len() == 1 { "" } else { "s" },
        c.channels.len(),
        if c.channels.len() == 1 { "" } else { "s" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::tests_support::load;

    #[test]
    fn a_valid_config_is_counted_in_the_singular_and_plural() {
        let (dir, c) = load(
            "[[probe]]\nname = \"a\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\nenabled = false\n",
        );
        let path = dir.path().join("sonde.toml");
        let done = validate(&path, Ok(c)).unwrap();
        assert_eq!((done.code, done.stderr.as_str()), (0, ""));
        assert_eq!(
            done.stdout,
            format!(
                "{}: valid: 1 probe (0 enabled), 0 channels\n",
                path.display()
            )
        );
    }

    #[test]
    fn warnings_go_to_stderr_and_the_config_stays_valid() {
        let (dir, c) = load(
            "[[probe]]\nname = \"a\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n\
             every = \"10s\"\ntimeout = \"1m\"\n",
        );
        let path = dir.path().join("sonde.toml");
        let done = validate(&path, Ok(c)).unwrap();
        assert_eq!(done.code, 0);
        assert!(done.stdout.contains(": valid: 1 probe (1 enabled)"));
        assert_eq!(done.stderr.lines().count(), 1, "{}", done.stderr);
        assert!(
            done.stderr.starts_with(&format!(
                "warning: {}:6:11: probe[0].timeout: 1m is longer",
                path.display()
            )),
            "{}",
            done.stderr
        );
    }

    #[test]
    fn an_invalid_config_exits_2_with_its_errors() {
        let (dir, _) = load("");
        std::fs::write(
            dir.path().join("sonde.toml"),
            "[agent]\nmax_concurrent = 0\n",
        )
        .unwrap();
        let path = dir.path().join("sonde.toml");
        let failure = validate(&path, crate::config::load(&path)).unwrap_err();
        assert_eq!(failure.code, EXIT_INVALID_CONFIG);
        assert!(
            failure
                .stderr
                .ends_with("sonde: configuration invalid (1 error)"),
            "{}",
            failure.stderr
        );
    }
}
