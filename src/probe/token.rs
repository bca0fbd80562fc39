//! `kind = "token"`: obtains a token from the cloud STS with the OAuth signing
//! certificate, exactly as on-premises Exchange does, and verifies what comes back.
//!
//! `mode = "acs"` (default) builds the S2S assertion of the hybrid push chain
//! (x5t header; iss `00000002-…@<tenant>`, aud `00000001-…/<authority>@<tenant>`,
//! ten minutes) and posts the jwt-bearer grant; `mode = "entra"` does the Entra ID
//! v2 client-credentials grant with a certificate assertion (RFC 7523), never on
//! `common`/`organizations`. The tenant id comes from the metadata and is never
//! guessed. The access token is checked (RS256 signature against the metadata's
//! signing keys, issuer, audience, nbf, expiry, lifetime) and the clock skew is
//! measured against the server's `Date` header. Error codes (ACS…, AADSTS…)
//! become categories and a summary an operator can act on; a large skew is said
//! beside the STS's reason. Neither the key nor any token is ever shown.
//!
//! `TokenClient` is the reusable part: the `push` kind gets its tokens from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tracing::Instrument;

use super::metadata::{self, AuthMetadata, Source};
use futures::future::BoxFuture;

use super::{BuildContext, ProbeKind};
use crate::credential::{self, SigningCredential};
use crate::human::{format_duration, rfc3339};
use crate::jwt;
use crate::net::http::{read_capped, without_credentials, BodyError};
use crate::outcome::{Category, Outcome, Phase, Probe, ProbeContext};
use crate::secret::SecretSource;
use crate::spec::{BuildError, SpecProblem};

pub(crate) const EXCHANGE_APP_ID: &str = "00000002-0000-0ff1-ce00-000000000000";
pub(crate) const ACS_APP_ID: &str = "00000001-0000-0000-c000-000000000000";
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
    /// Origins besides the metadata document's own from which an OpenID
    /// document's `jwks_uri` may be fetched (as for `kind = "metadata"`).
    #[serde(default)]
    pub jwks_hosts: Vec<String>,
    /// Origins besides the metadata document's own where its issuing endpoint
    /// (ACS `issuingEndpoints`, OpenID `token_endpoint`) may be: the signed
    /// assertion is posted there. Separate from `jwks_hosts`, as a host trusted
    /// to serve public keys is not thereby trusted with a credential.
    #[serde(default)]
    pub token_hosts: Vec<String>,
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

impl ProbeKind for TokenConfig {
    fn validate(&self) -> Vec<SpecProblem> {
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
        for (key, hosts) in [
            ("jwks_hosts", &self.jwks_hosts),
            ("token_hosts", &self.token_hosts),
        ] {
            if !hosts.is_empty() && self.metadata_url.is_none() {
                p.push(SpecProblem::new(key, "only used with metadata_url"));
            }
            p.extend(metadata::validate_origins(key, hosts));
        }
        if self.mode == Mode::Entra {
            for (key, url, want) in [
                ("token_url", &self.token_url, "token endpoint"),
                ("metadata_url", &self.metadata_url, "discovery document"),
            ] {
                let segment = url
                    .as_deref()
                    .and_then(|u| reqwest::Url::parse(u).ok())
                    .and_then(|u| multi_tenant_segment(&u));
                if let Some(segment) = segment {
                    p.push(SpecProblem::new(
                        key,
                        format!(
                            "`{segment}` is Entra's multi-tenant {want}, where client credentials are refused: use the tenant's own (https://login.microsoftonline.com/<tenant>/{})",
                            if key == "token_url" {
                                "oauth2/v2.0/token"
                            } else {
                                "v2.0/.well-known/openid-configuration"
                            }
                        ),
                    ));
                }
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

    fn build(&self, ctx: &BuildContext<'_>) -> Result<std::sync::Arc<dyn Probe>, BuildError> {
        Ok(std::sync::Arc::new(TokenProbe::new(self, ctx.base_dir)?))
    }
}

/// A token obtained and checked.
pub(crate) struct IssuedToken {
    /// The bearer token; never printed.
    access_token: String,
    pub resource: String,
    /// The access token's `iss` and `aud` (not secret: they name services).
    pub issuer: String,
    pub audience: String,
    pub expires_at: i64,
    /// Measurements and non-fatal findings for the caller's outcome.
    pub observations: Vec<(&'static str, f64)>,
    pub warning: Option<String>,
    pub summary: String,
}

impl IssuedToken {
    pub(crate) fn bearer(&self) -> &str {
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
pub(crate) struct TokenClient {
    mode: Mode,
    tenant: String,
    resource: Option<String>,
    metadata_url: Option<String>,
    jwks_hosts: Vec<String>,
    token_hosts: Vec<String>,
    token_url: Option<String>,
    client_id: Option<String>,
    key: KeySource,
    password: Option<SecretSource>,
    max_skew: i64,
    warn_skew: i64,
    http: reqwest::Client,
}

impl TokenClient {
    pub(crate) fn new(cfg: &TokenConfig, base_dir: &Path) -> Result<Self, BuildError> {
        if let Some(p) = cfg.validate().into_iter().next() {
            return Err(p.into());
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
        let client = TokenClient {
            mode: cfg.mode,
            tenant: cfg.tenant.trim().to_string(),
            resource: cfg.resource.clone(),
            metadata_url: cfg.metadata_url.clone(),
            jwks_hosts: cfg.jwks_hosts.clone(),
            token_hosts: cfg.token_hosts.clone(),
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
                .probe_client(cfg.verify, ca_file.as_deref())
                .map_err(|m| BuildError::tls(cfg.ca_file.is_some(), m))?,
        };
        client.open_credential_now()?;
        Ok(client)
    }

    /// Opens the signing credential once while building, so that a key file
    /// that does not read, a PEM key that is encrypted or a PKCS#12 that does not
    /// open with its password stops `sonde validate` and a start instead of
    /// failing every run. Runs still read it again (`credential`), so that a
    /// renewed certificate on disk is picked up without a restart.
    fn open_credential_now(&self) -> Result<(), BuildError> {
        let read = |key: &'static str, path: &Path| {
            crate::file::read_blocking(path, crate::file::MAX_SIZE)
                .map_err(|e| BuildError::new(key, format!("cannot read {}: {e}", path.display())))
        };
        let opened = match &self.key {
            KeySource::Pem { key, cert } => {
                let k = read("key_path", key)?;
                let c = match cert {
                    Some(cert) => read("cert_path", cert)?,
                    None => Vec::new(),
                };
                credential::from_pem(&k, &c)
            }
            KeySource::Pkcs12 { path } => {
                let data = read("key_path", path)?;
                let password = match &self.password {
                    Some(source) => source.read_blocking("password").map_err(|e| {
                        let key = match source {
                            SecretSource::Env(_) => "password_env",
                            SecretSource::File(_) => "password_file",
                        };
                        BuildError::new(key, e.to_string())
                    })?,
                    None => String::new(),
                };
                credential::from_pkcs12(&data, &password)
            }
        };
        opened
            .map(drop)
            .map_err(|e| BuildError::new("key_path", format!("signing credential: {e}")))
    }

    /// Reads the credential on every run, so a renewed certificate on disk is
    /// picked up without a restart.
    async fn credential(&self) -> Result<SigningCredential, Outcome> {
        let read = |path: PathBuf| async move {
            crate::file::read(&path, crate::file::MAX_SIZE, crate::file::TIMEOUT)
                .await
                .map_err(|e| {
                    Outcome::critical(
                        Category::Config,
                        format!("cannot read {}: {e}", path.display()),
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
    pub(crate) async fn acquire(&self, ctx: &ProbeContext) -> Result<IssuedToken, Outcome> {
        ctx.progress.phase(Phase::CredentialRead);
        let cred = self.credential().await?;
        let mut observations: Vec<(&'static str, f64)> = Vec::new();
        // Where to ask, for which tenant, and which keys sign the answer.
        let (endpoint, tenant_id, signing_keys, discovery_issuer) = match &self.metadata_url {
            Some(url) => {
                ctx.progress.phase(Phase::MetadataFetch);
                let (doc, stats) =
                    metadata::fetch(&self.http, url, MAX_RESPONSE * 4, &self.jwks_hosts)
                        .instrument(tracing::info_span!("metadata_fetch"))
                        .await
                        .map_err(|o| prefixed(o, "metadata"))?;
                observations.push(("metadata_latency_seconds", stats.latency.as_secs_f64()));
                ctx.progress
                    .observe("metadata_latency_seconds", stats.latency.as_secs_f64());
                let doc = bind_tenant(doc, &self.tenant)
                    .map_err(|o| with_observations(o, &observations))?;
                let discovery_issuer = (doc.source == Source::OpenId).then(|| doc.issuer.clone());
                (
                    doc.issuing_endpoint.clone(),
                    doc.realm.clone(),
                    Some(doc.signing_certs()),
                    discovery_issuer,
                )
            }
            None => (
                self.token_url.clone().unwrap_or_default(),
                self.tenant.clone(),
                None,
                None,
            ),
        };
        let endpoint_url = reqwest::Url::parse(&endpoint).map_err(|e| {
            Outcome::critical(
                Category::Protocol,
                format!(
                    "issuing endpoint `{}` is not a URL: {e}",
                    clip(&endpoint, 200)
                ),
            )
        })?;
        if let Some(url) = &self.metadata_url {
            // Before anything is signed: the assertion goes only where the
            // operator trusts it to go.
            check_endpoint_origin(url, &endpoint_url, &self.token_hosts)
                .map_err(|o| with_observations(o, &observations))?;
        }
        if self.mode == Mode::Entra {
            if let Some(segment) = multi_tenant_segment(&endpoint_url) {
                return Err(with_observations(
                    Outcome::critical(
                        Category::Config,
                        multi_tenant_text(segment, "token endpoint"),
                    ),
                    &observations,
                ));
            }
        }
        let now = ctx.clock.now().timestamp();
        let resource = self.resource_for(&tenant_id);
        let x5t = cred.x5t();
        let header = json!({"typ": "JWT", "alg": "RS256", "x5t": x5t});
        ctx.progress.phase(Phase::AssertionSigning);
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
        ctx.progress.phase(Phase::TokenRequest);
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
        let too_skewed = skew.filter(|s| s.abs() > self.max_skew).map(|s| {
            format!(
                "clock skew {}: this server's clock differs from the STS's by more than {}",
                skew_words(s),
                skew_words(self.max_skew)
            )
        });
        if !status.is_success() {
            // The STS's own reason first; a large skew is said beside it, as
            // it may be the cause but the STS names what it refused.
            let (category, text) = error_text(&body);
            let mut summary = format!("token request refused (HTTP {}): {text}", status.as_u16());
            if let Some(s) = too_skewed.as_ref().or(skew_text.as_ref()) {
                summary.push_str(&format!("; {s}"));
            }
            return Err(with_observations(
                Outcome::critical(category, summary),
                &observations,
            ));
        }
        if let Some(text) = too_skewed {
            return Err(with_observations(
                Outcome::critical(Category::Auth, text),
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
        ctx.progress.phase(Phase::TokenCheck);
        let issuers = self.issuers_for(&tenant_id, discovery_issuer.as_deref());
        let checked = check_answer(
            &answer,
            &Expected {
                resource: &resource,
                issuers: &issuers,
                signing_keys: signing_keys.as_deref(),
                now: local,
                max_skew: self.max_skew,
                mode: self.mode,
            },
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
            issuer: checked.issuer,
            audience: checked.audience,
            expires_at: checked.exp,
            observations,
            warning,
            summary,
        })
    }

    /// ACS tokens come from `00000001-…@<tenant id>`. Exchange Online and Graph
    /// get v1 tokens even from the v2 endpoint, so Entra's are from
    /// `https://sts.windows.net/<tenant id>/` or the discovery's issuer.
    fn issuers_for(&self, tenant_id: &str, discovery_issuer: Option<&str>) -> Issuers {
        match self.mode {
            Mode::Acs => Issuers::Exact(vec![format!("{ACS_APP_ID}@{tenant_id}")]),
            Mode::Entra if crate::guid::is_guid(tenant_id) => {
                let mut list = vec![format!("https://sts.windows.net/{tenant_id}/")];
                match discovery_issuer {
                    Some(i) => list.push(metadata::substitute_tenant(i, tenant_id)),
                    None => list.push(format!(
                        "https://login.microsoftonline.com/{tenant_id}/v2.0"
                    )),
                }
                Issuers::Exact(list)
            }
            Mode::Entra => Issuers::AnyEntraTenant,
        }
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

/// The issuing endpoint `endpoint`, named by the metadata at `metadata_url`,
/// must be on the metadata's origin or one of `token_hosts`: a document
/// (or whoever can change it) must not be able to collect a signed
/// assertion at an address of its choosing, nor point sonde at an internal
/// service. A refusal is `protocol`, naming the origin.
fn check_endpoint_origin(
    metadata_url: &str,
    endpoint: &reqwest::Url,
    token_hosts: &[String],
) -> Result<(), Outcome> {
    let Ok(base) = reqwest::Url::parse(metadata_url) else {
        // Validation checked the URL; unreachable in practice.
        return Err(Outcome::critical(
            Category::Config,
            "metadata_url is not a URL",
        ));
    };
    if metadata::origin_allowed(&base, endpoint, token_hosts) {
        return Ok(());
    }
    let origin = if endpoint.origin().is_tuple() {
        endpoint.origin().ascii_serialization()
    } else {
        clip(endpoint.as_str(), 200)
    };
    Err(Outcome::critical(
        Category::Protocol,
        format!(
            "metadata: the issuing endpoint is on {origin}, not on the document's origin {}; \
             no assertion signed or sent (add \"{origin}\" to token_hosts to allow it)",
            base.origin().ascii_serialization()
        ),
    ))
}

/// The metadata as it applies to the configured tenant, whose id it must name:
/// the token probe never guesses a tenant (a realm-less document, the domain in
/// place of the id, or another tenant's document are configuration errors).
fn bind_tenant(doc: AuthMetadata, configured: &str) -> Result<AuthMetadata, Outcome> {
    let configured_id = crate::guid::is_guid(configured).then_some(configured);
    let tenant_id = match doc.source {
        Source::Acs => {
            if doc.names_no_tenant() {
                return Err(Outcome::critical(Category::Config, metadata::NO_REALM));
            }
            if !crate::guid::is_guid(&doc.realm) {
                return Err(Outcome::critical(
                    Category::Protocol,
                    format!(
                        "metadata: the realm `{}` is not a tenant id",
                        clip(&doc.realm, 64)
                    ),
                ));
            }
            doc.realm.clone()
        }
        Source::OpenId if crate::guid::is_guid(&doc.realm) => doc.realm.clone(),
        Source::OpenId => match configured_id {
            Some(id) if doc.names_no_tenant() => id.to_string(),
            _ => {
                return Err(Outcome::critical(
                    Category::Config,
                    format!(
                        "the discovery document names no tenant (issuer `{}`): use the tenant's own …/<tenant>/v2.0/.well-known/openid-configuration",
                        clip(&doc.issuer, 120)
                    ),
                ))
            }
        },
    };
    if let Some(id) = configured_id {
        if !id.eq_ignore_ascii_case(&tenant_id) {
            return Err(Outcome::critical(
                Category::Config,
                format!("the metadata names tenant {tenant_id}, but tenant is {id}"),
            ));
        }
    }
    let (doc, foreign) = doc.for_tenant(&tenant_id);
    if doc.signing_keys.is_empty() {
        return Err(Outcome::critical(
            Category::Protocol,
            format!(
                "metadata: no signing key for tenant {tenant_id} ({foreign} bound to other tenants)"
            ),
        ));
    }
    Ok(doc)
}

/// `common`, `organizations` or `consumers` when `url`'s first path segment is
/// one of Entra's multi-tenant names, where client credentials are refused.
pub(crate) fn multi_tenant_segment(url: &reqwest::Url) -> Option<&'static str> {
    let first = url.path_segments()?.next()?;
    ["common", "organizations", "consumers"]
        .into_iter()
        .find(|m| first.eq_ignore_ascii_case(m))
}

fn multi_tenant_text(segment: &str, what: &str) -> String {
    format!(
        "the {what} is on `{segment}`, where Entra refuses client credentials: use the tenant's own (https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token)"
    )
}

fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// The issuers an access token may name.
#[derive(Debug, Clone, PartialEq)]
enum Issuers {
    /// One of these, compared without regard to case.
    Exact(Vec<String>),
    /// Entra for a tenant known only by its domain: `https://sts.windows.net/<GUID>/`
    /// or `https://login.microsoftonline.com/<GUID>/v2.0`.
    AnyEntraTenant,
}

impl Issuers {
    fn accepts(&self, iss: &str) -> bool {
        match self {
            Issuers::Exact(list) => list.iter().any(|i| i.eq_ignore_ascii_case(iss)),
            Issuers::AnyEntraTenant => {
                let guid_between = |prefix: &str, suffix: &str| {
                    iss.strip_prefix(prefix)
                        .and_then(|r| r.strip_suffix(suffix))
                        .is_some_and(crate::guid::is_guid)
                };
                guid_between("https://sts.windows.net/", "/")
                    || guid_between("https://login.microsoftonline.com/", "/v2.0")
            }
        }
    }

    fn words(&self) -> String {
        match self {
            Issuers::Exact(list) => list
                .iter()
                .map(|i| format!("`{i}`"))
                .collect::<Vec<_>>()
                .join(" or "),
            Issuers::AnyEntraTenant => "an Entra issuer".into(),
        }
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
pub(crate) fn error_text(body: &[u8]) -> (Category, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = v.get("error").and_then(Value::as_str).unwrap_or("");
    let description = v
        .get("error_description")
        .and_then(Value::as_str)
        .unwrap_or("");
    // First line only: the rest is Trace ID / Correlation ID / Timestamp.
    let first = description.lines().next().unwrap_or("").trim();
    // Entra also lists its codes as numbers; the description usually leads with one.
    let listed = v
        .get("error_codes")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(Value::as_u64)
        .map(|n| format!("AADSTS{n}"));
    let code: String = first
        .split(':')
        .next()
        .filter(|c| c.starts_with("ACS") || c.starts_with("AADSTS"))
        .map(str::to_string)
        .or(listed)
        .unwrap_or_default();
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
        "AADSTS50194" => (
            Category::Config,
            "the token endpoint is multi-tenant (`common`/`organizations`): use the tenant's own …/<tenant>/oauth2/v2.0/token",
        ),
        "AADSTS700016" => (
            Category::Config,
            "the application (client_id) is not found in the tenant: check client_id, and that the app is registered in this tenant",
        ),
        "AADSTS90002" => (
            Category::Config,
            "the tenant is not found: check tenant (its id, or a verified domain)",
        ),
        "AADSTS500011" => (
            Category::Config,
            "the resource is not found in the tenant: check resource (e.g. https://outlook.office365.com)",
        ),
        "AADSTS70011" => (
            Category::Config,
            "the scope is invalid: resource must be the application id URI whose /.default is asked",
        ),
        "AADSTS7000215" => (
            Category::Config,
            "the client secret is invalid: use the secret's value (not its id), or a new one if it expired",
        ),
        _ if code.is_empty() && error.is_empty() => {
            (Category::Protocol, "the STS answered with no error code")
        }
        _ => (Category::Auth, "authentication failed"),
    };
    let detail = crate::human::text::peer(first);
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
    issuer: String,
    audience: String,
    nbf: i64,
    exp: i64,
}

/// What a success answer is checked against.
struct Expected<'a> {
    resource: &'a str,
    issuers: &'a Issuers,
    /// The metadata's signing keys, when known.
    signing_keys: Option<&'a [Vec<u8>]>,
    now: i64,
    /// How far `nbf` may be ahead of `now`.
    max_skew: i64,
    mode: Mode,
}

/// Checks a success answer: Bearer, a JWT access token whose RS256 signature
/// verifies against one of the signing keys (when known), issuer, audience, times.
fn check_answer(answer: &Value, want: &Expected<'_>) -> Result<Checked, Outcome> {
    let (resource, now, mode) = (want.resource, want.now, want.mode);
    let bad = |s: String| Outcome::critical(Category::Auth, s);
    let token_type = answer
        .get("token_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !token_type.eq_ignore_ascii_case("bearer") {
        return Err(bad(format!(
            "token_type is `{}`, expected Bearer",
            crate::human::text::bounded(token_type, 32)
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
    if let Some(keys) = want.signing_keys {
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
            crate::human::text::bounded(aud, 120)
        )));
    }
    let iss = decoded.claim_str("iss").unwrap_or("");
    if !want.issuers.accepts(iss) {
        return Err(bad(format!(
            "access token issuer is `{}`, expected {} (a token for another tenant, or from another STS)",
            clip(iss, 120),
            want.issuers.words()
        )));
    }
    let (nbf, exp) = match (decoded.claim_i64("nbf"), decoded.claim_i64("exp")) {
        (Some(n), Some(e)) => (n, e),
        _ => return Err(bad("access token has no nbf/exp".into())),
    };
    if exp <= now {
        return Err(bad("access token is already expired".into()));
    }
    if nbf > now + want.max_skew {
        return Err(bad(format!(
            "access token is not valid until {} ({} ahead of this server's clock)",
            rfc3339(nbf),
            skew_words(nbf - now)
        )));
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
        issuer: iss.to_string(),
        audience: aud.to_string(),
        nbf,
        exp,
    })
}

pub(crate) struct TokenProbe {
    client: TokenClient,
}

impl TokenProbe {
    pub(crate) fn new(cfg: &TokenConfig, base_dir: &Path) -> Result<Self, BuildError> {
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

/// A token endpoint reply as [`TokenClient::acquire`] reads it, against fixed
/// expectations in both modes and with both kinds of issuer list: the entry
/// point of the fuzz target `token_reply` (through `crate::fuzzing`).
pub(crate) fn read_reply(body: &[u8], signing_keys: Option<&[Vec<u8>]>, now: i64) -> Vec<Outcome> {
    let mut seen = Vec::new();
    let (category, text) = error_text(body);
    seen.push(Outcome::critical(category, text));
    let Ok(answer) = serde_json::from_slice::<Value>(body) else {
        return seen;
    };
    let exact = Issuers::Exact(vec![
        "00000001-0000-0000-c000-000000000000@72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
        "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/".into(),
    ]);
    for (mode, issuers) in [
        (Mode::Acs, &exact),
        (Mode::Entra, &exact),
        (Mode::Entra, &Issuers::AnyEntraTenant),
    ] {
        let want = Expected {
            resource: "00000002-0000-0ff1-ce00-000000000000/mail.contoso.com@72f988bf-86f1-41af-91ab-2d7cd011db47",
            issuers,
            signing_keys,
            now,
            max_skew: 300,
            mode,
        };
        match check_answer(&answer, &want) {
            Ok(c) => seen.push(Outcome::ok(format!(
                "{} {} {} {} {}",
                c.token.len(),
                c.issuer,
                c.audience,
                c.nbf,
                c.exp
            ))),
            Err(o) => seen.push(o),
        }
    }
    seen
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

    #[test]
    fn configuration_codes_of_entra_are_config_with_advice() {
        let aad = |code: &str, text: &str| {
            error_text(
                json!({"error": "invalid_client", "error_description": format!("{code}: {text}\r\nTrace ID: x"), "error_codes": [0]})
                    .to_string()
                    .as_bytes(),
            )
        };
        for (code, words) in [
            ("AADSTS700016", "check client_id"),
            ("AADSTS90002", "check tenant"),
            ("AADSTS500011", "check resource"),
            ("AADSTS70011", "the scope is invalid"),
            ("AADSTS7000215", "the client secret is invalid"),
            ("AADSTS50194", "use the tenant's own"),
        ] {
            let (c, t) = aad(code, "Something went wrong.");
            assert_eq!(c, Category::Config, "{code}: {t}");
            assert!(t.contains(words), "{code}: {t}");
            assert!(t.contains(code), "{code}: {t}");
        }
        // The numeric list alone names the code too.
        let (c, t) = error_text(
            json!({"error": "unauthorized_client", "error_description": "Application not found.", "error_codes": [700016]})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(c, Category::Config, "{t}");
    }

    fn acs_issuers() -> Issuers {
        Issuers::Exact(vec![format!("{ACS_APP_ID}@{TENANT}")])
    }

    const TENANT: &str = "3f2b6a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
    const OTHER_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
    const NOW: i64 = 1_779_926_400;

    /// An STS key, made once.
    fn sts() -> &'static credential::Generated {
        static STS: std::sync::OnceLock<credential::Generated> = std::sync::OnceLock::new();
        STS.get_or_init(|| {
            credential::generate_self_signed("sts", 2048, NOW - 86_400, NOW + 86_400 * 365).unwrap()
        })
    }

    fn answer(claims: Value) -> Value {
        let token = sts()
            .credential
            .sign_rs256(&json!({"typ": "JWT", "alg": "RS256"}), &claims)
            .unwrap();
        json!({"token_type": "Bearer", "expires_in": "86399", "access_token": token})
    }

    fn check(
        claims: Value,
        issuers: &Issuers,
        mode: Mode,
        resource: &str,
    ) -> Result<Checked, Outcome> {
        let keys = vec![sts().credential.cert_der().to_vec()];
        check_answer(
            &answer(claims),
            &Expected {
                resource,
                issuers,
                signing_keys: Some(&keys),
                now: NOW,
                max_skew: 300,
                mode,
            },
        )
    }

    #[test]
    fn access_tokens_must_come_from_the_tenant_s_sts() {
        let resource = format!("{EXCHANGE_APP_ID}/outlook.office365.com@{TENANT}");
        let claims = |iss: &str, nbf: i64| json!({"aud": resource, "iss": iss, "nbf": nbf, "exp": nbf + 86_399});
        let ok = check(
            claims(&format!("{ACS_APP_ID}@{TENANT}"), NOW),
            &acs_issuers(),
            Mode::Acs,
            &resource,
        )
        .unwrap();
        assert_eq!(ok.issuer, format!("{ACS_APP_ID}@{TENANT}"));
        let Err(o) = check(
            claims(&format!("{ACS_APP_ID}@{OTHER_TENANT}"), NOW),
            &acs_issuers(),
            Mode::Acs,
            &resource,
        ) else {
            panic!("another tenant's token was accepted");
        };
        assert_eq!(o.category, Some(Category::Auth));
        assert!(o.summary.starts_with(&format!("access token issuer is `{ACS_APP_ID}@{OTHER_TENANT}`, expected `{ACS_APP_ID}@{TENANT}`")), "{o:?}");
        // nbf within max_skew is fine; beyond it the token is not valid yet.
        assert!(check(
            claims(&format!("{ACS_APP_ID}@{TENANT}"), NOW + 200),
            &acs_issuers(),
            Mode::Acs,
            &resource
        )
        .is_ok());
        let Err(o) = check(
            claims(&format!("{ACS_APP_ID}@{TENANT}"), NOW + 900),
            &acs_issuers(),
            Mode::Acs,
            &resource,
        ) else {
            panic!("a token from the future was accepted");
        };
        assert!(
            o.summary.contains("access token is not valid until"),
            "{o:?}"
        );
        assert!(
            o.summary.contains("15m ahead of this server's clock"),
            "{o:?}"
        );
    }

    #[test]
    fn entra_tokens_are_v1_or_from_the_discovery_issuer() {
        // Building opens the key, so the client needs a real one.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k.pem"), &sts().key_pkcs8_pem).unwrap();
        std::fs::write(dir.path().join("c.pem"), &sts().cert_pem).unwrap();
        let client = TokenClient::new(
            &toml::from_str::<TokenConfig>(&format!(
                "mode = \"entra\"\ntenant = \"{TENANT}\"\nclient_id = \"c\"\ntoken_url = \"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token\"\nkey_path = \"k.pem\"\ncert_path = \"c.pem\""
            ))
            .unwrap(),
            dir.path(),
        )
        .unwrap();
        let issuers = client.issuers_for(
            TENANT,
            Some("https://login.microsoftonline.com/{tenantid}/v2.0"),
        );
        let resource = "https://outlook.office365.com";
        let claims =
            |iss: String| json!({"aud": resource, "iss": iss, "nbf": NOW, "exp": NOW + 3600});
        for iss in [
            format!("https://sts.windows.net/{TENANT}/"),
            format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
        ] {
            assert!(
                check(claims(iss.clone()), &issuers, Mode::Entra, resource).is_ok(),
                "{iss}"
            );
        }
        for iss in [
            format!("https://sts.windows.net/{OTHER_TENANT}/"),
            format!("https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"),
            "https://login.microsoftonline.com/{tenantid}/v2.0".to_string(),
        ] {
            let Err(o) = check(claims(iss.clone()), &issuers, Mode::Entra, resource) else {
                panic!("{iss} was accepted");
            };
            assert!(o.summary.contains("access token issuer is"), "{o:?}");
        }
        // A tenant named by its domain only: any tenant's Entra issuer, nothing else.
        let any = Issuers::AnyEntraTenant;
        assert!(any.accepts(&format!("https://sts.windows.net/{OTHER_TENANT}/")));
        assert!(!any.accepts("https://sts.windows.net/contoso.onmicrosoft.com/"));
        assert!(!any.accepts(&format!("{ACS_APP_ID}@{TENANT}")));
    }

    #[test]
    fn the_issuing_endpoint_must_be_on_the_metadata_origin_or_listed() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        let meta = "https://accounts.accesscontrol.windows.net/metadata/json/1/?realm=contoso.com";
        let listed = vec!["https://sts.example".to_string()];
        for ok in [
            "https://accounts.accesscontrol.windows.net/tokens/OAuth/2",
            "https://ACCOUNTS.accesscontrol.windows.net:443/t/tokens/OAuth/2",
            "https://sts.example/token",
        ] {
            assert!(
                check_endpoint_origin(meta, &url(ok), &listed).is_ok(),
                "{ok}"
            );
        }
        for (refused, named) in [
            (
                "https://evil.example/tokens/OAuth/2",
                "https://evil.example",
            ),
            (
                "http://accounts.accesscontrol.windows.net/t",
                "http://accounts.accesscontrol.windows.net",
            ),
            (
                "https://accounts.accesscontrol.windows.net:8443/t",
                "https://accounts.accesscontrol.windows.net:8443",
            ),
            (
                "http://169.254.169.254/latest/meta-data",
                "http://169.254.169.254",
            ),
            ("https://sts.example:8443/token", "https://sts.example:8443"),
        ] {
            let o = check_endpoint_origin(meta, &url(refused), &listed).unwrap_err();
            assert_eq!(o.status, crate::outcome::Status::Critical);
            assert_eq!(o.category, Some(Category::Protocol), "{o:?}");
            assert_eq!(
                o.summary,
                format!(
                    "metadata: the issuing endpoint is on {named}, not on the document's origin \
                     https://accounts.accesscontrol.windows.net; no assertion signed or sent \
                     (add \"{named}\" to token_hosts to allow it)"
                )
            );
        }
        assert!(check_endpoint_origin(meta, &url("https://sts.example/t"), &[]).is_err());
    }

    fn doc(file: &[u8]) -> AuthMetadata {
        metadata::parse_acs(file).unwrap()
    }

    #[test]
    fn the_token_probe_never_guesses_the_tenant() {
        let no_realm = doc(include_bytes!(
            "../../tests/fixtures/exchange/acs-metadata-no-realm.json"
        ));
        for configured in ["contoso.onmicrosoft.com", TENANT] {
            let o = bind_tenant(no_realm.clone(), configured).unwrap_err();
            assert_eq!(o.status, crate::outcome::Status::Critical);
            assert_eq!(o.category, Some(Category::Config));
            assert_eq!(
                o.summary,
                "the metadata names no tenant: AuthMetadataUrl must end with ?realm=<tenant>"
            );
        }
        let with_realm = doc(include_bytes!(
            "../../tests/fixtures/exchange/acs-metadata.json"
        ));
        assert_eq!(
            bind_tenant(with_realm.clone(), "contoso.onmicrosoft.com")
                .unwrap()
                .realm,
            TENANT
        );
        let o = bind_tenant(with_realm, OTHER_TENANT).unwrap_err();
        assert_eq!(o.category, Some(Category::Config));
        assert!(
            o.summary.contains(&format!(
                "names tenant {TENANT}, but tenant is {OTHER_TENANT}"
            )),
            "{o:?}"
        );
        // Multi-tenant discovery: read for a configured tenant id, refused for a domain.
        let (issuer, token, _) = metadata::parse_openid_discovery(include_bytes!(
            "../../tests/fixtures/exchange/entra-common-openid-configuration.json"
        ))
        .unwrap();
        let common = AuthMetadata {
            source: Source::OpenId,
            realm: String::new(),
            service_name: String::new(),
            issuer,
            issuing_endpoint: token,
            signing_keys: metadata::parse_jwks(include_bytes!(
                "../../tests/fixtures/exchange/entra-jwks-per-key-issuers.json"
            ))
            .unwrap(),
        };
        let o = bind_tenant(common.clone(), "contoso.onmicrosoft.com").unwrap_err();
        assert_eq!(o.category, Some(Category::Config));
        assert!(
            o.summary
                .starts_with("the discovery document names no tenant"),
            "{o:?}"
        );
        let bound = bind_tenant(common, TENANT).unwrap();
        assert_eq!(
            bound.issuer,
            format!("https://login.microsoftonline.com/{TENANT}/v2.0")
        );
        assert_eq!(
            bound.signing_keys.len(),
            3,
            "the other tenant's key is not ours"
        );
    }

    #[test]
    fn entra_on_common_or_organizations_is_a_config_error() {
        let problems = |extra: &str| {
            cfg(&format!("mode = \"entra\"\nclient_id = \"c\"\n{extra}"))
                .validate()
                .into_iter()
                .map(|p| (p.key, p.message))
                .collect::<Vec<_>>()
        };
        let p =
            problems("token_url = \"https://login.microsoftonline.com/common/oauth2/v2.0/token\"");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "token_url");
        assert!(p[0].1.starts_with("`common` is Entra's multi-tenant token endpoint, where client credentials are refused"), "{p:?}");
        let p = problems("metadata_url = \"https://login.microsoftonline.com/Organizations/v2.0/.well-known/openid-configuration\"");
        assert_eq!(p[0].0, "metadata_url");
        assert!(
            p[0].1
                .contains("`organizations` is Entra's multi-tenant discovery document"),
            "{p:?}"
        );
        assert!(problems(&format!(
            "token_url = \"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token\""
        ))
        .is_empty());
        // ACS mode is not concerned.
        assert!(cfg("metadata_url = \"https://x/common/m\"")
            .validate()
            .is_empty());
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
        c.token_hosts = vec!["https://sts.example".into(), "sts.example".into()];
        assert_eq!(problems(&c), vec!["token_hosts"]);
        let mut t = cfg("token_url = \"https://x/t\"");
        t.tenant = TENANT.into();
        t.token_hosts = vec!["https://sts.example".into()];
        assert_eq!(problems(&t), vec!["token_hosts"], "only with metadata_url");
    }
}
