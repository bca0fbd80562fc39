//! `kind = "push"`: the last link of the hybrid push chain.
//!
//! `mode = "connectivity"` does what Managed Availability's
//! `PushNotificationsEnterpriseConnectivityProbe` does: get a token with the
//! credential of the `token_probe`, post the monitoring batch to the
//! `OnPrem-Proxy` with the probe's headers, and call any 2xx a success
//! (categories `auth` for a rejected token, `push` for a proxy fault, `network`).
//! The batch's date is WCF's escaped `"\/Date(ms)\/"` text; a 401's Bearer
//! challenge is parsed and compared with the refused token's issuer and audience.
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

use super::{BuildContext, ProbeKind};
use crate::net::http::{check_url_key, read_prefix};
use crate::net::smtp::{lettre_tls, SmtpTls};
use crate::outcome::{Category, Outcome, Phase, Probe, ProbeContext};
use crate::secret::SecretSource;
use crate::spec::{BuildError, SpecProblem};

pub(crate) const PUBLISH_PATH: &str = "/service.svc/PublishOnPremNotifications";
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

impl ProbeKind for PushConfig {
    fn validate(&self) -> Vec<SpecProblem> {
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
    fn min_timeout(&self) -> Option<Duration> {
        (self.mode == Mode::EndToEnd).then_some(self.deadline)
    }

    /// The token probe's settings come through `ctx.lookup`; the loader has
    /// checked that `token_probe` names a `token` probe.
    fn build(&self, ctx: &BuildContext<'_>) -> Result<std::sync::Arc<dyn Probe>, BuildError> {
        let token = self
            .token_probe
            .as_deref()
            .and_then(|name| (ctx.lookup)(name))
            .and_then(|(spec, dir)| match spec {
                super::ProbeSpec::Token(t) => Some((&**t, dir)),
                _ => None,
            });
        Ok(std::sync::Arc::new(PushProbe::new(
            self,
            ctx.base_dir,
            token,
        )?))
    }

    fn references(&self) -> Vec<(&'static str, &str, &'static str)> {
        self.token_probe
            .as_deref()
            .map(|name| ("token_probe", name, "token"))
            .into_iter()
            .collect()
    }
}

pub(crate) struct PushProbe {
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
    pub(crate) fn new(
        cfg: &PushConfig,
        base_dir: &Path,
        token: Option<(&TokenConfig, &Path)>,
    ) -> Result<Self, BuildError> {
        if let Some(p) = cfg.validate().into_iter().next() {
            return Err(p.into());
        }
        let base = cfg.proxy_url.trim_end_matches('/');
        let publish_url = reqwest::Url::parse(&format!("{base}{PUBLISH_PATH}"))
            .map_err(|e| BuildError::new("proxy_url", e.to_string()))?;
        let ca_file = cfg.ca_file.as_ref().map(|f| base_dir.join(f));
        let http = crate::net::http::Clients::process()
            .probe_client(cfg.verify, ca_file.as_deref())
            .map_err(|m| BuildError::tls(cfg.ca_file.is_some(), m))?;
        let token = match (cfg.mode, token) {
            (Mode::Connectivity, Some((tc, dir))) => {
                // The token probe's own problems are reported at its table.
                Some(TokenClient::new(tc, dir).map_err(|e| {
                    BuildError::new(
                        "token_probe",
                        format!(
                            "token probe `{}` cannot be built: {e}",
                            cfg.token_probe.as_deref().unwrap_or("")
                        ),
                    )
                })?)
            }
            (Mode::Connectivity, None) => {
                return Err(BuildError::new(
                    "token_probe",
                    format!(
                        "`{}` is not a `token` probe",
                        cfg.token_probe.as_deref().unwrap_or("")
                    ),
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
        for (k, v) in &token.observations {
            ctx.progress.observe(token_observation(k), *v);
        }
        let batch = monitoring_batch(ctx.clock.now().timestamp_millis());
        // The span lasts until the whole answer is read.
        ctx.progress.phase(Phase::PushPost);
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
            .body(batch)
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
            .map(|v| crate::human::text::bounded(v, 300).into_owned());
        let body = read_prefix(response, MAX_RESPONSE).instrument(post).await;
        let latency = start.elapsed();
        let fault: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let message = fault
            .get("Message")
            .and_then(Value::as_str)
            .map(|m| crate::human::text::peer(m.lines().next().unwrap_or("")));
        let mut o = if status.is_success() {
            Outcome::ok(format!(
                "push proxy accepted the monitoring batch in {} ms (HTTP {})",
                latency.as_millis(),
                status.as_u16()
            ))
        } else if status.as_u16() == 401 {
            let mut s = "push proxy rejected the token (HTTP 401)".to_string();
            if let Some(m) = &message {
                s.push_str(&format!(": {}", m.trim_end_matches('.')));
            }
            match challenge.as_deref().map(parse_challenge) {
                Some(Ok(c)) => {
                    s.push_str("; ");
                    s.push_str(&compare_challenge(&c, &token.issuer, &token.audience));
                }
                Some(Err(e)) => s.push_str(&format!("; its WWW-Authenticate is malformed: {e}")),
                None => s.push_str("; it sent no WWW-Authenticate challenge"),
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
            o.observe(token_observation(k), *v);
        }
        o
    }
}

/// A token observation's name in the push probe's outcome.
fn token_observation(name: &str) -> &str {
    match name {
        "latency_seconds" => "token_latency_seconds",
        other => other,
    }
}

/// The monitoring batch as JSON text. The proxy is a WCF endpoint, whose JSON
/// reader takes a DateTime only from the escaped form `"\/Date(ms)\/"` (the
/// backslashes are in the text; without them it is a plain string and the batch
/// is refused). The date is a day back, so that an agent clock ahead of the
/// service cannot put it in the future.
pub(crate) fn monitoring_batch(now_ms: i64) -> String {
    const PLACEHOLDER: &str = "\"lastSubscriptionUpdate-placeholder\"";
    let batch = json!({"notifications": [{
        "payload": {"tenantId": "", "unseenEmailCount": 1, "isMonitoring": true},
        "recipients": [{
            "appId": "MonitoringProbeAppId",
            "deviceId": "0000000000000000000000000000000000000000000000000000000000000000",
            "lastSubscriptionUpdate": "lastSubscriptionUpdate-placeholder",
        }],
    }]});
    let past = now_ms.saturating_sub(86_400_000).max(0);
    batch
        .to_string()
        .replace(PLACEHOLDER, &format!("\"\\/Date({past})\\/\""))
}

/// The longest `WWW-Authenticate` value parsed; real ones are about 300 bytes.
pub(crate) const MAX_CHALLENGE_BYTES: usize = 4096;
const MAX_CHALLENGE_PARAMS: usize = 32;

/// A Bearer challenge (RFC 6750 §3): parameter names lower-cased, values unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChallengeError {
    #[error("it is empty")]
    Empty,
    #[error("it is longer than {MAX_CHALLENGE_BYTES} bytes")]
    TooLong,
    #[error("it has a control character")]
    Control,
    #[error("its scheme is `{0}`, not Bearer")]
    NotBearer(String),
    #[error("a parameter has no name")]
    NoName,
    #[error("parameter `{0}` has no `=`")]
    NoEquals(String),
    #[error("parameter `{0}` has no value")]
    NoValue(String),
    #[error("parameter `{0}` has an unterminated quoted string")]
    Unterminated(String),
    #[error("parameter `{0}` is followed by `{1}` instead of a comma")]
    Trailing(String, char),
    #[error("parameter `{0}` appears twice")]
    Duplicate(String),
    #[error("it has more than {MAX_CHALLENGE_PARAMS} parameters")]
    TooMany,
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Parses the first challenge of a `WWW-Authenticate` value, which must be
/// Bearer: `Bearer name="quoted, with commas", name=token, …`. Quoted strings
/// may hold commas and `\`-escapes; names are matched without regard to case.
/// A second challenge after the first (`…, Basic realm="x"`) ends the parse.
pub(crate) fn parse_challenge(header: &str) -> Result<Challenge, ChallengeError> {
    if header.len() > MAX_CHALLENGE_BYTES {
        return Err(ChallengeError::TooLong);
    }
    if header.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ChallengeError::Control);
    }
    let text = header.trim();
    if text.is_empty() {
        return Err(ChallengeError::Empty);
    }
    let scheme_end = text.find(|c: char| !is_tchar(c)).unwrap_or(text.len());
    let scheme = &text[..scheme_end];
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ChallengeError::NotBearer(scheme.chars().take(32).collect()));
    }
    let mut rest = text[scheme_end..].chars().peekable();
    let mut params: Vec<(String, String)> = Vec::new();
    let skip_ws = |it: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while it.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            it.next();
        }
    };
    loop {
        // Separators: any run of spaces and commas.
        while rest.peek().is_some_and(|c| matches!(c, ' ' | '\t' | ',')) {
            rest.next();
        }
        if rest.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(&c) = rest.peek() {
            if !is_tchar(c) {
                break;
            }
            name.push(c);
            rest.next();
        }
        if name.is_empty() {
            return Err(ChallengeError::NoName);
        }
        skip_ws(&mut rest);
        match rest.peek() {
            Some('=') => {
                rest.next();
            }
            // `, Basic realm=…`: the next challenge begins; Bearer's ends here.
            Some(c) if is_tchar(*c) && !params.is_empty() => break,
            _ => return Err(ChallengeError::NoEquals(name)),
        }
        skip_ws(&mut rest);
        let value = match rest.peek() {
            Some('"') => {
                rest.next();
                let mut v = String::new();
                loop {
                    match rest.next() {
                        None => return Err(ChallengeError::Unterminated(name)),
                        Some('"') => break,
                        Some('\\') => match rest.next() {
                            Some(c) => v.push(c),
                            None => return Err(ChallengeError::Unterminated(name)),
                        },
                        Some(c) => v.push(c),
                    }
                }
                v
            }
            _ => {
                let mut v = String::new();
                while let Some(&c) = rest.peek() {
                    if !(is_tchar(c) || c == '/' || c == '=') {
                        break;
                    }
                    v.push(c);
                    rest.next();
                }
                if v.is_empty() {
                    return Err(ChallengeError::NoValue(name));
                }
                v
            }
        };
        skip_ws(&mut rest);
        match rest.peek() {
            None | Some(',') => {}
            Some(&c) => return Err(ChallengeError::Trailing(name, c)),
        }
        let name = name.to_ascii_lowercase();
        if params.iter().any(|(n, _)| *n == name) {
            return Err(ChallengeError::Duplicate(name));
        }
        if params.len() == MAX_CHALLENGE_PARAMS {
            return Err(ChallengeError::TooMany);
        }
        params.push((name, value));
    }
    Ok(Challenge { params })
}

/// Says how the refused token compares with what the proxy's challenge asks
/// for: its trusted issuers (service and realm) and its own id (the audience).
pub(crate) fn compare_challenge(c: &Challenge, issuer: &str, audience: &str) -> String {
    let shown = |s: &str| s.chars().take(120).collect::<String>();
    let trusted: Vec<&str> = c
        .param("trusted_issuers")
        .map(|t| {
            t.split([',', ' '])
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let (service, realm) = issuer.split_once('@').unwrap_or((issuer, ""));
    let mut findings = Vec::new();
    if let Some(client_id) = c.param("client_id") {
        // An ACS audience is `<client id>/<host>@<realm>`; an Entra one is a URI.
        let acs_style = audience.contains('@');
        let for_it = audience
            .get(..client_id.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(client_id));
        if acs_style && !for_it {
            findings.push(format!(
                "the proxy is {}, but the token's audience is {}",
                shown(client_id),
                shown(audience)
            ));
        }
    }
    if trusted.is_empty() {
        findings.push(format!(
            "the challenge names no trusted issuers; the token's issuer is {}",
            shown(issuer)
        ));
    } else {
        let same_service: Vec<&str> = trusted
            .iter()
            .copied()
            .filter(|t| {
                t.split_once('@')
                    .is_some_and(|(s, _)| s.eq_ignore_ascii_case(service))
            })
            .collect();
        let matching = same_service.iter().copied().find(|t| {
            t.split_once('@')
                .is_some_and(|(_, r)| r == "*" || r.eq_ignore_ascii_case(realm))
        });
        match (same_service.is_empty(), matching) {
            (true, _) => findings.push(format!(
                "the proxy trusts {}, not the token's issuer {}",
                shown(&trusted.join(" ")),
                shown(issuer)
            )),
            (false, None) => findings.push(format!(
                "the proxy trusts the realm{} of {} only; the token's issuer {} names realm {}",
                if same_service.len() == 1 { "" } else { "s" },
                shown(&same_service.join(" ")),
                shown(issuer),
                shown(realm)
            )),
            (false, Some(t)) if findings.is_empty() => {
                let which = if t.ends_with("@*") {
                    format!("any ACS realm ({t})")
                } else {
                    t.to_string()
                };
                findings.push(format!(
                    "the proxy trusts {}; the token's issuer {} matches: check that the OnPrem-Proxy partner application is enabled",
                    shown(&which),
                    shown(issuer)
                ));
            }
            (false, Some(_)) => {}
        }
    }
    if let Some(d) = c.param("error_description") {
        findings.push(format!("it says: {}", shown(d)));
    }
    findings.join("; ")
}

impl EndToEnd {
    fn new(cfg: &PushConfig, base_dir: &Path) -> Result<Self, BuildError> {
        let host = cfg.smtp_host.clone().unwrap_or_default();
        let port = cfg.smtp_port.unwrap_or(cfg.tls.default_port());
        // ca_file is trusted for the SMTP server too (a private CA's relay).
        let ca_file = cfg.ca_file.as_ref().map(|ca| base_dir.join(ca));
        let tls = lettre_tls(&host, cfg.tls, ca_file.as_deref(), cfg.verify)
            .map_err(|m| BuildError::tls(cfg.ca_file.is_some(), m))?;
        let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(30)));
        let parse = |key: &'static str,
                     v: &Option<String>|
         -> Result<lettre::message::Mailbox, BuildError> {
            v.as_deref()
                .unwrap_or_default()
                .parse()
                .map_err(|e| BuildError::new(key, format!("{e}")))
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
                .map_err(|e| BuildError::new("badge_url", e.to_string()))?,
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
            None => Err(Outcome::critical(
                Category::Config,
                format!(
                    "badge_pointer `{}` does not resolve in the document at {}{}",
                    self.badge_pointer,
                    crate::net::http::without_credentials(&self.badge_url),
                    members(&v)
                ),
            )),
            // The device has had no badge yet.
            Some(Value::Null) => Ok(0),
            Some(x) => x.as_u64().ok_or_else(|| {
                Outcome::critical(
                    Category::Protocol,
                    format!("{what}: {} is not a count", self.badge_pointer),
                )
            }),
        }
    }

    async fn run(&self, http: &reqwest::Client, ctx: &ProbeContext) -> Outcome {
        ctx.progress.phase(Phase::BadgeRead);
        let before = match self.badge(http).await {
            Ok(b) => b,
            Err(o) => return o,
        };
        ctx.progress.observe("badge_before", before as f64);
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
        ctx.progress.phase(Phase::MailSend);
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
                    crate::human::text::peer(&text)
                ),
            );
        }
        ctx.progress.phase(Phase::EndToEndWait);
        self.wait_for_badge(http, before, sent_at, ctx)
            .instrument(tracing::info_span!("end_to_end_wait"))
            .await
    }

    /// Polls the badge until it rises above `before` or the deadline passes.
    async fn wait_for_badge(
        &self,
        http: &reqwest::Client,
        before: u64,
        sent_at: tokio::time::Instant,
        ctx: &ProbeContext,
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
            ctx.progress.observe("badge_after", last as f64);
            ctx.progress
                .observe("waited_seconds", sent_at.elapsed().as_secs_f64());
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

/// `: its members are a, b, c` for an object, to help fix a pointer.
fn members(v: &Value) -> String {
    match v.as_object() {
        Some(o) if !o.is_empty() => format!(
            " (its members are {})",
            o.keys()
                .take(12)
                .map(|k| format!("/{}", k.chars().take(40).collect::<String>()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => String::new(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The real push endpoint's 401 challenge (tests/fixtures/exchange).
    const REAL_CHALLENGE: &str =
        include_str!("../../tests/fixtures/exchange/push-401-www-authenticate.txt");
    const TENANT: &str = "3f2b6a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";

    #[test]
    fn the_batch_carries_the_escaped_wcf_date_a_day_back() {
        let text = monitoring_batch(1_700_000_000_000);
        assert!(
            text.contains(r#""lastSubscriptionUpdate":"\/Date(1699913600000)\/""#),
            "{text}"
        );
        // Still JSON, and the escape reads back as the plain text.
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v.pointer("/notifications/0/recipients/0/lastSubscriptionUpdate"),
            Some(&json!("/Date(1699913600000)/"))
        );
        assert_eq!(
            v.pointer("/notifications/0/payload/isMonitoring"),
            Some(&json!(true))
        );
    }

    #[test]
    fn the_real_challenge_parses() {
        let c = parse_challenge(REAL_CHALLENGE.trim()).unwrap();
        assert_eq!(c.param("client_id"), Some(EXCHANGE_ID));
        assert_eq!(
            c.param("trusted_issuers"),
            Some("00000001-0000-0000-c000-000000000000@*")
        );
        assert_eq!(
            c.param("token_types"),
            Some("app_asserted_user_v1 service_asserted_app_v1")
        );
        assert_eq!(
            c.param("authorization_uri"),
            Some("https://login.microsoftonline.com/common/oauth2/authorize")
        );
        assert_eq!(c.param("ERROR"), Some("invalid_token"));
        assert_eq!(c.params.len(), 5);
    }

    const EXCHANGE_ID: &str = "00000002-0000-0ff1-ce00-000000000000";

    #[test]
    fn challenges_are_read_robustly() {
        let c = parse_challenge(
            r#"bearer Realm="a, b", error=invalid_token ,, Error_Description="say \"no\"", x=a/b=="#,
        )
        .unwrap();
        assert_eq!(c.param("realm"), Some("a, b"));
        assert_eq!(c.param("error"), Some("invalid_token"));
        assert_eq!(c.param("error_description"), Some(r#"say "no""#));
        assert_eq!(c.param("x"), Some("a/b=="));
        // A second challenge ends the Bearer one.
        let c = parse_challenge(r#"Bearer a="1", Basic realm="x""#).unwrap();
        assert_eq!(c.params, vec![("a".to_string(), "1".to_string())]);
        assert_eq!(parse_challenge("Bearer").unwrap().params, vec![]);
    }

    #[test]
    fn each_malformed_challenge_has_its_own_error() {
        use ChallengeError::*;
        let long = format!("Bearer a=\"{}\"", "x".repeat(MAX_CHALLENGE_BYTES));
        let many = format!(
            "Bearer {}",
            (0..=MAX_CHALLENGE_PARAMS)
                .map(|i| format!("p{i}=1"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (text, want) in [
            ("", Empty),
            ("   ", Empty),
            (long.as_str(), TooLong),
            ("Bearer a=\"x\ny\"", Control),
            ("Basic realm=\"x\"", NotBearer("Basic".into())),
            ("Bearer =x", NoName),
            ("Bearer \"x\"", NoName),
            ("Bearer realm", NoEquals("realm".into())),
            ("Bearer realm x", NoEquals("realm".into())),
            ("Bearer realm=", NoValue("realm".into())),
            ("Bearer realm=, a=b", NoValue("realm".into())),
            ("Bearer realm=\"abc", Unterminated("realm".into())),
            ("Bearer realm=\"abc\\", Unterminated("realm".into())),
            ("Bearer realm=\"a\" b", Trailing("realm".into(), 'b')),
            ("Bearer realm=a;b", Trailing("realm".into(), ';')),
            ("Bearer a=1, A=2", Duplicate("a".into())),
            (many.as_str(), TooMany),
        ] {
            assert_eq!(parse_challenge(text), Err(want), "{text:?}");
        }
    }

    #[test]
    fn the_challenge_is_compared_with_the_token() {
        let real = parse_challenge(REAL_CHALLENGE.trim()).unwrap();
        let iss = format!("00000001-0000-0000-c000-000000000000@{TENANT}");
        let aud = format!("{EXCHANGE_ID}/outlook.office365.com@{TENANT}");
        assert_eq!(
            compare_challenge(&real, &iss, &aud),
            format!("the proxy trusts any ACS realm (00000001-0000-0000-c000-000000000000@*); the token's issuer {iss} matches: check that the OnPrem-Proxy partner application is enabled")
        );
        let t = compare_challenge(&real, &format!("https://sts.windows.net/{TENANT}/"), &aud);
        assert!(t.starts_with("the proxy trusts 00000001-0000-0000-c000-000000000000@*, not the token's issuer https://sts.windows.net/"), "{t}");
        let t = compare_challenge(
            &real,
            &iss,
            &format!("00000003-0000-0000-c000-000000000000/graph@{TENANT}"),
        );
        assert!(
            t.starts_with(&format!(
                "the proxy is {EXCHANGE_ID}, but the token's audience is 00000003-"
            )),
            "{t}"
        );
        let one_realm = parse_challenge(
            "Bearer client_id=\"00000002-0000-0ff1-ce00-000000000000\", trusted_issuers=\"00000001-0000-0000-c000-000000000000@9188040d-6c67-4c5b-b112-36a304b66dad\"",
        )
        .unwrap();
        let t = compare_challenge(&one_realm, &iss, &aud);
        assert!(t.contains("the proxy trusts the realm of 00000001-0000-0000-c000-000000000000@9188040d-6c67-4c5b-b112-36a304b66dad only"), "{t}");
        assert!(t.ends_with(&format!("names realm {TENANT}")), "{t}");
        let none = parse_challenge("Bearer error=\"invalid_token\", error_description=\"expired\"")
            .unwrap();
        let t = compare_challenge(&none, &iss, &aud);
        assert!(
            t.starts_with("the challenge names no trusted issuers"),
            "{t}"
        );
        assert!(t.ends_with("it says: expired"), "{t}");
    }

    proptest::proptest! {
        #[test]
        fn challenge_parsing_never_panics(s in "\\PC{0,300}") {
            let _ = parse_challenge(&s);
        }

        #[test]
        fn challenge_shaped_text_never_panics(s in "(Bearer|bearer|Basic)?[ ,=\"\\\\a-zA-Z_@*/.-]{0,200}") {
            if let Ok(c) = parse_challenge(&s) {
                let _ = compare_challenge(&c, "a@b", "c/d@b");
            }
        }
    }
}
