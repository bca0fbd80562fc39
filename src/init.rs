//! `sonde init`: writes a commented starter configuration for a use case
//! (`exchange`: the hybrid push health set; `blackbox`: an HTTP check and a TLS
//! endpoint), validates it with the same loader as `sonde validate`, and lists
//! what the operator still has to fill in.
//!
//! The text is built here; the file is first written beside its destination
//! under a temporary name, loaded, and only renamed into place once it is
//! valid, so a failed run never leaves a half-made or invalid config behind.
//! An existing file is kept unless `--force` is given.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::cli::{InitOutput, InitTemplate};
use crate::config::{self, ConfigErrors};
use crate::credential::{self, CredentialError};

/// The health set the exchange template fills, as Managed Availability names it.
const HEALTH_SET: &str = "PushNotifications.Proxy";
/// The variable the token probes read the credential's password from.
const PASSWORD_VAR: &str = "SONDE_OAUTH_KEY_PASSWORD";

#[derive(Debug, thiserror::Error)]
pub(crate) enum InitError {
    #[error("{} exists: pass --force to overwrite it", .0.display())]
    Exists(PathBuf),
    #[error("cannot read the certificate {}: {source}", path.display())]
    ReadCertificate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a certificate: {source}", path.display())]
    Certificate {
        path: PathBuf,
        source: CredentialError,
    },
    #[error("--tenant `{0}` is not a domain name such as contoso.onmicrosoft.com")]
    Tenant(String),
    #[error("--{flag} `{value}` is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")]
    Guid { flag: &'static str, value: String },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The generated text did not validate: a bug, reported with every error.
    #[error("the generated configuration does not validate:\n{0}")]
    Invalid(ConfigErrors),
}

/// What `sonde init` wrote.
#[derive(Debug)]
pub(crate) struct Written {
    pub path: PathBuf,
    pub probes: usize,
    /// What the operator still has to do before `sonde run`.
    pub todo: Vec<String>,
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: written and valid: {} probe{}",
            self.path.display(),
            self.probes,
            if self.probes == 1 { "" } else { "s" }
        )?;
        if !self.todo.is_empty() {
            writeln!(f, "Still to fill in:")?;
            for item in &self.todo {
                writeln!(f, "  - {item}")?;
            }
        }
        Ok(())
    }
}

/// Builds the template's text, then writes and validates it.
pub(crate) fn run(template: &InitTemplate) -> Result<Written, InitError> {
    let (starter, out) = match template {
        InitTemplate::Exchange {
            tenant,
            auth_cert,
            key,
            tenant_id,
            app_id,
            out,
        } => {
            let data = std::fs::read(auth_cert).map_err(|source| InitError::ReadCertificate {
                path: auth_cert.clone(),
                source,
            })?;
            let thumbprint = credential::certificate_thumbprint(&data).map_err(|source| {
                InitError::Certificate {
                    path: auth_cert.clone(),
                    source,
                }
            })?;
            let exchange = Exchange {
                tenant,
                thumbprint: &thumbprint,
                auth_cert: &absolute(auth_cert),
                key: &absolute(key),
                tenant_id: tenant_id.as_deref(),
                app_id: app_id.as_deref(),
            };
            (exchange_config(&exchange)?, out)
        }
        InitTemplate::Blackbox { out } => (blackbox_config(), out),
    };
    let probes = write_validated(out, &starter.text)?;
    Ok(Written {
        path: out.output.clone(),
        probes,
        todo: starter.todo,
    })
}

/// A template's text and its list of what is left to do.
#[derive(Debug)]
pub(crate) struct Starter {
    pub(crate) text: String,
    pub(crate) todo: Vec<String>,
}

/// The facts `sonde init exchange` was given or derived.
#[derive(Debug)]
pub(crate) struct Exchange<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) thumbprint: &'a str,
    pub(crate) auth_cert: &'a Path,
    pub(crate) key: &'a Path,
    pub(crate) tenant_id: Option<&'a str>,
    pub(crate) app_id: Option<&'a str>,
}

/// A config file's path as seen from anywhere: the generated file may live in
/// another directory than the one `sonde init` ran in.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// A TOML basic string holding `text` literally (quotes and backslashes
/// escaped; `${` doubled so that variable substitution leaves it alone).
fn toml_str(text: &str) -> String {
    toml::Value::String(text.to_string())
        .to_string()
        .replace("${", "$${")
}

fn is_domain(text: &str) -> bool {
    text.len() <= 253
        && text.contains('.')
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn guid(flag: &'static str, value: Option<&str>) -> Result<(), InitError> {
    match value {
        Some(v) if !crate::guid::is_guid(v) => Err(InitError::Guid {
            flag,
            value: v.to_string(),
        }),
        _ => Ok(()),
    }
}

const STORE_AND_API: &str = r#"[store]
# SQLite: results, monitor states and the alert outbox. A relative path is
# relative to this file; the packaged service keeps it in /var/lib/sonde.
path = "sonde.db"

[api]
# /healthz, /metrics (for Prometheus), /api/v1/... and the status page at /.
# POST endpoints (on-demand runs) need a token: token_env or token_file.
listen = "127.0.0.1:9323"

# Alerts: declare channels and list them in each probe's `alert = [...]`.
# [[channel]]
# name = "ops-mail"
# kind = "email"                  # email | webhook | slack | teams | alertmanager
# smtp_host = "mail.example.com"
# smtp_port = 587
# tls = "starttls"
# username = "sonde"
# password_env = "SONDE_SMTP_PASSWORD"
# from = "sonde@example.com"
# to = ["ops@example.com"]
#
# [[channel]]
# name = "am"
# kind = "alertmanager"
# url = "http://127.0.0.1:9093"
"#;

/// The hybrid push health set, filled from what `sonde init exchange` knows.
pub(crate) fn exchange_config(e: &Exchange<'_>) -> Result<Starter, InitError> {
    if !is_domain(e.tenant) {
        return Err(InitError::Tenant(e.tenant.to_string()));
    }
    guid("tenant-id", e.tenant_id)?;
    guid("app-id", e.app_id)?;
    let tenant = e.tenant.to_ascii_lowercase();
    let set = toml_str(HEALTH_SET);
    let metadata_url = toml_str(&format!(
        "https://accounts.accesscontrol.windows.net/metadata/json/1/?realm={tenant}"
    ));
    let key = toml_str(&e.key.display().to_string());
    let is_pkcs12 = e
        .key
        .extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| x.eq_ignore_ascii_case("pfx") || x.eq_ignore_ascii_case("p12"));

    let mut todo = Vec::new();
    if is_pkcs12 {
        todo.push(format!(
            "set {PASSWORD_VAR} to the password of {} in sonde's environment \
             (for the service: /etc/default/sonde)",
            e.key.display()
        ));
    }
    todo.push(
        "declare a channel and add `alert = [\"...\"]` to the probes, or scrape /metrics \
         with Prometheus and load the shipped rules"
            .to_string(),
    );
    if e.tenant_id.is_none() {
        todo.push(
            "add --tenant-id (the tenant's GUID) so that auth-metadata checks the realm"
                .to_string(),
        );
    }
    if e.app_id.is_none() {
        todo.push(
            "add --app-id once the dedicated Exchange hybrid application exists \
             (ConfigureExchangeHybridApplication.ps1)"
                .to_string(),
        );
    }
    todo.push(
        "check that the thumbprint matches Get-AuthConfig's CurrentCertificateThumbprint"
            .to_string(),
    );

    let mut t = String::new();
    t.push_str(&format!(
        "# sonde configuration for Exchange hybrid push notifications ({tenant}),\n\
         # written by `sonde init exchange`.\n\
         #\n\
         # The {HEALTH_SET} health set watches every link of the hybrid push\n\
         # chain separately, so that an alert names the link that broke:\n\
         #\n\
         #   oauth-certificate -> token-issuance -> push-connectivity\n\
         #   auth-metadata     ->\n\
         #\n\
         # Still to fill in:\n"
    ));
    push_todo(&mut t, &todo);
    t.push_str(
        "#\n# Check it with `sonde validate --config FILE`, run one probe now with\n\
         # `sonde probe oauth-certificate --config FILE`, then `sonde run`.\n\n",
    );
    t.push_str(STORE_AND_API);
    t.push_str(&format!(
        r#"
# The OAuth (Auth) certificate as exported from Exchange: its expiry, key size,
# and that it is still the one Get-AuthConfig names.
[[probe]]
name = "oauth-certificate"
kind = "certificate"
health_set = {set}
every = "1h"
path = {cert}
# SHA-1 of the certificate, computed by `sonde init` from the file above.
expected_thumbprint = "{thumbprint}"
min_key_bits = 2048
warn_before = "60d"        # Microsoft's renewal script acts under 60 days
critical_before = "14d"

# The ACS auth metadata document for the tenant (the realm must be in the URL).
[[probe]]
name = "auth-metadata"
kind = "metadata"
health_set = {set}
every = "5m"
timeout = "30s"
url = {metadata_url}
"#,
        cert = toml_str(&e.auth_cert.display().to_string()),
        thumbprint = e.thumbprint,
    ));
    match e.tenant_id {
        Some(id) => t.push_str(&format!(
            "# The tenant id: the realm the document must name.\nexpect_realm = \"{}\"\n",
            id.to_ascii_lowercase()
        )),
        None => t.push_str(
            "# expect_realm = \"<tenant id>\"   # sonde init exchange --tenant-id GUID\n",
        ),
    }
    let password = if is_pkcs12 {
        format!("password_env = \"{PASSWORD_VAR}\"\n")
    } else {
        format!("# password_env = \"{PASSWORD_VAR}\"   # for a .pfx\n")
    };
    t.push_str(&format!(
        r#"
# A token from ACS, signed with the OAuth certificate's key, as on-premises
# Exchange asks for one.
[[probe]]
name = "token-issuance"
kind = "token"
health_set = {set}
every = "5m"
timeout = "30s"
depends_on = ["auth-metadata", "oauth-certificate"]
mode = "acs"
tenant = "{tenant}"
metadata_url = {metadata_url}
key_path = {key}
{password}
# What Managed Availability's probe does: a monitoring batch to the push proxy.
[[probe]]
name = "push-connectivity"
kind = "push"
health_set = {set}
every = "5m"
timeout = "60s"
depends_on = ["token-issuance"]
mode = "connectivity"
token_probe = "token-issuance"
proxy_url = "https://outlook.office365.com/PushNotifications"
"#
    ));
    match e.app_id {
        Some(app) => {
            let authority = e.tenant_id.map_or(tenant.clone(), str::to_ascii_lowercase);
            t.push_str(&format!(
                r#"
# The dedicated Exchange hybrid application (CVE-2025-53786): an Entra token
# for Exchange Online with the same certificate as client assertion.
[[probe]]
name = "hybrid-app-token"
kind = "token"
health_set = {set}
every = "5m"
timeout = "30s"
depends_on = ["oauth-certificate"]
mode = "entra"
tenant = "{authority}"
client_id = "{app}"
metadata_url = "https://login.microsoftonline.com/{authority}/v2.0/.well-known/openid-configuration"
key_path = {key}
{password}"#,
                app = app.to_ascii_lowercase(),
            ));
        }
        None => t.push_str(
            "\n# With the dedicated Exchange hybrid application, `sonde init exchange --app-id GUID`\n\
             # adds a probe of its Entra token (mode = \"entra\", client_id = the app id).\n",
        ),
    }
    Ok(Starter { text: t, todo })
}

/// An HTTP check and a TLS endpoint's certificate, blackbox_exporter style.
pub(crate) fn blackbox_config() -> Starter {
    let todo = vec![
        "replace https://www.example.com/ with the URL to check (and adjust expect_status, \
         body_contains)"
            .to_string(),
        "replace www.example.com:443 with the TLS endpoint whose certificate to watch".to_string(),
        "declare a channel and add `alert = [\"...\"]` to the probes, or scrape /metrics \
         with Prometheus and load the shipped rules"
            .to_string(),
    ];
    let mut t = String::from(
        "# sonde configuration: a blackbox starter, written by `sonde init blackbox`.\n\
         # An HTTP check and a TLS endpoint's certificate, in the health set `site`.\n\
         #\n\
         # Still to fill in:\n",
    );
    push_todo(&mut t, &todo);
    t.push_str(
        "#\n# Check it with `sonde validate --config FILE`, run one probe now with\n\
         # `sonde probe site-http --config FILE`, then `sonde run`.\n\n",
    );
    t.push_str(STORE_AND_API);
    t.push_str(
        r#"
# An HTTP(S) request: the status must be 200-399, and the body may be checked.
[[probe]]
name = "site-http"
kind = "http"
health_set = "site"
every = "1m"
timeout = "10s"
url = "https://www.example.com/"
# expect_status = [200]
# body_contains = "Welcome"
# alert = ["ops-mail"]

# The certificate a TLS endpoint presents: the chain must verify; warning 30
# days before expiry, critical 7 days before.
[[probe]]
name = "site-certificate"
kind = "certificate"
health_set = "site"
every = "1h"
endpoint = "www.example.com:443"
warn_before = "30d"
critical_before = "7d"
# starttls = "smtp"               # for a mail server's port 25 or 587
# alert = ["ops-mail"]
"#,
    );
    Starter { text: t, todo }
}

/// The to-do list as comment lines, each item wrapped at 80 columns.
fn push_todo(text: &mut String, todo: &[String]) {
    const WIDTH: usize = 80;
    for item in todo {
        let mut line = String::from("#   -");
        for word in item.split_whitespace() {
            if line.len() + 1 + word.len() > WIDTH && line.len() > 6 {
                text.push_str(&line);
                text.push('\n');
                line = String::from("#    ");
            }
            line.push(' ');
            line.push_str(word);
        }
        text.push_str(&line);
        text.push('\n');
    }
}

/// Writes `text` to `out.output` once it validates; returns the probe count.
fn write_validated(out: &InitOutput, text: &str) -> Result<usize, InitError> {
    let path = &out.output;
    if !out.force && path.exists() {
        return Err(InitError::Exists(path.clone()));
    }
    let write_err = |source| InitError::Write {
        path: path.clone(),
        source,
    };
    // Beside the destination, so relative paths in it resolve the same way
    // and the rename stays on one file system.
    let name = path
        .file_name()
        .map_or_else(|| "sonde.toml".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.init-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(write_err)?;
        file.write_all(text.as_bytes()).map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
        let loaded = config::load(&tmp).map_err(InitError::Invalid)?;
        if !out.force && path.exists() {
            return Err(InitError::Exists(path.clone()));
        }
        std::fs::rename(&tmp, path).map_err(write_err)?;
        Ok(loaded.probes.len())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const TENANT_ID: &str = "5a6c3b6e-1f0e-4c1a-9f4e-2b7d8c9e0a1b";
    const APP_ID: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";

    fn out(dir: &Path, force: bool) -> InitOutput {
        InitOutput {
            output: dir.join("sonde.toml"),
            force,
        }
    }

    /// An RSA certificate made by openssl, DER-encoded as Exchange exports
    /// OAuthCert.cer, and the SHA-1 fingerprint openssl prints for it.
    fn openssl_cert(dir: &Path) -> (PathBuf, String) {
        let pem = dir.join("OAuthCert.pem");
        let der = dir.join("OAuthCert.cer");
        let ok = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
            ])
            .args(["-subj", "/CN=Microsoft Exchange Server Auth Certificate"])
            .arg("-keyout")
            .arg(dir.join("OAuthCert.key"))
            .arg("-out")
            .arg(&pem)
            .output()
            .unwrap();
        assert!(ok.status.success(), "{ok:?}");
        let ok = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&pem)
            .arg("-out")
            .arg(&der)
            .output()
            .unwrap();
        assert!(ok.status.success(), "{ok:?}");
        let fp = Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-fingerprint",
                "-sha1",
                "-inform",
                "DER",
                "-in",
            ])
            .arg(&der)
            .output()
            .unwrap();
        let text = String::from_utf8(fp.stdout).unwrap();
        // "SHA1 Fingerprint=AB:CD:..."
        let hex = text.trim().rsplit('=').next().unwrap().replace(':', "");
        assert_eq!(hex.len(), 40, "{text}");
        (der, hex)
    }

    fn exchange(
        dir: &Path,
        tenant_id: Option<&str>,
        app_id: Option<&str>,
        force: bool,
    ) -> InitTemplate {
        let (cert, _) = openssl_cert(dir);
        InitTemplate::Exchange {
            tenant: "contoso.onmicrosoft.com".into(),
            auth_cert: cert,
            key: dir.join("OAuthCert.pfx"),
            tenant_id: tenant_id.map(String::from),
            app_id: app_id.map(String::from),
            out: out(dir, force),
        }
    }

    #[test]
    fn exchange_writes_a_valid_config_with_openssls_thumbprint() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, fingerprint) = openssl_cert(dir.path());
        let template = InitTemplate::Exchange {
            tenant: "Contoso.onmicrosoft.com".into(),
            auth_cert: cert.clone(),
            key: dir.path().join("OAuthCert.pfx"),
            tenant_id: Some(TENANT_ID.into()),
            app_id: Some(APP_ID.into()),
            out: out(dir.path(), false),
        };
        let written = run(&template).unwrap();
        assert_eq!(written.probes, 5);
        let text = std::fs::read_to_string(dir.path().join("sonde.toml")).unwrap();
        assert!(
            text.contains(&format!("expected_thumbprint = \"{fingerprint}\"")),
            "{text}"
        );
        assert!(text.contains(&format!("expect_realm = \"{TENANT_ID}\"")));
        assert!(text.contains(&format!("client_id = \"{APP_ID}\"")));
        assert!(text.contains("password_env = \"SONDE_OAUTH_KEY_PASSWORD\""));
        assert!(text.contains("?realm=contoso.onmicrosoft.com"));
        // The same loader as `sonde validate` sees the filled values.
        let c = config::load(&dir.path().join("sonde.toml")).unwrap();
        let names: Vec<&str> = c.probes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "oauth-certificate",
                "auth-metadata",
                "token-issuance",
                "push-connectivity",
                "hybrid-app-token"
            ]
        );
        assert!(c.probes.iter().all(|p| p.health_set == HEALTH_SET));
        // The report names the password variable, and no temporary file is left.
        let report = written.to_string();
        assert!(report.contains("Still to fill in:"), "{report}");
        assert!(report.contains("SONDE_OAUTH_KEY_PASSWORD"), "{report}");
        assert!(!report.contains("--tenant-id"), "{report}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".init-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn exchange_without_ids_says_what_is_left_and_still_validates() {
        let dir = tempfile::tempdir().unwrap();
        let written = run(&exchange(dir.path(), None, None, false)).unwrap();
        assert_eq!(written.probes, 4);
        let report = written.to_string();
        assert!(report.contains("--tenant-id"), "{report}");
        assert!(report.contains("--app-id"), "{report}");
        let text = std::fs::read_to_string(dir.path().join("sonde.toml")).unwrap();
        assert!(text.contains("# expect_realm"));
        assert!(!text.contains("hybrid-app-token\""));
    }

    #[test]
    fn an_existing_file_is_kept_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sonde.toml");
        std::fs::write(&path, "# mine\n").unwrap();
        let err = run(&InitTemplate::Blackbox {
            out: out(dir.path(), false),
        })
        .unwrap_err();
        assert!(matches!(err, InitError::Exists(_)), "{err}");
        assert!(err.to_string().contains("--force"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");
        let written = run(&InitTemplate::Blackbox {
            out: out(dir.path(), true),
        })
        .unwrap();
        assert_eq!(written.probes, 2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("kind = \"http\""));
        assert!(text.contains("endpoint = \"www.example.com:443\""));
    }

    #[test]
    fn bad_input_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.cer");
        std::fs::write(&junk, b"not a certificate").unwrap();
        let mut t = exchange(dir.path(), Some("not-a-guid"), None, false);
        assert!(matches!(
            run(&t).unwrap_err(),
            InitError::Guid {
                flag: "tenant-id",
                ..
            }
        ));
        if let InitTemplate::Exchange {
            tenant_id, tenant, ..
        } = &mut t
        {
            *tenant_id = None;
            *tenant = "contoso onmicrosoft".into();
        }
        assert!(matches!(run(&t).unwrap_err(), InitError::Tenant(_)));
        if let InitTemplate::Exchange {
            tenant, auth_cert, ..
        } = &mut t
        {
            *tenant = "contoso.onmicrosoft.com".into();
            *auth_cert = junk;
        }
        assert!(matches!(
            run(&t).unwrap_err(),
            InitError::Certificate { .. }
        ));
        assert!(!dir.path().join("sonde.toml").exists());
    }

    #[test]
    fn paths_with_quotes_and_dollars_stay_literal() {
        let s = toml_str(r#"C:\certs\"a"${HOME}.pfx"#);
        let v: toml::Value = toml::from_str(&format!("k = {s}")).unwrap();
        // The file is read after substitution, which turns `$${` back into `${`.
        assert_eq!(v["k"].as_str().unwrap(), r#"C:\certs\"a"$${HOME}.pfx"#);
        let subst = crate::config::env::substitute(&format!("k = {s}"), &|_| None);
        assert!(subst.errors.is_empty());
        let v: toml::Value = toml::from_str(&subst.text).unwrap();
        assert_eq!(v["k"].as_str().unwrap(), r#"C:\certs\"a"${HOME}.pfx"#);
    }

    #[test]
    fn the_todo_list_wraps_at_80_columns() {
        let mut t = String::new();
        let long = "word ".repeat(40);
        push_todo(&mut t, &[long.trim().to_string(), "short".to_string()]);
        assert!(t.lines().all(|l| l.len() <= 80), "{t}");
        assert!(t.starts_with("#   - word word"), "{t}");
        assert!(t.lines().nth(1).unwrap().starts_with("#     word"), "{t}");
        assert!(t.ends_with("#   - short\n"), "{t}");
        assert_eq!(t.matches("word").count(), 40);
    }

    #[test]
    fn domain_names() {
        assert!(is_domain("contoso.onmicrosoft.com"));
        assert!(!is_domain("contoso"));
        assert!(!is_domain("-a.com"));
        assert!(!is_domain("a..com"));
        assert!(!is_domain("a/b.com"));
    }
}
