//! `kind = "registration"`: where the Exchange Auth certificate is registered in
//! Entra ID, read from Microsoft Graph with a read-only monitoring app
//! (`Application.Read.All`, client credentials).
//!
//! Since CVE-2025-53786 a hybrid organisation keeps its Auth certificate on a
//! dedicated app registration and must remove it from the shared
//! `Office 365 Exchange Online` service principal. The probe reads both objects'
//! `keyCredentials` and judges, worst first: the certificate still on the shared
//! principal (`security`), the current certificate missing from the dedicated
//! app or registered there with a past `endDateTime` (`certificate`, critical),
//! the next certificate not uploaded yet and expired credentials lingering
//! (warnings). The Graph token comes from the `token` kind's client (certificate
//! assertion) or from a client secret read through `crate::secret`; neither the
//! secret nor any token is ever shown. The judging is pure ([`judge`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};

use super::token::{self, TokenClient, TokenConfig};
use super::{BuildContext, ProbeKind};
use crate::human::{format_duration, rfc3339};
use crate::net::http::{read_capped, without_credentials, BodyError};
use crate::outcome::{Category, Outcome, Probe, ProbeContext, Status};
use crate::secret::SecretSource;
use crate::spec::{BuildError, SpecProblem};

/// The shared `Office 365 Exchange Online` service principal.
pub(crate) const FIRST_PARTY_APP_ID: &str = "00000002-0000-0ff1-ce00-000000000000";
/// The resource whose `/.default` scope the monitoring app asks for, whatever
/// `graph_url` says (a test double or a national cloud answers for it).
pub(crate) const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";
/// The one permission the monitoring app needs.
pub(crate) const PERMISSION: &str = "Application.Read.All";
const CLEANUP: &str = "ConfigureExchangeHybridApplication.ps1 -ResetFirstPartyServicePrincipalKeyCredentials -CertificateInformation";
const UPLOAD: &str = "ConfigureExchangeHybridApplication.ps1 -UpdateCertificate";
/// Graph's answers are a few KiB; anything larger is not what was asked for.
const MAX_GRAPH_BODY: u64 = 512 * 1024;
const MAX_TOKEN_BODY: u64 = 256 * 1024;
/// Text from Graph (messages, display names) is clipped to this many characters.
const CLIP: usize = 160;

fn default_graph_url() -> String {
    GRAPH_RESOURCE.to_string()
}
fn default_first_party() -> String {
    FIRST_PARTY_APP_ID.to_string()
}
fn yes() -> bool {
    true
}

/// The kind-specific keys of a `registration` probe table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Tenant id (GUID) or domain.
    pub tenant: String,
    /// Default: `https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`.
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    /// The monitoring app's application (client) id.
    pub client_id: String,
    /// The monitoring app's certificate credential: a PEM key (with `cert_path`,
    /// or followed by the certificate), or a PKCS#12.
    #[serde(default)]
    pub key_path: Option<String>,
    #[serde(default)]
    pub cert_path: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<String>,
    /// Or its client secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_file: Option<String>,
    /// The dedicated Exchange hybrid app's appId.
    pub app_id: String,
    /// The current Auth certificate, public part (`.cer`, PEM or DER).
    pub auth_cert: String,
    /// The next Auth certificate, once one is configured.
    #[serde(default)]
    pub next_auth_cert: Option<String>,
    #[serde(default = "default_first_party")]
    pub first_party_app_id: String,
    #[serde(default = "yes")]
    pub verify: bool,
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// A tenant as it may appear in a URL path: a GUID or a DNS name.
fn is_tenant_name(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 253
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

impl ProbeKind for RegistrationConfig {
    fn validate(&self) -> Vec<SpecProblem> {
        self.problems()
    }

    fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Probe>, BuildError> {
        Ok(Arc::new(RegistrationProbe::new(self, ctx.base_dir)?))
    }
}

impl RegistrationConfig {
    /// Pure checks: every problem at once, each naming its key.
    fn problems(&self) -> Vec<SpecProblem> {
        let mut p = Vec::new();
        let tenant = self.tenant.trim();
        if !is_tenant_name(tenant) {
            p.push(SpecProblem::new(
                "tenant",
                "must be the tenant id (a GUID) or its domain",
            ));
        } else if ["common", "organizations", "consumers"]
            .iter()
            .any(|m| tenant.eq_ignore_ascii_case(m))
        {
            p.push(SpecProblem::new(
                "tenant",
                format!("`{tenant}` is no tenant: client credentials need the tenant id or domain"),
            ));
        }
        if let Some(url) = &self.token_url {
            crate::net::http::check_url_key("token_url", url, &mut p);
        }
        crate::net::http::check_url_key("graph_url", &self.graph_url, &mut p);
        for (key, id) in [
            ("client_id", &self.client_id),
            ("app_id", &self.app_id),
            ("first_party_app_id", &self.first_party_app_id),
        ] {
            if !crate::guid::is_guid(id.trim()) {
                p.push(SpecProblem::new(key, "must be an application id (a GUID)"));
            }
        }
        if !self.first_party_app_id.trim().is_empty()
            && self
                .app_id
                .trim()
                .eq_ignore_ascii_case(self.first_party_app_id.trim())
        {
            p.push(SpecProblem::new(
                "app_id",
                "is the shared first-party principal: name the dedicated hybrid app",
            ));
        }
        let secret = self.secret_env.is_some() || self.secret_file.is_some();
        match (self.key_path.is_some(), secret) {
            (false, false) => p.push(SpecProblem::new(
                "key_path",
                "give the monitoring app's credential: key_path (certificate) or secret_env/secret_file",
            )),
            (true, true) => p.push(SpecProblem::new(
                "secret_env",
                "give key_path or a client secret, not both",
            )),
            _ => {}
        }
        if self.secret_env.is_some() && self.secret_file.is_some() {
            p.push(SpecProblem::new(
                "secret_file",
                "give secret_env or secret_file, not both",
            ));
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            p.push(SpecProblem::new(
                "password_file",
                "give password_env or password_file, not both",
            ));
        }
        for (key, set) in [
            ("cert_path", self.cert_path.is_some()),
            ("password_env", self.password_env.is_some()),
            ("password_file", self.password_file.is_some()),
        ] {
            if set && self.key_path.is_none() {
                p.push(SpecProblem::new(key, "only meaningful with key_path"));
            }
        }
        if self
            .key_path
            .as_deref()
            .is_some_and(|k| k.trim().is_empty())
        {
            p.push(SpecProblem::new("key_path", "must not be empty"));
        }
        if self.auth_cert.trim().is_empty() {
            p.push(SpecProblem::new("auth_cert", "must not be empty"));
        }
        if self
            .next_auth_cert
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            p.push(SpecProblem::new("next_auth_cert", "must not be empty"));
        }
        if !self.verify && self.ca_file.is_some() {
            p.push(SpecProblem::new(
                "ca_file",
                "has no effect with verify = false",
            ));
        }
        p
    }

    fn token_url(&self) -> String {
        self.token_url.clone().unwrap_or_else(|| {
            format!(
                "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
                self.tenant.trim()
            )
        })
    }
}

// ---------------------------------------------------------------------------
// Facts: the Auth certificates and the registered key credentials.

/// An Auth certificate as the checks need it.
#[derive(Debug, Clone, PartialEq)]
struct AuthCert {
    /// SHA-1 of the DER, uppercase hex: what `customKeyIdentifier` holds.
    thumbprint: String,
    subject: String,
    not_after: i64,
}

/// One entry of a Graph object's `keyCredentials`.
#[derive(Debug, Clone, PartialEq)]
struct KeyCredential {
    /// The thumbprint it names, uppercase hex, when `customKeyIdentifier` is one.
    thumbprint: Option<String>,
    display_name: String,
    /// `endDateTime`, unix seconds; `None` when absent or unreadable.
    end: Option<i64>,
}

/// `customKeyIdentifier` as a thumbprint: 40 hex digits in any case (how
/// Microsoft's scripts write it), or base64 of the 20 bytes.
fn identifier_thumbprint(text: &str) -> Option<String> {
    let t = text.trim();
    if t.len() == 40 && t.chars().all(|c| c.is_ascii_hexdigit()) {
        return Some(t.to_ascii_uppercase());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(t)
        .ok()
        .filter(|b| b.len() == 20)?;
    Some(hex::encode_upper(bytes))
}

/// Printable, single-line, at most [`CLIP`] characters: text from Graph.
fn clip(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(CLIP)
        .collect();
    if text.chars().count() > CLIP {
        out.push('…');
    }
    out
}

/// A Graph object's `keyCredentials`; `Err` when the reply is not that shape.
fn key_credentials(object: &Value) -> Result<Vec<KeyCredential>, String> {
    let list = match object.get("keyCredentials") {
        Some(Value::Array(list)) => list,
        Some(Value::Null) | None => return Err("has no keyCredentials".into()),
        Some(_) => return Err("keyCredentials is not a list".into()),
    };
    Ok(list
        .iter()
        .map(|k| KeyCredential {
            thumbprint: k
                .get("customKeyIdentifier")
                .and_then(Value::as_str)
                .and_then(identifier_thumbprint),
            display_name: clip(k.get("displayName").and_then(Value::as_str).unwrap_or("")),
            end: k
                .get("endDateTime")
                .and_then(Value::as_str)
                .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
                .map(|d| d.timestamp()),
        })
        .collect())
}

/// What one run read: the certificates and both objects' credentials.
#[derive(Debug)]
struct Evidence {
    current: AuthCert,
    next: Option<AuthCert>,
    app_id: String,
    app_name: String,
    app_keys: Vec<KeyCredential>,
    first_party_id: String,
    first_party_keys: Vec<KeyCredential>,
}

/// The pure part: evidence + now -> one outcome, the worst finding first.
fn judge(ev: &Evidence, now: i64) -> Outcome {
    let matches = |keys: &[KeyCredential], cert: &AuthCert| -> Vec<KeyCredential> {
        keys.iter()
            .filter(|k| k.thumbprint.as_deref() == Some(cert.thumbprint.as_str()))
            .cloned()
            .collect()
    };
    let app = if ev.app_name.is_empty() {
        format!("the hybrid app {}", ev.app_id)
    } else {
        format!("the hybrid app {} ({})", ev.app_name, ev.app_id)
    };
    let mut findings: Vec<(Status, Category, String)> = Vec::new();

    let certs: Vec<&AuthCert> = std::iter::once(&ev.current)
        .chain(ev.next.as_ref())
        .collect();
    let shared: Vec<&AuthCert> = certs
        .iter()
        .copied()
        .filter(|c| !matches(&ev.first_party_keys, c).is_empty())
        .collect();
    let first_party_matches: usize = certs
        .iter()
        .map(|c| matches(&ev.first_party_keys, c).len())
        .sum();
    for c in &shared {
        findings.push((
            Status::Critical,
            Category::Security,
            format!(
                "the Auth certificate {} is still a key credential of the shared Office 365 Exchange Online principal ({}): \
                 anyone with its key can mint tokens Exchange Online trusts for the whole tenant (CVE-2025-53786); \
                 remove it with {CLEANUP} {}",
                c.thumbprint, ev.first_party_id, c.thumbprint
            ),
        ));
    }

    let current = matches(&ev.app_keys, &ev.current);
    // The credential that lasts longest decides: an old expired upload beside a
    // fresh one is only lingering.
    let current_end = current.iter().filter_map(|k| k.end).max();
    match (current.is_empty(), current_end) {
        (true, _) => findings.push((
            Status::Critical,
            Category::Certificate,
            format!(
                "the current Auth certificate {} ({}) is not uploaded to {app}: hybrid calls to Exchange Online fail; run {UPLOAD}",
                ev.current.thumbprint, ev.current.subject
            ),
        )),
        (false, Some(end)) if end <= now => findings.push((
            Status::Critical,
            Category::Certificate,
            format!(
                "{app} holds the current Auth certificate {} only with an endDateTime already past ({}, {} ago): run {UPLOAD}",
                ev.current.thumbprint,
                rfc3339(end),
                format_duration(now - end)
            ),
        )),
        _ => {}
    }
    if let Some(next) = &ev.next {
        if matches(&ev.app_keys, next).is_empty() {
            findings.push((
                Status::Warning,
                Category::Certificate,
                format!(
                    "the next Auth certificate {} ({}) is not uploaded to {app}: upload it before it becomes current ({UPLOAD})",
                    next.thumbprint, next.subject
                ),
            ));
        }
    }
    // Expired credentials other than the ones judged above.
    let lingering: Vec<&KeyCredential> = ev
        .app_keys
        .iter()
        .filter(|k| k.end.is_some_and(|e| e <= now))
        .filter(|k| {
            k.thumbprint.as_deref() != Some(ev.current.thumbprint.as_str())
                || current_end.is_some_and(|e| e > now)
        })
        .collect();
    if !lingering.is_empty() {
        let names: Vec<String> = lingering
            .iter()
            .take(3)
            .map(|k| match &k.thumbprint {
                Some(t) => format!("{t} (ended {})", rfc3339(k.end.unwrap_or(0))),
                None => format!("{} (ended {})", k.display_name, rfc3339(k.end.unwrap_or(0))),
            })
            .collect();
        findings.push((
            Status::Warning,
            Category::Certificate,
            format!(
                "{} expired credential(s) linger on {app}: {}{}; remove them",
                lingering.len(),
                names.join(", "),
                if lingering.len() > 3 { ", …" } else { "" }
            ),
        ));
    }
    findings.sort_by_key(|(status, _, _)| std::cmp::Reverse(status.severity()));

    let mut outcome = match findings.first() {
        Some((status, category, _)) => {
            let text: Vec<&str> = findings.iter().map(|(_, _, t)| t.as_str()).collect();
            Outcome::new(*status, Some(*category), text.join("; "))
        }
        None => {
            let end = current_end
                .map(|e| format!("until {} ({})", rfc3339(e), format_duration(e - now)))
                .unwrap_or_else(|| "with no end date".to_string());
            let next = match &ev.next {
                Some(n) => format!("the next one {} is uploaded too", n.thumbprint),
                None => "no next certificate configured".to_string(),
            };
            Outcome::ok(format!(
                "{app} holds the Auth certificate {} {end}; {next}; the shared principal holds none of them; {} key credential(s) on the app",
                ev.current.thumbprint,
                ev.app_keys.len()
            ))
        }
    };
    outcome.observe("registered_keys", ev.app_keys.len() as f64);
    outcome.observe("first_party_matches", first_party_matches as f64);
    if let Some(end) = current_end {
        outcome.observe("seconds_left", (end - now) as f64);
    }
    outcome
}

// ---------------------------------------------------------------------------
// The probe.

/// How the monitoring app gets its Graph token.
enum Credential {
    /// Certificate assertion, through the `token` kind's Entra client.
    Certificate(Box<TokenClient>),
    Secret {
        token_url: String,
        client_id: String,
        secret: SecretSource,
    },
}

/// A runnable `registration` probe; built once from its config.
pub(crate) struct RegistrationProbe {
    credential: Credential,
    http: reqwest::Client,
    graph_url: String,
    app_id: String,
    first_party_app_id: String,
    auth_cert: PathBuf,
    next_auth_cert: Option<PathBuf>,
}

fn resolve(base_dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

impl RegistrationProbe {
    pub(crate) fn new(cfg: &RegistrationConfig, base_dir: &Path) -> Result<Self, BuildError> {
        if let Some(p) = cfg.validate().into_iter().next() {
            return Err(p.into());
        }
        let ca_file = cfg.ca_file.as_deref().map(|f| resolve(base_dir, f));
        let credential = match &cfg.key_path {
            Some(key_path) => {
                // The token kind's own config, built through serde so that keys it
                // adds later keep their defaults here.
                let mut t = json!({
                    "mode": "entra",
                    "tenant": cfg.tenant.trim(),
                    "resource": GRAPH_RESOURCE,
                    "token_url": cfg.token_url(),
                    "client_id": cfg.client_id.trim(),
                    "key_path": key_path,
                    "verify": cfg.verify,
                });
                for (k, v) in [
                    ("cert_path", &cfg.cert_path),
                    ("password_env", &cfg.password_env),
                    ("password_file", &cfg.password_file),
                    ("ca_file", &cfg.ca_file),
                ] {
                    if let Some(v) = v {
                        t[k] = json!(v);
                    }
                }
                let token_cfg: TokenConfig = serde_json::from_value(t)
                    .map_err(|e| BuildError::new("", format!("token settings: {e}")))?;
                Credential::Certificate(Box::new(TokenClient::new(&token_cfg, base_dir)?))
            }
            None => Credential::Secret {
                token_url: cfg.token_url(),
                client_id: cfg.client_id.trim().to_string(),
                secret: SecretSource::from_keys(
                    cfg.secret_env.as_ref(),
                    cfg.secret_file.as_ref(),
                    base_dir,
                )
                .ok_or_else(|| {
                    BuildError::new("secret_env", "secret_env or secret_file is required")
                })?,
            },
        };
        Ok(RegistrationProbe {
            credential,
            http: crate::net::http::client(cfg.verify, ca_file.as_deref())
                .map_err(|m| BuildError::tls(cfg.ca_file.is_some(), m))?,
            graph_url: cfg.graph_url.trim_end_matches('/').to_string(),
            app_id: cfg.app_id.trim().to_ascii_lowercase(),
            first_party_app_id: cfg.first_party_app_id.trim().to_ascii_lowercase(),
            auth_cert: resolve(base_dir, &cfg.auth_cert),
            next_auth_cert: cfg.next_auth_cert.as_deref().map(|p| resolve(base_dir, p)),
        })
    }

    /// The bearer token for Graph; a failure is the outcome to report.
    async fn graph_token(&self, ctx: &ProbeContext) -> Result<String, Outcome> {
        match &self.credential {
            Credential::Certificate(client) => client
                .acquire(ctx)
                .await
                .map(|t| t.bearer().to_string())
                .map_err(|mut o| {
                    o.summary = format!("Graph token: {}", o.summary);
                    o
                }),
            Credential::Secret {
                token_url,
                client_id,
                secret,
            } => secret_token(&self.http, token_url, client_id, secret).await,
        }
    }

    /// `GET {graph}/v1.0/{collection}(appId='{id}')?$select=…`: the object, or the
    /// outcome that says what to fix.
    async fn read_object(
        &self,
        bearer: &str,
        collection: &str,
        id: &str,
        select: &str,
    ) -> Result<Value, Outcome> {
        let url = format!(
            "{}/v1.0/{collection}(appId='{id}')?$select={select}",
            self.graph_url
        );
        let shown = reqwest::Url::parse(&url)
            .map(|u| without_credentials(&u))
            .unwrap_or_else(|_| url.clone());
        let what = format!("Graph {collection}(appId='{id}')");
        let mut response = self
            .http
            .get(&url)
            .bearer_auth(bearer)
            .header("client-request-id", crate::guid::random())
            .send()
            .await
            .map_err(|e| Outcome::request_failure(&e, &format!("{what} at {shown}")))?;
        let status = response.status();
        let body = read_capped(&mut response, MAX_GRAPH_BODY)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge(_) => Outcome::critical(
                    Category::Protocol,
                    format!("{what}: reply larger than {} KiB", MAX_GRAPH_BODY / 1024),
                ),
                BodyError::Read(e) => Outcome::request_failure(&e, &format!("{what}: reading")),
            })?;
        if !status.is_success() {
            return Err(graph_error(status.as_u16(), &body, &what, collection, id));
        }
        serde_json::from_slice(&body).map_err(|e| {
            Outcome::critical(
                Category::Protocol,
                format!("{what}: reply is not JSON: {e}"),
            )
        })
    }
}

/// A Graph error reply as the outcome that names the fix.
fn graph_error(status: u16, body: &[u8], what: &str, collection: &str, id: &str) -> Outcome {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = clip(
        v.pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or(""),
    );
    let message = clip(
        v.pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or(""),
    );
    let said = match (code.is_empty(), message.is_empty()) {
        (true, true) => format!("HTTP {status}"),
        (false, true) => format!("HTTP {status}, {code}"),
        (true, false) => format!("HTTP {status}: {message}"),
        (false, false) => format!("HTTP {status}, {code}: {message}"),
    };
    let permission =
        format!("grant the monitoring app the application permission {PERMISSION} (admin consent)");
    match status {
        401 => Outcome::critical(
            Category::Auth,
            format!("{what}: Graph refused the token ({said}): {permission}"),
        ),
        403 => Outcome::critical(
            Category::Config,
            format!("{what}: access denied ({said}): {permission}"),
        ),
        404 if collection == "applications" => Outcome::critical(
            Category::Config,
            format!("{what}: no application with appId {id} in this tenant ({said}): check app_id"),
        ),
        404 => Outcome::critical(
            Category::Config,
            format!("{what}: no service principal for appId {id} in this tenant ({said}): check first_party_app_id"),
        ),
        _ => Outcome::critical(Category::Protocol, format!("{what}: {said}")),
    }
}

/// Client credentials with a client secret; the secret never reaches a message.
async fn secret_token(
    http: &reqwest::Client,
    token_url: &str,
    client_id: &str,
    secret: &SecretSource,
) -> Result<String, Outcome> {
    let secret = secret
        .read("client secret")
        .await
        .map_err(|e| Outcome::critical(Category::Config, format!("Graph token: {e}")))?;
    let shown = reqwest::Url::parse(token_url)
        .map(|u| without_credentials(&u))
        .unwrap_or_default();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", secret.as_str()),
        ("scope", &format!("{GRAPH_RESOURCE}/.default")),
    ];
    let mut response = http
        .post(token_url)
        .header("client-request-id", crate::guid::random())
        .form(&form)
        .send()
        .await
        .map_err(|e| Outcome::request_failure(&e, &format!("Graph token request to {shown}")))?;
    let status = response.status();
    let body = read_capped(&mut response, MAX_TOKEN_BODY)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(_) => Outcome::critical(
                Category::Protocol,
                format!(
                    "Graph token: reply larger than {} KiB",
                    MAX_TOKEN_BODY / 1024
                ),
            ),
            BodyError::Read(e) => Outcome::request_failure(&e, "Graph token: reading"),
        })?;
    if !status.is_success() {
        let (category, text) = token::error_text(&body);
        let text = crate::secret::redact(&text, &[secret.as_str()]);
        return Err(Outcome::critical(
            category,
            format!("Graph token refused (HTTP {}): {text}", status.as_u16()),
        ));
    }
    let answer: Value = serde_json::from_slice(&body).map_err(|e| {
        Outcome::critical(
            Category::Protocol,
            format!("Graph token reply is not JSON: {e}"),
        )
    })?;
    answer
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            Outcome::critical(Category::Protocol, "Graph token reply has no access_token")
        })
}

/// The first certificate of a `.cer` (PEM or DER) as the checks need it.
async fn read_auth_cert(path: &Path, key: &str) -> Result<AuthCert, Outcome> {
    let data = tokio::fs::read(path).await.map_err(|e| {
        let reason = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        Outcome::critical(
            Category::Config,
            format!("{key}: cannot read {}: {reason}", path.display()),
        )
    })?;
    let bad = |why: String| {
        Outcome::critical(
            Category::Certificate,
            format!("{key}: cannot parse {}: {why}", path.display()),
        )
    };
    let der = if data.windows(11).any(|w| w == b"-----BEGIN ") {
        x509_parser::pem::Pem::iter_from_buffer(&data)
            .filter_map(Result::ok)
            .find(|p| p.label == "CERTIFICATE")
            .map(|p| p.contents)
            .ok_or_else(|| bad("no CERTIFICATE block".into()))?
    } else {
        data
    };
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| bad(e.to_string()))?;
    let subject = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(|cn| format!("CN={cn}"))
        .unwrap_or_else(|| cert.subject().to_string());
    Ok(AuthCert {
        thumbprint: hex::encode_upper(ring::digest::digest(
            &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            &der,
        )),
        subject,
        not_after: cert.validity().not_after.timestamp(),
    })
}

impl Probe for RegistrationProbe {
    fn run<'a>(&'a self, ctx: &'a ProbeContext) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match self.gather(ctx).await {
                Ok(ev) => judge(&ev, ctx.clock.now().timestamp()),
                Err(o) => o,
            }
        })
    }
}

impl RegistrationProbe {
    async fn gather(&self, ctx: &ProbeContext) -> Result<Evidence, Outcome> {
        let current = read_auth_cert(&self.auth_cert, "auth_cert").await?;
        let next = match &self.next_auth_cert {
            Some(p) => Some(read_auth_cert(p, "next_auth_cert").await?),
            None => None,
        };
        let bearer = self.graph_token(ctx).await?;
        let app = self
            .read_object(
                &bearer,
                "applications",
                &self.app_id,
                "appId,displayName,keyCredentials",
            )
            .await?;
        let sp = self
            .read_object(
                &bearer,
                "servicePrincipals",
                &self.first_party_app_id,
                "appId,keyCredentials",
            )
            .await?;
        let shape = |what: &str, e: String| {
            Outcome::critical(Category::Protocol, format!("Graph {what}: {e}"))
        };
        Ok(Evidence {
            current,
            next,
            app_id: self.app_id.clone(),
            app_name: clip(app.get("displayName").and_then(Value::as_str).unwrap_or("")),
            app_keys: key_credentials(&app).map_err(|e| shape("application", e))?,
            first_party_id: self.first_party_app_id.clone(),
            first_party_keys: key_credentials(&sp).map_err(|e| shape("service principal", e))?,
        })
    }
}

/// A Graph reply as [`RegistrationProbe`] reads it (an error reply, or an
/// application's or service principal's `keyCredentials`, then judged against
/// a fixed Auth certificate): the entry point of the fuzz target `graph_reply`
/// (through `crate::fuzzing`).
pub(crate) fn read_graph_reply(status: u16, body: &[u8], now: i64) -> Outcome {
    if !(200..300).contains(&status) {
        return graph_error(
            status,
            body,
            "Graph applications(appId='x')",
            "applications",
            "x",
        );
    }
    let object: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Outcome::critical(Category::Protocol, format!("reply is not JSON: {e}")),
    };
    let keys = match key_credentials(&object) {
        Ok(keys) => keys,
        Err(e) => return Outcome::critical(Category::Protocol, e),
    };
    let cert = |thumbprint: &str| AuthCert {
        thumbprint: thumbprint.into(),
        subject: "CN=Microsoft Exchange Server Auth Certificate".into(),
        not_after: now + 400 * 86_400,
    };
    let ev = Evidence {
        current: cert("84E05C1D98BCE3A5421D225B140B36E86A3D5534"),
        next: Some(cert("8BF833E6A7D8A7960F5802B5FFFD188599E2A4B2")),
        app_id: "6f2a4c31-8d3e-4b7a-9c15-2e0d8f4b1a77".into(),
        app_name: clip(
            object
                .get("displayName")
                .and_then(Value::as_str)
                .unwrap_or(""),
        ),
        app_keys: keys.clone(),
        first_party_id: FIRST_PARTY_APP_ID.into(),
        first_party_keys: keys,
    };
    judge(&ev, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURRENT: &str = "84E05C1D98BCE3A5421D225B140B36E86A3D5534";
    const NEXT: &str = "8BF833E6A7D8A7960F5802B5FFFD188599E2A4B2";
    const APP_ID: &str = "6f2a4c31-8d3e-4b7a-9c15-2e0d8f4b1a77";
    /// 2026-11-29T00:00:00Z: the fixtures' current credential ends in 2030.
    const NOW: i64 = 1_795_910_400;

    fn fixture(name: &str) -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/graph")
            .join(name);
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }

    fn cert(thumbprint: &str) -> AuthCert {
        AuthCert {
            thumbprint: thumbprint.into(),
            subject: "CN=Microsoft Exchange Server Auth Certificate".into(),
            not_after: NOW + 400 * 86_400,
        }
    }

    fn evidence(app: &str, sp: &str, next: Option<&str>) -> Evidence {
        let app = fixture(app);
        Evidence {
            current: cert(CURRENT),
            next: next.map(cert),
            app_id: APP_ID.into(),
            app_name: clip(app["displayName"].as_str().unwrap_or("")),
            app_keys: key_credentials(&app).unwrap(),
            first_party_id: FIRST_PARTY_APP_ID.into(),
            first_party_keys: key_credentials(&fixture(sp)).unwrap(),
        }
    }

    #[track_caller]
    fn expect(o: &Outcome, status: Status, category: Option<Category>, words: &[&str]) {
        assert_eq!(o.status, status, "{o:?}");
        assert_eq!(o.category, category, "{o:?}");
        for w in words {
            assert!(o.summary.contains(w), "summary {:?} lacks {w:?}", o.summary);
        }
    }

    #[test]
    fn identifiers_are_hex_in_any_case_or_base64_of_the_digest() {
        assert_eq!(
            identifier_thumbprint(&CURRENT.to_lowercase()).as_deref(),
            Some(CURRENT)
        );
        assert_eq!(
            identifier_thumbprint("i/gz5qfYp5YPWAK1//0YhZnipLI=").as_deref(),
            Some(NEXT)
        );
        assert_eq!(identifier_thumbprint("not a thumbprint"), None);
        // Base64 of something other than 20 bytes is not a thumbprint.
        assert_eq!(identifier_thumbprint("AAAA"), None);
        assert_eq!(identifier_thumbprint(""), None);
    }

    #[test]
    fn recorded_shapes_parse() {
        let keys = key_credentials(&fixture("application-hybrid-current-and-next.json")).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].thumbprint.as_deref(), Some(CURRENT));
        assert_eq!(keys[1].thumbprint.as_deref(), Some(NEXT));
        // Graph writes seven fractional digits.
        assert_eq!(keys[1].end, Some(1_930_089_600));
        assert!(key_credentials(&json!({"appId": "x"})).is_err());
        assert!(key_credentials(&json!({"keyCredentials": {}})).is_err());
        let clean = key_credentials(&fixture("service-principal-exchange-clean.json")).unwrap();
        assert!(clean.is_empty());
    }

    #[test]
    fn a_healthy_registration_is_ok_with_observations() {
        let ev = evidence(
            "application-hybrid-current-and-next.json",
            "service-principal-exchange-clean.json",
            Some(NEXT),
        );
        let o = judge(&ev, NOW);
        expect(
            &o,
            Status::Ok,
            None,
            &[
                "the hybrid app ExchangeServerApp-",
                &format!("holds the Auth certificate {CURRENT} until 2030-01-01T00:00:00Z"),
                &format!("the next one {NEXT} is uploaded too"),
                "the shared principal holds none of them",
            ],
        );
        assert_eq!(o.observations["registered_keys"], 2.0);
        assert_eq!(o.observations["first_party_matches"], 0.0);
        assert_eq!(o.observations["seconds_left"], (1_893_456_000 - NOW) as f64);
    }

    #[test]
    fn the_certificate_on_the_shared_principal_is_a_security_finding() {
        let ev = evidence(
            "application-hybrid-current-and-next.json",
            "service-principal-exchange-with-auth.json",
            Some(NEXT),
        );
        let o = judge(&ev, NOW);
        expect(&o, Status::Critical, Some(Category::Security), &[
            "CVE-2025-53786",
            &format!("Auth certificate {CURRENT} is still a key credential of the shared Office 365 Exchange Online principal ({FIRST_PARTY_APP_ID})"),
            &format!("-ResetFirstPartyServicePrincipalKeyCredentials -CertificateInformation {CURRENT}"),
        ]);
        assert_eq!(o.observations["first_party_matches"], 1.0);
    }

    #[test]
    fn a_missing_or_ended_current_credential_is_critical() {
        let mut ev = evidence(
            "application-hybrid.json",
            "service-principal-exchange-clean.json",
            None,
        );
        ev.current = cert(NEXT);
        let o = judge(&ev, NOW);
        expect(
            &o,
            Status::Critical,
            Some(Category::Certificate),
            &[
                &format!("the current Auth certificate {NEXT}"),
                "is not uploaded to the hybrid app",
                "ConfigureExchangeHybridApplication.ps1 -UpdateCertificate",
            ],
        );
        assert!(!o.observations.contains_key("seconds_left"));

        // The same upload judged after its endDateTime.
        let ev = evidence(
            "application-hybrid.json",
            "service-principal-exchange-clean.json",
            None,
        );
        let later = 1_893_456_000 + 5 * 86_400;
        let o = judge(&ev, later);
        expect(
            &o,
            Status::Critical,
            Some(Category::Certificate),
            &["only with an endDateTime already past (2030-01-01T00:00:00Z, 5d ago)"],
        );
        assert_eq!(o.observations["seconds_left"], -5.0 * 86_400.0);
        // Its own expiry is not also reported as lingering.
        assert!(
            o.summary.contains("1 expired credential(s)"),
            "{}",
            o.summary
        );
    }

    #[test]
    fn warnings_next_not_uploaded_and_lingering_credentials() {
        let ev = evidence(
            "application-hybrid.json",
            "service-principal-exchange-clean.json",
            Some(NEXT),
        );
        let o = judge(&ev, NOW);
        expect(
            &o,
            Status::Warning,
            Some(Category::Certificate),
            &[
                &format!("the next Auth certificate {NEXT}"),
                "is not uploaded to the hybrid app",
                "1 expired credential(s) linger",
                "1122334455667788990011223344556677889900 (ended 2024-06-30T12:00:00Z)",
            ],
        );
        // Worst wins: the shared principal outranks the warnings, which follow.
        let ev = evidence(
            "application-hybrid.json",
            "service-principal-exchange-with-auth.json",
            Some(NEXT),
        );
        let o = judge(&ev, NOW);
        assert_eq!(o.category, Some(Category::Security), "{o:?}");
        assert!(
            o.summary.find("CVE-2025-53786") < o.summary.find("linger"),
            "{}",
            o.summary
        );
    }

    #[test]
    fn graph_errors_name_the_permission_or_the_id() {
        let body = |n: &str| fixture(n).to_string().into_bytes();
        let o = graph_error(
            403,
            &body("error-403.json"),
            "Graph applications(appId='x')",
            "applications",
            APP_ID,
        );
        expect(
            &o,
            Status::Critical,
            Some(Category::Config),
            &[
                "Authorization_RequestDenied",
                "Insufficient privileges",
                "Application.Read.All",
            ],
        );
        let o = graph_error(
            401,
            &body("error-401.json"),
            "Graph",
            "applications",
            APP_ID,
        );
        expect(
            &o,
            Status::Critical,
            Some(Category::Auth),
            &["InvalidAuthenticationToken", "Application.Read.All"],
        );
        let o = graph_error(
            404,
            &body("error-404.json"),
            "Graph",
            "applications",
            APP_ID,
        );
        expect(
            &o,
            Status::Critical,
            Some(Category::Config),
            &[
                &format!("no application with appId {APP_ID}"),
                "Request_ResourceNotFound",
                "check app_id",
            ],
        );
        let o = graph_error(404, b"", "Graph", "servicePrincipals", FIRST_PARTY_APP_ID);
        expect(
            &o,
            Status::Critical,
            Some(Category::Config),
            &["check first_party_app_id", "HTTP 404"],
        );
        // Text from Graph is clipped and kept on one line.
        let long =
            json!({"error": {"code": "X", "message": format!("a\r\nb{}", "z".repeat(5000))}});
        let o = graph_error(
            500,
            long.to_string().as_bytes(),
            "Graph",
            "applications",
            APP_ID,
        );
        expect(&o, Status::Critical, Some(Category::Protocol), &["a  b"]);
        assert!(o.summary.len() < 600, "{}", o.summary.len());
    }

    fn cfg(extra: &str) -> RegistrationConfig {
        toml::from_str(&format!(
            "tenant = \"contoso.onmicrosoft.com\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\napp_id = \"{APP_ID}\"\nauth_cert = \"auth.cer\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn validation_names_every_problem() {
        let keys =
            |c: &RegistrationConfig| c.validate().into_iter().map(|p| p.key).collect::<Vec<_>>();
        assert!(keys(&cfg("secret_env = \"GRAPH_SECRET\"")).is_empty());
        assert!(keys(&cfg("key_path = \"m.pfx\"\npassword_file = \"m.pass\"")).is_empty());
        assert_eq!(keys(&cfg("")), ["key_path"]);
        assert_eq!(
            keys(&cfg("key_path = \"k\"\nsecret_env = \"S\"")),
            ["secret_env"]
        );
        assert_eq!(
            keys(&cfg("secret_env = \"S\"\nsecret_file = \"f\"")),
            ["secret_file"]
        );
        assert_eq!(
            keys(&cfg("secret_env = \"S\"\ncert_path = \"c\"")),
            ["cert_path"]
        );
        assert_eq!(
            keys(&cfg("secret_env = \"S\"\nfirst_party_app_id = \"00000002-0000-0ff1-ce00-000000000000\"\ngraph_url = \"ftp://x\"")),
            ["graph_url"]
        );
        let mut c = cfg("secret_env = \"S\"");
        c.tenant = "common".into();
        c.app_id = FIRST_PARTY_APP_ID.into();
        c.client_id = "monitor".into();
        assert_eq!(keys(&c), ["tenant", "client_id", "app_id"]);
        c.tenant = "contoso/../x".into();
        assert_eq!(keys(&c)[0], "tenant");
        assert!(toml::from_str::<RegistrationConfig>("tenant = \"t\"\nclient_id = \"c\"\napp_id = \"a\"\nauth_cert = \"x\"\nresource = \"r\"").is_err());
        assert_eq!(
            cfg("secret_env = \"S\"").token_url(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(
            cfg("secret_env = \"S\"").graph_url,
            "https://graph.microsoft.com"
        );
    }
}
