//! `kind = "http"`: one HTTP(S) request per run, checked against the expected status
//! codes, body substrings, JSON pointer assertions and a cap on the body size.
//!
//! Lives here: the kind's settings (`HttpConfig`) and their pure validation, the
//! run, redirects followed hop by hop, and how request errors map to categories.
//! Not here: the shared HTTP pieces (`crate::net::http`: the client probes share
//! per TLS setting, with no connection reuse between runs so that every run
//! measures a fresh connection like blackbox_exporter; capped body reads; error
//! classes) and timeouts, timing, spans and shared metrics, which the runner owns.
//!
//! Redirects are followed here rather than by the client, because each hop
//! decides what the request may carry: the configured headers go only to the
//! configured URL's origin, no `Referer` is ever sent, an https-to-http hop is
//! refused unless `allow_downgrade`, and a hop may lead only to the URL's own
//! host or one in `redirect_hosts`. A client-side redirect policy can stop a hop
//! but cannot take headers off it, and being part of the client it would split
//! the shared client by every probe's redirect settings.
//!
//! Summaries never carry request headers, the request body or the URL's userinfo:
//! those may hold credentials.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::{BuildContext, ProbeKind};
use crate::human::ByteSize;
use crate::net::http::{
    check_url, classify, error_chain, origin, read_capped, without_userinfo, BodyError, Clients,
    ErrorClass, UrlError,
};
use crate::outcome::{Category, Outcome, Probe, ProbeContext};
use crate::spec::{BuildError, SpecProblem};

/// Redirects followed at most, like browsers and blackbox_exporter.
const MAX_REDIRECTS: usize = 10;

/// Longest quoted value (expected or found) a summary shows before eliding.
const MAX_SHOWN: usize = 64;

/// The kind-specific keys of a `kind = "http"` probe.
///
/// `Debug` is written by hand: header values, the request body and the URL's
/// userinfo may hold credentials and are redacted.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub expect_status: ExpectStatus,
    #[serde(default)]
    pub body_contains: Option<String>,
    #[serde(default)]
    pub body_not_contains: Option<String>,
    /// JSON pointer -> expected value, compared as JSON (numbers by value).
    #[serde(default)]
    pub json: BTreeMap<String, Value>,
    #[serde(default)]
    pub max_body: ByteSize,
    #[serde(default = "yes")]
    pub verify: bool,
    /// PEM file with extra trust anchors, relative to the defining file's directory.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "yes")]
    pub follow_redirects: bool,
    /// Hosts a redirect may lead to besides the URL's own: names or addresses,
    /// `*.example.org` for its subdomains, `*` for any host.
    #[serde(default)]
    pub redirect_hosts: Vec<String>,
    /// Follow a redirect from https to http.
    #[serde(default)]
    pub allow_downgrade: bool,
}

fn default_method() -> String {
    "GET".to_string()
}

fn yes() -> bool {
    true
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = match Url::parse(&self.url) {
            Ok(url) => without_userinfo(&url),
            Err(_) => "<unparsable URL>".to_string(),
        };
        let headers: BTreeMap<&str, &str> = self
            .headers
            .keys()
            .map(|k| (k.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("HttpConfig")
            .field("url", &url)
            .field("method", &self.method)
            .field("headers", &headers)
            .field("body", &self.body.as_ref().map(|_| "<redacted>"))
            .field("expect_status", &self.expect_status)
            .field("body_contains", &self.body_contains)
            .field("body_not_contains", &self.body_not_contains)
            .field("json", &self.json)
            .field("max_body", &self.max_body)
            .field("verify", &self.verify)
            .field("ca_file", &self.ca_file)
            .field("follow_redirects", &self.follow_redirects)
            .field("redirect_hosts", &self.redirect_hosts)
            .field("allow_downgrade", &self.allow_downgrade)
            .finish()
    }
}

impl ProbeKind for HttpConfig {
    /// Pure checks of every key; all problems at once. Never echoes header values,
    /// the body or the URL text (they may hold credentials).
    fn validate(&self) -> Vec<SpecProblem> {
        let mut problems = Vec::new();

        match check_url(&self.url) {
            Ok(_) => {}
            Err(UrlError::NotHttp { scheme }) => problems.push(SpecProblem::new(
                "url",
                format!("scheme `{scheme}` is not supported: use http or https"),
            )),
            Err(e) => problems.push(SpecProblem::new("url", e.to_string())),
        }

        match Method::from_bytes(self.method.as_bytes()) {
            Err(_) => problems.push(SpecProblem::new(
                "method",
                format!("{:?} is not a valid HTTP method", self.method),
            )),
            Ok(_) => {
                let upper = self.method.to_ascii_uppercase();
                let standard = [
                    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
                ];
                if upper != self.method && standard.contains(&upper.as_str()) {
                    problems.push(SpecProblem::new(
                        "method",
                        format!("methods are case-sensitive: write `{upper}`"),
                    ));
                }
            }
        }

        for (name, value) in &self.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(SpecProblem::new(
                    "headers",
                    format!("{name:?} is not a valid header name"),
                ));
            }
            if HeaderValue::from_str(value).is_err() {
                problems.push(SpecProblem::new(
                    "headers",
                    format!("the value of header {name:?} holds characters a header cannot carry"),
                ));
            }
        }

        problems.extend(
            self.expect_status
                .problems()
                .into_iter()
                .map(|m| SpecProblem::new("expect_status", m)),
        );

        if self.body_contains.as_deref() == Some("") {
            problems.push(SpecProblem::new("body_contains", "must not be empty"));
        }
        if self.body_not_contains.as_deref() == Some("") {
            problems.push(SpecProblem::new("body_not_contains", "must not be empty"));
        }

        for pointer in self.json.keys() {
            if let Err(m) = check_json_pointer(pointer) {
                problems.push(SpecProblem::new("json", m));
            }
        }

        if self.max_body.0 == 0 {
            problems.push(SpecProblem::new("max_body", "must be greater than 0"));
        }

        if self.ca_file.is_some() && !self.verify {
            problems.push(SpecProblem::new(
                "ca_file",
                "has no effect with `verify = false`: remove one of them",
            ));
        }

        for host in &self.redirect_hosts {
            let name = host.strip_prefix("*.").unwrap_or(host);
            let bad = name.is_empty()
                || (name.contains('*') && host != "*")
                || name
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "/@?#".contains(c));
            if bad {
                problems.push(SpecProblem::new(
                    "redirect_hosts",
                    format!(
                        "{host:?} is not a host: write a name or address (`api.example.org`), \
                         `*.example.org` or `*`"
                    ),
                ));
            }
        }
        if !self.follow_redirects {
            if !self.redirect_hosts.is_empty() {
                problems.push(SpecProblem::new(
                    "redirect_hosts",
                    "has no effect with `follow_redirects = false`: remove one of them",
                ));
            }
            if self.allow_downgrade {
                problems.push(SpecProblem::new(
                    "allow_downgrade",
                    "has no effect with `follow_redirects = false`: remove one of them",
                ));
            }
        }

        problems
    }

    fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Probe>, BuildError> {
        Ok(Arc::new(HttpProbe::new(self, ctx.base_dir)?))
    }
}

/// RFC 6901: empty (the whole document) or `/`-separated tokens where `~` only
/// starts `~0` or `~1`.
fn check_json_pointer(pointer: &str) -> Result<(), String> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(format!(
            "{pointer:?} is not a JSON pointer: it must be empty or start with `/`"
        ));
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "{pointer:?} is not a JSON pointer: `~` must be followed by 0 or 1"
            ));
        }
    }
    Ok(())
}

/// Accepted status codes as inclusive ranges. In config: `"200-299,301"`, `"2xx"`,
/// `204`, or an array of codes and range strings. Syntax errors fail deserialization;
/// bounds are checked by `HttpConfig::validate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectStatus {
    ranges: Vec<(u32, u32)>,
}

impl Default for ExpectStatus {
    fn default() -> Self {
        ExpectStatus {
            ranges: vec![(200, 399)],
        }
    }
}

impl ExpectStatus {
    /// Parses comma-separated codes (`301`), ranges (`200-299`) and classes (`2xx`).
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            ranges.push(parse_status_part(part)?);
        }
        Ok(ExpectStatus { ranges })
    }

    #[cfg(test)]
    pub(crate) fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }

    pub(crate) fn contains(&self, code: u16) -> bool {
        let code = u32::from(code);
        self.ranges.iter().any(|&(lo, hi)| lo <= code && code <= hi)
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.ranges.is_empty() {
            problems.push("no status codes given".to_string());
        }
        for &(lo, hi) in &self.ranges {
            let ends: &[u32] = if lo == hi { &[lo] } else { &[lo, hi] };
            for &code in ends {
                if !(100..=599).contains(&code) {
                    problems.push(format!("status {code} is outside 100-599"));
                }
            }
            if lo > hi {
                problems.push(format!("range {lo}-{hi} is reversed: write {hi}-{lo}"));
            }
        }
        problems
    }
}

fn parse_status_part(part: &str) -> Result<(u32, u32), String> {
    let code = |s: &str| {
        s.trim()
            .parse::<u32>()
            .map_err(|_| format!("{part:?} is not a status code, range (200-299) or class (2xx)"))
    };
    if let Some(class) = part.strip_suffix("xx").or_else(|| part.strip_suffix("XX")) {
        let c = code(class)?;
        return Ok((c * 100, c * 100 + 99));
    }
    match part.split_once('-') {
        Some((lo, hi)) => Ok((code(lo)?, code(hi)?)),
        None => {
            let c = code(part)?;
            Ok((c, c))
        }
    }
}

impl fmt::Display for ExpectStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for ExpectStatus {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExpectStatus;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status code, a string like \"200-299,301\", or an array of them")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ExpectStatus, E> {
                let c = u32::try_from(v)
                    .map_err(|_| E::custom(format!("status {v} is outside 100-599")))?;
                Ok(ExpectStatus {
                    ranges: vec![(c, c)],
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ExpectStatus, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("status {v} is outside 100-599"))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ExpectStatus, E> {
                ExpectStatus::parse(v).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ExpectStatus, A::Error> {
                let mut ranges = Vec::new();
                while let Some(item) = seq.next_element::<ExpectStatus>()? {
                    ranges.extend(item.ranges);
                }
                Ok(ExpectStatus { ranges })
            }
        }
        de.deserialize_any(V)
    }
}

/// A runnable `http` probe: its settings and a handle on the client it shares
/// with every probe of the same TLS settings.
pub struct HttpProbe {
    client: reqwest::Client,
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<String>,
    expect_status: ExpectStatus,
    body_contains: Option<String>,
    body_not_contains: Option<String>,
    json: Vec<(String, Value)>,
    max_body: ByteSize,
    /// `None`: redirects are answers like any other.
    redirects: Option<Redirects>,
}

/// Where redirects may lead.
struct Redirects {
    /// Lowercased `redirect_hosts`.
    hosts: Vec<String>,
    allow_downgrade: bool,
}

impl Redirects {
    /// Whether a hop may lead to `next`, coming from `from`; the refusal's
    /// message otherwise. `first` is the configured URL.
    fn check(&self, first: &Url, from: &Url, next: &Url) -> Result<(), String> {
        if !matches!(next.scheme(), "http" | "https") {
            return Err(format!(
                "redirect to a {} URL refused: only http and https are followed",
                next.scheme()
            ));
        }
        if from.scheme() == "https" && next.scheme() == "http" && !self.allow_downgrade {
            return Err(format!(
                "redirect from https to {} refused: set allow_downgrade = true to follow it",
                origin(next.as_str())
            ));
        }
        let host = next.host_str().unwrap_or("").to_ascii_lowercase();
        let own = first
            .host_str()
            .is_some_and(|h| h.eq_ignore_ascii_case(&host));
        let listed = self.hosts.iter().any(|allowed| {
            allowed == "*"
                || *allowed == host
                || allowed
                    .strip_prefix("*.")
                    .is_some_and(|domain| host.ends_with(&format!(".{domain}")))
        });
        if own || listed {
            Ok(())
        } else {
            Err(format!(
                "redirect to host {host} refused: not the URL's host and not in redirect_hosts"
            ))
        }
    }
}

impl HttpProbe {
    /// Builds the probe with the process's shared clients. `base_dir` resolves a
    /// relative `ca_file`.
    pub fn new(cfg: &HttpConfig, base_dir: &Path) -> Result<Self, BuildError> {
        HttpProbe::with_clients(cfg, base_dir, Clients::process())
    }

    /// Builds the probe, taking its client from `clients`.
    pub(crate) fn with_clients(
        cfg: &HttpConfig,
        base_dir: &Path,
        clients: &Clients,
    ) -> Result<Self, BuildError> {
        if let Some(p) = cfg.validate().into_iter().next() {
            return Err(p.into());
        }
        let url = Url::parse(&cfg.url)
            .map_err(|e| BuildError::new("url", format!("invalid URL: {e}")))?;
        let method = Method::from_bytes(cfg.method.as_bytes()).map_err(|_| {
            BuildError::new(
                "method",
                format!("{:?} is not a valid HTTP method", cfg.method),
            )
        })?;
        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                BuildError::new("headers", format!("{name:?} is not a valid header name"))
            })?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                BuildError::new(
                    "headers",
                    format!("the value of header {name:?} is not valid"),
                )
            })?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        let ca_file = cfg.ca_file.as_ref().map(|f| base_dir.join(f));
        let client = clients
            .probe_client(cfg.verify, ca_file.as_deref())
            .map_err(|m| BuildError::tls(cfg.ca_file.is_some(), m))?;
        let redirects = cfg.follow_redirects.then(|| Redirects {
            hosts: cfg
                .redirect_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            allow_downgrade: cfg.allow_downgrade,
        });

        Ok(HttpProbe {
            client,
            method,
            url,
            headers,
            body: cfg.body.clone(),
            expect_status: cfg.expect_status.clone(),
            body_contains: cfg.body_contains.clone(),
            body_not_contains: cfg.body_not_contains.clone(),
            json: cfg
                .json
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            max_body: cfg.max_body,
            redirects,
        })
    }

    /// Sends the request and follows the redirects the probe allows: the final
    /// response, or the outcome that ended the chain.
    async fn fetch(&self) -> Result<reqwest::Response, Outcome> {
        let mut url = self.url.clone();
        let mut method = self.method.clone();
        let mut body = self.body.clone();
        // Every URL requested so far, the current one last.
        let mut visited: Vec<Url> = Vec::new();
        loop {
            let mut request = self.client.request(method.clone(), url.clone());
            // The configured headers (an API key, say) are for the configured
            // origin only: never for another host, nor the same host over
            // another scheme or port.
            if url.origin() == self.url.origin() {
                request = request.headers(self.headers.clone());
            }
            if let Some(body) = &body {
                request = request.body(body.clone());
            }
            let response = request
                .send()
                .await
                .map_err(|e| self.request_failed(e, Stage::Request))?;
            let Some(redirects) = &self.redirects else {
                return Ok(response);
            };
            let Some(next) = redirect_target(&response, &url) else {
                return Ok(response);
            };
            let status = response.status();
            drop(response);
            visited.push(url);
            if visited.contains(&next) {
                let message = format!("redirect loop at {}", without_userinfo(&next));
                return Err(Outcome::critical(Category::Protocol, message));
            }
            if visited.len() > MAX_REDIRECTS {
                return Err(Outcome::critical(
                    Category::Protocol,
                    format!("more than {MAX_REDIRECTS} redirects"),
                ));
            }
            let from = visited.last().unwrap_or(&self.url);
            if let Err(message) = redirects.check(&self.url, from, &next) {
                return Err(Outcome::critical(Category::Protocol, message));
            }
            // As browsers and reqwest do: 301, 302 and 303 turn the request
            // into a GET without a body (HEAD stays HEAD); 307 and 308 repeat it.
            if matches!(
                status,
                StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND | StatusCode::SEE_OTHER
            ) && method != Method::HEAD
            {
                method = Method::GET;
                body = None;
            }
            url = next;
        }
    }

    async fn check(&self) -> Outcome {
        let start = Instant::now();
        let mut response = match self.fetch().await {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        let code = response.status().as_u16();
        let not_after = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate())
            .and_then(leaf_not_after);

        let mut failures = Vec::new();
        if !self.expect_status.contains(code) {
            failures.push(format!("HTTP {code}, expected {}", self.expect_status));
        }

        let body = match read_capped(&mut response, self.max_body.0).await {
            Ok(body) => Some(body),
            Err(BodyError::TooLarge(length)) => {
                let mut m = format!("body exceeds max_body {}", self.max_body);
                if let Some(n) = length {
                    m.push_str(&format!(" (Content-Length {n})"));
                }
                failures.push(m);
                None
            }
            Err(BodyError::Read(e)) => {
                let mut outcome = self.request_failed(e, Stage::Body);
                outcome.observe("status_code", f64::from(code));
                return outcome;
            }
        };
        let latency = start.elapsed();
        drop(response);

        if let Some(body) = &body {
            failures.extend(self.body_failures(body));
        }

        let mut outcome = match (&body, failures.is_empty()) {
            (Some(body), true) => Outcome::ok(format!(
                "HTTP {code} in {} ms, {} bytes",
                latency.as_millis(),
                body.len()
            )),
            _ => Outcome::critical(Category::Protocol, failures.join("; ")),
        };
        outcome.observe("status_code", f64::from(code));
        if let Some(body) = &body {
            outcome.observe("latency_seconds", latency.as_secs_f64());
            outcome.observe("body_bytes", body.len() as f64);
        }
        if let Some(t) = not_after {
            outcome.observe("not_after_timestamp_seconds", t);
        }
        outcome
    }

    /// The body assertions that fail, in config order.
    fn body_failures(&self, body: &[u8]) -> Vec<String> {
        let mut failures = Vec::new();
        let text = String::from_utf8_lossy(body);
        if let Some(needle) = &self.body_contains {
            if !text.contains(needle.as_str()) {
                failures.push(format!(
                    "body does not contain {}",
                    shown(&format!("{needle:?}"))
                ));
            }
        }
        if let Some(needle) = &self.body_not_contains {
            if text.contains(needle.as_str()) {
                failures.push(format!("body contains {}", shown(&format!("{needle:?}"))));
            }
        }
        if !self.json.is_empty() {
            match serde_json::from_slice::<Value>(body) {
                Err(e) => failures.push(format!("body is not JSON: {e}")),
                Ok(doc) => {
                    for (pointer, expected) in &self.json {
                        let expected_text = shown(&expected.to_string());
                        match doc.pointer(pointer) {
                            None => failures.push(format!(
                                "{} is missing, expected {expected_text}",
                                pointer_name(pointer)
                            )),
                            Some(found) if !json_eq(found, expected) => failures.push(format!(
                                "{} is {}, expected {expected_text}",
                                pointer_name(pointer),
                                shown(&found.to_string())
                            )),
                            Some(_) => {}
                        }
                    }
                }
            }
        }
        failures
    }

    fn request_failed(&self, err: reqwest::Error, stage: Stage) -> Outcome {
        let kind = classify(&err);
        let detail = error_chain(&err);
        match kind {
            ErrorClass::Tls(tls) => Outcome::critical(Category::Tls, format!("TLS: {tls}")),
            ErrorClass::Redirect(message) => Outcome::critical(Category::Protocol, message),
            ErrorClass::Connect => {
                let host = self.url.host().map(|h| h.to_string()).unwrap_or_default();
                let port = self.url.port_or_known_default().unwrap_or(0);
                Outcome::critical(
                    Category::Network,
                    format!("cannot connect to {host}:{port}: {detail}"),
                )
            }
            ErrorClass::Io => {
                Outcome::critical(Category::Network, format!("{}: {detail}", stage.as_str()))
            }
            ErrorClass::Other => {
                Outcome::critical(Category::Protocol, format!("{}: {detail}", stage.as_str()))
            }
        }
    }
}

impl Probe for HttpProbe {
    fn run<'a>(&'a self, _ctx: &'a ProbeContext) -> BoxFuture<'a, Outcome> {
        Box::pin(self.check())
    }
}

#[derive(Clone, Copy)]
enum Stage {
    Request,
    Body,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Request => "request failed",
            Stage::Body => "reading the body failed",
        }
    }
}

/// Where a redirect answer points, resolved against the URL it answered: `None`
/// when the answer is not a redirect, or has no usable `Location` (it is then the
/// final answer, as reqwest treats it).
fn redirect_target(response: &reqwest::Response, url: &Url) -> Option<Url> {
    if !matches!(
        response.status(),
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    ) {
        return None;
    }
    let location = response.headers().get(reqwest::header::LOCATION)?;
    url.join(location.to_str().ok()?).ok()
}

fn leaf_not_after(der: &[u8]) -> Option<f64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp() as f64)
}

/// Elides long values so a summary stays one readable line.
fn shown(text: &str) -> String {
    let text = crate::human::text::escape(text);
    if text.chars().count() <= MAX_SHOWN {
        text.to_string()
    } else {
        let head: String = text.chars().take(MAX_SHOWN - 3).collect();
        format!("{head}...")
    }
}

fn pointer_name(pointer: &str) -> &str {
    if pointer.is_empty() {
        "the document"
    } else {
        pointer
    }
}

/// JSON equality where numbers compare by value (TOML `3` equals JSON `3.0`).
fn json_eq(found: &Value, expected: &Value) -> bool {
    match (found, expected) {
        (Value::Number(a), Value::Number(b)) => {
            a == b || matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y)
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => found == expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::net::http::USER_AGENT;
    use crate::outcome::Status;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use std::net::SocketAddr;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::time::Duration;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpListener;

    // ---- a tiny HTTP/1.1 server on 127.0.0.1:0 ----

    /// One request as the test server received it (header names lowercased).
    #[derive(Debug, Clone, Default)]
    struct Seen {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }
    }

    #[derive(Clone)]
    enum Reply {
        /// With Content-Length; the connection stays open for more requests.
        Fixed {
            status: u16,
            headers: Vec<(String, String)>,
            body: Vec<u8>,
        },
        /// Chunked, without Content-Length, then the connection closes.
        Chunked { status: u16, body: Vec<u8> },
        /// Chunked and never ending.
        Endless,
    }

    fn reply(status: u16, body: &str) -> Reply {
        Reply::Fixed {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    fn redirect_to(location: &str) -> Reply {
        Reply::Fixed {
            status: 302,
            headers: vec![("Location".into(), location.into())],
            body: vec![],
        }
    }

    type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

    struct TestServer {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<Seen>>>,
        connections: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl TestServer {
        fn url(&self, scheme: &str, path: &str) -> String {
            format!("{scheme}://{}{path}", self.addr)
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    async fn serve(
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Handler = Arc::new(handler);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, c) = (seen.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (handler, seen, tls) = (handler.clone(), s.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => connection(socket, handler, seen).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(socket).await {
                                connection(stream, handler, seen).await;
                            }
                        }
                    }
                });
            }
        });
        TestServer {
            addr,
            seen,
            connections,
            task,
        }
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
        mut stream: S,
        handler: Handler,
        seen: Arc<Mutex<Vec<Seen>>>,
    ) {
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        loop {
            let head_end = loop {
                if let Some(i) = find(&buf, b"\r\n\r\n") {
                    break i + 4;
                }
                match stream.read(&mut tmp).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let mut lines = head.split("\r\n");
            let mut first = lines.next().unwrap_or("").split(' ');
            let mut request = Seen {
                method: first.next().unwrap_or("").to_string(),
                path: first.next().unwrap_or("").to_string(),
                ..Seen::default()
            };
            for line in lines.filter(|l| !l.is_empty()) {
                if let Some((k, v)) = line.split_once(':') {
                    request
                        .headers
                        .push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            let length: usize = request
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            buf.drain(..head_end);
            while buf.len() < length {
                match stream.read(&mut tmp).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
            request.body = buf.drain(..length).collect();
            let answer = handler(&request);
            seen.lock().unwrap().push(request);
            match answer {
                Reply::Fixed {
                    status,
                    headers,
                    body,
                } => {
                    let mut head = format!("HTTP/1.1 {status} X\r\n");
                    for (k, v) in headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                    if stream.write_all(head.as_bytes()).await.is_err()
                        || stream.write_all(&body).await.is_err()
                    {
                        return;
                    }
                }
                Reply::Chunked { status, body } => {
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    for piece in body.chunks(1000) {
                        let chunk = format!("{:x}\r\n", piece.len());
                        let _ = stream.write_all(chunk.as_bytes()).await;
                        let _ = stream.write_all(piece).await;
                        let _ = stream.write_all(b"\r\n").await;
                    }
                    let _ = stream.write_all(b"0\r\n\r\n").await;
                    let _ = stream.shutdown().await;
                    return;
                }
                Reply::Endless => {
                    let head = "HTTP/1.1 200 X\r\nTransfer-Encoding: chunked\r\n\r\n";
                    let _ = stream.write_all(head.as_bytes()).await;
                    let piece = vec![b'x'; 16 << 10];
                    loop {
                        let chunk = format!("{:x}\r\n", piece.len());
                        if stream.write_all(chunk.as_bytes()).await.is_err()
                            || stream.write_all(&piece).await.is_err()
                            || stream.write_all(b"\r\n").await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }
    }

    // ---- helpers ----

    fn config(url: &str, extra: &str) -> HttpConfig {
        toml::from_str(&format!("url = {url:?}\n{extra}")).unwrap()
    }

    async fn run(cfg: &HttpConfig) -> Outcome {
        run_in(cfg, Path::new(".")).await
    }

    async fn run_in(cfg: &HttpConfig, base_dir: &Path) -> Outcome {
        let probe = HttpProbe::new(cfg, base_dir).unwrap();
        let ctx = ProbeContext {
            clock: Arc::new(SystemClock),
            timeout: Duration::from_secs(10),
            progress: Default::default(),
        };
        tokio::time::timeout(Duration::from_secs(10), probe.run(&ctx))
            .await
            .expect("probe run took longer than 10 s")
    }

    fn assert_critical(outcome: &Outcome, category: Category, needle: &str) {
        assert_eq!(outcome.status, Status::Critical, "{outcome:?}");
        assert_eq!(outcome.category, Some(category), "{outcome:?}");
        assert!(
            outcome.summary.contains(needle),
            "summary {:?} lacks {needle:?}",
            outcome.summary
        );
    }

    /// A port nothing listens on: bound, read, released.
    async fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    }

    // ---- config ----

    #[test]
    fn defaults() {
        let cfg = config("http://127.0.0.1/", "");
        assert_eq!(cfg.method, "GET");
        assert_eq!(cfg.expect_status.ranges(), &[(200, 399)]);
        assert_eq!(cfg.max_body, ByteSize(1 << 20));
        assert!(cfg.verify && cfg.follow_redirects);
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    }

    #[test]
    fn expect_status_forms() {
        let ranges = |extra: &str| config("http://h/", extra).expect_status.ranges().to_vec();
        assert_eq!(ranges("expect_status = 204"), [(204, 204)]);
        assert_eq!(
            ranges(r#"expect_status = "200-299, 301""#),
            [(200, 299), (301, 301)]
        );
        assert_eq!(ranges(r#"expect_status = "2xx""#), [(200, 299)]);
        assert_eq!(
            ranges(r#"expect_status = [200, "300-302", 404]"#),
            [(200, 200), (300, 302), (404, 404)]
        );
        let parsed = config("http://h/", r#"expect_status = "200-299,301""#).expect_status;
        assert_eq!(parsed.to_string(), "200-299,301");
        assert!(parsed.contains(301) && parsed.contains(250) && !parsed.contains(300));
        for bad in [r#""abc""#, r#""200-""#, "-1", "true"] {
            let r = toml::from_str::<HttpConfig>(&format!(
                "url = \"http://h/\"\nexpect_status = {bad}"
            ));
            assert!(r.is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn max_body_forms() {
        let size = |extra: &str| config("http://h/", extra).max_body.0;
        assert_eq!(size("max_body = 2048"), 2048);
        assert_eq!(size(r#"max_body = "512KiB""#), 512 * 1024);
        assert_eq!(size(r#"max_body = "1MiB""#), 1 << 20);
        assert_eq!(size(r#"max_body = "10MB""#), 10_000_000);
        assert_eq!(size(r#"max_body = "3 kb""#), 3000);
        assert_eq!(ByteSize(1 << 20).to_string(), "1 MiB");
        assert_eq!(ByteSize(10_000_000).to_string(), "10 MB");
        assert_eq!(ByteSize(1500).to_string(), "1500 bytes");
        for bad in [r#""1 parsec""#, r#""MiB""#, "-5", r#""99999999999GiB""#] {
            let r = toml::from_str::<HttpConfig>(&format!("url = \"http://h/\"\nmax_body = {bad}"));
            assert!(r.is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let r = toml::from_str::<HttpConfig>("url = \"http://h/\"\nbody_contain = \"x\"");
        assert!(r.unwrap_err().to_string().contains("body_contain"));
    }

    #[test]
    fn validation_reports_every_key() {
        let cfg = config(
            "ftp://user:hunter2@h/",
            r#"
            method = "GE T"
            headers = { "Bad Name" = "x", "X-Ok" = "line1\nline2-secret" }
            expect_status = "99,200-700,300-200"
            body_contains = ""
            body_not_contains = ""
            json = { "status" = "up", "/a~2b" = 1, "/ok" = 1 }
            max_body = 0
            verify = false
            ca_file = "ca.pem"
            "#,
        );
        let problems = cfg.validate();
        let keys: Vec<&str> = problems.iter().map(|p| p.key).collect();
        for key in [
            "url",
            "method",
            "headers",
            "expect_status",
            "body_contains",
            "body_not_contains",
            "json",
            "max_body",
            "ca_file",
        ] {
            assert!(keys.contains(&key), "no problem for {key}: {problems:?}");
        }
        let count = |key: &str| keys.iter().filter(|k| **k == key).count();
        assert_eq!(count("headers"), 2, "{problems:?}");
        assert_eq!(count("json"), 2, "{problems:?}");
        // 99 and 700 out of range, 300-200 reversed.
        assert_eq!(count("expect_status"), 3, "{problems:?}");
        for p in &problems {
            assert!(
                !p.message.contains("hunter2") && !p.message.contains("secret"),
                "{p:?}"
            );
        }
        assert!(HttpProbe::new(&cfg, Path::new(".")).is_err());

        let cases = [("not a url", "url"), ("http://", "url")];
        for (url, key) in cases {
            let problems = config(url, "").validate();
            assert_eq!(problems.len(), 1, "{url}: {problems:?}");
            assert_eq!(problems[0].key, key);
        }
        let lower = config("http://h/", r#"method = "get""#).validate();
        assert_eq!(lower.len(), 1);
        assert!(lower[0].message.contains("GET"), "{lower:?}");
        assert!(config("http://h/", r#"method = "PROPFIND""#)
            .validate()
            .is_empty());
        assert!(config("http://h/", r#"expect_status = """#).validate()[0]
            .message
            .contains("no status codes"));
        assert!(config("http://h/", r#"json = { "" = 1, "/a~0b~1c" = 2 }"#)
            .validate()
            .is_empty());
    }

    #[test]
    fn debug_redacts_credentials() {
        let cfg = config(
            "https://alice:hunter2@example.test/",
            r#"
            headers = { Authorization = "Bearer tok-secret" }
            body = "password=swordfish"
            "#,
        );
        let debug = format!("{cfg:?}");
        for secret in ["hunter2", "alice", "tok-secret", "swordfish"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("Authorization") && debug.contains("example.test"));
    }

    #[test]
    fn json_numbers_compare_by_value() {
        assert!(json_eq(&serde_json::json!(3.0), &serde_json::json!(3)));
        assert!(json_eq(
            &serde_json::json!({"a": [1.0]}),
            &serde_json::json!({"a": [1]})
        ));
        assert!(!json_eq(&serde_json::json!(3), &serde_json::json!("3")));
        assert!(!json_eq(
            &serde_json::json!({"a": 1, "b": 2}),
            &serde_json::json!({"a": 1})
        ));
    }

    // ---- runs against the test server ----

    #[tokio::test]
    async fn ok_reports_status_latency_and_size() {
        let server = serve(|_| reply(200, "hello world"), None).await;
        let outcome = run(&config(&server.url("http", "/health"), "")).await;
        assert_eq!(outcome.status, Status::Ok, "{outcome:?}");
        assert_eq!(outcome.category, None);
        assert!(
            outcome.summary.starts_with("HTTP 200 in "),
            "{}",
            outcome.summary
        );
        assert!(
            outcome.summary.ends_with(" ms, 11 bytes"),
            "{}",
            outcome.summary
        );
        assert_eq!(outcome.observations["status_code"], 200.0);
        assert_eq!(outcome.observations["body_bytes"], 11.0);
        let latency = outcome.observations["latency_seconds"];
        assert!(latency > 0.0 && latency < 10.0, "{latency}");
        assert!(!outcome
            .observations
            .contains_key("not_after_timestamp_seconds"));
        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].path, "/health");
        assert_eq!(seen[0].header("user-agent"), Some(USER_AGENT));
        // The server closes after its answer: its side keeps the TIME_WAIT.
        assert_eq!(seen[0].header("connection"), Some("close"));
    }

    #[tokio::test]
    async fn every_run_opens_a_fresh_connection() {
        let server = serve(|_| reply(200, "ok"), None).await;
        let probe = HttpProbe::new(&config(&server.url("http", "/"), ""), Path::new(".")).unwrap();
        let ctx = ProbeContext {
            clock: Arc::new(SystemClock),
            timeout: Duration::from_secs(10),
            progress: Default::default(),
        };
        for _ in 0..3 {
            assert_eq!(probe.run(&ctx).await.status, Status::Ok);
        }
        // The server keeps connections open; the probe must not reuse them.
        assert_eq!(server.connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn status_outside_expectation_is_critical() {
        let server = serve(|_| reply(503, "down"), None).await;
        let outcome = run(&config(&server.url("http", "/"), "")).await;
        assert_critical(&outcome, Category::Protocol, "HTTP 503, expected 200-399");
        assert_eq!(outcome.observations["status_code"], 503.0);
        assert_eq!(outcome.observations["body_bytes"], 4.0);
    }

    #[tokio::test]
    async fn custom_expect_status_ranges() {
        let server = serve(
            |seen: &Seen| reply(seen.path.trim_start_matches('/').parse().unwrap(), ""),
            None,
        )
        .await;
        let expect = r#"expect_status = "200-204,404""#;
        for (code, ok) in [
            (404, true),
            (204, true),
            (200, true),
            (205, false),
            (301, false),
        ] {
            let outcome = run(&config(&server.url("http", &format!("/{code}")), expect)).await;
            assert_eq!(outcome.status == Status::Ok, ok, "{code}: {outcome:?}");
            if !ok {
                assert_critical(
                    &outcome,
                    Category::Protocol,
                    &format!("HTTP {code}, expected 200-204,404"),
                );
            }
        }
    }

    #[tokio::test]
    async fn body_contains_and_not_contains() {
        let server = serve(|_| reply(200, "status: ready, errors: none"), None).await;
        let url = server.url("http", "/");
        let hit = run(&config(&url, r#"body_contains = "ready""#)).await;
        assert_eq!(hit.status, Status::Ok, "{hit:?}");

        let miss = run(&config(&url, r#"body_contains = "healthy""#)).await;
        assert_critical(
            &miss,
            Category::Protocol,
            r#"body does not contain "healthy""#,
        );

        let clean = run(&config(&url, r#"body_not_contains = "FATAL""#)).await;
        assert_eq!(clean.status, Status::Ok, "{clean:?}");

        let dirty = run(&config(&url, r#"body_not_contains = "errors""#)).await;
        assert_critical(&dirty, Category::Protocol, r#"body contains "errors""#);
    }

    #[tokio::test]
    async fn all_failures_are_reported_status_first() {
        let server = serve(|_| reply(500, "oops"), None).await;
        let outcome = run(&config(
            &server.url("http", "/"),
            r#"body_contains = "ready"
               body_not_contains = "oops""#,
        ))
        .await;
        assert_eq!(
            outcome.summary,
            r#"HTTP 500, expected 200-399; body does not contain "ready"; body contains "oops""#
        );
    }

    #[tokio::test]
    async fn json_pointer_assertions() {
        let server = serve(
            |seen: &Seen| match seen.path.as_str() {
                "/json" => reply(200, r#"{"status":"down","count":3.0,"nested":{"ok":true}}"#),
                _ => reply(200, "<html>not json</html>"),
            },
            None,
        )
        .await;
        let url = server.url("http", "/json");
        let matching = run(&config(
            &url,
            r#"json = { "/status" = "down", "/count" = 3, "/nested/ok" = true }"#,
        ))
        .await;
        assert_eq!(matching.status, Status::Ok, "{matching:?}");

        let mismatch = run(&config(
            &url,
            r#"json = { "/status" = "up", "/count" = 3, "/missing" = 1 }"#,
        ))
        .await;
        assert_critical(
            &mismatch,
            Category::Protocol,
            r#"/status is "down", expected "up""#,
        );
        assert!(
            mismatch.summary.contains("/missing is missing, expected 1"),
            "{}",
            mismatch.summary
        );
        assert!(!mismatch.summary.contains("/count"), "{}", mismatch.summary);

        let not_json = run(&config(
            &server.url("http", "/html"),
            r#"json = { "/status" = "up" }"#,
        ))
        .await;
        assert_critical(&not_json, Category::Protocol, "body is not JSON: ");
        assert!(
            not_json.summary.contains("line 1 column"),
            "{}",
            not_json.summary
        );
    }

    #[tokio::test]
    async fn max_body_exceeded_by_content_length() {
        let server = serve(|_| reply(200, &"x".repeat(2000)), None).await;
        let outcome = run(&config(&server.url("http", "/"), r#"max_body = "1KiB""#)).await;
        assert_critical(&outcome, Category::Protocol, "body exceeds max_body 1 KiB");
        assert!(
            outcome.summary.contains("Content-Length 2000"),
            "{}",
            outcome.summary
        );
        assert!(!outcome.observations.contains_key("body_bytes"));

        let fits = run(&config(&server.url("http", "/"), "max_body = 2000")).await;
        assert_eq!(fits.status, Status::Ok, "{fits:?}");
    }

    #[tokio::test]
    async fn max_body_exceeded_by_endless_chunked_body() {
        let server = serve(|_| Reply::Endless, None).await;
        let outcome = run(&config(&server.url("http", "/"), "")).await;
        assert_critical(&outcome, Category::Protocol, "body exceeds max_body 1 MiB");
        assert!(
            !outcome.summary.contains("Content-Length"),
            "{}",
            outcome.summary
        );
    }

    #[tokio::test]
    async fn chunked_body_within_max_body() {
        let body = "y".repeat(5000);
        let server = serve(
            move |_| Reply::Chunked {
                status: 200,
                body: body.as_bytes().to_vec(),
            },
            None,
        )
        .await;
        let url = server.url("http", "/");
        let outcome = run(&config(&url, r#"body_contains = "yyy""#)).await;
        assert_eq!(outcome.status, Status::Ok, "{outcome:?}");
        assert_eq!(outcome.observations["body_bytes"], 5000.0);
        let over = run(&config(&url, "max_body = 4999")).await;
        assert_critical(
            &over,
            Category::Protocol,
            "body exceeds max_body 4999 bytes",
        );
    }

    #[tokio::test]
    async fn connection_refused_is_network_and_hides_userinfo() {
        let port = closed_port().await;
        let cfg = config(
            &format!("http://alice:hunter2@127.0.0.1:{port}/x"),
            r#"
            headers = { Authorization = "Bearer tok-secret" }
            body = "password=swordfish"
            method = "POST"
            "#,
        );
        let outcome = run(&cfg).await;
        assert_critical(
            &outcome,
            Category::Network,
            &format!("cannot connect to 127.0.0.1:{port}"),
        );
        assert!(
            outcome.summary.to_lowercase().contains("refused"),
            "{}",
            outcome.summary
        );
        assert!(
            !outcome.summary.contains("client error"),
            "{}",
            outcome.summary
        );
        for secret in ["alice", "hunter2", "tok-secret", "swordfish"] {
            assert!(!outcome.summary.contains(secret), "{}", outcome.summary);
        }
    }

    #[tokio::test]
    async fn post_sends_headers_and_body() {
        let server = serve(|_| reply(201, "created"), None).await;
        let cfg = config(
            &server.url("http", "/submit"),
            r#"
            method = "POST"
            headers = { "Content-Type" = "application/json", "X-Probe" = "sonde" }
            body = '{"ping":1}'
            "#,
        );
        let outcome = run(&cfg).await;
        assert_eq!(outcome.status, Status::Ok, "{outcome:?}");
        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].path, "/submit");
        assert_eq!(seen[0].header("content-type"), Some("application/json"));
        assert_eq!(seen[0].header("x-probe"), Some("sonde"));
        assert_eq!(seen[0].body, br#"{"ping":1}"#);
    }

    #[tokio::test]
    async fn redirects_are_followed_or_not() {
        let server = serve(
            |seen: &Seen| match seen.path.as_str() {
                "/start" => redirect_to("/middle"),
                "/middle" => redirect_to("/end"),
                "/end" => reply(200, "arrived"),
                _ => reply(404, ""),
            },
            None,
        )
        .await;
        let outcome = run(&config(
            &server.url("http", "/start"),
            r#"body_contains = "arrived""#,
        ))
        .await;
        assert_eq!(outcome.status, Status::Ok, "{outcome:?}");
        let paths: Vec<String> = server.seen().into_iter().map(|s| s.path).collect();
        assert_eq!(paths, ["/start", "/middle", "/end"]);

        // Not following: the 302 itself is checked (and within the default 200-399).
        let stay = run(&config(
            &server.url("http", "/start"),
            "follow_redirects = false",
        ))
        .await;
        assert_eq!(stay.status, Status::Ok, "{stay:?}");
        assert_eq!(stay.observations["status_code"], 302.0);
        let strict = run(&config(
            &server.url("http", "/start"),
            "follow_redirects = false\nexpect_status = 200",
        ))
        .await;
        assert_critical(&strict, Category::Protocol, "HTTP 302, expected 200");
    }

    #[tokio::test]
    async fn configured_headers_stay_with_the_configured_origin() {
        // "localhost" and "127.0.0.1" reach the same server but are different
        // hosts (and origins) to the probe.
        let server = serve(
            |seen: &Seen| match seen.path.split('?').next().unwrap_or("") {
                "/start" => {
                    let port = seen.header("host").and_then(|h| h.rsplit(':').next());
                    redirect_to(&format!(
                        "http://localhost:{}/other?q=1",
                        port.unwrap_or("")
                    ))
                }
                "/other" => reply(200, "other host"),
                _ => reply(404, ""),
            },
            None,
        )
        .await;
        let start = format!("{}?token=s3cret", server.url("http", "/start"));
        let headers = "headers = { X-Api-Key = \"planted-key\" }";

        // By default a redirect to another host is refused, and not requested.
        let refused = run(&config(&start, headers)).await;
        assert_critical(
            &refused,
            Category::Protocol,
            "redirect to host localhost refused",
        );
        assert_eq!(server.seen().len(), 1);

        // Allowed, the other host gets neither the header nor a Referer.
        let allowed = run(&config(
            &start,
            &format!("{headers}\nredirect_hosts = [\"LocalHost\"]"),
        ))
        .await;
        assert_eq!(allowed.status, Status::Ok, "{allowed:?}");
        let seen = server.seen();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[1].header("x-api-key"), Some("planted-key"));
        assert_eq!(seen[2].path, "/other?q=1");
        assert_eq!(seen[2].header("x-api-key"), None, "{:?}", seen[2]);
        assert_eq!(seen[2].header("referer"), None, "{:?}", seen[2]);
    }

    #[tokio::test]
    async fn same_host_redirects_keep_headers_and_change_methods_like_browsers() {
        let server = serve(
            |seen: &Seen| match seen.path.as_str() {
                "/post" => Reply::Fixed {
                    status: 303,
                    headers: vec![("Location".into(), "/see".into())],
                    body: vec![],
                },
                "/keep" => Reply::Fixed {
                    status: 307,
                    headers: vec![("Location".into(), "/kept".into())],
                    body: vec![],
                },
                _ => reply(200, "ok"),
            },
            None,
        )
        .await;
        let extra = "method = \"POST\"\nbody = \"payload\"\nheaders = { X-Api-Key = \"k\" }";
        let outcome = run(&config(&server.url("http", "/post"), extra)).await;
        assert_eq!(outcome.status, Status::Ok, "{outcome:?}");
        let outcome = run(&config(&server.url("http", "/keep"), extra)).await;
        assert_eq!(outcome.status, Status::Ok, "{outcome:?}");
        let seen = server.seen();
        let shown: Vec<(&str, &str, &[u8], Option<&str>)> = seen
            .iter()
            .map(|s| {
                (
                    s.method.as_str(),
                    s.path.as_str(),
                    s.body.as_slice(),
                    s.header("x-api-key"),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("POST", "/post", &b"payload"[..], Some("k")),
                ("GET", "/see", &b""[..], Some("k")),
                ("POST", "/keep", &b"payload"[..], Some("k")),
                ("POST", "/kept", &b"payload"[..], Some("k")),
            ]
        );
    }

    #[test]
    fn redirect_rules_check_scheme_downgrade_and_host() {
        let rules = |hosts: &[&str], allow_downgrade| Redirects {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            allow_downgrade,
        };
        let u = |s: &str| Url::parse(s).unwrap();
        let first = u("https://a.example/x");
        let none = rules(&[], false);
        assert_eq!(
            none.check(&first, &first, &u("https://a.example:8443/y")),
            Ok(())
        );
        let e = none
            .check(&first, &first, &u("http://a.example/y"))
            .unwrap_err();
        assert_eq!(
            e,
            "redirect from https to http://a.example refused: set allow_downgrade = true to follow it"
        );
        assert_eq!(
            rules(&[], true).check(&first, &first, &u("http://a.example/")),
            Ok(())
        );
        // An upgrade is fine; a downgrade later in the chain is judged per hop.
        let plain = u("http://a.example/");
        assert_eq!(none.check(&plain, &plain, &u("https://a.example/")), Ok(()));
        let e = none
            .check(&first, &first, &u("https://b.example/"))
            .unwrap_err();
        assert!(e.contains("redirect to host b.example refused"), "{e}");
        assert!(none.check(&first, &first, &u("ftp://a.example/")).is_err());
        let listed = rules(&["b.example", "*.c.example"], false);
        assert_eq!(
            listed.check(&first, &first, &u("https://b.example/")),
            Ok(())
        );
        assert_eq!(
            listed.check(&first, &first, &u("https://x.c.example/")),
            Ok(())
        );
        assert!(listed
            .check(&first, &first, &u("https://c.example/"))
            .is_err());
        assert!(listed
            .check(&first, &first, &u("https://evilc.example/"))
            .is_err());
        assert_eq!(
            rules(&["*"], false).check(&first, &first, &u("https://z/")),
            Ok(())
        );
    }

    #[test]
    fn redirect_keys_are_validated() {
        let keys = |extra: &str| -> Vec<(&'static str, String)> {
            config("https://a.example/", extra)
                .validate()
                .into_iter()
                .map(|p| (p.key, p.message))
                .collect()
        };
        assert!(
            keys(r#"redirect_hosts = ["b.example", "*.c.example", "*", "10.0.0.1"]"#).is_empty()
        );
        let bad = keys(r#"redirect_hosts = ["", "https://b.example/", "*x", "a b"]"#);
        assert_eq!(bad.len(), 4, "{bad:?}");
        assert!(bad.iter().all(|(k, _)| *k == "redirect_hosts"));
        let moot =
            keys("follow_redirects = false\nallow_downgrade = true\nredirect_hosts = [\"b\"]");
        assert_eq!(
            moot.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            ["redirect_hosts", "allow_downgrade"]
        );
    }

    #[test]
    fn probes_of_one_tls_setting_share_one_client() {
        let clients = Clients::new();
        let dir = Path::new(".");
        let a = HttpProbe::with_clients(&config("https://a.example/", ""), dir, &clients).unwrap();
        let b = HttpProbe::with_clients(
            &config("https://b.example/", "redirect_hosts = [\"c\"]"),
            dir,
            &clients,
        )
        .unwrap();
        let c = HttpProbe::with_clients(
            &config("https://b.example/", "verify = false"),
            dir,
            &clients,
        )
        .unwrap();
        assert_eq!(clients.distinct().1, 2);
        drop((a, b, c));
    }

    #[tokio::test]
    async fn redirect_loop_and_too_many_redirects_are_protocol() {
        let server = serve(
            |seen: &Seen| {
                let path = seen.path.as_str();
                if path == "/a" {
                    redirect_to("/b")
                } else if path == "/b" {
                    redirect_to("/a")
                } else if let Some(n) = path.strip_prefix("/n/") {
                    let n: u32 = n.parse().unwrap();
                    if n == 0 {
                        reply(200, "done")
                    } else {
                        redirect_to(&format!("/n/{}", n - 1))
                    }
                } else {
                    reply(404, "")
                }
            },
            None,
        )
        .await;
        let port = server.addr.port();
        let looped = run(&config(
            &format!("http://alice:hunter2@127.0.0.1:{port}/a"),
            "",
        ))
        .await;
        assert_critical(
            &looped,
            Category::Protocol,
            "redirect loop at http://127.0.0.1:",
        );
        assert!(!looped.summary.contains("hunter2"), "{}", looped.summary);

        let ten = run(&config(&server.url("http", "/n/10"), "")).await;
        assert_eq!(ten.status, Status::Ok, "{ten:?}");
        let eleven = run(&config(&server.url("http", "/n/11"), "")).await;
        assert_critical(&eleven, Category::Protocol, "more than 10 redirects");
    }

    #[tokio::test]
    async fn status_failures_do_not_show_the_url_or_credentials() {
        let server = serve(|_| reply(401, "denied"), None).await;
        let port = server.addr.port();
        let cfg = config(
            &format!("http://alice:hunter2@127.0.0.1:{port}/"),
            r#"headers = { Authorization = "Bearer tok-secret" }"#,
        );
        let outcome = run(&cfg).await;
        assert_critical(&outcome, Category::Protocol, "HTTP 401");
        for secret in ["alice", "hunter2", "tok-secret"] {
            assert!(!outcome.summary.contains(secret), "{}", outcome.summary);
        }
        // reqwest turns the userinfo into basic auth; the request itself carries it.
        assert!(server.seen()[0].header("authorization").is_some());
    }

    // ---- TLS ----

    /// A test CA and a leaf for 127.0.0.1 signed by it, made by the openssl CLI.
    struct Pki {
        dir: tempfile::TempDir,
    }

    impl Pki {
        fn new() -> Pki {
            let dir = tempfile::TempDir::new().unwrap();
            let openssl = |args: &[&str]| {
                let out = Command::new("openssl")
                    .args(args)
                    .current_dir(dir.path())
                    .output()
                    .expect("the openssl CLI runs");
                assert!(
                    out.status.success(),
                    "openssl {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            let ec = [
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ];
            let mut ca = vec!["req", "-x509"];
            ca.extend(ec);
            ca.extend([
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=sonde test CA",
            ]);
            openssl(&ca);
            let mut csr = vec!["req"];
            csr.extend(ec);
            csr.extend([
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=127.0.0.1",
            ]);
            openssl(&csr);
            std::fs::write(
                dir.path().join("leaf.ext"),
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
            )
            .unwrap();
            openssl(&[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "leaf.pem",
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
            ]);
            Pki { dir }
        }

        fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
            use rustls::pki_types::PrivateKeyDer;
            let certs: Vec<_> = CertificateDer::pem_file_iter(self.dir.path().join("leaf.pem"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(self.dir.path().join("leaf.key")).unwrap();
            let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        }
    }

    #[tokio::test]
    async fn https_with_an_unknown_issuer_is_tls() {
        let pki = Pki::new();
        let server = serve(|_| reply(200, "secure"), Some(pki.acceptor())).await;
        let outcome = run(&config(&server.url("https", "/"), "")).await;
        assert_critical(
            &outcome,
            Category::Tls,
            "TLS: invalid peer certificate: UnknownIssuer",
        );
    }

    #[tokio::test]
    async fn https_with_ca_file_passes_and_reports_not_after() {
        let pki = Pki::new();
        let server = serve(|_| reply(200, "secure"), Some(pki.acceptor())).await;
        // ca_file resolves against base_dir.
        let outcome = run_in(
            &config(&server.url("https", "/"), r#"ca_file = "ca.pem""#),
            pki.dir.path(),
        )
        .await;
        assert_eq!(outcome.status, Status::Ok, "{outcome:?}");
        let not_after = outcome.observations["not_after_timestamp_seconds"];
        let now = crate::clock::Clock::now(&crate::clock::SystemClock).timestamp() as f64;
        assert!(
            not_after > now + 86_400.0 && not_after < now + 3.0 * 86_400.0,
            "{not_after} vs {now}"
        );

        let missing = HttpProbe::new(
            &config(&server.url("https", "/"), r#"ca_file = "nope.pem""#),
            pki.dir.path(),
        );
        let e = missing.err().unwrap();
        assert_eq!(e.key, "ca_file");
        assert!(e.message.contains("nope.pem"), "{e}");
    }

    #[tokio::test]
    async fn https_without_verification_passes() {
        let pki = Pki::new();
        let server = serve(|_| reply(200, "secure"), Some(pki.acceptor())).await;
        let outcome = run(&config(&server.url("https", "/"), "verify = false")).await;
        assert_eq!(outcome.status, Status::Ok, "{outcome:?}");
        assert!(outcome
            .observations
            .contains_key("not_after_timestamp_seconds"));
    }

    #[tokio::test]
    async fn tls_to_a_plain_http_server_is_tls() {
        // A plain HTTP server answers the ClientHello with a 400.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let _ = socket
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    .await;
                let _ = socket.shutdown().await;
            }
        });
        let outcome = run(&config(&format!("https://{addr}/"), "verify = false")).await;
        server.abort();
        assert_critical(&outcome, Category::Tls, "TLS: ");
    }
}
