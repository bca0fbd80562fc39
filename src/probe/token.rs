//! `kind = "token"`: obtains a token from the cloud STS with the OAuth signing
//! certificate, exactly as on-premises Exchange does, and verifies what comes back.
//!
//! `mode = "acs"` (default) builds the S2S assertion of the hybrid push chain
//! (x5t header; iss `00000002-…@<tenant>`, aud `00000001-…/<authority>@<tenant>`,
//! ten minutes) and posts the jwt-bearer grant; `mode = "entra"` does the Entra ID
//! v2 client-credentials grant with a certificate assertion (RFC 7523). The access
//! token is checked (RS256 signature against the metadata's signing keys,
//! audience, expiry, lifetime) and the clock skew is measured against the
//! server's `Date` header. Error codes (ACS…, AADSTS…) become categories and a
//! summary an operator can act on. Neither the key nor any token is ever shown.
//!
//! `TokenClient` is the reusable part: the `push` kind gets its tokens from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tracing::Instrument;

use super::metadata::{self, AuthMetadata};
use futures::future::BoxFuture;

use crate::credential::{self, SigningCredential};
use crate::human::format_duration;
use crate::jwt;
use crate::net::http::{read_capped, without_credentials, BodyError};
use crate::outcome::{Category, Outcome, Probe, ProbeContext};
use crate::secret::SecretSource;
use crate::spec::SpecProblem;

pub const EXCHANGE_APP_ID: &str = "00000002-0000-0ff1-ce00-000000000000";
pub const ACS_APP_ID: &str = "00000001-0000-0000-c000-000000000000";
const JWT_BEARER: &str = "http://oauth.net/grant_type/jwt/1.0/bearer";
const ASSERTION_LIFETIME: i64 = 600;
const MAX_RESPONSE: u64 = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Acs,
    Entra,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    #[serde(default)]
    pub mode: Mode,
    /// Tenant id (GUID) or domain. With `metadata_url` the id is read from the
    /// metadata; with `token_url` alone (acs) it must be the id.
    pub tenant: String,
    /// acs: `00000002-0000-0ff1-ce00-000000000000/outlook.office365.com` (the
    /// `@<tenant id>` is added); entra: the resource whose `/.default` scope is asked.
    pub resource: Option<String>,
    pub metadata_url: Option<String>,
    pub token_url: Option<String>,
    /// entra: the application (client) id.
    pub client_id: Option<String>,
    /// PEM private key (with `cert_path`, or followed by the certificate in the
    /// same file), or PKCS#12 holding key and certificate.
    pub key_path: String,
    pub cert_path: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    /// Clock skew against the server's `Date` header that is critical.
    #[serde(default = "default_max_skew", with = "crate::human::duration")]
    pub max_skew: Duration,
    /// Clock skew that is a warning.
    #[serde(default = "default_warn_skew", with = "crate::human::duration")]
    pub warn_skew: Duration,
    #[serde(default = "yes")]
    pub verify: bool,
    pub ca_file: Option<String>,
}

fn default_max_skew() -> Duration {
    Duration::from_secs(300)
}
fn default_warn_skew() -> Duration {
    Duration::from_secs(60)
}
fn yes() -> bool {
    true
}

fn is_pkcs12(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".pfx") || lower.ends_with(".p12")
}

impl TokenConfig {
    pub fn validate(&self) -> Vec<SpecProblem> {
        let mut p = Vec::new();
        if self.tenant.trim().is_empty() {
            p.push(SpecProblem::new("tenant", "must not be empty"));
        }
        match (&self.metadata_url, &self.token_url) {
            (None, None) => p.push(SpecProblem::new(
                "metadata_url",
                "give metadata_url or token_url",
            )),
            (Some(_), Some(_)) => p.push(SpecProblem::new(
                "token_url",
                "give metadata_url or token_url, not both",
            )),
            _ => {}
        }
        for (key, url) in [
            ("metadata_url", &self.metadata_url),
            ("token_url", &self.token_url),
        ] {
            if let Some(u) = url {
                crate::net::http::check_url_key(key, u, &mut p);
            }
        }
        if self.mode == Mode::Acs
            && self.token_url.is_some()
            && self.metadata_url.is_none()
            && !crate::guid::is_guid(&self.tenant)
        {
            p.push(SpecProblem::new(
                "tenant",
                "with token_url and no metadata_url, tenant must be the tenant id (a GUID)",
            ));
        }
        match self.mode {
            Mode::Entra if self.client_id.as_deref().is_none_or(str::is_empty) => {
                p.push(SpecProblem::new(
                    "client_id",
                    "mode = \"entra\" needs the application's client_id",
                ))
            }
            Mode::Acs if self.client_id.is_some() => p.push(SpecProblem::new(
                "client_id",
                "only used with mode = \"entra\"",
            )),
            _ => {}
        }
        if self.key_path.trim().is_empty() {
            p.push(SpecProblem::new("key_path", "must not be empty"));
        }
        if is_pkcs12(&self.key_path) && self.cert_path.is_some() {
            p.push(SpecProblem::new(
                "cert_path",
                "a PKCS#12 key_path already holds the certificate",
            ));
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            p.push(SpecProblem::new(
                "password_file",
                "give password_env or password_file, not both",
            ));
        }
        if self.warn_skew > self.max_skew {
            p.push(SpecProblem::new("warn_skew", "must not exceed max_skew"));
        }
        if !self.verify && self.ca_file.is_some() {
            p.push(SpecProblem::new(
                "ca_file",
                "has no effect with verify = false",
            ));
        }
        p
    }
}

/// A token obtained and checked.
pub struct IssuedToken {
    /// The bearer token; never printed.
    access_token: String,
    pub resource: String,
    pub expires_at: i64,
    /// Measurements and non-fatal findings for the caller's outcome.
    pub observations: Vec<(&'static str, f64)>,
    pub warning: Option<String>,
    pub summary: String,
}

impl IssuedToken {
    pub fn bearer(&self) -> &str {
        &self.access_token
    }
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("resource", &self.resource)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

enum KeySource {
    Pem { key: PathBuf, cert: Option<PathBuf> },
    Pkcs12 { path: PathBuf },
}

/// Gets tokens with the configured credential; shared by `token` and `push`.
pub struct TokenClient {
    mode: Mode,
    tenant: String,
    resource: Option<String>,
    metadata_url: Option<String>,
    token_url: Option<String>,
    client_id: Option<String>,
    key: KeySource,
    password: Option<SecretSource>,
    max_skew: i64,
    warn_skew: i64,
    http: reqwest::Client,
}

impl TokenClient {
    pub fn new(cfg: &TokenConfig, base_dir: &Path) -> Result<Self, String> {
        if let Some(p) = cfg.validate().into_iter().next() {
            return Err(format!("{}: {}", p.key, p.message));
        }
        let key = if is_pkcs12(&cfg.key_path) {
            KeySource::Pkcs12 {
                path: base_dir.join(&cfg.key_path),
            }
        } else {
            KeySource::Pem {
                key: base_dir.join(&cfg.key_path),
                cert: cfg.cert_path.as_ref().map(|c| base_dir.join(c)),
            }
        };
        let ca_file = cfg.ca_file.as_ref().map(|f| base_dir.join(f));
        Ok(TokenClient {
            mode: cfg.mode,
            tenant: cfg.tenant.trim().to_string(),
            resource: cfg.resource.clone(),
            metadata_url: cfg.metadata_url.clone(),
            token_url: cfg.token_url.clone(),
            client_id: cfg.client_id.clone(),
            key,
            password: SecretSource::from_keys(
                cfg.password_env.as_ref(),
                cfg.password_file.as_ref(),
                base_dir,
            ),
            max_skew: cfg.max_skew.as_secs() as i64,
            warn_skew: cfg.warn_skew.as_secs() as i64,
            http: crate::net::http::Clients::process()
                .probe_client(cfg.verify, ca_file.as_deref())?,
        })
    }

    /// Reads the credential on every run, so a renewed certificate on disk is
    /// picked up without a restart.
    async fn credential(&self) -> Result<SigningCredential, Outcome> {
        let read = |path: PathBuf| async move {
            tokio::fs::read(&path).await.map_err(|e| {
                Outcome::critical(
                    Category::Config,
                    format!("cannot read {}: {}", path.display(), io_reason(&e)),
                )
            })
        };
        match &self.key {
            KeySource::Pem { key, cert } => {
                let k = read(key.clone()).await?;
                let c = match cert {
                    Some(cert) => read(cert.clone()).await?,
                    None => Vec::new(),
                };
                credential::from_pem(&k, &c).map_err(|e| {
                    Outcome::critical(Category::Config, format!("signing credential: {e}"))
                })
            }
            KeySource::Pkcs12 { path } => {
                let data = read(path.clone()).await?;
                let password = self.password().await?;
                credential::from_pkcs12(&data, &password).map_err(|e| {
                    Outcome::critical(Category::Config, format!("signing credential: {e}"))
                })
            }
        }
    }

    /// The PKCS#12 password, read at each run; none configured reads as empty.
    async fn password(&self) -> Result<String, Outcome> {
        match &self.password {
            Some(source) => source
                .read("password")
                .await
                .map_err(|e| Outcome::critical(Category::Config, e.to_string())),
            None => Ok(String::new()),
        }
    }

    /// Obtains a token and checks it; a failure is the outcome to report.
    pub async fn acquire(&self, ctx: &ProbeContext) -> Result<IssuedToken, Outcome> {
        let cred = self.credential().await?;
        let mut observations: Vec<(&'static str, f64)> = Vec::new();
        // Where to ask, for which tenant, and which keys sign the answer.
        let (endpoint, tenant_id, signing_keys) = match &self.metadata_url {
            Some(url) => {
                let (doc, stats) = metadata::fetch(&self.http, url, MAX_RESPONSE * 4)
                    .instrument(tracing::info_span!("metadata_fetch"))
                    .await
                    .map_err(|o| prefixed(o, "metadata"))?;
                observations.push(("metadata_latency_seconds", stats.latency.as_secs_f64()));
                let tenant = tenant_of(&doc, &self.tenant);
                (
                    doc.issuing_endpoint.clone(),
                    tenant,
                    Some(doc.signing_certs),
                )
            }
            None => (
                self.token_url.clone().unwrap_or_default(),
                self.tenant.clone(),
                None,
            ),
        };
        let endpoint_url = reqwest::Url::parse(&endpoint).map_err(|e| {
            Outcome::critical(
                Category::Protocol,
                format!("issuing endpoint `{endpoint}` is not a URL: {e}"),
            )
        })?;
        let now = ctx.clock.now().timestamp();
        let resource = self.resource_for(&tenant_id);
        let x5t = cred.x5t();
        let header = json!({"typ": "JWT", "alg": "RS256", "x5t": x5t});
        let signing = tracing::info_span!("assertion_signing");
        let form: Vec<(&str, String)> = match self.mode {
            Mode::Acs => {
                let claims = json!({
                    "aud": format!("{ACS_APP_ID}/{}@{tenant_id}", authority(&endpoint_url)),
                    "iss": format!("{EXCHANGE_APP_ID}@{tenant_id}"),
                    "nbf": now,
                    "exp": now + ASSERTION_LIFETIME,
                });
                let assertion = signing.in_scope(|| sign(&cred, &header, &claims))?;
                vec![
                    ("grant_type", JWT_BEARER.to_string()),
                    ("assertion", assertion),
                    ("resource", resource.clone()),
                ]
            }
            Mode::Entra => {
                let client_id = self.client_id.clone().unwrap_or_default();
                let claims = json!({
                    "aud": endpoint,
                    "iss": client_id,
                    "sub": client_id,
                    "jti": crate::guid::random(),
                    "nbf": now,
                    "exp": now + ASSERTION_LIFETIME,
                });
                let assertion = signing.in_scope(|| sign(&cred, &header, &claims))?;
                vec![
                    ("grant_type", "client_credentials".to_string()),
                    ("client_id", client_id),
                    (
                        "scope",
                        format!("{}/.default", resource.trim_end_matches('/')),
                    ),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
                    ),
                    ("client_assertion", assertion),
                ]
            }
        };
        drop(signing);
        // The span lasts until the whole answer is read.
        let request = tracing::info_span!("token_request");
        let start = tokio::time::Instant::now();
        let response = self
            .http
            .post(endpoint_url.clone())
            .header("client-request-id", crate::guid::random())
            .header("return-client-request-id", "true")
            .form(&form)
            .send()
            .instrument(request.clone())
            .await
            .map_err(|e| {
                Outcome::request_failure(
                    &e,
                    &format!("token request to {}", without_credentials(&endpoint_url)),
                )
            })?;
        let status = response.status();
        let server_date = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
            .map(|t| t.timestamp());
        let body = read_body(response, MAX_RESPONSE)
            .instrument(request)
            .await
            .map_err(|o| prefixed(o, "token response"))?;
        let latency = start.elapsed();
        observations.push(("latency_seconds", latency.as_secs_f64()));
        let local = ctx.clock.now().timestamp();
        let skew = server_date.map(|d| d - local);
        if let Some(s) = skew {
            observations.push(("clock_skew_seconds", s as f64));
        }
        let skew_text = skew.map(|s| format!("clock skew {}", skew_words(s)));
        if let Some(s) = skew {
            if s.abs() > self.max_skew {
                let mut o = Outcome::critical(
                    Category::Auth,
                    format!(
                        "{}: this server's clock differs from the STS's by more than {}",
                        skew_text.clone().unwrap_or_default(),
                        skew_words(self.max_skew)
                    ),
                );
                if !status.is_success() {
                    o.summary.push_str(&format!("; {}", error_text(&body).1));
                }
                return Err(with_observations(o, &observations));
            }
        }
        if !status.is_success() {
            let (category, text) = error_text(&body);
            let mut summary = format!("token request refused (HTTP {}): {text}", status.as_u16());
            if let Some(s) = &skew_text {
                summary.push_str(&format!("; {s}"));
            }
            return Err(with_observations(
                Outcome::critical(category, summary),
                &observations,
            ));
        }
        let answer: Value = serde_json::from_slice(&body).map_err(|e| {
            with_observations(
                Outcome::critical(
                    Category::Protocol,
                    format!("token response is not JSON: {e}"),
                ),
                &observations,
            )
        })?;
        let checked = check_answer(
            &answer,
            &resource,
            signing_keys.as_deref(),
            local,
            self.mode,
        )
        .map_err(|o| with_observations(o, &observations))?;
        observations.push(("token_lifetime_seconds", (checked.exp - checked.nbf) as f64));
        observations.push(("expires_in_seconds", (checked.exp - local) as f64));
        let warning = skew.filter(|s| s.abs() > self.warn_skew).map(|s| {
            format!(
                "clock skew {} (warning over {})",
                skew_words(s),
                skew_words(self.warn_skew)
            )
        });
        let keys_note = if signing_keys.is_some() {
            "signature verified against the metadata"
        } else {
            "signature not verified (no metadata_url)"
        };
        let summary = format!(
            "token issued by {} in {} ms for {}, valid {}, {keys_note}",
            endpoint_url.host_str().unwrap_or(""),
            latency.as_millis(),
            resource,
            format_duration(checked.exp - local),
        );
        Ok(IssuedToken {
            access_token: checked.token,
            resource,
            expires_at: checked.exp,
            observations,
            warning,
            summary,
        })
    }

    fn resource_for(&self, tenant_id: &str) -> String {
        match self.mode {
            Mode::Acs => {
                let r = self
                    .resource
                    .clone()
                    .unwrap_or_else(|| format!("{EXCHANGE_APP_ID}/outlook.office365.com"));
                if r.contains('@') {
                    r
                } else {
                    format!("{r}@{tenant_id}")
                }
            }
            Mode::Entra => self
                .resource
                .clone()
                .unwrap_or_else(|| "https://outlook.office365.com".to_string()),
        }
    }
}

/// The tenant id: the realm the metadata names, else what the config says.
fn tenant_of(doc: &AuthMetadata, configured: &str) -> String {
    if crate::guid::is_guid(&doc.realm) {
        doc.realm.clone()
    } else {
        configured.to_string()
    }
}

/// Host, and port when not the scheme's default: the `aud` authority.
fn authority(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

fn sign(cred: &SigningCredential, header: &Value, claims: &Value) -> Result<String, Outcome> {
    cred.sign_rs256(header, claims).map_err(|e| {
        Outcome::critical(
            Category::Internal,
            format!("cannot sign the assertion: {e}"),
        )
    })
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn prefixed(mut o: Outcome, what: &str) -> Outcome {
    o.summary = format!("{what}: {}", o.summary);
    o
}

fn with_observations(mut o: Outcome, obs: &[(&'static str, f64)]) -> Outcome {
    for (k, v) in obs {
        o.observe(k, *v);
    }
    o
}

/// `7m12s`, `-45s`: a skew for people.
fn skew_words(secs: i64) -> String {
    let sign = if secs < 0 { "-" } else { "" };
    let s = secs.unsigned_abs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sign}{sec}s"),
        (0, m, 0) => format!("{sign}{m}m"),
        (0, m, sec) => format!("{sign}{m}m{sec}s"),
        (h, m, _) => format!("{sign}{h}h{m}m"),
    }
}

/// The body, at most `cap` bytes; a failure is the outcome to report.
async fn read_body(mut response: reqwest::Response, cap: u64) -> Result<Vec<u8>, Outcome> {
    read_capped(&mut response, cap).await.map_err(|e| match e {
        BodyError::TooLarge(_) => Outcome::critical(
            Category::Protocol,
            format!("larger than {} KiB", cap / 1024),
        ),
        BodyError::Read(e) => Outcome::request_failure(&e, "reading"),
    })
}

/// The STS's error as (category, operator-facing text). Codes are kept in the
/// text so that they can be looked up; trace ids and timestamps are dropped.
pub fn error_text(body: &[u8]) -> (Category, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = v.get("error").and_then(Value::as_str).unwrap_or("");
    let description = v
        .get("error_description")
        .and_then(Value::as_str)
        .unwrap_or("");
    // First line only: the rest is Trace ID / Correlation ID / Timestamp.
    let first = description.lines().next().unwrap_or("").trim();
    let code: String = first
        .split(':')
        .next()
        .filter(|c| c.starts_with("ACS") || c.starts_with("AADSTS"))
        .unwrap_or("")
        .to_string();
    let lower = first.to_ascii_lowercase();
    let (category, meaning) = match code.as_str() {
        "ACS50006" | "ACS50008" => (
            Category::Certificate,
            "the signing key is not registered with the service principal (or the certificate thumbprint changed)",
        ),
        "ACS50012" if lower.contains("expired") && lower.contains("credential") => (
            Category::Certificate,
            "the certificate registered with the service principal has expired",
        ),
        "ACS50012" if lower.contains("not yet valid") && lower.contains("credential") => (
            Category::Certificate,
            "the certificate registered with the service principal is not valid yet",
        ),
        "ACS50012" => (Category::Auth, "authentication failed"),
        "ACS90004" => (Category::Protocol, "the STS says the request is malformed"),
        "AADSTS700027" if lower.contains("expired") => (
            Category::Certificate,
            "the certificate registered on the application has expired",
        ),
        "AADSTS700027" => (
            Category::Certificate,
            "the signing certificate is not registered on the application, or the signature is invalid",
        ),
        "AADSTS700024" => (
            Category::Auth,
            "the assertion is outside its valid time range: check this server's clock",
        ),
        _ if code.is_empty() && error.is_empty() => {
            (Category::Protocol, "the STS answered with no error code")
        }
        _ => (Category::Auth, "authentication failed"),
    };
    let detail: String = first.chars().take(200).collect();
    let text = if detail.is_empty() {
        format!(
            "{meaning} ({})",
            if error.is_empty() {
                "no error body"
            } else {
                error
            }
        )
    } else {
        format!("{meaning} ({detail})")
    };
    (category, text)
}

struct Checked {
    token: String,
    nbf: i64,
    exp: i64,
}

/// Checks a success answer: Bearer, a JWT access token whose RS256 signature
/// verifies against one of `signing_keys` (when known), audience, times.
fn check_answer(
    answer: &Value,
    resource: &str,
    signing_keys: Option<&[Vec<u8>]>,
    now: i64,
    mode: Mode,
) -> Result<Checked, Outcome> {
    let bad = |s: String| Outcome::critical(Category::Auth, s);
    let token_type = answer
        .get("token_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !token_type.eq_ignore_ascii_case("bearer") {
        return Err(bad(format!(
            "token_type is `{}`, expected Bearer",
            token_type.chars().take(32).collect::<String>()
        )));
    }
    if mode == Mode::Acs {
        // ACS sends its numbers as strings; accept both.
        let ok = ["expires_in", "not_before", "expires_on"].iter().all(|k| {
            answer
                .get(*k)
                .is_none_or(|v| v.is_string() || v.is_number())
        });
        if !ok {
            return Err(Outcome::critical(
                Category::Protocol,
                "token response has malformed times",
            ));
        }
    }
    let token = answer
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Outcome::critical(Category::Protocol, "token response has no access_token")
        })?;
    let decoded = jwt::decode(token).map_err(|e| bad(format!("access token is not a JWT: {e}")))?;
    if decoded.alg() != Some("RS256") {
        return Err(bad("access token is not signed with RS256".into()));
    }
    if let Some(keys) = signing_keys {
        if !keys.iter().any(|k| decoded.verify_rs256(k).is_ok()) {
            return Err(bad(
                "access token signature does not verify against the metadata's signing keys".into(),
            ));
        }
    }
    let aud = decoded.claim_str("aud").unwrap_or("");
    let aud_ok = match mode {
        Mode::Acs => aud == resource,
        Mode::Entra => {
            aud == resource || aud.trim_end_matches('/') == resource.trim_end_matches('/')
        }
    };
    if !aud_ok {
        return Err(bad(format!(
            "access token audience is `{}`, expected `{resource}`",
            aud.chars().take(120).collect::<String>()
        )));
    }
    let (nbf, exp) = match (decoded.claim_i64("nbf"), decoded.claim_i64("exp")) {
        (Some(n), Some(e)) => (n, e),
        _ => return Err(bad("access token has no nbf/exp".into())),
    };
    if exp <= now {
        return Err(bad("access token is already expired".into()));
    }
    let lifetime = exp - nbf;
    if !(300..=48 * 3600).contains(&lifetime) {
        return Err(bad(format!(
            "access token lifetime {} is not sane (expected 5m to 48h)",
            format_duration(lifetime)
        )));
    }
    Ok(Checked {
        token: token.to_string(),
        nbf,
        exp,
    })
}

pub struct TokenProbe {
    client: TokenClient,
}

impl TokenProbe {
    pub fn new(cfg: &TokenConfig, base_dir: &Path) -> Result<Self, String> {
        Ok(TokenProbe {
            client: TokenClient::new(cfg, base_dir)?,
        })
    }
}

impl Probe for TokenProbe {
    fn run<'a>(&'a self, ctx: &'a ProbeContext) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match self.client.acquire(ctx).await {
                Ok(t) => {
                    let mut o = match &t.warning {
                        Some(w) => Outcome::warning(Category::Auth, format!("{w}; {}", t.summary)),
                        None => Outcome::ok(t.summary.clone()),
                    };
                    for (k, v) in &t.observations {
                        o.observe(k, *v);
                    }
                    o
                }
                Err(o) => o,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_reads_like_a_person_would_write_it() {
        assert_eq!(skew_words(432), "7m12s");
        assert_eq!(skew_words(-45), "-45s");
        assert_eq!(skew_words(300), "5m");
        assert_eq!(skew_words(3720), "1h2m");
    }

    #[test]
    fn sts_errors_map_to_categories_and_advice() {
        let acs = |d: &str| {
            error_text(
                json!({"error": "invalid_client", "error_description": format!("{d}\r\nTrace ID: x\r\nTimestamp: y")})
                    .to_string()
                    .as_bytes())
        };
        let (c, t) = acs("ACS50008: The key is not registered.");
        assert_eq!(c, Category::Certificate);
        assert!(
            t.starts_with("the signing key is not registered with the service principal"),
            "{t}"
        );
        assert!(!t.contains("Trace ID"));
        let (c, t) = acs("ACS50006: Unable to verify token signature.");
        assert_eq!(c, Category::Certificate);
        assert!(t.contains("ACS50006"));
        let (c, t) = acs("ACS50012: Authentication failed. The key credential registered for the signing key has expired.");
        assert_eq!(c, Category::Certificate);
        assert!(
            t.starts_with("the certificate registered with the service principal has expired"),
            "{t}"
        );
        let (c, _) = acs("ACS50012: Authentication failed.");
        assert_eq!(c, Category::Auth);
        let (c, _) = acs("ACS90004: The request is not properly formatted.");
        assert_eq!(c, Category::Protocol);
        let (c, t) = error_text(
            json!({"error": "invalid_client", "error_description": "AADSTS700024: Client assertion is not within its valid time range."}).to_string().as_bytes());
        assert_eq!(c, Category::Auth);
        assert!(t.contains("clock"), "{t}");
        let (c, _) = error_text(
            json!({"error": "invalid_client", "error_description": "AADSTS700027: Client assertion failed signature validation."}).to_string().as_bytes());
        assert_eq!(c, Category::Certificate);
        let (c, t) = error_text(b"<html>oops</html>");
        assert_eq!(c, Category::Protocol);
        assert!(t.contains("no error code"), "{t}");
    }

    fn cfg(extra: &str) -> TokenConfig {
        toml::from_str(&format!("tenant = \"contoso.onmicrosoft.com\"\nkey_path = \"k.pem\"\ncert_path = \"c.cer\"\n{extra}")).unwrap()
    }

    #[test]
    fn validation_names_every_problem() {
        let problems =
            |c: &TokenConfig| c.validate().into_iter().map(|p| p.key).collect::<Vec<_>>();
        assert_eq!(problems(&cfg("metadata_url = \"https://accounts.accesscontrol.windows.net/metadata/json/1/?realm=contoso.onmicrosoft.com\"")), Vec::<&str>::new());
        assert_eq!(problems(&cfg("")), vec!["metadata_url"]);
        assert_eq!(
            problems(&cfg("token_url = \"https://x/t\"")),
            vec!["tenant"]
        );
        assert_eq!(
            problems(&cfg("mode = \"entra\"\nmetadata_url = \"https://x/m\"")),
            vec!["client_id"]
        );
        let mut c = cfg("metadata_url = \"https://x/m\"");
        c.key_path = "oauth.pfx".into();
        assert_eq!(problems(&c), vec!["cert_path"]);
        c.cert_path = None;
        assert_eq!(problems(&c), Vec::<&str>::new());
    }
}
