//! On-demand HTTP probes through the API, against the everyday alternative and
//! against the physical limit of the machine.
//!
//! A loopback nginx (Debian's, one worker) serves `GET /` with 200. `wrk`
//! (Debian's) drives, each for `SONDE_BENCH_SECS` (default 10) seconds, 2
//! threads, 32 connections:
//! 1. nginx directly: the ceiling (what the target alone can answer);
//! 2. a second nginx (two workers, as sonde has two worker threads) as a reverse
//!    proxy of the first, opening a fresh connection to it for every request
//!    (`proxy_pass`, HTTP/1.0, no upstream keep-alive): the same network work as
//!    an on-demand probe, done by a C event loop with nothing else to do: the
//!    limit of this machine for "answer a request with a fresh connection";
//! 3. `prometheus-blackbox-exporter` `/probe?module=http_2xx&target=...` (Debian's
//!    0.23): one http_2xx check of nginx per request;
//! 4. sonde `POST /api/v1/probes/web/run` (bearer token, rate limit off): one
//!    `http` probe run of nginx per request, answered with the result JSON.
//!
//! Each probe request opens a fresh connection to nginx in all three. Reported:
//! requests/s and p99 latency from `wrk --latency` and the CPU time (user +
//! system, `/proc`) the serving process (nginx: master and workers) spent per
//! request, median of 3 rounds (the rows take turns in each round), and the
//! ratios sonde/blackbox and sonde/limit.
//!
//! Run: `cargo bench --bench api` (needs nginx, wrk, prometheus-blackbox-exporter).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/proc.rs"]
mod proc;
use proc::{tree_cpu_seconds, Reaped};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// One wrk run against one row's server.
struct WrkRun {
    rps: f64,
    p99_ms: f64,
    non2xx: u64,
    /// CPU time the serving process (tree) spent per request, microseconds.
    cpu_us: f64,
}

fn wrk(url: &str, secs: u64, script: Option<&Path>, server: u32) -> WrkRun {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c32", &format!("-d{secs}s"), "--latency"]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let cpu0 = tree_cpu_seconds(server);
    let out = cmd.arg(url).output().expect("wrk");
    let cpu = tree_cpu_seconds(server) - cpu0;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    // "  63339 requests in 10.00s, 1.25MB read"
    let requests: f64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk output:\n{text}"));
    let p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| ms(v.trim()))
        .unwrap_or(f64::NAN);
    let non2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    WrkRun {
        rps,
        p99_ms,
        non2xx,
        cpu_us: cpu / requests * 1e6,
    }
}

/// An nginx config in `dir`: `workers` worker processes, one server on
/// `port` whose `location /` is `location`.
fn nginx_conf(dir: &Path, workers: u32, port: u16, location: &str) -> std::path::PathBuf {
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes {workers};\npid {pid};\nerror_log {err} warn;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {tmp};\n  proxy_temp_path {tmp};\n  fastcgi_temp_path {tmp};\n  uwsgi_temp_path {tmp};\n  scgi_temp_path {tmp};\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{ {location} }}\n  }}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            err = dir.join("nginx.err").display(),
            tmp = dir.display(),
        ),
    )
    .unwrap();
    conf
}

fn start_nginx(dir: &Path, conf: &Path) -> Reaped {
    spawn(
        Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(conf)
            .arg("-p")
            .arg(dir),
    )
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
    // nginx, the target
    let nginx_port = free_port();
    let conf = nginx_conf(d, 1, nginx_port, "return 200 \"ok\\n\";");
    let nginx = start_nginx(d, &conf);
    let target = format!("http://127.0.0.1:{nginx_port}/");
    wait_ready(&target);
    // nginx, the reverse proxy: a fresh upstream connection per request
    let proxy_dir = d.join("proxy");
    std::fs::create_dir(&proxy_dir).unwrap();
    let proxy_port = free_port();
    let conf = nginx_conf(
        &proxy_dir,
        2,
        proxy_port,
        &format!("proxy_pass http://127.0.0.1:{nginx_port};"),
    );
    let proxy = start_nginx(&proxy_dir, &conf);
    let proxy_url = format!("http://127.0.0.1:{proxy_port}/");
    wait_ready(&proxy_url);
    // blackbox_exporter
    let bb_port = free_port();
    std::fs::write(
        d.join("blackbox.yml"),
        "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n",
    )
    .unwrap();
    let bb = spawn(
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
    let sonde = spawn(
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
    let none: Option<&Path> = None;
    let rows = [
        ("nginx directly (ceiling)", &target, none, nginx.0.id()),
        (
            "nginx proxy, fresh conn (limit)",
            &proxy_url,
            none,
            proxy.0.id(),
        ),
        ("blackbox_exporter /probe", &bb_url, none, bb.0.id()),
        (
            "sonde POST .../run",
            &sonde_url,
            Some(script.as_path()),
            sonde.0.id(),
        ),
    ];
    let mut runs: Vec<Vec<WrkRun>> = rows.iter().map(|_| Vec::new()).collect();
    for _ in 0..3 {
        for (i, (_, url, script, pid)) in rows.iter().enumerate() {
            runs[i].push(wrk(url, secs, *script, *pid));
        }
    }
    println!("on-demand http probes of a loopback nginx, wrk -t2 -c32 -d{secs}s, median of 3");
    let mut med = Vec::new();
    for ((name, ..), runs) in rows.iter().zip(&runs) {
        let rps = median(runs.iter().map(|r| r.rps).collect());
        let p99 = median(runs.iter().map(|r| r.p99_ms).collect());
        let cpu = median(runs.iter().map(|r| r.cpu_us).collect());
        let errors: u64 = runs.iter().map(|r| r.non2xx).sum();
        println!(
            "  {name:<32} {rps:>9.0} req/s   p99 {p99:>7.2} ms   CPU {cpu:>6.1} us/req   non-2xx {errors}"
        );
        med.push((rps, p99, cpu));
    }
    let [_, limit, bb, sonde] = [med[0], med[1], med[2], med[3]];
    println!(
        "  sonde/blackbox: {:.2}x the probes per second (issue 9's target >= 5x), p99 {:.2} vs {:.2} ms (target <= 5 ms), {:.2}x less CPU per probe",
        sonde.0 / bb.0,
        sonde.1,
        bb.1,
        bb.2 / sonde.2
    );
    println!(
        "  sonde/limit: {:.2} of the proxy's requests per second, {:.2}x its CPU per request; the limit is {:.2}x blackbox",
        sonde.0 / limit.0,
        sonde.2 / limit.2,
        limit.0 / bb.0
    );
}
