//! Alerting benchmarks, each compared in the same run with the floor it cannot beat.
//!
//! 1. Detection to delivery: the agent (`agent::run_with`, the real scheduler,
//!    runner, monitors, SQLite store and dispatcher) runs 1,000 `http` probes
//!    `every = "1s"` against a loopback target; from t = 3 s, 100 more probes a
//!    second start failing (`failure_threshold = 1`). Latency = the webhook
//!    receiver's clock at arrival minus the end of the result that crossed the
//!    threshold. Floor: the same receiver's latency for plain POSTs from a reqwest
//!    client in the same process (no store, no monitor).
//! 2. Outbox throughput: 20,000 transitions through `Engine::on_outcome` (40,000
//!    results, every other one a transition; each result, its monitor state and
//!    its alert are written in one SQLite transaction),
//!    delivered in order by the dispatcher to a loopback webhook. The SQLite write
//!    cost is timed alone first (no delivery), then persist + deliver together.
//!    Floor: sequential POSTs of the same payloads to the same receiver.
//!
//! Run: `cargo bench --bench alerting` (release build).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use sonde::alert::engine::Engine;
use sonde::alert::outbox::Dispatcher;
use sonde::channel::Channel;
use sonde::clock::SystemClock;
use sonde::config::Loader;
use sonde::outcome::{Category, Outcome};
use sonde::store::Store;
use sonde::telemetry::metrics::Metrics;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

type Arrivals = Arc<Mutex<Vec<(String, DateTime<Utc>)>>>;

/// A webhook receiver that notes each alert key and its arrival time.
async fn receiver(count: Arc<AtomicUsize>) -> (String, Arrivals) {
    let arrivals: Arrivals = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State((a, n)): State<(Arrivals, Arc<AtomicUsize>)>, headers: HeaderMap| async move {
                    let now = Utc::now();
                    let key = headers
                        .get("x-sonde-alert-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    n.fetch_add(1, Ordering::Relaxed);
                    a.lock().unwrap().push((key, now));
                    StatusCode::OK
                },
            ),
        )
        .with_state((arrivals.clone(), count));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}/hook"), arrivals)
}

/// Targets `/p/{i}`: 200, or 500 once probe `i` is marked failing.
async fn targets(failing: Arc<Vec<AtomicBool>>) -> String {
    let app = Router::new()
        .route(
            "/p/{i}",
            get(
                |State(f): State<Arc<Vec<AtomicBool>>>, Path(i): Path<usize>| async move {
                    if f.get(i).is_some_and(|b| b.load(Ordering::Relaxed)) {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                },
            ),
        )
        .with_state(failing);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

const PROBES: usize = 1000;

async fn detection_to_delivery() -> (Vec<f64>, Vec<f64>) {
    let failing: Arc<Vec<AtomicBool>> =
        Arc::new((0..PROBES).map(|_| AtomicBool::new(false)).collect());
    let base = targets(failing.clone()).await;
    let (hook, arrivals) = receiver(Arc::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut toml = format!("[store]\npath = \"sonde.db\"\n\n[[channel]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{hook}\"\n");
    for i in 0..PROBES {
        toml.push_str(&format!(
            "\n[[probe]]\nname = \"p{i}\"\nkind = \"http\"\nurl = \"{base}/p/{i}\"\nevery = \"1s\"\ntimeout = \"5s\"\nfailure_threshold = 1\nalert = [\"hook\"]\n"
        ));
    }
    let path = dir.path().join("sonde.toml");
    std::fs::write(&path, toml).unwrap();
    let config = Loader { env: &|_| None }.load(&path).unwrap();
    // The end of each probe's first failing result.
    let first_bad: Arc<Mutex<HashMap<String, DateTime<Utc>>>> = Arc::default();
    let fb = first_bad.clone();
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(sonde::agent::run_with(
        config,
        Arc::new(SystemClock),
        shutdown.clone(),
        move |r| {
            if r.outcome.status != sonde::outcome::Status::Ok {
                let end =
                    r.outcome.started_at + chrono::Duration::from_std(r.outcome.duration).unwrap();
                fb.lock().unwrap().entry(r.probe.to_string()).or_insert(end);
            }
        },
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    for wave in 0..10 {
        for i in wave * 100..(wave + 1) * 100 {
            failing[i].store(true, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    shutdown.cancel();
    agent.await.unwrap().unwrap();
    let bad = first_bad.lock().unwrap().clone();
    let mut lat: Vec<f64> = arrivals
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(key, at)| {
            let probe = key.split(':').next()?;
            let end = bad.get(probe)?;
            Some((*at - *end).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // Floor: plain POSTs to a fresh receiver, timed the same way.
    let (hook2, arrivals2) = receiver(Arc::default()).await;
    let client = reqwest::Client::new();
    let mut sent = Vec::new();
    for i in 0..PROBES {
        let start = Utc::now();
        client
            .post(&hook2)
            .header("x-sonde-alert-key", format!("f{i}"))
            .body("{}")
            .send()
            .await
            .unwrap();
        sent.push(start);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut floor: Vec<f64> = arrivals2
        .lock()
        .unwrap()
        .iter()
        .map(|(k, at)| {
            let i: usize = k[1..].parse().unwrap();
            (*at - sent[i]).num_microseconds().unwrap() as f64 / 1000.0
        })
        .collect();
    floor.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (lat, floor)
}

const TRANSITIONS: usize = 20_000;
static DELIVER_ONLY: Mutex<Vec<f64>> = Mutex::new(Vec::new());

async fn throughput() -> (f64, f64, f64) {
    let count = Arc::new(AtomicUsize::new(0));
    let (hook, _) = receiver(count.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut toml = format!("[[channel]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{hook}\"\n");
    for i in 0..100 {
        toml.push_str(&format!(
            "\n[[probe]]\nname = \"p{i}\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\nfailure_threshold = 1\nsuccess_threshold = 1\nnotify_resolved = true\nflap_high = 100\nflap_low = 99\nalert = [\"hook\"]\n"
        ));
    }
    let path = dir.path().join("sonde.toml");
    std::fs::write(&path, toml).unwrap();
    let config = Arc::new(Loader { env: &|_| None }.load(&path).unwrap());
    let outcome = |i: usize, t: DateTime<Utc>| {
        let mut o = if (i / 200).is_multiple_of(2) {
            Outcome::critical(Category::Network, "refused")
        } else {
            Outcome::ok("fine")
        };
        o.started_at = t;
        o
    };
    // Result times lie in the past: alerts are due at once, as in a backlog.
    let t0 = Utc::now() - chrono::Duration::seconds(120);
    // a) SQLite write cost alone: transitions persisted, nothing delivered.
    let store = Arc::new(Store::open(&dir.path().join("persist.db")).unwrap());
    let mut engine = Engine::new(
        config.clone(),
        store.clone(),
        HashMap::new(),
        Arc::new(Notify::new()),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    let start = Instant::now();
    let mut raised = 0;
    for i in 0..2 * TRANSITIONS {
        let t = t0 + chrono::Duration::milliseconds(i as i64);
        raised += engine
            .on_outcome(&format!("p{}", i % 100), &outcome(i, t), t)
            .unwrap()
            .len();
    }
    assert_eq!(raised, TRANSITIONS);
    let persist_rate = TRANSITIONS as f64 / start.elapsed().as_secs_f64();
    // a') delivery alone: the dispatcher drains what (a) persisted.
    {
        let spec = &config.channels[0];
        let channel = Arc::new(Channel::new(&spec.name, &spec.spec, dir.path()).unwrap());
        let stop = CancellationToken::new();
        let before = count.load(Ordering::Relaxed);
        let start = Instant::now();
        let d = tokio::spawn(
            Dispatcher {
                metrics: Arc::new(Metrics::new()),
                store: store.clone(),
                channels: vec![channel],
                clock: Arc::new(SystemClock),
                wake: Arc::new(Notify::new()),
                unhealthy_after: Duration::from_secs(300),
            }
            .run(stop.clone()),
        );
        while count.load(Ordering::Relaxed) < before + TRANSITIONS {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        DELIVER_ONLY
            .lock()
            .unwrap()
            .push(TRANSITIONS as f64 / start.elapsed().as_secs_f64());
        stop.cancel();
        let _ = d.await;
        count.fetch_sub(TRANSITIONS, Ordering::Relaxed);
    }
    // b) persisted and delivered, in order, to the loopback webhook.
    let store = Arc::new(Store::open(&dir.path().join("deliver.db")).unwrap());
    let wake = Arc::new(Notify::new());
    let mut engine = Engine::new(
        config.clone(),
        store.clone(),
        HashMap::new(),
        wake.clone(),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    let spec = &config.channels[0];
    let channel = Arc::new(Channel::new(&spec.name, &spec.spec, dir.path()).unwrap());
    let stop = CancellationToken::new();
    let dispatcher = tokio::spawn(
        Dispatcher {
            metrics: Arc::new(Metrics::new()),
            store: store.clone(),
            channels: vec![channel],
            clock: Arc::new(SystemClock),
            wake,
            unhealthy_after: Duration::from_secs(300),
        }
        .run(stop.clone()),
    );
    let start = Instant::now();
    let producer = tokio::task::spawn_blocking(move || {
        for i in 0..2 * TRANSITIONS {
            let t = t0 + chrono::Duration::milliseconds(i as i64);
            engine
                .on_outcome(&format!("p{}", i % 100), &outcome(i, t), t)
                .unwrap();
        }
    });
    while count.load(Ordering::Relaxed) < TRANSITIONS {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let end_to_end = TRANSITIONS as f64 / start.elapsed().as_secs_f64();
    producer.await.unwrap();
    stop.cancel();
    let _ = dispatcher.await;
    // Floor: the same number of sequential POSTs with the same client settings.
    let n2 = Arc::new(AtomicUsize::new(0));
    let (hook2, _) = receiver(n2.clone()).await;
    let client = reqwest::Client::new();
    let body =
        serde_json::json!({"version": "1", "key": "p1:1:firing", "summary": "refused"}).to_string();
    let start = Instant::now();
    for i in 0..TRANSITIONS {
        client
            .post(&hook2)
            .header("x-sonde-alert-key", i.to_string())
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
    }
    let floor = TRANSITIONS as f64 / start.elapsed().as_secs_f64();
    (persist_rate, end_to_end, floor)
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (lat, floor) = rt.block_on(detection_to_delivery());
    println!(
        "detection to delivery, {PROBES} http probes every 1s, {} alerts",
        lat.len()
    );
    println!(
        "  sonde  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms   (target p99 < 50 ms)",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
    println!(
        "  floor: plain POST  p50 {:.2} ms  p99 {:.2} ms",
        pct(&floor, 0.5),
        pct(&floor, 0.99)
    );
    println!(
        "  ratio p99 sonde/floor {:.1}",
        pct(&lat, 0.99) / pct(&floor, 0.99)
    );
    let mut runs: Vec<(f64, f64, f64)> = (0..3).map(|_| rt.block_on(throughput())).collect();
    let med = |f: &dyn Fn(&(f64, f64, f64)) -> f64, runs: &mut Vec<(f64, f64, f64)>| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let persist = med(&|r| r.0, &mut runs);
    let e2e = med(&|r| r.1, &mut runs);
    let fl = med(&|r| r.2, &mut runs);
    println!("outbox throughput, {TRANSITIONS} transitions, median of 3");
    println!(
        "  persisted only (SQLite: result + state + alert per transaction)  {persist:>8.0} /s"
    );
    println!("  persisted and delivered in order to a loopback webhook          {e2e:>8.0} /s   (target > 2,000/s)");
    let mut d = DELIVER_ONLY.lock().unwrap().clone();
    d.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "  delivered only (outbox drained, in order)                       {:>8.0} /s",
        d[d.len() / 2]
    );
    println!("  floor: sequential POSTs, no store                                {fl:>8.0} /s");
    println!("  ratio floor/sonde {:.2}", fl / e2e);
}
