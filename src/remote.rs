//! The CLI's side of a running agent's HTTP API: `sonde probe NAME --remote URL`
//! (the on-demand run endpoint) and `sonde status` (the health report). Printing
//! and exit codes stay in `main.rs` and `output.rs`; the API itself is `api`.

use std::time::Duration;

use reqwest::Url;
use serde_json::Value;

use crate::monitor::MonitorState;

/// Why a call to the agent failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RemoteError {
    #[error("`{0}` is not an http(s) URL")]
    BadUrl(String),
    #[error("cannot reach the agent at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The agent answered with an error object.
    #[error("the agent answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("the agent's answer is not the expected JSON: {0}")]
    Body(String),
}

/// The agent's URL from its `[api] listen`: a wildcard address is reached on
/// loopback.
pub(crate) fn url_of_listen(listen: std::net::SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, listen.port()))
}

/// `base` plus path segments, each percent-encoded.
pub(crate) fn endpoint(base: &str, segments: &[&str]) -> Result<Url, RemoteError> {
    let mut url = Url::parse(base).map_err(|_| RemoteError::BadUrl(base.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(RemoteError::BadUrl(base.to_string()));
    }
    url.path_segments_mut()
        .map_err(|_| RemoteError::BadUrl(base.to_string()))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        // An on-demand run lasts up to the probe's timeout.
        .timeout(Duration::from_secs(300))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

async fn answer(url: &Url, request: reqwest::RequestBuilder) -> Result<Value, RemoteError> {
    let response = request
        .send()
        .await
        .map_err(|source| RemoteError::Unreachable {
            url: url.to_string(),
            source,
        })?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| RemoteError::Body(e.to_string()))?;
    let body: Option<Value> = serde_json::from_str(&text).ok();
    if !status.is_success() {
        let message = body
            .as_ref()
            .and_then(|b| b.get("message")?.as_str().map(str::to_string))
            .unwrap_or_else(|| text.clone());
        let message = crate::human::text::peer(&message);
        return Err(RemoteError::Api {
            status: status.as_u16(),
            message,
        });
    }
    body.ok_or_else(|| RemoteError::Body(crate::human::text::peer(&text)))
}

/// `POST {base}/api/v1/probes/{name}/run` with the bearer token: the object of
/// `sonde probe --format json`.
pub(crate) async fn run_probe(base: &str, name: &str, token: &str) -> Result<Value, RemoteError> {
    let url = endpoint(base, &["api", "v1", "probes", name, "run"])?;
    answer(&url, client().post(url.clone()).bearer_auth(token)).await
}

/// `GET {base}/api/v1/health`.
pub(crate) async fn health(base: &str) -> Result<Value, RemoteError> {
    let url = endpoint(base, &["api", "v1", "health"])?;
    answer(&url, client().get(url.clone())).await
}

/// `sonde status`'s exit code: 0 healthy, 1 degraded, 2 unhealthy, 3 anything
/// else (unknown, nothing to say), like a Nagios plugin.
pub(crate) fn status_exit_code(report: &Value) -> u8 {
    match report["state"].as_str() {
        Some(s) if s == MonitorState::Healthy.as_str() => 0,
        Some(s) if s == MonitorState::Degraded.as_str() => 1,
        Some(s) if s == MonitorState::Unhealthy.as_str() => 2,
        _ => 3,
    }
}

/// The health report as text: each health set and its state, then its probes
/// with state, last status and summary, in aligned columns.
pub(crate) fn status_text(report: &Value) -> String {
    // The report comes over the network: its text is escaped (a newline in a
    // summary must not forge a row) and summaries are clipped.
    let str_of = |v: &Value| crate::human::text::escape(v.as_str().unwrap_or("-")).into_owned();
    let empty = Vec::new();
    let sets = report["health_sets"].as_array().unwrap_or(&empty);
    let mut rows: Vec<(usize, [String; 4])> = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        for p in set["probes"].as_array().unwrap_or(&empty) {
            let last = &p["last_result"];
            let mut summary = if last.is_null() {
                "no result yet".to_string()
            } else {
                crate::human::text::clip(&str_of(&last["summary"]), 1024).into_owned()
            };
            if let Some(by) = p["suppressed_by"].as_str() {
                summary.push_str(&format!(" [depends on {by}]"));
            }
            if p["flapping"].as_bool() == Some(true) {
                summary.push_str(" [flapping]");
            }
            let status = if last.is_null() {
                "-".to_string()
            } else {
                str_of(&last["status"])
            };
            rows.push((
                i,
                [str_of(&p["name"]), str_of(&p["state"]), status, summary],
            ));
        }
    }
    let mut widths = [0usize; 3];
    for (_, r) in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for (i, set) in sets.iter().enumerate() {
        out.push_str(&format!(
            "{}: {}\n",
            str_of(&set["name"]),
            str_of(&set["state"])
        ));
        for (_, [name, state, status, summary]) in rows.iter().filter(|(s, _)| *s == i) {
            let line = format!(
                "  {name:<w0$}  {state:<w1$}  {status:<w2$}  {summary}",
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    if sets.is_empty() {
        out.push_str("no probes\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoints_encode_names_and_keep_a_base_path() {
        let u = endpoint(
            "http://127.0.0.1:9323",
            &["api", "v1", "probes", "a b/c", "run"],
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9323/api/v1/probes/a%20b%2Fc/run"
        );
        let u = endpoint("https://mon.example.com/sonde/", &["api", "v1", "health"]).unwrap();
        assert_eq!(u.as_str(), "https://mon.example.com/sonde/api/v1/health");
        assert!(endpoint("ftp://x", &[]).is_err());
        assert!(endpoint("127.0.0.1:9323", &[]).is_err());
        assert_eq!(
            url_of_listen("0.0.0.0:9323".parse().unwrap()),
            "http://127.0.0.1:9323"
        );
        assert_eq!(url_of_listen("[::]:1".parse().unwrap()), "http://[::1]:1");
    }

    #[test]
    fn status_text_lists_sets_then_probes() {
        let report = json!({
            "state": "unhealthy",
            "health_sets": [
                {"name": "certs", "state": "healthy", "probes": [
                    {"name": "oauth-cert", "state": "healthy", "flapping": false,
                     "suppressed_by": null,
                     "last_result": {"status": "ok", "summary": "expires in 200d"}}]},
                {"name": "site", "state": "unhealthy", "probes": [
                    {"name": "web", "state": "unhealthy", "flapping": true,
                     "suppressed_by": "dns", "last_result": {"status": "critical", "summary": "refused"}},
                    {"name": "new", "state": "unknown", "flapping": false,
                     "suppressed_by": null, "last_result": null}]}
            ]
        });
        assert_eq!(
            status_text(&report),
            "certs: healthy\n  oauth-cert  healthy    ok        expires in 200d\n\
             site: unhealthy\n  web         unhealthy  critical  refused [depends on dns] [flapping]\n  \
             new         unknown    -         no result yet\n"
        );
        assert_eq!(status_exit_code(&report), 2);
        assert_eq!(status_exit_code(&json!({"state": "healthy"})), 0);
        assert_eq!(status_exit_code(&json!({})), 3);
    }
}
