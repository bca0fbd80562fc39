//! `kind = "metadata"`: the auth-metadata document that tells on-premises
//! Exchange where the cloud STS issues tokens and which keys sign them.
//!
//! Reads the ACS JSON document (`/metadata/json/1/?realm=…` or the realm in the
//! path) and OpenID Connect discovery (`/.well-known/openid-configuration`, then
//! its `jwks_uri`), with the rules Exchange applies: names matched without
//! regard to case, signing keys are `x509Certificate` values with usage
//! `signing`, the issuing endpoint is the first `OAuth2` `issuance` endpoint,
//! service name and realm come from `issuer`. Then it checks the expected realm
//! and issuer and the signing certificates' validity. `fetch` is shared with the
//! `token` kind, which reads the same document to find where to ask.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

use futures::future::BoxFuture;

use crate::human::{format_duration, rfc3339, ByteSize};
use crate::net::http::{read_capped, without_userinfo, BodyError};
use crate::outcome::{Category, Outcome, Probe, ProbeContext};
use crate::spec::SpecProblem;

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
}

impl MetadataConfig {
    pub fn validate(&self) -> Vec<SpecProblem> {
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
        p
    }
}

/// Which kind of document the metadata came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Acs,
    OpenId,
}

/// What the chain needs from the metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthMetadata {
    pub source: Source,
    /// `issuer` as written (empty when the document has none).
    pub issuer: String,
    /// The part of `issuer` before `@` (ACS), e.g. `00000001-0000-0000-c000-000000000000`.
    pub service_name: String,
    /// The tenant id: after `@` in an ACS issuer, a GUID in an OpenID issuer's path.
    pub realm: String,
    /// Where tokens are requested.
    pub issuing_endpoint: String,
    /// DER certificates whose keys sign the STS's tokens.
    pub signing_certs: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
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
pub fn is_openid(doc: &Map<String, Value>) -> bool {
    get(doc, "endpoints").is_none()
        && (get(doc, "token_endpoint").is_some() || get(doc, "jwks_uri").is_some())
}

/// The ACS JSON document.
pub fn parse_acs(body: &[u8]) -> Result<AuthMetadata, MetadataError> {
    let doc = object(body)?;
    acs_from(&doc)
}

fn acs_from(doc: &Map<String, Value>) -> Result<AuthMetadata, MetadataError> {
    if get(doc, "keys").is_none() && get(doc, "endpoints").is_none() {
        return Err(MetadataError::UnknownShape);
    }
    let mut signing_certs = Vec::new();
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
            signing_certs.push(certificate(i + 1, text)?);
        }
    }
    if signing_certs.is_empty() {
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
        signing_certs,
    })
}

/// The parts of an OpenID Connect discovery document that matter here:
/// (issuer, token endpoint, jwks_uri).
pub fn parse_openid_discovery(body: &[u8]) -> Result<(String, String, String), MetadataError> {
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

/// Signing certificates of a JWKS: keys with `use` `sig` (or none) and an `x5c`.
pub fn parse_jwks(body: &[u8]) -> Result<Vec<Vec<u8>>, MetadataError> {
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
            certs.push(certificate(i + 1, first)?);
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
pub struct FetchStats {
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
            format!(
                "`{}` is not a URL: {e}",
                url.chars().take(200).collect::<String>()
            ),
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
    let url: String = url.chars().take(200).collect();
    Outcome::critical(Category::Protocol, format!("{url}: {e}"))
}

/// Fetches and parses the metadata at `url`, ACS or OpenID (then its JWKS).
pub async fn fetch(
    http: &reqwest::Client,
    url: &str,
    max_body: u64,
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
        .and_then(|base| base.join(&jwks_uri))
        .map(|u| u.to_string())
        .unwrap_or(jwks_uri);
    let keys = get_document(http, &jwks_url, max_body, &mut stats).await?;
    let signing_certs = parse_jwks(&keys).map_err(|e| bad_document(&jwks_url, e))?;
    Ok((
        AuthMetadata {
            source: Source::OpenId,
            realm: realm_of_issuer_url(&issuer),
            service_name: String::new(),
            issuer,
            issuing_endpoint: token_endpoint,
            signing_certs,
        },
        stats,
    ))
}

pub struct MetadataProbe {
    url: String,
    expect_realm: Option<String>,
    expect_issuer: Option<String>,
    warn_before: i64,
    critical_before: i64,
    max_body: u64,
    http: reqwest::Client,
}

impl MetadataProbe {
    pub fn new(cfg: &MetadataConfig, base_dir: &Path) -> Result<Self, String> {
        if let Some(p) = cfg.validate().into_iter().next() {
            return Err(format!("{}: {}", p.key, p.message));
        }
        let ca_file = cfg.ca_file.as_ref().map(|f| base_dir.join(f));
        Ok(MetadataProbe {
            url: cfg.url.clone(),
            expect_realm: cfg.expect_realm.clone(),
            expect_issuer: cfg.expect_issuer.clone(),
            warn_before: cfg.warn_before.as_secs() as i64,
            critical_before: cfg.critical_before.as_secs() as i64,
            max_body: cfg.max_body.0,
            http: crate::net::http::Clients::process()
                .probe_client(cfg.verify, ca_file.as_deref())?,
        })
    }

    async fn check(&self, ctx: &ProbeContext) -> Outcome {
        let (doc, stats) = match fetch(&self.http, &self.url, self.max_body).await {
            Ok(x) => x,
            Err(o) => return o,
        };
        let now = ctx.clock.now().timestamp();
        judge(&doc, stats, now, self)
    }
}

fn judge(doc: &AuthMetadata, stats: FetchStats, now: i64, p: &MetadataProbe) -> Outcome {
    let mut findings: Vec<Outcome> = Vec::new();
    if let Some(want) = &p.expect_realm {
        if !doc.realm.eq_ignore_ascii_case(want.trim()) {
            findings.push(Outcome::critical(
                Category::Protocol,
                format!("realm is `{}`, expected `{want}`", clip(&doc.realm)),
            ));
        }
    }
    if let Some(want) = &p.expect_issuer {
        if doc.issuer != want.trim() {
            findings.push(Outcome::critical(
                Category::Protocol,
                format!("issuer is `{}`, expected `{want}`", clip(&doc.issuer)),
            ));
        }
    }
    // The signing certificate that expires first decides, as in a chain.
    let mut earliest: Option<(i64, i64, String)> = None;
    for der in &doc.signing_certs {
        if let Ok((_, c)) = x509_parser::parse_x509_certificate(der) {
            let (nb, na) = (
                c.validity().not_before.timestamp(),
                c.validity().not_after.timestamp(),
            );
            if earliest.as_ref().is_none_or(|(_, e, _)| na < *e) {
                earliest = Some((nb, na, crate::jwt::x5t(der)));
            }
        }
    }
    let mut left = None;
    if let Some((nb, na, x5t)) = earliest {
        let secs = na - now;
        left = Some(secs);
        if now < nb {
            findings.push(Outcome::critical(
                Category::Certificate,
                format!(
                    "signing certificate {x5t} is not valid until {}",
                    rfc3339(nb)
                ),
            ));
        } else if secs <= 0 {
            findings.push(Outcome::critical(
                Category::Certificate,
                format!(
                    "signing certificate {x5t} expired {} ago ({})",
                    format_duration(-secs),
                    rfc3339(na)
                ),
            ));
        } else if secs <= p.critical_before {
            findings.push(Outcome::critical(
                Category::Certificate,
                format!(
                    "signing certificate {x5t} expires in {} ({})",
                    format_duration(secs),
                    rfc3339(na)
                ),
            ));
        } else if secs <= p.warn_before {
            findings.push(Outcome::warning(
                Category::Certificate,
                format!(
                    "signing certificate {x5t} expires in {} ({})",
                    format_duration(secs),
                    rfc3339(na)
                ),
            ));
        }
    }
    let kind = match doc.source {
        Source::Acs => "ACS metadata",
        Source::OpenId => "OpenID metadata",
    };
    let keys = doc.signing_certs.len();
    let mut outcome = match findings.into_iter().max_by_key(|o| o.status.severity()) {
        Some(o) => o,
        None => Outcome::ok(format!(
            "{kind} for realm {} in {} ms: {keys} signing key{}, issuing endpoint {}{}",
            if doc.realm.is_empty() {
                "(none)"
            } else {
                &doc.realm
            },
            stats.latency.as_millis(),
            if keys == 1 { "" } else { "s" },
            clip(&doc.issuing_endpoint),
            left.map(|s| format!(", first key expires in {}", format_duration(s)))
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

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
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
        assert_eq!(m.signing_certs.len(), 1);
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
