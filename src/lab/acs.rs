//! The lab's ACS: the auth-metadata document (ACS JSON, realm-less when `realm`
//! is missing, and the OpenID Connect discovery + JWKS variant, multi-tenant on
//! `common`/`organizations`) and the token endpoints (ACS S2S jwt-bearer, and
//! Entra v2 client credentials, refused on `common`), which verify the client
//! assertion's RS256 signature against the registered credentials and answer
//! with the real services' error codes.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use serde_json::{json, Value};

use super::{
    delay, Lab, MetadataFault, ACCESS_TOKEN_SECONDS, ACS_APP_ID, ALLOWED_SKEW_SECONDS,
    EXCHANGE_APP_ID,
};
use crate::jwt;

pub(crate) fn routes() -> Router<Lab> {
    Router::new()
        .route("/metadata/json/1", get(acs_metadata))
        .route("/metadata/json/1/", get(acs_metadata))
        .route("/{tenant}/metadata/json/1", get(acs_metadata_in_path))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(jwks))
        .route("/{tenant}/tokens/OAuth/2", post(acs_token))
        .route("/tokens/OAuth/2", post(acs_token_without_realm))
        .route("/{tenant}/oauth2/v2.0/token", post(entra_token))
}

/// `http://<Host>` of the request, as the client addressed the lab.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

fn authority(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string()
}

/// True when `realm` names this lab's tenant, by id or by domain.
fn is_our_realm(lab: &Lab, realm: &str) -> bool {
    let s = lab.state();
    realm.eq_ignore_ascii_case(&s.tenant_id) || realm.eq_ignore_ascii_case(&s.tenant_domain)
}

fn http_date(unix: i64) -> HeaderValue {
    let t = chrono::DateTime::from_timestamp(unix, 0).unwrap_or_default();
    HeaderValue::from_str(&t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// Serves a metadata body, or the injected fault instead.
fn metadata_response(lab: &Lab, doc: Value) -> Response {
    let fault = lab.state().faults.metadata;
    let body = match fault {
        Some(MetadataFault::ServerError) => {
            return (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response()
        }
        Some(MetadataFault::Empty) => String::new(),
        Some(MetadataFault::InvalidJson) => {
            let text = doc.to_string();
            text[..text.len() / 2].to_string()
        }
        Some(MetadataFault::NoKeys) => {
            let mut d = doc;
            d["keys"] = json!([]);
            d.to_string()
        }
        Some(MetadataFault::NoIssuingEndpoint) => {
            let mut d = doc;
            if let Some(eps) = d["endpoints"].as_array_mut() {
                eps.retain(|e| e["protocol"] != "OAuth2");
            }
            d.to_string()
        }
        None => doc.to_string(),
    };
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The ACS document. Without a realm it is the shape ACS serves when `?realm=`
/// is missing: `"realm":""`, the issuer `00000001-…@*`, and issuing endpoints
/// without a tenant, where every token request fails.
fn acs_document(lab: &Lab, base: &str, with_realm: bool) -> Value {
    let (realm, prefix) = if with_realm {
        let t = lab.tenant_id();
        (t.clone(), format!("{t}/"))
    } else {
        (String::new(), String::new())
    };
    let issuer_realm = if with_realm { realm.as_str() } else { "*" };
    let der = lab.signer.cert_der();
    let mut doc = json!({
        "version": "1.0",
        "name": "Microsoft Azure ACS",
        "keys": [{
            "usage": "signing",
            "keyInfo": {"x5t": jwt::x5t(der)},
            "keyValue": {
                "type": "x509Certificate",
                "value": base64::engine::general_purpose::STANDARD.encode(der),
            }
        }],
        "endpoints": [
            {"location": format!("{base}/{prefix}tokens/OAuth/2"), "protocol": "OAuth2", "usage": "issuance"},
            {"location": format!("{base}/{prefix}tokens/delegation/1"), "protocol": "DelegationIssuance1.0", "usage": "issuance"},
            {"location": format!("{base}/{prefix}mgmt/delegation/1"), "protocol": "DelegationManagement1.0", "usage": "management"},
        ],
    });
    doc["realm"] = json!(realm);
    doc["issuer"] = json!(format!("{ACS_APP_ID}@{issuer_realm}"));
    doc["allowedAudiences"] = json!([format!("{ACS_APP_ID}@{issuer_realm}")]);
    doc
}

/// `GET /metadata/json/1/?realm=<tenant id or domain>`. Without a realm: the
/// realm-less document, as ACS serves it.
async fn acs_metadata(
    State(lab): State<Lab>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let realm = q
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("realm"))
        .map(|(_, v)| v.clone());
    match realm {
        Some(r) if !is_our_realm(&lab, &r) => not_found_realm(&r),
        Some(_) => metadata_response(&lab, acs_document(&lab, &base_url(&headers), true)),
        None => metadata_response(&lab, acs_document(&lab, &base_url(&headers), false)),
    }
}

/// `GET /<tenant>/metadata/json/1`: the same document, realm in the path.
async fn acs_metadata_in_path(
    State(lab): State<Lab>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Response {
    if !is_our_realm(&lab, &tenant) {
        return not_found_realm(&tenant);
    }
    metadata_response(&lab, acs_document(&lab, &base_url(&headers), true))
}

fn not_found_realm(realm: &str) -> Response {
    let shown: String = realm.chars().take(64).collect();
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "invalid_realm", "error_description": format!("ACS90009: realm '{shown}' is not known")})),
    )
        .into_response()
}

async fn openid_configuration(
    State(lab): State<Lab>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Response {
    let base = base_url(&headers);
    // Multi-tenant discovery names no tenant: its issuer holds `{tenantid}`.
    let (id, issuer) = match multi_tenant(&tenant) {
        Some(m) => (m.to_string(), format!("{base}/{{tenantid}}/v2.0")),
        None if is_our_realm(&lab, &tenant) => {
            let id = lab.tenant_id();
            (id.clone(), format!("{base}/{id}/v2.0"))
        }
        None => return not_found_realm(&tenant),
    };
    let mut doc = json!({
        "issuer": issuer,
        "token_endpoint": format!("{base}/{id}/oauth2/v2.0/token"),
        "jwks_uri": format!("{base}/{id}/discovery/v2.0/keys"),
        "authorization_endpoint": format!("{base}/{id}/oauth2/v2.0/authorize"),
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
    });
    if lab.state().faults.metadata == Some(MetadataFault::NoIssuingEndpoint) {
        doc.as_object_mut().map(|o| o.remove("token_endpoint"));
        return (
            [(header::CONTENT_TYPE, "application/json")],
            doc.to_string(),
        )
            .into_response();
    }
    metadata_response(&lab, doc)
}

/// `common`, `organizations` or `consumers`: Entra's multi-tenant names.
fn multi_tenant(tenant: &str) -> Option<&'static str> {
    ["common", "organizations", "consumers"]
        .into_iter()
        .find(|m| tenant.eq_ignore_ascii_case(m))
}

/// The JWKS. Each key carries its `issuer`, as Entra's do: the `{tenantid}`
/// template (it signs for every tenant).
async fn jwks(State(lab): State<Lab>, headers: HeaderMap, Path(tenant): Path<String>) -> Response {
    if multi_tenant(&tenant).is_none() && !is_our_realm(&lab, &tenant) {
        return not_found_realm(&tenant);
    }
    let der = lab.signer.cert_der();
    let x5t = jwt::x5t(der);
    let mut doc = json!({"keys": [{
        "kty": "RSA", "use": "sig", "kid": x5t, "x5t": x5t,
        "x5c": [base64::engine::general_purpose::STANDARD.encode(der)],
        "issuer": format!("{}/{{tenantid}}/v2.0", base_url(&headers)),
    }]});
    if lab.state().faults.metadata == Some(MetadataFault::NoKeys) {
        doc["keys"] = json!([]);
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_string(),
    )
        .into_response()
}

/// Why an assertion was refused, in the two dialects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reject {
    /// Not a JWT, or the request is malformed.
    Malformed(String),
    /// The x5t names no registered credential.
    UnknownKey,
    /// A registered credential's key does not verify the signature.
    BadSignature,
    /// The credential is outside its StartDate/EndDate.
    CredentialExpired,
    CredentialNotYetValid,
    /// nbf/exp outside the allowed skew.
    TimeRange(String),
    /// iss, sub or aud not as expected.
    Claims(String),
    /// alg is not RS256 (`none` included).
    Alg(String),
    /// Entra: client credentials on `common`/`organizations`.
    MultiTenant,
    /// Entra: the tenant in the path is not this lab's.
    TenantNotFound,
    /// ACS: the token endpoint without a realm (from a realm-less document).
    NoRealm,
}

impl Reject {
    fn acs(&self) -> (StatusCode, &'static str, String) {
        match self {
            Reject::Malformed(why) => (StatusCode::BAD_REQUEST, "invalid_request", format!("ACS90004: The request is not properly formatted. {why}")),
            Reject::UnknownKey => (StatusCode::UNAUTHORIZED, "invalid_client", "ACS50008: The key is not registered, or the certificate thumbprint has changed: no valid registered key matches the signing key identifier.".into()),
            Reject::BadSignature => (StatusCode::UNAUTHORIZED, "invalid_client", "ACS50006: Unable to verify token signature. The following signing key identifier does not match any valid registered keys.".into()),
            Reject::CredentialExpired => (StatusCode::UNAUTHORIZED, "invalid_client", "ACS50012: Authentication failed. The key credential registered for the signing key has expired.".into()),
            Reject::CredentialNotYetValid => (StatusCode::UNAUTHORIZED, "invalid_client", "ACS50012: Authentication failed. The key credential registered for the signing key is not yet valid.".into()),
            Reject::TimeRange(why) => (StatusCode::UNAUTHORIZED, "invalid_client", format!("ACS50012: Authentication failed. {why}")),
            Reject::Claims(why) => (StatusCode::UNAUTHORIZED, "invalid_client", format!("ACS50012: Authentication failed. {why}")),
            Reject::Alg(alg) => (StatusCode::UNAUTHORIZED, "invalid_client", format!("ACS50012: Authentication failed. Unsupported signing algorithm '{alg}'.")),
            Reject::NoRealm | Reject::MultiTenant | Reject::TenantNotFound => (StatusCode::BAD_REQUEST, "invalid_request", "ACS90004: The request is not properly formatted. The token endpoint names no realm.".into()),
        }
    }

    fn entra(&self) -> (StatusCode, &'static str, u32, String) {
        match self {
            Reject::Malformed(why) => (StatusCode::BAD_REQUEST, "invalid_request", 50027, format!("AADSTS50027: JWT token is invalid or malformed. {why}")),
            Reject::UnknownKey => (StatusCode::UNAUTHORIZED, "invalid_client", 700027, "AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application.".into()),
            Reject::BadSignature => (StatusCode::UNAUTHORIZED, "invalid_client", 700027, "AADSTS700027: Client assertion failed signature validation.".into()),
            Reject::CredentialExpired => (StatusCode::UNAUTHORIZED, "invalid_client", 700027, "AADSTS700027: The certificate used to sign the client assertion has expired on application.".into()),
            Reject::CredentialNotYetValid => (StatusCode::UNAUTHORIZED, "invalid_client", 700027, "AADSTS700027: The certificate used to sign the client assertion is not yet valid on application.".into()),
            Reject::TimeRange(why) => (StatusCode::UNAUTHORIZED, "invalid_client", 700024, format!("AADSTS700024: Client assertion is not within its valid time range. {why}")),
            Reject::Claims(why) => (StatusCode::UNAUTHORIZED, "invalid_client", 700021, format!("AADSTS700021: Client assertion claims are invalid. {why}")),
            Reject::Alg(alg) => (StatusCode::UNAUTHORIZED, "invalid_client", 5002738, format!("AADSTS5002738: Invalid JWT token. '{alg}' is not a supported signature algorithm.")),
            Reject::MultiTenant => (StatusCode::BAD_REQUEST, "invalid_request", 50194, "AADSTS50194: Application is not configured as a multi-tenant application. Usage of the /common endpoint is not supported. Use a tenant-specific endpoint.".into()),
            Reject::TenantNotFound | Reject::NoRealm => (StatusCode::BAD_REQUEST, "invalid_request", 90002, "AADSTS90002: Tenant not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.".into()),
        }
    }
}

fn trace_suffix(now: i64) -> String {
    let t = chrono::DateTime::from_timestamp(now, 0).unwrap_or_default();
    format!(
        "\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}",
        crate::guid::random(),
        crate::guid::random(),
        t.format("%Y-%m-%d %H:%M:%SZ")
    )
}

/// Verifies a client assertion: RS256 against a registered credential valid now,
/// then the claims. `check_claims` sees the decoded token.
pub(crate) fn verify_assertion(
    lab: &Lab,
    assertion: &str,
    check_claims: impl FnOnce(&jwt::Decoded, i64) -> Result<(), Reject>,
) -> Result<(), Reject> {
    let decoded = jwt::decode(assertion).map_err(|e| Reject::Malformed(e.to_string()))?;
    match decoded.alg() {
        Some("RS256") => {}
        other => {
            return Err(Reject::Alg(
                other.unwrap_or("missing").chars().take(16).collect(),
            ))
        }
    }
    let x5t = decoded
        .header
        .get("x5t")
        .and_then(Value::as_str)
        .ok_or(Reject::UnknownKey)?
        .to_string();
    let now = lab.now();
    let candidates: Vec<super::Registered> = lab
        .state()
        .credentials
        .iter()
        .filter(|c| c.x5t == x5t)
        .cloned()
        .collect();
    if candidates.is_empty() {
        return Err(Reject::UnknownKey);
    }
    let cred = candidates
        .iter()
        .find(|c| decoded.verify_rs256(&c.cert_der).is_ok())
        .ok_or(Reject::BadSignature)?;
    if now > cred.end {
        return Err(Reject::CredentialExpired);
    }
    if now < cred.start {
        return Err(Reject::CredentialNotYetValid);
    }
    check_claims(&decoded, now)?;
    let nbf = decoded
        .claim_i64("nbf")
        .ok_or_else(|| Reject::Claims("nbf is missing".into()))?;
    let exp = decoded
        .claim_i64("exp")
        .ok_or_else(|| Reject::Claims("exp is missing".into()))?;
    if now + ALLOWED_SKEW_SECONDS < nbf {
        return Err(Reject::TimeRange(format!(
            "The token is not yet valid: nbf is {}s ahead of the service's clock.",
            nbf - now
        )));
    }
    if now - ALLOWED_SKEW_SECONDS > exp {
        return Err(Reject::TimeRange(format!(
            "The token has expired: exp is {}s behind the service's clock.",
            now - exp
        )));
    }
    if exp - nbf > 24 * 3600 || exp <= nbf {
        return Err(Reject::TimeRange("The token lifetime is invalid.".into()));
    }
    Ok(())
}

fn claim<'a>(d: &'a jwt::Decoded, name: &str) -> &'a str {
    d.claims.get(name).and_then(Value::as_str).unwrap_or("")
}

/// Who issued a token: ACS (`00000001-…@<tenant id>`) or Entra, whose tokens
/// for Exchange Online and Graph are v1 (`https://sts.windows.net/<tenant id>/`)
/// even from the v2 endpoint.
#[derive(Clone, Copy)]
enum Issuer {
    Acs,
    Entra,
}

/// Issues an access token for `resource`, signed by the lab's key.
fn issue(lab: &Lab, issuer: Issuer, resource: &str, now: i64) -> Result<String, StatusCode> {
    let tenant = lab.tenant_id();
    let header = json!({"typ": "JWT", "alg": "RS256", "x5t": lab.signer.x5t()});
    let iss = match issuer {
        Issuer::Acs => format!("{ACS_APP_ID}@{tenant}"),
        Issuer::Entra => format!("https://sts.windows.net/{tenant}/"),
    };
    let claims = json!({
        "aud": resource,
        "iss": iss,
        "nbf": now,
        "exp": now + ACCESS_TOKEN_SECONDS,
        "nameid": format!("{EXCHANGE_APP_ID}@{tenant}"),
        "identityprovider": format!("{ACS_APP_ID}@{tenant}"),
    });
    lab.signer.sign_rs256(&header, &claims).map_err(|e| {
        tracing::error!(error = %e, "lab cannot sign an access token");
        StatusCode::INTERNAL_SERVER_ERROR
    })
}

fn with_date(lab: &Lab, now: i64, mut resp: Response) -> Response {
    let _ = lab;
    resp.headers_mut().insert(header::DATE, http_date(now));
    resp
}

/// `POST /<tenant>/tokens/OAuth/2`: the ACS S2S token request.
async fn acs_token(
    State(lab): State<Lab>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let ms = lab.state().faults.token_latency_ms;
    delay(ms).await;
    let now = lab.now();
    let tenant_id = lab.tenant_id();
    let reply = |r: Reject| {
        let (status, error, text) = r.acs();
        with_date(
            &lab,
            now,
            (status, Json(json!({"error": error, "error_description": format!("{text}{}", trace_suffix(now))}))).into_response(),
        )
    };
    if !tenant.eq_ignore_ascii_case(&tenant_id) {
        return reply(Reject::Malformed(
            "unknown tenant in the token endpoint path".to_string(),
        ));
    }
    if form.get("grant_type").map(String::as_str)
        != Some("http://oauth.net/grant_type/jwt/1.0/bearer")
    {
        return reply(Reject::Malformed(
            "grant_type must be http://oauth.net/grant_type/jwt/1.0/bearer.".into(),
        ));
    }
    let (Some(assertion), Some(resource)) = (form.get("assertion"), form.get("resource")) else {
        return reply(Reject::Malformed(
            "assertion and resource are required.".into(),
        ));
    };
    let resource_ok = resource.starts_with(&format!("{EXCHANGE_APP_ID}/"))
        && resource.ends_with(&format!("@{tenant_id}"));
    if !resource_ok {
        return reply(Reject::Malformed(format!(
            "resource must be {EXCHANGE_APP_ID}/<host>@<tenant id>."
        )));
    }
    let expected_iss = format!("{EXCHANGE_APP_ID}@{tenant_id}");
    let expected_aud = format!("{ACS_APP_ID}/{}@{tenant_id}", authority(&headers));
    let checked = verify_assertion(&lab, assertion, |d, _| {
        if claim(d, "iss") != expected_iss {
            return Err(Reject::Claims(format!(
                "The issuer must be {expected_iss}."
            )));
        }
        if claim(d, "aud") != expected_aud {
            return Err(Reject::Claims(format!(
                "The audience must be {expected_aud}."
            )));
        }
        Ok(())
    });
    if let Err(r) = checked {
        return reply(r);
    }
    let token = match issue(&lab, Issuer::Acs, resource, now) {
        Ok(t) => t,
        Err(status) => return status.into_response(),
    };
    lab.state().tokens_issued += 1;
    with_date(
        &lab,
        now,
        Json(json!({
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_SECONDS.to_string(),
            "not_before": now.to_string(),
            "expires_on": (now + ACCESS_TOKEN_SECONDS).to_string(),
            "resource": resource,
            "access_token": token,
        }))
        .into_response(),
    )
}

/// `POST /tokens/OAuth/2`: the realm-less document's issuing endpoint, where
/// every request fails as malformed.
async fn acs_token_without_realm(State(lab): State<Lab>) -> Response {
    let now = lab.now();
    let (status, error, text) = Reject::NoRealm.acs();
    with_date(
        &lab,
        now,
        (
            status,
            Json(json!({"error": error, "error_description": format!("{text}{}", trace_suffix(now))})),
        )
            .into_response(),
    )
}

/// `POST /<tenant>/oauth2/v2.0/token`: Entra v2 client credentials with a
/// certificate assertion (RFC 7523).
async fn entra_token(
    State(lab): State<Lab>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let ms = lab.state().faults.token_latency_ms;
    delay(ms).await;
    // Apps registered in the lab's directory (the hybrid app, a monitoring app).
    if let Some(reply) = super::graph::app_token(&lab, &headers, &tenant, &form) {
        return reply;
    }
    let now = lab.now();
    let tenant_id = lab.tenant_id();
    let reply = |r: Reject| {
        let (status, error, code, text) = r.entra();
        with_date(
            &lab,
            now,
            (
                status,
                Json(json!({
                    "error": error,
                    "error_description": format!("{text}{}", trace_suffix(now)),
                    "error_codes": [code],
                    "trace_id": crate::guid::random(),
                    "correlation_id": crate::guid::random(),
                })),
            )
                .into_response(),
        )
    };
    if multi_tenant(&tenant).is_some() {
        return reply(Reject::MultiTenant);
    }
    if !is_our_realm(&lab, &tenant) {
        return reply(Reject::TenantNotFound);
    }
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if get("grant_type") != "client_credentials"
        || get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    {
        return reply(Reject::Malformed(
            "grant_type must be client_credentials with a jwt-bearer client_assertion.".into(),
        ));
    }
    let (client_id, scope, assertion) = (get("client_id"), get("scope"), get("client_assertion"));
    if client_id.is_empty() || assertion.is_empty() || !scope.ends_with("/.default") {
        return reply(Reject::Malformed(
            "client_id, scope (<resource>/.default) and client_assertion are required.".into(),
        ));
    }
    let expected_aud = format!("{}/{tenant}/oauth2/v2.0/token", base_url(&headers));
    let checked = verify_assertion(&lab, assertion, |d, _| {
        if claim(d, "iss") != client_id || claim(d, "sub") != client_id {
            return Err(Reject::Claims("iss and sub must equal client_id.".into()));
        }
        if claim(d, "aud") != expected_aud {
            return Err(Reject::Claims(format!(
                "The audience must be {expected_aud}."
            )));
        }
        if claim(d, "jti").is_empty() {
            return Err(Reject::Claims("jti is required.".into()));
        }
        Ok(())
    });
    if let Err(r) = checked {
        return reply(r);
    }
    let resource = scope.trim_end_matches("/.default");
    let token = match issue(&lab, Issuer::Entra, resource, now) {
        Ok(t) => t,
        Err(status) => return status.into_response(),
    };
    let _ = tenant_id;
    lab.state().tokens_issued += 1;
    with_date(
        &lab,
        now,
        Json(json!({
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_SECONDS,
            "ext_expires_in": ACCESS_TOKEN_SECONDS,
            "access_token": token,
        }))
        .into_response(),
    )
}
