//! Replays of the fuzz targets' inputs (FUZZING.md) through the same entry
//! point the fuzzer calls, `sonde::fuzzing::Harness::run`: every seed in
//! `fuzz/corpus/<target>/` and every input that once crashed a target, kept in
//! `tests/fixtures/fuzz/<target>/`. A panic fails the test, naming the file.

use std::path::{Path, PathBuf};

use sonde::fuzzing::{Harness, TARGETS};
use tempfile::TempDir;

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// Runs every file of `root/<target>/` through its target; returns how many ran.
fn replay(root: &str, harness: &Harness, target: &str) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(root)
        .join(target);
    let inputs = files(&dir);
    for file in &inputs {
        let data = std::fs::read(file).unwrap();
        let ran =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| harness.run(target, &data)));
        match ran {
            Ok(result) => result.unwrap(),
            Err(_) => panic!("{target} panics on {}", file.display()),
        }
    }
    inputs.len()
}

#[test]
fn every_seed_and_every_kept_crash_of_every_fuzz_target_runs_without_a_panic() {
    let scratch = TempDir::new().unwrap();
    let harness = Harness::new(scratch.path()).unwrap();
    for target in TARGETS {
        let seeds = replay("fuzz/corpus", &harness, target);
        assert!(seeds > 0, "fuzz/corpus/{target} has no seed");
        replay("tests/fixtures/fuzz", &harness, target);
    }
}

#[test]
fn each_fuzz_target_has_its_file_and_seeds_and_no_other_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut on_disk: Vec<String> = files(&root.join("fuzz_targets"))
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    on_disk.sort();
    let mut declared: Vec<String> = TARGETS.iter().map(|t| t.to_string()).collect();
    declared.sort();
    assert_eq!(on_disk, declared);
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for target in TARGETS {
        assert!(
            manifest.contains(&format!("path = \"fuzz_targets/{target}.rs\"")),
            "fuzz/Cargo.toml has no [[bin]] for {target}"
        );
    }
}

#[test]
fn an_unknown_target_is_an_error_not_a_silent_pass() {
    let scratch = TempDir::new().unwrap();
    let harness = Harness::new(scratch.path()).unwrap();
    assert!(harness.run("no-such-target", b"x").is_err());
}
