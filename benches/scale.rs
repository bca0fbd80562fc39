//! The agent at the size its users reach, with real probes, as a user runs it:
//! the release `sonde run` as a child process, measured from outside.
//!
//! A loopback nginx (Debian's; generated config in a temp dir) answers any path
//! with 200 over http, and over https with an openssl-made ECDSA server
//! certificate signed by an openssl-made CA.
//! Phases (pick some with `SONDE_SCALE_ONLY=build,load,http,certificate,peers,views`):
//!
//! 0. `build`: in this process, through the library: the resident memory that
//!    10,000 built `http` probes and 10,000 built `certificate` probes (an
//!    endpoint, verified with the system roots) add, per probe.
//! 1. `load`: `sonde validate` of 10,000 and 100,000 `http` probes (wall time;
//!    a run is stopped after `SONDE_SCALE_LOAD_LIMIT`, default 60, seconds).
//! 2. `http`: 10,000 `http` probes `every = "10s"` (1,000 runs/s) against nginx.
//! 3. `certificate`: 10,000 `certificate` probes of nginx's https endpoint
//!    (`ca_file` trusting its CA) `every = "30s"` (333 handshakes/s); the
//!    phase fails if a probe run failed.
//! 4. `peers`: 1,000 `http` probes `every = "1s"`, and in the same run
//!    blackbox_exporter (Debian's) with a Prometheus (Debian's) scraping
//!    `/probe?module=http_2xx` for the same 1,000 nginx URLs every 1 s.
//! 5. `views`: 10,000 and then 100,000 `http` probes `every = "1h"` in 100
//!    health sets; once every probe has its first result (within 60 s of the
//!    start), the wall time of `GET /metrics`, `GET /api/v1/probes`,
//!    `GET /api/v1/health`, `GET /` (the status page) and `POST /-/reload`
//!    (the same config), median of 3, the peak RSS after each, and the ratio
//!    of the two sizes: 10 is linear, 100 quadratic.
//!
//! For each agent phase: a warm-up (`SONDE_SCALE_WARMUP`, default 15 s, at
//! least 32 s for certificates; every probe has run by then), then a window of `SONDE_SCALE_SECS` (default 20) s.
//! Reported per process: peak RSS (VmHWM of /proc/PID/status; for sonde both
//! at the end of the warm-up, before anything reads `/metrics`, and at the end), CPU
//! over the window as a share of one core (utime+stime of /proc/PID/stat), and
//! for sonde the runs/s (`sonde_probe_runs_total`), CPU per 1,000 runs/s, and
//! the scheduler lateness p99 (the upper bound of the bucket of
//! `sonde_scheduler_lateness_seconds` holding the 99th percentile of the
//! window's runs). `/metrics` is read twice per window.
//!
//! Run: `cargo bench --bench scale` (release build; needs nginx, openssl,
//! prometheus, prometheus-blackbox-exporter).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/proc.rs"]
mod proc;
use proc::{cpu_seconds, Reaped};

const SONDE: &str = env!("CARGO_BIN_EXE_sonde");

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(cmd: &mut Command, log: &Path) -> Reaped {
    let err = std::fs::File::create(log).unwrap();
    Reaped(
        cmd.stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")),
    )
}

/// Peak resident set (VmHWM) of a process, MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Current resident set (VmRSS) of a process, MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// The body of a plain HTTP/1.0 GET, or "" when nothing answered.
fn get(port: u16, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    match text.split_once("\r\n\r\n") {
        Some((_, body)) => body.to_string(),
        None => String::new(),
    }
}

/// `POST path` with a bearer token: the status code.
fn post(port: u16, path: &str, token: &str) -> u16 {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn wait_for(what: &str, port: u16, path: &str) {
    let start = Instant::now();
    while get(port, path).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} never answered on port {port}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What sonde's `/metrics` says at one instant: total runs and the cumulative
/// lateness buckets (upper bound, count).
struct Scrape {
    runs: f64,
    lateness: Vec<(f64, f64)>,
}

fn scrape(port: u16) -> Scrape {
    let text = get(port, "/metrics");
    let value = |line: &str| {
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let runs = text
        .lines()
        .filter(|l| l.starts_with("sonde_probe_runs_total{"))
        .map(value)
        .sum();
    let lateness = text
        .lines()
        .filter(|l| l.starts_with("sonde_scheduler_lateness_seconds_bucket{"))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, value(l)))
        })
        .collect();
    Scrape { runs, lateness }
}

/// The upper bound of the bucket holding the 99th percentile of the runs
/// between two scrapes.
fn lateness_p99(before: &Scrape, after: &Scrape) -> f64 {
    let counts: Vec<(f64, f64)> = after
        .lateness
        .iter()
        .map(|&(le, n)| {
            let was = before
                .lateness
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0.0, |&(_, n)| n);
            (le, n - was)
        })
        .collect();
    let total = counts.last().map_or(0.0, |&(_, n)| n);
    counts
        .iter()
        .find(|&&(_, n)| n >= 0.99 * total)
        .map_or(f64::NAN, |&(le, _)| le)
}

struct Nginx {
    _child: Reaped,
    http: u16,
    https: u16,
}

fn nginx(d: &Path) -> Nginx {
    // A CA and a server certificate it signs (a self-signed one is a CA used
    // as end entity, which verification rejects: every run would fail).
    std::fs::write(
        d.join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    for args in [
        format!("req -x509 {ec} -keyout ca.key -out ca.pem -days 400 -subj /CN=sonde-scale-CA"),
        format!("req {ec} -keyout key.pem -out leaf.csr -subj /CN=localhost"),
        "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 400 \
         -extfile leaf.ext -out cert.pem"
            .to_string(),
    ] {
        let out = Command::new("openssl")
            .current_dir(d)
            .args(args.split_whitespace())
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (http, https) = (free_port(), free_port());
    std::fs::write(
        d.join("nginx.conf"),
        format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx.err warn;\n\
             events {{ worker_connections 8192; }}\nhttp {{\n  access_log off;\n\
             client_body_temp_path {d};\n  proxy_temp_path {d};\n  fastcgi_temp_path {d};\n\
             uwsgi_temp_path {d};\n  scgi_temp_path {d};\n  server {{\n\
             listen 127.0.0.1:{http};\n    listen 127.0.0.1:{https} ssl;\n\
             ssl_certificate {d}/cert.pem;\n    ssl_certificate_key {d}/key.pem;\n\
             location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
            d = d.display(),
        ),
    )
    .unwrap();
    let child = spawn(
        Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-p")
            .arg(d)
            .arg("-e")
            .arg(d.join("nginx.stderr")),
        &d.join("nginx.log"),
    );
    wait_for("nginx", http, "/");
    Nginx {
        _child: child,
        http,
        https,
    }
}

/// A config of `n` probes made by `probe(i)`, with the API on `api` and the
/// store in `dir`.
fn write_config(dir: &Path, file: &str, api: u16, n: usize, probe: impl Fn(usize) -> String) {
    let mut toml = format!(
        "[agent]\nmax_concurrent = 256\n\n[store]\npath = \"{file}.db\"\n\n\
         [api]\nlisten = \"127.0.0.1:{api}\"\n\n[telemetry]\nlog_level = \"warn\"\n\n"
    );
    for i in 0..n {
        toml.push_str(&probe(i));
    }
    std::fs::write(dir.join(file), toml).unwrap();
}

fn start_sonde(dir: &Path, file: &str, api: u16) -> Reaped {
    let child = spawn(
        Command::new(SONDE)
            .current_dir(dir)
            .args(["run", "--config", file])
            .env_remove("RUST_LOG"),
        &dir.join(format!("{file}.log")),
    );
    wait_for("sonde", api, "/healthz");
    child
}

/// One process's figures over a window.
struct Usage {
    name: &'static str,
    pid: u32,
    cpu0: f64,
}

impl Usage {
    fn start(name: &'static str, pid: u32) -> Usage {
        Usage {
            name,
            pid,
            cpu0: cpu_seconds(pid),
        }
    }

    /// (name, CPU share of one core, peak RSS MiB).
    fn end(&self, secs: f64) -> (&'static str, f64, f64) {
        (
            self.name,
            (cpu_seconds(self.pid) - self.cpu0) / secs,
            peak_rss_mib(self.pid),
        )
    }
}

/// Warms up, measures a window, prints and returns sonde's line.
fn measure(label: &str, sonde: &Reaped, api: u16, others: &[(&'static str, u32)]) {
    // Every probe has run once by the end of the warm-up: the longest interval
    // (30 s, certificates) is the widest splay.
    let warmup =
        env_u64("SONDE_SCALE_WARMUP", 15).max(if label.starts_with("cert") { 32 } else { 0 });
    let secs = env_u64("SONDE_SCALE_SECS", 20);
    std::thread::sleep(Duration::from_secs(warmup));
    // What the running probes hold, before `/metrics` renders 10,000 probes'
    // series (that render is the largest single allocation of the agent).
    let running_hwm = peak_rss_mib(sonde.pid());
    let running_now = rss_mib(sonde.pid());
    let before = scrape(api);
    let start = Instant::now();
    let mut usages = vec![Usage::start("sonde", sonde.pid())];
    usages.extend(others.iter().map(|&(name, pid)| Usage::start(name, pid)));
    std::thread::sleep(Duration::from_secs(secs));
    let elapsed = start.elapsed().as_secs_f64();
    let figures: Vec<_> = usages.iter().map(|u| u.end(elapsed)).collect();
    let after = scrape(api);
    let rate = (after.runs - before.runs) / elapsed;
    let (_, cpu, rss) = figures[0];
    println!(
        "{label}: sonde RSS {running_now:.1} MiB running (peak {running_hwm:.1} MiB, loading \
         included), peak {rss:.1} MiB after two /metrics scrapes, CPU {cpu:.3} core, {rate:.0} runs/s, CPU per 1,000 runs/s {:.3} core, \
         lateness p99 <= {} s",
        cpu / (rate / 1000.0),
        lateness_p99(&before, &after)
    );
    for (name, cpu, rss) in &figures[1..] {
        println!("{label}: {name} RSS {rss:.1} MiB, CPU {cpu:.3} core");
    }
}

/// Current resident set (VmRSS) of this process, KiB.
fn rss_kib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

fn build(d: &Path, nginx: &Nginx) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n = 10_000;
    let before = rss_kib();
    let probes: Vec<sonde::probe::http::HttpProbe> = (0..n)
        .map(|i| {
            let cfg: sonde::probe::http::HttpConfig =
                toml::from_str(&format!("url = \"http://127.0.0.1:{}/h{i}\"", nginx.http)).unwrap();
            sonde::probe::http::HttpProbe::new(&cfg, d).unwrap()
        })
        .collect();
    let http = (rss_kib() - before) * 1024.0 / n as f64;
    let before = rss_kib();
    let certs: Vec<sonde::probe::certificate::CertificateProbe> = (0..n)
        .map(|i| {
            let cfg: sonde::probe::certificate::CertificateConfig = toml::from_str(&format!(
                "endpoint = \"127.0.0.{}:{}\"\nserver_name = \"localhost\"",
                1 + i % 200,
                nginx.https
            ))
            .unwrap();
            sonde::probe::certificate::CertificateProbe::new(&cfg, d).unwrap()
        })
        .collect();
    let cert = (rss_kib() - before) * 1024.0 / n as f64;
    println!(
        "build: resident memory per built probe: http {http:.0} bytes, certificate {cert:.0} bytes"
    );
    drop((probes, certs));
}

fn load(d: &Path, nginx: &Nginx) {
    for n in [10_000, 100_000] {
        let file = format!("load-{n}.toml");
        write_config(d, &file, free_port(), n, |i| {
            format!(
                "[[probe]]\nname = \"h{i:06}\"\nkind = \"http\"\nevery = \"10s\"\n\
                 url = \"http://127.0.0.1:{}/h{i}\"\n\n",
                nginx.http
            )
        });
        let limit = Duration::from_secs(env_u64("SONDE_SCALE_LOAD_LIMIT", 60));
        let start = Instant::now();
        let mut child = Command::new(SONDE)
            .current_dir(d)
            .args(["validate", "--config", &file])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sonde validate");
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = start.elapsed().as_secs_f64();
        match status {
            Some(status) => {
                assert!(status.success(), "sonde validate refused {file}");
                println!("load: sonde validate of {n} http probes: {took:.2} s");
            }
            None => println!(
                "load: sonde validate of {n} http probes: stopped after {} s",
                limit.as_secs()
            ),
        }
    }
}

fn http(d: &Path, nginx: &Nginx) {
    let api = free_port();
    write_config(d, "http.toml", api, 10_000, |i| {
        format!(
            "[[probe]]\nname = \"h{i:05}\"\nkind = \"http\"\nevery = \"10s\"\n\
             url = \"http://127.0.0.1:{}/h{i}\"\n\n",
            nginx.http
        )
    });
    let sonde = start_sonde(d, "http.toml", api);
    measure("http x10000 every 10s", &sonde, api, &[]);
}

fn certificate(d: &Path, nginx: &Nginx) {
    let api = free_port();
    write_config(d, "cert.toml", api, 10_000, |i| {
        format!(
            "[[probe]]\nname = \"c{i:05}\"\nkind = \"certificate\"\nevery = \"30s\"\n\
             endpoint = \"127.0.0.1:{}\"\nserver_name = \"localhost\"\nca_file = \"ca.pem\"\n\n",
            nginx.https
        )
    });
    let sonde = start_sonde(d, "cert.toml", api);
    measure("certificate x10000 every 30s", &sonde, api, &[]);
    // The figures are of healthy probes: a failing run logs an error.
    let log = std::fs::read_to_string(d.join("cert.toml.log")).unwrap_or_default();
    assert!(
        !log.contains("probe failed"),
        "certificate probes failed: {}",
        log.lines()
            .find(|l| l.contains("probe failed"))
            .unwrap_or("")
    );
}

fn peers(d: &Path, nginx: &Nginx) {
    let api = free_port();
    let url = |i: usize| format!("http://127.0.0.1:{}/p{i}", nginx.http);
    write_config(d, "peers.toml", api, 1_000, |i| {
        format!(
            "[[probe]]\nname = \"p{i:04}\"\nkind = \"http\"\nevery = \"1s\"\nurl = \"{}\"\n\n",
            url(i)
        )
    });
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
        &d.join("blackbox.log"),
    );
    wait_for("blackbox_exporter", bb_port, "/metrics");
    let prom_port = free_port();
    let targets: Vec<String> = (0..1_000).map(|i| format!("'{}'", url(i))).collect();
    std::fs::write(
        d.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n\
             - job_name: blackbox\n  metrics_path: /probe\n  params:\n    module: [http_2xx]\n\
             \x20 static_configs:\n  - targets: [{}]\n  relabel_configs:\n\
             \x20 - source_labels: [__address__]\n    target_label: __param_target\n\
             \x20 - source_labels: [__param_target]\n    target_label: instance\n\
             \x20 - target_label: __address__\n    replacement: 127.0.0.1:{bb_port}\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let prom = spawn(
        Command::new("/usr/bin/prometheus")
            .arg(format!(
                "--config.file={}",
                d.join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", d.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}")),
        &d.join("prometheus.log"),
    );
    wait_for("prometheus", prom_port, "/-/ready");
    let sonde = start_sonde(d, "peers.toml", api);
    measure(
        "peers x1000 every 1s",
        &sonde,
        api,
        &[("blackbox_exporter", bb.pid()), ("prometheus", prom.pid())],
    );
    let up = get(prom_port, "/api/v1/query?query=count(probe_success%3D%3D1)");
    println!("peers: Prometheus sees probe_success == 1 for: {up}");
}

/// Wall time (median of 3, ms) and size of what `f` answers.
fn timed(f: impl Fn() -> usize) -> (f64, usize) {
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..3 {
        let start = Instant::now();
        size = f();
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (times[1], size)
}

fn views(d: &Path, nginx: &Nginx) {
    const TOKEN: &str = "scale-token-0123456789";
    std::fs::write(d.join("api.token"), format!("{TOKEN}\n")).unwrap();
    let names = [
        "/metrics",
        "/api/v1/probes",
        "/api/v1/health",
        "/ (status page)",
        "reload",
    ];
    let mut figures: Vec<Vec<f64>> = Vec::new();
    for n in [10_000usize, 100_000] {
        let api = free_port();
        let file = format!("views{n}.toml");
        write_config(d, &file, api, n, |i| {
            format!(
                "[[probe]]\nname = \"v{i:06}\"\nkind = \"http\"\nevery = \"1h\"\n\
                 health_set = \"set{}\"\nurl = \"http://127.0.0.1:{}/v{i}\"\n\n",
                i % 100,
                nginx.http
            )
        });
        let path = d.join(&file);
        let text = std::fs::read_to_string(&path).unwrap().replacen(
            "[api]\n",
            "[api]\ntoken_file = \"api.token\"\n",
            1,
        );
        std::fs::write(&path, text).unwrap();
        let started = Instant::now();
        let sonde = start_sonde(d, &file, api);
        // Every probe has its first result within 60 s of the start.
        let runs = loop {
            std::thread::sleep(Duration::from_secs(5));
            let runs = scrape(api).runs;
            if runs >= n as f64 || started.elapsed() > Duration::from_secs(90) {
                break runs;
            }
        };
        assert!(
            runs >= n as f64,
            "{runs} of {n} probes ran in the first 90 s"
        );
        let first = started.elapsed().as_secs_f64();
        println!(
            "views: {n} http probes, all run within {first:.0} s of the start; RSS {:.1} MiB",
            rss_mib(sonde.pid())
        );
        let mut times = Vec::new();
        for name in names {
            let (ms, size) = timed(|| match name {
                "reload" => {
                    let code = post(api, "/-/reload", TOKEN);
                    assert_eq!(code, 200, "reload of {file}");
                    0
                }
                path => get(api, path.split(' ').next().unwrap_or(path)).len(),
            });
            println!(
                "views:   {name:<16} {ms:>7.0} ms  {:>7.1} MiB  peak RSS since start {:.1} MiB",
                size as f64 / 1048576.0,
                peak_rss_mib(sonde.pid()),
            );
            times.push(ms);
        }
        figures.push(times);
    }
    let ratios: Vec<String> = names
        .iter()
        .zip(figures[1].iter().zip(&figures[0]))
        .map(|(name, (big, small))| format!("{name} {:.1}x", big / small))
        .collect();
    println!(
        "views: 100,000 / 10,000 probes (10x is linear): {}",
        ratios.join(", ")
    );
}

fn main() {
    let only = std::env::var("SONDE_SCALE_ONLY").unwrap_or_default();
    let wanted = |phase: &str| only.is_empty() || only.split(',').any(|p| p.trim() == phase);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let nginx = nginx(d);
    println!(
        "machine: {} cores; {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| format!("load average {}", l.trim()))
            .unwrap_or_default()
    );
    if wanted("build") {
        build(d, &nginx);
    }
    if wanted("load") {
        load(d, &nginx);
    }
    if wanted("http") {
        http(d, &nginx);
    }
    if wanted("certificate") {
        certificate(d, &nginx);
    }
    if wanted("peers") {
        peers(d, &nginx);
    }
    if wanted("views") {
        views(d, &nginx);
    }
}
