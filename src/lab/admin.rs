//! The lab's admin API: register and revoke credentials, inject and clear
//! faults, add mailboxes, and read the state (credentials, faults, badges, mails).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{Faults, Lab, Mailbox};

pub(crate) fn routes() -> Router<Lab> {
    Router::new()
        .route("/admin/state", get(state))
        .route("/admin/credentials", post(register).get(list_credentials))
        .route("/admin/credentials/{id}", delete(revoke))
        .route(
            "/admin/faults",
            get(get_faults).put(put_faults).delete(clear_faults),
        )
        .route("/admin/mailboxes", post(add_mailbox))
        .merge(super::graph::admin_routes())
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

/// A key credential to register: the certificate in PEM, and StartDate /
/// EndDate as RFC 3339 or unix seconds (defaults: the certificate's own dates).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCredential {
    cert_pem: String,
    start: Option<serde_json::Value>,
    end: Option<serde_json::Value>,
}

pub(super) fn unix(v: &serde_json::Value) -> Result<i64, String> {
    match v {
        serde_json::Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| "dates must be whole seconds".to_string()),
        serde_json::Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp())
            .map_err(|e| format!("`{s}` is not an RFC 3339 date: {e}")),
        _ => Err("dates are RFC 3339 strings or unix seconds".into()),
    }
}

async fn register(State(lab): State<Lab>, Json(req): Json<NewCredential>) -> Response {
    use rustls::pki_types::pem::PemObject;
    let der = match rustls::pki_types::CertificateDer::from_pem_slice(req.cert_pem.as_bytes()) {
        Ok(d) => d.to_vec(),
        Err(e) => return bad_request(format!("cert_pem is not a PEM certificate: {e}")),
    };
    let (nb, na) = match x509_parser::parse_x509_certificate(&der) {
        Ok((_, c)) => (
            c.validity().not_before.timestamp(),
            c.validity().not_after.timestamp(),
        ),
        Err(e) => return bad_request(format!("cert_pem is not an X.509 certificate: {e}")),
    };
    let start = match req.start.as_ref().map(unix).transpose() {
        Ok(s) => s.unwrap_or(nb),
        Err(e) => return bad_request(e),
    };
    let end = match req.end.as_ref().map(unix).transpose() {
        Ok(e) => e.unwrap_or(na),
        Err(e) => return bad_request(e),
    };
    if end <= start {
        return bad_request("end must be after start".into());
    }
    match lab.state().register(&der, start, end) {
        Ok(r) => (StatusCode::CREATED, Json(json!(r))).into_response(),
        Err(e) => bad_request(e),
    }
}

async fn list_credentials(State(lab): State<Lab>) -> Response {
    Json(json!(lab.state().credentials)).into_response()
}

async fn revoke(State(lab): State<Lab>, Path(id): Path<u64>) -> Response {
    if lab.state().revoke(id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no credential {id}")})),
        )
            .into_response()
    }
}

async fn get_faults(State(lab): State<Lab>) -> Response {
    Json(json!(lab.state().faults)).into_response()
}

async fn put_faults(State(lab): State<Lab>, Json(f): Json<Faults>) -> Response {
    lab.state().faults = f.clone();
    tracing::info!(faults = %json!(f), "lab faults set");
    Json(json!(f)).into_response()
}

async fn clear_faults(State(lab): State<Lab>) -> Response {
    lab.state().faults = Faults::default();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMailbox {
    address: String,
    #[serde(default)]
    devices: Vec<String>,
}

async fn add_mailbox(State(lab): State<Lab>, Json(m): Json<NewMailbox>) -> Response {
    if !m.address.contains('@') {
        return bad_request(format!("`{}` is not a mail address", m.address));
    }
    if let Some(d) = m
        .devices
        .iter()
        .find(|d| d.len() != 64 || !d.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return bad_request(format!("device token `{d}` is not 64 hex digits"));
    }
    let devices: Vec<String> = m.devices.iter().map(|d| d.to_ascii_lowercase()).collect();
    lab.state().mailboxes.insert(
        m.address.to_ascii_lowercase(),
        Mailbox { unseen: 0, devices },
    );
    StatusCode::CREATED.into_response()
}

async fn state(State(lab): State<Lab>) -> Response {
    let s = lab.state();
    Json(json!({
        "tenant_domain": s.tenant_domain,
        "tenant_id": s.tenant_id,
        "signing_key": {"x5t": lab.signer.x5t(), "thumbprint": lab.signer.thumbprint_hex()},
        "credentials": s.credentials,
        "faults": s.faults,
        "mailboxes": s.mailboxes,
        "badges": s.badges,
        "badge_log": s.badge_log,
        "mails": s.mails,
        "tokens_issued": s.tokens_issued,
        "pushes_accepted": s.pushes_accepted,
    }))
    .into_response()
}
