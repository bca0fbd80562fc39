//! `kind = "slack"`: a Slack incoming-webhook message (`text` for notifications
//! plus Block Kit `blocks`) POSTed to the channel's URL. The settings are the
//! presets' (`webhook::PresetConfig`); the sending is `webhook::Poster`'s.
//!
//! Slack's limits are respected by truncation: a header holds 150 characters, a
//! section's text 3000, a field 2000, and a section at most 10 fields.

use serde_json::{json, Value};

use super::webhook::{key_header, Poster, PresetConfig};
use super::{Alert, AlertEvent, ChannelContext, ChannelKind, DeliveryError, Severity};
use crate::spec::{BuildError, SpecProblem};

const MAX_HEADER: usize = 150;
const MAX_SECTION: usize = 3000;
const MAX_FIELD: usize = 2000;

/// A runnable `slack` channel.
pub struct SlackChannel {
    poster: Poster,
}

impl ChannelKind for SlackChannel {
    type Config = PresetConfig;

    fn validate(config: &PresetConfig) -> Vec<SpecProblem> {
        config.validate()
    }

    fn build(config: &PresetConfig, _: &ChannelContext<'_>) -> Result<Self, BuildError> {
        SlackChannel::new(config)
    }

    async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        SlackChannel::deliver(self, alert).await
    }
}

impl SlackChannel {
    pub(crate) fn new(cfg: &PresetConfig) -> Result<Self, BuildError> {
        Ok(SlackChannel {
            poster: Poster::new("slack", &cfg.url, cfg.timeout)?,
        })
    }

    pub(crate) async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let body = payload(alert).to_string().into_bytes();
        let mut headers = reqwest::header::HeaderMap::new();
        // Slack ignores it; a relay in between may use it to drop repeats.
        headers.insert(super::webhook::KEY_HEADER, key_header(alert)?);
        self.poster.post(body, headers, &[]).await
    }
}

/// The emoji shortcode that starts a message.
fn icon(alert: &Alert) -> &'static str {
    if alert.event.is_resolution() {
        return ":white_check_mark:";
    }
    match (alert.event, alert.severity) {
        (AlertEvent::FlappingStarted, _) => ":repeat:",
        (_, Severity::Critical) => ":red_circle:",
        (_, Severity::Warning) => ":large_orange_circle:",
        (_, Severity::Info) => ":information_source:",
    }
}

/// `FIRING: token-issuance is unhealthy`, shared with the Teams card's title.
pub(crate) fn headline(alert: &Alert) -> String {
    format!(
        "{}: {} is {}",
        alert.event.title(),
        alert.probe,
        alert.state
    )
}

/// The facts every chat message lists, in order, without empty ones.
pub(crate) fn facts(alert: &Alert) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("Severity", alert.severity.to_string()),
        ("Health set", alert.health_set.clone()),
        ("Kind", alert.kind.clone()),
        ("State", alert.state.clone()),
    ];
    if let Some(c) = &alert.category {
        f.push(("Category", c.clone()));
    }
    if let Some(r) = &alert.root_cause {
        f.push(("Root cause", r.clone()));
    }
    f.push(("Started", alert.started_at.to_rfc3339()));
    if let Some(e) = alert.ends_at {
        f.push(("Ended", e.to_rfc3339()));
    }
    f
}

/// Slack's mrkdwn needs only `&`, `<` and `>` escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters of `text`, ending in `…` when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// The message posted for `alert`.
pub(crate) fn payload(alert: &Alert) -> Value {
    let headline = headline(alert);
    let fields: Vec<Value> = facts(alert)
        .into_iter()
        .take(10)
        .map(|(name, value)| {
            json!({
                "type": "mrkdwn",
                "text": truncate(&format!("*{name}*\n{}", escape(&value)), MAX_FIELD),
            })
        })
        .collect();
    json!({
        "text": truncate(
            &format!("{} {}: {}", icon(alert), escape(&headline), escape(&alert.summary)),
            MAX_SECTION,
        ),
        "blocks": [
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": truncate(&format!("{} {headline}", icon(alert)), MAX_HEADER),
                    "emoji": true,
                },
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": truncate(&escape(&alert.summary), MAX_SECTION)},
            },
            {"type": "section", "fields": fields},
            {
                "type": "context",
                "elements": [{
                    "type": "mrkdwn",
                    "text": truncate(
                        &format!("sonde · {} · key `{}`", alert.event, escape(&alert.key)),
                        MAX_FIELD,
                    ),
                }],
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::tests::sample;

    #[test]
    fn payload_has_text_and_blocks() {
        let mut alert = sample();
        alert.summary = "a < b & c > d".into();
        let v = payload(&alert);
        assert_eq!(
            v["text"],
            ":red_circle: FIRING: token-issuance is unhealthy: a &lt; b &amp; c &gt; d"
        );
        let blocks = v["blocks"].as_array().unwrap();
        let types: Vec<&str> = blocks.iter().map(|b| b["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["header", "section", "section", "context"]);
        assert_eq!(
            blocks[0]["text"]["text"],
            ":red_circle: FIRING: token-issuance is unhealthy"
        );
        let fields = blocks[2]["fields"].as_array().unwrap();
        assert_eq!(fields[0]["text"], "*Severity*\ncritical");
        assert!(fields
            .iter()
            .any(|f| f["text"] == "*Root cause*\noauth-certificate"));
        assert!(blocks[3]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains("token-issuance:17:firing"));
    }

    #[test]
    fn resolution_gets_a_check_mark_and_long_text_is_cut() {
        let mut alert = sample();
        alert.event = AlertEvent::Resolved;
        alert.probe = "p".repeat(400);
        let v = payload(&alert);
        let header = v["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(
            header.starts_with(":white_check_mark: RESOLVED"),
            "{header}"
        );
        assert_eq!(header.chars().count(), MAX_HEADER);
        assert!(header.ends_with('…'));
    }
}
