//! Token benchmarks, each compared in the same run with OpenSSL on this machine.
//!
//! 1. Building and signing one ACS assertion (header, claims, RS256 with a
//!    2048-bit key) versus `openssl speed -seconds N rsa2048` sign time.
//! 2. The lab's token endpoint under concurrent load (32 clients on loopback,
//!    each request: parse the form, verify the assertion's RS256 signature, sign
//!    the access token) versus OpenSSL's sign+verify rate on all cores, which is
//!    the floor of what the endpoint must compute.
//!
//! Run: `cargo bench --bench token` (needs the openssl CLI).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sonde::clock::{Clock, SystemClock};
use sonde::credential::{self, SigningCredential};
use sonde::lab::{self, Lab, LabConfig};
use tokio_util::sync::CancellationToken;

const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn openssl_keys(dir: &std::path::Path, name: &str) -> SigningCredential {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "365",
            "-subj",
            "/CN=Microsoft Exchange Server Auth Certificate",
        ])
        .output()
        .expect("openssl CLI");
    assert!(out.status.success());
    let key = std::fs::read(dir.join(format!("{name}.key"))).unwrap();
    let cert = std::fs::read(dir.join(format!("{name}.pem"))).unwrap();
    credential::from_pem(&key, &cert).unwrap()
}

/// sign/s and verify/s for rsa2048 from `openssl speed` (one process, one core).
fn openssl_speed(seconds: u32) -> (f64, f64) {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", &seconds.to_string(), "rsa2048"])
        .output()
        .expect("openssl speed");
    let text = String::from_utf8_lossy(&out.stdout);
    // "rsa 2048 bits 0.000612s 0.000018s   1634.0  55555.5" (OpenSSL 3 may add
    // encrypt/decrypt columns after sign/verify).
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("rsa  2048") || l.trim_start().starts_with("rsa 2048"))
        .unwrap_or_else(|| panic!("no rsa 2048 line in openssl speed output:\n{text}"));
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches('s').parse::<f64>().ok())
        .collect();
    // bits, sign time, verify time, [enc time, dec time,] sign/s, verify/s, ...
    let sign_time = nums[1];
    let verify_time = nums[2];
    (1.0 / sign_time, 1.0 / verify_time)
}

fn assertion(cred: &SigningCredential, tenant: &str, authority: &str, now: i64) -> String {
    let header = json!({"typ": "JWT", "alg": "RS256", "x5t": cred.x5t()});
    let claims = json!({
        "aud": format!("00000001-0000-0000-c000-000000000000/{authority}@{tenant}"),
        "iss": format!("00000002-0000-0ff1-ce00-000000000000@{tenant}"),
        "nbf": now,
        "exp": now + 600,
    });
    cred.sign_rs256(&header, &claims).unwrap()
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let oauth = openssl_keys(dir.path(), "oauth");
    let lab_key = openssl_keys(dir.path(), "lab");

    // 1. One assertion, built and signed.
    let n = 2_000;
    let rates: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for i in 0..n {
                let a = assertion(
                    &oauth,
                    "0f3b6b0d-8c51-4e5a-9b5e-3f0c2b0a1d22",
                    "accounts.accesscontrol.windows.net",
                    1_700_000_000 + i,
                );
                assert!(a.len() > 300);
            }
            n as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    let ours = median(rates);
    let speeds: Vec<(f64, f64)> = (0..3).map(|_| openssl_speed(3)).collect();
    let sign = median(speeds.iter().map(|s| s.0).collect());
    let verify = median(speeds.iter().map(|s| s.1).collect());
    println!(
        "token assertion (build + RS256 sign, 2048-bit key), one core, median of {ROUNDS} rounds"
    );
    println!(
        "  sonde assertion         {ours:>9.0} /s  ({:.1} us each)",
        1e6 / ours
    );
    println!("  openssl speed rsa2048   {sign:>9.0} sign/s ({:.1} us), {verify:.0} verify/s (median of 3)", 1e6 / sign);
    println!(
        "  ratio time sonde/openssl-sign {:.2} (target <= 1.2)",
        sign / ours
    );

    // 2. The lab's token endpoint under load.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let lab = Lab::new("contoso.onmicrosoft.com", lab_key, clock.clone());
        lab.state()
            .register(oauth.cert_der(), oauth.not_before(), oauth.not_after())
            .unwrap();
        let stop = CancellationToken::new();
        let running = lab::start(
            &LabConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                smtp_listen: "127.0.0.1:0".parse().unwrap(),
                tenant_domain: "contoso.onmicrosoft.com".into(),
            },
            lab,
            stop.clone(),
        )
        .await
        .unwrap();
        let tenant = running.lab.tenant_id();
        let url = format!("{}/{tenant}/tokens/OAuth/2", running.base_url());
        let authority = running.http.to_string();
        let now = clock.now().timestamp();
        // Assertions are made before the clock starts: the endpoint is measured.
        let assertions: Arc<Vec<String>> = Arc::new(
            (0..64)
                .map(|i| assertion(&oauth, &tenant, &authority, now + i % 2))
                .collect(),
        );
        let resource =
            format!("00000002-0000-0ff1-ce00-000000000000/outlook.office365.com@{tenant}");
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap();
        let window = Duration::from_secs(
            std::env::var("SONDE_BENCH_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(10),
        );
        let mut rounds = Vec::new();
        for _ in 0..3 {
            let start = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..32 {
                let (client, url, resource, assertions) = (
                    client.clone(),
                    url.clone(),
                    resource.clone(),
                    assertions.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let mut done = 0u64;
                    let mut i = c;
                    while start.elapsed() < window {
                        let form = [
                            ("grant_type", "http://oauth.net/grant_type/jwt/1.0/bearer"),
                            ("assertion", assertions[i % assertions.len()].as_str()),
                            ("resource", resource.as_str()),
                        ];
                        let r = client.post(&url).form(&form).send().await.unwrap();
                        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
                        let _ = r.bytes().await.unwrap();
                        done += 1;
                        i += 1;
                    }
                    done
                }));
            }
            let mut total = 0;
            for t in tasks {
                total += t.await.unwrap();
            }
            rounds.push(total as f64 / start.elapsed().as_secs_f64());
        }
        let lab_rate = median(rounds);
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        let floor = cores / (1.0 / sign + 1.0 / verify);
        println!(
            "lab token endpoint, 32 concurrent clients on loopback, {}s x 3 rounds, median",
            window.as_secs()
        );
        println!("  sonde lab               {lab_rate:>9.0} tokens/s");
        println!("  openssl sign+verify     {floor:>9.0} /s on {cores} cores (the RSA work alone)");
        println!(
            "  ratio openssl/lab {:.2} (target <= 1.5)",
            floor / lab_rate
        );
        stop.cancel();
    });
}
