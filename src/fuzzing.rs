//! The entry points of the fuzz targets (`fuzz/`, see FUZZING.md) and of the
//! test that replays their corpora: [`Harness::run`] takes a target's name and
//! its raw input, decodes the input the one way both use, and calls the same
//! code the agent runs on such input. It is the only thing the fuzz crate
//! imports, so that the rest of the library can stay crate-private; it holds no
//! logic of its own beyond fixed settings, the input framing, and the guard that
//! keeps the config target inside its folder.
//!
//! Every target must return for any input; a panic is a bug in the library.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::ManualClock;
use crate::config::{env, Loader};
use crate::outcome::{Outcome, Probe, ProbeContext};
use crate::probe::certificate::{CertificateConfig, CertificateProbe};
use crate::probe::{metadata, push, registration, token};

/// The instant every target runs at: 2026-11-29T00:00:00Z.
pub const NOW: i64 = 1_795_910_400;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW, 0).unwrap_or_default()
}

/// Loads and validates the config at `path` as `sonde validate` does (its
/// includes, `${VAR}` from `env`), as of [`NOW`]. Returns `None` without loading
/// when an `include` of the file could reach outside its folder (an absolute
/// pattern, `..` or `**`): a fuzzer must not walk the machine's file system.
/// Otherwise the number of probes, or of errors.
fn config(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Option<Result<usize, usize>> {
    let raw = std::fs::read_to_string(path).unwrap_or_default();
    let text = env::substitute(&raw, env).text;
    if let Ok(root) = toml::de::DeTable::parse(&text) {
        if let Some(include) = root.get_ref().get("include") {
            let patterns: Vec<&str> = match include.get_ref() {
                toml::de::DeValue::String(s) => vec![s.as_ref()],
                toml::de::DeValue::Array(items) => {
                    items.iter().filter_map(|v| v.get_ref().as_str()).collect()
                }
                _ => Vec::new(),
            };
            if patterns
                .iter()
                .any(|p| Path::new(p).has_root() || p.contains("..") || p.contains("**"))
            {
                return None;
            }
        }
    }
    let loader = Loader { env };
    Some(
        loader
            .load_at(path, now())
            .map(|c| c.probes.len())
            .map_err(|e| e.0.len()),
    )
}

/// Runs a `certificate` probe on the file at `path` (PEM, DER, or PKCS#12 by
/// its extension, with the password in `password_file` when given), as of
/// [`NOW`]; `auth` judges it with `role = "exchange-auth"`, the same file as
/// the next certificate.
async fn certificate_file(path: &Path, password_file: Option<&Path>, auth: bool) -> Outcome {
    let mut table = toml::Table::new();
    let mut set = |key: &str, value: String| {
        table.insert(key.into(), toml::Value::String(value));
    };
    set("path", path.display().to_string());
    if let Some(p) = password_file {
        set("password_file", p.display().to_string());
    }
    if auth {
        set("role", "exchange-auth".into());
        set("next_path", path.display().to_string());
        if let Some(p) = password_file {
            set("next_password_file", p.display().to_string());
        }
    }
    let cfg: CertificateConfig = match table.try_into() {
        Ok(c) => c,
        Err(e) => return Outcome::critical(crate::outcome::Category::Config, e.to_string()),
    };
    let probe = match CertificateProbe::new(&cfg, Path::new("/")) {
        Ok(p) => p,
        Err(e) => return Outcome::critical(crate::outcome::Category::Config, e.to_string()),
    };
    let ctx = ProbeContext {
        clock: Arc::new(ManualClock::new(now())),
        timeout: Duration::from_secs(10),
        progress: Default::default(),
    };
    probe.run(&ctx).await
}

/// Reads a signing credential as the token probe does: `key` and `cert` as PEM,
/// `cert` as PKCS#12 with `password`, and the thumbprint of `cert`.
fn credential(key: &[u8], cert: &[u8], password: &str) -> usize {
    let mut found = 0;
    if let Ok(c) = crate::credential::from_pem(key, cert) {
        found += c.x5t().len() + c.subject().len();
    }
    if let Ok(c) = crate::credential::from_pkcs12(cert, password) {
        found += c.thumbprint_hex().len() + c.key_bits();
    }
    if let Ok(t) = crate::credential::certificate_thumbprint(cert) {
        found += t.len();
    }
    found
}

/// An auth metadata document read as ACS metadata, OpenID discovery and a JWKS,
/// then bound to a tenant as the token probe does.
fn metadata(body: &[u8]) -> usize {
    let mut found = 0;
    if let Ok(doc) = metadata::parse_acs(body) {
        found += doc.signing_certs().len() + usize::from(doc.names_no_tenant());
        let (bound, dropped) = doc.for_tenant("72f988bf-86f1-41af-91ab-2d7cd011db47");
        found += bound.signing_keys.len() + dropped;
    }
    if let Ok((issuer, jwks_uri, token_endpoint)) = metadata::parse_openid_discovery(body) {
        found += issuer.len() + jwks_uri.len() + token_endpoint.len();
        found += metadata::substitute_tenant(&issuer, "contoso.com").len();
    }
    if let Ok(keys) = metadata::parse_jwks(body) {
        found += keys.len();
    }
    found
}

/// A JWT decoded and read as the token probe reads an access token, its
/// signature checked against `cert_der`'s key.
fn jwt(token: &str, cert_der: &[u8]) -> usize {
    let Ok(d) = crate::jwt::decode(token) else {
        return 0;
    };
    let mut found = d.alg().map_or(0, str::len);
    for name in ["x5t", "kid", "typ"] {
        found += d.header_str(name).map_or(0, str::len);
    }
    for name in ["aud", "iss", "appid", "tid"] {
        found += d.claim_str(name).map_or(0, str::len);
    }
    for name in ["nbf", "exp", "iat"] {
        found += usize::from(d.claim_i64(name).is_some());
    }
    found + usize::from(d.verify_rs256(cert_der).is_ok())
}

/// A token endpoint's reply body, as an error and as an answer checked in
/// both modes, its token's signature against `signing_keys`.
fn token_reply(body: &[u8], signing_keys: Option<&[Vec<u8>]>) -> Vec<Outcome> {
    token::read_reply(body, signing_keys, NOW)
}

/// A Graph reply with `status`, as the `registration` probe reads it.
fn graph_reply(status: u16, body: &[u8]) -> Outcome {
    registration::read_graph_reply(status, body, NOW)
}

/// The push endpoint's `WWW-Authenticate` value, parsed and compared with an
/// issuer and audience as the `push` probe does.
fn www_authenticate(header: &str) -> Option<String> {
    let c = push::parse_challenge(header).ok()?;
    let mut said = push::compare_challenge(
        &c,
        "00000001-0000-0000-c000-000000000000@72f988bf-86f1-41af-91ab-2d7cd011db47",
        "00000002-0000-0ff1-ce00-000000000000/outlook.office365.com@72f988bf-86f1-41af-91ab-2d7cd011db47",
    );
    for name in [
        "realm",
        "client_id",
        "trusted_issuers",
        "authorization_uri",
        "error",
    ] {
        said.push_str(c.param(name).unwrap_or(""));
    }
    Some(said)
}

/// A `Retry-After` value as the alert channels read it, as of [`NOW`].
fn retry_after(value: &str) -> Option<Duration> {
    crate::net::http::retry_after(value, now())
}

/// The SMTP dialogue up to STARTTLS on `tcp`, as the `certificate` probe's
/// `starttls = "smtp"` speaks it; the server's replies are the input.
async fn smtp_starttls(tcp: tokio::net::TcpStream) -> Result<(), String> {
    crate::net::smtp::starttls(tcp)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Every target, by the name of its file in `fuzz/fuzz_targets/`.
pub const TARGETS: &[&str] = &[
    "config",
    "certificate_file",
    "credential",
    "metadata",
    "jwt",
    "token_reply",
    "graph_reply",
    "www_authenticate",
    "retry_after",
    "smtp_reply",
];

/// Separates the parts of an input that holds several files.
const PART: &[u8] = b"\n#--\n";

/// The certificate the `jwt` and `token_reply` targets verify signatures
/// with: the fixture STS's, which signed the seed tokens.
pub const STS_CERT: &[u8] = include_bytes!("../tests/fixtures/fuzz/sts-cert.der");

/// The file extensions the `certificate_file` target's first byte chooses from.
const EXTENSIONS: [&str; 5] = ["pem", "cer", "der", "pfx", "p12"];

/// The HTTP statuses the `graph_reply` target's first byte chooses from.
const STATUSES: [u16; 6] = [200, 200, 401, 403, 404, 500];

/// The variables the `config` target's files may use.
fn config_env(name: &str) -> Option<String> {
    match name {
        "NAME" => Some("web".into()),
        "URL" => Some("https://example.com/health".into()),
        "EVERY" => Some("30s".into()),
        "QUOTE" => Some("a\"b\nc = 1".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn split_parts(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(PART.len()).position(|w| w == PART) {
        parts.push(&rest[..i]);
        rest = &rest[i + PART.len()..];
    }
    parts.push(rest);
    parts
}

/// What the targets share: a scratch folder for the files they write, a
/// runtime, and a loopback listener that plays the SMTP server.
pub struct Harness {
    dir: PathBuf,
    rt: tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
}

impl Harness {
    /// A harness writing its files in `dir` (created, and used by no one else).
    pub fn new(dir: &Path) -> std::io::Result<Harness> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("password"), "fuzz")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        Ok(Harness {
            dir: dir.to_path_buf(),
            rt,
            listener,
        })
    }

    /// Runs `target` (one of [`TARGETS`]) on `data`. Inputs that a target
    /// cannot frame are skipped. `Err` only for the harness's own failures (a
    /// scratch file that cannot be written) or an unknown target.
    pub fn run(&self, target: &str, data: &[u8]) -> std::io::Result<()> {
        let text = || String::from_utf8_lossy(data);
        match target {
            // The main file, then each included file (`inc/0.toml`, …) after a
            // line `#--`; the variables of `config_env`.
            "config" => {
                let inc = self.dir.join("inc");
                let _ = std::fs::remove_dir_all(&inc);
                std::fs::create_dir_all(&inc)?;
                let parts = split_parts(data);
                let main = self.dir.join("sonde.toml");
                std::fs::write(&main, parts[0])?;
                for (i, part) in parts.iter().skip(1).take(8).enumerate() {
                    std::fs::write(inc.join(format!("{i}.toml")), part)?;
                }
                config(&main, &config_env);
            }
            // Bits 0-2 of the first byte: the extension; bit 3: the
            // exchange-auth role; bit 4: a password file holding `fuzz`.
            "certificate_file" => {
                let Some((&flags, file)) = data.split_first() else {
                    return Ok(());
                };
                let ext = EXTENSIONS[usize::from(flags & 7) % EXTENSIONS.len()];
                let path = self.dir.join(format!("cert.{ext}"));
                std::fs::write(&path, file)?;
                let password = self.dir.join("password");
                let password = (flags & 0x10 != 0).then_some(password.as_path());
                self.rt
                    .block_on(certificate_file(&path, password, flags & 0x08 != 0));
            }
            // The key, a line `#--`, the certificate (also read as PKCS#12
            // with the password `fuzz`); without the line, both are the input.
            "credential" => {
                let parts = split_parts(data);
                let (key, cert) = match parts.as_slice() {
                    [key, cert, ..] => (*key, *cert),
                    _ => (data, data),
                };
                credential(key, cert, "fuzz");
            }
            "metadata" => {
                metadata(data);
            }
            "jwt" => {
                jwt(&text(), STS_CERT);
            }
            // Bit 0 of the first byte set: no signing keys to check against.
            "token_reply" => {
                let keys = [STS_CERT.to_vec()];
                let with_keys = data.first().is_some_and(|b| b & 1 == 0);
                token_reply(data, with_keys.then_some(&keys[..]));
            }
            // The first byte chooses the status; the rest is the body.
            "graph_reply" => {
                let Some((&b, body)) = data.split_first() else {
                    return Ok(());
                };
                graph_reply(STATUSES[usize::from(b) % STATUSES.len()], body);
            }
            "www_authenticate" => {
                www_authenticate(&text());
            }
            "retry_after" => {
                retry_after(&text());
            }
            // Everything a server sends before it closes.
            "smtp_reply" => self.rt.block_on(self.smtp_reply(data))?,
            other => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("no fuzz target `{other}`"),
                ))
            }
        }
        Ok(())
    }

    /// One SMTP dialogue with a server on loopback that sends `data` and
    /// closes. Both ends close with a reset, so that millions of connections
    /// leave no TIME_WAIT behind. Panics when the client does not return
    /// within 5 s of the server's close: that is a hang.
    async fn smtp_reply(&self, data: &[u8]) -> std::io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.listener.local_addr()?;
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), self.listener.accept());
        let (client, (mut server, _)) = (client?, accepted?);
        reset_on_close(&client)?;
        reset_on_close(&server)?;
        let serve = async {
            let _ = server.write_all(data).await;
            let _ = server.shutdown().await;
            let mut sink = [0u8; 512];
            while let Ok(n) = server.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        let talk = async {
            let answered =
                tokio::time::timeout(Duration::from_secs(5), smtp_starttls(client)).await;
            assert!(answered.is_ok(), "starttls hangs after the server closed");
        };
        tokio::join!(serve, talk);
        Ok(())
    }
}

#[allow(deprecated)] // set_linger blocks a close that has data to send; here nothing is left.
fn reset_on_close(s: &tokio::net::TcpStream) -> std::io::Result<()> {
    s.set_linger(Some(Duration::ZERO))
}
