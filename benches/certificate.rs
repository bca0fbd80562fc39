//! `certificate` probe on a local PEM file: checks per second on one core
//! (a current-thread runtime), median of rounds. Compared in the same run with
//! the everyday alternative, `openssl x509 -checkend N -noout -in FILE` (one
//! process per check, as a Nagios check script does it), and with the floor of
//! only reading the file with tokio::fs.
//!
//! Run: `cargo bench --bench certificate`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sonde::clock::SystemClock;
use sonde::outcome::{Probe, ProbeContext, Status};
use sonde::probe::certificate::{CertificateConfig, CertificateProbe};

const ROUNDS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = Command::new("openssl")
        .current_dir(d)
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "k.pem",
            "-out",
            "cert.pem",
            "-days",
            "365",
            "-subj",
            "/CN=Microsoft Exchange Server Auth Certificate",
        ])
        .output()
        .expect("openssl CLI");
    assert!(ok.status.success());
    let file = d.join("cert.pem");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cfg: CertificateConfig =
        toml::from_str(&format!("path = {:?}", file.to_str().unwrap())).unwrap();
    let probe = CertificateProbe::new(&cfg, Path::new("/")).unwrap();
    let ctx = ProbeContext {
        clock: Arc::new(SystemClock),
        timeout: Duration::from_secs(5),
        progress: Default::default(),
    };
    let n = 20_000;
    let sonde_rates: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..n {
                    let o = probe.run(&ctx).await;
                    assert_eq!(o.status, Status::Ok, "{}", o.summary);
                }
                n as f64 / start.elapsed().as_secs_f64()
            })
        })
        .collect();

    let read_rates: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..n {
                    let bytes = tokio::fs::read(&file).await.unwrap();
                    assert!(!bytes.is_empty());
                }
                n as f64 / start.elapsed().as_secs_f64()
            })
        })
        .collect();

    let m = 200;
    let openssl_rates: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..m {
                let out = Command::new("openssl")
                    .args(["x509", "-checkend", "2592000", "-noout", "-in"])
                    .arg(&file)
                    .output()
                    .unwrap();
                assert!(out.status.success());
            }
            m as f64 / start.elapsed().as_secs_f64()
        })
        .collect();

    let (s, r, o) = (
        median(sonde_rates),
        median(read_rates),
        median(openssl_rates),
    );
    println!(
        "certificate probe on a local PEM file (RSA 2048), one core, median of {ROUNDS} rounds"
    );
    println!(
        "  sonde probe            {s:>10.0} checks/s  ({:.1} us/check)",
        1e6 / s
    );
    println!(
        "  openssl x509 -checkend {o:>10.0} checks/s  ({:.1} us/check)",
        1e6 / o
    );
    println!(
        "  floor: tokio::fs::read {r:>10.0} reads/s   ({:.1} us/read)",
        1e6 / r
    );
    println!(
        "  ratio  sonde/openssl {:.1}x   sonde/floor {:.2}",
        s / o,
        s / r
    );
}
