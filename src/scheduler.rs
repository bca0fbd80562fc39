//! The scheduler fires probes at their schedule's instants, taken from the injected
//! `Clock`, the first run of each within a minute of its start (`Schedule::start`).
//! It bounds how many run at once (one global semaphore), never lets a probe
//! overlap itself (a fire that finds the previous run still going is skipped
//! and counted), and on shutdown stops firing, lets in-flight runs finish within
//! the drain deadline, then aborts the rest. `run_replaceable` also takes new
//! probe sets while it runs (a config reload): unchanged probes keep their timing.
//!
//! One timer loop per scheduler holds every probe: a slot each (target, schedule,
//! busy flag) and a min-heap of (next instant, slot). It sleeps until the earliest
//! instant, fires the probes that are due and spawns a task only for an actual
//! run, so an idle probe costs its slot and one heap entry, not a task. Firing k
//! due probes costs O(k log n); a reload of n probes rebuilds slots and heap in
//! O(n log n) at most; nothing scans all probes on a wake-up.
//!
//! Results leave through a channel, one `RunRecord` per run: what happens to them
//! (logs, store, monitors, alerts) is not the scheduler's business.

use std::cmp::Reverse;
use std::collections::binary_heap::PeekMut;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::outcome::{Category, Outcome, RunRecord};
use crate::runner::{run_once, Target};
use crate::schedule::Schedule;
use crate::telemetry::events::{ProbeRunSkipped, ShutdownDrained};
use crate::telemetry::metrics::Metrics;

/// Each probe's next fire instant, as the scheduler published it (the API
/// shows it).
#[derive(Debug, Default)]
pub(crate) struct NextRuns(std::sync::RwLock<HashMap<Arc<str>, DateTime<Utc>>>);

impl NextRuns {
    pub(crate) fn get(&self, probe: &str) -> Option<DateTime<Utc>> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(probe)
            .copied()
    }

    fn set(&self, probe: &Arc<str>, at: DateTime<Utc>) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(probe) {
            Some(slot) => *slot = at,
            None => {
                map.insert(probe.clone(), at);
            }
        }
    }

    fn remove(&self, probes: &[Arc<str>]) {
        if probes.is_empty() {
            return;
        }
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        for probe in probes {
            map.remove(probe);
        }
    }
}

/// A probe as the scheduler sees it.
pub struct Scheduled {
    pub target: Target,
    pub schedule: Schedule,
}

/// A new probe set for a running scheduler. A probe named in `unchanged` that
/// already runs keeps its timing, its in-flight run and its skip count.
/// Any other probe of `probes` is scheduled from now, its first run within
/// `FIRST_RUN_WINDOW` as at start (a changed one still never overlaps its
/// previous version's run); a running probe absent from `probes` stops being
/// fired, and a run of it in flight finishes.
pub(crate) struct Replace {
    pub probes: Vec<Scheduled>,
    pub unchanged: HashSet<String>,
}

/// Counters, readable while the scheduler runs.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub fired: AtomicU64,
    pub skipped_overlap: AtomicU64,
    pub completed: AtomicU64,
    pub in_flight: AtomicUsize,
    pub aborted_at_shutdown: AtomicU64,
}

pub struct Scheduler {
    clock: Arc<dyn Clock>,
    max_concurrent: usize,
    drain_timeout: Duration,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    next_runs: Arc<NextRuns>,
    carry: Arc<Carry>,
}

/// What a run of the scheduler that stopped without its drain (its task
/// panicked or was dropped) leaves to the run that replaces it: the busy flags
/// of the probes whose runs are still in flight, so that the new run skips
/// them instead of overlapping, and the concurrency permits those runs hold.
/// Empty while a run goes on.
#[derive(Default)]
pub(crate) struct Carry(std::sync::Mutex<Left>);

#[derive(Default)]
struct Left {
    busy: HashMap<Arc<str>, Arc<AtomicBool>>,
    permits: Option<Arc<Semaphore>>,
}

impl Carry {
    fn take(&self) -> Left {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A run's timer, which leaves its in-flight probes to `carry` when the run
/// ends without reaching its drain.
struct Running<'a> {
    timer: Timer,
    permits: Arc<Semaphore>,
    carry: &'a Carry,
    drained: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.drained {
            return;
        }
        let busy = (self.timer.slots.iter())
            .filter(|s| s.busy.load(Ordering::SeqCst))
            .map(|s| (s.target.name.clone(), s.busy.clone()))
            .collect();
        *self.carry.0.lock().unwrap_or_else(|e| e.into_inner()) = Left {
            busy,
            permits: Some(self.permits.clone()),
        };
    }
}

impl Scheduler {
    pub fn new(clock: Arc<dyn Clock>, max_concurrent: usize, drain_timeout: Duration) -> Self {
        Scheduler {
            clock,
            max_concurrent: max_concurrent.max(1),
            drain_timeout,
            stats: Arc::new(Stats::default()),
            metrics: Arc::new(Metrics::new()),
            next_runs: Arc::default(),
            carry: Arc::default(),
        }
    }

    /// Shares `carry` with the schedulers that replace this one after a
    /// failure (the agent's supervisor makes a new one per restart).
    pub(crate) fn with_carry(mut self, carry: Arc<Carry>) -> Self {
        self.carry = carry;
        self
    }

    /// Publishes each probe's next fire instant in `next_runs`.
    pub(crate) fn with_next_runs(mut self, next_runs: Arc<NextRuns>) -> Self {
        self.next_runs = next_runs;
        self
    }

    /// Counts skipped fires in `metrics` (by default, in a registry of its own).
    pub(crate) fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    #[cfg(test)]
    pub(crate) fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` is cancelled, then drains. Returns when every run has
    /// finished or been aborted; `results` then has every record sent.
    pub async fn run(
        &self,
        probes: Vec<Scheduled>,
        results: mpsc::Sender<RunRecord>,
        shutdown: CancellationToken,
    ) {
        let (_keep, updates) = mpsc::channel(1);
        self.run_replaceable(probes, updates, results, shutdown)
            .await
    }

    /// `run`, replacing the probe set with each `Replace` received on `updates`
    /// (see `Replace` for what is kept).
    pub(crate) async fn run_replaceable(
        &self,
        probes: Vec<Scheduled>,
        mut updates: mpsc::Receiver<Replace>,
        results: mpsc::Sender<RunRecord>,
        shutdown: CancellationToken,
    ) {
        self.run_from(probes, &mut updates, results, shutdown).await
    }

    /// `run_replaceable` with a borrowed `updates`, which outlives the run
    /// (the agent restarts a scheduler that failed with the same receiver).
    pub(crate) async fn run_from(
        &self,
        probes: Vec<Scheduled>,
        updates: &mut mpsc::Receiver<Replace>,
        results: mpsc::Sender<RunRecord>,
        shutdown: CancellationToken,
    ) {
        let runs = TaskTracker::new();
        let abort = CancellationToken::new();
        // A run that replaces a failed one shares its permits and knows its
        // probes still in flight.
        let left = self.carry.take();
        let permits =
            (left.permits).unwrap_or_else(|| Arc::new(Semaphore::new(self.max_concurrent)));
        let env = Arc::new(RunEnv {
            clock: self.clock.clone(),
            permits: permits.clone(),
            results,
            stats: self.stats.clone(),
            shutdown: shutdown.clone(),
            abort: abort.clone(),
        });
        let mut running = Running {
            timer: Timer {
                busy_left: left.busy,
                ..Timer::default()
            },
            permits,
            carry: &self.carry,
            drained: false,
        };
        let timer = &mut running.timer;
        timer.replace(
            Replace {
                probes,
                unchanged: HashSet::new(),
            },
            self.clock.now(),
            &self.next_runs,
        );
        timer.busy_left = HashMap::new();
        let mut updates_open = true;
        while !shutdown.is_cancelled() {
            let now = self.clock.now();
            let fired = timer.fire_due(now, FIRE_BATCH, &env, &runs, self);
            if fired == FIRE_BATCH {
                // More may be due: let the runs just spawned and the rest of the
                // runtime go first, then carry on.
                tokio::task::yield_now().await;
                continue;
            }
            let wait = timer
                .next_due()
                .and_then(|due| (due - now).to_std().ok())
                .map_or(MAX_SLEEP, |wait| wait.min(MAX_SLEEP));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                update = updates.recv(), if updates_open => match update {
                    Some(update) => timer.replace(update, self.clock.now(), &self.next_runs),
                    // No more reloads: keep firing the probes in hand.
                    None => updates_open = false,
                },
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // The runs in flight hold the rest of `env`, and with it `results`: the
        // channel closes when the last of them ends.
        drop(env);
        running.drained = true;
        drop(running);

        let began = tokio::time::Instant::now();
        let in_flight = self.stats.in_flight.load(Ordering::SeqCst);
        runs.close();
        let aborted = if tokio::time::timeout(self.drain_timeout, runs.wait())
            .await
            .is_err()
        {
            let left = self.stats.in_flight.load(Ordering::SeqCst);
            abort.cancel();
            runs.wait().await;
            left
        } else {
            0
        };
        ShutdownDrained {
            in_flight_at_signal: in_flight,
            aborted,
            took: began.elapsed(),
        }
        .emit();
    }
}

/// The longest single sleep: the wall clock is re-read at least this often, so
/// that a step (NTP, suspend) is noticed without waiting out a long timer.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The most fires in one pass of the timer loop before it yields, so that
/// thousands of probes due at the same instant do not hold a worker thread.
const FIRE_BATCH: usize = 1024;

/// What every run of one `run_from` shares.
struct RunEnv {
    clock: Arc<dyn Clock>,
    permits: Arc<Semaphore>,
    results: mpsc::Sender<RunRecord>,
    stats: Arc<Stats>,
    /// A run still waiting for a slot when this is cancelled never starts.
    shutdown: CancellationToken,
    /// Cancelled when the drain deadline passes: runs still going end `unknown`.
    abort: CancellationToken,
}

/// One probe in the timer loop.
struct Slot {
    target: Target,
    /// What it follows after its first run (see `Schedule::start`).
    schedule: Schedule,
    /// Set while a run of the probe is in flight, this version's or, after a
    /// reload that changed it, the previous version's.
    busy: Arc<AtomicBool>,
    /// Fires skipped because the previous run was still going.
    skipped: u64,
}

/// Every probe of a scheduler, and when each fires next.
#[derive(Default)]
struct Timer {
    slots: Vec<Slot>,
    /// One entry per slot that has a next instant: (that instant, slot index).
    /// Ties fire in slot order.
    due: BinaryHeap<Reverse<(DateTime<Utc>, usize)>>,
    /// At the first `replace` of a run that replaces a failed one: the busy
    /// flags of that one's runs still in flight (see `Carry`).
    busy_left: HashMap<Arc<str>, Arc<AtomicBool>>,
}

impl Timer {
    fn next_due(&self) -> Option<DateTime<Utc>> {
        self.due.peek().map(|Reverse((due, _))| *due)
    }

    /// Takes a new probe set at `now` (see `Replace`): linear in the old and
    /// new sets, plus one `Schedule::start` per new or changed probe.
    fn replace(&mut self, update: Replace, now: DateTime<Utc>, next_runs: &NextRuns) {
        let Replace { probes, unchanged } = update;
        let mut due_of = vec![None; self.slots.len()];
        for Reverse((due, index)) in std::mem::take(&mut self.due).into_vec() {
            if let Some(d) = due_of.get_mut(index) {
                *d = Some(due);
            }
        }
        let mut old: Vec<Option<Slot>> = std::mem::take(&mut self.slots)
            .into_iter()
            .map(Some)
            .collect();
        let mut index_of: HashMap<Arc<str>, usize> = old
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((s.as_ref()?.target.name.clone(), i)))
            .collect();
        let mut slots = Vec::with_capacity(probes.len());
        let mut entries = Vec::with_capacity(probes.len());
        for p in probes {
            let index = slots.len();
            let previous = index_of
                .remove(&p.target.name)
                .and_then(|i| Some((old.get_mut(i)?.take()?, due_of.get(i).copied().flatten())));
            let (busy, skipped) = match previous {
                Some((slot, due)) if unchanged.contains(&*p.target.name) => {
                    if let Some(due) = due {
                        entries.push(Reverse((due, index)));
                    }
                    slots.push(slot);
                    continue;
                }
                // Changed: scheduled anew, but an in-flight run of the old
                // version still holds the shared `busy` flag.
                Some((slot, _)) => (slot.busy, slot.skipped),
                None => (
                    (self.busy_left.remove(&p.target.name))
                        .unwrap_or_else(|| Arc::new(AtomicBool::new(false))),
                    0,
                ),
            };
            let Scheduled { target, schedule } = p;
            let schedule = match schedule.start(now, &target.name) {
                Some((due, then)) => {
                    next_runs.set(&target.name, due);
                    entries.push(Reverse((due, index)));
                    then
                }
                // Out of the calendar's range: nothing to fire.
                None => schedule,
            };
            slots.push(Slot {
                target,
                schedule,
                busy,
                skipped,
            });
        }
        // Removed probes stop firing; a run in flight may finish.
        let removed: Vec<Arc<str>> = index_of.into_keys().collect();
        next_runs.remove(&removed);
        self.slots = slots;
        self.due = BinaryHeap::from(entries);
    }

    /// Fires up to `limit` probes due at `now` and schedules their next
    /// instants; returns how many fired.
    fn fire_due(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
        env: &Arc<RunEnv>,
        runs: &TaskTracker,
        sched: &Scheduler,
    ) -> usize {
        let mut fired = 0;
        while fired < limit {
            let Some(mut top) = self.due.peek_mut() else {
                break;
            };
            let Reverse((due, index)) = *top;
            if due > now {
                break;
            }
            fired += 1;
            let Some(slot) = self.slots.get_mut(index) else {
                PeekMut::pop(top);
                continue;
            };
            fire_slot(slot, due, env, runs, sched);
            // Instants already past (the wall clock stepped forward, the host was
            // suspended) are not replayed: firing through them would run the
            // loop through one skipped fire each.
            let next = slot
                .schedule
                .next_after(due)
                .filter(|next| *next >= now)
                .or_else(|| slot.schedule.next_after(now));
            match next {
                Some(next) => {
                    sched.next_runs.set(&slot.target.name, next);
                    *top = Reverse((next, index));
                }
                // The schedule has no more fire times.
                None => {
                    PeekMut::pop(top);
                }
            }
        }
        fired
    }
}

/// One fire of `slot`, due at `due`: a run, or a skip if the previous one is
/// still going.
fn fire_slot(
    slot: &mut Slot,
    due: DateTime<Utc>,
    env: &Arc<RunEnv>,
    runs: &TaskTracker,
    sched: &Scheduler,
) {
    env.stats.fired.fetch_add(1, Ordering::Relaxed);
    if slot.busy.swap(true, Ordering::SeqCst) {
        env.stats.skipped_overlap.fetch_add(1, Ordering::Relaxed);
        slot.skipped += 1;
        ProbeRunSkipped {
            probe: &slot.target.name,
            kind: slot.target.kind,
            health_set: &slot.target.health_set,
            total_skipped: slot.skipped,
        }
        .emit(&sched.metrics);
        return;
    }
    env.stats.in_flight.fetch_add(1, Ordering::SeqCst);
    let t = &slot.target;
    // The run owns what it needs of the target (shared parts, no copies), so
    // that a reload may drop the slot while the run goes on.
    let target = Target {
        name: t.name.clone(),
        kind: t.kind,
        health_set: t.health_set.clone(),
        timeout: t.timeout,
        retries: t.retries,
        probe: t.probe.clone(),
    };
    runs.spawn(fire(env.clone(), target, due, slot.busy.clone()));
}

async fn fire(env: Arc<RunEnv>, target: Target, due: DateTime<Utc>, running: Arc<AtomicBool>) {
    let _done = DoneGuard {
        running: &running,
        stats: &env.stats,
    };
    // A run still waiting for a slot when shutdown comes never starts.
    let permit = tokio::select! {
        _ = env.shutdown.cancelled() => return,
        p = env.permits.clone().acquire_owned() => match p {
            Ok(p) => p,
            Err(_) => return,
        },
    };
    let lateness = (env.clock.now() - due).to_std().unwrap_or(Duration::ZERO);
    let outcome = tokio::select! {
        o = run_once(&target, &env.clock) => o,
        _ = env.abort.cancelled() => {
            env.stats.aborted_at_shutdown.fetch_add(1, Ordering::Relaxed);
            let mut o = Outcome::unknown(Category::Internal, "aborted: the agent shut down before the run finished");
            o.started_at = due;
            o
        }
    };
    drop(permit);
    env.stats.completed.fetch_add(1, Ordering::Relaxed);
    let record = RunRecord {
        probe: target.name,
        kind: target.kind,
        health_set: target.health_set,
        due,
        lateness,
        outcome,
    };
    // The receiver may be gone at shutdown; the run is over either way.
    let _ = env.results.send(record).await;
}

/// Marks the probe idle and the run finished however `fire` ends.
struct DoneGuard<'a> {
    running: &'a AtomicBool,
    stats: &'a Stats,
}

impl Drop for DoneGuard<'_> {
    fn drop(&mut self) {
        self.running.store(false, Ordering::SeqCst);
        self.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::outcome::{Probe, ProbeContext, Status};
    use crate::runner::tests::{target, TestProbe};
    use futures::future::BoxFuture;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn scheduled(
        name: &str,
        schedule: Schedule,
        sleep: Duration,
        timeout: Duration,
        panic: bool,
    ) -> Scheduled {
        Scheduled {
            target: target(name, timeout, TestProbe { sleep, panic }),
            schedule,
        }
    }

    /// Runs the scheduler for `span` of (paused) time and returns the records.
    async fn run_for(
        start: &str,
        probes: Vec<Scheduled>,
        span: Duration,
        max_concurrent: usize,
        drain: Duration,
    ) -> (Vec<RunRecord>, Arc<Stats>) {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(t(start)));
        let sched = Scheduler::new(clock, max_concurrent, drain);
        let stats = sched.stats();
        let (tx, mut rx) = mpsc::channel(10_000);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let collector = tokio::spawn(async move {
            let mut out = Vec::new();
            while let Some(r) = rx.recv().await {
                out.push(r);
            }
            out
        });
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(span).await;
            stop.cancel();
        });
        sched.run(probes, tx, shutdown).await;
        stopper.await.unwrap();
        (collector.await.unwrap(), stats)
    }

    #[tokio::test(start_paused = true)]
    async fn each_probe_publishes_its_next_fire_instant() {
        let start = t("2026-03-01T10:00:00Z");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(start));
        let next = Arc::new(NextRuns::default());
        let sched = Scheduler::new(clock, 4, Duration::from_secs(1)).with_next_runs(next.clone());
        let (tx, mut rx) = mpsc::channel(100);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let hourly = Schedule::every(Duration::from_secs(3600), "hourly");
        let probes = vec![scheduled(
            "hourly",
            hourly,
            Duration::ZERO,
            Duration::from_secs(5),
            false,
        )];
        let handle = tokio::spawn(async move { sched.run(probes, tx, stop).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The first run, within a minute of the start: not where the schedule
        // alone would put it.
        let first = next.get("hourly").unwrap();
        assert!(
            first >= start && first - start < chrono::Duration::seconds(60),
            "{first}"
        );
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(rx.recv().await.unwrap().due, first);
        assert_eq!(next.get("hourly"), Some(first + chrono::Duration::hours(1)));
        assert_eq!(next.get("other"), None);
        shutdown.cancel();
        handle.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn cron_fires_at_the_right_instants_across_hour_boundary() {
        let s = Schedule::cron("*/20 * * * *").unwrap();
        let (recs, _) = run_for(
            "2026-03-01T10:41:00Z",
            vec![scheduled(
                "c",
                s,
                Duration::ZERO,
                Duration::from_secs(5),
                false,
            )],
            Duration::from_secs(60 * 60),
            4,
            Duration::from_secs(1),
        )
        .await;
        let dues: Vec<_> = recs.iter().map(|r| r.due).collect();
        // The first run comes within a minute of the start, then the cron instants.
        let (first, rest) = dues.split_first().unwrap();
        assert!(*first >= t("2026-03-01T10:41:00Z") && *first < t("2026-03-01T10:42:00Z"));
        assert_eq!(
            rest,
            [
                t("2026-03-01T11:00:00Z"),
                t("2026-03-01T11:20:00Z"),
                t("2026-03-01T11:40:00Z")
            ]
        );
        for r in &recs {
            assert_eq!(r.outcome.started_at, r.due, "started on time");
            assert!(r.lateness < Duration::from_millis(5));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_fires_on_its_splayed_grid_across_minute_boundaries() {
        let s = Schedule::every(Duration::from_secs(15), "grid");
        let Schedule::Every { offset, .. } = s.clone() else {
            unreachable!()
        };
        let (recs, _) = run_for(
            "2026-03-01T10:59:50Z",
            vec![scheduled(
                "grid",
                s,
                Duration::ZERO,
                Duration::from_secs(5),
                false,
            )],
            Duration::from_secs(61),
            4,
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(recs.len(), 4, "four 15 s slots in 61 s");
        for w in recs.windows(2) {
            assert_eq!(w[1].due - w[0].due, chrono::Duration::seconds(15));
        }
        for r in &recs {
            assert_eq!(
                r.due.timestamp_millis() as u128 % 15_000,
                offset.as_millis()
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_probe_never_overlaps_itself() {
        // Fires every 10 s, each run takes 25 s: runs at 0, 30, 60...; the fires
        // in between are skipped and counted.
        let s = Schedule::every(Duration::from_secs(10), "slow");
        let (recs, stats) = run_for(
            "2026-03-01T00:00:00Z",
            vec![scheduled(
                "slow",
                s,
                Duration::from_secs(25),
                Duration::from_secs(60),
                false,
            )],
            Duration::from_secs(100),
            4,
            Duration::from_secs(60),
        )
        .await;
        for w in recs.windows(2) {
            let gap = w[1].outcome.started_at - w[0].outcome.started_at;
            assert!(
                gap >= chrono::Duration::seconds(25),
                "runs overlapped: {gap}"
            );
        }
        let fired = stats.fired.load(Ordering::Relaxed);
        let skipped = stats.skipped_overlap.load(Ordering::Relaxed);
        assert_eq!(fired, 10);
        assert_eq!(skipped, fired - recs.len() as u64);
        assert!(skipped >= 6, "skipped {skipped}");
    }

    /// Counts how many instances run at once.
    struct Gauge {
        now: Arc<AtomicUsize>,
        max: Arc<AtomicUsize>,
    }

    impl Probe for Gauge {
        fn run<'a>(&'a self, _ctx: &'a ProbeContext) -> BoxFuture<'a, Outcome> {
            Box::pin(async move {
                let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
                self.max.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(2)).await;
                self.now.fetch_sub(1, Ordering::SeqCst);
                Outcome::ok("counted")
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_concurrency_bound_holds() {
        let now = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let probes: Vec<Scheduled> = (0..20)
            .map(|i| Scheduled {
                target: Target {
                    name: format!("g{i}").into(),
                    kind: "test",
                    health_set: "default".into(),
                    timeout: Duration::from_secs(30),
                    retries: 0,
                    probe: Arc::new(Gauge {
                        now: now.clone(),
                        max: max.clone(),
                    }),
                },
                schedule: Schedule::cron("* * * * *").unwrap(),
            })
            .collect();
        let (recs, _) = run_for(
            "2026-03-01T00:00:30Z",
            probes,
            Duration::from_secs(60),
            3,
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(recs.len(), 20, "all ran");
        assert_eq!(max.load(Ordering::SeqCst), 3);
        // 20 runs of 2 s, 3 at a time: the last ones start late, and it shows.
        let worst = recs.iter().map(|r| r.lateness).max().unwrap();
        assert_eq!(worst, Duration::from_secs(12));
    }

    #[tokio::test(start_paused = true)]
    async fn hung_and_panicking_probes_do_not_stop_the_others() {
        let every = |n: &str| Schedule::every(Duration::from_secs(10), n);
        let (recs, _) = run_for(
            "2026-03-01T00:00:00Z",
            vec![
                scheduled(
                    "hung",
                    every("hung"),
                    Duration::from_secs(3600),
                    Duration::from_secs(4),
                    false,
                ),
                scheduled(
                    "boom",
                    every("boom"),
                    Duration::ZERO,
                    Duration::from_secs(4),
                    true,
                ),
                scheduled(
                    "fine",
                    every("fine"),
                    Duration::ZERO,
                    Duration::from_secs(4),
                    false,
                ),
            ],
            Duration::from_secs(60),
            8,
            Duration::from_secs(1),
        )
        .await;
        let of = |name: &str| {
            recs.iter()
                .filter(|r| &*r.probe == name)
                .collect::<Vec<_>>()
        };
        assert!(of("hung").len() >= 5);
        assert!(of("hung")
            .iter()
            .all(|r| r.outcome.category == Some(Category::Timeout)));
        assert!(of("boom").len() >= 5);
        assert!(of("boom")
            .iter()
            .all(|r| r.outcome.status == Status::Unknown
                && r.outcome.category == Some(Category::Internal)));
        assert!(of("fine").len() >= 5);
        assert!(of("fine").iter().all(|r| r.outcome.status == Status::Ok));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_drains_in_flight_runs_within_the_deadline() {
        // Starts at 00:00:00 exactly, fires at :10; the run takes 5 s; shutdown
        // at 12 s: the run finishes and is recorded, nothing fires after.
        let s = Schedule::cron("10 * * * * *").unwrap();
        let (recs, stats) = run_for(
            "2026-03-01T00:00:00Z",
            vec![scheduled(
                "drain",
                s,
                Duration::from_secs(5),
                Duration::from_secs(30),
                false,
            )],
            Duration::from_secs(12),
            4,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].outcome.status, Status::Ok);
        assert_eq!(stats.aborted_at_shutdown.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_aborts_runs_past_the_drain_deadline() {
        let s = Schedule::cron("10 * * * * *").unwrap();
        let started = tokio::time::Instant::now();
        let (recs, stats) = run_for(
            "2026-03-01T00:00:00Z",
            vec![scheduled(
                "stuck",
                s,
                Duration::from_secs(600),
                Duration::from_secs(900),
                false,
            )],
            Duration::from_secs(12),
            4,
            Duration::from_secs(3),
        )
        .await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(15),
            "12 s + 3 s drain"
        );
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].outcome.status, Status::Unknown);
        assert!(recs[0].outcome.summary.contains("shut down"));
        assert_eq!(stats.aborted_at_shutdown.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_step_is_followed() {
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        let sched = Scheduler::new(dyn_clock, 2, Duration::from_secs(1));
        let (tx, mut rx) = mpsc::channel(100);
        let shutdown = CancellationToken::new();
        let s = Schedule::cron("0 0 * * *").unwrap(); // daily at midnight
        let probes = vec![scheduled(
            "daily",
            s,
            Duration::ZERO,
            Duration::from_secs(5),
            false,
        )];
        let stop = shutdown.clone();
        let handle = tokio::spawn(async move { sched.run(probes, tx, stop).await });
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = rx
            .try_recv()
            .expect("the first run, within a minute of the start");
        assert!(start.due < t("2026-03-01T00:01:00Z"));
        // NTP steps the clock forward to just before midnight.
        clock.set(t("2026-03-01T23:59:58Z"));
        let rec = tokio::time::timeout(Duration::from_secs(3600), rx.recv())
            .await
            .expect("fired after the step")
            .unwrap();
        assert_eq!(rec.due, t("2026-03-02T00:00:00Z"));
        shutdown.cancel();
        handle.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn replace_keeps_unchanged_loops_stops_removed_and_starts_new_ones() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        let sched = Scheduler::new(clock, 4, Duration::from_secs(60));
        let stats = sched.stats();
        let (tx, mut rx) = mpsc::channel(10_000);
        let (updates, updates_rx) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let every = |n: &str, secs| Schedule::every(Duration::from_secs(secs), n);
        let quick = Duration::ZERO;
        let five = Duration::from_secs(5);
        let probes = vec![
            scheduled("keep", every("keep", 10), quick, five, false),
            scheduled("gone", every("gone", 10), quick, five, false),
            // Runs 25 s: in flight when the swap comes.
            scheduled(
                "changed",
                every("changed", 10),
                Duration::from_secs(25),
                Duration::from_secs(60),
                false,
            ),
        ];
        let stop = shutdown.clone();
        let handle =
            tokio::spawn(async move { sched.run_replaceable(probes, updates_rx, tx, stop).await });
        tokio::time::sleep(Duration::from_secs(35)).await;
        let swap_at = t("2026-03-01T00:00:35Z");
        updates
            .send(Replace {
                probes: vec![
                    // Marked unchanged: the running loop (every 10 s) is kept,
                    // this instance's schedule is never used.
                    scheduled("keep", every("keep", 7), quick, five, false),
                    scheduled("changed", every("changed", 10), quick, five, false),
                    scheduled("new", every("new", 10), quick, five, false),
                ],
                unchanged: HashSet::from(["keep".to_string()]),
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        shutdown.cancel();
        handle.await.unwrap();
        let mut recs = Vec::new();
        while let Ok(r) = rx.try_recv() {
            recs.push(r);
        }
        let of = |name: &str| {
            recs.iter()
                .filter(|r| &*r.probe == name)
                .collect::<Vec<_>>()
        };
        let keep = of("keep");
        assert!(keep.len() >= 9, "every 10 s through the swap");
        for w in keep.windows(2) {
            assert_eq!(w[1].due - w[0].due, chrono::Duration::seconds(10));
        }
        assert!(!of("gone").is_empty());
        assert!(
            of("gone").iter().all(|r| r.due < swap_at),
            "removed: no fire after the swap"
        );
        let new = of("new");
        assert!(new.len() >= 5);
        assert!(new.iter().all(|r| r.due > swap_at));
        // The changed probe's old run (started at a fire before the swap) finished
        // and was recorded; the new version never overlapped it.
        let changed = of("changed");
        assert!(changed
            .iter()
            .any(|r| r.due < swap_at && r.outcome.duration >= Duration::from_secs(25)));
        assert!(changed.iter().any(|r| r.due > swap_at));
        let mut spans: Vec<_> = changed
            .iter()
            .map(|r| {
                (
                    r.outcome.started_at,
                    r.outcome.started_at + r.outcome.duration,
                )
            })
            .collect();
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "runs overlapped: {w:?}");
        }
        assert!(stats.skipped_overlap.load(Ordering::Relaxed) >= 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_scheduler_restarted_after_a_failure_never_overlaps_the_runs_left_in_flight() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        let carry = Arc::new(Carry::default());
        let (tx, mut rx) = mpsc::channel(10_000);
        let shutdown = CancellationToken::new();
        // Runs 25 s, every 10 s.
        let slow = || {
            scheduled(
                "slow",
                Schedule::every(Duration::from_secs(10), "slow"),
                Duration::from_secs(25),
                Duration::from_secs(60),
                false,
            )
        };
        let first =
            Scheduler::new(clock.clone(), 1, Duration::from_secs(60)).with_carry(carry.clone());
        let first_stats = first.stats();
        let failed = tokio::spawn({
            let (tx, stop) = (tx.clone(), shutdown.clone());
            async move { first.run(vec![slow()], tx, stop).await }
        });
        for _ in 0..60 {
            if first_stats.in_flight.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert_eq!(first_stats.in_flight.load(Ordering::SeqCst), 1);
        // The scheduler's task dies (as in a panic) with the run in flight;
        // its supervisor starts a new one.
        failed.abort();
        assert!(failed.await.unwrap_err().is_cancelled());
        let second =
            Scheduler::new(clock.clone(), 1, Duration::from_secs(60)).with_carry(carry.clone());
        let stats = second.stats();
        let handle = tokio::spawn({
            let stop = shutdown.clone();
            async move { second.run(vec![slow()], tx, stop).await }
        });
        tokio::time::sleep(Duration::from_secs(90)).await;
        shutdown.cancel();
        handle.await.unwrap();
        let mut spans = Vec::new();
        while let Ok(r) = rx.try_recv() {
            spans.push((
                r.outcome.started_at,
                r.outcome.started_at + r.outcome.duration,
            ));
        }
        spans.sort();
        assert!(spans.len() >= 3, "{spans:?}");
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "runs overlapped: {w:?}");
        }
        assert!(stats.skipped_overlap.load(Ordering::Relaxed) >= 1);
        assert!(
            (carry.0.lock().unwrap().busy).is_empty(),
            "taken by the second run"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn replace_keeps_the_global_concurrency_bound() {
        let now = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let gauge = |name: String| Scheduled {
            target: Target {
                name: name.into(),
                kind: "test",
                health_set: "default".into(),
                timeout: Duration::from_secs(30),
                retries: 0,
                probe: Arc::new(Gauge {
                    now: now.clone(),
                    max: max.clone(),
                }),
            },
            schedule: Schedule::cron("* * * * *").unwrap(),
        };
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(t("2026-03-01T00:00:30Z")));
        let sched = Scheduler::new(clock, 3, Duration::from_secs(30));
        let (tx, mut rx) = mpsc::channel(10_000);
        let (updates, updates_rx) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let first = (0..10).map(|i| gauge(format!("a{i}"))).collect();
        let handle =
            tokio::spawn(async move { sched.run_replaceable(first, updates_rx, tx, stop).await });
        // At 00:01:01 the first ten are running or queued; ten more join.
        tokio::time::sleep(Duration::from_secs(31)).await;
        updates
            .send(Replace {
                probes: (0..10)
                    .map(|i| gauge(format!("a{i}")))
                    .chain((0..10).map(|i| gauge(format!("b{i}"))))
                    .collect(),
                unchanged: (0..10).map(|i| format!("a{i}")).collect(),
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(90)).await;
        shutdown.cancel();
        handle.await.unwrap();
        let mut n = 0;
        while let Ok(r) = rx.try_recv() {
            assert_eq!(r.outcome.summary, "counted");
            n += 1;
        }
        assert_eq!(n, 30, "a* twice, b* once");
        assert_eq!(max.load(Ordering::SeqCst), 3);
    }

    fn dues_of(recs: &[RunRecord], name: &str) -> Vec<DateTime<Utc>> {
        recs.iter()
            .filter(|r| &*r.probe == name)
            .map(|r| r.due)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn hourly_and_daily_probes_run_within_a_minute_of_start_then_on_schedule() {
        let start = t("2026-03-01T10:00:00Z");
        let minute = chrono::Duration::seconds(60);
        let quick = |name: &str, schedule| {
            scheduled(
                name,
                schedule,
                Duration::ZERO,
                Duration::from_secs(5),
                false,
            )
        };
        let (recs, _) = run_for(
            "2026-03-01T10:00:00Z",
            vec![
                quick(
                    "hourly",
                    Schedule::every(Duration::from_secs(3600), "hourly"),
                ),
                quick("nightly", Schedule::cron("@daily").unwrap()),
            ],
            Duration::from_secs(15 * 3600),
            4,
            Duration::from_secs(1),
        )
        .await;
        let hourly = dues_of(&recs, "hourly");
        assert!(
            hourly[0] >= start && hourly[0] - start < minute,
            "{hourly:?}"
        );
        assert_eq!(hourly.len(), 15, "{hourly:?}");
        for (k, due) in hourly.iter().enumerate() {
            // Every hour from the first run on.
            assert_eq!(*due, hourly[0] + chrono::Duration::hours(k as i64));
        }
        let nightly = dues_of(&recs, "nightly");
        assert_eq!(nightly.len(), 2, "{nightly:?}");
        assert!(nightly[0] >= start && nightly[0] - start < minute);
        assert_eq!(nightly[1], t("2026-03-02T00:00:00Z"), "then at midnight");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_runs_a_changed_probe_at_once_and_leaves_an_unchanged_one_be() {
        let start = t("2026-03-01T10:00:00Z");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(start));
        let sched = Scheduler::new(clock, 4, Duration::from_secs(1));
        let (tx, mut rx) = mpsc::channel(10_000);
        let (updates, updates_rx) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let hourly = |name: &str, secs| {
            scheduled(
                name,
                Schedule::every(Duration::from_secs(secs), name),
                Duration::ZERO,
                Duration::from_secs(5),
                false,
            )
        };
        let stop = shutdown.clone();
        let first = vec![hourly("steady", 3600), hourly("edited", 3600)];
        let handle =
            tokio::spawn(async move { sched.run_replaceable(first, updates_rx, tx, stop).await });
        tokio::time::sleep(Duration::from_secs(600)).await;
        let swap_at = t("2026-03-01T10:10:00Z");
        updates
            .send(Replace {
                probes: vec![hourly("steady", 3600), hourly("edited", 7200)],
                unchanged: HashSet::from(["steady".to_string()]),
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        shutdown.cancel();
        handle.await.unwrap();
        let mut recs = Vec::new();
        while let Ok(r) = rx.try_recv() {
            recs.push(r);
        }
        let minute = chrono::Duration::seconds(60);
        let steady = dues_of(&recs, "steady");
        assert_eq!(
            steady.len(),
            2,
            "at start and an hour later only: {steady:?}"
        );
        assert!(steady[0] - start < minute);
        assert_eq!(steady[1], steady[0] + chrono::Duration::hours(1));
        let edited = dues_of(&recs, "edited");
        assert_eq!(
            edited.len(),
            2,
            "at start and at once after the reload: {edited:?}"
        );
        assert!(edited[0] - start < minute);
        assert!(
            edited[1] >= swap_at && edited[1] - swap_at < minute,
            "{edited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_step_forward_does_not_replay_the_missed_fires() {
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        let sched = Scheduler::new(dyn_clock, 2, Duration::from_secs(1));
        let stats = sched.stats();
        let (tx, mut rx) = mpsc::channel(100_000);
        let shutdown = CancellationToken::new();
        let s = Schedule::every(Duration::from_secs(1), "tick");
        let probes = vec![scheduled(
            "tick",
            s,
            Duration::ZERO,
            Duration::from_secs(5),
            false,
        )];
        let stop = shutdown.clone();
        let handle = tokio::spawn(async move { sched.run(probes, tx, stop).await });
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        // A day passes in an instant (a suspended VM resumes).
        clock.set(t("2026-03-02T00:00:10Z"));
        tokio::time::sleep(Duration::from_secs(10)).await;
        shutdown.cancel();
        handle.await.unwrap();
        let mut recs = Vec::new();
        while let Ok(r) = rx.try_recv() {
            recs.push(r);
        }
        let fired = stats.fired.load(Ordering::Relaxed);
        assert!(fired <= 23, "a day of 1 s fires replayed: {fired}");
        let after_step = recs
            .iter()
            .filter(|r| r.due >= t("2026-03-02T00:00:00Z"))
            .count();
        assert!((9..=11).contains(&after_step), "{after_step}");
    }

    /// The instants `offset + k * every` (milliseconds since the epoch) strictly
    /// between `after` and `before`.
    fn grid(every: i64, offset: i64, after: DateTime<Utc>, before: DateTime<Utc>) -> Vec<i64> {
        let after = after.timestamp_millis();
        let mut at = after - (after - offset).rem_euclid(every) + every;
        let mut out = Vec::new();
        while at < before.timestamp_millis() {
            out.push(at);
            at += every;
        }
        out
    }

    /// `(every, offset)` in milliseconds of an `every` schedule.
    fn every_ms(s: &Schedule) -> (i64, i64) {
        let Schedule::Every { every, offset } = s else {
            unreachable!("an every schedule")
        };
        (every.as_millis() as i64, offset.as_millis() as i64)
    }

    /// Each probe's dues (milliseconds) before `before`, in order.
    fn dues_by_probe(recs: &[RunRecord], before: DateTime<Utc>) -> HashMap<&str, Vec<i64>> {
        let mut by: HashMap<&str, Vec<i64>> = HashMap::new();
        for r in recs.iter().filter(|r| r.due < before) {
            by.entry(&*r.probe)
                .or_default()
                .push(r.due.timestamp_millis());
        }
        for dues in by.values_mut() {
            dues.sort();
        }
        by
    }

    #[tokio::test(start_paused = true)]
    async fn ten_thousand_probes_each_fire_exactly_at_their_instants() {
        // One timer loop for all: every probe runs at each of its instants, on
        // time, once; 2,000 of them share each cron instant.
        const N: usize = 10_000;
        let start = t("2026-03-01T10:00:00Z");
        let span = Duration::from_secs(150);
        let end = start + chrono::Duration::seconds(150);
        let schedule_of = |i: usize, name: &str| match i % 5 {
            4 => Schedule::cron("*/30 * * * * *").unwrap(),
            k => Schedule::every(Duration::from_secs([10, 20, 30, 60][k]), name),
        };
        let names: Vec<String> = (0..N).map(|i| format!("p{i:05}")).collect();
        let probes = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                scheduled(
                    n,
                    schedule_of(i, n),
                    Duration::ZERO,
                    Duration::from_secs(5),
                    false,
                )
            })
            .collect();
        let (recs, stats) = run_for(
            "2026-03-01T10:00:00Z",
            probes,
            span,
            N,
            Duration::from_secs(1),
        )
        .await;
        for r in &recs {
            assert_eq!(r.outcome.started_at, r.due, "{}", r.probe);
            assert_eq!(r.lateness, Duration::ZERO, "{}", r.probe);
            // The stop at `end` races only a fire due at `end` itself.
            assert!(r.due <= end, "{}", r.probe);
        }
        let got = dues_by_probe(&recs, end);
        let mut runs = 0;
        for (i, name) in names.iter().enumerate() {
            let (every, offset) = match schedule_of(i, name) {
                Schedule::Cron { .. } => (30_000, 0),
                every => every_ms(&every),
            };
            let want = grid(every, offset, start, end);
            assert!(want.len() >= 2, "{name}");
            assert_eq!(got.get(name.as_str()), Some(&want), "{name}");
            runs += want.len();
        }
        assert_eq!(got.len(), N);
        assert!(stats.fired.load(Ordering::Relaxed) >= runs as u64);
        assert_eq!(stats.skipped_overlap.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_of_thousands_keeps_each_probe_where_it_belongs() {
        // 2,000 probes; the reload lists them in another order (so every slot
        // moves): 1,000 unchanged, 500 changed, 500 removed, 500 new.
        let start = t("2026-03-01T10:00:00Z");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(start));
        let next = Arc::new(NextRuns::default());
        let sched =
            Scheduler::new(clock, 10_000, Duration::from_secs(1)).with_next_runs(next.clone());
        let (tx, mut rx) = mpsc::channel(1_000);
        let (updates, updates_rx) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let name = |i: usize| format!("p{i:04}");
        let every = |i: usize, secs| {
            scheduled(
                &name(i),
                Schedule::every(Duration::from_secs(secs), &name(i)),
                Duration::ZERO,
                Duration::from_secs(5),
                false,
            )
        };
        let first_secs = |i: usize| if i.is_multiple_of(2) { 10 } else { 20 };
        let first = (0..2_000).map(|i| every(i, first_secs(i))).collect();
        let stop = shutdown.clone();
        let handle =
            tokio::spawn(async move { sched.run_replaceable(first, updates_rx, tx, stop).await });
        let collector = tokio::spawn(async move {
            let mut out = Vec::new();
            while let Some(r) = rx.recv().await {
                out.push(r);
            }
            out
        });
        tokio::time::sleep(Duration::from_secs(35)).await;
        let swap = t("2026-03-01T10:00:35Z");
        let end = t("2026-03-01T10:02:00Z");
        // Unchanged ones are given another schedule: it must not be used.
        let mut probes: Vec<Scheduled> = (0..1_000)
            .map(|i| every(i, 7))
            .chain((1_000..1_500).map(|i| every(i, 30)))
            .chain((2_000..2_500).map(|i| every(i, 10)))
            .collect();
        probes.reverse();
        updates
            .send(Replace {
                probes,
                unchanged: (0..1_000).map(name).collect(),
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(next.get(&name(1_700)), None, "removed");
        assert!(next.get(&name(2_100)).is_some_and(|at| at > swap));
        tokio::time::sleep(Duration::from_secs(84)).await;
        shutdown.cancel();
        handle.await.unwrap();
        let recs = collector.await.unwrap();
        let got = dues_by_probe(&recs, end);
        // A probe's dues before, at and after the swap instant (an old instant
        // due at the swap itself races the reload: it may or may not fire).
        let split = |i: usize| {
            let dues = got.get(name(i).as_str()).cloned().unwrap_or_default();
            let at = swap.timestamp_millis();
            let below: Vec<i64> = dues.iter().copied().filter(|d| *d < at).collect();
            let above: Vec<i64> = dues.iter().copied().filter(|d| *d > at).collect();
            (below, dues.iter().filter(|d| **d == at).count(), above)
        };
        let of =
            |i: usize, secs: u64| every_ms(&Schedule::every(Duration::from_secs(secs), &name(i)));
        for i in 0..1_000 {
            let (e, o) = of(i, first_secs(i));
            let want = grid(e, o, start, end);
            assert_eq!(got.get(name(i).as_str()), Some(&want), "unchanged {i}");
        }
        for i in 1_000..1_500 {
            let (below, at, above) = split(i);
            let (e, o) = of(i, first_secs(i));
            assert_eq!(below, grid(e, o, start, swap), "changed {i}");
            assert!(at <= 1, "changed {i}");
            let (e, o) = of(i, 30);
            assert_eq!(above, grid(e, o, swap, end), "changed {i}");
        }
        for i in 1_500..2_000 {
            let (below, at, above) = split(i);
            let (e, o) = of(i, first_secs(i));
            assert_eq!(below, grid(e, o, start, swap), "removed {i}");
            assert!(at <= 1, "removed {i}");
            assert_eq!(above, Vec::<i64>::new(), "removed {i}");
        }
        for i in 2_000..2_500 {
            let (e, o) = of(i, 10);
            let want = grid(e, o, swap, end);
            assert_eq!(got.get(name(i).as_str()), Some(&want), "new {i}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn probes_keep_firing_when_reloads_stop_coming() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        let sched = Scheduler::new(clock, 2, Duration::from_secs(1));
        let (tx, mut rx) = mpsc::channel(100);
        let (updates, updates_rx) = mpsc::channel(1);
        drop(updates);
        let shutdown = CancellationToken::new();
        let s = Schedule::every(Duration::from_secs(10), "tick");
        let probes = vec![scheduled(
            "tick",
            s,
            Duration::ZERO,
            Duration::from_secs(5),
            false,
        )];
        let stop = shutdown.clone();
        let handle =
            tokio::spawn(async move { sched.run_replaceable(probes, updates_rx, tx, stop).await });
        tokio::time::sleep(Duration::from_secs(55)).await;
        shutdown.cancel();
        handle.await.unwrap();
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert!((5..=6).contains(&n), "{n}");
    }
}
