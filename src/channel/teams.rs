//! `kind = "teams"`: a Microsoft Teams message carrying one Adaptive Card (title,
//! summary, facts), the shape that Teams Workflows ("When a Teams webhook request
//! is received") and the older incoming-webhook connectors both accept. The
//! settings are the presets' (`webhook::PresetConfig`); the sending is
//! `webhook::Poster`'s.

use serde_json::{json, Value};

use super::slack::{facts, headline, truncate};
use super::webhook::{key_header, Poster, PresetConfig};
use super::{Alert, ChannelContext, ChannelKind, DeliveryError, Severity};
use crate::spec::{BuildError, SpecProblem};

/// Adaptive Card schema version; 1.4 is what Teams renders everywhere.
const CARD_VERSION: &str = "1.4";

/// A runnable `teams` channel.
pub struct TeamsChannel {
    poster: Poster,
}

impl ChannelKind for TeamsChannel {
    type Config = PresetConfig;

    fn validate(config: &PresetConfig) -> Vec<SpecProblem> {
        config.validate()
    }

    fn build(config: &PresetConfig, _: &ChannelContext<'_>) -> Result<Self, BuildError> {
        TeamsChannel::new(config)
    }

    async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        TeamsChannel::deliver(self, alert).await
    }
}

impl TeamsChannel {
    pub(crate) fn new(cfg: &PresetConfig) -> Result<Self, BuildError> {
        Ok(TeamsChannel {
            poster: Poster::new("teams", &cfg.url, cfg.timeout)?,
        })
    }

    pub(crate) async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let body = payload(alert).to_string().into_bytes();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(super::webhook::KEY_HEADER, key_header(alert)?);
        self.poster.post(body, headers, &[]).await
    }
}

/// The card's title colour.
fn color(alert: &Alert) -> &'static str {
    if alert.event.is_resolution() {
        return "Good";
    }
    match alert.severity {
        Severity::Critical => "Attention",
        Severity::Warning => "Warning",
        Severity::Info => "Accent",
    }
}

/// The message posted for `alert`.
pub(crate) fn payload(alert: &Alert) -> Value {
    let facts: Vec<Value> = facts(alert)
        .into_iter()
        .chain([("Key", alert.key.clone())])
        .map(|(title, value)| json!({"title": title, "value": truncate(&value, 1000)}))
        .collect();
    json!({
        "type": "message",
        "summary": truncate(&headline(alert), 200),
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": CARD_VERSION,
                "msteams": {"width": "Full"},
                "body": [
                    {
                        "type": "TextBlock",
                        "text": truncate(&format!("[sonde] {}", headline(alert)), 300),
                        "weight": "Bolder",
                        "size": "Medium",
                        "color": color(alert),
                        "wrap": true,
                    },
                    {
                        "type": "TextBlock",
                        "text": truncate(&alert.summary, 3000),
                        "wrap": true,
                    },
                    {"type": "FactSet", "facts": facts},
                ],
            },
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::tests::sample;
    use crate::channel::AlertEvent;

    #[test]
    fn payload_is_a_message_with_one_adaptive_card() {
        let v = payload(&sample());
        assert_eq!(v["type"], "message");
        let attachments = v["attachments"].as_array().unwrap();
        assert_eq!(attachments.len(), 1);
        assert_eq!(
            attachments[0]["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let card = &attachments[0]["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["version"], "1.4");
        let body = card["body"].as_array().unwrap();
        assert_eq!(
            body[0]["text"],
            "[sonde] FIRING: token-issuance is unhealthy"
        );
        assert_eq!(body[0]["color"], "Attention");
        assert_eq!(
            body[1]["text"],
            "ACS rejected the assertion (HTTP 401): AADSTS700027"
        );
        let facts = body[2]["facts"].as_array().unwrap();
        assert_eq!(facts[0], json!({"title": "Severity", "value": "critical"}));
        assert_eq!(
            facts.last().unwrap(),
            &json!({"title": "Key", "value": "token-issuance:17:firing"})
        );
    }

    #[test]
    fn resolution_is_green() {
        let mut a = sample();
        a.event = AlertEvent::Resolved;
        let v = payload(&a);
        assert_eq!(v["attachments"][0]["content"]["body"][0]["color"], "Good");
    }
}
