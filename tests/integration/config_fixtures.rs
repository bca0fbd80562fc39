//! One file per bad config under tests/fixtures/config/bad, each beside the exact
//! text `sonde validate` must print for it (`NAME.err`). To review a change of
//! wording, run with SONDE_BLESS=1: it rewrites the .err files, then read the diff.

use crate::support::{sonde, stderr, stdout};

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
    let bless = std::env::var_os("SONDE_BLESS").is_some();
    let mut failures = Vec::new();
    for path in &fixtures {
        let rel = path.strip_prefix(crate::support::root()).unwrap();
        let out = sonde(&["validate", "--config", rel.to_str().unwrap()]);
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
