//! `kind = "alertmanager"`: alerts posted to Alertmanager's v2 API.

use serde::Deserialize;

use crate::probe::SpecProblem;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    pub url: String,
}

impl AlertmanagerConfig {
    pub fn validate(&self) -> Vec<SpecProblem> {
        let mut p = Vec::new();
        super::check_http_url("url", &self.url, &mut p);
        p
    }
}
