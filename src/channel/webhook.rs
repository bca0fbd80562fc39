//! `kind = "webhook"`: a versioned JSON payload POSTed to a URL, with the
//! idempotency key in `X-Sonde-Alert-Key` and an optional HMAC-SHA256 signature
//! of the exact body in `X-Sonde-Signature`. Also the settings of the `slack` and
//! `teams` presets (`PresetConfig`) and the HTTP sending every HTTP-based channel
//! shares (`Poster`): one POST, the status mapped to retryable or permanent.
//! The presets' payloads live in `slack.rs` and `teams.rs`, Alertmanager's in
//! `alertmanager.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};

use super::{Alert, ChannelContext, ChannelKind, DeliveryError};
use crate::clock::{Clock, SystemClock};
use crate::net::http::{check_url_key, error_chain, origin, read_prefix, retry_after};
use crate::secret::SecretSource;
use crate::spec::{BuildError, SpecProblem};

/// The version of the webhook payload; it changes only when a field changes
/// meaning or goes away (new fields may appear within a version).
pub(crate) const PAYLOAD_VERSION: &str = "1";

/// The header carrying the alert's idempotency key.
pub(crate) const KEY_HEADER: &str = "x-sonde-alert-key";

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>` when a secret is set.
pub(crate) const SIGNATURE_HEADER: &str = "x-sonde-signature";

/// Headers sonde sets itself, which `headers` may not override.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    KEY_HEADER,
    SIGNATURE_HEADER,
];

/// Longest piece of a receiver's error reply quoted in a `DeliveryError`.
const MAX_REPLY_SHOWN: usize = 200;

/// How long `Retry-After` may ask to wait before sonde stops believing it.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `Debug` is written by hand: the URL and header values may hold credentials.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout", with = "crate::human::duration")]
    pub timeout: Duration,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self.headers.keys().map(String::as_str).collect();
        f.debug_struct("WebhookConfig")
            .field("url", &origin(&self.url))
            .field("secret_env", &self.secret_env)
            .field("secret_file", &self.secret_file)
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl WebhookConfig {
    pub(crate) fn validate(&self) -> Vec<SpecProblem> {
        let mut p = Vec::new();
        check_url_key("url", &self.url, &mut p);
        if self.secret_env.is_some() && self.secret_file.is_some() {
            p.push(SpecProblem::new(
                "secret_file",
                "give secret_env or secret_file, not both",
            ));
        }
        for (name, value) in &self.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.push(SpecProblem::new(
                    "headers",
                    format!("`{name}` is not a valid header name"),
                ));
            } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                p.push(SpecProblem::new(
                    "headers",
                    format!("`{name}` is set by sonde and cannot be configured"),
                ));
            }
            if HeaderValue::from_str(value).is_err() {
                p.push(SpecProblem::new(
                    "headers",
                    format!("the value of header `{name}` holds characters a header cannot carry"),
                ));
            }
        }
        super::check_timeout(self.timeout, &mut p);
        p
    }
}

/// Settings of the Slack and Teams presets: where to post, and how long to wait.
/// `Debug` is written by hand: their URLs carry the token.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetConfig {
    pub url: String,
    #[serde(default = "default_timeout", with = "crate::human::duration")]
    pub timeout: Duration,
}

impl fmt::Debug for PresetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresetConfig")
            .field("url", &origin(&self.url))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl PresetConfig {
    pub(crate) fn validate(&self) -> Vec<SpecProblem> {
        let mut p = Vec::new();
        check_url_key("url", &self.url, &mut p);
        super::check_timeout(self.timeout, &mut p);
        p
    }
}

/// The webhook payload: `version` then every field of the alert.
#[derive(Serialize)]
struct Payload<'a> {
    version: &'static str,
    #[serde(flatten)]
    alert: &'a Alert,
}

/// The exact bytes a webhook posts for `alert`.
pub(crate) fn payload(alert: &Alert) -> Vec<u8> {
    // Serialising plain data to a Vec cannot fail (non-finite numbers become null).
    serde_json::to_vec(&Payload {
        version: PAYLOAD_VERSION,
        alert,
    })
    .unwrap_or_default()
}

/// `sha256=<lower-case hex HMAC-SHA256 of body under secret>`.
pub(crate) fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, body);
    format!("sha256={}", hex::encode(tag))
}

/// A runnable `webhook` channel.
pub struct WebhookChannel {
    poster: Poster,
    secret: Option<SecretSource>,
    headers: HeaderMap,
    /// The configured header values, kept out of error messages.
    header_values: Vec<String>,
}

impl ChannelKind for WebhookChannel {
    type Config = WebhookConfig;

    fn validate(config: &WebhookConfig) -> Vec<SpecProblem> {
        config.validate()
    }

    fn build(config: &WebhookConfig, ctx: &ChannelContext<'_>) -> Result<Self, BuildError> {
        WebhookChannel::new(config, ctx.base_dir)
    }

    async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        WebhookChannel::deliver(self, alert).await
    }
}

impl WebhookChannel {
    pub(crate) fn new(cfg: &WebhookConfig, base_dir: &Path) -> Result<Self, BuildError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                BuildError::new("headers", format!("`{name}` is not a valid header name"))
            })?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                BuildError::new(
                    "headers",
                    format!("the value of header `{name}` is not valid"),
                )
            })?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        Ok(WebhookChannel {
            poster: Poster::new("webhook", &cfg.url, cfg.timeout)?,
            secret: SecretSource::from_keys(
                cfg.secret_env.as_ref(),
                cfg.secret_file.as_ref(),
                base_dir,
            ),
            headers,
            header_values: cfg.headers.values().cloned().collect(),
        })
    }

    pub(crate) async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let body = payload(alert);
        let mut headers = self.headers.clone();
        headers.insert(KEY_HEADER, key_header(alert)?);
        let secret = match &self.secret {
            Some(source) => Some(source.read("secret").await?),
            None => None,
        };
        if let Some(secret) = &secret {
            let value = HeaderValue::from_str(&signature(secret.as_bytes(), &body))
                .map_err(|_| DeliveryError::permanent("signature is not a header value"))?;
            headers.insert(SIGNATURE_HEADER, value);
        }
        let mut secrets: Vec<&str> = self.header_values.iter().map(String::as_str).collect();
        if let Some(s) = &secret {
            secrets.push(s);
        }
        self.poster.post(body, headers, &secrets).await
    }
}

/// The alert's key as the `X-Sonde-Alert-Key` value.
pub(crate) fn key_header(alert: &Alert) -> Result<HeaderValue, DeliveryError> {
    HeaderValue::from_str(&alert.key).map_err(|_| {
        DeliveryError::permanent("the alert key holds characters a header cannot carry")
    })
}

/// One JSON POST to a fixed URL with sonde's HTTP client (its rustls setup, no
/// proxies from the environment, no redirects), and the reply mapped to a
/// `DeliveryError`: 2xx is delivered; 408, 425, 429 and 5xx are retryable (with
/// `Retry-After`, in seconds or as an HTTP-date); anything else, redirects
/// included, is permanent. Errors name `scheme://host[:port]` only.
pub(crate) struct Poster {
    what: &'static str,
    client: reqwest::Client,
    url: Url,
    timeout: Duration,
    shown: String,
    /// Parts of the URL that may be credentials: its path, query and password.
    url_secrets: Vec<String>,
}

impl Poster {
    /// `what` names the channel kind in errors, e.g. "slack".
    pub(crate) fn new(
        what: &'static str,
        url: &str,
        timeout: Duration,
    ) -> Result<Self, BuildError> {
        let url =
            Url::parse(url).map_err(|e| BuildError::new("url", format!("invalid URL: {e}")))?;
        // Connections are kept: a receiver usually gets alerts in bursts.
        let client = crate::net::http::client_with_pool(true, None, 4)
            .map_err(|m| BuildError::new("", m))?;
        let mut url_secrets = Vec::new();
        if url.path().len() > 1 {
            url_secrets.push(url.path().to_string());
        }
        if let Some(q) = url.query() {
            url_secrets.push(q.to_string());
        }
        if let Some(p) = url.password() {
            url_secrets.push(p.to_string());
        }
        Ok(Poster {
            what,
            client,
            shown: origin(url.as_str()),
            url,
            timeout,
            url_secrets,
        })
    }

    pub(crate) async fn post(
        &self,
        body: Vec<u8>,
        headers: HeaderMap,
        secrets: &[&str],
    ) -> Result<(), DeliveryError> {
        let mut all: Vec<&str> = secrets.to_vec();
        all.extend(self.url_secrets.iter().map(String::as_str));
        self.send(body, headers).await.map_err(|e| e.redacted(&all))
    }

    async fn send(&self, body: Vec<u8>, headers: HeaderMap) -> Result<(), DeliveryError> {
        let sent = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .headers(headers)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Err(self.transport_error(&e)),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, SystemClock.now()))
            .filter(|d| *d <= MAX_RETRY_AFTER);
        let reply = reply_excerpt(response).await;
        let mut message = format!("{} {}: HTTP {status}", self.what, self.shown);
        if !reply.is_empty() {
            message.push_str(": ");
            message.push_str(&reply);
        }
        Err(if retryable_status(status) {
            DeliveryError::Retryable {
                message,
                retry_after,
            }
        } else {
            DeliveryError::Permanent { message }
        })
    }

    fn transport_error(&self, e: &reqwest::Error) -> DeliveryError {
        let prefix = format!("{} {}", self.what, self.shown);
        if e.is_timeout() {
            DeliveryError::retryable(format!(
                "{prefix}: no reply within {}",
                humantime::format_duration(self.timeout)
            ))
        } else if e.is_builder() {
            DeliveryError::permanent(format!(
                "{prefix}: cannot build the request: {}",
                error_chain(e)
            ))
        } else {
            DeliveryError::retryable(format!("{prefix}: {}", error_chain(e)))
        }
    }
}

/// Whether a reply status is worth another attempt.
pub(crate) fn retryable_status(status: StatusCode) -> bool {
    status.is_server_error()
        || matches!(
            status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_EARLY | StatusCode::TOO_MANY_REQUESTS
        )
}

/// The first line of a reply's body, control characters dropped, at most
/// `MAX_REPLY_SHOWN` characters: Slack's `invalid_payload`, Alertmanager's
/// validation message.
async fn reply_excerpt(response: reqwest::Response) -> String {
    let body = read_prefix(response, 4096).await;
    let text = String::from_utf8_lossy(&body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    let mut shown: String = line
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REPLY_SHOWN + 1)
        .collect();
    if shown.chars().count() > MAX_REPLY_SHOWN {
        shown = shown.chars().take(MAX_REPLY_SHOWN).collect();
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::tests::sample;
    use serde_json::Value;

    fn config(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            secret_env: None,
            secret_file: None,
            headers: BTreeMap::new(),
            timeout: default_timeout(),
        }
    }

    #[test]
    fn payload_is_versioned_and_carries_every_alert_field() {
        let alert = sample();
        let v: Value = serde_json::from_slice(&payload(&alert)).unwrap();
        assert_eq!(v["version"], "1");
        assert_eq!(v["key"], "token-issuance:17:firing");
        assert_eq!(v["event"], "firing");
        assert_eq!(v["severity"], "critical");
        assert_eq!(v["probe"], "token-issuance");
        assert_eq!(v["kind"], "token");
        assert_eq!(v["health_set"], "PushNotifications.Proxy");
        assert_eq!(v["state"], "unhealthy");
        assert_eq!(v["category"], "auth");
        assert_eq!(v["root_cause"], "oauth-certificate");
        assert_eq!(v["started_at"], "2026-03-01T10:00:00Z");
        assert_eq!(v["ends_at"], Value::Null);
        assert_eq!(v["created_at"], "2026-03-01T10:15:00Z");
        assert_eq!(v["observations"]["latency_seconds"], 0.25);
        let fields = v.as_object().unwrap().len();
        assert_eq!(fields, 15, "version + the 14 fields of Alert: {v}");
        // `version` comes first, so a reader can dispatch on it before the rest.
        assert!(String::from_utf8(payload(&alert))
            .unwrap()
            .starts_with(r#"{"version":"1","#));
    }

    #[test]
    fn signature_is_the_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn validation_rejects_reserved_and_invalid_headers() {
        let mut c = config("https://hooks.example.com/x");
        c.headers.insert("X-Sonde-Signature".into(), "v".into());
        c.headers.insert("bad header".into(), "v".into());
        c.headers.insert("X-Ok".into(), "line\nbreak".into());
        c.secret_env = Some("A".into());
        c.secret_file = Some("b".into());
        c.timeout = Duration::ZERO;
        let p: Vec<String> = c
            .validate()
            .into_iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect();
        assert_eq!(
            p,
            [
                "secret_file: give secret_env or secret_file, not both",
                "headers: the value of header `X-Ok` holds characters a header cannot carry",
                "headers: `X-Sonde-Signature` is set by sonde and cannot be configured",
                "headers: `bad header` is not a valid header name",
                "timeout: must be more than 0s",
            ]
        );
    }

    #[test]
    fn debug_hides_url_paths_and_header_values() {
        let mut c = config("https://user:pw@hooks.example.com:8443/T000/B000/XXXX?token=abc");
        c.headers
            .insert("Authorization".into(), "Bearer very-secret".into());
        let shown = format!("{c:?}");
        assert!(shown.contains("https://hooks.example.com:8443"), "{shown}");
        for secret in ["XXXX", "abc", "very-secret", "pw"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        let p = PresetConfig {
            url: "https://hooks.slack.com/services/T0/B0/SECRET".into(),
            timeout: default_timeout(),
        };
        assert!(!format!("{p:?}").contains("SECRET"));
    }

    #[test]
    fn statuses_map_to_retryable_or_permanent() {
        for code in [500, 502, 503, 504, 408, 425, 429] {
            assert!(
                retryable_status(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
        for code in [301, 400, 401, 403, 404, 410, 413, 422] {
            assert!(
                !retryable_status(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
    }

    #[tokio::test]
    async fn secret_values_never_reach_the_error() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A port nothing listens on: bind one, then drop it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "hmac-secret-value").unwrap();
        let mut c = config(&format!(
            "http://127.0.0.1:{port}/hooks/path-token?sig=query-token"
        ));
        c.secret_file = Some("secret".into());
        c.headers
            .insert("Authorization".into(), "Bearer header-token".into());
        let ch = WebhookChannel::new(&c, dir.path()).unwrap();
        let e = ch.deliver(&sample()).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        let text = format!("{e} {e:?}");
        assert!(
            text.contains(&format!("webhook http://127.0.0.1:{port}")),
            "{text}"
        );
        for secret in [
            "hmac-secret-value",
            "path-token",
            "query-token",
            "header-token",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}
