//! `kind = "certificate"`: how long until a certificate expires, and whether it is
//! one an operator should trust (key size, thumbprint, signature hash, chain).
//!
//! The certificate comes either from a file (PEM, DER, PKCS#12) or from a TLS
//! endpoint (optionally after SMTP STARTTLS). Both paths end in the same pure
//! evaluation, [`evaluate`], which turns the parsed facts and `now` into one
//! `Outcome`. Timeouts, timing and spans belong to the runner, not to this file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig};
use tokio::net::TcpStream;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{BuildContext, ProbeKind};
use crate::human::{format_duration, rfc3339};
use crate::net::smtp::StarttlsError;
use crate::outcome::{Category, Outcome, Probe, ProbeContext, Status};
use crate::secret::SecretSource;
use crate::spec::{BuildError, SpecProblem};

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
    pub path: Option<Box<str>>,
    /// `host:port` of a TLS endpoint.
    #[serde(default)]
    pub endpoint: Option<Box<str>>,
    /// SNI and the name the chain must be valid for; default: the endpoint's host.
    #[serde(default)]
    pub server_name: Option<Box<str>>,
    /// `"smtp"`: speak SMTP up to STARTTLS before the handshake.
    #[serde(default)]
    pub starttls: Option<Box<str>>,
    /// Whether the endpoint's chain must verify.
    #[serde(default = "default_verify")]
    pub verify: bool,
    /// Extra trust anchors (PEM) for endpoint verification, added to the system roots.
    #[serde(default)]
    pub ca_file: Option<Box<str>>,
    /// Environment variable holding the PKCS#12 password.
    #[serde(default)]
    pub password_env: Option<Box<str>>,
    /// File whose trimmed content is the PKCS#12 password.
    #[serde(default)]
    pub password_file: Option<Box<str>>,
    #[serde(default = "default_critical_before", with = "crate::human::duration")]
    pub critical_before: Duration,
    #[serde(default = "default_warn_before", with = "crate::human::duration")]
    pub warn_before: Duration,
    #[serde(default = "default_min_key_bits")]
    pub min_key_bits: u32,
    /// SHA-1 thumbprint as Exchange prints it; case, spaces and colons are ignored.
    #[serde(default)]
    pub expected_thumbprint: Option<Box<str>>,
    /// `"exchange-auth"`: the file is Exchange's Auth certificate, judged with the
    /// rotation rules of Microsoft's `MonitorExchangeAuthCertificate.ps1` instead of
    /// `warn_before`/`critical_before`.
    #[serde(default)]
    pub role: Option<Role>,
    /// exchange-auth: the next Auth certificate (`NextCertificateThumbprint`).
    #[serde(default)]
    pub next_path: Option<Box<str>>,
    #[serde(default)]
    pub next_password_env: Option<Box<str>>,
    #[serde(default)]
    pub next_password_file: Option<Box<str>>,
    #[serde(default)]
    pub next_expected_thumbprint: Option<Box<str>>,
}

/// What a certificate is for, when that changes how it is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Role {
    /// Exchange's Auth (OAuth signing) certificate, current and next.
    #[serde(rename = "exchange-auth")]
    ExchangeAuth,
}

/// Days left under which the current Auth certificate needs a successor, and
/// under which a configured successor is itself too short-lived, as
/// `MonitorExchangeAuthCertificate.ps1` judges them.
pub(crate) const AUTH_RENEW_DAYS: i64 = 60;
pub(crate) const AUTH_NEXT_MIN_DAYS: i64 = 120;

/// What an operator runs when the Auth certificate needs attention.
pub(crate) const AUTH_ADVICE: &str = "run MonitorExchangeAuthCertificate.ps1 -ValidateAndRenewAuthCertificate $true; \
     in a hybrid organisation, once the certificate changed, re-run the Hybrid Configuration Wizard \
     or ConfigureExchangeHybridApplication.ps1 -UpdateCertificate";

impl ProbeKind for CertificateConfig {
    /// Pure checks: every problem at once, each naming its key.
    fn validate(&self) -> Vec<SpecProblem> {
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
            if ServerName::try_from(&**name).is_err() {
                problems.push(SpecProblem::new(
                    "server_name",
                    format!("`{name}` is not a valid DNS name or IP address"),
                ));
            }
        }
        if let Some(starttls) = &self.starttls {
            if &**starttls != "smtp" {
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
                    format_duration(self.warn_before.as_secs() as i64),
                    format_duration(self.critical_before.as_secs() as i64)
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
        self.validate_role(&mut problems);
        problems
    }

    fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Probe>, BuildError> {
        Ok(Arc::new(CertificateProbe::new(self, ctx.base_dir)?))
    }

    fn perf_thresholds(&self) -> Vec<crate::output::Threshold> {
        // The Auth role's rotation rules warn at 60 days and are critical once expired.
        if self.role == Some(Role::ExchangeAuth) {
            return vec![crate::output::Threshold {
                observation: "seconds_left",
                warn: Some(format!("{}:", AUTH_RENEW_DAYS * 86_400)),
                crit: Some("0:".to_string()),
            }];
        }
        vec![crate::output::Threshold {
            observation: "seconds_left",
            warn: Some(format!("{}:", self.warn_before.as_secs())),
            crit: Some(format!("{}:", self.critical_before.as_secs())),
        }]
    }
}

impl CertificateConfig {
    /// The keys of `role = "exchange-auth"`: meaningful only with it, and the next
    /// certificate's own keys only with `next_path`.
    fn validate_role(&self, problems: &mut Vec<SpecProblem>) {
        let auth = self.role == Some(Role::ExchangeAuth);
        // Only values other than the defaults can be told apart from unset ones.
        for (key, set) in [
            ("warn_before", self.warn_before != default_warn_before()),
            (
                "critical_before",
                self.critical_before != default_critical_before(),
            ),
        ] {
            if auth && set {
                problems.push(SpecProblem::new(
                    key,
                    "not used with role = \"exchange-auth\": the rotation rules decide (60 days without a next certificate, critical once expired)",
                ));
            }
        }
        if auth && self.endpoint.is_some() {
            problems.push(SpecProblem::new(
                "role",
                "\"exchange-auth\" judges a certificate file: use `path`, not `endpoint`",
            ));
        }
        for (key, set) in [
            ("next_path", self.next_path.is_some()),
            ("next_password_env", self.next_password_env.is_some()),
            ("next_password_file", self.next_password_file.is_some()),
            (
                "next_expected_thumbprint",
                self.next_expected_thumbprint.is_some(),
            ),
        ] {
            if set && !auth {
                problems.push(SpecProblem::new(
                    key,
                    "only meaningful with role = \"exchange-auth\"",
                ));
            } else if set && key != "next_path" && self.next_path.is_none() {
                problems.push(SpecProblem::new(key, "only meaningful with `next_path`"));
            }
        }
        if self
            .next_path
            .as_deref()
            .is_some_and(|p| p.trim().is_empty())
        {
            problems.push(SpecProblem::new("next_path", "must not be empty"));
        }
        if self.next_password_env.is_some() && self.next_password_file.is_some() {
            problems.push(SpecProblem::new(
                "next_password_file",
                "`next_password_env` and `next_password_file` are mutually exclusive",
            ));
        }
        if self
            .next_password_env
            .as_deref()
            .is_some_and(|v| v.trim().is_empty())
        {
            problems.push(SpecProblem::new(
                "next_password_env",
                "must name an environment variable",
            ));
        }
        if let Some(thumbprint) = &self.next_expected_thumbprint {
            if normalize_thumbprint(thumbprint).is_none() {
                problems.push(SpecProblem::new(
                    "next_expected_thumbprint",
                    "must be 40 hexadecimal digits (a SHA-1 thumbprint; spaces and colons are ignored)",
                ));
            }
        }
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
    hex::encode_upper(digest)
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
    /// exchange-auth: the next Auth certificate, when `next_path` is set.
    next: Option<CertFacts>,
}

struct Checks {
    critical_before: i64,
    warn_before: i64,
    min_key_bits: u32,
    expected_thumbprint: Option<String>,
    role: Option<Role>,
    next_expected_thumbprint: Option<String>,
}

/// Whole days left, truncated toward zero as `(NotAfter - now).Days` is.
fn days_left(not_after: i64, now: i64) -> i64 {
    (not_after - now) / 86_400
}

/// The Auth certificate's rotation, as `MonitorExchangeAuthCertificate.ps1`
/// decides it from the current and the next certificate: `None` when nothing is
/// to be done, else the status and what is wrong (the advice is added by the
/// caller).
fn judge_rotation(
    current: &CertFacts,
    next: Option<&CertFacts>,
    now: i64,
) -> Option<(Status, String)> {
    let current_left = current.not_after - now;
    let next_valid = next.filter(|n| n.not_after > now);
    let next_text = |n: &CertFacts| {
        let left = n.not_after - now;
        if left < 0 {
            format!(
                "the next certificate {} expired {} ago",
                n.subject,
                format_duration(-left)
            )
        } else {
            format!(
                "the next certificate {} expires in {} ({})",
                n.subject,
                format_duration(left),
                rfc3339(n.not_after)
            )
        }
    };
    if current_left < 0 {
        let expired = format!(
            "Auth certificate {} expired {} ago ({})",
            current.subject,
            format_duration(-current_left),
            rfc3339(current.not_after)
        );
        return Some(match (next_valid, next) {
            (Some(n), _) => (
                Status::Critical,
                format!(
                    "{expired}: replace required (the next certificate is not active yet); {}",
                    next_text(n)
                ),
            ),
            (None, Some(n)) => (
                Status::Critical,
                format!("{expired} and {}: replace required", next_text(n)),
            ),
            (None, None) => (
                Status::Critical,
                format!("{expired} and no next certificate is configured: replace required"),
            ),
        });
    }
    if days_left(current.not_after, now) > AUTH_RENEW_DAYS {
        return None;
    }
    let expires = format!(
        "Auth certificate {} expires in {} ({})",
        current.subject,
        format_duration(current_left),
        rfc3339(current.not_after)
    );
    match next {
        None => Some((
            Status::Warning,
            format!("{expires} and no next certificate is configured: configure the next Auth certificate"),
        )),
        Some(n) if days_left(n.not_after, now) <= AUTH_NEXT_MIN_DAYS => Some((
            Status::Warning,
            format!(
                "{expires} and {} (needs more than {AUTH_NEXT_MIN_DAYS}d): configure the next Auth certificate",
                next_text(n)
            ),
        )),
        Some(_) => None,
    }
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
    let auth = checks.role == Some(Role::ExchangeAuth);
    // With the Auth role the rotation rules judge the dates of the current
    // certificate (the file's first) and of the next one.
    let seconds_left = if auth {
        ev.subject.not_after - now
    } else {
        seconds_left
    };
    if auth {
        if ev.subject.not_before > now {
            findings.push((
                Status::Critical,
                Category::Certificate,
                format!(
                    "Auth certificate {} not valid until {} (in {})",
                    ev.subject.subject,
                    rfc3339(ev.subject.not_before),
                    format_duration(ev.subject.not_before - now)
                ),
            ));
        }
        if let Some((status, text)) = judge_rotation(&ev.subject, ev.next.as_ref(), now) {
            findings.push((
                status,
                Category::Certificate,
                format!("{text}; {AUTH_ADVICE}"),
            ));
        }
    } else if seconds_left < 0 {
        findings.push((
            Status::Critical,
            Category::Certificate,
            format!(
                "{expiry} expired {} ago ({})",
                format_duration(-seconds_left),
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
                format_duration(latest_start.not_before - now)
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
                format_duration(seconds_left),
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
    if let (Some(expected), Some(next)) = (&checks.next_expected_thumbprint, &ev.next) {
        if *expected != next.thumbprint {
            findings.push((
                Status::Critical,
                Category::Certificate,
                format!(
                    "next certificate thumbprint {} does not match expected {expected}",
                    next.thumbprint
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
        None if auth => {
            let next = match &ev.next {
                None => "no next certificate configured".to_string(),
                Some(n) if n.not_after < now => format!(
                    "next certificate {} expired {} ago",
                    n.subject,
                    format_duration(now - n.not_after)
                ),
                Some(n) => format!(
                    "next certificate {} valid for {} (thumbprint {})",
                    n.subject,
                    format_duration(n.not_after - now),
                    n.thumbprint
                ),
            };
            Outcome::ok(format!(
                "Auth certificate {} valid for {}, {key_text}, thumbprint {}; {next}",
                ev.subject.subject,
                format_duration(seconds_left),
                ev.subject.thumbprint
            ))
        }
        None => Outcome::ok(format!(
            "certificate {} valid for {}, {key_text}, thumbprint {}",
            ev.subject.subject,
            format_duration(seconds_left),
            ev.subject.thumbprint
        )),
        Some((status, category, _)) => {
            let text: Vec<&str> = findings.iter().map(|(_, _, t)| t.as_str()).collect();
            Outcome::new(*status, Some(*category), text.join("; "))
        }
    };
    let not_after = if auth {
        ev.subject.not_after
    } else {
        earliest.not_after
    };
    outcome.observe("not_after_timestamp_seconds", not_after as f64);
    outcome.observe("seconds_left", seconds_left as f64);
    if let Some(next) = &ev.next {
        outcome.observe("next_seconds_left", (next.not_after - now) as f64);
    }
    match ev.subject.key {
        KeyInfo::Rsa(bits) | KeyInfo::Ec(bits) => outcome.observe("key_bits", f64::from(bits)),
        KeyInfo::Other(_) => {}
    }
    outcome
}

// ---------------------------------------------------------------------------
// The probe.

enum Source {
    File {
        path: PathBuf,
        /// The PKCS#12 password; none configured tries the empty one.
        password: Option<SecretSource>,
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
    verifier: Trust,
}

/// How an endpoint's chain is judged: `Ok(None)` not at all (`verify = false`),
/// `Ok(Some(v))` by `v`, `Err(reason)` never successfully (no trust anchors).
type Trust = Result<Option<Arc<WebPkiServerVerifier>>, String>;

/// A runnable `certificate` probe; built once from its config.
pub struct CertificateProbe {
    source: Source,
    checks: Checks,
    /// exchange-auth: the next Auth certificate's file and its PKCS#12 password.
    next: Option<Box<(PathBuf, Option<SecretSource>)>>,
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
    pub fn new(cfg: &CertificateConfig, base_dir: &Path) -> Result<Self, BuildError> {
        if let Some(p) = cfg.validate().into_iter().next() {
            return Err(p.into());
        }
        let checks = Checks {
            critical_before: cfg.critical_before.as_secs().min(i64::MAX as u64) as i64,
            warn_before: cfg.warn_before.as_secs().min(i64::MAX as u64) as i64,
            min_key_bits: cfg.min_key_bits,
            expected_thumbprint: cfg
                .expected_thumbprint
                .as_deref()
                .and_then(normalize_thumbprint),
            role: cfg.role,
            next_expected_thumbprint: cfg
                .next_expected_thumbprint
                .as_deref()
                .and_then(normalize_thumbprint),
        };
        let next = cfg.next_path.as_ref().map(|p| {
            Box::new((
                resolve(base_dir, p),
                SecretSource::from_keys(
                    cfg.next_password_env.as_ref(),
                    cfg.next_password_file.as_ref(),
                    base_dir,
                ),
            ))
        });
        let source = match (&cfg.path, &cfg.endpoint) {
            (Some(path), None) => Source::File {
                path: resolve(base_dir, path),
                password: SecretSource::from_keys(
                    cfg.password_env.as_ref(),
                    cfg.password_file.as_ref(),
                    base_dir,
                ),
            },
            (None, Some(endpoint)) => {
                let (host, port) =
                    parse_endpoint(endpoint).map_err(|m| BuildError::new("endpoint", m))?;
                let name = cfg
                    .server_name
                    .as_deref()
                    .map_or_else(|| host.clone(), str::to_string);
                let server_name = ServerName::try_from(name)
                    .map_err(|e| BuildError::new("server_name", e.to_string()))?;
                // Probes share the handshake config and the anchors of each
                // distinct ca_file; the handshake accepts any chain, which is
                // verified afterwards, so that a bad chain's dates are still
                // reported.
                let clients = crate::net::http::Clients::process();
                let verifier = if cfg.verify {
                    let ca_file = cfg.ca_file.as_deref().map(|f| resolve(base_dir, f));
                    let roots = clients
                        .roots(ca_file.as_deref())
                        .map_err(|m| BuildError::new("ca_file", m))?;
                    build_verifier(clients, roots).map_err(|m| BuildError::new("ca_file", m))?
                } else {
                    Ok(None)
                };
                let tls = clients
                    .capture_tls()
                    .map_err(|m| BuildError::new("", format!("TLS setup: {m}")))?;
                Source::Endpoint(Box::new(Endpoint {
                    host,
                    port,
                    server_name,
                    smtp_starttls: cfg.starttls.as_deref() == Some("smtp"),
                    tls,
                    verifier,
                }))
            }
            _ => unreachable!("validate() guarantees exactly one of path/endpoint"),
        };
        Ok(CertificateProbe {
            source,
            checks,
            next,
        })
    }
}

/// System roots plus `ca_file`. An unreadable `ca_file` is a build error; system
/// certificates that fail to load are skipped. With no anchors at all, every run
/// reports that the chain cannot be verified (the inner `Err`). Probes with the
/// same anchors share one verifier (`clients` keeps it).
fn build_verifier(
    clients: &crate::net::http::Clients,
    roots: Arc<rustls::RootCertStore>,
) -> Result<Trust, String> {
    if roots.is_empty() {
        return Ok(Err(
            "no trust anchors (no system roots and no ca_file)".to_string()
        ));
    }
    clients.verifier(&roots).map(|v| Ok(Some(v)))
}

impl Probe for CertificateProbe {
    fn run<'a>(&'a self, ctx: &'a ProbeContext) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let evidence = match &self.source {
                Source::File { path, password } => from_file(path, password, ctx.timeout).await,
                Source::Endpoint(ep) => from_endpoint(ep, ctx).await,
            };
            let evidence = match (evidence, self.next.as_deref()) {
                (Ok(mut ev), Some((path, password))) => {
                    match from_file(path, password, ctx.timeout).await {
                        Ok(next) => {
                            ev.next = Some(next.subject);
                            Ok(ev)
                        }
                        Err(mut o) => {
                            o.summary = format!("next Auth certificate: {}", o.summary);
                            Err(o)
                        }
                    }
                }
                (evidence, _) => evidence,
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

async fn from_file(
    path: &Path,
    password: &Option<SecretSource>,
    timeout: std::time::Duration,
) -> Result<Evidence, Outcome> {
    // Only a regular file of at most 1 MiB, read without blocking the probe
    // past its timeout: a FIFO or /dev/zero is refused by name.
    let data = crate::file::read(path, crate::file::MAX_SIZE, timeout)
        .await
        .map_err(|e| {
            Outcome::critical(
                Category::Config,
                format!("cannot read {}: {e}", path.display()),
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
        next: None,
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
async fn read_password(source: &Option<SecretSource>) -> Result<String, Outcome> {
    match source {
        Some(source) => source
            .read("password")
            .await
            .map_err(|e| Outcome::critical(Category::Config, e.to_string())),
        None => Ok(String::new()),
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
        crate::net::smtp::starttls(tcp)
            .await
            .map_err(|e| starttls_failure(&e, &target))?
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
        next: None,
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

/// A STARTTLS dialogue that stopped before TLS: `network` when the connection
/// failed, `protocol` when the server answered otherwise.
fn starttls_failure(e: &StarttlsError, target: &str) -> Outcome {
    match e {
        StarttlsError::Io(e) => Outcome::critical(
            Category::Network,
            format!("SMTP with {target}: {}", io_text(e)),
        ),
        StarttlsError::Protocol(what) => Outcome::critical(
            Category::Protocol,
            format!("SMTP STARTTLS with {target}: {what}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use chrono::DateTime;
    use std::process::Command;
    use std::sync::{Mutex, OnceLock};
    use tempfile::TempDir;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    const DAY: i64 = 86_400;

    // --- fixtures made by the openssl CLI -------------------------------------

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl CLI is installed");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Keys are generated once per test run (RSA keygen is slow) and shared.
    fn key(kind: &str) -> PathBuf {
        static DIR: OnceLock<TempDir> = OnceLock::new();
        static LOCK: Mutex<()> = Mutex::new(());
        let dir = DIR.get_or_init(|| TempDir::new().unwrap()).path();
        let path = dir.join(format!("{kind}.key"));
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if !path.exists() {
            let tmp = format!("{kind}.tmp");
            match kind {
                "ec256" => openssl(
                    dir,
                    &[
                        "genpkey",
                        "-algorithm",
                        "EC",
                        "-pkeyopt",
                        "ec_paramgen_curve:P-256",
                        "-out",
                        &tmp,
                    ],
                ),
                rsa => {
                    let bits = format!("rsa_keygen_bits:{}", rsa.trim_start_matches("rsa"));
                    openssl(
                        dir,
                        &[
                            "genpkey",
                            "-algorithm",
                            "RSA",
                            "-pkeyopt",
                            &bits,
                            "-out",
                            &tmp,
                        ],
                    );
                }
            }
            std::fs::rename(dir.join(tmp), &path).unwrap();
        }
        path
    }

    /// A self-signed certificate `NAME.pem` valid from now for `days`.
    fn self_signed(dir: &Path, name: &str, key_kind: &str, days: u32, extra: &[&str]) -> PathBuf {
        let key = key(key_kind);
        let out = format!("{name}.pem");
        let subj = format!("/CN={name}");
        let days = days.to_string();
        let mut args = vec![
            "req",
            "-x509",
            "-new",
            "-key",
            key.to_str().unwrap(),
            "-subj",
            &subj,
            "-days",
            &days,
            "-out",
            &out,
        ];
        args.extend_from_slice(extra);
        openssl(dir, &args);
        dir.join(out)
    }

    /// A CA (EC, 365 days) and a leaf for localhost/127.0.0.1 signed by it (RSA 2048).
    struct Chain {
        ca: PathBuf,
        leaf: PathBuf,
        leaf_key: PathBuf,
    }

    fn chain(dir: &Path, leaf_days: u32) -> Chain {
        let ca = self_signed(dir, "Sonde Test CA", "ec256", 365, &[]);
        let leaf_key = key("rsa2048");
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                leaf_key.to_str().unwrap(),
                "-subj",
                "/CN=localhost",
                "-out",
                "leaf.csr",
            ],
        );
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let days = leaf_days.to_string();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                ca.to_str().unwrap(),
                "-CAkey",
                key("ec256").to_str().unwrap(),
                "-CAcreateserial",
                "-days",
                &days,
                "-sha256",
                "-extfile",
                "leaf.ext",
                "-out",
                "leaf.pem",
            ],
        );
        Chain {
            ca,
            leaf: dir.join("leaf.pem"),
            leaf_key,
        }
    }

    fn sha1_fingerprint(cert: &Path) -> String {
        let out = Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-fingerprint",
                "-sha1",
                "-in",
                cert.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        text.trim().rsplit('=').next().unwrap().replace(':', "")
    }

    fn facts_of(pem: &Path) -> Vec<CertFacts> {
        let data = std::fs::read(pem).unwrap();
        pem_certs(pem, &data)
            .unwrap()
            .iter()
            .map(|d| parse_facts(d).unwrap())
            .collect()
    }

    // --- running the probe ------------------------------------------------------

    fn config(toml_text: &str) -> CertificateConfig {
        toml::from_str(toml_text).unwrap()
    }

    fn ctx_at(ts: i64) -> ProbeContext {
        ProbeContext {
            clock: Arc::new(ManualClock::new(DateTime::from_timestamp(ts, 0).unwrap())),
            timeout: Duration::from_secs(10),
            progress: Default::default(),
        }
    }

    /// "Now" for fixtures made moments ago: a minute later, so that whole days left
    /// round down predictably (a fresh 400-day certificate has 399d and some left).
    fn now() -> i64 {
        crate::clock::Clock::now(&crate::clock::SystemClock).timestamp() + 60
    }

    async fn run_at(toml_text: &str, base: &Path, ts: i64) -> Outcome {
        let probe = CertificateProbe::new(&config(toml_text), base).expect("probe builds");
        let ctx = ctx_at(ts);
        probe.run(&ctx).await
    }

    fn file_toml(path: &Path) -> String {
        format!("path = {:?}\n", path.to_str().unwrap())
    }

    #[track_caller]
    fn assert_outcome(o: &Outcome, status: Status, category: Option<Category>, parts: &[&str]) {
        assert_eq!(o.status, status, "{o:?}");
        assert_eq!(o.category, category, "{o:?}");
        for part in parts {
            assert!(
                o.summary.contains(part),
                "summary {:?} lacks {part:?}",
                o.summary
            );
        }
    }

    // --- pure parts -------------------------------------------------------------

    #[test]
    fn defaults_come_from_serde() {
        let c = config("endpoint = \"mail.example.com:25\"\nstarttls = \"smtp\"\n");
        assert!(c.verify);
        assert_eq!(c.critical_before, Duration::from_secs(7 * DAY as u64));
        assert_eq!(c.warn_before, Duration::from_secs(30 * DAY as u64));
        assert_eq!(c.min_key_bits, 2048);
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let c = config("path = \"a.pfx\"\npassword_env = \"PW\"\nwarn_before = \"60d\"\ncritical_before = \"14d\"\n");
        assert_eq!(c.warn_before, Duration::from_secs(60 * DAY as u64));
        assert!(c.validate().is_empty());
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_rejected() {
        assert!(toml::from_str::<CertificateConfig>("path = \"a\"\nexpiry = \"1d\"\n").is_err());
        assert!(
            toml::from_str::<CertificateConfig>("path = \"a\"\nwarn_before = \"soon\"\n").is_err()
        );
    }

    #[test]
    fn validate_reports_every_problem_with_its_key() {
        let keys = |c: &CertificateConfig| c.validate().iter().map(|p| p.key).collect::<Vec<_>>();
        assert_eq!(keys(&config("")), ["path"]);
        assert_eq!(
            keys(&config("path = \"a\"\nendpoint = \"h:1\"\n")),
            ["endpoint"]
        );
        for bad in ["h", "h:0", "h:99999", ":443", "h:x", "::1:443"] {
            let c = config(&format!("endpoint = {bad:?}\n"));
            assert_eq!(keys(&c), ["endpoint"], "{bad}");
        }
        assert!(config("endpoint = \"[::1]:443\"\n").validate().is_empty());
        let c = config(
            "path = \"a.pfx\"\nstarttls = \"imap\"\npassword_env = \"A\"\npassword_file = \"b\"\n\
             warn_before = \"1d\"\ncritical_before = \"2d\"\nexpected_thumbprint = \"abc\"\nmin_key_bits = 0\n",
        );
        let k = keys(&c);
        for key in [
            "starttls",
            "password_file",
            "warn_before",
            "expected_thumbprint",
            "min_key_bits",
        ] {
            assert!(k.contains(&key), "{key} missing from {k:?}");
        }
        // starttls both unsupported and without endpoint: two problems.
        assert_eq!(k.iter().filter(|k| **k == "starttls").count(), 2);
        let c = config("endpoint = \"h:443\"\npassword_env = \"A\"\n");
        assert_eq!(keys(&c), ["password_env"]);
        let c = config("endpoint = \"h:443\"\nexpected_thumbprint = \"84:e0 4c 3a 5d 6e 7f 80 91 a2 b3 c4 d5 e6 f7 08 19 2a 3b 4c\"\n");
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert!(CertificateProbe::new(&config(""), Path::new("/")).is_err());
    }

    #[test]
    fn thumbprints_normalize_like_exchange() {
        assert_eq!(
            normalize_thumbprint("8b f8 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff 00 11 22")
                .as_deref(),
            Some("8BF8112233445566778899AABBCCDDEEFF001122")
        );
        assert_eq!(normalize_thumbprint("8BF8"), None);
        assert_eq!(normalize_thumbprint(&"G".repeat(40)), None);
    }

    // --- files ------------------------------------------------------------------

    #[tokio::test]
    async fn pem_rsa_2048_is_ok_with_observations_and_openssl_thumbprint() {
        let dir = TempDir::new().unwrap();
        let pem = self_signed(dir.path(), "ok.example", "rsa2048", 400, &[]);
        let facts = &facts_of(&pem)[0];
        let t = now();
        let o = run_at(&file_toml(&pem), dir.path(), t).await;
        let fp = sha1_fingerprint(&pem);
        assert_eq!(facts.thumbprint, fp);
        assert_outcome(
            &o,
            Status::Ok,
            None,
            &[
                "certificate CN=ok.example valid for 399d",
                "RSA 2048 bits",
                &fp,
            ],
        );
        assert_eq!(o.observations["key_bits"], 2048.0);
        assert_eq!(
            o.observations["not_after_timestamp_seconds"],
            facts.not_after as f64
        );
        assert_eq!(o.observations["seconds_left"], (facts.not_after - t) as f64);
    }

    #[tokio::test]
    async fn small_rsa_key_is_critical_and_large_is_fine() {
        let dir = TempDir::new().unwrap();
        let small = self_signed(dir.path(), "small", "rsa1024", 400, &[]);
        let o = run_at(&file_toml(&small), dir.path(), now()).await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Certificate),
            &["RSA key 1024 bits < 2048"],
        );
        assert_eq!(o.observations["key_bits"], 1024.0);
        let o = run_at(
            &format!("{}min_key_bits = 1024\n", file_toml(&small)),
            dir.path(),
            now(),
        )
        .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        let big = self_signed(dir.path(), "big", "rsa4096", 400, &[]);
        let o = run_at(&file_toml(&big), dir.path(), now()).await;
        assert_outcome(&o, Status::Ok, None, &["RSA 4096 bits"]);
        assert_eq!(o.observations["key_bits"], 4096.0);
    }

    #[tokio::test]
    async fn ec_key_reports_curve_bits_without_minimum() {
        let dir = TempDir::new().unwrap();
        let pem = self_signed(dir.path(), "ec", "ec256", 400, &[]);
        let o = run_at(
            &format!("{}min_key_bits = 4096\n", file_toml(&pem)),
            dir.path(),
            now(),
        )
        .await;
        assert_outcome(&o, Status::Ok, None, &["EC 256 bits"]);
        assert_eq!(o.observations["key_bits"], 256.0);
    }

    #[tokio::test]
    async fn dates_are_judged_against_the_injected_clock() {
        let dir = TempDir::new().unwrap();
        let pem = self_signed(dir.path(), "dated.example", "ec256", 30, &[]);
        let f = facts_of(&pem).remove(0);
        let toml_text = file_toml(&pem);

        let o = run_at(&toml_text, dir.path(), f.not_after + 2 * DAY + 60).await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Certificate),
            &[
                "certificate CN=dated.example expired 2d ago",
                &rfc3339(f.not_after),
            ],
        );
        assert_eq!(o.observations["seconds_left"], (-2 * DAY - 60) as f64);

        let o = run_at(&toml_text, dir.path(), f.not_before - 10 * DAY).await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Certificate),
            &["not valid until", "(in 10d)"],
        );

        // Clock follows tokio time, so aim half an hour into the window to round stably.
        let o = run_at(
            &toml_text,
            dir.path(),
            f.not_after - (3 * DAY + 4 * 3600 + 1800),
        )
        .await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Certificate),
            &[&format!(
                "certificate CN=dated.example expires in 3d 4h ({})",
                rfc3339(f.not_after)
            )],
        );

        let o = run_at(&toml_text, dir.path(), f.not_after - (20 * DAY + 1800)).await;
        assert_outcome(
            &o,
            Status::Warning,
            Some(Category::Certificate),
            &["expires in 20d"],
        );

        let o = run_at(&toml_text, dir.path(), f.not_after - 29 * DAY).await;
        assert_eq!(
            o.status,
            Status::Warning,
            "30-day cert is inside the default 30d warning window"
        );
        let o = run_at(
            &format!("{toml_text}warn_before = \"10d\"\n"),
            dir.path(),
            f.not_after - 20 * DAY,
        )
        .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
    }

    #[tokio::test]
    async fn sha1_signature_is_a_warning() {
        let dir = TempDir::new().unwrap();
        let pem = self_signed(dir.path(), "old", "rsa2048", 400, &["-sha1"]);
        let o = run_at(&file_toml(&pem), dir.path(), now()).await;
        assert_outcome(
            &o,
            Status::Warning,
            Some(Category::Certificate),
            &["signed with SHA-1 (sha1WithRSAEncryption)"],
        );
    }

    #[tokio::test]
    async fn thumbprint_matches_in_exchange_format_and_mismatch_is_critical() {
        let dir = TempDir::new().unwrap();
        let pem = self_signed(dir.path(), "thumb", "ec256", 400, &[]);
        let fp = sha1_fingerprint(&pem);
        let spaced: String = fp
            .to_lowercase()
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        let o = run_at(
            &format!("{}expected_thumbprint = {spaced:?}\n", file_toml(&pem)),
            dir.path(),
            now(),
        )
        .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        let other = "8BF8112233445566778899AABBCCDDEEFF001122";
        let o = run_at(
            &format!("{}expected_thumbprint = {other:?}\n", file_toml(&pem)),
            dir.path(),
            now(),
        )
        .await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Certificate),
            &[&format!("thumbprint {fp} does not match expected {other}")],
        );
    }

    /// A FIFO used to block the read for ever (a thread per run) and
    /// /dev/zero to be read without end: both are refused by name, at once.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_fifo_or_a_device_is_refused_without_blocking() {
        let dir = TempDir::new().unwrap();
        let fifo = dir.path().join("cert.pem");
        crate::file::tests::mkfifo(&fifo);
        let started = std::time::Instant::now();
        let o = run_at(&file_toml(&fifo), dir.path(), now()).await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Config),
            &["cert.pem: not a regular file (a FIFO)"],
        );
        let o = run_at("path = \"/dev/zero\"\n", dir.path(), now()).await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Config),
            &["cannot read /dev/zero: not a regular file (a character device)"],
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'A'; 2 * 1024 * 1024]).unwrap();
        let o = run_at(&file_toml(&big), dir.path(), now()).await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Config),
            &["big.pem: larger than 1048576 bytes"],
        );
    }

    #[tokio::test]
    async fn der_is_sniffed_whatever_the_extension() {
        let dir = TempDir::new().unwrap();
        let pem = self_signed(dir.path(), "der", "ec256", 400, &[]);
        let fp = sha1_fingerprint(&pem);
        for name in ["der.cer", "der.der", "der-named.pem"] {
            openssl(
                dir.path(),
                &["x509", "-in", "der.pem", "-outform", "DER", "-out", name],
            );
            // A relative path resolves against the base directory.
            let o = run_at(&format!("path = {name:?}\n"), dir.path(), now()).await;
            assert_outcome(&o, Status::Ok, None, &["CN=der", &fp]);
        }
        std::fs::copy(&pem, dir.path().join("pem-named.cer")).unwrap();
        let o = run_at("path = \"pem-named.cer\"\n", dir.path(), now()).await;
        assert_outcome(&o, Status::Ok, None, &["CN=der"]);
    }

    #[tokio::test]
    async fn pem_bundle_uses_first_for_key_and_earliest_expiry() {
        let dir = TempDir::new().unwrap();
        let first = self_signed(dir.path(), "first", "rsa2048", 90, &[]);
        let second = self_signed(dir.path(), "second", "ec256", 10, &[]);
        let mut bundle = b"subject=CN=first\n".to_vec();
        bundle.extend(std::fs::read(&first).unwrap());
        bundle.extend(std::fs::read(key("ec256")).unwrap());
        bundle.extend(std::fs::read(&second).unwrap());
        let path = dir.path().join("bundle.pem");
        std::fs::write(&path, bundle).unwrap();
        let second_after = facts_of(&second)[0].not_after;
        let o = run_at(&file_toml(&path), dir.path(), now()).await;
        assert_outcome(
            &o,
            Status::Warning,
            Some(Category::Certificate),
            &["certificate CN=second expires in 9d"],
        );
        assert_eq!(o.observations["key_bits"], 2048.0);
        assert_eq!(
            o.observations["not_after_timestamp_seconds"],
            second_after as f64
        );
    }

    #[tokio::test]
    async fn pkcs12_modern_legacy_and_passwordless() {
        let dir = TempDir::new().unwrap();
        let c = chain(dir.path(), 200);
        let leaf = c.leaf.to_str().unwrap();
        let key = c.leaf_key.to_str().unwrap();
        let ca = c.ca.to_str().unwrap();
        let pw = "s3cr3t-Pfx!";
        let passout = format!("pass:{pw}");
        let base = [
            "pkcs12",
            "-export",
            "-in",
            leaf,
            "-inkey",
            key,
            "-certfile",
            ca,
        ];
        openssl(
            dir.path(),
            &[&base[..], &["-out", "modern.pfx", "-passout", &passout]].concat(),
        );
        openssl(
            dir.path(),
            &[
                &base[..],
                &["-legacy", "-out", "legacy.p12", "-passout", &passout],
            ]
            .concat(),
        );
        openssl(
            dir.path(),
            &[&base[..], &["-out", "nopass.pfx", "-passout", "pass:"]].concat(),
        );
        // Only the trailing line break is dropped from a password file.
        std::fs::write(dir.path().join("pw.txt"), format!("{pw}\r\n")).unwrap();
        let fp = sha1_fingerprint(&c.leaf);

        std::env::set_var("SONDE_TEST_PFX_PW_MODERN", pw);
        let o = run_at(
            "path = \"modern.pfx\"\npassword_env = \"SONDE_TEST_PFX_PW_MODERN\"\n",
            dir.path(),
            now(),
        )
        .await;
        // The leaf (the key's certificate) is the subject even though the CA is in the file.
        assert_outcome(
            &o,
            Status::Ok,
            None,
            &["CN=localhost", "RSA 2048 bits", &fp],
        );

        let o = run_at(
            "path = \"legacy.p12\"\npassword_file = \"pw.txt\"\n",
            dir.path(),
            now(),
        )
        .await;
        assert_outcome(&o, Status::Ok, None, &["CN=localhost", &fp]);

        let o = run_at("path = \"nopass.pfx\"\n", dir.path(), now()).await;
        assert_outcome(&o, Status::Ok, None, &["CN=localhost", &fp]);
    }

    #[tokio::test]
    async fn pkcs12_password_problems_are_config_and_never_show_the_secret() {
        let dir = TempDir::new().unwrap();
        let pem = self_signed(dir.path(), "pfx", "ec256", 200, &[]);
        openssl(
            dir.path(),
            &[
                "pkcs12",
                "-export",
                "-in",
                pem.to_str().unwrap(),
                "-inkey",
                key("ec256").to_str().unwrap(),
                "-out",
                "x.pfx",
                "-passout",
                "pass:right-one",
            ],
        );
        let wrong = "Wr0ng-Secret-Value";
        std::env::set_var("SONDE_TEST_PFX_PW_WRONG", wrong);
        let o = run_at(
            "path = \"x.pfx\"\npassword_env = \"SONDE_TEST_PFX_PW_WRONG\"\n",
            dir.path(),
            now(),
        )
        .await;
        let pfx = dir.path().join("x.pfx");
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Config),
            &[&format!(
                "wrong password for {} or corrupt PKCS#12",
                pfx.display()
            )],
        );
        assert!(!o.summary.contains(wrong));

        let o = run_at(
            "path = \"x.pfx\"\npassword_env = \"SONDE_TEST_PFX_PW_UNSET\"\n",
            dir.path(),
            now(),
        )
        .await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Config),
            &["password variable SONDE_TEST_PFX_PW_UNSET is not set"],
        );

        // No password source: the empty password is tried, and is wrong here.
        let o = run_at("path = \"x.pfx\"\n", dir.path(), now()).await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Config),
            &["wrong password"],
        );

        let o = run_at(
            "path = \"x.pfx\"\npassword_file = \"missing.txt\"\n",
            dir.path(),
            now(),
        )
        .await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Config),
            &["cannot read password file"],
        );

        // Truncated PKCS#12 is a broken certificate file, not a password problem.
        let data = std::fs::read(&pfx).unwrap();
        std::fs::write(dir.path().join("cut.pfx"), &data[..data.len() / 2]).unwrap();
        let o = run_at("path = \"cut.pfx\"\n", dir.path(), now()).await;
        assert_eq!(o.status, Status::Critical, "{o:?}");
        assert!(o.summary.contains("cut.pfx"), "{o:?}");
    }

    #[tokio::test]
    async fn broken_and_missing_files_are_outcomes() {
        let dir = TempDir::new().unwrap();
        let pem = self_signed(dir.path(), "broken", "ec256", 200, &[]);
        let text = std::fs::read_to_string(&pem).unwrap();

        let missing = dir.path().join("nope.pem");
        let o = run_at(&file_toml(&missing), dir.path(), now()).await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Config),
            &[&format!(
                "cannot read {}: No such file or directory",
                missing.display()
            )],
        );

        // Cut in the middle of the base64: no END line.
        let cut = dir.path().join("cut.pem");
        std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
        let o = run_at(&file_toml(&cut), dir.path(), now()).await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Certificate),
            &["cannot parse", "cut.pem", "PEM"],
        );

        // Valid PEM armour around a truncated DER.
        let der = facts_der(&pem);
        let short = &der[..der.len() - 40];
        let b64 = base64_encode(short);
        let armoured = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
        let bad = dir.path().join("short.pem");
        std::fs::write(&bad, armoured).unwrap();
        let o = run_at(&file_toml(&bad), dir.path(), now()).await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Certificate),
            &["short.pem", "invalid X.509"],
        );

        let garbage = dir.path().join("garbage.cer");
        std::fs::write(&garbage, b"\x30\x82\x05\x00not a certificate").unwrap();
        let o = run_at(&file_toml(&garbage), dir.path(), now()).await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Certificate),
            &["garbage.cer", "invalid X.509"],
        );

        let key_only = dir.path().join("key.pem");
        std::fs::copy(key("ec256"), &key_only).unwrap();
        let o = run_at(&file_toml(&key_only), dir.path(), now()).await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Certificate),
            &["no CERTIFICATE block in"],
        );
    }

    fn facts_der(pem: &Path) -> Vec<u8> {
        let data = std::fs::read(pem).unwrap();
        pem_certs(pem, &data).unwrap().remove(0)
    }

    fn base64_encode(data: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    // --- endpoints (127.0.0.1 only) ----------------------------------------------

    fn acceptor(c: &Chain) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::PrivateKeyDer;
        let mut certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.leaf)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        certs.extend(
            CertificateDer::pem_file_iter(&c.ca)
                .unwrap()
                .map(|c| c.unwrap()),
        );
        let key = PrivateKeyDer::from_pem_file(&c.leaf_key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// An in-process TLS server on 127.0.0.1:0; `smtp` puts a STARTTLS dialogue first.
    async fn tls_server(c: &Chain, smtp: Option<bool>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = acceptor(c);
        tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Some(offer) = smtp {
                        if !smtp_dialogue(&mut tcp, offer).await {
                            return;
                        }
                    }
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tls.write_all(b"hello\n").await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        port
    }

    /// A tiny SMTP responder up to STARTTLS; returns whether to go on with TLS.
    async fn smtp_dialogue(tcp: &mut TcpStream, offer_starttls: bool) -> bool {
        let (read, mut write) = tcp.split();
        let mut lines = BufReader::new(read).lines();
        let _ = write.write_all(b"220 test.local ESMTP ready\r\n").await;
        let Ok(Some(ehlo)) = lines.next_line().await else {
            return false;
        };
        assert_eq!(ehlo, "EHLO sonde");
        let caps: &[u8] = if offer_starttls {
            b"250-test.local\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250 STARTTLS\r\n"
        } else {
            b"250-test.local\r\n250-PIPELINING\r\n250 SIZE 1000000\r\n"
        };
        let _ = write.write_all(caps).await;
        if !offer_starttls {
            let _ = lines.next_line().await;
            let _ = write.write_all(b"502 not implemented\r\n").await;
            return false;
        }
        let Ok(Some(cmd)) = lines.next_line().await else {
            return false;
        };
        assert_eq!(cmd, "STARTTLS");
        let _ = write.write_all(b"220 go ahead\r\n").await;
        true
    }

    fn endpoint_toml(port: u16, extra: &str) -> String {
        format!("endpoint = \"127.0.0.1:{port}\"\n{extra}")
    }

    #[test]
    fn probes_with_the_same_anchors_share_one_verifier() {
        let (one, two) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        chain(one.path(), 60);
        chain(two.path(), 60);
        let verifier = |dir: &Path| {
            let toml = endpoint_toml(443, "ca_file = \"Sonde Test CA.pem\"\n");
            let probe = CertificateProbe::new(&config(&toml), dir).unwrap();
            match probe.source {
                Source::Endpoint(ep) => ep.verifier.unwrap().unwrap(),
                Source::File { .. } => panic!("an endpoint probe"),
            }
        };
        let (a, b) = (verifier(one.path()), verifier(one.path()));
        assert!(Arc::ptr_eq(&a, &b), "the same ca_file: one verifier");
        let other = verifier(two.path());
        assert!(!Arc::ptr_eq(&a, &other), "another CA: its own verifier");
    }

    #[tokio::test]
    async fn endpoint_chain_must_verify_unless_ca_file_or_verify_false() {
        let dir = TempDir::new().unwrap();
        let c = chain(dir.path(), 60);
        let port = tls_server(&c, None).await;
        let leaf = facts_of(&c.leaf).remove(0);

        let o = run_at(&endpoint_toml(port, ""), dir.path(), now()).await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Tls),
            &["chain does not verify: UnknownIssuer"],
        );
        // Expiry is still reported when verification fails.
        assert_eq!(
            o.observations["not_after_timestamp_seconds"],
            leaf.not_after as f64
        );

        let ca_toml = "ca_file = \"Sonde Test CA.pem\"\n";
        let o = run_at(&endpoint_toml(port, ca_toml), dir.path(), now()).await;
        // Earliest not-after over the chain: the 60-day leaf, not the 365-day CA.
        assert_outcome(
            &o,
            Status::Ok,
            None,
            &["certificate CN=localhost valid for 59d", "RSA 2048 bits"],
        );
        assert_eq!(
            o.observations["not_after_timestamp_seconds"],
            leaf.not_after as f64
        );

        let o = run_at(&endpoint_toml(port, "verify = false\n"), dir.path(), now()).await;
        assert_eq!(o.status, Status::Ok, "{o:?}");

        let o = run_at(
            &endpoint_toml(port, &format!("{ca_toml}server_name = \"other.example\"\n")),
            dir.path(),
            now(),
        )
        .await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Tls),
            &["NotValidForName", "other.example"],
        );

        // An expired chain is a certificate finding, not a second TLS one.
        let o = run_at(
            &endpoint_toml(port, ca_toml),
            dir.path(),
            leaf.not_after + 3 * DAY,
        )
        .await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Certificate),
            &["CN=localhost expired 3d ago"],
        );
        assert!(!o.summary.contains("chain does not verify"), "{o:?}");
    }

    #[tokio::test]
    async fn endpoint_smtp_starttls() {
        let dir = TempDir::new().unwrap();
        let c = chain(dir.path(), 60);
        let port = tls_server(&c, Some(true)).await;
        let o = run_at(
            &endpoint_toml(port, "starttls = \"smtp\"\nserver_name = \"localhost\"\nca_file = \"Sonde Test CA.pem\"\n"),
            dir.path(),
            now(),
        )
        .await;
        assert_outcome(&o, Status::Ok, None, &["CN=localhost"]);

        let port = tls_server(&c, Some(false)).await;
        let o = run_at(
            &endpoint_toml(port, "starttls = \"smtp\"\nverify = false\n"),
            dir.path(),
            now(),
        )
        .await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Protocol),
            &["does not offer STARTTLS"],
        );
    }

    #[tokio::test]
    async fn endpoint_against_openssl_s_server() {
        let dir = TempDir::new().unwrap();
        let pem = self_signed(dir.path(), "s-server", "ec256", 30, &[]);
        let mut child = tokio::process::Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                "127.0.0.1:0",
                "-naccept",
                "1",
                // Serve a status page: without -www, s_server reads stdin and its
                // EOF ends the session.
                "-www",
                "-cert",
            ])
            .arg(&pem)
            .arg("-key")
            .arg(key("ec256"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = out
                .next_line()
                .await
                .unwrap()
                .expect("s_server prints ACCEPT");
            if let Some(addr) = line.strip_prefix("ACCEPT ") {
                break addr.rsplit(':').next().unwrap().parse::<u16>().unwrap();
            }
        };
        let f = facts_of(&pem).remove(0);
        let toml_text = endpoint_toml(
            port,
            &format!(
                "verify = false\nexpected_thumbprint = \"{}\"\n",
                "0".repeat(40)
            ),
        );
        let o = run_at(&toml_text, dir.path(), f.not_after - 5 * DAY).await;
        // Both critical findings, the expiry first.
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Certificate),
            &[
                "certificate CN=s-server expires in 5d",
                &format!(
                    "; thumbprint {} does not match expected {}",
                    f.thumbprint,
                    "0".repeat(40)
                ),
            ],
        );
        assert_eq!(o.observations["key_bits"], 256.0);
        child.kill().await.unwrap();
    }

    #[tokio::test]
    async fn network_and_handshake_failures_are_outcomes() {
        let dir = TempDir::new().unwrap();
        // A port that was just free: connection refused.
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let o = run_at(&endpoint_toml(port, ""), dir.path(), now()).await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Network),
            &["cannot connect to 127.0.0.1:"],
        );

        // A server that answers the ClientHello with plain text.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let _ = tcp.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n").await;
            }
        });
        let o = run_at(&endpoint_toml(port, ""), dir.path(), now()).await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Tls),
            &["TLS handshake with 127.0.0.1:", "failed"],
        );
    }

    #[tokio::test]
    async fn silent_server_leaves_the_probe_pending_and_cancellable() {
        let dir = TempDir::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (accepted_tx, accepted_rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let _ = accepted_tx.send(());
            // Hold the connection open, say nothing; report when the client goes away.
            let mut buf = Vec::new();
            let _ = tcp.read_to_end(&mut buf).await;
        });
        let probe = CertificateProbe::new(&config(&endpoint_toml(port, "")), dir.path()).unwrap();
        let ctx = ctx_at(now());
        let mut run = probe.run(&ctx);
        let pending = tokio::time::timeout(Duration::from_millis(300), &mut run).await;
        assert!(pending.is_err(), "probe must still be waiting: {pending:?}");
        accepted_rx.await.unwrap();
        drop(run);
        // Dropping the future closes the socket: the server sees EOF.
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }

    // --- role = "exchange-auth": the Auth certificate's rotation ------------------

    /// A self-signed certificate with exact dates (unix seconds), made by
    /// `openssl ca -startdate/-enddate`, which can date a certificate in the past.
    fn dated(dir: &Path, name: &str, start: i64, end: i64) -> PathBuf {
        let ca = dir.join(format!("{name}.ca"));
        std::fs::create_dir_all(&ca).unwrap();
        std::fs::write(ca.join("index.txt"), "").unwrap();
        std::fs::write(ca.join("serial"), "01\n").unwrap();
        std::fs::write(
            ca.join("ca.cnf"),
            "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
             default_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n",
        )
        .unwrap();
        let key = key("ec256");
        let subj = format!("/CN={name}");
        openssl(
            &ca,
            &[
                "req",
                "-new",
                "-key",
                key.to_str().unwrap(),
                "-subj",
                &subj,
                "-out",
                "r.csr",
            ],
        );
        let stamp = |t: i64| {
            DateTime::from_timestamp(t, 0)
                .unwrap()
                .format("%Y%m%d%H%M%SZ")
                .to_string()
        };
        let out = dir.join(format!("{name}.pem"));
        openssl(
            &ca,
            &[
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-selfsign",
                "-keyfile",
                key.to_str().unwrap(),
                "-in",
                "r.csr",
                "-startdate",
                &stamp(start),
                "-enddate",
                &stamp(end),
                "-out",
                out.to_str().unwrap(),
            ],
        );
        out
    }

    fn auth_toml(current: &Path, next: Option<&Path>) -> String {
        let mut t = format!("{}role = \"exchange-auth\"\n", file_toml(current));
        if let Some(n) = next {
            t.push_str(&format!("next_path = {:?}\n", n.to_str().unwrap()));
        }
        t
    }

    const ADVICE: [&str; 3] = [
        "MonitorExchangeAuthCertificate.ps1 -ValidateAndRenewAuthCertificate $true",
        "Hybrid Configuration Wizard",
        "ConfigureExchangeHybridApplication.ps1 -UpdateCertificate",
    ];

    #[track_caller]
    fn assert_advice(o: &Outcome) {
        for a in ADVICE {
            assert!(o.summary.contains(a), "summary {:?} lacks {a:?}", o.summary);
        }
    }

    #[test]
    fn role_keys_validate() {
        let keys = |t: &str| {
            config(t)
                .validate()
                .iter()
                .map(|p| p.key)
                .collect::<Vec<_>>()
        };
        assert!(keys("path = \"a\"\nrole = \"exchange-auth\"\nnext_path = \"b.pfx\"\nnext_password_env = \"PW\"\nnext_expected_thumbprint = \"8bf833e6a7d8a7960f5802b5fffd188599e2a4b2\"\n").is_empty());
        assert_eq!(keys("path = \"a\"\nnext_path = \"b\"\n"), ["next_path"]);
        assert_eq!(
            keys("path = \"a\"\nrole = \"exchange-auth\"\nnext_password_file = \"p\"\n"),
            ["next_password_file"]
        );
        assert_eq!(
            keys("endpoint = \"h:443\"\nrole = \"exchange-auth\"\n"),
            ["role"]
        );
        assert_eq!(
            keys("path = \"a\"\nrole = \"exchange-auth\"\nnext_path = \"b\"\nnext_expected_thumbprint = \"xyz\"\n"),
            ["next_expected_thumbprint"]
        );
        assert_eq!(
            keys("path = \"a\"\nrole = \"exchange-auth\"\nwarn_before = \"60d\"\ncritical_before = \"14d\"\n"),
            ["warn_before", "critical_before"]
        );
        assert!(
            toml::from_str::<CertificateConfig>("path = \"a\"\nrole = \"exchange\"\n").is_err()
        );
    }

    fn facts(not_after: i64) -> CertFacts {
        CertFacts {
            subject: "CN=x".into(),
            not_before: 0,
            not_after,
            key: KeyInfo::Rsa(2048),
            thumbprint: "00".repeat(20),
            sig_alg: "sha256WithRSAEncryption".into(),
            sig_is_sha1: false,
        }
    }

    #[test]
    fn rotation_rules_count_whole_days_like_the_script() {
        let now = 1_800_000_000;
        let at = |days: i64| facts(now + days * DAY + 3600);
        // 60 whole days left (and some hours): renew; 61: not yet.
        assert_eq!(
            judge_rotation(&at(60), None, now).map(|r| r.0),
            Some(Status::Warning)
        );
        assert_eq!(judge_rotation(&at(61), None, now), None);
        // A next certificate with 120 whole days is too short, 121 is enough.
        assert_eq!(
            judge_rotation(&at(10), Some(&at(120)), now).map(|r| r.0),
            Some(Status::Warning)
        );
        assert_eq!(judge_rotation(&at(10), Some(&at(121)), now), None);
        // While the current one has time, the next one is not judged.
        assert_eq!(judge_rotation(&at(400), Some(&at(5)), now), None);
        // Expired by a second is expired.
        let (status, text) = judge_rotation(&facts(now - 1), Some(&at(500)), now).unwrap();
        assert_eq!(status, Status::Critical);
        assert!(
            text.contains("replace required (the next certificate is not active yet)"),
            "{text}"
        );
        let (_, text) = judge_rotation(&facts(now - 1), Some(&facts(now - 5)), now).unwrap();
        assert!(
            text.contains("replace required") && !text.contains("not active"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn rotation_with_openssl_certificates_of_each_lifetime() {
        let dir = TempDir::new().unwrap();
        let d = dir.path();
        let real_now = now();
        let long = self_signed(d, "current-long", "ec256", 400, &[]);
        let short = self_signed(d, "current-short", "ec256", 30, &[]);
        let next_long = self_signed(d, "next-long", "ec256", 800, &[]);
        let next_short = self_signed(d, "next-short", "ec256", 100, &[]);
        let expired = dated(
            d,
            "current-expired",
            real_now - 400 * DAY,
            real_now - 3 * DAY,
        );
        let next_expired = dated(d, "next-expired", real_now - 400 * DAY, real_now - DAY);
        let run = |cur: &Path, next: Option<&Path>| {
            let t = auth_toml(cur, next);
            async move { run_at(&t, d, real_now).await }
        };

        // Long-lived current, no next: ok, and says so.
        let o = run(&long, None).await;
        assert_outcome(
            &o,
            Status::Ok,
            None,
            &[
                "Auth certificate CN=current-long valid for 399d",
                "no next certificate configured",
            ],
        );
        assert!(!o.observations.contains_key("next_seconds_left"));
        assert!(o.observations["seconds_left"] > 399.0 * DAY as f64);

        // Long-lived current and next: ok, naming the next one and its days left.
        let o = run(&long, Some(&next_long)).await;
        assert_outcome(
            &o,
            Status::Ok,
            None,
            &["next certificate CN=next-long valid for 799d"],
        );
        assert!(o.observations["next_seconds_left"] > 799.0 * DAY as f64);

        // Current with 30 days, no next: configure one.
        let o = run(&short, None).await;
        assert_outcome(
            &o,
            Status::Warning,
            Some(Category::Certificate),
            &[
                "Auth certificate CN=current-short expires in 29d",
                "no next certificate is configured: configure the next Auth certificate",
            ],
        );
        assert_advice(&o);

        // Current with 30 days, next with 100: the next one is too short.
        let o = run(&short, Some(&next_short)).await;
        assert_outcome(
            &o,
            Status::Warning,
            Some(Category::Certificate),
            &[
                "the next certificate CN=next-short expires in 99d",
                "configure the next Auth certificate",
            ],
        );
        assert_advice(&o);
        assert!(o.observations["next_seconds_left"] < 100.0 * DAY as f64);

        // Current with 30 days, next with 800: the rotation is in hand.
        let o = run(&short, Some(&next_long)).await;
        assert_outcome(
            &o,
            Status::Ok,
            None,
            &[
                "CN=current-short valid for 29d",
                "next certificate CN=next-long",
            ],
        );

        // Current with 30 days, next already expired: configure a new next one.
        let o = run(&short, Some(&next_expired)).await;
        assert_outcome(
            &o,
            Status::Warning,
            Some(Category::Certificate),
            &[
                "the next certificate CN=next-expired expired 1d ago",
                "configure the next Auth certificate",
            ],
        );

        // Current expired, no next: replace.
        let o = run(&expired, None).await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Certificate),
            &[
                "Auth certificate CN=current-expired expired 3d ago",
                "no next certificate is configured: replace required",
            ],
        );
        assert_advice(&o);
        assert!(o.observations["seconds_left"] < -2.0 * DAY as f64);

        // Current expired, next valid: replace, the next one is not active yet.
        let o = run(&expired, Some(&next_long)).await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Certificate),
            &[
                "replace required (the next certificate is not active yet)",
                "the next certificate CN=next-long expires in 799d",
            ],
        );
        assert_advice(&o);

        // Current and next expired: replace.
        let o = run(&expired, Some(&next_expired)).await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Certificate),
            &["the next certificate CN=next-expired expired 1d ago: replace required"],
        );
        assert!(!o.summary.contains("not active"), "{}", o.summary);
        assert_advice(&o);

        // Without the role the same expired file is judged by warn_before/critical_before.
        let o = run_at(&file_toml(&short), d, real_now).await;
        assert_outcome(
            &o,
            Status::Warning,
            Some(Category::Certificate),
            &["certificate CN=current-short expires in 29d"],
        );
        assert!(!o.summary.contains("Monitor"), "{}", o.summary);
    }

    #[tokio::test]
    async fn next_certificate_thumbprint_and_missing_file() {
        let dir = TempDir::new().unwrap();
        let d = dir.path();
        let current = self_signed(d, "cur", "ec256", 400, &[]);
        let next = self_signed(d, "nxt", "ec256", 800, &[]);
        let fp = sha1_fingerprint(&next);
        let base = auth_toml(&current, Some(&next));
        let o = run_at(
            &format!("{base}next_expected_thumbprint = {:?}\n", fp.to_lowercase()),
            d,
            now(),
        )
        .await;
        assert_eq!(o.status, Status::Ok, "{o:?}");
        let other = "8BF8112233445566778899AABBCCDDEEFF001122";
        let o = run_at(
            &format!("{base}next_expected_thumbprint = {other:?}\n"),
            d,
            now(),
        )
        .await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Certificate),
            &[&format!(
                "next certificate thumbprint {fp} does not match expected {other}"
            )],
        );
        let o = run_at(&auth_toml(&current, Some(&d.join("gone.cer"))), d, now()).await;
        assert_outcome(
            &o,
            Status::Critical,
            Some(Category::Config),
            &["next Auth certificate: cannot read", "gone.cer"],
        );
    }

    proptest::proptest! {
        #[test]
        fn certificate_parsers_never_panic_on_any_bytes(der in proptest::collection::vec(proptest::num::u8::ANY, 0..800)) {
            proptest::prop_assert!(parse_facts(&der).is_err());
            let _ = pem_certs(Path::new("x.pem"), &der);
            let _ = pkcs12_certs(Path::new("x.pfx"), &der, "x");
        }

        #[test]
        fn pem_reader_never_panics_on_framed_garbage(body in "[A-Za-z0-9+/=\\n-]{0,400}") {
            let pem = format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n");
            if let Ok(ders) = pem_certs(Path::new("x.pem"), pem.as_bytes()) {
                for der in ders {
                    let _ = parse_facts(&der);
                }
            }
        }
    }
}
