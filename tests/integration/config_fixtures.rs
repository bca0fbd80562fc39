//! One file per bad config under tests/fixtures/config/bad, each beside the exact
//! text `sonde validate` must print for it (`NAME.err`). To review a change of
//! wording, run with SONDE_BLESS=1: it rewrites the .err files, then read the diff.
//! Fixtures that need keys name them under `${SONDE_FIXTURE_KEYS}`, a directory
//! the test fills with openssl-made files.

use std::path::Path;

use crate::support::{openssl, sonde, sonde_in, stderr, stdout};

/// A PKCS#12 file (`client.pfx`, password `right`), an encrypted PEM key
/// (`encrypted.pem`) and a certificate (`cert.pem`), made by openssl in `dir`.
fn make_keys(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-subj",
            "/CN=sonde fixture",
            "-days",
            "2",
        ],
    );
    openssl(
        dir,
        &[
            "pkcs12",
            "-export",
            "-inkey",
            "key.pem",
            "-in",
            "cert.pem",
            "-out",
            "client.pfx",
            "-passout",
            "pass:right",
        ],
    );
    openssl(
        dir,
        &[
            "pkcs8",
            "-topk8",
            "-in",
            "key.pem",
            "-out",
            "encrypted.pem",
            "-passout",
            "pass:right",
        ],
    );
}

#[test]
fn every_bad_config_fails_with_its_exact_errors() {
    let dir = crate::support::root().join("tests/fixtures/config/bad");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    fixtures.sort();
    assert!(
        fixtures.len() >= 18,
        "fixtures went missing: {}",
        fixtures.len()
    );
    let keys = tempfile::tempdir().unwrap();
    make_keys(keys.path());
    let keys = keys.path().to_str().unwrap();
    let bless = std::env::var_os("SONDE_BLESS").is_some();
    let mut failures = Vec::new();
    for path in &fixtures {
        let rel = path.strip_prefix(crate::support::root()).unwrap();
        let out = sonde_in(
            &crate::support::root(),
            &["validate", "--config", rel.to_str().unwrap()],
            &[("SONDE_FIXTURE_KEYS", keys)],
        );
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}: exit code; stderr:\n{}",
            rel.display(),
            stderr(&out)
        );
        assert_eq!(stdout(&out), "", "{}: nothing on stdout", rel.display());
        let expected_path = path.with_extension("err");
        let actual = stderr(&out);
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("missing {}", expected_path.display()));
        if actual != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                rel.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_shipped_example_config_is_valid() {
    let out = sonde(&["validate", "--config", "examples/sonde.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("valid:"), "{}", stdout(&out));
}

#[test]
fn a_timeout_longer_than_every_is_a_warning_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sonde.toml"),
        r#"
[[probe]]
name = "slow"
kind = "http"
url = "http://127.0.0.1:8080/"
every = "10s"
timeout = "1m"

[[probe]]
name = "fine"
kind = "http"
url = "http://127.0.0.1:8080/"
every = "10s"
timeout = "5s"
"#,
    )
    .unwrap();
    let out = crate::support::sonde_in(dir.path(), &["validate", "--config", "sonde.toml"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("valid: 2 probes"), "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        "warning: sonde.toml:7:11: probe[0].timeout: 1m is longer than `every` (10s): \
         a run that lasts that long makes the probe skip its next fire\n"
    );
}

#[test]
fn a_cron_must_fire_after_the_time_of_loading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sonde.toml");
    std::fs::write(
        &path,
        r#"
[[probe]]
name = "new-year-2030"
kind = "http"
url = "http://127.0.0.1:8080/"
schedule = "0 0 0 1 1 * 2030"
"#,
    )
    .unwrap();
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    let loader = sonde::config::Loader { env: &|_| None };
    let config = loader.load_at(&path, at("2029-12-31T23:59:59Z")).unwrap();
    assert!(config.warnings.is_empty());
    let errors = loader
        .load_at(&path, at("2030-01-01T00:00:00Z"))
        .unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert_eq!(
        errors.0[0].message,
        "cron `0 0 0 1 1 * 2030` never fires after now: all its instants have passed"
    );
}
