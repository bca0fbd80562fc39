//! Scheduler overhead with 10,000 probes of a no-op kind, on the real clock.
//!
//! Phase 1 (busy): 10,000 probes `every = 10s` (1,000 fires a second, spread by
//! the splay) for `SONDE_BENCH_SECS` (default 30) seconds. Reports start lateness
//! (run start versus the due instant) p50/p99/max, CPU used as a share of one core,
//! and peak RSS. The same run measures the floor: 10,000 bare tokio tasks sleeping
//! to the same kind of instants (no scheduler), so the ratio shows what sonde adds.
//! Phase 2 (idle): 10,000 probes that do not fire during the window (it starts
//! once each has had its first run, within a minute of the start); CPU share.
//!
//! Run: `cargo bench --bench scheduler` (release build).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sonde::clock::{Clock, SystemClock};
use sonde::outcome::{Outcome, Probe, ProbeContext};
use sonde::runner::Target;
use sonde::schedule::Schedule;
use sonde::scheduler::{Scheduled, Scheduler};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const PROBES: usize = 10_000;

struct Noop;

impl Probe for Noop {
    fn run<'a>(&'a self, _ctx: &'a ProbeContext) -> BoxFuture<'a, Outcome> {
        Box::pin(async { Outcome::ok("noop") })
    }
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, from /proc/self/stat (fields 14 and 15).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ is 100 on Linux
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn probes(schedule: impl Fn(&str) -> Schedule) -> Vec<Scheduled> {
    (0..PROBES)
        .map(|i| {
            let name = format!("noop-{i:05}");
            Scheduled {
                schedule: schedule(&name),
                target: Target {
                    name: name.as_str().into(),
                    kind: "noop",
                    health_set: "bench".into(),
                    timeout: Duration::from_secs(5),
                    retries: 0,
                    probe: Arc::new(Noop),
                },
            }
        })
        .collect()
}

async fn busy(secs: u64) -> (Vec<Duration>, f64) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let sched = Scheduler::new(clock, 64, Duration::from_secs(5));
    let (tx, mut rx) = mpsc::channel::<sonde::outcome::RunRecord>(4096);
    let shutdown = CancellationToken::new();
    let list = probes(|n| Schedule::every(Duration::from_secs(10), n));
    let stop = shutdown.clone();
    let collect = tokio::spawn(async move {
        let mut lateness = Vec::new();
        while let Some(r) = rx.recv().await {
            lateness.push(r.lateness);
        }
        lateness
    });
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.cancel();
    });
    sched.run(list, tx, shutdown).await;
    let cpu = (cpu_seconds() - cpu0) / wall0.elapsed().as_secs_f64();
    let mut lateness = collect.await.unwrap();
    lateness.sort();
    (lateness, cpu)
}

/// The floor: bare tokio tasks sleeping to wall-clock-aligned instants, same count
/// and rate, measuring their own wake-up lateness with the same clock.
async fn floor(secs: u64) -> Vec<Duration> {
    let clock = SystemClock;
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut handles = Vec::new();
    for i in 0..PROBES {
        let schedule = Schedule::every(Duration::from_secs(10), &format!("noop-{i:05}"));
        let tx = tx.clone();
        let stop = shutdown.clone();
        handles.push(tokio::spawn(async move {
            let mut after = clock.now();
            loop {
                let due = schedule.next_after(after).unwrap();
                let wait = (due - clock.now()).to_std().unwrap_or_default();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                let late = (clock.now() - due).to_std().unwrap_or_default();
                let _ = tx.send(late);
                after = due;
            }
        }));
    }
    drop(tx);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    shutdown.cancel();
    for h in handles {
        let _ = h.await;
    }
    let mut out = Vec::new();
    while let Ok(l) = rx.try_recv() {
        out.push(l);
    }
    out.sort();
    out
}

async fn idle(secs: u64) -> f64 {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let sched = Scheduler::new(clock, 64, Duration::from_secs(5));
    let (tx, mut rx) = mpsc::channel::<sonde::outcome::RunRecord>(16);
    let shutdown = CancellationToken::new();
    // Fires once a year: after its first run (within a minute of the start,
    // `Schedule::start`), never during the window.
    let list = probes(|_| Schedule::cron("0 0 0 1 1 *").unwrap());
    let stop = shutdown.clone();
    let handle = tokio::spawn(async move { sched.run(list, tx, stop).await });
    // The first runs must be drained (a full channel would hold every run, and
    // the shutdown, on its send); the window starts once all have come in.
    let (first_done, all_first) = tokio::sync::oneshot::channel();
    let drain = tokio::spawn(async move {
        let mut first_done = Some(first_done);
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
            if n == PROBES {
                if let Some(done) = first_done.take() {
                    let _ = done.send(());
                }
            }
        }
        n
    });
    let _ = all_first.await;
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let cpu = (cpu_seconds() - cpu0) / wall0.elapsed().as_secs_f64();
    shutdown.cancel();
    handle.await.unwrap();
    let runs = drain.await.unwrap();
    assert_eq!(runs, PROBES, "one run each, none in the window");
    cpu
}

fn main() {
    let secs: u64 = std::env::var("SONDE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (lateness, cpu_busy) = rt.block_on(busy(secs));
    // Peak so far is the scheduler's own phase (the floor phase comes after).
    let rss = peak_rss_mib();
    let floor = rt.block_on(floor(secs));
    let cpu_idle = rt.block_on(idle(secs));
    let (p50, p99) = (percentile(&lateness, 0.5), percentile(&lateness, 0.99));
    let (f50, f99) = (percentile(&floor, 0.5), percentile(&floor, 0.99));
    println!("scheduler: {PROBES} no-op probes, every 10s, {secs}s window");
    println!(
        "  sonde  runs {:>7}  lateness p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  cpu {:.1}% of a core",
        lateness.len(),
        ms(p50),
        ms(p99),
        ms(*lateness.last().unwrap_or(&Duration::ZERO)),
        cpu_busy * 100.0
    );
    println!(
        "  floor  wakes {:>6}  lateness p50 {:.3} ms  p99 {:.3} ms  (bare tokio timers)",
        floor.len(),
        ms(f50),
        ms(f99)
    );
    println!(
        "  ratio  p99 sonde/floor {:.2}",
        ms(p99) / ms(f99).max(0.001)
    );
    println!(
        "  idle   cpu {:.2}% of a core between fires",
        cpu_idle * 100.0
    );
    println!("  peak RSS {rss:.1} MiB (process peak after the busy phase)");
}
