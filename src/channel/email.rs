//! `kind = "email"`: alerts by SMTP mail (lettre), with STARTTLS, implicit TLS or
//! none, AUTH when `username` is set, and `subject` / `body` templates.
//!
//! Templates replace `{name}` with a field of the alert (`PLACEHOLDERS`); other
//! braces are kept as they are, and an unknown `{name}` is a validation error.
//! An absent category, root cause or end renders as `-`. The idempotency key
//! travels in `X-Sonde-Alert-Key` and, hashed, in the `Message-ID`, so that a
//! retried alert is the same message to the receiving side.
//!
//! SMTP replies map to `DeliveryError`: 5xx (a rejected password, an unknown
//! mailbox) and bad addresses are permanent; 4xx, timeouts, TLS and connection
//! failures are retryable.

use std::path::Path;
use std::time::Duration;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;

use super::{Alert, ChannelContext, ChannelKind, DeliveryError};
use crate::net::smtp::{lettre_tls, SmtpTls};
use crate::secret::SecretSource;
use crate::spec::{BuildError, SpecProblem};

/// The names a template may use, each in braces.
pub(crate) const PLACEHOLDERS: &[&str] = &[
    "probe",
    "kind",
    "health_set",
    "state",
    "severity",
    "event",
    "summary",
    "category",
    "root_cause",
    "started_at",
    "ends_at",
    "created_at",
    "key",
    "observations",
];

pub(crate) const DEFAULT_SUBJECT: &str = "[sonde] {severity} {probe} is {state}";

pub(crate) const DEFAULT_BODY: &str = "{summary}

Probe:        {probe}
Kind:         {kind}
Health set:   {health_set}
State:        {state}
Severity:     {severity}
Event:        {event}
Category:     {category}
Root cause:   {root_cause}
Started at:   {started_at}
Ended at:     {ends_at}
Observations:
{observations}

Alert key:    {key}
-- 
sent by sonde
";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub smtp_host: String,
    pub smtp_port: Option<u16>,
    #[serde(default = "default_tls")]
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    /// PEM file with extra trust anchors for the server's certificate, relative
    /// to the defining file's directory (the system's roots stay trusted).
    pub ca_file: Option<String>,
    #[serde(default = "default_timeout", with = "crate::human::duration")]
    pub timeout: Duration,
}

fn default_tls() -> SmtpTls {
    SmtpTls::Starttls
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl EmailConfig {
    /// The port, defaulting by TLS mode (587 STARTTLS, 465 implicit TLS, 25 plain).
    pub(crate) fn port(&self) -> u16 {
        self.smtp_port.unwrap_or(self.tls.default_port())
    }

    pub(crate) fn validate(&self) -> Vec<SpecProblem> {
        let mut p = Vec::new();
        if self.smtp_host.trim().is_empty() {
            p.push(SpecProblem::new("smtp_host", "must not be empty"));
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            p.push(SpecProblem::new(
                "password_file",
                "give password_env or password_file, not both",
            ));
        }
        let has_password = self.password_env.is_some() || self.password_file.is_some();
        match (&self.username, has_password) {
            (None, true) => p.push(SpecProblem::new("username", "a password needs a username")),
            (Some(_), false) => p.push(SpecProblem::new(
                "username",
                "needs password_env or password_file",
            )),
            _ => {}
        }
        if !is_address(&self.from) {
            p.push(SpecProblem::new(
                "from",
                format!("`{}` is not a mail address", self.from),
            ));
        }
        if self.to.is_empty() {
            p.push(SpecProblem::new("to", "needs at least one recipient"));
        }
        for a in self.to.iter().chain(&self.cc) {
            if !is_address(a) {
                p.push(SpecProblem::new(
                    if self.to.contains(a) { "to" } else { "cc" },
                    format!("`{a}` is not a mail address"),
                ));
            }
        }
        for (key, template) in [("subject", &self.subject), ("body", &self.body)] {
            let Some(template) = template else { continue };
            let unknown: Vec<String> = placeholders(template)
                .filter(|name| !PLACEHOLDERS.contains(name))
                .map(|name| format!("{{{name}}}"))
                .collect();
            if !unknown.is_empty() {
                p.push(SpecProblem::new(
                    key,
                    format!(
                        "unknown placeholder {}; known: {}",
                        unknown.join(", "),
                        PLACEHOLDERS
                            .iter()
                            .map(|n| format!("{{{n}}}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                ));
            }
        }
        if self.ca_file.is_some() && self.tls == SmtpTls::None {
            p.push(SpecProblem::new(
                "ca_file",
                "has no effect with `tls = \"none\"`: remove one of them",
            ));
        }
        super::check_timeout(self.timeout, &mut p);
        p
    }
}

fn is_address(a: &str) -> bool {
    a.parse::<Mailbox>().is_ok()
}

/// The names of the `{name}` placeholders in `template`, in order.
fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    segments(template).filter_map(|s| match s {
        Segment::Placeholder(name) => Some(name),
        Segment::Text(_) => None,
    })
}

enum Segment<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

/// Splits a template into text and `{name}` placeholders, where a name is one or
/// more ASCII letters, digits or underscores; any other brace is text.
fn segments(template: &str) -> impl Iterator<Item = Segment<'_>> {
    let mut rest = template;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut search = 0;
        while let Some(open) = rest[search..].find('{').map(|i| i + search) {
            let after = &rest[open + 1..];
            let name_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if name_len > 0 && after[name_len..].starts_with('}') {
                if open > 0 {
                    let text = &rest[..open];
                    rest = &rest[open..];
                    return Some(Segment::Text(text));
                }
                let name = &after[..name_len];
                rest = &after[name_len + 1..];
                return Some(Segment::Placeholder(name));
            }
            search = open + 1;
        }
        let text = rest;
        rest = "";
        Some(Segment::Text(text))
    })
}

/// The value of placeholder `name` for `alert`; `None` for an unknown name.
fn value(name: &str, alert: &Alert) -> Option<String> {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    Some(match name {
        "probe" => alert.probe.clone(),
        "kind" => alert.kind.clone(),
        "health_set" => alert.health_set.clone(),
        "state" => alert.state.clone(),
        "severity" => alert.severity.to_string(),
        "event" => alert.event.to_string(),
        "summary" => alert.summary.clone(),
        "category" => or_dash(&alert.category),
        "root_cause" => or_dash(&alert.root_cause),
        "started_at" => alert.started_at.to_rfc3339(),
        "ends_at" => alert
            .ends_at
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "-".into()),
        "created_at" => alert.created_at.to_rfc3339(),
        "key" => alert.key.clone(),
        "observations" if alert.observations.is_empty() => "  (none)".into(),
        "observations" => alert
            .observations
            .iter()
            .map(|(k, v)| format!("  {k} = {v}"))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => return None,
    })
}

/// `template` with every known `{name}` replaced by the alert's value; unknown
/// ones (which validation rejects) are left as written.
pub(crate) fn render(template: &str, alert: &Alert) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    for segment in segments(template) {
        match segment {
            Segment::Text(t) => out.push_str(t),
            Segment::Placeholder(name) => match value(name, alert) {
                Some(v) => out.push_str(&v),
                None => {
                    out.push('{');
                    out.push_str(name);
                    out.push('}');
                }
            },
        }
    }
    out
}

/// A subject on one line: line breaks and other control characters from the
/// alert's fields become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// `X-Sonde-Alert-Key: <key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AlertKeyHeader(pub String);

impl Header for AlertKeyHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Sonde-Alert-Key")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AlertKeyHeader(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), one_line(&self.0))
    }
}

/// `Auto-Submitted: auto-generated` (RFC 3834): keeps vacation responders quiet.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".into())
    }
}

/// `<hex of SHA-256(key), 32 digits>@<from's domain>`: the same for every retry
/// of an alert, and free of characters a Message-ID cannot carry.
fn message_id(key: &str, from: &Mailbox) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let hex = hex::encode(digest);
    format!("<{}@{}>", &hex[..32], from.email.domain())
}

/// A runnable `email` channel.
pub struct EmailChannel {
    transport: AsyncSmtpTransportBuilder,
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<SecretSource>,
    from: Mailbox,
    to: Vec<Mailbox>,
    cc: Vec<Mailbox>,
    subject: String,
    body: String,
    timeout: Duration,
}

impl ChannelKind for EmailChannel {
    type Config = EmailConfig;

    fn validate(config: &EmailConfig) -> Vec<SpecProblem> {
        config.validate()
    }

    fn build(config: &EmailConfig, ctx: &ChannelContext<'_>) -> Result<Self, BuildError> {
        EmailChannel::new(config, ctx.base_dir)
    }

    async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        EmailChannel::deliver(self, alert).await
    }
}

impl EmailChannel {
    /// Parses the addresses and sets up TLS (reading `ca_file`); the password is
    /// read at each delivery.
    pub(crate) fn new(cfg: &EmailConfig, base_dir: &Path) -> Result<Self, BuildError> {
        let host = cfg.smtp_host.trim().to_string();
        let port = cfg.port();
        let ca_file = cfg.ca_file.as_ref().map(|ca| base_dir.join(ca));
        let tls = lettre_tls(&host, cfg.tls, ca_file.as_deref(), true)
            .map_err(|m| BuildError::tls(cfg.ca_file.is_some(), m))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .tls(tls)
            .timeout(Some(cfg.timeout));
        let parse = |key: &'static str, a: &str| -> Result<Mailbox, BuildError> {
            a.parse()
                .map_err(|e| BuildError::new(key, format!("`{a}`: {e}")))
        };
        Ok(EmailChannel {
            transport,
            host,
            port,
            username: cfg.username.clone(),
            password: SecretSource::from_keys(
                cfg.password_env.as_ref(),
                cfg.password_file.as_ref(),
                base_dir,
            ),
            from: parse("from", &cfg.from)?,
            to: cfg
                .to
                .iter()
                .map(|a| parse("to", a))
                .collect::<Result<_, _>>()?,
            cc: cfg
                .cc
                .iter()
                .map(|a| parse("cc", a))
                .collect::<Result<_, _>>()?,
            subject: cfg
                .subject
                .clone()
                .unwrap_or_else(|| DEFAULT_SUBJECT.into()),
            body: cfg.body.clone().unwrap_or_else(|| DEFAULT_BODY.into()),
            timeout: cfg.timeout,
        })
    }

    /// The message for `alert`.
    pub(crate) fn message(&self, alert: &Alert) -> Result<Message, DeliveryError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(one_line(&render(&self.subject, alert)))
            .message_id(Some(message_id(&alert.key, &self.from)))
            .header(AlertKeyHeader(alert.key.clone()))
            .header(AutoSubmitted)
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        for cc in &self.cc {
            builder = builder.cc(cc.clone());
        }
        builder
            .body(render(&self.body, alert))
            .map_err(|e| DeliveryError::permanent(format!("cannot build the mail: {e}")))
    }

    pub(crate) async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let message = self.message(alert)?;
        let mut transport = self.transport.clone();
        let mut password = None;
        if let (Some(user), Some(source)) = (&self.username, &self.password) {
            let p = source.read("password").await?;
            transport = transport.credentials(Credentials::new(user.clone(), p.clone()));
            password = Some(p);
        }
        let mailer: AsyncSmtpTransport<Tokio1Executor> = transport.build();
        // lettre's own timeout bounds only the TCP connect, not a server that
        // stops answering: bound the whole exchange.
        let sent = tokio::time::timeout(self.timeout, mailer.send(message)).await;
        match sent {
            Ok(Ok(_)) => Ok(()),
            Err(_) => Err(DeliveryError::retryable(format!(
                "email {}:{}: no reply within {}",
                self.host,
                self.port,
                humantime::format_duration(self.timeout)
            ))),
            Ok(Err(e)) => {
                let secrets: Vec<&str> = password.as_deref().into_iter().collect();
                Err(self.smtp_error(&e).redacted(&secrets))
            }
        }
    }

    fn smtp_error(&self, e: &lettre::transport::smtp::Error) -> DeliveryError {
        let message = format!("email {}:{}: {}", self.host, self.port, error_text(e));
        if e.is_permanent() || e.is_client() {
            DeliveryError::permanent(message)
        } else {
            // 4xx, timeouts, TLS, connection and protocol failures.
            DeliveryError::retryable(message)
        }
    }
}

/// lettre's message and the messages of its sources (`Display` of lettre's error
/// shows only the first level), on one line, cut at 300 characters.
fn error_text(e: &lettre::transport::smtp::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut current = std::error::Error::source(e);
    while let Some(s) = current {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = s.source();
    }
    let text = one_line(&parts.join(": "));
    if text.chars().count() > 300 {
        let mut cut: String = text.chars().take(299).collect();
        cut.push('…');
        cut
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::tests::sample;

    fn config() -> EmailConfig {
        EmailConfig {
            smtp_host: "127.0.0.1".into(),
            smtp_port: Some(2525),
            tls: SmtpTls::None,
            username: None,
            password_env: None,
            password_file: None,
            from: "sonde@example.com".into(),
            to: vec!["ops@example.com".into()],
            cc: vec![],
            subject: None,
            body: None,
            ca_file: None,
            timeout: default_timeout(),
        }
    }

    #[test]
    fn render_replaces_known_placeholders_and_keeps_other_braces() {
        let a = sample();
        assert_eq!(
            render(DEFAULT_SUBJECT, &a),
            "[sonde] critical token-issuance is unhealthy"
        );
        assert_eq!(
            render("{event}/{category}/{root_cause} {} {x y} {{probe}} {", &a),
            "firing/auth/oauth-certificate {} {x y} {token-issuance} {"
        );
        assert_eq!(render("{unknown} {ends_at}", &a), "{unknown} -");
        assert_eq!(render("", &a), "");
        assert_eq!(render("no placeholders", &a), "no placeholders");
    }

    #[test]
    fn default_body_lists_every_field() {
        let body = render(DEFAULT_BODY, &sample());
        for needle in [
            "ACS rejected the assertion",
            "Probe:        token-issuance",
            "Kind:         token",
            "Health set:   PushNotifications.Proxy",
            "State:        unhealthy",
            "Severity:     critical",
            "Event:        firing",
            "Category:     auth",
            "Root cause:   oauth-certificate",
            "Started at:   2026-03-01T10:00:00+00:00",
            "Ended at:     -",
            "  latency_seconds = 0.25",
            "Alert key:    token-issuance:17:firing",
        ] {
            assert!(body.contains(needle), "{needle:?} missing from:\n{body}");
        }
        assert!(!body.contains('{'), "{body}");
    }

    #[test]
    fn unknown_placeholders_are_validation_errors() {
        let mut c = config();
        c.subject = Some("{probe} {prob} {state}".into());
        c.body = Some("{summary} {Summary} {x-y}".into());
        let p: Vec<(&str, String)> = c
            .validate()
            .into_iter()
            .map(|p| (p.key, p.message))
            .collect();
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].0, "subject");
        assert!(p[0]
            .1
            .starts_with("unknown placeholder {prob}; known: {probe} {kind}"));
        assert_eq!(p[1].0, "body");
        assert!(p[1].1.starts_with("unknown placeholder {Summary};"));
    }

    #[test]
    fn validation_covers_credentials_addresses_and_ca_file() {
        let mut c = config();
        c.username = Some("sonde".into());
        c.from = "not an address".into();
        c.cc = vec!["@example.com".into()];
        c.ca_file = Some("ca.pem".into());
        let p: Vec<String> = c
            .validate()
            .into_iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect();
        assert_eq!(
            p,
            [
                "username: needs password_env or password_file",
                "from: `not an address` is not a mail address",
                "cc: `@example.com` is not a mail address",
                "ca_file: has no effect with `tls = \"none\"`: remove one of them",
            ]
        );
    }

    #[test]
    fn message_carries_recipients_key_and_a_stable_message_id() {
        let mut c = config();
        c.cc = vec!["Lead <lead@example.com>".into()];
        c.subject = Some("{probe}\r\nBcc: evil@example.com".into());
        let ch = EmailChannel::new(&c, Path::new(".")).unwrap();
        let a = sample();
        let text = String::from_utf8(ch.message(&a).unwrap().formatted()).unwrap();
        assert!(text.contains("To: ops@example.com\r\n"), "{text}");
        assert!(text.contains("Cc: Lead <lead@example.com>\r\n"), "{text}");
        assert!(text.contains("X-Sonde-Alert-Key: token-issuance:17:firing\r\n"));
        assert!(text.contains("Auto-Submitted: auto-generated\r\n"));
        assert!(
            text.contains("Subject: token-issuance  Bcc: evil@example.com\r\n"),
            "a line break in a field cannot add a header: {text}"
        );
        let id = message_id(&a.key, &ch.from);
        assert!(text.contains(&format!("Message-ID: {id}\r\n")), "{text}");
        assert!(id.ends_with("@example.com>") && id.len() == 2 + 32 + 12);
        let again = String::from_utf8(ch.message(&a).unwrap().formatted()).unwrap();
        assert!(again.contains(&format!("Message-ID: {id}\r\n")));
    }

    #[tokio::test]
    async fn a_dead_port_is_retryable_and_the_password_never_shows() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "smtp-password-value\n").unwrap();
        let mut c = config();
        c.smtp_port = Some(port);
        c.username = Some("sonde".into());
        c.password_file = Some("pw".into());
        let ch = EmailChannel::new(&c, dir.path()).unwrap();
        let e = ch.deliver(&sample()).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("email 127.0.0.1:{port}: ")),
            "{e}"
        );
        assert!(!format!("{e} {e:?}").contains("smtp-password-value"));
    }

    #[tokio::test]
    async fn a_server_that_stops_answering_is_retryable_after_the_timeout() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(b"220 silent ESMTP\r\n").await;
                // Keep the connection open and say nothing more.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    drop(stream);
                });
            }
        });
        let mut c = config();
        c.smtp_port = Some(port);
        c.timeout = Duration::from_millis(500);
        let ch = EmailChannel::new(&c, Path::new(".")).unwrap();
        let started = std::time::Instant::now();
        let e = ch.deliver(&sample()).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert_eq!(
            e.to_string(),
            format!("email 127.0.0.1:{port}: no reply within 500ms")
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
