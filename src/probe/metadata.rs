//! `kind = "metadata"`: the auth-metadata document that tells on-premises
//! Exchange where the cloud STS issues tokens and which keys sign them.
//!
//! Reads the ACS JSON document (`/metadata/json/1/?realm=…` or the realm in the
//! path) and OpenID Connect discovery (`/.well-known/openid-configuration`, then
//! its `jwks_uri`), with the rules Exchange applies: names matched without
//! regard to case, signing keys are `x509Certificate` values with usage
//! `signing`, the issuing endpoint is the first `OAuth2` `issuance` endpoint,
//! service name and realm come from `issuer`. Then it checks the expected realm
//! and issuer and the validity of the newest usable signing key (the STS rolls
//! its keys). A document that names no tenant (ACS without `?realm=`: realm
//! `*`; Entra's multi-tenant discovery, whose issuer holds `{tenantid}`) is a
//! configuration finding; `for_tenant` reads a document for one tenant and drops
//! the JWKS keys bound to another. `fetch` is shared with the `token` kind, which
//! reads the same document to find where to ask.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

use futures::future::BoxFuture;

use super::{BuildContext, ProbeKind};
use crate::human::{format_duration, rfc3339, ByteSize};
use crate::net::http::{read_capped, without_userinfo, BodyError};
use crate::outcome::{Category, Outcome, Phase, Probe, ProbeContext};
use crate::spec::{BuildError, SpecProblem};

fn default_critical_before() -> Duration {
    Duration::from_secs(7 * 86_400)
}
fn default_warn_before() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    /// ACS metadata (JSON) or OpenID Connect discovery document.
    pub url: String,
    /// The realm (tenant id) the document must name; case is ignored.
    pub expect_realm: Option<String>,
    /// The issuer the document must name, exactly.
    pub expect_issuer: Option<String>,
    #[serde(default = "default_warn_before", with = "crate::human::duration")]
    pub warn_before: Duration,
    #[serde(default = "default_critical_before", with = "crate::human::duration")]
    pub critical_before: Duration,
    /// Larger documents (and key sets) are critical.
    #[serde(default)]
    pub max_body: ByteSize,
    #[serde(default = "yes")]
    pub verify: bool,
    pub ca_file: Option<String>,
    /// Origins besides the discovery document's own from which an OpenID
    /// document's `jwks_uri` may be fetched, e.g. `https://keys.example`.
    #[serde(default)]
    pub jwks_hosts: Vec<String>,
}

impl ProbeKind for MetadataConfig {
    fn validate(&self) -> Vec<SpecProblem> {
        let mut p = Vec::new();
        crate::net::http::check_url_key("url", &self.url, &mut p);
        if self.warn_before < self.critical_before {
            p.push(SpecProblem::new(
                "warn_before",
                "must not be shorter than critical_before",
            ));
        }
        if self.max_body.0 == 0 {
            p.push(SpecProblem::new("max_body", "must be greater than 0"));
        }
        if !self.verify && self.ca_file.is_some() {
            p.push(SpecProblem::new(
                "ca_file",
                "has no effect with verify = false",
            ));
        }
        p.extend(validate_jwks_hosts(&self.jwks_hosts));
        p
    }

    fn build(&self, ctx: &BuildContext<'_>) -> Result<std::sync::Arc<dyn Probe>, BuildError> {
        Ok(std::sync::Arc::new(MetadataProbe::new(self, ctx.base_dir)?))
    }

    fn perf_thresholds(&self) -> Vec<crate::output::Threshold> {
        vec![crate::output::Threshold {
            observation: "seconds_left",
            warn: Some(format!("{}:", self.warn_before.as_secs())),
            crit: Some(format!("{}:", self.critical_before.as_secs())),
        }]
    }
}

/// Problems with `jwks_hosts` entries: each must be an origin,
/// `http(s)://host[:port]`, with nothing after it.
pub(crate) fn validate_jwks_hosts(hosts: &[String]) -> Vec<SpecProblem> {
    validate_origins("jwks_hosts", hosts)
}

/// Problems with the entries of a list of origins at `key` (`jwks_hosts`,
/// the token kind's `token_hosts`).
pub(crate) fn validate_origins(key: &'static str, hosts: &[String]) -> Vec<SpecProblem> {
    let mut p = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let shown: String = h.chars().take(200).collect();
        match reqwest::Url::parse(h) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.username().is_empty()
                    && u.password().is_none()
                    && u.path() == "/"
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && !h.trim_end().ends_with('/') => {}
            Ok(_) => p.push(SpecProblem::new(
                key,
                format!(
                    "entry {i}, `{shown}`, must be an origin, scheme://host[:port] (e.g. https://keys.example)"
                ),
            )),
            Err(e) => p.push(SpecProblem::new(
                key,
                format!("entry {i}, `{shown}`, is not an origin (e.g. https://keys.example): {e}"),
            )),
        }
    }
    p
}

/// Whether `target` (a key set's `jwks_uri`, the token kind's issuing
/// endpoint) may be contacted for the document at `discovery`: only on the
/// document's own origin (scheme, host and port) or on one of `allowed`, so
/// that a document cannot send sonde to any address it names (an internal
/// service, a cloud metadata endpoint).
pub(super) fn origin_allowed(
    discovery: &reqwest::Url,
    target: &reqwest::Url,
    allowed: &[String],
) -> bool {
    let origin = target.origin();
    origin.is_tuple()
        && (origin == discovery.origin()
            || allowed
                .iter()
                .filter_map(|a| reqwest::Url::parse(a).ok())
                .any(|a| a.origin() == origin))
}

/// Which kind of document the metadata came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Acs,
    OpenId,
}

/// What the chain needs from the metadata.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AuthMetadata {
    pub source: Source,
    /// `issuer` as written (empty when the document has none).
    pub issuer: String,
    /// The part of `issuer` before `@` (ACS), e.g. `00000001-0000-0000-c000-000000000000`.
    pub service_name: String,
    /// The tenant id: after `@` in an ACS issuer, a GUID in an OpenID issuer's path.
    pub realm: String,
    /// Where tokens are requested.
    pub issuing_endpoint: String,
    /// The keys that sign the STS's tokens.
    pub signing_keys: Vec<SigningKey>,
}

/// A key that signs the STS's tokens.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SigningKey {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// JWKS only: the issuer the key is bound to, when the key says so: the
    /// `…/{tenantid}/v2.0` template (any tenant) or one tenant's issuer.
    pub issuer: Option<String>,
}

/// The template Entra's multi-tenant documents put where the tenant id goes.
pub(crate) const TENANT_TEMPLATE: &str = "{tenantid}";

/// What the metadata probe and the token probe say about a realm-less ACS document.
pub(crate) const NO_REALM: &str =
    "the metadata names no tenant: AuthMetadataUrl must end with ?realm=<tenant>";

fn has_template(s: &str) -> bool {
    s.to_ascii_lowercase().contains(TENANT_TEMPLATE)
}

/// `s` with every `{tenantid}` (any case) replaced by `tenant_id`.
pub(crate) fn substitute_tenant(s: &str, tenant_id: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut rest = 0;
    while let Some(at) = lower[rest..].find(TENANT_TEMPLATE) {
        out.push_str(&s[rest..rest + at]);
        out.push_str(tenant_id);
        rest += at + TENANT_TEMPLATE.len();
    }
    out.push_str(&s[rest..]);
    out
}

impl AuthMetadata {
    /// The certificates of the signing keys, DER.
    pub(crate) fn signing_certs(&self) -> Vec<Vec<u8>> {
        self.signing_keys.iter().map(|k| k.der.clone()).collect()
    }

    /// True when the document names no tenant: an ACS document fetched without
    /// `?realm=` (realm empty or `*`), or multi-tenant OpenID discovery whose
    /// issuer still holds `{tenantid}`.
    pub(crate) fn names_no_tenant(&self) -> bool {
        let realm = self.realm.trim();
        match self.source {
            Source::Acs => realm.is_empty() || realm == "*",
            Source::OpenId => has_template(&self.issuer) || realm.is_empty(),
        }
    }

    /// The document as it applies to `tenant_id`: `{tenantid}` replaced in the
    /// issuer, the realm set, and the keys bound to another tenant dropped (a
    /// key whose issuer names another tenant does not sign this one's tokens).
    /// Returns the document and how many keys were dropped.
    pub(crate) fn for_tenant(mut self, tenant_id: &str) -> (AuthMetadata, usize) {
        if self.source == Source::Acs {
            return (self, 0);
        }
        if has_template(&self.issuer) {
            self.issuer = substitute_tenant(&self.issuer, tenant_id);
        }
        if self.realm.is_empty() {
            self.realm = realm_of_issuer_url(&self.issuer);
        }
        let before = self.signing_keys.len();
        self.signing_keys.retain(|k| match &k.issuer {
            Some(i) if !has_template(i) => {
                let bound = realm_of_issuer_url(i);
                bound.is_empty() || bound.eq_ignore_ascii_case(tenant_id)
            }
            _ => true,
        });
        let dropped = before - self.signing_keys.len();
        (self, dropped)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MetadataError {
    #[error("the document is empty")]
    Empty,
    #[error("the document is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the document is not a JSON object")]
    NotAnObject,
    #[error("no signing key (no `keys` entry with usage signing and an x509Certificate value)")]
    NoSigningKey,
    #[error("no issuing endpoint (no `endpoints` entry with protocol OAuth2 and usage issuance)")]
    NoIssuingEndpoint,
    #[error("signing key {index} is not a certificate: {why}")]
    BadKey { index: usize, why: String },
    #[error("the document is neither ACS metadata nor OpenID Connect discovery")]
    UnknownShape,
}

/// Case-insensitive member lookup, as Exchange reads these documents.
fn get<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn get_str<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    get(obj, name).and_then(Value::as_str)
}

fn eq_ci(v: Option<&str>, want: &str) -> bool {
    v.is_some_and(|s| s.trim().eq_ignore_ascii_case(want))
}

fn object(body: &[u8]) -> Result<Map<String, Value>, MetadataError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(MetadataError::Empty);
    }
    // A UTF-8 byte order mark is common in documents served by Windows stacks.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(MetadataError::NotAnObject),
        Err(e) => Err(MetadataError::InvalidJson(e.to_string())),
    }
}

fn certificate(index: usize, b64: &str) -> Result<Vec<u8>, MetadataError> {
    let compact: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| MetadataError::BadKey {
            index,
            why: format!("not base64: {e}"),
        })?;
    x509_parser::parse_x509_certificate(&der).map_err(|e| MetadataError::BadKey {
        index,
        why: format!("not X.509: {e}"),
    })?;
    Ok(der)
}

/// Whether a parsed document is OpenID Connect discovery rather than ACS.
pub(crate) fn is_openid(doc: &Map<String, Value>) -> bool {
    get(doc, "endpoints").is_none()
        && (get(doc, "token_endpoint").is_some() || get(doc, "jwks_uri").is_some())
}

/// The ACS JSON document.
pub(crate) fn parse_acs(body: &[u8]) -> Result<AuthMetadata, MetadataError> {
    let doc = object(body)?;
    acs_from(&doc)
}

fn acs_from(doc: &Map<String, Value>) -> Result<AuthMetadata, MetadataError> {
    if get(doc, "keys").is_none() && get(doc, "endpoints").is_none() {
        return Err(MetadataError::UnknownShape);
    }
    let mut signing_keys = Vec::new();
    let keys = get(doc, "keys")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, key) in keys.iter().enumerate() {
        let Some(key) = key.as_object() else { continue };
        let Some(value) = get(key, "keyValue").and_then(Value::as_object) else {
            continue;
        };
        let text = get_str(value, "value").unwrap_or("").trim();
        if eq_ci(get_str(key, "usage"), "signing")
            && eq_ci(get_str(value, "type"), "x509Certificate")
            && !text.is_empty()
        {
            signing_keys.push(SigningKey {
                der: certificate(i + 1, text)?,
                issuer: None,
            });
        }
    }
    if signing_keys.is_empty() {
        return Err(MetadataError::NoSigningKey);
    }
    let endpoints = get(doc, "endpoints")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let issuing_endpoint = endpoints
        .iter()
        .filter_map(Value::as_object)
        .find(|e| eq_ci(get_str(e, "protocol"), "OAuth2") && eq_ci(get_str(e, "usage"), "issuance"))
        .and_then(|e| get_str(e, "location"))
        .filter(|l| !l.trim().is_empty())
        .ok_or(MetadataError::NoIssuingEndpoint)?
        .trim()
        .to_string();
    let issuer = get_str(doc, "issuer").unwrap_or("").trim().to_string();
    let (service_name, realm) = match issuer.split_once('@') {
        Some((s, r)) => (s.to_string(), r.to_string()),
        None => (
            get_str(doc, "serviceName").unwrap_or("").to_string(),
            get_str(doc, "realm").unwrap_or("").to_string(),
        ),
    };
    Ok(AuthMetadata {
        source: Source::Acs,
        issuer,
        service_name,
        realm,
        issuing_endpoint,
        signing_keys,
    })
}

/// The parts of an OpenID Connect discovery document that matter here:
/// (issuer, token endpoint, jwks_uri).
pub(crate) fn parse_openid_discovery(
    body: &[u8],
) -> Result<(String, String, String), MetadataError> {
    let doc = object(body)?;
    openid_from(&doc)
}

fn openid_from(doc: &Map<String, Value>) -> Result<(String, String, String), MetadataError> {
    let issuer = get_str(doc, "issuer").unwrap_or("").trim().to_string();
    let token = get_str(doc, "token_endpoint")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(MetadataError::NoIssuingEndpoint)?;
    let jwks = get_str(doc, "jwks_uri")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(MetadataError::NoSigningKey)?;
    Ok((issuer, token.to_string(), jwks.to_string()))
}

/// Signing keys of a JWKS: keys with `use` `sig` (or none) and an `x5c`, each
/// with the `issuer` it carries, if any.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<Vec<SigningKey>, MetadataError> {
    let doc = object(body)?;
    let keys = get(&doc, "keys")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut certs = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let Some(key) = key.as_object() else { continue };
        let usage = get_str(key, "use");
        if usage.is_some() && !eq_ci(usage, "sig") {
            continue;
        }
        if let Some(first) = get(key, "x5c")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
        {
            certs.push(SigningKey {
                der: certificate(i + 1, first)?,
                issuer: get_str(key, "issuer")
                    .map(str::trim)
                    .filter(|i| !i.is_empty())
                    .map(str::to_string),
            });
        }
    }
    if certs.is_empty() {
        return Err(MetadataError::NoSigningKey);
    }
    Ok(certs)
}

/// The tenant id in an OpenID issuer such as `https://login.microsoftonline.com/<id>/v2.0`.
fn realm_of_issuer_url(issuer: &str) -> String {
    issuer
        .split('/')
        .find(|s| crate::guid::is_guid(s))
        .unwrap_or("")
        .to_string()
}

/// Timing and size of a fetch, for observations.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FetchStats {
    pub latency: Duration,
    pub body_bytes: u64,
}

/// GETs one document with a size cap; a failure is the outcome to report.
async fn get_document(
    http: &reqwest::Client,
    url: &str,
    max_body: u64,
    stats: &mut FetchStats,
) -> Result<Vec<u8>, Outcome> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        Outcome::critical(
            Category::Protocol,
            format!("`{}` is not a URL: {e}", crate::human::text::peer(url)),
        )
    })?;
    let start = tokio::time::Instant::now();
    let mut response = http
        .get(parsed.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| Outcome::request_failure(&e, &format!("GET {}", without_userinfo(&parsed))))?;
    let status = response.status();
    if !status.is_success() {
        return Err(Outcome::critical(
            Category::Protocol,
            format!(
                "GET {} answered HTTP {}",
                without_userinfo(&parsed),
                status.as_u16()
            ),
        ));
    }
    let body = read_capped(&mut response, max_body)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(_) => too_large(&parsed, max_body),
            BodyError::Read(e) => {
                Outcome::request_failure(&e, &format!("reading {}", without_userinfo(&parsed)))
            }
        })?;
    stats.latency += start.elapsed();
    stats.body_bytes += body.len() as u64;
    Ok(body)
}

fn too_large(url: &reqwest::Url, max: u64) -> Outcome {
    Outcome::critical(
        Category::Protocol,
        format!(
            "{} is larger than max_body ({})",
            without_userinfo(url),
            ByteSize(max)
        ),
    )
}

fn bad_document(url: &str, e: MetadataError) -> Outcome {
    let url = crate::human::text::peer(url);
    Outcome::critical(Category::Protocol, format!("{url}: {e}"))
}

/// Fetches and parses the metadata at `url`, ACS or OpenID (then its JWKS,
/// if it is on `url`'s origin or one of `jwks_hosts`).
pub(crate) async fn fetch(
    http: &reqwest::Client,
    url: &str,
    max_body: u64,
    jwks_hosts: &[String],
) -> Result<(AuthMetadata, FetchStats), Outcome> {
    let mut stats = FetchStats::default();
    let body = get_document(http, url, max_body, &mut stats).await?;
    let doc = object(&body).map_err(|e| bad_document(url, e))?;
    if !is_openid(&doc) {
        let meta = acs_from(&doc).map_err(|e| bad_document(url, e))?;
        return Ok((meta, stats));
    }
    let (issuer, token_endpoint, jwks_uri) = openid_from(&doc).map_err(|e| bad_document(url, e))?;
    // A relative jwks_uri resolves against the discovery document's address.
    let jwks_url = reqwest::Url::parse(url)
        .and_then(|base| Ok((base.join(&jwks_uri)?, base)))
        .map_err(|e| {
            let shown: String = jwks_uri.chars().take(200).collect();
            Outcome::critical(
                Category::Protocol,
                format!("{url}: jwks_uri `{shown}` is not a URL: {e}"),
            )
        })
        .and_then(|(jwks, base)| {
            if origin_allowed(&base, &jwks, jwks_hosts) {
                return Ok(jwks.to_string());
            }
            let origin = jwks.origin().ascii_serialization();
            Err(Outcome::critical(
                Category::Protocol,
                format!(
                    "{url}: jwks_uri is on {origin}, not on the document's origin {}; \
                     not fetched (add \"{origin}\" to jwks_hosts to allow it)",
                    base.origin().ascii_serialization()
                ),
            ))
        })?;
    let keys = get_document(http, &jwks_url, max_body, &mut stats).await?;
    let signing_keys = parse_jwks(&keys).map_err(|e| bad_document(&jwks_url, e))?;
    Ok((
        AuthMetadata {
            source: Source::OpenId,
            realm: realm_of_issuer_url(&issuer),
            service_name: String::new(),
            issuer,
            issuing_endpoint: token_endpoint,
            signing_keys,
        },
        stats,
    ))
}

pub(crate) struct MetadataProbe {
    url: String,
    jwks_hosts: Vec<String>,
    expect_realm: Option<String>,
    expect_issuer: Option<String>,
    warn_before: i64,
    critical_before: i64,
    max_body: u64,
    http: reqwest::Client,
}

impl MetadataProbe {
    pub(crate) fn new(cfg: &MetadataConfig, base_dir: &Path) -> Result<Self, BuildError> {
        if let Some(p) = cfg.validate().into_iter().next() {
            return Err(p.into());
        }
        let ca_file = cfg.ca_file.as_ref().map(|f| base_dir.join(f));
        Ok(MetadataProbe {
            url: cfg.url.clone(),
            jwks_hosts: cfg.jwks_hosts.clone(),
            expect_realm: cfg.expect_realm.clone(),
            expect_issuer: cfg.expect_issuer.clone(),
            warn_before: cfg.warn_before.as_secs() as i64,
            critical_before: cfg.critical_before.as_secs() as i64,
            max_body: cfg.max_body.0,
            http: crate::net::http::Clients::process()
                .probe_client(cfg.verify, ca_file.as_deref())
                .map_err(|m| BuildError::tls(cfg.ca_file.is_some(), m))?,
        })
    }

    async fn check(&self, ctx: &ProbeContext) -> Outcome {
        ctx.progress.phase(Phase::MetadataFetch);
        let (doc, stats) = match fetch(&self.http, &self.url, self.max_body, &self.jwks_hosts).await
        {
            Ok(x) => x,
            Err(o) => return o,
        };
        let now = ctx.clock.now().timestamp();
        judge(doc, stats, now, &self.expect())
    }
}

/// What the metadata probe compares a document with.
struct Expect<'a> {
    realm: Option<&'a str>,
    issuer: Option<&'a str>,
    warn_before: i64,
    critical_before: i64,
}

impl MetadataProbe {
    fn expect(&self) -> Expect<'_> {
        Expect {
            realm: self.expect_realm.as_deref().map(str::trim),
            issuer: self.expect_issuer.as_deref().map(str::trim),
            warn_before: self.warn_before,
            critical_before: self.critical_before,
        }
    }
}

/// A signing key's validity, for judging.
struct KeyDates {
    not_before: i64,
    not_after: i64,
    x5t: String,
}

fn judge(doc: AuthMetadata, stats: FetchStats, now: i64, p: &Expect<'_>) -> Outcome {
    let mut findings: Vec<Outcome> = Vec::new();
    // Multi-tenant discovery is read for the expected tenant, if one is named;
    // a tenant's own discovery binds its keys to that tenant.
    let tenant = match (doc.source, p.realm) {
        (Source::OpenId, Some(want)) if crate::guid::is_guid(want) && has_template(&doc.issuer) => {
            Some(want.to_string())
        }
        (Source::OpenId, _) if crate::guid::is_guid(&doc.realm) => Some(doc.realm.clone()),
        _ => None,
    };
    let (doc, foreign) = match tenant {
        Some(t) => doc.for_tenant(&t),
        None => (doc, 0),
    };
    if doc.names_no_tenant() {
        findings.push(Outcome::warning(
            Category::Config,
            match doc.source {
                Source::Acs => NO_REALM.to_string(),
                Source::OpenId => format!(
                    "the discovery document names no tenant (issuer `{}`): use the tenant's own …/<tenant>/v2.0/.well-known/openid-configuration, or set expect_realm to the tenant id",
                    clip(&doc.issuer)
                ),
            },
        ));
    } else if let Some(want) = p.realm {
        if !doc.realm.eq_ignore_ascii_case(want) {
            findings.push(Outcome::critical(
                Category::Protocol,
                format!("realm is `{}`, expected `{want}`", clip(&doc.realm)),
            ));
        }
    }
    if let Some(want) = p.issuer {
        if doc.issuer != want {
            findings.push(Outcome::critical(
                Category::Protocol,
                format!("issuer is `{}`, expected `{want}`", clip(&doc.issuer)),
            ));
        }
    }
    if doc.signing_keys.is_empty() {
        findings.push(Outcome::critical(
            Category::Protocol,
            format!(
                "no signing key for tenant {}: the document's {foreign} key{} bound to other tenants",
                doc.realm,
                if foreign == 1 { " is" } else { "s are" }
            ),
        ));
    }
    let dates: Vec<KeyDates> = doc
        .signing_keys
        .iter()
        .filter_map(|k| {
            let (_, c) = x509_parser::parse_x509_certificate(&k.der).ok()?;
            Some(KeyDates {
                not_before: c.validity().not_before.timestamp(),
                not_after: c.validity().not_after.timestamp(),
                x5t: crate::jwt::x5t(&k.der),
            })
        })
        .collect();
    // The STS rolls its keys: one expiring among several valid ones is normal.
    // The newest usable key decides; without one, the newest key says why.
    let usable = dates
        .iter()
        .filter(|k| k.not_before <= now && now < k.not_after)
        .max_by_key(|k| k.not_after);
    let mut left = None;
    match usable {
        Some(k) => {
            let secs = k.not_after - now;
            left = Some(secs);
            let text = || {
                format!(
                    "the STS's signing key {} expires in {} ({}){}",
                    k.x5t,
                    format_duration(secs),
                    rfc3339(k.not_after),
                    if dates.len() > 1 {
                        " and it is the newest of its keys"
                    } else {
                        ""
                    }
                )
            };
            if secs <= p.critical_before {
                findings.push(Outcome::critical(Category::Certificate, text()));
            } else if secs <= p.warn_before {
                findings.push(Outcome::warning(Category::Certificate, text()));
            }
        }
        None => {
            if let Some(k) = dates.iter().max_by_key(|k| k.not_after) {
                let secs = k.not_after - now;
                left = Some(secs);
                findings.push(Outcome::critical(
                    Category::Certificate,
                    if now < k.not_before {
                        format!(
                            "the STS's signing key {} is not valid until {}",
                            k.x5t,
                            rfc3339(k.not_before)
                        )
                    } else {
                        format!(
                            "every signing key of the STS has expired: the newest, {}, {} ago ({})",
                            k.x5t,
                            format_duration(-secs),
                            rfc3339(k.not_after)
                        )
                    },
                ));
            }
        }
    }
    let kind = match doc.source {
        Source::Acs => "ACS metadata",
        Source::OpenId => "OpenID metadata",
    };
    let keys = doc.signing_keys.len();
    let mut outcome = match findings.into_iter().max_by_key(|o| o.status.severity()) {
        Some(o) => o,
        None => Outcome::ok(format!(
            "{kind} for realm {} in {} ms: {keys} signing key{}, issuing endpoint {}{}",
            if doc.realm.is_empty() {
                "(none)".to_string()
            } else {
                clip(&doc.realm)
            },
            stats.latency.as_millis(),
            if keys == 1 { "" } else { "s" },
            clip(&doc.issuing_endpoint),
            left.map(|s| format!(", newest key expires in {}", format_duration(s)))
                .unwrap_or_default(),
        )),
    };
    outcome.observe("latency_seconds", stats.latency.as_secs_f64());
    outcome.observe("body_bytes", stats.body_bytes as f64);
    outcome.observe("signing_keys", keys as f64);
    if let Some(s) = left {
        outcome.observe("seconds_left", s as f64);
    }
    outcome
}

/// Text from the document as a summary may quote it: escaped and clipped.
fn clip(s: &str) -> String {
    crate::human::text::peer(s)
}

impl Probe for MetadataProbe {
    fn run<'a>(&'a self, ctx: &'a ProbeContext) -> BoxFuture<'a, Outcome> {
        Box::pin(self.check(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cert_b64() -> String {
        let g = crate::credential::generate_self_signed("acs", 2048, 1_700_000_000, 1_900_000_000)
            .unwrap();
        base64::engine::general_purpose::STANDARD.encode(g.credential.cert_der())
    }

    fn acs(keys: Value, endpoints: Value, extra: Value) -> Vec<u8> {
        let mut doc = json!({"version": "1.0", "keys": keys, "endpoints": endpoints});
        for (k, v) in extra.as_object().unwrap() {
            doc[k] = v.clone();
        }
        doc.to_string().into_bytes()
    }

    #[test]
    fn reads_the_documented_acs_document_in_any_case() {
        let cert = cert_b64();
        let body = acs(
            json!([
                {"usage": "encryption", "keyInfo": {"x5t": "a"}, "keyValue": {"type": "x509Certificate", "value": cert}},
                {"Usage": "Signing", "keyinfo": {"x5t": "b"}, "KeyValue": {"Type": "x509certificate", "Value": cert}},
                {"usage": "signing", "keyValue": {"type": "x509Certificate", "value": ""}}
            ]),
            json!([
                {"location": "https://sts/t/tokens/delegation/1", "protocol": "DelegationIssuance1.0", "usage": "issuance"},
                {"location": "https://sts/t/tokens/OAuth/2", "protocol": "oauth2", "usage": "Issuance"},
                {"location": "https://sts/t/tokens/OAuth/3", "protocol": "OAuth2", "usage": "issuance"}
            ]),
            json!({"issuer": "00000001-0000-0000-c000-000000000000@3f2b6a4e-0000-4000-8000-000000000001", "realm": "ignored"}),
        );
        let m = parse_acs(&body).unwrap();
        assert_eq!(m.signing_keys.len(), 1);
        assert_eq!(m.issuing_endpoint, "https://sts/t/tokens/OAuth/2");
        assert_eq!(m.service_name, "00000001-0000-0000-c000-000000000000");
        assert_eq!(m.realm, "3f2b6a4e-0000-4000-8000-000000000001");
        // No issuer: serviceName/realm fall back.
        let body = acs(
            json!([{"usage": "signing", "keyValue": {"type": "x509Certificate", "value": cert}}]),
            json!([{"location": "https://sts/x", "protocol": "OAuth2", "usage": "issuance"}]),
            json!({"realm": "r", "serviceName": "s"}),
        );
        let m = parse_acs(&body).unwrap();
        assert_eq!(
            (m.realm.as_str(), m.service_name.as_str(), m.issuer.as_str()),
            ("r", "s", "")
        );
    }

    #[test]
    fn each_broken_document_has_its_own_error() {
        let cert = cert_b64();
        let ok_keys =
            json!([{"usage": "signing", "keyValue": {"type": "x509Certificate", "value": cert}}]);
        let ok_eps =
            json!([{"location": "https://sts/x", "protocol": "OAuth2", "usage": "issuance"}]);
        assert_eq!(parse_acs(b"").unwrap_err(), MetadataError::Empty);
        assert_eq!(parse_acs(b"  \n").unwrap_err(), MetadataError::Empty);
        assert!(matches!(
            parse_acs(b"{\"keys\": [").unwrap_err(),
            MetadataError::InvalidJson(_)
        ));
        assert_eq!(parse_acs(b"[]").unwrap_err(), MetadataError::NotAnObject);
        assert_eq!(parse_acs(b"{}").unwrap_err(), MetadataError::UnknownShape);
        assert_eq!(
            parse_acs(&acs(json!([]), ok_eps.clone(), json!({}))).unwrap_err(),
            MetadataError::NoSigningKey
        );
        assert_eq!(
            parse_acs(&acs(ok_keys.clone(), json!([{"location": "https://sts/d", "protocol": "DelegationIssuance1.0", "usage": "issuance"}]), json!({}))).unwrap_err(),
            MetadataError::NoIssuingEndpoint
        );
        let bad = json!([{"usage": "signing", "keyValue": {"type": "x509Certificate", "value": "bm90IGEgY2VydA=="}}]);
        assert!(matches!(
            parse_acs(&acs(bad, ok_eps, json!({}))).unwrap_err(),
            MetadataError::BadKey { index: 1, .. }
        ));
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend(acs(
            ok_keys,
            json!([{"location": "https://sts/x", "protocol": "OAuth2", "usage": "issuance"}]),
            json!({}),
        ));
        assert!(parse_acs(&bom).is_ok());
    }

    #[test]
    fn jwks_only_from_the_documents_origin_or_an_allowed_one() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        let disc = url("https://login.example/t/v2.0/.well-known/openid-configuration");
        let allowed = vec![
            "https://keys.example".to_string(),
            "http://10.0.0.9:8080".into(),
        ];
        for ok in [
            "https://login.example/t/keys",
            "https://LOGIN.example:443/k",
            "https://keys.example/k",
            "http://10.0.0.9:8080/k",
        ] {
            assert!(origin_allowed(&disc, &url(ok), &allowed), "{ok}");
        }
        for refused in [
            "http://login.example/k",
            "https://login.example:8443/k",
            "https://login.example.evil/k",
            "https://169.254.169.254/latest/meta-data",
            "http://10.0.0.9/k",
            "https://keys.example:8443/k",
            "file:///etc/passwd",
            "data:application/json,{}",
        ] {
            assert!(!origin_allowed(&disc, &url(refused), &allowed), "{refused}");
        }
        assert!(!origin_allowed(&disc, &url("https://keys.example/k"), &[]));
    }

    #[test]
    fn jwks_hosts_are_origins() {
        let problems = |hosts: &[&str]| {
            let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
            validate_jwks_hosts(&hosts)
                .into_iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect::<Vec<_>>()
        };
        assert!(problems(&["https://keys.example", "http://127.0.0.1:8080"]).is_empty());
        let bad = problems(&[
            "keys.example",
            "https://keys.example/",
            "https://keys.example/keys",
            "ftp://keys.example",
            "https://u:p@keys.example",
        ]);
        assert_eq!(bad.len(), 5, "{bad:?}");
        assert!(bad[0].starts_with("jwks_hosts: entry 0, `keys.example`, is not an origin"));
        assert!(bad[2]
            .starts_with("jwks_hosts: entry 2, `https://keys.example/keys`, must be an origin"));
    }

    /// A discovery document whose `jwks_uri` names another host: the probe
    /// answers a protocol error naming that host, and the host sees no request.
    #[tokio::test]
    async fn a_jwks_uri_on_another_host_is_not_fetched() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other_addr = other.local_addr().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Another origin: the same loopback address, another port.
        let doc = json!({
            "issuer": "https://login.example/3f2b6a4e-0000-4000-8000-000000000001/v2.0",
            "token_endpoint": format!("http://{addr}/t"),
            "jwks_uri": format!("http://{other_addr}/keys"),
        })
        .to_string();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    doc.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(doc.as_bytes()).await;
            }
        });
        let http = reqwest::Client::new();
        let url = format!("http://{addr}/.well-known/openid-configuration");
        let o = fetch(&http, &url, 65_536, &[]).await.unwrap_err();
        assert_eq!(o.category, Some(Category::Protocol), "{o:?}");
        assert!(
            o.summary
                .contains(&format!("jwks_uri is on http://{other_addr}")),
            "{}",
            o.summary
        );
        assert!(o.summary.contains("jwks_hosts"), "{}", o.summary);
        // Nothing connected to the other host.
        let accepted =
            tokio::time::timeout(std::time::Duration::from_millis(200), other.accept()).await;
        assert!(accepted.is_err(), "the other host was contacted");
        // Allowed, it is fetched (and here answers nothing useful).
        let allowed = vec![format!("http://{other_addr}")];
        let fetched = tokio::spawn(async move { fetch(&http, &url, 65_536, &allowed).await });
        let (s, _) = tokio::time::timeout(std::time::Duration::from_secs(5), other.accept())
            .await
            .expect("an allowed origin is fetched")
            .unwrap();
        drop(s);
        assert!(fetched.await.unwrap().is_err());
    }

    #[test]
    fn reads_openid_discovery_and_jwks() {
        let cert = cert_b64();
        let disc = json!({"issuer": "https://login.example/3f2b6a4e-0000-4000-8000-000000000001/v2.0", "token_endpoint": "https://login.example/t", "jwks_uri": "https://login.example/k"});
        let doc = object(disc.to_string().as_bytes()).unwrap();
        assert!(is_openid(&doc));
        let (issuer, token, jwks) = parse_openid_discovery(disc.to_string().as_bytes()).unwrap();
        assert_eq!(
            (token.as_str(), jwks.as_str()),
            ("https://login.example/t", "https://login.example/k")
        );
        assert_eq!(
            realm_of_issuer_url(&issuer),
            "3f2b6a4e-0000-4000-8000-000000000001"
        );
        assert_eq!(
            parse_openid_discovery(
                json!({"issuer": "x", "jwks_uri": "k"})
                    .to_string()
                    .as_bytes()
            )
            .unwrap_err(),
            MetadataError::NoIssuingEndpoint
        );
        let keys = json!({"keys": [
            {"kty": "RSA", "use": "enc", "x5c": [cert]},
            {"kty": "RSA", "use": "sig", "kid": "a", "x5c": [cert]},
            {"kty": "RSA", "kid": "b", "x5c": [cert]},
            {"kty": "RSA", "use": "sig", "kid": "c"}
        ]});
        assert_eq!(parse_jwks(keys.to_string().as_bytes()).unwrap().len(), 2);
        assert_eq!(
            parse_jwks(br#"{"keys": []}"#).unwrap_err(),
            MetadataError::NoSigningKey
        );
    }

    /// Recorded real shapes (tests/fixtures/exchange), judged at 2026-05-28.
    const NOW: i64 = 1_779_926_400;
    const TENANT: &str = "3f2b6a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
    const OTHER_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
    const ACS_NO_REALM: &[u8] =
        include_bytes!("../../tests/fixtures/exchange/acs-metadata-no-realm.json");
    const ACS_WITH_REALM: &[u8] = include_bytes!("../../tests/fixtures/exchange/acs-metadata.json");
    const COMMON_DISCOVERY: &[u8] =
        include_bytes!("../../tests/fixtures/exchange/entra-common-openid-configuration.json");
    const TENANT_DISCOVERY: &[u8] =
        include_bytes!("../../tests/fixtures/exchange/entra-tenant-openid-configuration.json");
    const JWKS_PER_KEY_ISSUERS: &[u8] =
        include_bytes!("../../tests/fixtures/exchange/entra-jwks-per-key-issuers.json");

    fn expect(realm: Option<&str>) -> Expect<'_> {
        Expect {
            realm,
            issuer: None,
            warn_before: 30 * 86_400,
            critical_before: 7 * 86_400,
        }
    }

    /// What `fetch` makes of a discovery document and its JWKS.
    fn openid(discovery: &[u8], jwks: &[u8]) -> AuthMetadata {
        let (issuer, token, _) = parse_openid_discovery(discovery).unwrap();
        AuthMetadata {
            source: Source::OpenId,
            realm: realm_of_issuer_url(&issuer),
            service_name: String::new(),
            issuer,
            issuing_endpoint: token,
            signing_keys: parse_jwks(jwks).unwrap(),
        }
    }

    #[test]
    fn the_realm_less_acs_document_is_a_configuration_warning() {
        let doc = parse_acs(ACS_NO_REALM).unwrap();
        assert_eq!(doc.realm, "*");
        assert_eq!(doc.signing_keys.len(), 3);
        assert_eq!(
            doc.issuing_endpoint,
            "https://accounts.accesscontrol.windows.net/tokens/OAuth/2"
        );
        assert!(doc.names_no_tenant());
        for want in [None, Some(TENANT)] {
            let o = judge(doc.clone(), FetchStats::default(), NOW, &expect(want));
            assert_eq!(o.status, Status::Warning, "{o:?}");
            assert_eq!(o.category, Some(Category::Config), "{o:?}");
            assert_eq!(
                o.summary,
                "the metadata names no tenant: AuthMetadataUrl must end with ?realm=<tenant>"
            );
        }
        // With the realm the same keys and endpoints are healthy.
        let doc = parse_acs(ACS_WITH_REALM).unwrap();
        assert!(!doc.names_no_tenant());
        let o = judge(doc, FetchStats::default(), NOW, &expect(Some(TENANT)));
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(o.summary.contains(&format!("realm {TENANT}")), "{o:?}");
    }

    use crate::outcome::Status;

    #[test]
    fn the_newest_usable_sts_key_decides_not_the_first_to_expire() {
        // Key 1 expires in 13 days, keys 2 and 3 in 2028: the STS is rolling its keys.
        let doc = parse_acs(ACS_WITH_REALM).unwrap();
        let o = judge(doc.clone(), FetchStats::default(), NOW, &expect(None));
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(o.summary.contains("3 signing keys"), "{o:?}");
        assert!(o.summary.contains("newest key expires in"), "{o:?}");
        assert!(o.observations["seconds_left"] > 800.0 * 86_400.0, "{o:?}");
        // 2028-08-20: keys 1 and 2 have expired, the newest has 12 days left.
        let o = judge(
            doc.clone(),
            FetchStats::default(),
            1_850_342_400,
            &expect(None),
        );
        assert_eq!(o.status, Status::Warning, "{o:?}");
        assert_eq!(o.category, Some(Category::Certificate));
        assert!(o.summary.starts_with("the STS's signing key "), "{o:?}");
        assert!(o.summary.contains("expires in 12d"), "{o:?}");
        assert!(o.summary.contains("newest of its keys"), "{o:?}");
        // 2028-10-01: every key has expired.
        let o = judge(doc, FetchStats::default(), 1_853_971_200, &expect(None));
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert_eq!(o.category, Some(Category::Certificate));
        assert!(
            o.summary
                .starts_with("every signing key of the STS has expired: the newest, "),
            "{o:?}"
        );
    }

    #[test]
    fn common_discovery_is_read_for_the_expected_tenant_only() {
        let doc = openid(COMMON_DISCOVERY, JWKS_PER_KEY_ISSUERS);
        assert_eq!(
            doc.issuer,
            "https://login.microsoftonline.com/{tenantid}/v2.0"
        );
        assert!(doc.names_no_tenant());
        assert_eq!(doc.signing_keys.len(), 4);
        // No tenant to read it for: a configuration warning.
        let o = judge(doc.clone(), FetchStats::default(), NOW, &expect(None));
        assert_eq!(o.status, Status::Warning, "{o:?}");
        assert_eq!(o.category, Some(Category::Config), "{o:?}");
        assert!(o.summary.starts_with("the discovery document names no tenant (issuer `https://login.microsoftonline.com/{tenantid}/v2.0`)"), "{o:?}");
        // For the tenant: {tenantid} substituted, another tenant's key dropped.
        let (bound, dropped) = doc.clone().for_tenant(TENANT);
        assert_eq!(
            bound.issuer,
            format!("https://login.microsoftonline.com/{TENANT}/v2.0")
        );
        assert_eq!((bound.signing_keys.len(), dropped), (3, 1));
        assert!(!bound.names_no_tenant());
        let o = judge(
            doc.clone(),
            FetchStats::default(),
            NOW,
            &expect(Some(TENANT)),
        );
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(o.summary.contains("3 signing keys"), "{o:?}");
        // The other tenant keeps its own key and the template ones.
        let (other, dropped) = doc.for_tenant(OTHER_TENANT);
        assert_eq!((other.signing_keys.len(), dropped), (4, 0));
    }

    #[test]
    fn a_tenant_s_discovery_binds_its_keys_to_that_tenant() {
        let doc = openid(TENANT_DISCOVERY, JWKS_PER_KEY_ISSUERS);
        assert_eq!(doc.realm, TENANT);
        let o = judge(doc, FetchStats::default(), NOW, &expect(Some(TENANT)));
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(o.summary.contains("3 signing keys"), "{o:?}");
        // A key set whose keys all belong to another tenant signs nothing here.
        let foreign = json!({"keys": [{"kty": "RSA", "use": "sig", "x5c": [cert_b64()],
            "issuer": format!("https://login.microsoftonline.com/{OTHER_TENANT}/v2.0")}]});
        let doc = openid(TENANT_DISCOVERY, foreign.to_string().as_bytes());
        let o = judge(doc, FetchStats::default(), NOW, &expect(Some(TENANT)));
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert_eq!(o.category, Some(Category::Protocol), "{o:?}");
        assert!(
            o.summary.contains(&format!(
                "no signing key for tenant {TENANT}: the document's 1 key is bound to other tenants"
            )),
            "{o:?}"
        );
    }

    #[test]
    fn the_tenant_template_is_substituted_in_any_case() {
        assert_eq!(
            substitute_tenant("https://x/{TenantId}/v2.0", "t"),
            "https://x/t/v2.0"
        );
        assert_eq!(substitute_tenant("{tenantid}{tenantid}", "a"), "aa");
        assert_eq!(substitute_tenant("no template", "a"), "no template");
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic_on_any_bytes(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_acs(&body);
            let _ = parse_jwks(&body);
            let _ = parse_openid_discovery(&body);
        }

        #[test]
        fn parsers_never_panic_on_json_shaped_text(body in "[{}\\[\\]\":, a-zA-Z0-9@/.]{0,300}") {
            let _ = parse_acs(body.as_bytes());
            let _ = parse_jwks(body.as_bytes());
            let _ = parse_openid_discovery(body.as_bytes());
        }
    }
}
