//! `kind = "push"`: the last link of the hybrid push chain.
//!
//! `mode = "connectivity"` does what Managed Availability's
//! `PushNotificationsEnterpriseConnectivityProbe` does: get a token with the
//! credential of the `token_probe`, post the monitoring batch to the
//! `OnPrem-Proxy` with the probe's headers, and call any 2xx a success
//! (categories `auth` for a rejected token, `push` for a proxy fault, `network`).
//! `mode = "end_to_end"` sends a uniquely tagged mail to the test mailbox through
//! SMTP, then watches the device side (`badge_url` + `badge_pointer`) until the
//! badge rises, reporting how long it took.

use std::path::Path;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::Instrument;

use super::token::{TokenClient, TokenConfig};
use futures::future::BoxFuture;

use crate::net::http::{check_url_key, read_prefix};
use crate::net::smtp::{lettre_tls, SmtpTls};
use crate::outcome::{Category, Outcome, Probe, ProbeContext};
use crate::secret::SecretSource;
use crate::spec::SpecProblem;

pub const PUBLISH_PATH: &str = "/service.svc/PublishOnPremNotifications";
const USER_AGENT: &str = "Exchange/15.00.0000.000/PushNotificationsOnPremProxy";
const MAX_RESPONSE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Connectivity,
    EndToEnd,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    #[serde(default)]
    pub mode: Mode,
    /// The OnPrem-Proxy app's `Uri`.
    #[serde(default = "default_proxy")]
    pub proxy_url: String,
    /// The `token` probe whose credential and STS this probe uses (connectivity).
    pub token_probe: Option<String>,
    pub smtp_host: Option<String>,
    pub smtp_port: Option<u16>,
    #[serde(default = "default_tls")]
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub from: Option<String>,
    /// The test mailbox's address.
    pub to: Option<String>,
    /// A JSON document on the device side holding the badge count.
    pub badge_url: Option<String>,
    #[serde(default = "default_pointer")]
    pub badge_pointer: String,
    #[serde(default = "default_deadline", with = "crate::human::duration")]
    pub deadline: Duration,
    #[serde(default = "default_warn_latency", with = "crate::human::duration")]
    pub warn_latency: Duration,
    #[serde(default = "default_poll", with = "crate::human::duration")]
    pub poll_every: Duration,
    #[serde(default = "yes")]
    pub verify: bool,
    pub ca_file: Option<String>,
}

fn default_proxy() -> String {
    "https://outlook.office365.com/PushNotifications".into()
}
fn default_tls() -> SmtpTls {
    SmtpTls::Starttls
}
fn default_pointer() -> String {
    "/badge".into()
}
fn default_deadline() -> Duration {
    Duration::from_secs(300)
}
fn default_warn_latency() -> Duration {
    Duration::from_secs(60)
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}
fn yes() -> bool {
    true
}

impl PushConfig {
    pub fn validate(&self) -> Vec<SpecProblem> {
        let mut p = Vec::new();
        check_url_key("proxy_url", &self.proxy_url, &mut p);
        match self.mode {
            Mode::Connectivity => {
                if self.token_probe.is_none() {
                    p.push(SpecProblem::new(
                        "token_probe",
                        "connectivity mode needs the name of a `token` probe",
                    ));
                }
                for (key, set) in [
                    ("smtp_host", self.smtp_host.is_some()),
                    ("to", self.to.is_some()),
                    ("badge_url", self.badge_url.is_some()),
                ] {
                    if set {
                        p.push(SpecProblem::new(
                            key,
                            "only used with mode = \"end_to_end\"",
                        ));
                    }
                }
            }
            Mode::EndToEnd => {
                for (key, v) in [
                    ("smtp_host", &self.smtp_host),
                    ("from", &self.from),
                    ("to", &self.to),
                    ("badge_url", &self.badge_url),
                ] {
                    if v.as_deref().is_none_or(str::is_empty) {
                        p.push(SpecProblem::new(key, "required with mode = \"end_to_end\""));
                    }
                }
                for (key, v) in [("from", &self.from), ("to", &self.to)] {
                    if let Some(a) = v {
                        if a.parse::<lettre::Address>().is_err() {
                            p.push(SpecProblem::new(
                                key,
                                format!("`{a}` is not a mail address"),
                            ));
                        }
                    }
                }
                if let Some(u) = &self.badge_url {
                    check_url_key("badge_url", u, &mut p);
                }
                if !self.badge_pointer.is_empty() && !self.badge_pointer.starts_with('/') {
                    p.push(SpecProblem::new(
                        "badge_pointer",
                        "must be a JSON pointer (start with `/`)",
                    ));
                }
                if self.warn_latency >= self.deadline {
                    p.push(SpecProblem::new(
                        "warn_latency",
                        "must be shorter than deadline",
                    ));
                }
                if self.poll_every.is_zero() || self.poll_every > self.deadline {
                    p.push(SpecProblem::new(
                        "poll_every",
                        "must be more than 0s and at most deadline",
                    ));
                }
                if self.password_env.is_some() && self.password_file.is_some() {
                    p.push(SpecProblem::new(
                        "password_file",
                        "give password_env or password_file, not both",
                    ));
                }
                if (self.password_env.is_some() || self.password_file.is_some())
                    && self.username.is_none()
                {
                    p.push(SpecProblem::new("username", "a password needs a username"));
                }
            }
        }
        p
    }

    /// The probe needs this much time per run: the runner's timeout must exceed it.
    pub fn min_timeout(&self) -> Option<Duration> {
        (self.mode == Mode::EndToEnd).then_some(self.deadline)
    }
}

pub struct PushProbe {
    mode: Mode,
    publish_url: reqwest::Url,
    token: Option<TokenClient>,
    http: reqwest::Client,
    e2e: Option<EndToEnd>,
}

struct EndToEnd {
    mailer: lettre::transport::smtp::AsyncSmtpTransportBuilder,
    from: lettre::message::Mailbox,
    to: lettre::message::Mailbox,
    badge_url: reqwest::Url,
    badge_pointer: String,
    deadline: Duration,
    warn_latency: Duration,
    poll_every: Duration,
    password: Option<SecretSource>,
    username: Option<String>,
}

impl PushProbe {
    /// `token` is the configuration (and its directory) of the `token_probe`.
    pub fn new(
        cfg: &PushConfig,
        base_dir: &Path,
        token: Option<(&TokenConfig, &Path)>,
    ) -> Result<Self, String> {
        if let Some(p) = cfg.validate().into_iter().next() {
            return Err(format!("{}: {}", p.key, p.message));
        }
        let base = cfg.proxy_url.trim_end_matches('/');
        let publish_url = reqwest::Url::parse(&format!("{base}{PUBLISH_PATH}"))
            .map_err(|e| format!("proxy_url: {e}"))?;
        let ca_file = cfg.ca_file.as_ref().map(|f| base_dir.join(f));
        let http =
            crate::net::http::Clients::process().probe_client(cfg.verify, ca_file.as_deref())?;
        let token = match (cfg.mode, token) {
            (Mode::Connectivity, Some((tc, dir))) => Some(TokenClient::new(tc, dir)?),
            (Mode::Connectivity, None) => {
                return Err(format!(
                    "token_probe `{}` is not a `token` probe",
                    cfg.token_probe.as_deref().unwrap_or("")
                ))
            }
            (Mode::EndToEnd, _) => None,
        };
        let e2e = match cfg.mode {
            Mode::Connectivity => None,
            Mode::EndToEnd => Some(EndToEnd::new(cfg, base_dir)?),
        };
        Ok(PushProbe {
            mode: cfg.mode,
            publish_url,
            token,
            http,
            e2e,
        })
    }

    async fn connectivity(&self, ctx: &ProbeContext) -> Outcome {
        let Some(client) = &self.token else {
            return Outcome::unknown(Category::Internal, "no token client");
        };
        let token = match client.acquire(ctx).await {
            Ok(t) => t,
            Err(mut o) => {
                o.summary = format!("token: {}", o.summary);
                return o;
            }
        };
        let now_ms = ctx.clock.now().timestamp_millis();
        let batch = json!({"notifications": [{
            "payload": {"tenantId": "", "unseenEmailCount": 1, "isMonitoring": true},
            "recipients": [{
                "appId": "MonitoringProbeAppId",
                "deviceId": "0000000000000000000000000000000000000000000000000000000000000000",
                "lastSubscriptionUpdate": format!("/Date({now_ms})/"),
            }],
        }]});
        // The span lasts until the whole answer is read.
        let post = tracing::info_span!("push_post");
        let start = tokio::time::Instant::now();
        let sent = self
            .http
            .post(self.publish_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", token.bearer()),
            )
            .header("client-request-id", crate::guid::random())
            .header("return-client-request-id", "True")
            .header(reqwest::header::USER_AGENT, USER_AGENT)
            .header("X-ProbeType", "X-MS-ClientAccess-LocalProbe")
            .body(batch.to_string())
            .send()
            .instrument(post.clone())
            .await;
        let what = format!("push to {}", self.publish_url.host_str().unwrap_or(""));
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Outcome::request_failure(&e, &what),
        };
        let status = response.status();
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(300).collect::<String>());
        let body = read_prefix(response, MAX_RESPONSE).instrument(post).await;
        let latency = start.elapsed();
        let fault: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let message = fault.get("Message").and_then(Value::as_str).map(|m| {
            m.lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect::<String>()
        });
        let mut o = if status.is_success() {
            Outcome::ok(format!(
                "push proxy accepted the monitoring batch in {} ms (HTTP {})",
                latency.as_millis(),
                status.as_u16()
            ))
        } else if status.as_u16() == 401 {
            let mut s = "push proxy rejected the token (HTTP 401)".to_string();
            if let Some(m) = &message {
                s.push_str(&format!(": {m}"));
            }
            if let Some(c) = challenge.as_deref().and_then(trusted_issuers) {
                s.push_str(&format!("; it trusts {c}"));
            }
            Outcome::critical(Category::Auth, s)
        } else {
            let mut s = format!("push proxy fault (HTTP {})", status.as_u16());
            if let Some(m) = &message {
                s.push_str(&format!(": {m}"));
            }
            if let Some(retry) = fault.get("CanRetry").and_then(Value::as_bool) {
                s.push_str(if retry {
                    " (CanRetry: true"
                } else {
                    " (CanRetry: false"
                });
                match fault
                    .get("BackOffTimeInMilliseconds")
                    .and_then(Value::as_u64)
                {
                    Some(ms) if retry && ms > 0 => s.push_str(&format!(", back off {ms} ms)")),
                    _ => s.push(')'),
                }
            }
            Outcome::critical(Category::Push, s)
        };
        o.observe("latency_seconds", latency.as_secs_f64());
        o.observe("status_code", f64::from(status.as_u16()));
        for (k, v) in &token.observations {
            let name = match *k {
                "latency_seconds" => "token_latency_seconds",
                other => other,
            };
            o.observe(name, *v);
        }
        o
    }
}

/// `trusted_issuers="…"` out of a Bearer challenge.
fn trusted_issuers(challenge: &str) -> Option<String> {
    let at = challenge.find("trusted_issuers=\"")? + "trusted_issuers=\"".len();
    let end = challenge[at..].find('"')? + at;
    Some(challenge[at..end].to_string())
}

impl EndToEnd {
    fn new(cfg: &PushConfig, base_dir: &Path) -> Result<Self, String> {
        let host = cfg.smtp_host.clone().unwrap_or_default();
        let port = cfg.smtp_port.unwrap_or(cfg.tls.default_port());
        // ca_file is trusted for the SMTP server too (a private CA's relay).
        let ca_file = cfg.ca_file.as_ref().map(|ca| base_dir.join(ca));
        let tls = lettre_tls(&host, cfg.tls, ca_file.as_deref(), cfg.verify)?;
        let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(30)));
        let parse = |key: &str, v: &Option<String>| -> Result<lettre::message::Mailbox, String> {
            v.as_deref()
                .unwrap_or_default()
                .parse()
                .map_err(|e| format!("{key}: {e}"))
        };
        let password = SecretSource::from_keys(
            cfg.password_env.as_ref(),
            cfg.password_file.as_ref(),
            base_dir,
        );
        Ok(EndToEnd {
            mailer,
            from: parse("from", &cfg.from)?,
            to: parse("to", &cfg.to)?,
            badge_url: reqwest::Url::parse(cfg.badge_url.as_deref().unwrap_or_default())
                .map_err(|e| format!("badge_url: {e}"))?,
            badge_pointer: cfg.badge_pointer.clone(),
            deadline: cfg.deadline,
            warn_latency: cfg.warn_latency,
            poll_every: cfg.poll_every,
            password,
            username: cfg.username.clone(),
        })
    }

    async fn credentials(&self) -> Result<Option<Credentials>, Outcome> {
        let Some(user) = &self.username else {
            return Ok(None);
        };
        let password = match &self.password {
            Some(source) => source
                .read("password")
                .await
                .map_err(|e| Outcome::critical(Category::Config, e.to_string()))?,
            None => String::new(),
        };
        Ok(Some(Credentials::new(user.clone(), password)))
    }

    /// The badge on the device side; a missing or null value counts as 0.
    async fn badge(&self, http: &reqwest::Client) -> Result<u64, Outcome> {
        let what = format!("badge from {}", self.badge_url.host_str().unwrap_or(""));
        let response = http
            .get(self.badge_url.clone())
            .send()
            .await
            .map_err(|e| Outcome::request_failure(&e, &what))?;
        if !response.status().is_success() {
            return Err(Outcome::critical(
                Category::Protocol,
                format!("{what}: HTTP {}", response.status().as_u16()),
            ));
        }
        let body = read_prefix(response, MAX_RESPONSE).await;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| Outcome::critical(Category::Protocol, format!("{what}: not JSON: {e}")))?;
        match v.pointer(&self.badge_pointer) {
            None | Some(Value::Null) => Ok(0),
            Some(x) => x.as_u64().ok_or_else(|| {
                Outcome::critical(
                    Category::Protocol,
                    format!("{what}: {} is not a count", self.badge_pointer),
                )
            }),
        }
    }

    async fn run(&self, http: &reqwest::Client, ctx: &ProbeContext) -> Outcome {
        let before = match self.badge(http).await {
            Ok(b) => b,
            Err(o) => return o,
        };
        let tag = crate::guid::random();
        let mail = Message::builder()
            .from(self.from.clone())
            .to(self.to.clone())
            .subject(format!("sonde end-to-end push test {tag}"))
            .header(ContentType::TEXT_PLAIN)
            .body(format!(
                "This message tests push notifications end to end (sonde, {}). It can be deleted.\r\n",
                ctx.clock.now().to_rfc3339()
            ));
        let mail = match mail {
            Ok(m) => m,
            Err(e) => {
                return Outcome::critical(
                    Category::Config,
                    format!("cannot build the test mail: {e}"),
                )
            }
        };
        // The password is read per run (it may rotate); lettre takes it at build.
        let mailer: AsyncSmtpTransport<Tokio1Executor> = match self.credentials().await {
            Ok(Some(c)) => self.mailer.clone().credentials(c).build(),
            Ok(None) => self.mailer.clone().build(),
            Err(o) => return o,
        };
        let sent_at = tokio::time::Instant::now();
        if let Err(e) = mailer.send(mail).await {
            let text = e.to_string();
            let category = if e.is_permanent() && text.to_ascii_lowercase().contains("auth") {
                Category::Auth
            } else if e.is_transient() || e.is_permanent() {
                Category::Protocol
            } else {
                Category::Network
            };
            return Outcome::critical(
                category,
                format!(
                    "cannot send the test mail: {}",
                    text.chars().take(200).collect::<String>()
                ),
            );
        }
        self.wait_for_badge(http, before, sent_at)
            .instrument(tracing::info_span!("end_to_end_wait"))
            .await
    }

    /// Polls the badge until it rises above `before` or the deadline passes.
    async fn wait_for_badge(
        &self,
        http: &reqwest::Client,
        before: u64,
        sent_at: tokio::time::Instant,
    ) -> Outcome {
        let mut last = before;
        loop {
            let waited = sent_at.elapsed();
            if waited >= self.deadline {
                let mut o = Outcome::critical(
                    Category::Push,
                    format!(
                        "badge did not rise within {} of the test mail (still {last}, was {before})",
                        humantime::format_duration(self.deadline)
                    ),
                );
                o.observe("badge_before", before as f64);
                o.observe("badge_after", last as f64);
                return o;
            }
            tokio::time::sleep(self.poll_every.min(self.deadline - waited)).await;
            match self.badge(http).await {
                Ok(b) => last = b,
                Err(o) => return o,
            }
            if last > before {
                let took = sent_at.elapsed();
                let text = format!(
                    "badge rose from {before} to {last} {} after the test mail",
                    human_ms(took)
                );
                let mut o = if took > self.warn_latency {
                    Outcome::warning(
                        Category::Push,
                        format!(
                            "{text}, slower than {}",
                            humantime::format_duration(self.warn_latency)
                        ),
                    )
                } else {
                    Outcome::ok(text)
                };
                o.observe("end_to_end_seconds", took.as_secs_f64());
                o.observe("badge_before", before as f64);
                o.observe("badge_after", last as f64);
                return o;
            }
        }
    }
}

fn human_ms(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

impl Probe for PushProbe {
    fn run<'a>(&'a self, ctx: &'a ProbeContext) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match (self.mode, &self.e2e) {
                (Mode::EndToEnd, Some(e)) => e.run(&self.http, ctx).await,
                _ => self.connectivity(ctx).await,
            }
        })
    }
}
