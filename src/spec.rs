//! Problems found in a kind's settings (probe kinds and channel kinds alike):
//! the key a problem concerns and what is wrong. `SpecProblem` comes from the
//! pure checks (`validate`), `BuildError` from building (files that must open,
//! keys that must decrypt). The config loader and `crate::build` place each one
//! at the file:line:col of the key it names.

/// A problem found while validating a kind's settings: the key it concerns
/// (empty for the table as a whole) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    pub key: &'static str,
    pub message: String,
}

impl SpecProblem {
    pub fn new(key: &'static str, message: impl Into<String>) -> Self {
        SpecProblem {
            key,
            message: message.into(),
        }
    }
}

/// Why a probe or channel could not be built from its settings: a `ca_file`
/// that does not read, a key that does not decrypt, a setting `validate` let
/// through that the kind's library refuses. `key` is the setting it concerns
/// (empty for the table as a whole); the message never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    pub key: &'static str,
    pub message: String,
}

impl BuildError {
    pub fn new(key: &'static str, message: impl Into<String>) -> Self {
        BuildError {
            key,
            message: message.into(),
        }
    }

    /// A failed TLS setup: reading `ca_file` is what fails when one is set,
    /// otherwise the TLS settings as a whole.
    pub fn tls(ca_file_set: bool, message: impl Into<String>) -> Self {
        BuildError::new(if ca_file_set { "ca_file" } else { "" }, message)
    }
}

impl From<SpecProblem> for BuildError {
    fn from(p: SpecProblem) -> Self {
        BuildError::new(p.key, p.message)
    }
}
