//! Alert channels: their configuration (one file per kind) and, later, the
//! dispatcher and outbox. A channel is a named instance in `sonde.toml`
//! (`[[channel]]`), routed to from probes with `alert = ["name"]`.

pub mod alertmanager;
pub mod email;
pub mod webhook;

use serde::Deserialize;

use crate::probe::SpecProblem;

/// Kind-specific channel settings, one variant per kind.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelSpec {
    Email(email::EmailConfig),
    Webhook(webhook::WebhookConfig),
    Slack(webhook::PresetConfig),
    Teams(webhook::PresetConfig),
    Alertmanager(alertmanager::AlertmanagerConfig),
}

pub const CHANNEL_KINDS: &[&str] = &["email", "webhook", "slack", "teams", "alertmanager"];

impl ChannelSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelSpec::Email(_) => "email",
            ChannelSpec::Webhook(_) => "webhook",
            ChannelSpec::Slack(_) => "slack",
            ChannelSpec::Teams(_) => "teams",
            ChannelSpec::Alertmanager(_) => "alertmanager",
        }
    }

    pub fn deserialize<'de, D>(kind: &str, de: D) -> Result<Option<Self>, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        Ok(Some(match kind {
            "email" => ChannelSpec::Email(Deserialize::deserialize(de)?),
            "webhook" => ChannelSpec::Webhook(Deserialize::deserialize(de)?),
            "slack" => ChannelSpec::Slack(Deserialize::deserialize(de)?),
            "teams" => ChannelSpec::Teams(Deserialize::deserialize(de)?),
            "alertmanager" => ChannelSpec::Alertmanager(Deserialize::deserialize(de)?),
            _ => return Ok(None),
        }))
    }

    pub fn validate(&self) -> Vec<SpecProblem> {
        match self {
            ChannelSpec::Email(c) => c.validate(),
            ChannelSpec::Webhook(c) => c.validate(),
            ChannelSpec::Slack(c) | ChannelSpec::Teams(c) => c.validate(),
            ChannelSpec::Alertmanager(c) => c.validate(),
        }
    }
}

/// A configured channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelConfig {
    pub name: String,
    pub spec: ChannelSpec,
}

/// Checks that `url` is an absolute http(s) URL; shared by the HTTP-based channels.
pub(crate) fn check_http_url(key: &'static str, url: &str, problems: &mut Vec<SpecProblem>) {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(u) => problems.push(SpecProblem::new(
            key,
            format!("`{}` is not an http(s) URL", u.scheme()),
        )),
        Err(e) => problems.push(SpecProblem::new(key, format!("invalid URL: {e}"))),
    }
}
