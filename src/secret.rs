//! Secrets named in configuration by a `*_env` / `*_file` pair (SMTP and PKCS#12
//! passwords, HMAC secrets, API tokens), read the one way every user of them
//! shares, and the redaction that keeps them out of text from peers.
//!
//! The rules, in one place:
//! - `*_env` names an environment variable; `*_file` a file, a relative path
//!   resolving against the directory of the config file that defined it.
//! - Trailing `\r` and `\n` are dropped (the line break an editor or `echo`
//!   leaves); nothing else is touched, so leading and inner spaces stay part of
//!   the secret.
//! - An empty secret is an error. Errors name where the secret was looked for,
//!   never what was found.
//!
//! A leaf module: it depends only on the leaf `file` (the one way config files
//! are read: regular files only, capped). Callers decide when
//! to read (at each use, so a rotated secret takes effect without a restart).

use std::path::{Path, PathBuf};

/// Where a secret is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretSource {
    /// An environment variable, by name.
    Env(String),
    /// A file, already resolved against its config file's directory.
    File(PathBuf),
}

/// Why a secret could not be read. The messages say what the secret is for
/// (`what`, e.g. "password") and where it was looked for; never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SecretError {
    #[error("{what} variable {var} is not set")]
    Unset { what: String, var: String },
    #[error("{what} variable {var} is not valid UTF-8")]
    EnvNotUnicode { what: String, var: String },
    #[error("cannot read {what} file {}: {reason}", path.display())]
    Unreadable {
        what: String,
        path: PathBuf,
        reason: String,
    },
    #[error("{what} file {} is not valid UTF-8", path.display())]
    FileNotUtf8 { what: String, path: PathBuf },
    #[error("{what} {place} is empty")]
    Empty { what: String, place: String },
}

impl SecretSource {
    /// From a `*_env` / `*_file` pair (validation rejects both set; `env` wins
    /// if both are); a relative file resolves against `base_dir`.
    pub(crate) fn from_keys<S: AsRef<str>>(
        env: Option<S>,
        file: Option<S>,
        base_dir: &Path,
    ) -> Option<Self> {
        match (env, file) {
            (Some(var), _) => Some(SecretSource::Env(var.as_ref().to_string())),
            (None, Some(f)) => Some(SecretSource::File(base_dir.join(f.as_ref()))),
            (None, None) => None,
        }
    }

    /// Reads the secret from the process environment or the file, blocking.
    pub(crate) fn read_blocking(&self, what: &str) -> Result<String, SecretError> {
        match self {
            SecretSource::Env(var) => self.read_env(what, var),
            SecretSource::File(path) => self.finish(
                what,
                from_bytes(what, path, crate::file::read_blocking(path, SECRET_MAX))?,
            ),
        }
    }

    /// Reads the secret from the process environment or the file.
    pub(crate) async fn read(&self, what: &str) -> Result<String, SecretError> {
        match self {
            SecretSource::Env(var) => self.read_env(what, var),
            SecretSource::File(path) => {
                let bytes = crate::file::read(path, SECRET_MAX, crate::file::TIMEOUT).await;
                self.finish(what, from_bytes(what, path, bytes)?)
            }
        }
    }

    /// Where the secret is looked for, as errors name it: `variable X`, `file P`.
    pub(crate) fn place(&self) -> String {
        match self {
            SecretSource::Env(var) => format!("variable {var}"),
            SecretSource::File(path) => format!("file {}", path.display()),
        }
    }

    fn read_env(&self, what: &str, var: &str) -> Result<String, SecretError> {
        let value = match std::env::var(var) {
            Ok(v) => v,
            Err(std::env::VarError::NotPresent) => {
                return Err(SecretError::Unset {
                    what: what.to_string(),
                    var: var.to_string(),
                })
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(SecretError::EnvNotUnicode {
                    what: what.to_string(),
                    var: var.to_string(),
                })
            }
        };
        self.finish(what, value)
    }

    /// Applies the trimming and the empty rule to a raw value from this source.
    fn finish(&self, what: &str, raw: String) -> Result<String, SecretError> {
        let value = clean(raw);
        if value.is_empty() {
            return Err(SecretError::Empty {
                what: what.to_string(),
                place: self.place(),
            });
        }
        Ok(value)
    }
}

/// The most bytes a secret file may hold: passwords and tokens are short.
const SECRET_MAX: u64 = 64 * 1024;

fn from_bytes(
    what: &str,
    path: &Path,
    bytes: Result<Vec<u8>, crate::file::ReadError>,
) -> Result<String, SecretError> {
    let bytes = bytes.map_err(|e| SecretError::Unreadable {
        what: what.to_string(),
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    String::from_utf8(bytes).map_err(|_| SecretError::FileNotUtf8 {
        what: what.to_string(),
        path: path.to_path_buf(),
    })
}

/// The trimming rule: `raw` without its trailing `\r` and `\n` characters.
pub(crate) fn clean(mut raw: String) -> String {
    let kept = raw.trim_end_matches(['\r', '\n']).len();
    raw.truncate(kept);
    raw
}

/// `text` with every occurrence of each non-empty secret replaced by `<redacted>`:
/// the last line of defence for text that comes from a peer (a server's reply
/// may echo what it was sent).
pub(crate) fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        if out.contains(s) {
            out = out.replace(s, "<redacted>");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_trailing_line_breaks_are_dropped() {
        assert_eq!(clean("s3cret\n".into()), "s3cret");
        assert_eq!(clean("s3cret\r\n\r\n".into()), "s3cret");
        assert_eq!(clean("  s3 cret \n".into()), "  s3 cret ");
        assert_eq!(clean("\ts3cret\t".into()), "\ts3cret\t");
        assert_eq!(clean("a\nb\n".into()), "a\nb");
    }

    #[test]
    fn a_relative_file_resolves_against_the_config_directory() {
        let base = Path::new("/etc/sonde");
        assert_eq!(
            SecretSource::from_keys(None, Some("pw.txt"), base),
            Some(SecretSource::File(PathBuf::from("/etc/sonde/pw.txt")))
        );
        assert_eq!(
            SecretSource::from_keys(None, Some("/run/pw"), base),
            Some(SecretSource::File(PathBuf::from("/run/pw")))
        );
        assert_eq!(
            SecretSource::from_keys(Some("PW"), None, base),
            Some(SecretSource::Env("PW".into()))
        );
        assert_eq!(SecretSource::from_keys::<&str>(None, None, base), None);
    }

    #[tokio::test]
    async fn files_are_read_with_the_one_rule_sync_and_async() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, " s3cr3t value \r\n").unwrap();
        let file = SecretSource::File(path.clone());
        assert_eq!(file.read("secret").await.unwrap(), " s3cr3t value ");
        assert_eq!(file.read_blocking("secret").unwrap(), " s3cr3t value ");

        std::fs::write(&path, "\n").unwrap();
        let e = file.read("secret").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("secret file {} is empty", path.display())
        );
        assert_eq!(file.read_blocking("secret").unwrap_err(), e);

        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        let e = file.read_blocking("password").unwrap_err();
        assert!(e.to_string().ends_with("is not valid UTF-8"), "{e}");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_fifo_is_not_a_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pw");
        crate::file::tests::mkfifo(&fifo);
        let source = SecretSource::File(fifo.clone());
        let e = source.read("password").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot read password file {}: not a regular file (a FIFO)",
                fifo.display()
            )
        );
        assert_eq!(source.read_blocking("password").unwrap_err(), e);
    }

    #[tokio::test]
    async fn errors_name_the_source_never_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let missing = SecretSource::File(dir.path().join("nope"));
        let e = missing.read("password").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot read password file {}: No such file or directory",
                dir.path().join("nope").display()
            )
        );

        let env = SecretSource::Env("SONDE_TEST_SURELY_UNSET_VARIABLE".into());
        let e = env.read("password").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "password variable SONDE_TEST_SURELY_UNSET_VARIABLE is not set"
        );
        assert_eq!(env.read_blocking("password").unwrap_err(), e);
    }

    #[test]
    fn variables_follow_the_same_rule() {
        // Names of their own: tests run in parallel in one process.
        std::env::set_var("SONDE_TEST_SECRET_SPACED", " pw word \r\n");
        std::env::set_var("SONDE_TEST_SECRET_EMPTY", "\n");
        let spaced = SecretSource::Env("SONDE_TEST_SECRET_SPACED".into());
        assert_eq!(spaced.read_blocking("password").unwrap(), " pw word ");
        let empty = SecretSource::Env("SONDE_TEST_SECRET_EMPTY".into());
        assert_eq!(
            empty.read_blocking("secret").unwrap_err().to_string(),
            "secret variable SONDE_TEST_SECRET_EMPTY is empty"
        );
    }

    #[test]
    fn redact_replaces_every_occurrence_and_ignores_empty_secrets() {
        assert_eq!(
            redact("pw=hunter2, again hunter2", &["hunter2", ""]),
            "pw=<redacted>, again <redacted>"
        );
        assert_eq!(redact("nothing here", &["hunter2"]), "nothing here");
    }
}
