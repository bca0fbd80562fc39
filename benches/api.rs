//! On-demand HTTP probes through the API, against the everyday alternative.
//!
//! A loopback nginx (Debian's) serves `GET /` with 200. `wrk` (Debian's) drives,
//! each for `SONDE_BENCH_SECS` (default 10) seconds, 2 threads, 32 connections:
//! 1. nginx directly: the ceiling (what the target alone can answer);
//! 2. `prometheus-blackbox-exporter` `/probe?module=http_2xx&target=...` (Debian's
//!    0.23): one http_2xx check of nginx per request;
//! 3. sonde `POST /api/v1/probes/web/run` (bearer token, rate limit off): one
//!    `http` probe run of nginx per request, answered with the result JSON.
//!
//! Each probe request opens a fresh connection to nginx in both tools. Reported:
//! requests/s and p99 latency from `wrk --latency`, median of 3 rounds, and the
//! ratio sonde/blackbox.
//!
//! Run: `cargo bench --bench api` (needs nginx, wrk, prometheus-blackbox-exporter).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Reaped(Child);
impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> Reaped {
    Reaped(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")),
    )
}

fn wait_ready(url: &str) {
    let start = Instant::now();
    loop {
        let ok = Command::new("wrk")
            .args(["-t1", "-c1", "-d1s", url])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Requests/sec"));
        let answered = std::net::TcpStream::connect(
            url.trim_start_matches("http://").split('/').next().unwrap(),
        )
        .is_ok();
        if ok && answered {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{url} never answered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Requests/s, p99 ms and the non-2xx count of one wrk run.
type WrkRun = (f64, f64, u64);

fn wrk(url: &str, secs: u64, script: Option<&Path>) -> WrkRun {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c32", &format!("-d{secs}s"), "--latency"]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let out = cmd.arg(url).output().expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| ms(v.trim()))
        .unwrap_or(f64::NAN);
    let non2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (rps, p99, non2xx)
}

fn ms(v: &str) -> f64 {
    let (num, factor) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * factor
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let secs: u64 = std::env::var("SONDE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // nginx
    let nginx_port = free_port();
    std::fs::write(
        d.join("nginx.conf"),
        format!(
            "daemon off;\nworker_processes 1;\npid {pid};\nerror_log {err} warn;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {tmp};\n  proxy_temp_path {tmp};\n  fastcgi_temp_path {tmp};\n  uwsgi_temp_path {tmp};\n  scgi_temp_path {tmp};\n  server {{\n    listen 127.0.0.1:{nginx_port};\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
            pid = d.join("nginx.pid").display(),
            err = d.join("nginx.err").display(),
            tmp = d.display(),
        ),
    )
    .unwrap();
    let _nginx = spawn(
        Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-p")
            .arg(d),
    );
    let target = format!("http://127.0.0.1:{nginx_port}/");
    wait_ready(&target);
    // blackbox_exporter
    let bb_port = free_port();
    std::fs::write(
        d.join("blackbox.yml"),
        "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n",
    )
    .unwrap();
    let _bb = spawn(
        Command::new("/usr/bin/prometheus-blackbox-exporter")
            .arg(format!(
                "--config.file={}",
                d.join("blackbox.yml").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{bb_port}")),
    );
    let bb_url = format!("http://127.0.0.1:{bb_port}/probe?module=http_2xx&target={target}");
    wait_ready(&bb_url);
    // sonde
    let api_port = free_port();
    std::fs::write(d.join("api.token"), "bench-token-0123456789\n").unwrap();
    std::fs::write(
        d.join("sonde.toml"),
        format!(
            "[api]\nlisten = \"127.0.0.1:{api_port}\"\ntoken_file = \"api.token\"\nrun_min_interval = \"0s\"\n\n[telemetry]\nlog_level = \"warn\"\n\n[[probe]]\nname = \"web\"\nkind = \"http\"\nurl = \"{target}\"\nschedule = \"@yearly\"\n"
        ),
    )
    .unwrap();
    let _sonde = spawn(
        Command::new(env!("CARGO_BIN_EXE_sonde"))
            .current_dir(d)
            .args(["run", "--config", "sonde.toml"])
            .env_remove("RUST_LOG"),
    );
    let script = d.join("post.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.headers[\"Authorization\"] = \"Bearer bench-token-0123456789\"\n",
    )
    .unwrap();
    let sonde_url = format!("http://127.0.0.1:{api_port}/api/v1/probes/web/run");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", api_port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "sonde's API never came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut rows: Vec<(&str, Vec<WrkRun>)> = vec![
        ("nginx directly (ceiling)", vec![]),
        ("blackbox_exporter /probe", vec![]),
        ("sonde POST .../run", vec![]),
    ];
    for _ in 0..3 {
        rows[0].1.push(wrk(&target, secs, None));
        rows[1].1.push(wrk(&bb_url, secs, None));
        rows[2].1.push(wrk(&sonde_url, secs, Some(&script)));
    }
    println!("on-demand http probes of a loopback nginx, wrk -t2 -c32 -d{secs}s, median of 3");
    let mut med = Vec::new();
    for (name, runs) in &rows {
        let rps = median(runs.iter().map(|r| r.0).collect());
        let p99 = median(runs.iter().map(|r| r.1).collect());
        let errors: u64 = runs.iter().map(|r| r.2).sum();
        println!("  {name:<28} {rps:>9.0} req/s   p99 {p99:>7.2} ms   non-2xx {errors}");
        med.push((rps, p99));
    }
    println!(
        "  ratio sonde/blackbox: {:.2}x the probes per second (target >= 2), p99 {:.2} vs {:.2} ms",
        med[2].0 / med[1].0,
        med[2].1,
        med[1].1
    );
}
