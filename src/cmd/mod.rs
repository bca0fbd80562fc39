//! The commands' logic, one file per command (or small group of them): what each
//! does with the loaded config, what it prints and the exit code it ends with.
//!
//! `main.rs` parses the command line, sets up logging and telemetry, calls one
//! function here, and turns its [`Done`] or [`Failure`] into stdout, stderr and
//! the process's exit code. Short commands return their output rather than print
//! it, so that their unit tests read it; the long-running ones (`run`, `lab`)
//! print their banner and log as they go.

pub mod init;
pub mod lab;
pub mod list;
pub mod probe;
pub mod run;
pub mod signal;
pub mod silence;
pub mod status;
pub mod validate;

use std::fmt;

use crate::config::ConfigErrors;

/// The exit code of a configuration that does not load (`validate`, `list`,
/// `silence`, `run`); `sonde probe` uses the Nagios codes instead.
pub const EXIT_INVALID_CONFIG: u8 = 2;
/// The exit code of any other failure: Nagios' UNKNOWN.
pub const EXIT_UNKNOWN: u8 = 3;

/// A command that ran to its end: what it prints on stdout, what it prints on
/// stderr first (warnings, each line ending in a newline), and its exit code (a
/// verdict such as `sonde probe`'s Nagios code, or 0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Done {
    pub stdout: String,
    pub stderr: String,
    pub code: u8,
}

impl Done {
    /// Exit code 0 after printing `stdout`.
    pub(crate) fn ok(stdout: String) -> Done {
        Done {
            stdout,
            ..Done::default()
        }
    }
}

/// A command that could not do its work: the text for stderr (without the
/// final newline) and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub stderr: String,
    pub code: u8,
}

impl Failure {
    /// `sonde: {message}`, exit code 3.
    pub fn unknown(message: impl fmt::Display) -> Failure {
        Failure {
            stderr: format!("sonde: {message}"),
            code: EXIT_UNKNOWN,
        }
    }

    /// `sonde: {message}`, exit code 2.
    pub(crate) fn invalid(message: impl fmt::Display) -> Failure {
        Failure {
            stderr: format!("sonde: {message}"),
            code: EXIT_INVALID_CONFIG,
        }
    }

    /// A config that does not load: each error on its line, then their count.
    pub fn config(errors: &ConfigErrors, code: u8) -> Failure {
        let n = errors.0.len();
        let mut lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        lines.push(format!(
            "sonde: configuration invalid ({n} error{})",
            if n == 1 { "" } else { "s" }
        ));
        Failure {
            stderr: lines.join("\n"),
            code,
        }
    }

    /// The same failure with one more line of stderr.
    pub(crate) fn then(mut self, line: &str) -> Failure {
        self.stderr.push('\n');
        self.stderr.push_str(line);
        self
    }
}

/// What a command ends with.
pub type CmdResult = Result<Done, Failure>;

/// `error` and its sources, joined with `: `: the whole cause chain on one line.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Configs for the commands' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use crate::config::{Config, Loader};

    /// `text` loaded as `sonde.toml` of a fresh directory, with no environment.
    pub(crate) fn load(text: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sonde.toml");
        std::fs::write(&path, text).unwrap();
        let config = Loader { env: &|_| None }.load(&path).unwrap();
        (dir, config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;

    fn error(line: usize, message: &str) -> ConfigError {
        ConfigError {
            file: "sonde.toml".into(),
            line,
            column: 3,
            key: "probe[0].name".into(),
            message: message.into(),
        }
    }

    #[test]
    fn config_failures_list_every_error_then_their_count() {
        let one = Failure::config(&ConfigErrors(vec![error(2, "bad")]), EXIT_UNKNOWN);
        assert_eq!(
            one,
            Failure {
                stderr: "sonde.toml:2:3: probe[0].name: bad\n\
                         sonde: configuration invalid (1 error)"
                    .into(),
                code: 3
            }
        );
        let two = Failure::config(
            &ConfigErrors(vec![error(2, "bad"), error(5, "worse")]),
            EXIT_INVALID_CONFIG,
        )
        .then("sonde: or pass --remote URL");
        assert_eq!(two.code, 2);
        assert_eq!(
            two.stderr.lines().collect::<Vec<_>>(),
            [
                "sonde.toml:2:3: probe[0].name: bad",
                "sonde.toml:5:3: probe[0].name: worse",
                "sonde: configuration invalid (2 errors)",
                "sonde: or pass --remote URL",
            ]
        );
    }

    #[test]
    fn one_line_failures_are_prefixed_and_carry_their_code() {
        assert_eq!(Failure::unknown("gone").stderr, "sonde: gone");
        assert_eq!(Failure::unknown("gone").code, EXIT_UNKNOWN);
        assert_eq!(Failure::invalid("bad").code, EXIT_INVALID_CONFIG);
    }

    #[test]
    fn the_chain_names_every_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot start")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("port taken"));
        assert_eq!(chain(&e), "cannot start: port taken");
    }
}
