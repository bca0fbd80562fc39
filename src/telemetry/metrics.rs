//! The metrics registry: one `Metrics` value, shared as `Arc<Metrics>`, updated
//! by the typed events (`super::events`) and rendered in the Prometheus text
//! exposition format 0.0.4 for `/metrics`. Every metric name lives here.
//!
//! Updates are atomics behind a read lock (a probe or channel seen for the first
//! time takes the write lock once), so many tasks update it without waiting on
//! each other. Label strings are escaped once, when a probe or channel is
//! registered, which keeps rendering 10,000 probes in a few milliseconds.
//!
//! A probe's series are kept small, since an agent has thousands: one label
//! string that the label sets are slices of, run counters only for the
//! (status, category) pairs seen, histogram counts inline with their `le`
//! values formatted once per registry, and what few probes record (skipped
//! fires, phases) allocated at its first record. `render_chunks` writes the
//! text in pieces, so that `/metrics` for many probes never holds it whole.
//!
//! Two families of series per probe:
//! - blackbox_exporter's (`probe_success`, `probe_duration_seconds`,
//!   `probe_ssl_earliest_cert_expiry`, `probe_http_status_code`), with labels
//!   `probe`, `kind`, `health_set`, describing the latest run, so dashboards and
//!   alert rules written for blackbox work unchanged;
//! - sonde's own (`sonde_*`): counters and histograms over every run, monitor
//!   states, alert deliveries, the outbox, the scheduler and the configuration.
//!
//! Labels are low-cardinality (probe and channel names come from the config,
//! the rest from closed enums); summaries and error texts never become labels.
//!
//! The same updates also record into OpenTelemetry instruments (`OTEL_*`
//! names) of the global meter provider, which `super::otel` installs when OTLP
//! export is configured; otherwise they are the API's no-op instruments.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use opentelemetry::metrics::{self as otel_metrics, Counter, Gauge};
use opentelemetry::KeyValue;

use crate::monitor::MonitorState;
use crate::outcome::{Category, Outcome, Phase, Status};

// blackbox_exporter-compatible, per probe: the latest run.
pub(crate) const PROBE_SUCCESS: &str = "probe_success";
pub(crate) const PROBE_DURATION_SECONDS: &str = "probe_duration_seconds";
pub(crate) const PROBE_SSL_EARLIEST_CERT_EXPIRY: &str = "probe_ssl_earliest_cert_expiry";
pub(crate) const PROBE_HTTP_STATUS_CODE: &str = "probe_http_status_code";
// sonde's own.
pub(crate) const SONDE_BUILD_INFO: &str = "sonde_build_info";
pub(crate) const SONDE_PROBE_STATUS: &str = "sonde_probe_status";
pub(crate) const SONDE_PROBE_RUNS_TOTAL: &str = "sonde_probe_runs_total";
pub(crate) const SONDE_PROBE_RUNS_SKIPPED_TOTAL: &str = "sonde_probe_runs_skipped_total";
pub(crate) const SONDE_PROBE_DURATION_SECONDS: &str = "sonde_probe_duration_seconds";
pub(crate) const SONDE_PROBE_PHASE_DURATION_SECONDS: &str = "sonde_probe_phase_duration_seconds";
pub(crate) const SONDE_CERTIFICATE_SECONDS_LEFT: &str = "sonde_certificate_seconds_left";
pub(crate) const SONDE_MONITOR_STATE: &str = "sonde_monitor_state";
pub(crate) const SONDE_ALERT_DELIVERIES_TOTAL: &str = "sonde_alert_deliveries_total";
pub(crate) const SONDE_OUTBOX_DEPTH: &str = "sonde_outbox_depth";
pub(crate) const SONDE_SCHEDULER_LATENESS_SECONDS: &str = "sonde_scheduler_lateness_seconds";
pub(crate) const SONDE_CONFIG_RELOAD_SUCCESS: &str = "sonde_config_reload_success";
pub(crate) const SONDE_CONFIG_RELOAD_TIMESTAMP_SECONDS: &str =
    "sonde_config_reload_timestamp_seconds";
pub(crate) const SONDE_TASK_RESTARTS_TOTAL: &str = "sonde_task_restarts_total";
pub(crate) const SONDE_STORE_UP: &str = "sonde_store_up";
pub(crate) const SONDE_STORE_PENDING: &str = "sonde_store_pending";
pub(crate) const SONDE_STORE_DROPPED_TOTAL: &str = "sonde_store_dropped_total";

// The OpenTelemetry instruments (exported over OTLP), mirroring sonde's own:
// the runs counter and duration histogram (attributes probe, kind; the counter
// also status, category), the phase duration histogram (probe, kind, phase),
// the certificate gauge (probe), the monitor state
// (probe, health_set, state: 1 or 0) and alert deliveries (channel, result).
pub(crate) const OTEL_PROBE_RUNS: &str = "sonde.probe.runs";
pub(crate) const OTEL_PROBE_DURATION: &str = "sonde.probe.duration";
pub(crate) const OTEL_PROBE_PHASE_DURATION: &str = "sonde.probe.phase.duration";
pub(crate) const OTEL_CERTIFICATE_SECONDS_LEFT: &str = "sonde.certificate.seconds_left";
pub(crate) const OTEL_MONITOR_STATE: &str = "sonde.monitor.state";
pub(crate) const OTEL_ALERT_DELIVERIES: &str = "sonde.alert.deliveries";

/// Observations that feed series of their own.
pub(crate) const OBS_NOT_AFTER: &str = "not_after_timestamp_seconds";
pub(crate) const OBS_SECONDS_LEFT: &str = "seconds_left";
pub(crate) const OBS_STATUS_CODE: &str = "status_code";

/// Probe run durations: from a local file check to a slow token endpoint.
/// Phase durations use the same buckets, so a phase compares with its run.
pub(crate) const PROBE_DURATION_BUCKETS: &[f64; 13] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Scheduler lateness: a healthy scheduler stays in the first buckets.
pub(crate) const LATENESS_BUCKETS: &[f64; 10] =
    &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0];

/// The `content-type` of `render`'s output.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The label values come from the enums themselves (`ALL`, `as_str`, `index`):
/// a new status, category or state is counted under its own label.
const STATUSES: [Status; Status::ALL.len()] = Status::ALL;
const CATEGORIES: [Category; Category::ALL.len()] = Category::ALL;
const STATES: [MonitorState; MonitorState::ALL.len()] = MonitorState::ALL;
/// No state known yet.
const NO_STATE: u8 = u8::MAX;

fn status_index(s: Status) -> usize {
    // Kept as a u8 in `Latest`, below `NO_STATE`: checked at compile time.
    const _: () = assert!(Status::ALL.len() < NO_STATE as usize);
    s.index()
}

/// 0 for no category (an ok run), 1.. for the categories.
fn category_index(c: Option<Category>) -> usize {
    c.map_or(0, |c| c.index() + 1)
}

fn state_index(s: MonitorState) -> u8 {
    // Fewer than 255 states (NO_STATE is u8::MAX): checked at compile time.
    const _: () = assert!(MonitorState::ALL.len() < NO_STATE as usize);
    s.index() as u8
}

/// How an alert delivery attempt ended; the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryResult {
    /// The channel accepted the alert.
    Delivered,
    /// A retryable error; the alert stays queued.
    Failed,
    /// No answer within the attempt timeout; the alert stays queued.
    Timeout,
    /// A permanent refusal; the alert is set aside.
    Refused,
}

const RESULTS: [DeliveryResult; 4] = [
    DeliveryResult::Delivered,
    DeliveryResult::Failed,
    DeliveryResult::Timeout,
    DeliveryResult::Refused,
];

impl DeliveryResult {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeliveryResult::Delivered => "delivered",
            DeliveryResult::Failed => "failed",
            DeliveryResult::Timeout => "timeout",
            DeliveryResult::Refused => "refused",
        }
    }

    fn index(self) -> usize {
        RESULTS.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// An f64 in an atomic, as its bits.
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn new(v: f64) -> Self {
        AtomicF64(AtomicU64::new(v.to_bits()))
    }
    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    fn add(&self, v: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + v).to_bits())
            });
    }
}

/// The `le` label values of one set of bounds, `+Inf` last: formatted once
/// per registry and shared by every histogram over those bounds.
struct Le(Box<[Box<str>]>);

impl Le {
    fn new(bounds: &[f64]) -> Self {
        let le = bounds
            .iter()
            .map(|b| {
                let mut s = String::new();
                push_f64(&mut s, *b);
                s.into_boxed_str()
            })
            .chain(std::iter::once("+Inf".into()))
            .collect();
        Le(le)
    }
}

/// A Prometheus histogram over `B` fixed bounds, which its owner passes to
/// `observe` (they are consts: no need to keep a pointer to them in each
/// histogram); counts are per bucket, made cumulative when rendered. The
/// counts live inline, and the `_count` is their total.
pub(crate) struct Histogram<const B: usize> {
    /// Per bound, the observations above the previous bound and up to this one.
    counts: [AtomicU64; B],
    /// The observations above every bound.
    above: AtomicU64,
    sum: AtomicF64,
}

/// A probe's run or phase durations.
type DurationHistogram = Histogram<{ PROBE_DURATION_BUCKETS.len() }>;

impl<const B: usize> Histogram<B> {
    pub(crate) fn new() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            above: AtomicU64::new(0),
            sum: AtomicF64::new(0.0),
        }
    }

    pub(crate) fn observe(&self, bounds: &[f64; B], v: f64) {
        if v.is_nan() {
            return;
        }
        // Buckets are `le`: a value equal to a bound counts in that bucket.
        let i = bounds.partition_point(|b| *b < v);
        self.counts
            .get(i)
            .unwrap_or(&self.above)
            .fetch_add(1, Ordering::Relaxed);
        self.sum.add(v);
    }

    /// How many values were observed.
    fn count(&self) -> u64 {
        self.counts
            .iter()
            .chain(std::iter::once(&self.above))
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Writes `_bucket`, `_sum` and `_count` lines; `labels` are pieces of
    /// `a="x",b="y"` (already escaped), none for no labels; `le` holds this
    /// histogram's bounds as label values.
    fn render(&self, out: &mut String, name: &str, labels: &[&str], le: &Le) {
        let push_labels = |out: &mut String| {
            for l in labels {
                out.push_str(l);
            }
        };
        let labelled = labels.iter().any(|l| !l.is_empty());
        let mut cumulative = 0u64;
        let counts = self.counts.iter().chain(std::iter::once(&self.above));
        for (c, le) in counts.zip(le.0.iter()) {
            cumulative += c.load(Ordering::Relaxed);
            out.push_str(name);
            out.push_str("_bucket{");
            if labelled {
                push_labels(out);
                out.push(',');
            }
            out.push_str("le=\"");
            out.push_str(le);
            out.push_str("\"} ");
            push_u64(out, cumulative);
            out.push('\n');
        }
        let braces = |out: &mut String| {
            if labelled {
                out.push('{');
                push_labels(out);
                out.push('}');
            }
        };
        out.push_str(name);
        out.push_str("_sum");
        braces(out);
        out.push(' ');
        push_f64(out, self.sum.get());
        out.push('\n');
        out.push_str(name);
        out.push_str("_count");
        braces(out);
        out.push(' ');
        push_u64(out, cumulative);
        out.push('\n');
    }
}

/// The latest run of a probe, as the blackbox series show it, and its
/// monitor's state. Absent observations are NaN (observations are finite).
#[derive(Debug, Clone, Copy)]
struct Latest {
    /// `Status::index` of the latest run, `NO_STATE` before the first.
    status: u8,
    /// `state_index` of the monitor's state, `NO_STATE` before the first.
    state: u8,
    duration: f64,
    not_after: f64,
    seconds_left: f64,
    status_code: f64,
}

impl Latest {
    const NONE: Latest = Latest {
        status: NO_STATE,
        state: NO_STATE,
        duration: 0.0,
        not_after: f64::NAN,
        seconds_left: f64::NAN,
        status_code: f64::NAN,
    };

    fn status(&self) -> Option<Status> {
        STATUSES.get(usize::from(self.status)).copied()
    }
}

/// An observation, `None` when absent (NaN).
fn present(v: f64) -> Option<f64> {
    Some(v).filter(|v| !v.is_nan())
}

/// Runs by status and category, sparse: a probe sees one or two pairs in its
/// life (ok, and the way it fails), so a few slots hold one pair each, and
/// the whole matrix (`Rare::runs`) is allocated only for a probe that has
/// seen more pairs.
struct RunSlots([AtomicU64; RUN_SLOTS]);

const RUN_SLOTS: usize = 3;
/// The bits below a slot's pair key: 2^56 runs of one pair would take a
/// probe running every microsecond two thousand years.
const RUN_KEY_SHIFT: u32 = 56;
const RUN_COUNT_MASK: u64 = (1 << RUN_KEY_SHIFT) - 1;
// Every pair key + 1 fits above the count.
const _: () = assert!(STATUSES.len() * (CATEGORIES.len() + 1) < 255);

/// Runs by status and `category_index`.
type RunMatrix<T> = [[T; CATEGORIES.len() + 1]; STATUSES.len()];

impl RunSlots {
    /// Counts a run in its pair's slot, taking a free one if needed; false
    /// when every slot holds another pair.
    ///
    /// A slot holds `pair_key + 1` in its top bits and the count below; 0 is
    /// free. A slot, once taken, keeps its pair, so concurrent recorders,
    /// which all scan the slots in order, agree on where a pair lives.
    fn add(&self, status: usize, category: usize) -> bool {
        let key = (status * (CATEGORIES.len() + 1) + category + 1) as u64;
        for slot in &self.0 {
            let mut seen = slot.load(Ordering::Relaxed);
            if seen == 0 {
                match slot.compare_exchange(
                    0,
                    key << RUN_KEY_SHIFT | 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return true,
                    // Taken meanwhile, maybe for this very pair.
                    Err(now) => seen = now,
                }
            }
            if seen >> RUN_KEY_SHIFT == key {
                slot.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// Adds the slots' counts to `counts`.
    fn add_to(&self, counts: &mut RunMatrix<u64>) {
        for slot in &self.0 {
            let v = slot.load(Ordering::Relaxed);
            let Some(pair) = (v >> RUN_KEY_SHIFT).checked_sub(1) else {
                continue;
            };
            let pair = pair as usize;
            let (s, c) = (pair / (CATEGORIES.len() + 1), pair % (CATEGORIES.len() + 1));
            if let Some(n) = counts.get_mut(s).and_then(|row| row.get_mut(c)) {
                *n += v & RUN_COUNT_MASK;
            }
        }
    }
}

/// What most probes never record, allocated at the first of it.
#[derive(Default)]
struct Rare {
    /// Runs of the pairs beyond the slots.
    runs: OnceLock<Box<RunMatrix<AtomicU64>>>,
    skipped: AtomicU64,
    /// Phase durations, in `Phase::ALL` order, for the phases this probe has
    /// entered (most kinds have none).
    phases: Mutex<Vec<PhaseSeries>>,
}

/// Everything kept per probe.
struct ProbeSeries {
    /// `probe="..",kind="..",health_set=".."`, escaped; the other label sets
    /// are slices of it (`probe_only`, `probe_kind`, `probe_set`).
    labels: Box<str>,
    /// Where `probe=".."` ends in `labels`.
    probe_end: u32,
    /// Where `probe="..",kind=".."` ends in `labels`.
    kind_end: u32,
    latest: Mutex<Latest>,
    runs: RunSlots,
    duration: DurationHistogram,
    rare: OnceLock<Box<Rare>>,
}

const PROBE_LABEL: &str = "probe=\"";
const KIND_LABEL: &str = ",kind=\"";
const HEALTH_SET_LABEL: &str = ",health_set=\"";

impl ProbeSeries {
    fn new(probe: &str, kind: &str, health_set: &str) -> Self {
        let (p, k, h) = (escaped(probe), escaped(kind), escaped(health_set));
        let mut labels = String::with_capacity(
            PROBE_LABEL.len()
                + p.len()
                + KIND_LABEL.len()
                + k.len()
                + HEALTH_SET_LABEL.len()
                + h.len()
                + 1,
        );
        labels.push_str(PROBE_LABEL);
        labels.push_str(&p);
        labels.push('"');
        // A config holds 16 MiB at most, so an offset past u32 cannot come
        // from one; were it to, the slices are taken with `get` and never panic.
        let probe_end = u32::try_from(labels.len()).unwrap_or(u32::MAX);
        labels.push_str(KIND_LABEL);
        labels.push_str(&k);
        labels.push('"');
        let kind_end = u32::try_from(labels.len()).unwrap_or(u32::MAX);
        labels.push_str(HEALTH_SET_LABEL);
        labels.push_str(&h);
        labels.push('"');
        ProbeSeries {
            labels: labels.into_boxed_str(),
            probe_end,
            kind_end,
            latest: Mutex::new(Latest::NONE),
            runs: RunSlots(Default::default()),
            duration: Histogram::new(),
            rare: OnceLock::new(),
        }
    }

    /// `probe=".."`
    fn probe_only(&self) -> &str {
        self.labels.get(..self.probe_end as usize).unwrap_or("")
    }

    /// `probe="..",kind=".."`
    fn probe_kind(&self) -> &str {
        self.labels.get(..self.kind_end as usize).unwrap_or("")
    }

    /// `probe="..",health_set=".."`, as its two pieces.
    fn probe_set(&self) -> [&str; 2] {
        [
            self.probe_only(),
            self.labels.get(self.kind_end as usize..).unwrap_or(""),
        ]
    }

    /// The escaped probe name.
    fn escaped_name(&self) -> &str {
        let end = (self.probe_end as usize).saturating_sub(1);
        self.labels.get(PROBE_LABEL.len()..end).unwrap_or("")
    }

    /// The escaped kind.
    fn escaped_kind(&self) -> &str {
        let start = self.probe_end as usize + KIND_LABEL.len();
        let end = (self.kind_end as usize).saturating_sub(1);
        self.labels.get(start..end).unwrap_or("")
    }

    /// The escaped health set.
    fn escaped_health_set(&self) -> &str {
        let start = self.kind_end as usize + HEALTH_SET_LABEL.len();
        let end = self.labels.len().saturating_sub(1);
        self.labels.get(start..end).unwrap_or("")
    }

    /// The OTel attribute `key` for a label value as registered, built when
    /// recorded rather than kept: the names are already in `labels`.
    fn attr(key: &'static str, escaped_value: &str) -> KeyValue {
        KeyValue::new(key, unescape(escaped_value).into_owned())
    }

    fn latest(&self) -> std::sync::MutexGuard<'_, Latest> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rare(&self) -> &Rare {
        self.rare.get_or_init(Box::default)
    }

    fn add_run(&self, status: usize, category: usize) {
        if self.runs.add(status, category) {
            return;
        }
        let more = self.rare().runs.get_or_init(Box::default);
        if let Some(n) = more.get(status).and_then(|row| row.get(category)) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts by status and category.
    fn run_counts(&self) -> RunMatrix<u64> {
        let mut counts = [[0; CATEGORIES.len() + 1]; STATUSES.len()];
        self.runs.add_to(&mut counts);
        if let Some(more) = self.rare.get().and_then(|r| r.runs.get()) {
            for (row, more) in counts.iter_mut().zip(more.iter()) {
                for (n, more) in row.iter_mut().zip(more) {
                    *n += more.load(Ordering::Relaxed);
                }
            }
        }
        counts
    }

    fn skipped(&self) -> u64 {
        self.rare
            .get()
            .map_or(0, |r| r.skipped.load(Ordering::Relaxed))
    }

    fn observe_phase(&self, phase: Phase, seconds: f64) {
        let mut phases = self.rare().phases.lock().unwrap_or_else(|e| e.into_inner());
        // Kept in `Phase::ALL` order, whatever order they were seen in.
        let at = match phases.binary_search_by_key(&phase.index(), |p| p.phase.index()) {
            Ok(at) => at,
            Err(at) => {
                phases.insert(
                    at,
                    PhaseSeries {
                        phase,
                        duration: Histogram::new(),
                    },
                );
                at
            }
        };
        if let Some(p) = phases.get(at) {
            p.duration.observe(PROBE_DURATION_BUCKETS, seconds);
        }
    }
}

/// One phase's durations for one probe.
struct PhaseSeries {
    phase: Phase,
    duration: DurationHistogram,
}

struct ChannelSeries {
    /// `channel=".."`
    label: String,
    deliveries: [AtomicU64; RESULTS.len()],
    depth: AtomicI64,
    depth_known: AtomicBool,
    /// OTel attribute `channel`.
    attr: KeyValue,
}

const CHANNEL_LABEL: &str = "channel=\"";

/// A table entry's name, escaped, as it appears in its labels.
trait Named {
    fn escaped_name(&self) -> &str;
}

impl Named for ProbeSeries {
    fn escaped_name(&self) -> &str {
        ProbeSeries::escaped_name(self)
    }
}

impl Named for ChannelSeries {
    fn escaped_name(&self) -> &str {
        let end = self.label.len().saturating_sub(1);
        self.label.get(CHANNEL_LABEL.len()..end).unwrap_or("")
    }
}

/// An entry of a table's index, found by its escaped name (escaping is one
/// to one), which it already holds in its labels: the index keeps no copy.
struct Entry<T>(Arc<T>);

impl<T: Named> std::borrow::Borrow<str> for Entry<T> {
    fn borrow(&self) -> &str {
        self.0.escaped_name()
    }
}

impl<T: Named> std::hash::Hash for Entry<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes, which `Borrow<str>` requires.
        self.0.escaped_name().hash(state);
    }
}

impl<T: Named> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.escaped_name() == other.0.escaped_name()
    }
}

impl<T: Named> Eq for Entry<T> {}

/// Named entries in first-seen order (so that output is stable), with an index.
struct Table<T> {
    index: HashSet<Entry<T>>,
    list: Vec<Arc<T>>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            index: HashSet::new(),
            list: Vec::new(),
        }
    }
}

fn get_or_insert<T: Named>(
    table: &RwLock<Table<T>>,
    name: &str,
    make: impl FnOnce() -> T,
) -> Arc<T> {
    let key = escaped(name);
    {
        let t = table.read().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = t.index.get(key.as_ref()) {
            return e.0.clone();
        }
    }
    let mut t = table.write().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = t.index.get(key.as_ref()) {
        return e.0.clone();
    }
    let entry = Arc::new(make());
    t.index.insert(Entry(entry.clone()));
    t.list.push(entry.clone());
    entry
}

fn retain<T: Named>(table: &RwLock<Table<T>>, keep: impl Fn(&str) -> bool) {
    let mut t = table.write().unwrap_or_else(|e| e.into_inner());
    t.list.retain(|e| keep(&unescape(e.escaped_name())));
    let index = t.list.iter().map(|e| Entry(e.clone())).collect();
    t.index = index;
}

fn snapshot<T>(table: &RwLock<Table<T>>) -> Vec<Arc<T>> {
    table.read().unwrap_or_else(|e| e.into_inner()).list.clone()
}

/// The registry. Updated through `super::events`; read by `render`.
pub struct Metrics {
    version_label: String,
    probes: RwLock<Table<ProbeSeries>>,
    channels: RwLock<Table<ChannelSeries>>,
    lateness: Histogram<{ LATENESS_BUCKETS.len() }>,
    /// The `le` values of `PROBE_DURATION_BUCKETS` and `LATENESS_BUCKETS`.
    duration_le: Le,
    lateness_le: Le,
    /// 0 or 1; `NO_STATE` before the first load is reported.
    config_ok: AtomicU8,
    config_at: AtomicF64,
    /// The size of the last rendering, to allocate once.
    last_len: AtomicUsize,
    /// Restarts of the agent's supervised tasks, by task (a handful of names).
    restarts: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Whether the last store write succeeded (1), failed (0), or none was
    /// reported yet (`NO_STATE`).
    store_up: AtomicU8,
    /// Writes held in memory while the store fails.
    store_pending: AtomicU64,
    /// Results dropped from memory because the store stayed down too long.
    store_dropped: AtomicU64,
    otel: OtelInstruments,
}

/// The OTel side of the registry, recorded by the same updates.
struct OtelInstruments {
    runs: Counter<u64>,
    duration: otel_metrics::Histogram<f64>,
    phase_duration: otel_metrics::Histogram<f64>,
    seconds_left: Gauge<f64>,
    state: Gauge<u64>,
    deliveries: Counter<u64>,
}

impl OtelInstruments {
    fn new(meter: &otel_metrics::Meter) -> Self {
        OtelInstruments {
            runs: meter
                .u64_counter(OTEL_PROBE_RUNS)
                .with_description("Probe runs by status and category (empty when ok).")
                .build(),
            duration: meter
                .f64_histogram(OTEL_PROBE_DURATION)
                .with_unit("s")
                .with_description("Probe run durations.")
                .with_boundaries(PROBE_DURATION_BUCKETS.to_vec())
                .build(),
            phase_duration: meter
                .f64_histogram(OTEL_PROBE_PHASE_DURATION)
                .with_unit("s")
                .with_description("Probe phase durations, by phase.")
                .with_boundaries(PROBE_DURATION_BUCKETS.to_vec())
                .build(),
            seconds_left: meter
                .f64_gauge(OTEL_CERTIFICATE_SECONDS_LEFT)
                .with_unit("s")
                .with_description(
                    "Seconds until the certificate checked by the latest run expires.",
                )
                .build(),
            state: meter
                .u64_gauge(OTEL_MONITOR_STATE)
                .with_description("The monitor's state: 1 for the current state, 0 for the others.")
                .build(),
            deliveries: meter
                .u64_counter(OTEL_ALERT_DELIVERIES)
                .with_description("Alert delivery attempts by channel and result.")
                .build(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            version_label: format!("version=\"{}\"", escape(env!("CARGO_PKG_VERSION"))),
            probes: RwLock::default(),
            channels: RwLock::default(),
            lateness: Histogram::new(),
            duration_le: Le::new(PROBE_DURATION_BUCKETS),
            lateness_le: Le::new(LATENESS_BUCKETS),
            config_ok: AtomicU8::new(NO_STATE),
            config_at: AtomicF64::new(0.0),
            last_len: AtomicUsize::new(0),
            restarts: Mutex::default(),
            store_up: AtomicU8::new(NO_STATE),
            store_pending: AtomicU64::new(0),
            store_dropped: AtomicU64::new(0),
            otel: OtelInstruments::new(&opentelemetry::global::meter("sonde")),
        }
    }

    /// Makes a probe known before its first run (so its counters start at 0).
    /// A probe's kind and health set are fixed at its first registration.
    pub fn register_probe(&self, probe: &str, kind: &str, health_set: &str) {
        self.probe(probe, kind, health_set);
    }

    /// Drops the series of every probe `keep` refuses (a reload removed them).
    pub(crate) fn retain_probes(&self, keep: impl Fn(&str) -> bool) {
        retain(&self.probes, keep);
    }

    /// Drops the series of every channel `keep` refuses.
    pub(crate) fn retain_channels(&self, keep: impl Fn(&str) -> bool) {
        retain(&self.channels, keep);
    }

    /// Makes a supervised task known before its first restart (counter at 0).
    pub(crate) fn register_task(&self, task: &str) {
        self.restarts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(task.to_string())
            .or_insert(0);
    }

    pub(crate) fn task_restarted(&self, task: &str) {
        *self
            .restarts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(task.to_string())
            .or_insert(0) += 1;
    }

    #[cfg(test)]
    /// How often `task` was restarted.
    pub(crate) fn task_restarts(&self, task: &str) -> u64 {
        self.restarts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(task)
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn store_state(&self, up: bool, pending: u64, dropped: u64) {
        self.store_up.store(u8::from(up), Ordering::Relaxed);
        self.store_pending.store(pending, Ordering::Relaxed);
        self.store_dropped.store(dropped, Ordering::Relaxed);
    }

    /// Makes a channel known before its first delivery (counters at 0).
    pub(crate) fn register_channel(&self, channel: &str) {
        self.channel(channel);
    }

    fn probe(&self, probe: &str, kind: &str, health_set: &str) -> Arc<ProbeSeries> {
        get_or_insert(&self.probes, probe, || {
            ProbeSeries::new(probe, kind, health_set)
        })
    }

    fn channel(&self, channel: &str) -> Arc<ChannelSeries> {
        get_or_insert(&self.channels, channel, || ChannelSeries {
            label: format!("channel=\"{}\"", escape(channel)),
            deliveries: Default::default(),
            depth: AtomicI64::new(0),
            depth_known: AtomicBool::new(false),
            attr: KeyValue::new("channel", Arc::<str>::from(channel)),
        })
    }

    pub(crate) fn probe_run(&self, probe: &str, kind: &str, health_set: &str, o: &Outcome) {
        let s = self.probe(probe, kind, health_set);
        let duration = o.duration.as_secs_f64();
        s.add_run(status_index(o.status), category_index(o.category));
        s.duration.observe(PROBE_DURATION_BUCKETS, duration);
        let obs = |k: &str| o.observations.get(k).copied().filter(|v| v.is_finite());
        // The attributes name the probe as registered, like the labels.
        let probe_attr = ProbeSeries::attr("probe", s.escaped_name());
        let kind_attr = ProbeSeries::attr("kind", s.escaped_kind());
        let probe_kind = [probe_attr.clone(), kind_attr.clone()];
        self.otel.duration.record(duration, &probe_kind);
        for (phase, took) in &o.phases {
            let took = took.as_secs_f64();
            s.observe_phase(*phase, took);
            let [p, k] = probe_kind.clone();
            self.otel
                .phase_duration
                .record(took, &[p, k, KeyValue::new("phase", phase.as_str())]);
        }
        let [p, k] = probe_kind;
        self.otel.runs.add(
            1,
            &[
                p,
                k,
                KeyValue::new("status", o.status.as_str()),
                KeyValue::new("category", o.category.map(|c| c.as_str()).unwrap_or("")),
            ],
        );
        if let Some(left) = obs(OBS_SECONDS_LEFT) {
            self.otel
                .seconds_left
                .record(left, std::slice::from_ref(&probe_attr));
        }
        let mut latest = s.latest();
        latest.status = status_index(o.status) as u8;
        latest.duration = duration;
        latest.not_after = obs(OBS_NOT_AFTER).unwrap_or(f64::NAN);
        latest.seconds_left = obs(OBS_SECONDS_LEFT).unwrap_or(f64::NAN);
        latest.status_code = obs(OBS_STATUS_CODE).unwrap_or(f64::NAN);
    }

    pub(crate) fn probe_skipped(&self, probe: &str, kind: &str, health_set: &str) {
        self.probe(probe, kind, health_set)
            .rare()
            .skipped
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn scheduler_lateness(&self, lateness: Duration) {
        self.lateness
            .observe(LATENESS_BUCKETS, lateness.as_secs_f64());
    }

    pub(crate) fn monitor_state(
        &self,
        probe: &str,
        kind: &str,
        health_set: &str,
        state: MonitorState,
    ) {
        let s = self.probe(probe, kind, health_set);
        s.latest().state = state_index(state);
        let p = ProbeSeries::attr("probe", s.escaped_name());
        let h = ProbeSeries::attr("health_set", s.escaped_health_set());
        for other in STATES {
            self.otel.state.record(
                u64::from(other == state),
                &[p.clone(), h.clone(), KeyValue::new("state", other.as_str())],
            );
        }
    }

    pub(crate) fn delivery(&self, channel: &str, result: DeliveryResult) {
        let c = self.channel(channel);
        c.deliveries[result.index()].fetch_add(1, Ordering::Relaxed);
        self.otel.deliveries.add(
            1,
            &[c.attr.clone(), KeyValue::new("result", result.as_str())],
        );
    }

    pub(crate) fn outbox_depth(&self, channel: &str, depth: u64) {
        let c = self.channel(channel);
        c.depth
            .store(i64::try_from(depth).unwrap_or(i64::MAX), Ordering::Relaxed);
        c.depth_known.store(true, Ordering::Relaxed);
    }

    pub(crate) fn config_loaded(&self, ok: bool, at_unix_seconds: f64) {
        self.config_ok.store(u8::from(ok), Ordering::Relaxed);
        if ok {
            self.config_at.set(at_unix_seconds);
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let whole = Sink {
            out: String::with_capacity(self.last_len.load(Ordering::Relaxed) + 4096),
            chunk: usize::MAX,
            emit: |piece: String| {
                out = piece;
                Ok::<(), std::convert::Infallible>(())
            },
        };
        let Ok(()) = self.render_to(whole);
        self.last_len.store(out.len(), Ordering::Relaxed);
        out
    }

    /// `render` in pieces: `emit` takes each piece once it passed `chunk`
    /// bytes (a piece ends at a line's end, and holds at least one sample or
    /// histogram whole), and the rest at the end. An error from `emit` stops
    /// the rendering and is returned. Concatenated, the pieces are `render`'s
    /// text, so a reader of many probes holds a piece at a time, not the whole.
    pub fn render_chunks<E>(
        &self,
        chunk: usize,
        emit: impl FnMut(String) -> Result<(), E>,
    ) -> Result<(), E> {
        self.render_to(Sink {
            out: String::with_capacity(piece_capacity(chunk)),
            chunk,
            emit,
        })
    }

    fn render_to<E, F: FnMut(String) -> Result<(), E>>(&self, mut w: Sink<F>) -> Result<(), E> {
        let probes = snapshot(&self.probes);
        // One reading of each probe's latest run for all the families, so that
        // they agree with each other even when a run lands meanwhile.
        let latest: Vec<Latest> = probes.iter().map(|p| *p.latest()).collect();
        let ran = || {
            probes
                .iter()
                .zip(&latest)
                .filter_map(|(p, l)| Some((p, l, l.status()?)))
        };

        header(
            &mut w.out,
            PROBE_SUCCESS,
            "gauge",
            "Whether the latest run succeeded (ok or warning: 1; critical or unknown: 0).",
        );
        for (p, _, status) in ran() {
            let v = u64::from(matches!(status, Status::Ok | Status::Warning));
            sample_u64(&mut w.out, PROBE_SUCCESS, &[&p.labels], v);
            w.flush_full()?;
        }
        header(
            &mut w.out,
            PROBE_DURATION_SECONDS,
            "gauge",
            "How long the latest run took, in seconds.",
        );
        for (p, l, _) in ran() {
            sample_f64(&mut w.out, PROBE_DURATION_SECONDS, &[&p.labels], l.duration);
            w.flush_full()?;
        }
        header(
            &mut w.out,
            PROBE_SSL_EARLIEST_CERT_EXPIRY,
            "gauge",
            "The earliest certificate not-after in the latest run, as a Unix timestamp.",
        );
        for (p, l, _) in ran() {
            if let Some(v) = present(l.not_after) {
                sample_f64(&mut w.out, PROBE_SSL_EARLIEST_CERT_EXPIRY, &[&p.labels], v);
                w.flush_full()?;
            }
        }
        header(
            &mut w.out,
            PROBE_HTTP_STATUS_CODE,
            "gauge",
            "The HTTP status code of the latest run.",
        );
        for (p, l, _) in ran() {
            if let Some(v) = present(l.status_code) {
                sample_f64(&mut w.out, PROBE_HTTP_STATUS_CODE, &[&p.labels], v);
                w.flush_full()?;
            }
        }

        header(
            &mut w.out,
            SONDE_BUILD_INFO,
            "gauge",
            "The running sonde's version; always 1.",
        );
        sample_u64(&mut w.out, SONDE_BUILD_INFO, &[&self.version_label], 1);
        header(
            &mut w.out,
            SONDE_PROBE_STATUS,
            "gauge",
            "The latest run's status as a Nagios code: 0 ok, 1 warning, 2 critical, 3 unknown.",
        );
        for (p, _, status) in ran() {
            let code = status.exit_code() as u64;
            sample_u64(&mut w.out, SONDE_PROBE_STATUS, &[&p.labels], code);
            w.flush_full()?;
        }
        header(
            &mut w.out,
            SONDE_PROBE_RUNS_TOTAL,
            "counter",
            "Probe runs by status and category (empty when ok).",
        );
        for p in &probes {
            let out = &mut w.out;
            for (si, row) in p.run_counts().iter().enumerate() {
                for (ci, &n) in row.iter().enumerate() {
                    if n == 0 {
                        continue;
                    }
                    let category = match ci.checked_sub(1) {
                        None => "",
                        Some(c) => CATEGORIES.get(c).map_or("", |c| c.as_str()),
                    };
                    out.push_str(SONDE_PROBE_RUNS_TOTAL);
                    out.push('{');
                    out.push_str(p.probe_kind());
                    out.push_str(",status=\"");
                    out.push_str(STATUSES.get(si).map_or("", |s| s.as_str()));
                    out.push_str("\",category=\"");
                    out.push_str(category);
                    out.push_str("\"} ");
                    push_u64(out, n);
                    out.push('\n');
                }
            }
            w.flush_full()?;
        }
        header(
            &mut w.out,
            SONDE_PROBE_RUNS_SKIPPED_TOTAL,
            "counter",
            "Fires skipped because the probe's previous run was still going.",
        );
        for p in &probes {
            let n = p.skipped();
            if n > 0 {
                let labels = [p.probe_kind()];
                sample_u64(&mut w.out, SONDE_PROBE_RUNS_SKIPPED_TOTAL, &labels, n);
                w.flush_full()?;
            }
        }
        header(
            &mut w.out,
            SONDE_PROBE_DURATION_SECONDS,
            "histogram",
            "Probe run durations, in seconds.",
        );
        for p in &probes {
            if p.duration.count() > 0 {
                p.duration.render(
                    &mut w.out,
                    SONDE_PROBE_DURATION_SECONDS,
                    &[p.probe_kind()],
                    &self.duration_le,
                );
                w.flush_full()?;
            }
        }
        header(
            &mut w.out,
            SONDE_PROBE_PHASE_DURATION_SECONDS,
            "histogram",
            "Probe phase durations (from the phase's start to the next phase or the end of the run), in seconds.",
        );
        for p in &probes {
            let Some(rare) = p.rare.get() else {
                continue;
            };
            {
                // Held while this probe's phases are written, never while a
                // piece is handed over.
                let phases = rare.phases.lock().unwrap_or_else(|e| e.into_inner());
                for ph in phases.iter() {
                    ph.duration.render(
                        &mut w.out,
                        SONDE_PROBE_PHASE_DURATION_SECONDS,
                        &[p.probe_kind(), ",phase=\"", ph.phase.as_str(), "\""],
                        &self.duration_le,
                    );
                }
            }
            w.flush_full()?;
        }
        header(
            &mut w.out,
            SONDE_CERTIFICATE_SECONDS_LEFT,
            "gauge",
            "Seconds until the certificate checked by the latest run expires.",
        );
        for (p, l, _) in ran() {
            if let Some(v) = present(l.seconds_left) {
                let labels = [p.probe_only()];
                sample_f64(&mut w.out, SONDE_CERTIFICATE_SECONDS_LEFT, &labels, v);
                w.flush_full()?;
            }
        }
        header(
            &mut w.out,
            SONDE_MONITOR_STATE,
            "gauge",
            "The monitor's state: 1 for the current state, 0 for the others.",
        );
        for (p, l) in probes.iter().zip(&latest) {
            let current = l.state;
            if current == NO_STATE {
                continue;
            }
            let out = &mut w.out;
            let [probe, set] = p.probe_set();
            for (i, s) in STATES.iter().enumerate() {
                out.push_str(SONDE_MONITOR_STATE);
                out.push('{');
                out.push_str(probe);
                out.push_str(set);
                out.push_str(",state=\"");
                out.push_str(s.as_str());
                out.push_str("\"} ");
                out.push(if i == usize::from(current) { '1' } else { '0' });
                out.push('\n');
            }
            w.flush_full()?;
        }

        let channels = snapshot(&self.channels);
        header(
            &mut w.out,
            SONDE_ALERT_DELIVERIES_TOTAL,
            "counter",
            "Alert delivery attempts by channel and result.",
        );
        for c in &channels {
            let out = &mut w.out;
            for r in RESULTS {
                out.push_str(SONDE_ALERT_DELIVERIES_TOTAL);
                out.push('{');
                out.push_str(&c.label);
                out.push_str(",result=\"");
                out.push_str(r.as_str());
                out.push_str("\"} ");
                push_u64(out, c.deliveries[r.index()].load(Ordering::Relaxed));
                out.push('\n');
            }
            w.flush_full()?;
        }
        header(
            &mut w.out,
            SONDE_OUTBOX_DEPTH,
            "gauge",
            "Alerts waiting in the outbox, by channel.",
        );
        for c in &channels {
            if c.depth_known.load(Ordering::Relaxed) {
                let d = c.depth.load(Ordering::Relaxed).max(0) as u64;
                sample_u64(&mut w.out, SONDE_OUTBOX_DEPTH, &[&c.label], d);
                w.flush_full()?;
            }
        }

        // What follows is a few lines whatever the number of probes.
        let out = &mut w.out;
        header(
            out,
            SONDE_SCHEDULER_LATENESS_SECONDS,
            "histogram",
            "How late runs started against their schedule, in seconds.",
        );
        self.lateness.render(
            out,
            SONDE_SCHEDULER_LATENESS_SECONDS,
            &[],
            &self.lateness_le,
        );

        let ok = self.config_ok.load(Ordering::Relaxed);
        if ok != NO_STATE {
            header(
                out,
                SONDE_CONFIG_RELOAD_SUCCESS,
                "gauge",
                "Whether the last configuration load succeeded.",
            );
            sample_u64(out, SONDE_CONFIG_RELOAD_SUCCESS, &[], u64::from(ok));
            header(
                out,
                SONDE_CONFIG_RELOAD_TIMESTAMP_SECONDS,
                "gauge",
                "When the configuration was last loaded successfully, as a Unix timestamp.",
            );
            sample_f64(
                out,
                SONDE_CONFIG_RELOAD_TIMESTAMP_SECONDS,
                &[],
                self.config_at.get(),
            );
        }

        let mut restarts = self
            .restarts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // OTLP export runs in the SDK's threads; its restarts are its caught
        // panics (see `otel::Guarded`).
        if let Some(n) = super::otel::export_restarts() {
            *restarts.entry("telemetry_export".to_string()).or_insert(0) += n;
        }
        if !restarts.is_empty() {
            header(
                out,
                SONDE_TASK_RESTARTS_TOTAL,
                "counter",
                "Restarts of the agent's supervised tasks after a panic or an unexpected end.",
            );
            for (task, n) in restarts {
                sample_u64(
                    out,
                    SONDE_TASK_RESTARTS_TOTAL,
                    &["task=\"", &escaped(&task), "\""],
                    n,
                );
            }
        }
        let up = self.store_up.load(Ordering::Relaxed);
        if up != NO_STATE {
            header(
                out,
                SONDE_STORE_UP,
                "gauge",
                "Whether the last write to the store succeeded.",
            );
            sample_u64(out, SONDE_STORE_UP, &[], u64::from(up));
            header(
                out,
                SONDE_STORE_PENDING,
                "gauge",
                "Writes kept in memory until the store can be written again.",
            );
            let pending = self.store_pending.load(Ordering::Relaxed);
            sample_u64(out, SONDE_STORE_PENDING, &[], pending);
            header(
                out,
                SONDE_STORE_DROPPED_TOTAL,
                "counter",
                "Results dropped from memory because the store stayed unwritable (alerts are never dropped).",
            );
            let dropped = self.store_dropped.load(Ordering::Relaxed);
            sample_u64(out, SONDE_STORE_DROPPED_TOTAL, &[], dropped);
        }
        w.finish()
    }
}

/// Room above a piece's size for the lines that pass it: a probe's
/// histograms, written whole before the piece is handed over.
const CHUNK_SLACK: usize = 16 * 1024;

/// What a piece's buffer is allocated with: its size and the slack, up to a
/// MiB (a larger piece grows as it is written).
fn piece_capacity(chunk: usize) -> usize {
    chunk.min(1 << 20) + CHUNK_SLACK
}

/// Where `render_to` writes: a buffer handed to `emit` whenever it passes
/// `chunk` bytes.
struct Sink<F> {
    out: String,
    chunk: usize,
    emit: F,
}

impl<F> Sink<F> {
    /// Hands the buffer over if it passed `chunk` bytes (and is not empty).
    fn flush_full<E>(&mut self) -> Result<(), E>
    where
        F: FnMut(String) -> Result<(), E>,
    {
        if self.out.len() < self.chunk.max(1) {
            return Ok(());
        }
        let next = String::with_capacity(piece_capacity(self.chunk));
        (self.emit)(std::mem::replace(&mut self.out, next))
    }

    /// Hands the rest over.
    fn finish<E>(mut self) -> Result<(), E>
    where
        F: FnMut(String) -> Result<(), E>,
    {
        if self.out.is_empty() {
            return Ok(());
        }
        (self.emit)(std::mem::take(&mut self.out))
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    // HELP text escapes only backslash and newline.
    for ch in help.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// `labels` are pieces of `a="x",b="y"` (already escaped), none for no labels.
fn sample_start(out: &mut String, name: &str, labels: &[&str]) {
    out.push_str(name);
    if labels.iter().any(|l| !l.is_empty()) {
        out.push('{');
        for l in labels {
            out.push_str(l);
        }
        out.push('}');
    }
    out.push(' ');
}

fn sample_u64(out: &mut String, name: &str, labels: &[&str], v: u64) {
    sample_start(out, name, labels);
    push_u64(out, v);
    out.push('\n');
}

fn sample_f64(out: &mut String, name: &str, labels: &[&str], v: f64) {
    sample_start(out, name, labels);
    push_f64(out, v);
    out.push('\n');
}

fn push_u64(out: &mut String, mut v: u64) {
    // Most values are small counters: skip the formatting machinery.
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"));
}

/// A sample value as Prometheus parses it: `NaN`, `+Inf`, `-Inf`, or a decimal.
fn push_f64(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        // Rust's shortest round-trip form, never an exponent: Prometheus reads it.
        let _ = write!(out, "{v}");
    }
}

/// Escapes a label value: backslash, double quote and newline.
pub(crate) fn escape(value: &str) -> String {
    escaped(value).into_owned()
}

/// `escape`, borrowing a value that needs none (most names).
fn escaped(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    let mut s = String::with_capacity(value.len() + 2);
    for ch in value.chars() {
        match ch {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    Cow::Owned(s)
}

/// The value `escape` was given, from what it returned.
fn unescape(escaped: &str) -> Cow<'_, str> {
    if !escaped.contains('\\') {
        return Cow::Borrowed(escaped);
    }
    let mut s = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(ch) = chars.next() {
        if ch != '\\' {
            s.push(ch);
            continue;
        }
        match chars.next() {
            Some('n') => s.push('\n'),
            Some(c) => s.push(c),
            None => s.push('\\'),
        }
    }
    Cow::Owned(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: Status, category: Option<Category>, secs: f64) -> Outcome {
        let mut o = Outcome::new(status, category, "x");
        o.duration = Duration::from_secs_f64(secs);
        o
    }

    fn lines(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape("line\nnext"), "line\\nnext");
        assert_eq!(escape("plain-name_1.x"), "plain-name_1.x");
        let m = Metrics::new();
        m.probe_run(
            "we\"ird\\name\n",
            "http",
            "set",
            &outcome(Status::Ok, None, 0.1),
        );
        let text = m.render();
        assert!(
            text.contains(
                "probe_success{probe=\"we\\\"ird\\\\name\\n\",kind=\"http\",health_set=\"set\"} 1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn blackbox_series_follow_the_latest_run() {
        let m = Metrics::new();
        let o = outcome(Status::Ok, None, 0.25)
            .with(OBS_NOT_AFTER, 1_900_000_000.0)
            .with(OBS_SECONDS_LEFT, 86_400.5)
            .with("key_bits", 2048.0);
        m.probe_run("cert", "certificate", "push", &o);
        let o =
            outcome(Status::Critical, Some(Category::Network), 1.5).with(OBS_STATUS_CODE, 503.0);
        m.probe_run("web", "http", "default", &o);
        let text = m.render();
        let l = r#"probe="cert",kind="certificate",health_set="push""#;
        let w = r#"probe="web",kind="http",health_set="default""#;
        for want in [
            format!("probe_success{{{l}}} 1"),
            format!("probe_duration_seconds{{{l}}} 0.25"),
            format!("probe_ssl_earliest_cert_expiry{{{l}}} 1900000000"),
            "sonde_certificate_seconds_left{probe=\"cert\"} 86400.5".to_string(),
            format!("probe_success{{{w}}} 0"),
            format!("probe_http_status_code{{{w}}} 503"),
            format!("sonde_probe_status{{{w}}} 2"),
            r#"sonde_probe_runs_total{probe="web",kind="http",status="critical",category="network"} 1"#.to_string(),
            r#"sonde_probe_runs_total{probe="cert",kind="certificate",status="ok",category=""} 1"#.to_string(),
            format!("sonde_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION")),
        ] {
            assert!(text.lines().any(|x| x == want), "missing {want} in\n{text}");
        }
        // Only what was observed: no expiry for the http probe, no status code for the file.
        assert_eq!(lines(&text, "probe_ssl_earliest_cert_expiry{").len(), 1);
        assert_eq!(lines(&text, "probe_http_status_code{").len(), 1);
        // A later run without the observation drops the series, as blackbox does.
        m.probe_run(
            "cert",
            "certificate",
            "push",
            &outcome(Status::Critical, Some(Category::Tls), 0.1),
        );
        let text = m.render();
        assert!(lines(&text, "probe_ssl_earliest_cert_expiry{").is_empty());
        assert!(text.contains(&format!("probe_success{{{l}}} 0\n")));
    }

    #[test]
    fn registered_probe_without_a_run_has_no_probe_series() {
        let m = Metrics::new();
        m.register_probe("idle", "http", "default");
        let text = m.render();
        assert!(lines(&text, "probe_success{").is_empty());
        assert!(lines(&text, "sonde_probe_duration_seconds_bucket{").is_empty());
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_le_inclusive() {
        let m = Metrics::new();
        for secs in [0.004, 0.005, 0.3, 2.0, 75.0] {
            m.probe_run("p", "http", "d", &outcome(Status::Ok, None, secs));
        }
        let text = m.render();
        let buckets = lines(&text, "sonde_probe_duration_seconds_bucket{");
        assert_eq!(buckets.len(), PROBE_DURATION_BUCKETS.len() + 1);
        let value = |le: &str| -> u64 {
            let want = format!("le=\"{le}\"}} ");
            let l = buckets.iter().find(|l| l.contains(&want)).unwrap();
            l.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert_eq!(value("0.005"), 2, "0.005 is inside le=0.005");
        assert_eq!(value("0.25"), 2);
        assert_eq!(value("0.5"), 3);
        assert_eq!(value("2.5"), 4);
        assert_eq!(value("60"), 4);
        assert_eq!(value("+Inf"), 5);
        assert!(text.contains("sonde_probe_duration_seconds_count{probe=\"p\",kind=\"http\"} 5\n"));
        let sum = lines(&text, "sonde_probe_duration_seconds_sum{")[0].clone();
        let sum: f64 = sum.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((sum - 77.309).abs() < 1e-9, "{sum}");
        // The unlabelled histogram has no stray comma.
        m.scheduler_lateness(Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("sonde_scheduler_lateness_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("sonde_scheduler_lateness_seconds_count 1\n"));
    }

    #[test]
    fn phases_are_histograms_by_probe_kind_and_phase() {
        let m = Metrics::new();
        let mut o = outcome(Status::Ok, None, 1.2);
        o.phases = vec![
            (Phase::MetadataFetch, Duration::from_millis(200)),
            (Phase::TokenRequest, Duration::from_secs(1)),
        ];
        m.probe_run("tok", "token", "d", &o);
        // A run without phases adds none.
        m.probe_run("web", "http", "d", &outcome(Status::Ok, None, 0.1));
        let text = m.render();
        let counts = lines(&text, "sonde_probe_phase_duration_seconds_count{");
        assert_eq!(
            counts,
            [
                r#"sonde_probe_phase_duration_seconds_count{probe="tok",kind="token",phase="metadata_fetch"} 1"#,
                r#"sonde_probe_phase_duration_seconds_count{probe="tok",kind="token",phase="token_request"} 1"#,
            ]
        );
        for want in [
            r#"sonde_probe_phase_duration_seconds_bucket{probe="tok",kind="token",phase="metadata_fetch",le="0.1"} 0"#,
            r#"sonde_probe_phase_duration_seconds_bucket{probe="tok",kind="token",phase="metadata_fetch",le="0.25"} 1"#,
            r#"sonde_probe_phase_duration_seconds_bucket{probe="tok",kind="token",phase="token_request",le="0.5"} 0"#,
            r#"sonde_probe_phase_duration_seconds_bucket{probe="tok",kind="token",phase="token_request",le="1"} 1"#,
            r#"sonde_probe_phase_duration_seconds_bucket{probe="tok",kind="token",phase="token_request",le="+Inf"} 1"#,
            r#"sonde_probe_phase_duration_seconds_sum{probe="tok",kind="token",phase="metadata_fetch"} 0.2"#,
        ] {
            assert!(text.lines().any(|l| l == want), "missing {want} in\n{text}");
        }
        assert_eq!(
            lines(&text, "sonde_probe_phase_duration_seconds_bucket{").len(),
            2 * (PROBE_DURATION_BUCKETS.len() + 1)
        );
        assert!(text.contains("# TYPE sonde_probe_phase_duration_seconds histogram\n"));
        // A second run adds to the same series, in `Phase::ALL` order.
        let mut o = outcome(Status::Ok, None, 0.5);
        o.phases = vec![
            (Phase::TokenRequest, Duration::from_millis(300)),
            (Phase::CredentialRead, Duration::from_millis(1)),
        ];
        m.probe_run("tok", "token", "d", &o);
        let text = m.render();
        let counts = lines(&text, "sonde_probe_phase_duration_seconds_count{");
        assert_eq!(
            counts,
            [
                r#"sonde_probe_phase_duration_seconds_count{probe="tok",kind="token",phase="credential_read"} 1"#,
                r#"sonde_probe_phase_duration_seconds_count{probe="tok",kind="token",phase="metadata_fetch"} 1"#,
                r#"sonde_probe_phase_duration_seconds_count{probe="tok",kind="token",phase="token_request"} 2"#,
            ]
        );
    }

    #[test]
    fn monitor_state_is_one_hot() {
        let m = Metrics::new();
        m.monitor_state("p", "http", "set", MonitorState::Degraded);
        m.monitor_state("p", "http", "set", MonitorState::Unhealthy);
        let text = m.render();
        let states = lines(&text, "sonde_monitor_state{");
        assert_eq!(states.len(), STATES.len());
        assert!(states.contains(
            &r#"sonde_monitor_state{probe="p",health_set="set",state="unhealthy"} 1"#.to_string()
        ));
        assert_eq!(states.iter().filter(|l| l.ends_with(" 1")).count(), 1);
    }

    #[test]
    fn channels_deliveries_outbox_and_config() {
        let m = Metrics::new();
        m.register_channel("ops-mail");
        m.delivery("ops-mail", DeliveryResult::Failed);
        m.delivery("ops-mail", DeliveryResult::Delivered);
        m.delivery("ops-mail", DeliveryResult::Delivered);
        m.outbox_depth("ops-mail", 3);
        let text = m.render();
        assert!(text.contains(
            "sonde_alert_deliveries_total{channel=\"ops-mail\",result=\"delivered\"} 2\n"
        ));
        assert!(text
            .contains("sonde_alert_deliveries_total{channel=\"ops-mail\",result=\"refused\"} 0\n"));
        assert!(text.contains("sonde_outbox_depth{channel=\"ops-mail\"} 3\n"));
        assert!(!text.contains("sonde_config_reload_success"));
        m.config_loaded(true, 1_780_000_000.0);
        m.config_loaded(false, 1_780_000_100.0);
        let text = m.render();
        assert!(text.contains("sonde_config_reload_success 0\n"));
        assert!(text.contains("sonde_config_reload_timestamp_seconds 1780000000\n"));
    }

    #[test]
    fn every_family_has_help_and_type_once() {
        let m = Metrics::new();
        m.probe_run("a", "http", "d", &outcome(Status::Ok, None, 0.1));
        m.probe_run("b", "http", "d", &outcome(Status::Ok, None, 0.1));
        m.config_loaded(true, 1.0);
        let text = m.render();
        let types = lines(&text, "# TYPE ");
        let mut names: Vec<&str> = types.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "a family declared twice");
        assert_eq!(lines(&text, "# HELP ").len(), n);
        // Every sample belongs to the family declared last before it.
        let mut family = "";
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap();
            } else if !l.starts_with('#') {
                assert!(l.starts_with(family), "{l} outside {family}");
            }
        }
    }

    #[test]
    fn values_are_formatted_as_prometheus_reads_them() {
        let f = |v: f64| {
            let mut s = String::new();
            push_f64(&mut s, v);
            s
        };
        assert_eq!(f(f64::NAN), "NaN");
        assert_eq!(f(f64::INFINITY), "+Inf");
        assert_eq!(f(f64::NEG_INFINITY), "-Inf");
        assert_eq!(f(3.0), "3");
        assert_eq!(f(-2.0), "-2");
        assert_eq!(f(0.000123), "0.000123");
        assert_eq!(f(1e20), "100000000000000000000");
        let u = |v: u64| {
            let mut s = String::new();
            push_u64(&mut s, v);
            s
        };
        assert_eq!(u(0), "0");
        assert_eq!(u(7), "7");
        assert_eq!(u(1234567890), "1234567890");
        assert_eq!(u(u64::MAX), u64::MAX.to_string());
    }

    #[test]
    fn retain_probes_drops_the_series_of_removed_probes() {
        let m = Metrics::new();
        for name in ["a", "gone", "c"] {
            m.register_probe(name, "http", "default");
            m.probe_run(name, "http", "default", &Outcome::ok("fine"));
        }
        m.retain_probes(|name| name != "gone");
        let text = m.render();
        assert!(!text.contains("probe=\"gone\""), "{text}");
        assert!(text.contains("probe=\"a\""));
        assert!(text.contains("probe=\"c\""));
        // Still usable after: a new run of a kept probe updates its series.
        m.probe_run("c", "http", "default", &Outcome::ok("fine"));
        m.probe_run("d", "http", "default", &Outcome::ok("fine"));
        assert!(m.render().contains("probe=\"d\""));
    }

    /// A registry with many probes and every kind of series, names that need
    /// escaping among them.
    fn busy(probes: usize) -> Metrics {
        let m = Metrics::new();
        for i in 0..probes {
            let name = if i % 5 == 0 {
                format!("we\"ird\\{i}\n")
            } else {
                format!("probe-{i}")
            };
            let set = format!("set-{}", i % 4);
            m.register_probe(&name, "token", &set);
            if i % 9 == 8 {
                continue;
            }
            let mut o = outcome(
                STATUSES[i % STATUSES.len()],
                Some(CATEGORIES[i % CATEGORIES.len()]),
                0.001 * i as f64,
            )
            .with(OBS_STATUS_CODE, 200.0)
            .with(OBS_SECONDS_LEFT, 1.5 * i as f64);
            o.phases = vec![(Phase::TokenRequest, Duration::from_millis(i as u64))];
            m.probe_run(&name, "token", &set, &o);
            m.probe_run(&name, "token", &set, &outcome(Status::Ok, None, 0.2));
            if i % 3 == 0 {
                m.probe_skipped(&name, "token", &set);
                m.monitor_state(&name, "token", &set, MonitorState::Healthy);
            }
        }
        m.register_channel("ops");
        m.outbox_depth("ops", 1);
        m.config_loaded(true, 1.0);
        m.task_restarted("consumer");
        m.store_state(true, 0, 0);
        m
    }

    #[test]
    fn pieces_put_together_are_the_whole_rendering() {
        let m = busy(500);
        let whole = m.render();
        for chunk in [0, 1, 100, 4096, 64 * 1024, usize::MAX] {
            let mut pieces = Vec::new();
            let done: Result<(), ()> = m.render_chunks(chunk, |p| {
                pieces.push(p);
                Ok(())
            });
            assert_eq!(done, Ok(()));
            assert_eq!(pieces.concat(), whole, "pieces of {chunk} bytes");
            // Each piece but the last passed the size, and ends a line.
            let (last, full) = pieces.split_last().unwrap();
            assert!(full.iter().all(|p| p.len() >= chunk && p.ends_with('\n')));
            assert!(!last.is_empty() && last.ends_with('\n'));
            if chunk == 4096 {
                assert!(pieces.len() > whole.len() / (2 * chunk), "{}", pieces.len());
                // A piece holds what passed the size, a probe's series at most.
                assert!(full.iter().all(|p| p.len() < chunk + CHUNK_SLACK));
            }
        }
    }

    #[test]
    fn a_refused_piece_stops_the_rendering() {
        let m = busy(300);
        let mut calls = 0;
        let done = m.render_chunks(1024, |_| {
            calls += 1;
            if calls == 2 {
                Err("gone")
            } else {
                Ok(())
            }
        });
        assert_eq!(done, Err("gone"));
        assert_eq!(calls, 2, "no piece after the refused one");
    }

    #[test]
    fn runs_of_more_pairs_than_slots_keep_their_order() {
        let m = Metrics::new();
        // Every pair once, then once more, in reverse order: the first pairs
        // seen take the slots, the others go to the matrix. (An ok run has
        // no category.)
        let mut pairs = vec![(Status::Ok, None)];
        for s in &STATUSES[1..] {
            pairs.push((*s, None));
            for c in CATEGORIES {
                pairs.push((*s, Some(c)));
            }
        }
        for _ in 0..2 {
            for (s, c) in pairs.iter().rev() {
                m.probe_run("p", "http", "d", &outcome(*s, *c, 0.1));
            }
        }
        let want: Vec<String> = pairs
            .iter()
            .map(|(s, c)| {
                format!(
                    "sonde_probe_runs_total{{probe=\"p\",kind=\"http\",status=\"{}\",category=\"{}\"}} 2",
                    s.as_str(),
                    c.map_or("", |c| c.as_str())
                )
            })
            .collect();
        assert_eq!(lines(&m.render(), "sonde_probe_runs_total{"), want);
    }

    #[test]
    fn runs_recorded_from_many_threads_all_count() {
        let m = Metrics::new();
        let pairs = [
            (Status::Ok, None),
            (Status::Critical, Some(Category::Timeout)),
            (Status::Critical, Some(Category::Network)),
            (Status::Warning, Some(Category::Certificate)),
            (Status::Unknown, Some(Category::Internal)),
        ];
        std::thread::scope(|scope| {
            for t in 0..8 {
                let m = &m;
                scope.spawn(move || {
                    for i in 0..1000 {
                        let (s, c) = pairs[(t + i) % pairs.len()];
                        m.probe_run("p", "http", "d", &outcome(s, c, 0.1));
                    }
                });
            }
        });
        let runs = lines(&m.render(), "sonde_probe_runs_total{");
        assert_eq!(runs.len(), pairs.len(), "each pair once: {runs:?}");
        let total: u64 = runs
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, 8000);
        assert!(runs.iter().all(|l| l.ends_with(" 1600")), "{runs:?}");
    }

    #[test]
    fn escaped_names_read_back_as_given() {
        for name in ["plain", "a\\b\"c\nd", "\\", "\\n", "\"\"", "ü\\\n"] {
            assert_eq!(unescape(&escape(name)), name);
            let s = ProbeSeries::new(name, "k\"ind", "set\\");
            assert_eq!(s.escaped_name(), escape(name));
            assert_eq!(unescape(s.escaped_kind()), "k\"ind");
            assert_eq!(unescape(s.escaped_health_set()), "set\\");
        }
        // Removal and lookup go by the name as given, not as escaped.
        let m = Metrics::new();
        m.register_probe("a\"b", "http", "d");
        m.register_probe("a\\\"b", "http", "d");
        m.retain_probes(|n| n == "a\"b");
        m.probe_run("a\"b", "http", "d", &Outcome::ok("fine"));
        let text = m.render();
        assert_eq!(lines(&text, "probe_success{").len(), 1, "{text}");
        assert!(!text.contains(r#"probe="a\\\"b""#), "{text}");
    }
}
