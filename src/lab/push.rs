//! The lab's push side: the `OnPrem-Proxy` endpoint (bearer token and batch
//! validated, the batch's raw JSON text read as WCF reads it, the real 401
//! challenge, faults and latency injectable), an APNs-shaped device endpoint
//! that records badges, and read-only views of devices and mailboxes (what a
//! phone would show), used by end-to-end probes as their `badge_url`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::{delay, is_guid, Lab, PushFault, ACS_APP_ID, ALLOWED_SKEW_SECONDS, EXCHANGE_APP_ID};
use crate::jwt;

pub(crate) const PUBLISH_PATH: &str = "/PushNotifications/service.svc/PublishOnPremNotifications";
/// Largest batch the proxy accepts.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// APNs' payload limit.
const MAX_APNS_PAYLOAD: usize = 4096;

pub(crate) fn routes() -> Router<Lab> {
    Router::new()
        .route(PUBLISH_PATH, post(publish))
        .route("/3/device/{token}", post(apns))
        .route("/devices/{token}", get(device))
        .route("/mailboxes/{address}", get(mailbox))
}

fn fault(status: StatusCode, message: &str, can_retry: bool, backoff_ms: u64) -> Response {
    (
        status,
        Json(json!({
            "Message": message,
            "CanRetry": can_retry,
            "BackOffTimeInMilliseconds": backoff_ms,
            "OriginatingServer": "LAB01.sonde.local",
        })),
    )
        .into_response()
}

/// The challenge the real push endpoint sends with a 401: it trusts ACS for
/// any realm (`@*`).
pub(crate) const CHALLENGE: &str = concat!(
    "Bearer client_id=\"00000002-0000-0ff1-ce00-000000000000\", ",
    "trusted_issuers=\"00000001-0000-0000-c000-000000000000@*\", ",
    "token_types=\"app_asserted_user_v1 service_asserted_app_v1\", ",
    "authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", ",
    "error=\"invalid_token\""
);

fn unauthorized(why: &str) -> Response {
    let mut resp = fault(StatusCode::UNAUTHORIZED, why, false, 0);
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(CHALLENGE),
    );
    resp
}

/// Checks a bearer token the lab issued: signature by the lab's key, issuer,
/// audience (Exchange Online), lifetime against the lab's clock.
fn check_bearer(lab: &Lab, headers: &HeaderMap) -> Result<(), &'static str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("The Authorization header is missing.")?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or("The Authorization header is not a Bearer token.")?;
    let d = jwt::decode(token.trim()).map_err(|_| "The bearer token is malformed.")?;
    if d.alg() != Some("RS256") {
        return Err("The bearer token's signing algorithm is not accepted.");
    }
    d.verify_rs256(lab.signer.cert_der())
        .map_err(|_| "The bearer token's signature is not valid.")?;
    let tenant = lab.tenant_id();
    if d.claim_str("iss") != Some(format!("{ACS_APP_ID}@{tenant}").as_str()) {
        return Err("The bearer token was not issued by a trusted issuer.");
    }
    let aud = d.claim_str("aud").unwrap_or("");
    if !(aud.starts_with(&format!("{EXCHANGE_APP_ID}/")) && aud.ends_with(&format!("@{tenant}"))) {
        return Err("The bearer token's audience is not Exchange Online.");
    }
    let now = lab.now();
    match (d.claim_i64("nbf"), d.claim_i64("exp")) {
        (Some(nbf), Some(exp))
            if now + ALLOWED_SKEW_SECONDS >= nbf && now - ALLOWED_SKEW_SECONDS <= exp =>
        {
            Ok(())
        }
        _ => Err("The bearer token has expired or is not yet valid."),
    }
}

/// What a batch asks for, once validated.
#[derive(Debug)]
struct Delivery {
    device: String,
    badge: u32,
}

/// The batch as WCF's JSON reader sees it: `lastSubscriptionUpdate` kept as
/// raw JSON text, because WCF decides from the text whether it is a DateTime.
#[derive(Deserialize)]
struct RawBatch<'a> {
    #[serde(borrow, default)]
    notifications: Vec<RawNotification<'a>>,
}

#[derive(Deserialize)]
struct RawNotification<'a> {
    #[serde(borrow, default)]
    recipients: Vec<RawRecipient<'a>>,
}

#[derive(Deserialize)]
struct RawRecipient<'a> {
    #[serde(rename = "lastSubscriptionUpdate", borrow, default)]
    last_subscription_update: Option<&'a RawValue>,
}

/// Validates a notification batch as the proxy does; returns the badge updates of
/// the non-monitoring notifications.
fn validate_batch(body: &[u8], now_ms: i64) -> Result<Vec<Delivery>, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("The request body is not valid JSON: {e}"))?;
    // Read once; its error matters only once the shape checks below have passed.
    let raw = serde_json::from_slice::<RawBatch<'_>>(body)
        .map_err(|e| format!("There was an error deserializing the batch: {e}"));
    let notes = v
        .get("notifications")
        .and_then(Value::as_array)
        .ok_or("The batch has no 'notifications' array.")?;
    if notes.is_empty() {
        return Err("The batch has no notifications.".into());
    }
    let mut out = Vec::new();
    for (i, n) in notes.iter().enumerate() {
        let payload = n
            .get("payload")
            .ok_or(format!("Notification {i} has no payload."))?;
        let tenant = payload
            .get("tenantId")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !tenant.is_empty() && !is_guid(tenant) {
            return Err(format!(
                "Notification {i}: tenantId must be empty or a GUID."
            ));
        }
        let monitoring = payload
            .get("isMonitoring")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let count = payload.get("unseenEmailCount").and_then(Value::as_u64);
        let recipients = n
            .get("recipients")
            .and_then(Value::as_array)
            .filter(|r| !r.is_empty())
            .ok_or(format!("Notification {i} has no recipients."))?;
        for (j, r) in recipients.iter().enumerate() {
            let app = r.get("appId").and_then(Value::as_str).unwrap_or("");
            let device = r.get("deviceId").and_then(Value::as_str).unwrap_or("");
            if app.is_empty() || device.is_empty() {
                return Err(format!(
                    "Notification {i}, recipient {j}: appId and deviceId are required."
                ));
            }
            let update = raw
                .as_ref()
                .map_err(Clone::clone)?
                .notifications
                .get(i)
                .and_then(|n| n.recipients.get(j))
                .and_then(|r| r.last_subscription_update)
                .map(RawValue::get)
                .filter(|t| *t != "null");
            if let Some(update) = update {
                let ms = parse_wcf_date(update).ok_or_else(|| {
                    format!(
                        "Notification {i}, recipient {j}: DateTime content '{}' does not start with '\\/Date(' and end with ')\\/' as required for JSON.",
                        update.trim_matches('"').chars().take(64).collect::<String>()
                    )
                })?;
                if ms > now_ms + ALLOWED_SKEW_SECONDS * 1000 {
                    return Err(format!(
                        "Notification {i}, recipient {j}: lastSubscriptionUpdate is in the future."
                    ));
                }
            }
            if !monitoring {
                if let Some(c) = count {
                    out.push(Delivery {
                        device: device.to_string(),
                        badge: c.min(u64::from(u32::MAX)) as u32,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The raw JSON text `"\/Date(1700000000000)\/"` (with an optional `+hhmm`
/// offset) -> milliseconds, as WCF reads a DateTime: only the escaped form is one;
/// `"/Date(…)/"` is a plain string.
fn parse_wcf_date(raw: &str) -> Option<i64> {
    let inner = raw.strip_prefix("\"\\/Date(")?.strip_suffix(")\\/\"")?;
    let (sign, unsigned) = match inner.strip_prefix('-') {
        Some(r) => (-1, r),
        None => (1, inner),
    };
    let digits_end = unsigned
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(unsigned.len());
    let (digits, offset) = unsigned.split_at(digits_end);
    let offset_ok = offset.is_empty()
        || (offset.len() == 5
            && offset.starts_with(['+', '-'])
            && offset[1..].chars().all(|c| c.is_ascii_digit()));
    if digits.is_empty() || digits.len() > 15 || !offset_ok {
        return None;
    }
    digits.parse::<i64>().ok().map(|ms| sign * ms)
}

async fn publish(State(lab): State<Lab>, headers: HeaderMap, body: Bytes) -> Response {
    let (fault_cfg, latency) = {
        let s = lab.state();
        (s.faults.push.clone(), s.faults.push_latency_ms)
    };
    delay(latency).await;
    if let Err(why) = check_bearer(&lab, &headers) {
        return unauthorized(why);
    }
    if body.len() > MAX_BATCH_BYTES {
        return fault(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The batch is too large.",
            false,
            0,
        );
    }
    let deliveries = match validate_batch(&body, lab.now() * 1000) {
        Ok(d) => d,
        Err(why) => return fault(StatusCode::BAD_REQUEST, &why, false, 0),
    };
    match fault_cfg {
        Some(PushFault::Fault {
            status,
            can_retry,
            backoff_ms,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return fault(
                status,
                "The push notification service is unavailable (injected fault).",
                can_retry,
                backoff_ms,
            );
        }
        Some(PushFault::Drop) => {}
        None => {
            let now = lab.now();
            let mut s = lab.state();
            for d in deliveries {
                s.set_badge(&d.device, d.badge, now);
            }
        }
    }
    lab.state().pushes_accepted += 1;
    let mut resp = StatusCode::OK.into_response();
    if let Some(id) = headers.get("client-request-id") {
        if headers
            .get("return-client-request-id")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            resp.headers_mut().insert("client-request-id", id.clone());
        }
    }
    resp
}

fn apns_error(status: StatusCode, reason: &str) -> Response {
    (status, Json(json!({"reason": reason}))).into_response()
}

/// `POST /3/device/<hex token>` with `{"aps":{"badge":n}}`, shaped like APNs.
async fn apns(State(lab): State<Lab>, Path(token): Path<String>, body: Bytes) -> Response {
    if token.len() != 64 || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return apns_error(StatusCode::BAD_REQUEST, "BadDeviceToken");
    }
    if body.is_empty() {
        return apns_error(StatusCode::BAD_REQUEST, "PayloadEmpty");
    }
    if body.len() > MAX_APNS_PAYLOAD {
        return apns_error(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge");
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return apns_error(StatusCode::BAD_REQUEST, "BadPayload");
    };
    let Some(badge) = v.pointer("/aps/badge").and_then(Value::as_u64) else {
        return apns_error(StatusCode::BAD_REQUEST, "BadPayload");
    };
    let now = lab.now();
    lab.state().set_badge(
        &token.to_ascii_lowercase(),
        badge.min(u64::from(u32::MAX)) as u32,
        now,
    );
    let mut resp = StatusCode::OK.into_response();
    if let Ok(v) = HeaderValue::from_str(&crate::guid::random().to_uppercase()) {
        resp.headers_mut().insert("apns-id", v);
    }
    resp
}

async fn device(State(lab): State<Lab>, Path(token): Path<String>) -> Response {
    let s = lab.state();
    let token = token.to_ascii_lowercase();
    let last = s
        .badge_log
        .iter()
        .rev()
        .find(|e| e.device == token)
        .map(|e| e.at);
    Json(json!({"device": token, "badge": s.badges.get(&token), "updated_at": last}))
        .into_response()
}

async fn mailbox(State(lab): State<Lab>, Path(address): Path<String>) -> Response {
    let s = lab.state();
    match s.mailboxes.get(&address.to_ascii_lowercase()) {
        Some(m) => {
            let devices: Vec<Value> = m
                .devices
                .iter()
                .map(|d| json!({"device": d, "badge": s.badges.get(d)}))
                .collect();
            Json(json!({"address": address, "unseen": m.unseen, "devices": devices}))
                .into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such mailbox"})),
        )
            .into_response(),
    }
}

/// A mail reached `address`: raise its unseen count and push the new badge to its
/// devices, through the same fault and latency settings as the proxy.
pub(crate) async fn mail_arrived(lab: &Lab, address: &str) {
    let (devices, badge, fault_cfg, latency) = {
        let mut s = lab.state();
        let key = address.to_ascii_lowercase();
        let Some(m) = s.mailboxes.get_mut(&key) else {
            return;
        };
        m.unseen = m.unseen.saturating_add(1);
        let out = (m.devices.clone(), m.unseen);
        (
            out.0,
            out.1,
            s.faults.push.clone(),
            s.faults.push_latency_ms,
        )
    };
    if fault_cfg.is_some() {
        return; // a failing or dropping proxy delivers nothing
    }
    let lab = lab.clone();
    tokio::spawn(async move {
        delay(latency).await;
        let now = lab.now();
        let mut s = lab.state();
        for d in devices {
            s.set_badge(&d, badge, now);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch whose `lastSubscriptionUpdate` is `update` as raw JSON text.
    fn batch(tenant: &str, device: &str, update: &str) -> Vec<u8> {
        json!({"notifications": [{"payload": {"tenantId": tenant, "unseenEmailCount": 4, "isMonitoring": false},
            "recipients": [{"appId": "MonitoringProbeAppId", "deviceId": device, "lastSubscriptionUpdate": "@@"}]}]})
        .to_string()
        .replace("\"@@\"", update)
        .into_bytes()
    }

    #[test]
    fn batches_are_validated_like_the_proxy() {
        let now = 1_700_000_000_000;
        let ok = validate_batch(&batch("", "ab", r#""\/Date(1690000000000)\/""#), now).unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].badge, 4);
        assert!(
            validate_batch(&batch("nope", "ab", r#""\/Date(1)\/""#), now)
                .unwrap_err()
                .contains("GUID")
        );
        assert!(validate_batch(&batch("", "", r#""\/Date(1)\/""#), now)
            .unwrap_err()
            .contains("deviceId"));
        assert!(
            validate_batch(&batch("", "ab", r#""\/Date(1800000000000)\/""#), now)
                .unwrap_err()
                .contains("future")
        );
        assert!(validate_batch(&batch("", "ab", r#""yesterday""#), now)
            .unwrap_err()
            .contains("/Date("));
        // WCF reads a DateTime only from the escaped text; the plain string is refused.
        let e = validate_batch(&batch("", "ab", r#""/Date(1690000000000)/""#), now).unwrap_err();
        assert!(
            e.contains("DateTime content '/Date(1690000000000)/' does not start with"),
            "{e}"
        );
        assert!(validate_batch(&batch("", "ab", "1690000000000"), now).is_err());
        assert!(validate_batch(&batch("", "ab", "null"), now).is_ok());
        assert!(validate_batch(br#"{"notifications":[]}"#, now)
            .unwrap_err()
            .contains("no notifications"));
        assert!(validate_batch(b"{", now)
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(validate_batch(br#"{"notifications":5}"#, now)
            .unwrap_err()
            .contains("no 'notifications' array"));
        let monitoring = json!({"notifications": [{"payload": {"tenantId": "", "unseenEmailCount": 1, "isMonitoring": true},
            "recipients": [{"appId": "MonitoringProbeAppId", "deviceId": "0000"}]}]});
        assert!(validate_batch(monitoring.to_string().as_bytes(), now)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn wcf_dates_parse_only_from_the_escaped_text() {
        assert_eq!(
            parse_wcf_date(r#""\/Date(1700000000000)\/""#),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_wcf_date(r#""\/Date(1700000000000+0100)\/""#),
            Some(1_700_000_000_000)
        );
        assert_eq!(parse_wcf_date(r#""\/Date(-1000)\/""#), Some(-1000));
        assert_eq!(parse_wcf_date(r#""/Date(1700000000000)/""#), None);
        assert_eq!(parse_wcf_date(r#""\/Date()\/""#), None);
        assert_eq!(parse_wcf_date(r#""\/Date(1+01)\/""#), None);
        assert_eq!(parse_wcf_date(r#""\/Date(99999999999999999999)\/""#), None);
        assert_eq!(parse_wcf_date("1700000000000"), None);
    }

    #[test]
    fn the_monitoring_batch_as_the_probe_writes_it_is_accepted() {
        let text = r#"{"notifications":[{"payload":{"isMonitoring":true,"tenantId":"","unseenEmailCount":1},"recipients":[{"appId":"MonitoringProbeAppId","deviceId":"0000000000000000000000000000000000000000000000000000000000000000","lastSubscriptionUpdate":"\/Date(1699913600000)\/"}]}]}"#;
        assert!(validate_batch(text.as_bytes(), 1_700_000_000_000)
            .unwrap()
            .is_empty());
    }
}
