//! The lab's Entra ID app registrations and Microsoft Graph: the application
//! objects (the dedicated Exchange hybrid app, a read-only monitoring app) with
//! their key credentials, client secrets and granted application permissions,
//! the shared `Office 365 Exchange Online` service principal's key credentials,
//! the Entra v2 token endpoint for those apps (client credentials with a
//! certificate assertion or a secret), the two Graph reads the `registration`
//! kind makes, and the admin calls that put certificates on either object and
//! inject Graph faults (401, 403, 404).
//!
//! The token endpoint shares its URL with the ACS file's Entra endpoint: a
//! request whose `client_id` is an application registered here is answered here
//! ([`app_token`]), any other goes on to ACS's handling.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Lab, ALLOWED_SKEW_SECONDS, EXCHANGE_APP_ID};
use crate::jwt;

/// The resource Graph tokens are issued for.
pub(crate) const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";
/// Graph's own application id, which also appears as a token audience.
pub(crate) const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
/// The permission the Graph reads need.
pub const READ_ALL: &str = "Application.Read.All";
/// Lifetime of the Entra access tokens the lab issues, as Entra's are (~1 h).
pub(crate) const APP_TOKEN_SECONDS: i64 = 3599;

/// A key credential on an application or service principal.
#[derive(Debug, Clone, Serialize)]
pub struct KeyCredential {
    pub key_id: String,
    /// The certificate's SHA-1 thumbprint, uppercase hex, as Microsoft's
    /// scripts upload it.
    pub custom_key_identifier: String,
    pub display_name: String,
    /// startDateTime / endDateTime, unix seconds.
    pub start: i64,
    pub end: i64,
    pub x5t: String,
    #[serde(skip)]
    pub cert_der: Vec<u8>,
}

impl KeyCredential {
    /// A key credential for a certificate (DER), valid from `start` to `end`.
    pub fn new(cert_der: &[u8], start: i64, end: i64) -> Result<KeyCredential, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der);
        Ok(KeyCredential {
            key_id: crate::guid::random(),
            custom_key_identifier: hex::encode_upper(sha1),
            display_name: cert.subject().to_string(),
            start,
            end,
            x5t: jwt::x5t(cert_der),
            cert_der: cert_der.to_vec(),
        })
    }

    fn graph_json(&self) -> Value {
        let date = |t: i64| {
            chrono::DateTime::from_timestamp(t, 0)
                .unwrap_or_default()
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        };
        json!({
            "customKeyIdentifier": self.custom_key_identifier,
            "displayName": self.display_name,
            "endDateTime": date(self.end),
            "key": null,
            "keyId": self.key_id,
            "startDateTime": date(self.start),
            "type": "AsymmetricX509Cert",
            "usage": "Verify",
        })
    }
}

/// An application object (app registration) and what its service principal
/// was granted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Application {
    pub app_id: String,
    pub display_name: String,
    pub key_credentials: Vec<KeyCredential>,
    /// The client secret, if the app has one; never shown by the admin API.
    #[serde(skip)]
    pub secret: Option<String>,
    /// Application permissions with admin consent, e.g. `Application.Read.All`.
    pub roles: Vec<String>,
}

/// A Graph fault injected through the admin API: every Graph read answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GraphFault {
    #[serde(rename = "401")]
    Unauthorized,
    #[serde(rename = "403")]
    Forbidden,
    #[serde(rename = "404")]
    NotFound,
}

/// The directory as Graph shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GraphState {
    /// By appId, lowercase.
    pub applications: BTreeMap<String, Application>,
    /// The key credentials of the shared Exchange Online service principal.
    pub first_party: Vec<KeyCredential>,
    pub fault: Option<GraphFault>,
    pub graph_reads: u64,
}

impl GraphState {
    /// The application `app_id`, created empty when new.
    pub fn app(&mut self, app_id: &str, display_name: &str) -> &mut Application {
        let app = self
            .applications
            .entry(app_id.to_ascii_lowercase())
            .or_insert_with(|| Application {
                app_id: app_id.to_ascii_lowercase(),
                ..Application::default()
            });
        if !display_name.is_empty() {
            app.display_name = display_name.to_string();
        }
        app
    }
}

fn find_app(lab: &Lab, client_id: &str) -> Option<Application> {
    lab.state()
        .graph
        .applications
        .get(&client_id.to_ascii_lowercase())
        .cloned()
}

fn date_header(now: i64) -> String {
    chrono::DateTime::from_timestamp(now, 0)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// An Entra error reply, with the trace lines the real one carries.
fn entra_error(now: i64, status: StatusCode, error: &str, code: u32, text: &str) -> Response {
    let t = chrono::DateTime::from_timestamp(now, 0).unwrap_or_default();
    (
        status,
        [(header::DATE, date_header(now))],
        Json(json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {text}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}",
                crate::guid::random(),
                crate::guid::random(),
                t.format("%Y-%m-%d %H:%M:%SZ")
            ),
            "error_codes": [code],
            "trace_id": crate::guid::random(),
            "correlation_id": crate::guid::random(),
        })),
    )
        .into_response()
}

/// `POST /<tenant>/oauth2/v2.0/token` for an application registered here;
/// `None` when `client_id` names none (ACS's Entra handling answers then).
pub(crate) fn app_token(
    lab: &Lab,
    headers: &HeaderMap,
    tenant: &str,
    form: &HashMap<String, String>,
) -> Option<Response> {
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let app = find_app(lab, get("client_id"))?;
    let now = lab.now();
    let (tenant_id, domain) = {
        let s = lab.state();
        (s.tenant_id.clone(), s.tenant_domain.clone())
    };
    let fail = |status, error, code, text: &str| Some(entra_error(now, status, error, code, text));
    if !tenant.eq_ignore_ascii_case(&tenant_id) && !tenant.eq_ignore_ascii_case(&domain) {
        return fail(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{}' not found.",
                tenant.chars().take(64).collect::<String>()
            ),
        );
    }
    let scope = get("scope");
    if get("grant_type") != "client_credentials" || !scope.ends_with("/.default") {
        return fail(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            70011,
            "The provided request must include a 'scope' input parameter ending in /.default with grant_type client_credentials.",
        );
    }
    let secret = get("client_secret");
    if !secret.is_empty() {
        if app.secret.as_deref() != Some(secret) {
            return fail(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
            );
        }
    } else {
        if get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        {
            return fail(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            );
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        let aud = format!("http://{host}/{tenant}/oauth2/v2.0/token");
        if let Err((code, text)) = check_assertion(&app, get("client_assertion"), &aud, now) {
            let status = if code == 50027 {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::UNAUTHORIZED
            };
            return fail(status, "invalid_client", code, &text);
        }
    }
    let resource = scope.trim_end_matches("/.default");
    let roles: Vec<&String> = if resource.trim_end_matches('/') == GRAPH_RESOURCE {
        app.roles.iter().collect()
    } else {
        Vec::new()
    };
    // A v1 access token, as Exchange Online and Graph receive even from the v2
    // endpoint: issuer sts.windows.net.
    let x5t = lab.signer.x5t();
    let header = json!({"typ": "JWT", "alg": "RS256", "x5t": x5t, "kid": x5t});
    let claims = json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{tenant_id}/"),
        "iat": now,
        "nbf": now,
        "exp": now + APP_TOKEN_SECONDS,
        "appid": app.app_id,
        "appidacr": if secret.is_empty() { "2" } else { "1" },
        "tid": tenant_id,
        "roles": roles,
        "ver": "1.0",
    });
    let token = match lab.signer.sign_rs256(&header, &claims) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "lab cannot sign an access token");
            return Some(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        }
    };
    lab.state().tokens_issued += 1;
    Some(
        (
            [(header::DATE, date_header(now))],
            Json(json!({
                "token_type": "Bearer",
                "expires_in": APP_TOKEN_SECONDS,
                "ext_expires_in": APP_TOKEN_SECONDS,
                "access_token": token,
            })),
        )
            .into_response(),
    )
}

/// RFC 7523 client assertion against the app's key credentials: the AADSTS
/// code and text when refused.
fn check_assertion(
    app: &Application,
    assertion: &str,
    aud: &str,
    now: i64,
) -> Result<(), (u32, String)> {
    let decoded = jwt::decode(assertion)
        .map_err(|e| (50027, format!("JWT token is invalid or malformed. {e}")))?;
    if decoded.alg() != Some("RS256") {
        return Err((
            5002738,
            "Invalid JWT token: unsupported signature algorithm.".into(),
        ));
    }
    let x5t = decoded.header_str("x5t").unwrap_or("");
    let keys: Vec<&KeyCredential> = app
        .key_credentials
        .iter()
        .filter(|k| k.x5t == x5t)
        .collect();
    if keys.is_empty() {
        return Err((
            700027,
            format!("The certificate with identifier used to sign the client assertion is not registered on application {}.", app.app_id),
        ));
    }
    let key = keys
        .iter()
        .find(|k| decoded.verify_rs256(&k.cert_der).is_ok())
        .ok_or((
            700027,
            "Client assertion failed signature validation.".to_string(),
        ))?;
    if now > key.end {
        return Err((
            700027,
            format!(
                "The certificate used to sign the client assertion has expired on application {}.",
                app.app_id
            ),
        ));
    }
    if now < key.start {
        return Err((700027, format!("The certificate used to sign the client assertion is not yet valid on application {}.", app.app_id)));
    }
    let claim = |n: &str| decoded.claim_str(n).unwrap_or("");
    if claim("iss") != app.app_id || claim("sub") != app.app_id {
        return Err((
            700021,
            "Client assertion claims are invalid: iss and sub must equal client_id.".into(),
        ));
    }
    if claim("aud") != aud {
        return Err((
            700021,
            format!("Client assertion audience claim does not match. Expected {aud}."),
        ));
    }
    if claim("jti").is_empty() {
        return Err((700021, "Client assertion jti is required.".into()));
    }
    match (decoded.claim_i64("nbf"), decoded.claim_i64("exp")) {
        (Some(nbf), Some(exp))
            if nbf <= now + ALLOWED_SKEW_SECONDS && exp >= now - ALLOWED_SKEW_SECONDS =>
        {
            Ok(())
        }
        (Some(_), Some(_)) => Err((
            700024,
            "Client assertion is not within its valid time range.".into(),
        )),
        _ => Err((700021, "Client assertion must carry nbf and exp.".into())),
    }
}

// ---------------------------------------------------------------------------
// Graph.

pub(crate) fn routes() -> Router<Lab> {
    Router::new().route("/v1.0/{*rest}", get(graph_get))
}

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let id = crate::guid::random();
    (
        status,
        Json(json!({"error": {"code": code, "message": message, "innerError": {"request-id": id, "client-request-id": id}}})),
    )
        .into_response()
}

/// `Resource '<id>' does not exist…`, Graph's 404.
fn not_found(id: &str) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{}' does not exist or one of its queried reference-property objects are not present.",
            id.chars().take(64).collect::<String>()
        ),
    )
}

/// `applications(appId='…')` or `servicePrincipals(appId='…')`.
fn parse_object(rest: &str) -> Option<(&str, &str)> {
    let (collection, key) = rest.split_once("(appId=")?;
    let id = key.strip_suffix(')')?.trim_matches('\'');
    Some((collection, id))
}

/// The bearer token's roles when the lab issued it for Graph, unexpired, for
/// this tenant; else why it is refused (Graph answers 401 with it).
fn token_roles(lab: &Lab, headers: &HeaderMap) -> Result<Vec<String>, &'static str> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or("Access token is empty.")?;
    let decoded = jwt::decode(token).map_err(|_| "Invalid token.")?;
    if decoded.alg() != Some("RS256") || decoded.verify_rs256(lab.signer.cert_der()).is_err() {
        return Err("Invalid signature.");
    }
    let aud = decoded.claim_str("aud").unwrap_or("");
    if aud.trim_end_matches('/') != GRAPH_RESOURCE && aud != GRAPH_APP_ID {
        return Err("Invalid audience.");
    }
    if decoded.claim_i64("exp").is_none_or(|e| e < lab.now()) {
        return Err("Lifetime validation failed, the token is expired.");
    }
    if decoded.claim_str("tid") != Some(lab.tenant_id().as_str()) {
        return Err("Invalid tenant.");
    }
    Ok(decoded
        .claims
        .get("roles")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default())
}

async fn graph_get(
    State(lab): State<Lab>,
    headers: HeaderMap,
    Path(rest): Path<String>,
) -> Response {
    lab.state().graph.graph_reads += 1;
    let fault = lab.state().graph.fault;
    match fault {
        Some(GraphFault::Unauthorized) => {
            return graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            )
        }
        Some(GraphFault::Forbidden) => {
            return graph_error(
                StatusCode::FORBIDDEN,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            )
        }
        Some(GraphFault::NotFound) => {
            let id = parse_object(&rest).map(|(_, id)| id).unwrap_or("");
            return not_found(id);
        }
        None => {}
    }
    let roles = match token_roles(&lab, &headers) {
        Ok(r) => r,
        Err(why) => {
            return graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                &format!("Access token validation failure. {why}"),
            )
        }
    };
    if !roles
        .iter()
        .any(|r| r == READ_ALL || r == "Application.ReadWrite.All" || r == "Directory.Read.All")
    {
        return graph_error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        );
    }
    let Some((collection, id)) = parse_object(&rest) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Resource not found for the segment.",
        );
    };
    let graph = lab.state().graph.clone();
    match collection {
        "applications" => match graph.applications.get(&id.to_ascii_lowercase()) {
            Some(app) => Json(json!({
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#applications(appId,displayName,keyCredentials)/$entity",
                "appId": app.app_id,
                "displayName": app.display_name,
                "keyCredentials": app.key_credentials.iter().map(KeyCredential::graph_json).collect::<Vec<_>>(),
            }))
            .into_response(),
            None => not_found(id),
        },
        "servicePrincipals" if id.eq_ignore_ascii_case(EXCHANGE_APP_ID) => Json(json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#servicePrincipals(appId,keyCredentials)/$entity",
            "appId": EXCHANGE_APP_ID,
            "keyCredentials": graph.first_party.iter().map(KeyCredential::graph_json).collect::<Vec<_>>(),
        }))
        .into_response(),
        "servicePrincipals" => match graph.applications.get(&id.to_ascii_lowercase()) {
            Some(app) => Json(json!({"appId": app.app_id, "keyCredentials": []})).into_response(),
            None => not_found(id),
        },
        _ => graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Resource not found for the segment."),
    }
}

// ---------------------------------------------------------------------------
// Admin.

pub(crate) fn admin_routes() -> Router<Lab> {
    Router::new()
        .route("/admin/graph", get(admin_state))
        .route("/admin/graph/applications/{app_id}", put(put_app))
        .route(
            "/admin/graph/applications/{app_id}/keys",
            post(add_app_key).delete(clear_app_keys),
        )
        .route(
            "/admin/graph/first-party/keys",
            post(add_first_party_key).delete(clear_first_party_keys),
        )
        .route("/admin/graph/fault", put(put_fault).delete(clear_fault))
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

async fn admin_state(State(lab): State<Lab>) -> Response {
    Json(json!(lab.state().graph)).into_response()
}

/// An application to create or update: its name, a client secret, permissions.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppUpdate {
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    roles: Option<Vec<String>>,
}

async fn put_app(
    State(lab): State<Lab>,
    Path(app_id): Path<String>,
    Json(u): Json<AppUpdate>,
) -> Response {
    if !crate::guid::is_guid(&app_id) {
        return bad_request(format!(
            "`{}` is not an application id (GUID)",
            app_id.chars().take(64).collect::<String>()
        ));
    }
    let mut s = lab.state();
    let app = s.graph.app(&app_id, &u.display_name);
    if let Some(secret) = u.secret {
        app.secret = Some(secret).filter(|s| !s.is_empty());
    }
    if let Some(roles) = u.roles {
        app.roles = roles;
    }
    Json(json!(app)).into_response()
}

/// A certificate to put on an object: PEM, and optional start/end (RFC 3339 or
/// unix seconds; default the certificate's own dates).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    cert_pem: String,
    start: Option<Value>,
    end: Option<Value>,
}

fn key_from(req: &NewKey) -> Result<KeyCredential, String> {
    let der = super::cert_der_from(req.cert_pem.as_bytes())?;
    let (_, c) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("cert_pem is not an X.509 certificate: {e}"))?;
    let start = req
        .start
        .as_ref()
        .map(super::admin::unix)
        .transpose()?
        .unwrap_or(c.validity().not_before.timestamp());
    let end = req
        .end
        .as_ref()
        .map(super::admin::unix)
        .transpose()?
        .unwrap_or(c.validity().not_after.timestamp());
    if end <= start {
        return Err("end must be after start".into());
    }
    KeyCredential::new(&der, start, end)
}

async fn add_app_key(
    State(lab): State<Lab>,
    Path(app_id): Path<String>,
    Json(req): Json<NewKey>,
) -> Response {
    let key = match key_from(&req) {
        Ok(k) => k,
        Err(e) => return bad_request(e),
    };
    let mut s = lab.state();
    match s.graph.applications.get_mut(&app_id.to_ascii_lowercase()) {
        Some(app) => {
            app.key_credentials.push(key.clone());
            (StatusCode::CREATED, Json(json!(key))).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such application: PUT it first"})),
        )
            .into_response(),
    }
}

async fn clear_app_keys(State(lab): State<Lab>, Path(app_id): Path<String>) -> Response {
    match lab
        .state()
        .graph
        .applications
        .get_mut(&app_id.to_ascii_lowercase())
    {
        Some(app) => {
            app.key_credentials.clear();
            StatusCode::NO_CONTENT.into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn add_first_party_key(State(lab): State<Lab>, Json(req): Json<NewKey>) -> Response {
    match key_from(&req) {
        Ok(k) => {
            lab.state().graph.first_party.push(k.clone());
            (StatusCode::CREATED, Json(json!(k))).into_response()
        }
        Err(e) => bad_request(e),
    }
}

async fn clear_first_party_keys(State(lab): State<Lab>) -> Response {
    lab.state().graph.first_party.clear();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    status: u16,
}

async fn put_fault(State(lab): State<Lab>, Json(f): Json<FaultRequest>) -> Response {
    let fault = match f.status {
        401 => GraphFault::Unauthorized,
        403 => GraphFault::Forbidden,
        404 => GraphFault::NotFound,
        other => {
            return bad_request(format!(
                "status {other}: the Graph faults are 401, 403 and 404"
            ))
        }
    };
    lab.state().graph.fault = Some(fault);
    Json(json!({"fault": fault})).into_response()
}

async fn clear_fault(State(lab): State<Lab>) -> Response {
    lab.state().graph.fault = None;
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::generate_self_signed;

    const NOW: i64 = 1_800_000_000;
    const APP: &str = "6f2a4c31-8d3e-4b7a-9c15-2e0d8f4b1a77";
    const AUD: &str = "http://127.0.0.1:1/contoso.onmicrosoft.com/oauth2/v2.0/token";

    #[test]
    fn object_paths_parse_as_graph_writes_them() {
        assert_eq!(
            parse_object("applications(appId='6f2a4c31-8d3e-4b7a-9c15-2e0d8f4b1a77')"),
            Some(("applications", APP))
        );
        assert_eq!(
            parse_object("servicePrincipals(appId='x')"),
            Some(("servicePrincipals", "x"))
        );
        assert_eq!(parse_object("applications"), None);
        assert_eq!(parse_object("applications(appId='x'"), None);
    }

    #[test]
    fn assertions_are_checked_against_the_apps_own_credentials() {
        let g = generate_self_signed("app", 2048, NOW - 86_400, NOW + 86_400).unwrap();
        let c = &g.credential;
        let mut app = Application {
            app_id: APP.into(),
            ..Application::default()
        };
        let sign = |claims: Value| {
            c.sign_rs256(
                &json!({"typ": "JWT", "alg": "RS256", "x5t": c.x5t()}),
                &claims,
            )
            .unwrap()
        };
        let good =
            json!({"iss": APP, "sub": APP, "aud": AUD, "jti": "j", "nbf": NOW, "exp": NOW + 600});
        let code =
            |app: &Application, a: &str| check_assertion(app, a, AUD, NOW).err().map(|e| e.0);
        // Not registered on this app (the certificate is unknown to it).
        assert_eq!(code(&app, &sign(good.clone())), Some(700027));
        app.key_credentials
            .push(KeyCredential::new(c.cert_der(), NOW - 86_400, NOW + 86_400).unwrap());
        assert_eq!(code(&app, &sign(good.clone())), None);
        let mut claims = good.clone();
        claims["aud"] = json!("http://elsewhere/token");
        assert_eq!(code(&app, &sign(claims)), Some(700021));
        let mut claims = good.clone();
        claims["exp"] = json!(NOW - 3600);
        claims["nbf"] = json!(NOW - 4200);
        assert_eq!(code(&app, &sign(claims)), Some(700024));
        let none = format!(
            "{}.{}.",
            jwt::b64url(br#"{"alg":"none"}"#),
            jwt::b64url(good.to_string().as_bytes())
        );
        assert_eq!(code(&app, &none), Some(5002738));
        assert_eq!(code(&app, "garbage"), Some(50027));
        // The key credential's own end date, as Entra keeps it.
        app.key_credentials[0].end = NOW - 1;
        let err = check_assertion(&app, &sign(good), AUD, NOW).unwrap_err();
        assert_eq!(err.0, 700027);
        assert!(err.1.contains("expired"), "{}", err.1);
        // What Graph shows of it.
        let shown = app.key_credentials[0].graph_json();
        assert_eq!(shown["customKeyIdentifier"], json!(c.thumbprint_hex()));
        assert_eq!(shown["type"], "AsymmetricX509Cert");
        assert_eq!(shown["usage"], "Verify");
        assert_eq!(shown["endDateTime"], "2027-01-15T07:59:59Z");
    }
}
