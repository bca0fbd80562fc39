//! `sonde init`, `sonde completions` and `sonde man` through the real binary:
//! the written config validates with `sonde validate` and carries the
//! thumbprint `openssl x509 -fingerprint -sha1` prints for the same certificate.

use std::process::Command;

use crate::support::{openssl, root, sonde_in, stderr, stdout};

#[test]
fn init_exchange_writes_a_config_that_validates_with_openssls_thumbprint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "365",
            "-subj",
            "/CN=Microsoft Exchange Server Auth Certificate",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-in",
            "cert.pem",
            "-outform",
            "DER",
            "-out",
            "OAuthCert.cer",
        ],
    );
    openssl(
        d,
        &[
            "pkcs12",
            "-export",
            "-inkey",
            "key.pem",
            "-in",
            "cert.pem",
            "-out",
            "OAuthCert.pfx",
            "-passout",
            "pass:secret",
        ],
    );
    let fp = Command::new("openssl")
        .current_dir(d)
        .args([
            "x509",
            "-inform",
            "DER",
            "-in",
            "OAuthCert.cer",
            "-noout",
            "-fingerprint",
            "-sha1",
        ])
        .output()
        .unwrap();
    let fp = String::from_utf8(fp.stdout).unwrap();
    let thumbprint = fp.trim().rsplit('=').next().unwrap().replace(':', "");
    assert_eq!(thumbprint.len(), 40, "{fp}");

    let args = [
        "init",
        "exchange",
        "--tenant",
        "contoso.onmicrosoft.com",
        "--auth-cert",
        "OAuthCert.cer",
        "--key",
        "OAuthCert.pfx",
        "--tenant-id",
        "5a6c3b6e-1f0e-4c1a-9f4e-2b7d8c9e0a1b",
        "--output",
        "out.toml",
    ];
    let o = sonde_in(d, &args, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("out.toml: written and valid: 4 probes\n"),
        "{out}"
    );
    assert!(
        out.contains("Still to fill in:\n  - set SONDE_OAUTH_KEY_PASSWORD"),
        "{out}"
    );
    let text = std::fs::read_to_string(d.join("out.toml")).unwrap();
    assert!(
        text.contains(&format!("expected_thumbprint = \"{thumbprint}\"")),
        "{text}"
    );

    // `sonde validate` opens the key, as a start would: it needs the password.
    let o = sonde_in(
        d,
        &["validate", "--config", "out.toml"],
        &[("SONDE_OAUTH_KEY_PASSWORD", "secret")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("valid: 4 probes (4 enabled)"),
        "{}",
        stdout(&o)
    );
    // The certificate probe agrees with the file it was written from.
    let o = sonde_in(
        d,
        &[
            "probe",
            "oauth-certificate",
            "--config",
            "out.toml",
            "--format",
            "json",
        ],
        &[],
    );
    let result: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(result["status"], "ok", "{result}");

    // A second run keeps the file; --force replaces it.
    let o = sonde_in(d, &args, &[]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("out.toml exists: pass --force"),
        "{}",
        stderr(&o)
    );
    let mut forced = args.to_vec();
    forced.push("--force");
    let o = sonde_in(d, &forced, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn completions_and_man_pages_come_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef sonde"),
        ("fish", "complete -c sonde"),
    ] {
        let o = sonde_in(dir.path(), &["completions", shell], &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains(marker), "{shell}");
    }
    let o = sonde_in(dir.path(), &["man", "."], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let page = std::fs::read_to_string(dir.path().join("sonde.1")).unwrap();
    assert!(page.contains(".TH sonde 1"));
    assert!(dir.path().join("sonde-init-exchange.1").exists());
}

/// The package's /etc/sonde/sonde.toml validates as shipped, and so does its
/// commented alternative that includes the shipped health set, once the
/// variables /etc/default/sonde describes are set.
#[test]
fn the_packaged_default_config_validates_with_and_without_the_health_set() {
    let o = sonde_in(
        &root(),
        &["validate", "--config", "packaging/sonde.toml"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("valid: 0 probes"), "{}", stdout(&o));

    let shipped = std::fs::read_to_string(root().join("packaging/sonde.toml")).unwrap();
    let alternative = "# include = [\"/etc/sonde/probes.d/*.toml\", \"/usr/share/sonde/probes/exchange-push-proxy.toml\"]";
    assert!(shipped.contains(alternative));
    let probes = root().join("probes/exchange-push-proxy.toml");
    let text = shipped
        .replace("include = [\"/etc/sonde/probes.d/*.toml\"]\n", "")
        .replace(
            alternative,
            &format!(
                "include = [\"/etc/sonde/probes.d/*.toml\", \"{}\"]",
                probes.display()
            ),
        );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sonde.toml"), text).unwrap();
    // `sonde validate` opens the signing key as a start would: give it one.
    openssl(
        dir.path(),
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=Auth",
            "-keyout", "key.pem", "-out", "cert.pem",
        ],
    );
    openssl(
        dir.path(),
        &[
            "pkcs12",
            "-export",
            "-inkey",
            "key.pem",
            "-in",
            "cert.pem",
            "-out",
            "OAuthCert.pfx",
            "-passout",
            "pass:secret",
        ],
    );
    let key = dir.path().join("OAuthCert.pfx");
    let env = [
        ("SONDE_TENANT", "contoso.onmicrosoft.com"),
        ("SONDE_OAUTH_CERT", "/etc/sonde/OAuthCert.cer"),
        (
            "SONDE_OAUTH_THUMBPRINT",
            "0123456789abcdef0123456789abcdef01234567",
        ),
        ("SONDE_OAUTH_KEY", key.to_str().unwrap()),
        ("SONDE_OAUTH_KEY_PASSWORD", "secret"),
    ];
    let o = sonde_in(dir.path(), &["validate", "--config", "sonde.toml"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("valid: 4 probes"), "{}", stdout(&o));
}
