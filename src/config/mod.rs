//! Configuration: the schema of `sonde.toml` and included probe files, `${VAR}`
//! substitution, and validation that reports every error at once, each with
//! file:line:column and key path.
//!
//! Loading is pure apart from reading files and the environment, which come in
//! through `Loader`. Each table is deserialized on its own from the spanned TOML
//! tree, so one bad probe does not hide the errors of the next.

pub(crate) mod env;
mod include;
pub(crate) mod timestamp;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{IntoDeserializer, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::channel::{ChannelSpec, CHANNEL_KINDS};
use crate::clock::{Clock, SystemClock};
use crate::monitor::{MaintenanceWindow, Policy};
use crate::probe::{ProbeSpec, KINDS};
use crate::schedule::Schedule;

/// The default config file, relative to the working directory.
pub const DEFAULT_PATH: &str = "sonde.toml";

/// The default interval of a probe with neither `schedule` nor `every`.
pub(crate) const DEFAULT_EVERY: Duration = Duration::from_secs(60);

/// One configuration problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem concerns the file as a whole.
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `probe[2].timeout`; empty for syntax errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a configuration, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A loaded, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The main file.
    pub path: PathBuf,
    pub agent: AgentConfig,
    pub store: StoreConfig,
    /// The HTTP API (`/healthz`, `/metrics`…), served only when `[api]` is present.
    pub api: Option<ApiConfig>,
    pub telemetry: TelemetryConfig,
    pub channels: Vec<ChannelConfig>,
    pub probes: Vec<ProbeConfig>,
    pub maintenance: Vec<MaintenanceConfig>,
    /// What is valid but likely a mistake (a `timeout` longer than `every`),
    /// located like errors. `validate` prints them and `run` logs them; they
    /// change no exit code.
    pub warnings: Vec<ConfigError>,
    /// Each probe's position in `probes`, by name: a lookup by name must not
    /// cost a scan of every probe (the engine does one per result, a reload one
    /// per probe).
    probe_index: HashMap<String, usize>,
}

impl Config {
    pub fn probe(&self, name: &str) -> Option<&ProbeConfig> {
        self.probe_position(name).map(|i| &self.probes[i])
    }

    /// The position of the probe `name` in `probes`.
    pub(crate) fn probe_position(&self, name: &str) -> Option<usize> {
        if self.probe_index.len() != self.probes.len() {
            // `probes` was changed after loading: the index no longer holds.
            return self.probes.iter().position(|p| p.name == name);
        }
        self.probe_index
            .get(name)
            .copied()
            .filter(|&i| self.probes.get(i).is_some_and(|p| p.name == name))
    }

    /// The first `[[maintenance]]` window that covers `probe` and is active at `now`.
    pub(crate) fn maintenance_at(
        &self,
        probe: &ProbeConfig,
        now: DateTime<Utc>,
    ) -> Option<&MaintenanceConfig> {
        self.maintenance
            .iter()
            .find(|w| w.covers(probe) && w.window.active_at(now))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Probes running at once, across all probes.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// How long a shutdown waits for in-flight runs.
    #[serde(default = "default_drain", with = "crate::human::duration")]
    pub drain_timeout: Duration,
    /// A channel that has not delivered for this long raises an alert on the others.
    #[serde(
        default = "default_channel_unhealthy_after",
        with = "crate::human::duration"
    )]
    pub channel_unhealthy_after: Duration,
    /// `[agent.heartbeat]`: the dead-man's switch.
    #[serde(default)]
    pub heartbeat: Option<HeartbeatConfig>,
}

/// `[agent.heartbeat]`: every `every`, an always-firing `SondeHeartbeat` alert
/// to each of `channels` (alertmanager channels only: refused at validation
/// on any other kind) and an HTTP GET of `url`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    #[serde(with = "crate::human::duration")]
    pub every: Duration,
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default)]
    pub url: Option<String>,
}

fn default_channel_unhealthy_after() -> Duration {
    Duration::from_secs(300)
}

fn default_max_concurrent() -> usize {
    64
}
fn default_drain() -> Duration {
    Duration::from_secs(10)
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            max_concurrent: default_max_concurrent(),
            drain_timeout: default_drain(),
            channel_unhealthy_after: default_channel_unhealthy_after(),
            heartbeat: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
}

fn default_store_path() -> PathBuf {
    PathBuf::from("sonde.db")
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: default_store_path(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// An IP address and port; not a host name.
    #[serde(default = "default_listen", deserialize_with = "socket_addr")]
    pub listen: std::net::SocketAddr,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// On-demand runs (`POST /api/v1/probes/{name}/run`): at most one per probe
    /// per this interval; `0s` turns the limit off.
    #[serde(default = "default_run_min_interval", with = "crate::human::duration")]
    pub run_min_interval: Duration,
}

fn default_run_min_interval() -> Duration {
    Duration::from_secs(10)
}

fn socket_addr<'de, D: serde::Deserializer<'de>>(de: D) -> Result<std::net::SocketAddr, D::Error> {
    let text = String::deserialize(de)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not an IP address and port such as 127.0.0.1:9323 (host names are not accepted)"
        ))
    })
}

fn default_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9323))
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_listen(),
            token_env: None,
            token_file: None,
            run_min_interval: default_run_min_interval(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    #[serde(default)]
    pub log_format: LogFormat,
    /// A tracing filter directive such as `info` or `sonde=debug`; `RUST_LOG` wins.
    pub log_level: Option<String>,
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` or `grpc`; unset leaves it to `OTEL_EXPORTER_OTLP_*PROTOCOL`.
    pub otlp_protocol: Option<OtlpProtocol>,
}

/// The OTLP transports this build speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "grpc")]
    Grpc,
}

/// One probe, with the common keys resolved and the kind's keys in `spec`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    pub name: String,
    pub health_set: String,
    pub schedule: Schedule,
    pub timeout: Duration,
    pub alert: Vec<String>,
    pub depends_on: Vec<String>,
    pub enabled: bool,
    /// Extra attempts of a failed run within the same run (the runner's business).
    pub retries: u32,
    /// The monitor settings, checked against their bounds.
    pub policy: Policy,
    pub spec: ProbeSpec,
    /// Where the probe's table and its keys sit.
    pub site: Site,
    /// Relative paths in `spec` resolve against this directory.
    pub base_dir: Arc<Path>,
}

/// A configured channel (`[[channel]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelConfig {
    pub name: String,
    pub spec: ChannelSpec,
    /// Where the channel's table and its keys sit.
    pub site: Site,
    /// Relative paths in `spec` (`*_file`, `ca_file`) resolve against this
    /// directory: the one of the file that defines the channel.
    pub base_dir: PathBuf,
}

impl ChannelConfig {
    /// The channel ready to deliver (`Channel::new` with this config's directory).
    pub fn build(&self) -> Result<crate::channel::Channel, crate::spec::BuildError> {
        crate::channel::Channel::new(&self.name, &self.spec, &self.base_dir)
    }
}

/// Where a `[[probe]]` or `[[channel]]` table sits: its file, its key path and
/// the position of the table and of each of its keys, so that a problem found
/// after loading (when building) points at the key it concerns, in the file
/// that defines the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Shared by the tables of one file.
    pub file: Arc<Path>,
    /// The table's key path within its file, e.g. `probe[3]`.
    pub path: String,
    pub line: usize,
    pub column: usize,
    /// Each key of the table with the line and column of its value; the names
    /// are shared by the tables of one file.
    keys: Box<[(Arc<str>, u32, u32)]>,
}

impl Site {
    fn new(src: &Source, path: &str, table: &Spanned<DeValue<'_>>) -> Self {
        let (line, column) = src.position(table.span().start);
        let keys = match table.get_ref() {
            DeValue::Table(t) => t
                .iter()
                .map(|(k, v)| {
                    let (line, column) = src.position(v.span().start);
                    let narrow = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                    (
                        src.intern(k.get_ref().as_ref()),
                        narrow(line),
                        narrow(column),
                    )
                })
                .collect(),
            _ => Box::default(),
        };
        Site {
            file: src.path.clone(),
            path: path.to_string(),
            line,
            column,
            keys,
        }
    }

    /// A problem with `key` of this table (empty: the table as a whole), placed
    /// at the key's value when the table sets it, at the table otherwise.
    pub(crate) fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let at = self
            .keys
            .iter()
            .find(|(k, _, _)| !key.is_empty() && &**k == key)
            .map(|&(_, line, column)| (line as usize, column as usize));
        let (line, column) = at.unwrap_or((self.line, self.column));
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            key: if key.is_empty() {
                self.path.clone()
            } else {
                format!("{}.{key}", self.path)
            },
            message: message.into(),
        }
    }
}

impl ProbeConfig {
    pub(crate) fn kind(&self) -> &'static str {
        self.spec.kind()
    }
}

/// Keys every `[[probe]]` table may have beside its kind's and the monitor
/// policy's (`Policy::KEYS`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonKeys {
    name: String,
    kind: String,
    health_set: Option<String>,
    schedule: Option<String>,
    #[serde(default, with = "crate::human::duration::option")]
    every: Option<Duration>,
    #[serde(default, with = "crate::human::duration::option")]
    timeout: Option<Duration>,
    #[serde(default)]
    alert: Vec<String>,
    #[serde(default)]
    depends_on: Vec<String>,
    enabled: Option<bool>,
    retries: Option<u32>,
}

const COMMON_KEYS: &[&str] = &[
    "name",
    "kind",
    "health_set",
    "schedule",
    "every",
    "timeout",
    "alert",
    "depends_on",
    "enabled",
    "retries",
];

const TOP_KEYS: &[&str] = &[
    "include",
    "agent",
    "store",
    "api",
    "telemetry",
    "channel",
    "probe",
    "maintenance",
];

/// Reads files and the environment for the loader; tests substitute both.
pub struct Loader<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Default for Loader<'_> {
    fn default() -> Self {
        Loader {
            env: &|name| std::env::var(name).ok(),
        }
    }
}

/// Loads and validates the configuration at `path` with the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    Loader::default().load(path)
}

/// A file's text after substitution, for turning byte offsets into positions.
struct Source {
    path: Arc<Path>,
    /// The key names of its tables, each stored once (`Site` keeps them).
    names: std::cell::RefCell<HashSet<Arc<str>>>,
    /// The text parsed: the file after `${VAR}` substitution.
    text: String,
    /// The file as written, when substitution changed it, with the splices
    /// that map offsets of `text` back to it: positions refer to the file.
    written: Option<(String, Vec<env::Splice>)>,
    lines: LineIndex,
}

impl Source {
    fn new(path: PathBuf, text: String) -> Self {
        let lines = LineIndex::new(&text);
        Source {
            path: path.into(),
            names: Default::default(),
            text,
            written: None,
            lines,
        }
    }

    /// `name`, shared with the other tables of this file that use it.
    fn intern(&self, name: &str) -> Arc<str> {
        let mut names = self.names.borrow_mut();
        if let Some(shared) = names.get(name) {
            return shared.clone();
        }
        let shared: Arc<str> = name.into();
        names.insert(shared.clone());
        shared
    }

    /// `text` substituted from `written` (`splices` say where they differ).
    fn substituted(
        path: PathBuf,
        text: String,
        written: String,
        splices: Vec<env::Splice>,
    ) -> Self {
        if splices.is_empty() {
            return Source::new(path, text);
        }
        let lines = LineIndex::new(&written);
        Source {
            path: path.into(),
            names: Default::default(),
            text,
            written: Some((written, splices)),
            lines,
        }
    }

    /// Line and column in the file as written of byte `offset` of `text`.
    fn position(&self, offset: usize) -> (usize, usize) {
        match &self.written {
            None => self.lines.position(&self.text, offset),
            Some((written, splices)) => self
                .lines
                .position(written, env::raw_offset(splices, offset)),
        }
    }
}

/// Where each line of a text starts, computed once per file: turning an offset
/// into line:column is then a binary search and a walk along one line, so that
/// locating every table of a large file stays linear in its size.
struct LineIndex {
    /// Byte offset of the first character of each line; `starts[0]` is 0.
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    /// 1-based line and column (in characters) of byte `offset` of `text`, the
    /// text this index was made from. An offset inside a character counts as
    /// that character; one past the end is the position after the last character.
    fn position(&self, text: &str, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(text, offset.min(text.len()));
        // starts[0] == 0 <= offset, so at least one line starts at or before it.
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let column = text[start..offset].chars().count() + 1;
        (line, column)
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Collects errors and warnings for one file.
struct Report<'s> {
    src: &'s Source,
    errors: &'s mut Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    /// When the config is loaded: a cron schedule must fire after it.
    now: DateTime<Utc>,
}

impl Report<'_> {
    fn warn(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        let (line, column) = self.src.position(span.start);
        self.warnings.push(ConfigError {
            file: self.src.path.to_path_buf(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        });
    }

    fn at(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        let (line, column) = self.src.position(span.start);
        self.errors.push(ConfigError {
            file: self.src.path.to_path_buf(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        });
    }

    /// Records a deserialization error of the value at `value` whose path is `prefix`,
    /// locating the innermost key the error's span falls in.
    fn de_error(&mut self, err: toml::de::Error, prefix: &str, value: &Spanned<DeValue<'_>>) {
        let span = err.span().unwrap_or_else(|| value.span());
        let key = key_path_at(prefix, value, span.start);
        self.at(span, key, err.message().trim().to_string());
    }
}

/// The dotted path of the innermost key or array element whose key or value
/// contains `offset`.
fn key_path_at(prefix: &str, value: &Spanned<DeValue<'_>>, offset: usize) -> String {
    match value.get_ref() {
        DeValue::Table(table) => {
            for (k, v) in table.iter() {
                let inside_key = k.span().contains(&offset);
                let inside_value = v.span().contains(&offset);
                if inside_key || inside_value {
                    let path = join_key(prefix, k.get_ref());
                    return if inside_value {
                        key_path_at(&path, v, offset)
                    } else {
                        path
                    };
                }
            }
            prefix.to_string()
        }
        DeValue::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                if v.span().contains(&offset) {
                    return key_path_at(&format!("{prefix}[{i}]"), v, offset);
                }
            }
            prefix.to_string()
        }
        _ => prefix.to_string(),
    }
}

fn join_key(prefix: &str, key: &str) -> String {
    let key = if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

fn deserialize<'de, T: Deserialize<'de>>(
    value: Spanned<DeValue<'de>>,
) -> Result<T, toml::de::Error> {
    T::deserialize(value.into_deserializer())
}

/// Deserializes a table with `parse`, reporting every bad key rather than the
/// first: serde stops at the first error, so the key it names is dropped and the
/// rest retried.
fn deserialize_all<'de, T>(
    report: &mut Report<'_>,
    prefix: &str,
    value: &Spanned<DeValue<'de>>,
    parse: impl Fn(Spanned<DeValue<'de>>) -> Result<T, toml::de::Error>,
) -> Option<T> {
    let mut value = value.clone();
    let mut removed: Vec<String> = Vec::new();
    loop {
        match parse(value.clone()) {
            Ok(v) => return removed.is_empty().then_some(v),
            Err(e) => {
                // A required key we dropped ourselves: nothing more to learn.
                if removed
                    .iter()
                    .any(|k| e.message().starts_with(&format!("missing field `{k}`")))
                {
                    return None;
                }
                let at = e.span().map(|s| s.start);
                report.de_error(e, prefix, &value);
                let (Some(at), DeValue::Table(table)) = (at, value.get_mut()) else {
                    return None;
                };
                let key = table
                    .iter()
                    .find(|(k, v)| k.span().contains(&at) || v.span().contains(&at))
                    .map(|(k, _)| k.clone());
                let key = key?;
                removed.push(key.get_ref().to_string());
                table.remove(&key);
            }
        }
    }
}

/// A probe before cross-checks, with where its references stand.
struct Pending {
    probe: ProbeConfig,
    name_at: Located,
    depends_at: Vec<Located>,
    alert_at: Vec<Located>,
    /// Where each of `spec.references()` stands.
    refs_at: Vec<Located>,
}

#[derive(Clone)]
struct Located {
    file: Arc<Path>,
    line: usize,
    column: usize,
    key: String,
}

impl Located {
    fn new(src: &Source, span: Range<usize>, key: String) -> Self {
        let (line, column) = src.position(span.start);
        Located {
            file: src.path.clone(),
            line,
            column,
            key,
        }
    }

    fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: self.line,
            column: self.column,
            key: self.key.clone(),
            message: message.into(),
        }
    }

    fn here(&self) -> String {
        format!("{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

#[derive(Default)]
struct Parts {
    agent: Option<AgentConfig>,
    /// Where `[agent.heartbeat]` is, for the check of its channels.
    heartbeat_at: Option<Located>,
    store: Option<StoreConfig>,
    api: Option<ApiConfig>,
    telemetry: Option<TelemetryConfig>,
    channels: Vec<(ChannelConfig, Located)>,
    probes: Vec<Pending>,
    maintenance: Vec<PendingMaintenance>,
    includes: Vec<(String, Located)>,
    warnings: Vec<ConfigError>,
    /// When the config is loaded (see `Report::now`).
    now: DateTime<Utc>,
}

impl Loader<'_> {
    /// Loads and validates the configuration at `path`, as of the system clock's now.
    pub fn load(&self, path: &Path) -> Result<Config, ConfigErrors> {
        self.load_at(path, SystemClock.now())
    }

    /// Loads and validates the configuration at `path` as of `now`: a cron
    /// schedule must still fire after it.
    pub fn load_at(&self, path: &Path, now: DateTime<Utc>) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let mut parts = Parts {
            now,
            ..Parts::default()
        };
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        self.load_file(path, true, &mut parts, &mut errors);

        // Files are told apart by what they are, not how they are spelled:
        // `--config ./sonde.toml` with `include = ["*.toml"]` must not load the
        // main file again, nor `a.toml` and `./x/../a.toml` twice.
        let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let mut seen_files: HashSet<PathBuf> = HashSet::new();
        seen_files.insert(canonical(path));
        for (pattern, at) in std::mem::take(&mut parts.includes) {
            for file in include::expand(&base_dir, &pattern, &at, &mut errors) {
                if seen_files.insert(canonical(&file)) {
                    self.load_file(&file, false, &mut parts, &mut errors);
                }
            }
        }

        let channels = cross_check_channels(&parts.channels, &mut errors);
        cross_check_heartbeat(&parts, &mut errors);
        let probes = cross_check_probes(parts.probes, &channels, &mut errors);
        let maintenance = cross_check_maintenance(parts.maintenance, &probes, &mut errors);
        if !errors.is_empty() {
            // Files in the order they were read, positions in order within each.
            let mut order: Vec<PathBuf> = Vec::new();
            for e in &errors {
                if !order.contains(&e.file) {
                    order.push(e.file.clone());
                }
            }
            errors.sort_by_key(|e| (order.iter().position(|f| f == &e.file), e.line, e.column));
            return Err(ConfigErrors(errors));
        }
        let probe_index = probes
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        Ok(Config {
            probe_index,
            path: path.to_path_buf(),
            agent: parts.agent.unwrap_or_default(),
            store: parts.store.unwrap_or_default(),
            api: parts.api,
            telemetry: parts.telemetry.unwrap_or_default(),
            channels: parts.channels.into_iter().map(|(c, _)| c).collect(),
            probes,
            maintenance,
            warnings: parts.warnings,
        })
    }

    fn load_file(&self, path: &Path, main: bool, parts: &mut Parts, errors: &mut Vec<ConfigError>) {
        // Only a regular file of at most 16 MiB: a FIFO or a device named by an
        // include must not hang or flood `validate`.
        let raw = match crate::file::read_to_string_blocking(path, crate::file::MAX_CONFIG_SIZE) {
            Ok(t) => t,
            Err(e) => {
                let message = match e {
                    Some(e) => format!("cannot read config file: {e}"),
                    None => "cannot read config file: stream did not contain valid UTF-8".into(),
                };
                errors.push(ConfigError {
                    file: path.to_path_buf(),
                    line: 0,
                    column: 0,
                    key: String::new(),
                    message,
                });
                return;
            }
        };
        let env::Substituted {
            text,
            errors: subst_errors,
            splices,
        } = env::substitute(&raw, self.env);
        let raw_lines = LineIndex::new(if subst_errors.is_empty() { "" } else { &raw });
        let mut subst_lines = HashSet::new();
        for e in subst_errors {
            let (line, column) = raw_lines.position(&raw, e.offset);
            subst_lines.insert(line);
            errors.push(ConfigError {
                file: path.to_path_buf(),
                line,
                column,
                key: String::new(),
                message: e.message,
            });
        }
        let src = Source::substituted(path.to_path_buf(), text, raw, splices);
        let first = errors.len();
        self.parse_source(&src, main, parts, errors);
        // A failed substitution leaves a hole in the text; what the parser then
        // says about that line follows from it and would only mislead.
        if !subst_lines.is_empty() {
            let mut i = 0;
            errors.retain(|e| {
                i += 1;
                i <= first || !subst_lines.contains(&e.line)
            });
        }
    }

    fn parse_source(
        &self,
        src: &Source,
        main: bool,
        parts: &mut Parts,
        errors: &mut Vec<ConfigError>,
    ) {
        let path = &src.path;
        let base_dir: Arc<Path> = path.parent().unwrap_or(Path::new("")).into();
        let mut report = Report {
            src,
            errors,
            warnings: Vec::new(),
            now: parts.now,
        };
        let root = match DeTable::parse(&src.text) {
            Ok(root) => root,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                report.at(span, "", format!("invalid TOML: {}", e.message().trim()));
                return;
            }
        };
        let allowed: &[&str] = if main {
            TOP_KEYS
        } else {
            &["channel", "probe"]
        };
        for (key, value) in root.into_inner() {
            let name = key.get_ref().as_ref();
            if !allowed.contains(&name) {
                let hint = if main {
                    String::new()
                } else {
                    " (an included file holds only [[probe]] and [[channel]] tables)".into()
                };
                report.at(
                    key.span(),
                    name,
                    format!("unknown key; expected one of {}{hint}", allowed.join(", ")),
                );
                continue;
            }
            match name {
                "include" => match deserialize::<Vec<String>>(value.clone()) {
                    Ok(patterns) => {
                        let items: Vec<Range<usize>> = match value.get_ref() {
                            DeValue::Array(a) => a.iter().map(|v| v.span()).collect(),
                            _ => Vec::new(),
                        };
                        for (i, p) in patterns.into_iter().enumerate() {
                            let span = items.get(i).cloned().unwrap_or_else(|| value.span());
                            parts
                                .includes
                                .push((p, Located::new(src, span, format!("include[{i}]"))));
                        }
                    }
                    Err(e) => report.de_error(e, "include", &value),
                },
                "agent" => {
                    let at = value_span(&value, "max_concurrent");
                    let heartbeat_at = value_span(&value, "heartbeat");
                    parts.agent = section::<AgentConfig>(&mut report, "agent", value);
                    if parts.agent.as_ref().is_some_and(|a| a.max_concurrent == 0) {
                        report.at(at, "agent.max_concurrent", "must be at least 1");
                    }
                    if let Some(h) = parts.agent.as_ref().and_then(|a| a.heartbeat.as_ref()) {
                        let at = heartbeat_at;
                        if h.every < Duration::from_secs(1) {
                            report.at(at.clone(), "agent.heartbeat.every", "must be at least 1s");
                        }
                        if let Some(url) = &h.url {
                            if let Err(e) = crate::net::http::check_url(url) {
                                report.at(at.clone(), "agent.heartbeat.url", e.to_string());
                            }
                        }
                        parts.heartbeat_at =
                            Some(Located::new(src, at, "agent.heartbeat".to_string()));
                    }
                }
                "store" => parts.store = section(&mut report, "store", value),
                "api" => parts.api = section(&mut report, "api", value),
                "telemetry" => parts.telemetry = section(&mut report, "telemetry", value),
                "channel" => {
                    for (i, item) in array_of_tables(&mut report, "channel", value) {
                        if let Some(c) =
                            parse_channel(&mut report, &format!("channel[{i}]"), item, &base_dir)
                        {
                            parts.channels.push(c);
                        }
                    }
                }
                "probe" => {
                    let items = array_of_tables(&mut report, "probe", value);
                    parts.probes.reserve_exact(items.len());
                    for (i, item) in items {
                        if let Some(p) =
                            parse_probe(&mut report, &format!("probe[{i}]"), item, &base_dir)
                        {
                            parts.probes.push(p);
                        }
                    }
                }
                "maintenance" => {
                    for (i, item) in array_of_tables(&mut report, "maintenance", value) {
                        if let Some(m) =
                            parse_maintenance(&mut report, &format!("maintenance[{i}]"), item)
                        {
                            parts.maintenance.push(m);
                        }
                    }
                }
                _ => unreachable!("key filtered by TOP_KEYS"),
            }
        }
        parts.warnings.append(&mut report.warnings);
    }
}

fn section<'de, T: Deserialize<'de>>(
    report: &mut Report<'_>,
    key: &str,
    value: Spanned<DeValue<'de>>,
) -> Option<T> {
    if !matches!(value.get_ref(), DeValue::Table(_)) {
        report.at(value.span(), key, format!("expected a table [{key}]"));
        return None;
    }
    match deserialize::<T>(value.clone()) {
        Ok(v) => Some(v),
        Err(e) => {
            report.de_error(e, key, &value);
            None
        }
    }
}

fn array_of_tables<'de>(
    report: &mut Report<'_>,
    key: &str,
    value: Spanned<DeValue<'de>>,
) -> Vec<(usize, Spanned<DeValue<'de>>)> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| {
                if matches!(item.get_ref(), DeValue::Table(_)) {
                    Some((i, item))
                } else {
                    report.at(
                        item.span(),
                        format!("{key}[{i}]"),
                        format!("expected a table ([[{key}]])"),
                    );
                    None
                }
            })
            .collect(),
        _ => {
            report.at(
                span,
                key,
                format!("expected an array of tables ([[{key}]])"),
            );
            Vec::new()
        }
    }
}

/// Splits a table into (common keys, the rest), keeping spans.
fn split_table<'de>(
    table: Spanned<DeValue<'de>>,
    common: &[&str],
) -> (Spanned<DeValue<'de>>, Spanned<DeValue<'de>>) {
    let span = table.span();
    let mut a = DeTable::new();
    let mut b = DeTable::new();
    if let DeValue::Table(t) = table.into_inner() {
        for (k, v) in t {
            if common.contains(&k.get_ref().as_ref()) {
                a.insert(k, v);
            } else {
                b.insert(k, v);
            }
        }
    }
    (
        Spanned::new(span.clone(), DeValue::Table(a)),
        Spanned::new(span, DeValue::Table(b)),
    )
}

/// The span of `key`'s value in `table`, or of the table itself.
fn value_span(table: &Spanned<DeValue<'_>>, key: &str) -> Range<usize> {
    match table.get_ref() {
        DeValue::Table(t) => t
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v.span())
            .unwrap_or_else(|| table.span()),
        _ => table.span(),
    }
}

/// Spans of the items of the array at `key`.
fn item_spans(table: &Spanned<DeValue<'_>>, key: &str) -> Vec<Range<usize>> {
    match table.get_ref() {
        DeValue::Table(t) => match t.iter().find(|(k, _)| k.get_ref().as_ref() == key) {
            Some((_, v)) => match v.get_ref() {
                DeValue::Array(a) => a.iter().map(|i| i.span()).collect(),
                _ => vec![v.span()],
            },
            None => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn valid_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The most characters a name (probe, channel, health set, maintenance window)
/// may have: names are labels, columns and file-like keys, not documents.
pub(crate) const NAME_MAX: usize = 128;

/// What is wrong with `name` (`what`: "name", "health set"), as a message that
/// quotes at most the start of it; `None` when it is a good name.
fn name_problem(what: &str, name: &str) -> Option<String> {
    let count = name.chars().count();
    let shown = crate::human::text::peer(name);
    if count > NAME_MAX {
        Some(format!(
            "invalid {what} `{}`: {count} characters long, at most {NAME_MAX} are allowed",
            crate::human::text::clip(&shown, 40)
        ))
    } else if !valid_name(name) {
        Some(format!("invalid {what} `{shown}`: {NAME_RULE}"))
    } else {
        None
    }
}

const NAME_RULE: &str =
    "names start with a letter or digit and hold only letters, digits, `-`, `_` and `.`";

fn parse_probe(
    report: &mut Report<'_>,
    prefix: &str,
    table: Spanned<DeValue<'_>>,
    base_dir: &Arc<Path>,
) -> Option<Pending> {
    let (common_v, rest) = split_table(table.clone(), COMMON_KEYS);
    let (policy_v, kind_v) = split_table(rest, Policy::KEYS);
    let common: Option<CommonKeys> = deserialize_all(report, prefix, &common_v, deserialize);
    let policy: Option<Policy> = deserialize_all(report, prefix, &policy_v, deserialize);
    // The kind's keys are checked even when the common ones failed, so that all
    // errors show at once; without a readable `kind` there is nothing to check them against.
    let kind = match &common {
        Some(c) => Some(c.kind.clone()),
        None => match &table.get_ref() {
            DeValue::Table(t) => t
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == "kind")
                .and_then(|(_, v)| v.get_ref().as_str().map(str::to_string)),
            _ => None,
        },
    };
    let kind_at = value_span(&table, "kind");
    let spec = match kind {
        None => None,
        Some(kind) if !KINDS.contains(&kind.as_str()) => {
            report.at(
                kind_at.clone(),
                format!("{prefix}.kind"),
                format!(
                    "unknown probe kind `{kind}`; expected one of {}",
                    KINDS.join(", ")
                ),
            );
            None
        }
        Some(kind) => deserialize_all(report, prefix, &kind_v, |v| {
            ProbeSpec::deserialize(&kind, v.into_deserializer())?
                .ok_or_else(|| serde::de::Error::custom(format!("unknown probe kind `{kind}`")))
        }),
    };
    if let Some(spec) = &spec {
        for problem in spec.validate() {
            let (span, key) = if problem.key.is_empty() {
                (table.span(), prefix.to_string())
            } else {
                (
                    value_span(&table, problem.key),
                    format!("{prefix}.{}", problem.key),
                )
            };
            report.at(span, key, problem.message);
        }
    }
    let (common, policy) = (common?, policy?);
    let mut ok = true;
    let given = |key: &str| match policy_v.get_ref() {
        DeValue::Table(t) => t.iter().any(|(k, _)| k.get_ref().as_ref() == key),
        _ => false,
    };
    for problem in policy.validate(&given) {
        report.at(
            value_span(&table, problem.key),
            format!("{prefix}.{}", problem.key),
            problem.message,
        );
        ok = false;
    }
    if let Some(problem) = name_problem("name", &common.name) {
        report.at(
            value_span(&table, "name"),
            format!("{prefix}.name"),
            problem,
        );
        ok = false;
    }
    let health_set = common.health_set.unwrap_or_else(|| "default".into());
    if let Some(problem) = name_problem("health set", &health_set) {
        report.at(
            value_span(&table, "health_set"),
            format!("{prefix}.health_set"),
            problem,
        );
        ok = false;
    }
    let schedule = match (&common.schedule, common.every) {
        (Some(_), Some(_)) => {
            report.at(
                value_span(&table, "every"),
                format!("{prefix}.every"),
                "give `schedule` or `every`, not both",
            );
            None
        }
        (Some(text), None) => match Schedule::cron_after(text, report.now) {
            Ok(s) => Some(s),
            Err(msg) => {
                report.at(
                    value_span(&table, "schedule"),
                    format!("{prefix}.schedule"),
                    msg,
                );
                None
            }
        },
        (None, every) => {
            let every = every.unwrap_or(DEFAULT_EVERY);
            if every < Duration::from_secs(1) {
                report.at(
                    value_span(&table, "every"),
                    format!("{prefix}.every"),
                    "must be at least 1s",
                );
                None
            } else {
                Some(Schedule::every(every, &common.name))
            }
        }
    };
    let timeout = common.timeout.unwrap_or(Duration::from_secs(30));
    if let Some(need) = spec.as_ref().and_then(ProbeSpec::min_timeout) {
        if timeout <= need {
            report.at(
                value_span(&table, "timeout"),
                format!("{prefix}.timeout"),
                format!(
                    "must be longer than the probe's deadline ({}); it is {}",
                    humantime::format_duration(need),
                    humantime::format_duration(timeout)
                ),
            );
            ok = false;
        }
    }
    if timeout.is_zero() {
        report.at(
            value_span(&table, "timeout"),
            format!("{prefix}.timeout"),
            "must be more than 0s",
        );
        ok = false;
    }
    // Only a `timeout` the user wrote: the default (30s) against a short `every`
    // is common and the skipped fires show in the log and metrics anyway.
    if let (Some(timeout), Some(Schedule::Every { every, .. })) = (common.timeout, &schedule) {
        if timeout > *every {
            report.warn(
                value_span(&table, "timeout"),
                format!("{prefix}.timeout"),
                format!(
                    "{} is longer than `every` ({}): a run that lasts that long makes the \
                     probe skip its next fire",
                    humantime::format_duration(timeout),
                    humantime::format_duration(*every)
                ),
            );
        }
    }
    let (spec, schedule) = (spec?, schedule?);
    if !ok {
        return None;
    }
    let site = Site::new(report.src, prefix, &table);
    let at = |key: &str| -> Vec<Located> {
        item_spans(&table, key)
            .into_iter()
            .enumerate()
            .map(|(i, s)| Located::new(report.src, s, format!("{prefix}.{key}[{i}]")))
            .collect()
    };
    let depends_at = at("depends_on");
    let refs_at = spec
        .references()
        .into_iter()
        .map(|(key, _, _)| {
            Located::new(
                report.src,
                value_span(&table, key),
                format!("{prefix}.{key}"),
            )
        })
        .collect();
    let alert_at = at("alert");
    Some(Pending {
        name_at: Located::new(
            report.src,
            value_span(&table, "name"),
            format!("{prefix}.name"),
        ),
        depends_at,
        alert_at,
        refs_at,
        probe: ProbeConfig {
            name: common.name,
            health_set,
            schedule,
            timeout,
            alert: common.alert,
            depends_on: common.depends_on,
            enabled: common.enabled.unwrap_or(true),
            retries: common.retries.unwrap_or(0),
            policy,
            spec,
            site,
            base_dir: base_dir.clone(),
        },
    })
}

/// The probes a `[[maintenance]]` window covers by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeSelection {
    /// `"*"`: every probe.
    All,
    Named(Vec<String>),
}

impl<'de> Deserialize<'de> for ProbeSelection {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct SelectionVisitor;

        impl<'de> Visitor<'de> for SelectionVisitor {
            type Value = ProbeSelection;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a list of probe names, or "*""#)
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                if text == "*" {
                    Ok(ProbeSelection::All)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(text), &self))
                }
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(if names.iter().any(|n| n == "*") {
                    ProbeSelection::All
                } else {
                    ProbeSelection::Named(names)
                })
            }
        }

        de.deserialize_any(SelectionVisitor)
    }
}

impl Default for ProbeSelection {
    fn default() -> Self {
        ProbeSelection::Named(Vec::new())
    }
}

/// One `[[maintenance]]` table: while its window is active, the probes it covers
/// show `maintenance` and send no notices.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceConfig {
    pub name: String,
    pub probes: ProbeSelection,
    pub health_sets: Vec<String>,
    pub window: MaintenanceWindow,
    /// The file that defines it, and the line of its table.
    pub file: PathBuf,
    pub line: usize,
}

impl MaintenanceConfig {
    /// Whether the window covers `probe`, by name or by health set.
    pub(crate) fn covers(&self, probe: &ProbeConfig) -> bool {
        let by_name = match &self.probes {
            ProbeSelection::All => true,
            ProbeSelection::Named(names) => names.contains(&probe.name),
        };
        by_name || self.health_sets.contains(&probe.health_set)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceKeys {
    name: String,
    probes: Option<ProbeSelection>,
    #[serde(default)]
    health_sets: Vec<String>,
    schedule: Option<String>,
    #[serde(default, with = "crate::human::duration::option")]
    duration: Option<Duration>,
    #[serde(default, with = "timestamp::option")]
    from: Option<DateTime<Utc>>,
    #[serde(default, with = "timestamp::option")]
    to: Option<DateTime<Utc>>,
}

/// A maintenance window before cross-checks, with where its references stand.
struct PendingMaintenance {
    config: MaintenanceConfig,
    name_at: Located,
    probes_at: Vec<Located>,
    sets_at: Vec<Located>,
}

fn parse_maintenance(
    report: &mut Report<'_>,
    prefix: &str,
    table: Spanned<DeValue<'_>>,
) -> Option<PendingMaintenance> {
    let keys: MaintenanceKeys = deserialize_all(report, prefix, &table, deserialize)?;
    let mut ok = true;
    let mut error = |report: &mut Report<'_>, key: &str, message: String| {
        let (span, path) = if key.is_empty() {
            (table.span(), prefix.to_string())
        } else {
            (value_span(&table, key), format!("{prefix}.{key}"))
        };
        report.at(span, path, message);
        ok = false;
    };
    if let Some(problem) = name_problem("name", &keys.name) {
        error(report, "name", problem);
    }
    let probes = keys.probes.unwrap_or_default();
    if probes == ProbeSelection::Named(Vec::new()) && keys.health_sets.is_empty() {
        error(
            report,
            "",
            r#"the window covers nothing: give `probes` (names, or "*" for all) or `health_sets`"#
                .into(),
        );
    }
    let recurring = keys.schedule.is_some() || keys.duration.is_some();
    let one_off = keys.from.is_some() || keys.to.is_some();
    let window = match (keys.schedule, keys.duration, keys.from, keys.to) {
        _ if recurring && one_off => {
            let key = if keys.from.is_some() { "from" } else { "to" };
            error(
                report,
                key,
                "give `schedule` with `duration` (a recurring window) or `from` with `to` \
                 (a one-off window), not both"
                    .into(),
            );
            None
        }
        (Some(text), Some(duration), _, _) => {
            let schedule = match Schedule::cron_after(&text, report.now) {
                Ok(s) => Some(s),
                Err(msg) => {
                    error(report, "schedule", msg);
                    None
                }
            };
            if duration.is_zero() {
                error(report, "duration", "must be more than 0s".into());
            }
            schedule.map(|schedule| MaintenanceWindow::Recurring { schedule, duration })
        }
        (Some(_), None, _, _) => {
            error(
                report,
                "schedule",
                "a `schedule` needs a `duration`: how long each window lasts".into(),
            );
            None
        }
        (None, Some(_), _, _) => {
            error(
                report,
                "duration",
                "a `duration` needs a `schedule`: when each window starts".into(),
            );
            None
        }
        (None, None, Some(from), Some(to)) => {
            if to <= from {
                error(
                    report,
                    "to",
                    format!(
                        "must be after `from` ({})",
                        from.to_rfc3339_opts(SecondsFormat::AutoSi, true)
                    ),
                );
                None
            } else {
                Some(MaintenanceWindow::OneOff { from, to })
            }
        }
        (None, None, Some(_), None) => {
            error(report, "from", "a `from` needs a `to`".into());
            None
        }
        (None, None, None, Some(_)) => {
            error(report, "to", "a `to` needs a `from`".into());
            None
        }
        (None, None, None, None) => {
            error(
                report,
                "",
                "no window: give `schedule` with `duration` (a recurring window) or \
                 `from` with `to` (a one-off window)"
                    .into(),
            );
            None
        }
    };
    let window = window?;
    if !ok {
        return None;
    }
    let at = |key: &str| -> Vec<Located> {
        item_spans(&table, key)
            .into_iter()
            .enumerate()
            .map(|(i, s)| Located::new(report.src, s, format!("{prefix}.{key}[{i}]")))
            .collect()
    };
    let (probes_at, sets_at) = (at("probes"), at("health_sets"));
    let (line, _) = report.src.position(table.span().start);
    Some(PendingMaintenance {
        name_at: Located::new(
            report.src,
            value_span(&table, "name"),
            format!("{prefix}.name"),
        ),
        probes_at,
        sets_at,
        config: MaintenanceConfig {
            name: keys.name,
            probes,
            health_sets: keys.health_sets,
            window,
            file: report.src.path.to_path_buf(),
            line,
        },
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelCommon {
    name: String,
    kind: String,
}

fn parse_channel(
    report: &mut Report<'_>,
    prefix: &str,
    table: Spanned<DeValue<'_>>,
    base_dir: &Path,
) -> Option<(ChannelConfig, Located)> {
    let (common_v, kind_v) = split_table(table.clone(), &["name", "kind"]);
    let common: ChannelCommon = match deserialize(common_v.clone()) {
        Ok(c) => c,
        Err(e) => {
            report.de_error(e, prefix, &common_v);
            return None;
        }
    };
    if !CHANNEL_KINDS.contains(&common.kind.as_str()) {
        report.at(
            value_span(&table, "kind"),
            format!("{prefix}.kind"),
            format!(
                "unknown channel kind `{}`; expected one of {}",
                common.kind,
                CHANNEL_KINDS.join(", ")
            ),
        );
        return None;
    }
    // Every unknown or bad key of the kind, not only the first.
    let kind = common.kind.as_str();
    let spec = deserialize_all(report, prefix, &kind_v, |v| {
        ChannelSpec::deserialize(kind, v.into_deserializer())?
            .ok_or_else(|| serde::de::Error::custom(format!("unknown channel kind `{kind}`")))
    })?;
    let mut ok = true;
    for problem in spec.validate() {
        report.at(
            value_span(&table, problem.key),
            format!("{prefix}.{}", problem.key),
            problem.message,
        );
        ok = false;
    }
    if let Some(problem) = name_problem("name", &common.name) {
        report.at(
            value_span(&table, "name"),
            format!("{prefix}.name"),
            problem,
        );
        ok = false;
    }
    let at = Located::new(
        report.src,
        value_span(&table, "name"),
        format!("{prefix}.name"),
    );
    ok.then_some((
        ChannelConfig {
            name: common.name,
            spec,
            site: Site::new(report.src, prefix, &table),
            base_dir: base_dir.to_path_buf(),
        },
        at,
    ))
}

fn cross_check_channels(
    channels: &[(ChannelConfig, Located)],
    errors: &mut Vec<ConfigError>,
) -> HashSet<String> {
    let mut seen: HashMap<&str, &Located> = HashMap::new();
    for (c, at) in channels {
        if let Some(first) = seen.get(c.name.as_str()) {
            errors.push(at.error(format!(
                "duplicate channel name `{}` (first defined at {})",
                c.name,
                first.here()
            )));
        } else {
            seen.insert(&c.name, at);
        }
    }
    seen.keys().map(|s| s.to_string()).collect()
}

/// A heartbeat goes to alertmanager channels only: elsewhere an alert that
/// always fires would page someone every beat.
fn cross_check_heartbeat(parts: &Parts, errors: &mut Vec<ConfigError>) {
    let (Some(h), Some(at)) = (
        parts.agent.as_ref().and_then(|a| a.heartbeat.as_ref()),
        parts.heartbeat_at.as_ref(),
    ) else {
        return;
    };
    for name in &h.channels {
        match parts.channels.iter().find(|(c, _)| &c.name == name) {
            None => errors.push(at.error(format!("heartbeat channel `{name}` is not defined"))),
            Some((c, _)) if c.spec.kind() != "alertmanager" => errors.push(at.error(format!(
                "heartbeat channel `{name}` is a {} channel: a heartbeat goes to alertmanager channels only",
                c.spec.kind()
            ))),
            Some(_) => {}
        }
    }
}

fn cross_check_probes(
    pending: Vec<Pending>,
    channels: &HashSet<String>,
    errors: &mut Vec<ConfigError>,
) -> Vec<ProbeConfig> {
    // Each name's first definition: lookups stay linear in the number of probes.
    let mut seen: HashMap<&str, &Pending> = HashMap::new();
    for p in &pending {
        if let Some(first) = seen.get(p.probe.name.as_str()) {
            errors.push(p.name_at.error(format!(
                "duplicate probe name `{}` (first defined at {})",
                p.probe.name,
                first.name_at.here()
            )));
        } else {
            seen.insert(&p.probe.name, p);
        }
    }
    for p in &pending {
        for (i, dep) in p.probe.depends_on.iter().enumerate() {
            let at = p.depends_at.get(i).unwrap_or(&p.name_at);
            if dep == &p.probe.name {
                errors.push(at.error("a probe cannot depend on itself"));
            } else if !seen.contains_key(dep.as_str()) {
                errors.push(at.error(format!("depends on unknown probe `{dep}`")));
            }
        }
        for (i, (_, name, kind)) in p.probe.spec.references().into_iter().enumerate() {
            let at = p.refs_at.get(i).unwrap_or(&p.name_at);
            match seen.get(name) {
                None => errors.push(at.error(format!("no probe named `{name}`"))),
                Some(o) if o.probe.kind() != kind => errors.push(at.error(format!(
                    "`{name}` is a `{}` probe; expected a `{kind}` probe",
                    o.probe.kind()
                ))),
                Some(_) => {}
            }
        }
        for (i, ch) in p.probe.alert.iter().enumerate() {
            if !channels.contains(ch) {
                let at = p.alert_at.get(i).unwrap_or(&p.name_at);
                let known = if channels.is_empty() {
                    "no [[channel]] is configured".to_string()
                } else {
                    let mut names: Vec<&str> = channels.iter().map(String::as_str).collect();
                    names.sort();
                    format!("configured: {}", names.join(", "))
                };
                errors.push(at.error(format!("unknown alert channel `{ch}` ({known})")));
            }
        }
    }
    if let Some(cycle) = find_cycle(&pending) {
        let first = &pending[cycle[0]];
        let names: Vec<&str> = cycle
            .iter()
            .map(|&i| pending[i].probe.name.as_str())
            .collect();
        errors.push(first.name_at.error(format!(
            "dependency cycle: {} -> {}",
            names.join(" -> "),
            names[0]
        )));
    }
    drop(seen);
    // A fresh vector of exactly the probes: collecting in place would keep the
    // larger `Pending` allocation (and its doubling slack) for the agent's life.
    let mut probes = Vec::with_capacity(pending.len());
    probes.extend(pending.into_iter().map(|p| p.probe));
    probes
}

fn cross_check_maintenance(
    pending: Vec<PendingMaintenance>,
    probes: &[ProbeConfig],
    errors: &mut Vec<ConfigError>,
) -> Vec<MaintenanceConfig> {
    let mut seen: HashMap<&str, &Located> = HashMap::new();
    // Names and sets looked up once each: a window may list thousands.
    let probe_names: HashSet<&str> = probes.iter().map(|p| p.name.as_str()).collect();
    let set_names: HashSet<&str> = probes.iter().map(|p| p.health_set.as_str()).collect();
    for m in &pending {
        if let Some(first) = seen.get(m.config.name.as_str()) {
            errors.push(m.name_at.error(format!(
                "duplicate maintenance name `{}` (first defined at {})",
                m.config.name,
                first.here()
            )));
        } else {
            seen.insert(&m.config.name, &m.name_at);
        }
        if let ProbeSelection::Named(names) = &m.config.probes {
            for (i, name) in names.iter().enumerate() {
                if !probe_names.contains(name.as_str()) {
                    let at = m.probes_at.get(i).unwrap_or(&m.name_at);
                    errors.push(at.error(format!("no probe named `{name}`")));
                }
            }
        }
        for (i, set) in m.config.health_sets.iter().enumerate() {
            if !set_names.contains(set.as_str()) {
                let at = m.sets_at.get(i).unwrap_or(&m.name_at);
                errors.push(at.error(format!("no probe is in health set `{set}`")));
            }
        }
    }
    pending.into_iter().map(|m| m.config).collect()
}

/// Indices of the probes on a `depends_on` cycle, if any.
fn find_cycle(pending: &[Pending]) -> Option<Vec<usize>> {
    let index: HashMap<&str, usize> = pending
        .iter()
        .enumerate()
        .map(|(i, p)| (p.probe.name.as_str(), i))
        .collect();
    // 0 = unvisited, 1 = on the path, 2 = done. Depth-first with an explicit
    // path (node, next dependency to look at): a chain of 100,000 probes
    // must not exhaust the thread's stack.
    let mut state = vec![0u8; pending.len()];
    for root in 0..pending.len() {
        if state[root] != 0 {
            continue;
        }
        state[root] = 1;
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(top) = path.last_mut() {
            let (i, next) = *top;
            let Some(dep) = pending[i].probe.depends_on.get(next) else {
                state[i] = 2;
                path.pop();
                continue;
            };
            top.1 += 1;
            let Some(&j) = index.get(dep.as_str()) else {
                continue;
            };
            if j == i {
                continue; // reported as self-dependency
            }
            match state[j] {
                1 => {
                    let from = path.iter().position(|&(k, _)| k == j).unwrap_or(0);
                    return Some(path[from..].iter().map(|&(k, _)| k).collect());
                }
                0 => {
                    state[j] = 1;
                    path.push((j, 0));
                }
                _ => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Config, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sonde.toml");
        std::fs::write(&path, text).unwrap();
        Loader { env: &|_| None }.load(&path)
    }

    fn t(text: &str) -> DateTime<Utc> {
        timestamp::parse(text).unwrap()
    }

    const PROBES: &str = r#"
[[probe]]
name = "web"
kind = "http"
url = "http://127.0.0.1:8080/"
health_set = "site"

[[probe]]
name = "api"
kind = "http"
url = "http://127.0.0.1:8080/api"
health_set = "backend"
retries = 2
remind_every = "1h"
remind_backoff = 2
remind_max = "8h"
notify_resolved = false
flap_low = 10
flap_high = 45.5
"#;

    #[test]
    fn config_files_up_to_sixteen_mib_are_read_and_larger_ones_refused() {
        // 10,000 probes take about a megabyte: a file past the 1 MiB cap of
        // other files still loads.
        let padding = format!("# {}\n", "x".repeat(1023)).repeat(1536);
        let config = load_text(&format!("{padding}{PROBES}")).unwrap();
        assert_eq!(config.probes.len(), 2);
        let huge = format!("# {}\n", "x".repeat(1023)).repeat(16 * 1024 + 1);
        let errors = load_text(&huge).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0].message,
            format!(
                "cannot read config file: larger than {} bytes",
                16 * 1024 * 1024
            )
        );
    }

    #[test]
    fn a_long_dependency_chain_loads_and_a_long_cycle_is_named() {
        // 20,000 probes each depending on the next, loaded on a thread with a
        // 512 KiB stack: the cycle check walks the chain without recursion
        // (a frame per probe would need more than that).
        let n = 20_000;
        let chain = |last_dep: &str| {
            let mut text = String::new();
            for i in 0..n {
                let dep = if i + 1 < n {
                    format!("p{}", i + 1)
                } else {
                    last_dep.to_string()
                };
                let deps = if dep.is_empty() {
                    String::new()
                } else {
                    format!("depends_on = [\"{dep}\"]\n")
                };
                text.push_str(&format!(
                    "[[probe]]\nname = \"p{i}\"\nkind = \"http\"\nurl = \"http://127.0.0.1:1/\"\n{deps}\n"
                ));
            }
            text
        };
        let small_stack = |text: String| {
            std::thread::Builder::new()
                .stack_size(512 * 1024)
                .spawn(move || load_text(&text))
                .unwrap()
                .join()
                .unwrap()
        };
        let config = small_stack(chain("")).unwrap();
        assert_eq!(config.probes.len(), n);
        let errors = small_stack(chain("p0")).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .message
                .starts_with("dependency cycle: p0 -> p1 -> p2 -> "),
            "{}",
            &errors[0].message[..80]
        );
        assert!(errors[0].message.ends_with(&format!("p{} -> p0", n - 1)));
    }

    #[test]
    fn positions_count_characters_and_find_the_last_line() {
        // "é" is two bytes, "€" three: columns count characters, not bytes.
        let text = "a = 1\nné = \"€x\"\n\nlast = 2";
        let lines = LineIndex::new(text);
        let at = |needle: &str| lines.position(text, text.find(needle).unwrap());
        assert_eq!(at("a ="), (1, 1));
        assert_eq!(at("\nné"), (1, 6), "the line break belongs to its line");
        assert_eq!(at("né"), (2, 1));
        assert_eq!(at("= \""), (2, 4));
        assert_eq!(at("x\""), (2, 8));
        assert_eq!(at("\nlast"), (3, 1), "an empty line");
        assert_eq!(at("last"), (4, 1));
        // The last line has no line break; the end is just past its last character.
        assert_eq!(lines.position(text, text.len()), (4, 9));
        assert_eq!(lines.position(text, text.len() + 10), (4, 9));
        // An offset inside "€" counts as "€" itself.
        let euro = text.find('€').unwrap();
        assert_eq!(lines.position(text, euro + 1), (2, 7));
        // A text that ends with a line break has an empty last line.
        let text = "x = 1\n";
        assert_eq!(LineIndex::new(text).position(text, text.len()), (2, 1));
        assert_eq!(LineIndex::new("").position("", 0), (1, 1));
    }

    #[test]
    fn monitor_keys_have_defaults_and_are_read() {
        let config = load_text(PROBES).unwrap();
        let web = config.probe("web").unwrap();
        assert_eq!(
            (
                web.retries,
                web.policy.failure_threshold,
                web.policy.success_threshold
            ),
            (0, 3, 2)
        );
        assert_eq!(
            (
                web.policy.remind_every,
                web.policy.remind_backoff,
                web.policy.remind_max
            ),
            (None, 1.0, None)
        );
        assert!(web.policy.notify_resolved);
        assert_eq!((web.policy.flap_low, web.policy.flap_high), (20.0, 30.0));
        let api = config.probe("api").unwrap();
        assert_eq!(api.retries, 2);
        assert_eq!(api.policy.remind_every, Some(Duration::from_secs(3600)));
        assert_eq!(api.policy.remind_backoff, 2.0);
        assert_eq!(api.policy.remind_max, Some(Duration::from_secs(8 * 3600)));
        assert!(!api.policy.notify_resolved);
        assert_eq!((api.policy.flap_low, api.policy.flap_high), (10.0, 45.5));
        assert!(config.maintenance.is_empty());
    }

    #[test]
    fn maintenance_windows_are_read_and_cover_their_probes() {
        let text = format!(
            "{PROBES}{}",
            r#"
[[maintenance]]
name = "nightly"
probes = ["web"]
schedule = "0 22 * * *"
duration = "4h"

[[maintenance]]
name = "migration"
health_sets = ["backend"]
from = 2025-06-01T22:00:00Z
to = "2025-06-02T04:00:00+02:00"

[[maintenance]]
name = "everything"
probes = "*"
from = "2025-07-01T00:00:00Z"
to = "2025-07-01T01:00:00Z"
"#
        );
        let config = load_text(&text).unwrap();
        let [nightly, migration, everything] = &config.maintenance[..] else {
            panic!("{:?}", config.maintenance);
        };
        assert_eq!(nightly.probes, ProbeSelection::Named(vec!["web".into()]));
        assert_eq!(
            migration.window,
            MaintenanceWindow::OneOff {
                from: t("2025-06-01T22:00:00Z"),
                to: t("2025-06-02T02:00:00Z"),
            }
        );
        assert_eq!(everything.probes, ProbeSelection::All);
        let (web, api) = (config.probe("web").unwrap(), config.probe("api").unwrap());
        assert!(nightly.covers(web) && !nightly.covers(api));
        assert!(migration.covers(api) && !migration.covers(web));
        assert!(everything.covers(web) && everything.covers(api));

        let name = |p, at| config.maintenance_at(p, t(at)).map(|m| m.name.as_str());
        assert_eq!(name(web, "2025-06-01T23:00:00Z"), Some("nightly"));
        assert_eq!(name(api, "2025-06-01T23:00:00Z"), Some("migration"));
        assert_eq!(name(api, "2025-06-02T02:00:00Z"), None);
        assert_eq!(name(web, "2025-06-02T02:00:00Z"), None);
        assert_eq!(name(api, "2025-07-01T00:30:00Z"), Some("everything"));
    }
}
