//! Problems found in a kind's settings (probe kinds and channel kinds alike):
//! the key a problem concerns and what is wrong. The config loader places each
//! one at its file:line:col.

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
