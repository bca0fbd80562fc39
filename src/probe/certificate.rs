//! `kind = "certificate"`: how long until a certificate expires, and whether it is
//! one an operator should trust (key size, thumbprint, signature hash, chain).
//!
//! The certificate comes either from a file (PEM, DER, PKCS#12) or from a TLS
//! endpoint (optionally after SMTP STARTTLS). Both paths end in the same pure
//! evaluation, [`evaluate`], which turns the parsed facts and `now` into one
//! `Outcome`. Timeouts, timing and spans belong to the runner, not to this file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use super::*;

fn default_verify() -> bool {
    true
}

fn default_critical_before() -> Duration {
    Duration::from_secs(7 * 86_400)
}

fn default_warn_before() -> Duration {
    Duration::from_secs(30 * 86_400)
}

fn default_min_key_bits() -> u32 {
    2048
}

/// The kind-specific keys of a `certificate` probe table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// A certificate file: PEM (one or many), DER, or PKCS#12 (`.pfx`/`.p12`).
    #[serde(default)]
    pub path: Option<String>,
    /// `host:port` of a TLS endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// SNI and the name the chain must be valid for; default: the endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// `"smtp"`: speak SMTP up to STARTTLS before the handshake.
    #[serde(default)]
    pub starttls: Option<String>,
    /// Whether the endpoint's chain must verify.
    #[serde(default = "default_verify")]
    pub verify: bool,
    /// Extra trust anchors (PEM) for endpoint verification, added to the system roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Environment variable holding the PKCS#12 password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File whose trimmed content is the PKCS#12 password.
    #[serde(default)]
    pub password_file: Option<String>,
    #[serde(default = "default_critical_before", with = "crate::config::duration")]
    pub critical_before: Duration,
    #[serde(default = "default_warn_before", with = "crate::config::duration")]
    pub warn_before: Duration,
    #[serde(default = "default_min_key_bits")]
    pub min_key_bits: u32,
    /// SHA-1 thumbprint as Exchange prints it; case, spaces and colons are ignored.
    #[serde(default)]
    pub expected_thumbprint: Option<String>,
}

impl CertificateConfig {
    /// Pure checks: every problem at once, each naming its key.
    pub fn validate(&self) -> Vec<SpecProblem> {
        let mut problems = Vec::new();
        let is_file = self.path.is_some();
        let is_endpoint = self.endpoint.is_some();
        match (is_file, is_endpoint) {
            (false, false) => problems.push(SpecProblem::new(
                "path",
                "one of `path` or `endpoint` is required",
            )),
            (true, true) => problems.push(SpecProblem::new(
                "endpoint",
                "`path` and `endpoint` are mutually exclusive: set exactly one",
            )),
            _ => {}
        }
        if self.path.as_deref().is_some_and(|p| p.trim().is_empty()) {
            problems.push(SpecProblem::new("path", "must not be empty"));
        }
        if let Some(endpoint) = &self.endpoint {
            if let Err(e) = parse_endpoint(endpoint) {
                problems.push(SpecProblem::new("endpoint", e));
            }
        }
        if let Some(name) = &self.server_name {
            if !is_endpoint {
                problems.push(SpecProblem::new(
                    "server_name",
                    "only meaningful with `endpoint`",
                ));
            }
            if ServerName::try_from(name.as_str()).is_err() {
                problems.push(SpecProblem::new(
                    "server_name",
                    format!("`{name}` is not a valid DNS name or IP address"),
                ));
            }
        }
        if let Some(starttls) = &self.starttls {
            if starttls != "smtp" {
                problems.push(SpecProblem::new(
                    "starttls",
                    format!("unsupported `{starttls}` (the only supported value is \"smtp\")"),
                ));
            }
            if !is_endpoint {
                problems.push(SpecProblem::new(
                    "starttls",
                    "only meaningful with `endpoint`",
                ));
            }
        }
        if self.ca_file.is_some() && !is_endpoint {
            problems.push(SpecProblem::new(
                "ca_file",
                "only meaningful with `endpoint`",
            ));
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            problems.push(SpecProblem::new(
                "password_file",
                "`password_env` and `password_file` are mutually exclusive",
            ));
        }
        if self.password_env.is_some() && !is_file {
            problems.push(SpecProblem::new(
                "password_env",
                "only meaningful with `path`",
            ));
        }
        if self.password_file.is_some() && !is_file {
            problems.push(SpecProblem::new(
                "password_file",
                "only meaningful with `path`",
            ));
        }
        if self
            .password_env
            .as_deref()
            .is_some_and(|v| v.trim().is_empty())
        {
            problems.push(SpecProblem::new(
                "password_env",
                "must name an environment variable",
            ));
        }
        if self.warn_before < self.critical_before {
            problems.push(SpecProblem::new(
                "warn_before",
                format!(
                    "must be at least `critical_before` ({} < {})",
                    human_duration(self.warn_before.as_secs() as i64),
                    human_duration(self.critical_before.as_secs() as i64)
                ),
            ));
        }
        if let Some(thumbprint) = &self.expected_thumbprint {
            if normalize_thumbprint(thumbprint).is_none() {
                problems.push(SpecProblem::new(
                    "expected_thumbprint",
                    "must be 40 hexadecimal digits (a SHA-1 thumbprint; spaces and colons are ignored)",
                ));
            }
        }
        if self.min_key_bits == 0 {
            problems.push(SpecProblem::new("min_key_bits", "must be greater than 0"));
        }
        problems
    }
}

/// Splits `host:port` (IPv6 hosts in brackets: `[::1]:443`).
fn parse_endpoint(endpoint: &str) -> Result<(String, u16), String> {
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| format!("`{endpoint}` is not host:port"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(format!("`{endpoint}` has no host (expected host:port)"));
    }
    if host.contains(':') && !endpoint.starts_with('[') {
        return Err(format!(
            "`{endpoint}`: write IPv6 addresses in brackets, e.g. [::1]:443"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_string(), p)),
        _ => Err(format!(
            "`{endpoint}` has an invalid port `{port}` (expected 1-65535)"
        )),
    }
}

/// Uppercase hex without separators, or `None` when not 40 hex digits.
fn normalize_thumbprint(text: &str) -> Option<String> {
    let hex: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect::<String>()
        .to_ascii_uppercase();
    (hex.len() == 40 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

/// A duration for people: `3d 4h`, `5h 12m`, `45m`, `30s`; `412d` from 10 days up.
/// Rounds down; negative input gets a leading `-`.
pub fn human_duration(secs: i64) -> String {
    let sign = if secs < 0 { "-" } else { "" };
    let s = secs.unsigned_abs();
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    let body = if d >= 10 {
        format!("{d}d")
    } else if d > 0 {
        if h > 0 {
            format!("{d}d {h}h")
        } else {
            format!("{d}d")
        }
    } else if h > 0 {
        if m > 0 {
            format!("{h}h {m}m")
        } else {
            format!("{h}h")
        }
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{}s", s % 60)
    };
    format!("{sign}{body}")
}

fn rfc3339(ts: i64) -> String {
    DateTime::<Utc>::from_timestamp(ts, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| format!("@{ts}"))
}

// ---------------------------------------------------------------------------
// Facts about certificates, parsed once, evaluated purely.

#[derive(Debug, Clone, PartialEq)]
enum KeyInfo {
    Rsa(u32),
    Ec(u32),
    Other(String),
}

/// What the checks need from one certificate.
#[derive(Debug, Clone, PartialEq)]
struct CertFacts {
    /// `CN=…` or, without a CN, the whole subject.
    subject: String,
    not_before: i64,
    not_after: i64,
    key: KeyInfo,
    /// SHA-1 of the DER, uppercase hex.
    thumbprint: String,
    sig_alg: String,
    sig_is_sha1: bool,
}

const SHA1_SIGNATURE_OIDS: &[&str] = &[
    "1.2.840.113549.1.1.5", // sha1WithRSAEncryption
    "1.3.14.3.2.29",        // sha1WithRSASignature (OIW)
    "1.2.840.10045.4.1",    // ecdsa-with-SHA1
    "1.2.840.10040.4.3",    // dsa-with-sha1
];

fn thumbprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    digest
        .as_ref()
        .iter()
        .fold(String::with_capacity(40), |mut s, b| {
            let _ = write!(s, "{b:02X}");
            s
        })
}

fn parse_facts(der: &[u8]) -> Result<CertFacts, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let subject = match cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
    {
        Some(cn) => format!("CN={cn}"),
        None => cert.subject().to_string(),
    };
    let spki = cert.public_key();
    let key = match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            // Count the modulus bits exactly (leading zero bytes and bits excluded).
            let m = rsa.modulus;
            let skip = m.iter().take_while(|b| **b == 0).count();
            let bits = match m.get(skip) {
                Some(first) => (m.len() - skip) as u32 * 8 - first.leading_zeros(),
                None => 0,
            };
            KeyInfo::Rsa(bits)
        }
        Ok(PublicKey::EC(point)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            let bits = match curve.map(|o| o.to_id_string()).as_deref() {
                Some("1.2.840.10045.3.1.7") => 256,
                Some("1.3.132.0.34") => 384,
                Some("1.3.132.0.35") => 521,
                Some("1.3.132.0.10") => 256,
                _ => point.key_size() as u32,
            };
            KeyInfo::Ec(bits)
        }
        _ => KeyInfo::Other(oid_name(&spki.algorithm.algorithm)),
    };
    let sig_oid = &cert.signature_algorithm.algorithm;
    let sig_id = sig_oid.to_id_string();
    Ok(CertFacts {
        subject,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        key,
        thumbprint: thumbprint(der),
        sig_alg: oid_name(sig_oid),
        sig_is_sha1: SHA1_SIGNATURE_OIDS.contains(&sig_id.as_str()),
    })
}

fn oid_name(oid: &x509_parser::der_parser::oid::Oid<'_>) -> String {
    x509_parser::objects::oid2sn(oid, x509_parser::objects::oid_registry())
        .map(str::to_string)
        .unwrap_or_else(|_| oid.to_id_string())
}

/// Everything one run learned before judging it.
#[derive(Debug)]
struct Evidence {
    /// The first certificate of a file, or the endpoint's leaf.
    subject: CertFacts,
    /// The other certificates of the file or chain.
    others: Vec<CertFacts>,
    /// `Some(reason)` when an endpoint's chain did not verify (and `verify` is on).
    chain_error: Option<String>,
}

struct Checks {
    critical_before: i64,
    warn_before: i64,
    min_key_bits: u32,
    expected_thumbprint: Option<String>,
}

/// The pure part: evidence + settings + now -> one Outcome with the worst status;
/// its summary starts with the decisive finding.
fn evaluate(ev: &Evidence, checks: &Checks, now: i64) -> Outcome {
    let all = || std::iter::once(&ev.subject).chain(ev.others.iter());
    // The certificate that expires first decides the expiry; the one that becomes
    // valid last decides "not valid yet".
    let earliest = all().min_by_key(|c| c.not_after).unwrap_or(&ev.subject);
    let latest_start = all().max_by_key(|c| c.not_before).unwrap_or(&ev.subject);
    let seconds_left = earliest.not_after - now;

    let mut findings: Vec<(Status, Category, String)> = Vec::new();
    let expiry = format!("certificate {}", earliest.subject);
    if seconds_left < 0 {
        findings.push((
            Status::Critical,
            Category::Certificate,
            format!(
                "{expiry} expired {} ago ({})",
                human_duration(-seconds_left),
                rfc3339(earliest.not_after)
            ),
        ));
    } else if latest_start.not_before > now {
        findings.push((
            Status::Critical,
            Category::Certificate,
            format!(
                "certificate {} not valid until {} (in {})",
                latest_start.subject,
                rfc3339(latest_start.not_before),
                human_duration(latest_start.not_before - now)
            ),
        ));
    } else if seconds_left < checks.critical_before || seconds_left < checks.warn_before {
        let status = if seconds_left < checks.critical_before {
            Status::Critical
        } else {
            Status::Warning
        };
        findings.push((
            status,
            Category::Certificate,
            format!(
                "{expiry} expires in {} ({})",
                human_duration(seconds_left),
                rfc3339(earliest.not_after)
            ),
        ));
    }
    if let Some(reason) = &ev.chain_error {
        findings.push((
            Status::Critical,
            Category::Tls,
            format!("chain does not verify: {reason}"),
        ));
    }
    if let KeyInfo::Rsa(bits) = ev.subject.key {
        if bits < checks.min_key_bits {
            findings.push((
                Status::Critical,
                Category::Certificate,
                format!("RSA key {bits} bits < {}", checks.min_key_bits),
            ));
        }
    }
    if let Some(expected) = &checks.expected_thumbprint {
        if *expected != ev.subject.thumbprint {
            findings.push((
                Status::Critical,
                Category::Certificate,
                format!(
                    "thumbprint {} does not match expected {expected}",
                    ev.subject.thumbprint
                ),
            ));
        }
    }
    if ev.subject.sig_is_sha1 {
        findings.push((
            Status::Warning,
            Category::Certificate,
            format!("signed with SHA-1 ({})", ev.subject.sig_alg),
        ));
    }
    // Stable: among equal severities the order above (dates, chain, key,
    // thumbprint, hash) is the order of importance.
    findings.sort_by_key(|(status, _, _)| std::cmp::Reverse(status.severity()));

    let key_text = match &ev.subject.key {
        KeyInfo::Rsa(bits) => format!("RSA {bits} bits"),
        KeyInfo::Ec(bits) => format!("EC {bits} bits"),
        KeyInfo::Other(name) => format!("{name} key"),
    };
    let mut outcome = match findings.first() {
        None => Outcome::ok(format!(
            "certificate {} valid for {}, {key_text}, thumbprint {}",
            ev.subject.subject,
            human_duration(seconds_left),
            ev.subject.thumbprint
        )),
        Some((status, category, _)) => {
            let text: Vec<&str> = findings.iter().map(|(_, _, t)| t.as_str()).collect();
            Outcome::new(*status, Some(*category), text.join("; "))
        }
    };
    outcome.observe("not_after_timestamp_seconds", earliest.not_after as f64);
    outcome.observe("seconds_left", seconds_left as f64);
    match ev.subject.key {
        KeyInfo::Rsa(bits) | KeyInfo::Ec(bits) => outcome.observe("key_bits", f64::from(bits)),
        KeyInfo::Other(_) => {}
    }
    outcome
}

// ---------------------------------------------------------------------------
// The probe.

#[derive(Debug)]
enum PasswordSource {
    None,
    Env(String),
    File(PathBuf),
}

enum Source {
    File {
        path: PathBuf,
        password: PasswordSource,
    },
    Endpoint(Box<Endpoint>),
}

struct Endpoint {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    smtp_starttls: bool,
    tls: Arc<ClientConfig>,
    /// The real verifier, run on the captured chain after the handshake;
    /// `None` when `verify = false` (or, with an error, when there are no anchors).
    verifier: Result<Option<Arc<WebPkiServerVerifier>>, String>,
}

/// A runnable `certificate` probe; built once from its config.
pub struct CertificateProbe {
    source: Source,
    checks: Checks,
}

fn resolve(base_dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

impl CertificateProbe {
    pub fn new(cfg: &CertificateConfig, base_dir: &Path) -> Result<Self, String> {
        let problems = cfg.validate();
        if !problems.is_empty() {
            let text: Vec<String> = problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect();
            return Err(text.join("; "));
        }
        let checks = Checks {
            critical_before: cfg.critical_before.as_secs().min(i64::MAX as u64) as i64,
            warn_before: cfg.warn_before.as_secs().min(i64::MAX as u64) as i64,
            min_key_bits: cfg.min_key_bits,
            expected_thumbprint: cfg
                .expected_thumbprint
                .as_deref()
                .and_then(normalize_thumbprint),
        };
        let source = match (&cfg.path, &cfg.endpoint) {
            (Some(path), None) => Source::File {
                path: resolve(base_dir, path),
                password: match (&cfg.password_env, &cfg.password_file) {
                    (Some(var), _) => PasswordSource::Env(var.clone()),
                    (None, Some(file)) => PasswordSource::File(resolve(base_dir, file)),
                    (None, None) => PasswordSource::None,
                },
            },
            (None, Some(endpoint)) => {
                let (host, port) = parse_endpoint(endpoint)?;
                let name = cfg.server_name.clone().unwrap_or_else(|| host.clone());
                let server_name =
                    ServerName::try_from(name).map_err(|e| format!("server_name: {e}"))?;
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let verifier = if cfg.verify {
                    let ca_file = cfg.ca_file.as_deref().map(|f| resolve(base_dir, f));
                    build_verifier(ca_file.as_deref(), &provider)?
                } else {
                    Ok(None)
                };
                let tls = ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("TLS setup: {e}"))?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(CapturingVerifier {
                        algorithms: provider.signature_verification_algorithms,
                    }))
                    .with_no_client_auth();
                Source::Endpoint(Box::new(Endpoint {
                    host,
                    port,
                    server_name,
                    smtp_starttls: cfg.starttls.as_deref() == Some("smtp"),
                    tls: Arc::new(tls),
                    verifier,
                }))
            }
            _ => unreachable!("validate() guarantees exactly one of path/endpoint"),
        };
        Ok(CertificateProbe { source, checks })
    }
}

/// System roots plus `ca_file`. An unreadable `ca_file` is a build error; system
/// certificates that fail to load are skipped. With no anchors at all, every run
/// reports that the chain cannot be verified (the inner `Err`).
#[allow(clippy::type_complexity)]
fn build_verifier(
    ca_file: Option<&Path>,
    provider: &Arc<CryptoProvider>,
) -> Result<Result<Option<Arc<WebPkiServerVerifier>>, String>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    if !native.errors.is_empty() {
        tracing::debug!(
            errors = native.errors.len(),
            "some system root certificates did not load"
        );
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(ca_file) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| format!("ca_file {}: {e}", ca_file.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("ca_file {}: {e}", ca_file.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "ca_file {}: no CERTIFICATE in it",
                ca_file.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("ca_file {}: {e}", ca_file.display()))?;
        }
    }
    if roots.is_empty() {
        return Ok(Err(
            "no trust anchors (no system roots and no ca_file)".to_string()
        ));
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map(|v| Ok(Some(v)))
        .map_err(|e| format!("TLS verifier: {e}"))
}

/// Accepts any chain so that the handshake finishes and the chain can be read
/// even when it is bad; the real verification runs afterwards on the captured
/// chain. The handshake signatures are still checked against the leaf's key.
/// Stateless, so one `ClientConfig` serves concurrent runs.
#[derive(Debug)]
struct CapturingVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for CapturingVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl Probe for CertificateProbe {
    fn run<'a>(&'a self, ctx: &'a ProbeContext) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let evidence = match &self.source {
                Source::File { path, password } => from_file(path, password).await,
                Source::Endpoint(ep) => from_endpoint(ep, ctx).await,
            };
            match evidence {
                Ok(ev) => evaluate(&ev, &self.checks, ctx.clock.now().timestamp()),
                Err(outcome) => outcome,
            }
        })
    }
}

// ---------------------------------------------------------------------------
// File sources.

fn bad_cert(path: &Path, what: impl std::fmt::Display) -> Outcome {
    Outcome::critical(
        Category::Certificate,
        format!("cannot parse {}: {what}", path.display()),
    )
}

fn io_text(e: &std::io::Error) -> String {
    // "No such file or directory", without the "(os error 2)" suffix.
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

async fn from_file(path: &Path, password: &PasswordSource) -> Result<Evidence, Outcome> {
    let data = tokio::fs::read(path).await.map_err(|e| {
        Outcome::critical(
            Category::Config,
            format!("cannot read {}: {}", path.display(), io_text(&e)),
        )
    })?;
    let is_pkcs12 = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("pfx") || e.eq_ignore_ascii_case("p12"));
    let ders: Vec<Vec<u8>> = if is_pkcs12 {
        let password = read_password(password).await?;
        pkcs12_certs(path, &data, &password)?
    } else if looks_like_pem(&data) {
        pem_certs(path, &data)?
    } else {
        vec![data]
    };
    let mut facts = Vec::with_capacity(ders.len());
    for (i, der) in ders.iter().enumerate() {
        let f = parse_facts(der).map_err(|e| {
            if ders.len() == 1 {
                bad_cert(path, format!("invalid X.509 certificate: {e}"))
            } else {
                bad_cert(path, format!("certificate #{} is invalid: {e}", i + 1))
            }
        })?;
        facts.push(f);
    }
    let mut facts = facts.into_iter();
    let subject = facts
        .next()
        .ok_or_else(|| bad_cert(path, "no certificate in it"))?;
    Ok(Evidence {
        subject,
        others: facts.collect(),
        chain_error: None,
    })
}

fn looks_like_pem(data: &[u8]) -> bool {
    data.windows(11).any(|w| w == b"-----BEGIN ")
}

fn pem_certs(path: &Path, data: &[u8]) -> Result<Vec<Vec<u8>>, Outcome> {
    let mut ders = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(data) {
        let pem = block.map_err(|e| bad_cert(path, format!("bad PEM block: {e}")))?;
        if pem.label == "CERTIFICATE"
            || pem.label == "X509 CERTIFICATE"
            || pem.label == "TRUSTED CERTIFICATE"
        {
            ders.push(pem.contents);
        }
    }
    if ders.is_empty() {
        return Err(Outcome::critical(
            Category::Certificate,
            format!("no CERTIFICATE block in {}", path.display()),
        ));
    }
    Ok(ders)
}

/// The PKCS#12 password, never shown in any message.
async fn read_password(source: &PasswordSource) -> Result<String, Outcome> {
    match source {
        PasswordSource::None => Ok(String::new()),
        PasswordSource::Env(var) => match std::env::var(var) {
            Ok(v) => Ok(v),
            Err(std::env::VarError::NotPresent) => Err(Outcome::critical(
                Category::Config,
                format!("password variable {var} is not set"),
            )),
            Err(std::env::VarError::NotUnicode(_)) => Err(Outcome::critical(
                Category::Config,
                format!("password variable {var} is not valid UTF-8"),
            )),
        },
        PasswordSource::File(file) => match tokio::fs::read(file).await {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Ok(text.trim().to_string()),
                Err(_) => Err(Outcome::critical(
                    Category::Config,
                    format!("password file {} is not valid UTF-8", file.display()),
                )),
            },
            Err(e) => Err(Outcome::critical(
                Category::Config,
                format!(
                    "cannot read password file {}: {}",
                    file.display(),
                    io_text(&e)
                ),
            )),
        },
    }
}

/// Certificates of a PKCS#12 file; the one that belongs to the private key first.
fn pkcs12_certs(path: &Path, data: &[u8], password: &str) -> Result<Vec<Vec<u8>>, Outcome> {
    use p12_keystore::error::Error as P12Error;
    let archive =
        p12_keystore::Pkcs12Archive::from_pkcs12(data, password).map_err(|e| match e {
            // Wrong password and corruption look the same from here: the MAC or the
            // decryption fails. Never include the password.
            P12Error::MacError(_)
            | P12Error::UnpadError
            | P12Error::Pkcs5Error(_)
            | P12Error::InvalidPrivateKey
            | P12Error::InvalidData => Outcome::critical(
                Category::Config,
                format!("wrong password for {} or corrupt PKCS#12", path.display()),
            ),
            other => bad_cert(path, format!("invalid PKCS#12: {other}")),
        })?;
    let key_ids: Vec<&[u8]> = archive
        .keys
        .iter()
        .filter_map(|k| k.local_key_id.as_ref().map(|id| id.as_ref()))
        .collect();
    let mut certs: Vec<(bool, Vec<u8>)> = archive
        .certs
        .iter()
        .map(|bag| {
            let own = bag
                .local_key_id
                .as_deref()
                .is_some_and(|id| key_ids.contains(&id));
            (own, bag.cert.as_der().to_vec())
        })
        .collect();
    // Stable sort: the key's own certificate first, the rest in file order.
    certs.sort_by_key(|(own, _)| !own);
    Ok(certs.into_iter().map(|(_, der)| der).collect())
}

// ---------------------------------------------------------------------------
// Endpoint source.

async fn from_endpoint(ep: &Endpoint, ctx: &ProbeContext) -> Result<Evidence, Outcome> {
    let target = if ep.host.contains(':') {
        format!("[{}]:{}", ep.host, ep.port)
    } else {
        format!("{}:{}", ep.host, ep.port)
    };
    let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
        .await
        .map_err(|e| {
            Outcome::critical(
                Category::Network,
                format!("cannot connect to {target}: {}", io_text(&e)),
            )
        })?;
    let tcp = if ep.smtp_starttls {
        smtp_starttls(tcp, &target).await?
    } else {
        tcp
    };
    let connector = tokio_rustls::TlsConnector::from(ep.tls.clone());
    let tls = connector
        .connect(ep.server_name.clone(), tcp)
        .await
        .map_err(|e| {
            Outcome::critical(
                Category::Tls,
                format!("TLS handshake with {target} failed: {e}"),
            )
        })?;
    let chain: Vec<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    drop(tls);
    let (leaf, intermediates) = chain.split_first().ok_or_else(|| {
        Outcome::critical(Category::Tls, format!("{target} presented no certificate"))
    })?;

    let chain_error = match &ep.verifier {
        Ok(None) => None,
        Err(reason) => Some(reason.clone()),
        Ok(Some(verifier)) => {
            let now = UnixTime::since_unix_epoch(Duration::from_secs(
                ctx.clock.now().timestamp().max(0) as u64,
            ));
            verifier
                .verify_server_cert(leaf, intermediates, &ep.server_name, &[], now)
                .err()
                .and_then(|e| describe_verify_error(&e, &ep.server_name))
        }
    };

    let subject = parse_facts(leaf).map_err(|e| {
        Outcome::critical(
            Category::Certificate,
            format!("{target} presented an invalid certificate: {e}"),
        )
    })?;
    let mut others = Vec::with_capacity(intermediates.len());
    for (i, der) in intermediates.iter().enumerate() {
        others.push(parse_facts(der).map_err(|e| {
            Outcome::critical(
                Category::Certificate,
                format!("{target} presented an invalid certificate #{}: {e}", i + 2),
            )
        })?);
    }
    Ok(Evidence {
        subject,
        others,
        chain_error,
    })
}

/// Why the chain failed, or `None` when the failure is only about dates, which
/// the expiry checks report with their own category.
fn describe_verify_error(e: &rustls::Error, name: &ServerName<'_>) -> Option<String> {
    match e {
        rustls::Error::InvalidCertificate(ce) => match ce {
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => None,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Some(format!("NotValidForName (not valid for {})", name.to_str()))
            }
            CertificateError::Other(other) => Some(format!("{other}")),
            other => Some(format!("{other:?}")),
        },
        other => Some(other.to_string()),
    }
}

fn protocol(target: &str, what: impl std::fmt::Display) -> Outcome {
    Outcome::critical(
        Category::Protocol,
        format!("SMTP STARTTLS with {target}: {what}"),
    )
}

/// Reads one SMTP reply (all its lines) and returns its code and lines.
async fn smtp_reply(
    reader: &mut BufReader<TcpStream>,
    target: &str,
) -> Result<(u16, Vec<String>), Outcome> {
    let mut lines = Vec::new();
    loop {
        let mut buf = Vec::new();
        // Bounded lines: a server that streams garbage cannot grow memory.
        (&mut *reader)
            .take(4096)
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|e| {
                Outcome::critical(
                    Category::Network,
                    format!("SMTP with {target}: {}", io_text(&e)),
                )
            })?;
        if buf.is_empty() {
            return Err(protocol(target, "connection closed by server"));
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| protocol(target, format!("unexpected reply `{}`", clip(&line))))?;
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last {
            return Ok((code, lines));
        }
        if lines.len() > 100 {
            return Err(protocol(target, "reply too long"));
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

async fn smtp_starttls(tcp: TcpStream, target: &str) -> Result<TcpStream, Outcome> {
    let mut reader = BufReader::new(tcp);
    let (code, lines) = smtp_reply(&mut reader, target).await?;
    if code != 220 {
        return Err(protocol(target, format!("greeting `{}`", clip(&lines[0]))));
    }
    send(&mut reader, b"EHLO sonde\r\n", target).await?;
    let (code, lines) = smtp_reply(&mut reader, target).await?;
    if code != 250 {
        return Err(protocol(
            target,
            format!("EHLO refused: `{}`", clip(&lines[0])),
        ));
    }
    let offers = lines.iter().any(|l| {
        l.get(4..)
            .is_some_and(|ext| ext.trim().eq_ignore_ascii_case("STARTTLS"))
    });
    if !offers {
        return Err(protocol(target, "server does not offer STARTTLS"));
    }
    send(&mut reader, b"STARTTLS\r\n", target).await?;
    let (code, lines) = smtp_reply(&mut reader, target).await?;
    if code != 220 {
        return Err(protocol(
            target,
            format!("STARTTLS refused: `{}`", clip(&lines[0])),
        ));
    }
    if !reader.buffer().is_empty() {
        // Plaintext sent before the handshake could be injected into it.
        return Err(protocol(target, "unexpected data after the STARTTLS reply"));
    }
    Ok(reader.into_inner())
}

async fn send(reader: &mut BufReader<TcpStream>, line: &[u8], target: &str) -> Result<(), Outcome> {
    reader.get_mut().write_all(line).await.map_err(|e| {
        Outcome::critical(
            Category::Network,
            format!("SMTP with {target}: {}", io_text(&e)),
        )
    })
}
