//! Rendering `/metrics` for 10,000 probes.
//!
//! The registry is filled through the public events, as the agent fills it:
//! every probe has run a few times (a mix of kinds, statuses and observations),
//! has a monitor state, and a few channels have delivered alerts. Then the text
//! exposition is rendered `ROUNDS` times; the median is compared, in the same
//! run, with the physical floor: copying the same lines (same bytes, same line
//! count) into a fresh `String`, which is what any renderer must at least do.
//!
//! Run: `cargo bench --bench metrics` (release build).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sonde::monitor::MonitorState;
use sonde::outcome::RunRecord;
use sonde::outcome::{Category, Outcome};
use sonde::telemetry::events::{
    AlertDeliveryAttempted, MonitorStateChanged, OutboxDepth, ProbeRunRecorded,
};
use sonde::telemetry::metrics::{DeliveryResult, Metrics};

const PROBES: usize = 10_000;
const RUNS_PER_PROBE: usize = 3;
const ROUNDS: usize = 31;
const TARGET: Duration = Duration::from_millis(50);

fn fill(metrics: &Metrics) {
    let kinds = ["http", "certificate", "metadata", "token", "push"];
    let now: DateTime<Utc> = DateTime::UNIX_EPOCH + chrono::Duration::seconds(1_780_000_000);
    for i in 0..PROBES {
        let kind = kinds[i % kinds.len()];
        let name = format!("probe-{i:05}");
        let set = format!("set-{}", i % 50);
        metrics.register_probe(&name, kind, &set);
        for run in 0..RUNS_PER_PROBE {
            let mut o = match (i + run) % 10 {
                0 => Outcome::critical(Category::Network, "connection refused"),
                1 => Outcome::warning(Category::Certificate, "expires soon"),
                _ => Outcome::ok("fine"),
            };
            o.duration =
                Duration::from_micros(1_000 + ((i * 7919 + run * 104_729) % 3_000_000) as u64);
            o.started_at = now;
            match kind {
                "http" => o.observe("status_code", 200.0),
                "certificate" => {
                    o.observe("not_after_timestamp_seconds", 1_790_000_000.0);
                    o.observe("seconds_left", 10_000_000.0 - i as f64);
                    o.observe("key_bits", 2048.0);
                }
                _ => o.observe("latency_seconds", 0.042),
            }
            let record = RunRecord {
                probe: name.as_str().into(),
                kind,
                health_set: set.as_str().into(),
                due: now,
                lateness: Duration::from_micros((i % 2_000) as u64),
                outcome: o,
            };
            ProbeRunRecorded { record: &record }.emit(metrics);
        }
        let state = if i % 10 == 0 {
            MonitorState::Unhealthy
        } else {
            MonitorState::Healthy
        };
        MonitorStateChanged {
            probe: &name,
            kind,
            health_set: &set,
            from: MonitorState::Unknown,
            to: state,
            restored: true,
        }
        .emit(metrics);
    }
    for c in ["ops-mail", "am", "hook", "teams"] {
        for (n, result) in [(40, DeliveryResult::Delivered), (3, DeliveryResult::Failed)] {
            for _ in 0..n {
                AlertDeliveryAttempted {
                    channel: c,
                    key: "k",
                    attempts: 1,
                    result,
                    error: "",
                    retry_in: None,
                }
                .emit(metrics);
            }
        }
        OutboxDepth {
            channel: c,
            depth: 2,
        }
        .emit(metrics);
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let metrics = Arc::new(Metrics::new());
    let t = Instant::now();
    fill(&metrics);
    let fill_took = t.elapsed();

    let sample = metrics.render();
    let lines: Vec<&str> = sample.lines().collect();
    let bytes = sample.len();

    let mut render = Vec::with_capacity(ROUNDS);
    let mut floor = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let out = metrics.render();
        render.push(t.elapsed());
        assert_eq!(out.len(), bytes);
        std::hint::black_box(out);

        let t = Instant::now();
        let mut out = String::with_capacity(bytes + 4096);
        for l in &lines {
            out.push_str(l);
            out.push('\n');
        }
        floor.push(t.elapsed());
        assert_eq!(out.len(), bytes);
        std::hint::black_box(out);
    }
    let (r, f) = (median(render), median(floor));
    println!(
        "metrics render: {PROBES} probes, {} lines, {:.1} MiB; filled through events in {:.0} ms",
        lines.len(),
        bytes as f64 / (1024.0 * 1024.0),
        ms(fill_took)
    );
    println!(
        "median of {ROUNDS}: render {:.2} ms, floor (copy the same lines) {:.2} ms, ratio {:.2}; target < {} ms: {}",
        ms(r),
        ms(f),
        r.as_secs_f64() / f.as_secs_f64(),
        TARGET.as_millis(),
        if r < TARGET { "met" } else { "MISSED" }
    );
}
