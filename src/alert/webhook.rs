//! `kind = "webhook"` (a versioned JSON payload, optional HMAC-SHA256 signature) and
//! the `slack` / `teams` presets, which post their own payload shapes.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::probe::SpecProblem;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl WebhookConfig {
    pub fn validate(&self) -> Vec<SpecProblem> {
        let mut p = Vec::new();
        super::check_http_url("url", &self.url, &mut p);
        if self.secret_env.is_some() && self.secret_file.is_some() {
            p.push(SpecProblem::new(
                "secret_file",
                "give secret_env or secret_file, not both",
            ));
        }
        for name in self.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.push(SpecProblem::new(
                    "headers",
                    format!("`{name}` is not a valid header name"),
                ));
            }
        }
        p
    }
}

/// Settings of the Slack and Teams presets: only where to post.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetConfig {
    pub url: String,
}

impl PresetConfig {
    pub fn validate(&self) -> Vec<SpecProblem> {
        let mut p = Vec::new();
        super::check_http_url("url", &self.url, &mut p);
        p
    }
}
