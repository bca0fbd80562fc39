//! HTTP as every HTTP-based probe kind and channel uses it: the client (sonde's
//! rustls config with an explicit ring provider, no proxies from the
//! environment, sonde's user agent, no redirects), the cache through which
//! probes share one client per distinct TLS setting (`Clients`), size-capped
//! body reads, the class of a request error found by walking its source chain,
//! the error text without reqwest's URL, URL checks, and the forms in which a
//! URL may be shown.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use reqwest::{redirect, Url};
use rustls::client::WebPkiServerVerifier;

use crate::spec::SpecProblem;

pub(crate) const USER_AGENT: &str = concat!("sonde/", env!("CARGO_PKG_VERSION"));

/// A client as the HTTP-based probe kinds (metadata, token, push) build it:
/// sonde's TLS settings, a fresh connection per run, no proxies from the
/// environment, sonde's user agent, and no redirects (their requests are POSTs or
/// documents whose address is configuration).
pub(crate) fn client(verify: bool, ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    client_with_pool(verify, ca_file, 0)
}

/// `client`, keeping up to `idle` connections per host open between requests:
/// alert channels post many times to one receiver, probes measure fresh
/// connections.
pub(crate) fn client_with_pool(
    verify: bool,
    ca_file: Option<&Path>,
    idle: usize,
) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(verify, ca_file)?)
        .pool_max_idle_per_host(idle)
        .no_proxy()
        .user_agent(USER_AGENT)
        .redirect(redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))
}

/// A client's TLS settings, with the ring provider passed explicitly: the system
/// roots plus `ca_file` when `verify`, any chain (handshake signatures still
/// checked) otherwise; ALPN offers h2 and http/1.1.
pub(crate) fn tls_config(
    verify: bool,
    ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, String> {
    let roots = match (verify, ca_file) {
        (false, _) => None,
        (true, ca_file) => Some(crate::net::tls::roots(ca_file)?),
    };
    tls_config_with(roots)
}

/// `tls_config` with the trust anchors given: `None` accepts any chain.
fn tls_config_with(roots: Option<rustls::RootCertStore>) -> Result<rustls::ClientConfig, String> {
    let provider = crate::net::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut config = match roots {
        Some(roots) => builder.with_root_certificates(roots).with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::net::tls::AcceptAnyServerCert::new(
                &provider,
            )))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// What sets one probe client apart from another: whether the chain is
/// verified, and the extra anchors by file and content (so that a reload after
/// the file changed builds a new client, and one that did not shares the old).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TlsKey {
    verify: bool,
    ca_file: Option<(PathBuf, [u8; 32])>,
}

impl TlsKey {
    /// The key of these settings, and the CA file's bytes when it was read for
    /// it. `ca_file` counts only when `verify` (validation refuses the pair).
    fn read(verify: bool, ca_file: Option<&Path>) -> Result<(TlsKey, Option<Vec<u8>>), String> {
        match ca_file.filter(|_| verify) {
            None => Ok((
                TlsKey {
                    verify,
                    ca_file: None,
                },
                None,
            )),
            Some(path) => {
                let pem = crate::file::read_blocking(path, crate::file::MAX_SIZE)
                    .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                let mut digest = [0u8; 32];
                digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &pem).as_ref());
                Ok((
                    TlsKey {
                        verify,
                        ca_file: Some((path.to_path_buf(), digest)),
                    },
                    Some(pem),
                ))
            }
        }
    }
}

/// The TLS configs and HTTP clients probes share, one per distinct TLS setting:
/// built by the first probe that needs it, handed to every later one. A probe
/// keeps only a handle; the roots, verifier and connector exist once.
///
/// A probe client opens a fresh connection for every request (no idle
/// connections are kept) and resumes no TLS session, so each run measures DNS,
/// connect and a full handshake, however many probes share the client. It
/// follows no redirects and sends no `Referer`: a probe that follows redirects
/// does so hop by hop itself, deciding what each hop may carry.
///
/// Probe constructors take the cache they use (`Clients::process()` is the one
/// the agent's build step passes; tests pass their own). Configs are held
/// weakly, so the settings no probe uses any more are dropped with their
/// probes; clients are kept, their number bounded by `MAX_CLIENTS`.
#[derive(Default)]
pub(crate) struct Clients {
    inner: Mutex<ClientsInner>,
}

#[derive(Default)]
struct ClientsInner {
    tls: HashMap<TlsKey, Weak<rustls::ClientConfig>>,
    probe: HashMap<TlsKey, reqwest::Client>,
    roots: HashMap<TlsKey, Weak<rustls::RootCertStore>>,
    /// Verifiers by the anchors they hold (each anchors' `Arc` address; the
    /// weak anchors tell a reused address apart).
    verifiers: HashMap<usize, (Weak<rustls::RootCertStore>, Weak<WebPkiServerVerifier>)>,
    capture: Weak<rustls::ClientConfig>,
}

/// Distinct client settings kept at most; past it the cache starts afresh
/// (probes built earlier keep their clients). A config has a handful; only a
/// long run of reloads with changing CA files reaches this.
const MAX_CLIENTS: usize = 256;

impl Clients {
    pub(crate) fn new() -> Self {
        Clients::default()
    }

    /// The cache of this process, which the build step passes to the probes it
    /// builds, so that probes built at start and at each reload share.
    pub(crate) fn process() -> &'static Clients {
        static CLIENTS: OnceLock<Clients> = OnceLock::new();
        CLIENTS.get_or_init(Clients::new)
    }

    fn tls_for(
        &self,
        key: &TlsKey,
        pem: Option<&[u8]>,
    ) -> Result<Arc<rustls::ClientConfig>, String> {
        if let Some(config) = self.lock().tls.get(key).and_then(Weak::upgrade) {
            return Ok(config);
        }
        // Built outside the lock: parsing anchors takes a while, and two
        // probes racing to build the same config only waste the loser's.
        let roots = match (&key.ca_file, pem) {
            _ if !key.verify => None,
            (Some((path, _)), Some(pem)) => Some(crate::net::tls::roots_with_pem(path, pem)?),
            _ => Some(crate::net::tls::roots(None)?),
        };
        let mut config = tls_config_with(roots)?;
        config.resumption = rustls::client::Resumption::disabled();
        let config = Arc::new(config);
        let mut inner = self.lock();
        inner.tls.retain(|_, weak| weak.strong_count() > 0);
        inner.tls.insert(key.clone(), Arc::downgrade(&config));
        Ok(config)
    }

    /// The shared client of these settings for probes: a fresh connection per
    /// request, no proxies from the environment, sonde's user agent, no
    /// redirects, no `Referer`, and the peer's certificate in the response's
    /// `TlsInfo`.
    ///
    /// Requests say `Connection: close` (over HTTP/1.1; HTTP/2 has no such
    /// header and drops it), as blackbox_exporter's do: the connection is not
    /// reused, so the server closes it after its answer and keeps the
    /// TIME_WAIT, instead of the agent, whose outgoing ports would otherwise
    /// fill with closed connections at hundreds of runs a second.
    pub(crate) fn probe_client(
        &self,
        verify: bool,
        ca_file: Option<&Path>,
    ) -> Result<reqwest::Client, String> {
        let (key, pem) = TlsKey::read(verify, ca_file)?;
        if let Some(client) = self.lock().probe.get(&key) {
            return Ok(client.clone());
        }
        let tls = self.tls_for(&key, pem.as_deref())?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(rustls::ClientConfig::clone(&tls))
            .tls_info(true)
            .pool_max_idle_per_host(0)
            .default_headers(reqwest::header::HeaderMap::from_iter([(
                reqwest::header::CONNECTION,
                reqwest::header::HeaderValue::from_static("close"),
            )]))
            .no_proxy()
            .user_agent(USER_AGENT)
            .redirect(redirect::Policy::none())
            .referer(false)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))?;
        let mut inner = self.lock();
        if inner.probe.len() >= MAX_CLIENTS {
            inner.probe.clear();
        }
        Ok(inner.probe.entry(key).or_insert(client).clone())
    }

    /// The trust anchors of these settings (system roots plus `ca_file`), for
    /// probes that verify a chain themselves.
    pub(crate) fn roots(
        &self,
        ca_file: Option<&Path>,
    ) -> Result<Arc<rustls::RootCertStore>, String> {
        let (key, pem) = TlsKey::read(true, ca_file)?;
        if let Some(roots) = self.lock().roots.get(&key).and_then(Weak::upgrade) {
            return Ok(roots);
        }
        let roots = Arc::new(match (&key.ca_file, pem) {
            (Some((path, _)), Some(pem)) => crate::net::tls::roots_with_pem(path, &pem)?,
            _ => crate::net::tls::roots(None)?,
        });
        let mut inner = self.lock();
        inner.roots.retain(|_, weak| weak.strong_count() > 0);
        inner.roots.insert(key, Arc::downgrade(&roots));
        Ok(roots)
    }

    /// The verifier of `roots` (from [`Clients::roots`]), shared by the probes
    /// that verify a chain against the same anchors.
    pub(crate) fn verifier(
        &self,
        roots: &Arc<rustls::RootCertStore>,
    ) -> Result<Arc<WebPkiServerVerifier>, String> {
        let key = Arc::as_ptr(roots) as usize;
        let found = self.lock().verifiers.get(&key).and_then(|(r, v)| {
            (r.upgrade()).filter(|r| Arc::ptr_eq(r, roots))?;
            v.upgrade()
        });
        if let Some(verifier) = found {
            return Ok(verifier);
        }
        let verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), crate::net::tls::provider())
                .build()
                .map_err(|e| format!("TLS verifier: {e}"))?;
        let mut inner = self.lock();
        inner
            .verifiers
            .retain(|_, (r, v)| r.strong_count() > 0 && v.strong_count() > 0);
        inner
            .verifiers
            .insert(key, (Arc::downgrade(roots), Arc::downgrade(&verifier)));
        Ok(verifier)
    }

    /// The TLS config of handshakes made to read a server's chain: any chain is
    /// accepted (handshake signatures still checked; the chain is judged
    /// afterwards) and no session is resumed, so every handshake shows the chain
    /// the server sends now.
    pub(crate) fn capture_tls(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        if let Some(config) = self.lock().capture.upgrade() {
            return Ok(config);
        }
        let provider = crate::net::tls::provider();
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::net::tls::AcceptAnyServerCert::new(
                &provider,
            )))
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        let config = Arc::new(config);
        self.lock().capture = Arc::downgrade(&config);
        Ok(config)
    }

    #[cfg(test)]
    /// How many distinct TLS configs and probe clients the cache holds.
    pub(crate) fn distinct(&self) -> (usize, usize) {
        let inner = self.lock();
        let tls = inner.tls.values().filter(|w| w.strong_count() > 0).count();
        (tls, inner.probe.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClientsInner> {
        // The maps stay consistent whatever panicked while holding the lock.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why reading a body stopped.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The body is larger than the cap; the Content-Length when that told.
    TooLarge(Option<u64>),
    Read(reqwest::Error),
}

/// Reads the whole body, giving up as soon as it is known to exceed `cap` bytes:
/// from Content-Length, or once the bytes received pass the cap.
pub(crate) async fn read_capped(
    response: &mut reqwest::Response,
    cap: u64,
) -> Result<Vec<u8>, BodyError> {
    let length = response.content_length();
    if let Some(n) = length.filter(|&n| n > cap) {
        return Err(BodyError::TooLarge(Some(n)));
    }
    let initial = length.unwrap_or(0).min(cap).min(64 << 10);
    let mut body = Vec::with_capacity(usize::try_from(initial).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if (body.len() + chunk.len()) as u64 > cap {
            return Err(BodyError::TooLarge(None));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// At most the first `cap` bytes of the body, for replies read only to quote or
/// peek into (an error reply, a badge): a read error or a longer body ends the
/// read with what arrived.
pub(crate) async fn read_prefix(mut response: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= cap {
            body.truncate(cap);
            break;
        }
    }
    body
}

/// What a request error was, found by walking its source chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// The rustls error's text, e.g. "invalid peer certificate: UnknownIssuer".
    Tls(String),
    /// A redirect that failed, with the message to show.
    Redirect(String),
    Connect,
    Io,
    Other,
}

pub(crate) fn classify(err: &reqwest::Error) -> ErrorClass {
    let mut io = false;
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        // An io::Error's `source()` skips the error it wraps (and rustls errors
        // arrive wrapped in io::Errors, nested), so look inside those too.
        let mut candidate = Some(e);
        while let Some(c) = candidate {
            if let Some(tls) = c.downcast_ref::<rustls::Error>() {
                return ErrorClass::Tls(tls.to_string());
            }
            if let Some(r) = c.downcast_ref::<RedirectError>() {
                return ErrorClass::Redirect(r.to_string());
            }
            candidate = c
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|inner| inner as &(dyn StdError + 'static));
        }
        io |= e.is::<std::io::Error>();
        current = e.source();
    }
    if err.is_redirect() {
        ErrorClass::Redirect(format!("redirect failed: {}", error_chain(err)))
    } else if err.is_connect() {
        ErrorClass::Connect
    } else if io {
        ErrorClass::Io
    } else {
        ErrorClass::Other
    }
}

/// The messages of an error's source chain, joined, without reqwest's outermost
/// one (which names the URL, userinfo included).
pub(crate) fn error_chain(err: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = err.source();
    while let Some(e) = current {
        let message = e.to_string();
        // hyper-util's wrapper ("client error (Connect)") only repeats what the
        // summary's prefix says.
        let wrapper = message.starts_with("client error (");
        if !wrapper && !message.is_empty() && parts.last() != Some(&message) {
            parts.push(message);
        }
        current = e.source();
    }
    if parts.is_empty() {
        return reqwest_error_without_url(err);
    }
    parts.join(": ")
}

fn reqwest_error_without_url(err: &reqwest::Error) -> String {
    if err.is_connect() {
        "connection failed".to_string()
    } else if err.is_redirect() {
        "redirect failed".to_string()
    } else if err.is_body() || err.is_decode() {
        "error reading the body".to_string()
    } else {
        "error sending the request".to_string()
    }
}

/// The error a redirect policy returns to stop with a message of its own;
/// `classify` finds it again as `ErrorClass::Redirect`.
#[derive(Debug)]
pub(crate) struct RedirectError(pub String);

impl fmt::Display for RedirectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for RedirectError {}

/// How long a `Retry-After` value asks to wait, at `now`: either delay-seconds
/// (`120`) or an HTTP-date (`Wed, 21 Oct 2015 07:28:00 GMT`, RFC 9110 10.2.3),
/// a date already past meaning now. `None` when it is neither.
pub(crate) fn retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::from(now))
            .unwrap_or(Duration::ZERO),
    )
}

/// Why a configured URL is not one sonde can send HTTP requests to. The
/// messages never echo the URL (some carry a token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UrlError {
    /// The parser's reason.
    #[error("invalid URL: {0}")]
    Invalid(String),
    /// Not http or https, or without a host; the scheme it has.
    #[error("must be an http(s) URL")]
    NotHttp { scheme: String },
}

/// Parses `url` as an absolute http(s) URL with a host.
pub(crate) fn check_url(url: &str) -> Result<Url, UrlError> {
    let u = Url::parse(url).map_err(|e| UrlError::Invalid(e.to_string()))?;
    if matches!(u.scheme(), "http" | "https") && u.host().is_some() {
        Ok(u)
    } else {
        Err(UrlError::NotHttp {
            scheme: u.scheme().to_string(),
        })
    }
}

/// `check_url` for validation: a problem under `key` when `url` does not pass.
pub(crate) fn check_url_key(key: &'static str, url: &str, problems: &mut Vec<SpecProblem>) {
    if let Err(e) = check_url(url) {
        problems.push(SpecProblem::new(key, e.to_string()));
    }
}

/// The URL without userinfo: what a probe's summary shows of a URL it was told.
pub(crate) fn without_userinfo(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// The URL without userinfo and query (a token endpoint's query may carry
/// credentials).
pub(crate) fn without_credentials(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.to_string()
}

/// `scheme://host[:port]` of a URL: all that channel errors and `Debug` show of
/// a receiver's URL (Slack's and Teams' carry their token in the path).
pub(crate) fn origin(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            match u.port() {
                Some(port) => format!("{}://{host}:{port}", u.scheme()),
                None => format!("{}://{host}", u.scheme()),
            }
        }
        Err(_) => "<unparsable URL>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_checks_accept_only_http_with_a_host() {
        assert!(check_url("https://example.org/x?y").is_ok());
        assert_eq!(
            check_url("ftp://example.org/").unwrap_err(),
            UrlError::NotHttp {
                scheme: "ftp".into()
            }
        );
        assert_eq!(
            check_url("mailto:a@b").unwrap_err().to_string(),
            "must be an http(s) URL"
        );
        let e = check_url("not a url").unwrap_err();
        assert!(e.to_string().starts_with("invalid URL: "), "{e}");
        let mut problems = Vec::new();
        check_url_key("url", "ftp://secret-token@h/", &mut problems);
        assert_eq!(problems.len(), 1);
        assert!(!problems[0].message.contains("secret-token"));
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:26:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }

    #[test]
    fn shown_urls_drop_what_may_be_credentials() {
        let u = Url::parse("https://user:pw@h.example:8443/p/a?t=1").unwrap();
        assert_eq!(without_userinfo(&u), "https://h.example:8443/p/a?t=1");
        assert_eq!(without_credentials(&u), "https://h.example:8443/p/a");
        assert_eq!(origin(u.as_str()), "https://h.example:8443");
        assert_eq!(
            origin("https://hooks.slack.com/services/T/B/x"),
            "https://hooks.slack.com"
        );
        assert_eq!(origin("::"), "<unparsable URL>");
    }
}
