//! Certificates made by rcgen with exact validity dates, checked through the CLI:
//! the expiry tiers hold to the hour, and not-yet-valid is critical.

use serde_json::Value;

use crate::support::{sonde_in, stdout};

/// Writes an rcgen-made ECDSA certificate valid from `from` to `to` (seconds
/// relative to now) as `name.pem`.
fn rcgen_cert(dir: &std::path::Path, name: &str, from: i64, to: i64) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut params = rcgen::CertificateParams::new(vec![format!("{name}.example")]).unwrap();
    params.not_before = time::OffsetDateTime::from_unix_timestamp(now + from).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(now + to).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
}

#[test]
fn expiry_tiers_hold_to_the_hour() {
    const H: i64 = 3600;
    const D: i64 = 86400;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        // name, valid from, valid to, expected status, exit code
        ("fine", -D, 31 * D, "ok", 0),
        ("warn-edge", -D, 30 * D - H, "warning", 1),
        ("warn-late", -D, 7 * D + H, "warning", 1),
        ("crit-edge", -D, 7 * D - H, "critical", 2),
        ("expired", -30 * D, -H, "critical", 2),
        ("future", D, 90 * D, "critical", 2),
    ];
    let mut toml = String::new();
    for (name, from, to, _, _) in cases {
        rcgen_cert(d, name, from, to);
        toml.push_str(&format!(
            "[[probe]]\nname = \"{name}\"\nkind = \"certificate\"\npath = \"{name}.pem\"\n\n"
        ));
    }
    std::fs::write(d.join("sonde.toml"), toml).unwrap();
    for (name, _, to, status, code) in cases {
        let out = sonde_in(d, &["probe", name, "--format", "json"], &[]);
        assert_eq!(out.status.code(), Some(code), "{name}: {}", stdout(&out));
        let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(v["status"], status, "{name}: {v}");
        let left = v["observations"]["seconds_left"].as_f64().unwrap() as i64;
        assert!(
            (left - to).abs() <= 5,
            "{name}: seconds_left {left}, expected about {to}"
        );
        assert_eq!(v["observations"]["key_bits"], 256, "{name}");
        if status != "ok" {
            assert_eq!(v["category"], "certificate", "{name}");
        }
    }
    let out = sonde_in(d, &["probe", "future", "--format", "json"], &[]);
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert!(
        v["summary"].as_str().unwrap().contains("not valid until"),
        "{v}"
    );
    let out = sonde_in(d, &["probe", "expired", "--format", "json"], &[]);
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert!(v["summary"].as_str().unwrap().contains("expired"), "{v}");
}
