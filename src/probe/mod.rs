//! Probes: the `Probe` trait, the `Outcome` every run produces, and the closed
//! `ProbeSpec` enum that maps a config `kind` to its implementation.
//!
//! Adding a kind means: a file beside this one (its config, validation, run and unit
//! tests), one `ProbeSpec` variant and one arm in each `match` below. The runner
//! (`crate::runner`) owns timeouts, timing, spans and panic isolation; probes only probe.

pub mod certificate;
pub mod http;
pub mod metadata;
pub mod push;
pub mod token;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;

/// Nagios-compatible result status; `exit_code` is the plugin exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Status {
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Critical => "critical",
            Status::Unknown => "unknown",
        }
    }

    /// Severity order used to combine checks: ok < warning < unknown < critical.
    pub fn severity(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Unknown => 2,
            Status::Critical => 3,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a run was not ok. Low-cardinality: it is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Config,
    Network,
    Tls,
    Certificate,
    Auth,
    Protocol,
    Timeout,
    Push,
    Internal,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Config => "config",
            Category::Network => "network",
            Category::Tls => "tls",
            Category::Certificate => "certificate",
            Category::Auth => "auth",
            Category::Protocol => "protocol",
            Category::Timeout => "timeout",
            Category::Push => "push",
            Category::Internal => "internal",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one probe run. Failures are data: a bad target is an `Outcome`,
/// never an `Err` or a panic.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: Status,
    /// Set when `status` is not ok.
    pub category: Option<Category>,
    /// One line, safe to show anywhere: never a secret.
    pub summary: String,
    /// Named numbers, snake_case with a unit suffix (`seconds_left`, `key_bits`).
    pub observations: BTreeMap<String, f64>,
    /// Filled in by the runner.
    pub started_at: DateTime<Utc>,
    /// Filled in by the runner.
    pub duration: Duration,
}

impl Outcome {
    pub fn new(status: Status, category: Option<Category>, summary: impl Into<String>) -> Self {
        Outcome {
            status,
            category: if status == Status::Ok { None } else { category },
            summary: summary.into(),
            observations: BTreeMap::new(),
            started_at: DateTime::<Utc>::UNIX_EPOCH,
            duration: Duration::ZERO,
        }
    }

    pub fn ok(summary: impl Into<String>) -> Self {
        Self::new(Status::Ok, None, summary)
    }

    pub fn warning(category: Category, summary: impl Into<String>) -> Self {
        Self::new(Status::Warning, Some(category), summary)
    }

    pub fn critical(category: Category, summary: impl Into<String>) -> Self {
        Self::new(Status::Critical, Some(category), summary)
    }

    pub fn unknown(category: Category, summary: impl Into<String>) -> Self {
        Self::new(Status::Unknown, Some(category), summary)
    }

    /// Adds an observation (builder style).
    pub fn with(mut self, name: &str, value: f64) -> Self {
        self.observations.insert(name.to_string(), value);
        self
    }

    pub fn observe(&mut self, name: &str, value: f64) {
        self.observations.insert(name.to_string(), value);
    }
}

/// What a probe may use while it runs. Time comes from `clock`, never from
/// the system clock directly.
#[derive(Clone)]
pub struct ProbeContext {
    pub clock: Arc<dyn Clock>,
    /// The probe's configured timeout; the runner enforces it, probes may use it
    /// to size their own inner deadlines (connect, read).
    pub timeout: Duration,
}

/// A runnable probe. Implementations live one per file in this module.
pub trait Probe: Send + Sync {
    fn run<'a>(&'a self, ctx: &'a ProbeContext) -> BoxFuture<'a, Outcome>;
}

/// Kind-specific configuration, one variant per kind. The config loader picks the
/// variant from `kind` and deserializes the remaining keys into it (unknown keys are
/// errors).
// Specs are built once at load time; their size does not matter, boxing would only
// make matching noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeSpec {
    Certificate(certificate::CertificateConfig),
    Http(http::HttpConfig),
    Metadata(metadata::MetadataConfig),
    Token(token::TokenConfig),
    Push(push::PushConfig),
}

/// The kinds the config accepts, in the order the README documents them.
pub const KINDS: &[&str] = &["certificate", "http", "metadata", "token", "push"];

/// A problem found while validating a kind's settings: the key it concerns
/// (empty for the table as a whole) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    pub key: &'static str,
    pub message: String,
}

impl SpecProblem {
    pub fn new(key: &'static str, message: impl Into<String>) -> Self {
        SpecProblem {
            key,
            message: message.into(),
        }
    }
}

impl ProbeSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeSpec::Certificate(_) => "certificate",
            ProbeSpec::Http(_) => "http",
            ProbeSpec::Metadata(_) => "metadata",
            ProbeSpec::Token(_) => "token",
            ProbeSpec::Push(_) => "push",
        }
    }

    /// Deserializes the kind-specific keys of a probe table.
    pub fn deserialize<'de, D>(kind: &str, de: D) -> Result<Option<Self>, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        Ok(Some(match kind {
            "certificate" => ProbeSpec::Certificate(Deserialize::deserialize(de)?),
            "http" => ProbeSpec::Http(Deserialize::deserialize(de)?),
            "metadata" => ProbeSpec::Metadata(Deserialize::deserialize(de)?),
            "token" => ProbeSpec::Token(Deserialize::deserialize(de)?),
            "push" => ProbeSpec::Push(Deserialize::deserialize(de)?),
            _ => return Ok(None),
        }))
    }

    /// Pure checks of the kind's settings (no I/O besides none): every problem at once.
    pub fn validate(&self) -> Vec<SpecProblem> {
        match self {
            ProbeSpec::Certificate(c) => c.validate(),
            ProbeSpec::Http(c) => c.validate(),
            ProbeSpec::Metadata(c) => c.validate(),
            ProbeSpec::Token(c) => c.validate(),
            ProbeSpec::Push(c) => c.validate(),
        }
    }

    /// Nagios warn/crit ranges for the perfdata of `sonde probe --format nagios`.
    pub fn perf_thresholds(&self) -> Vec<crate::output::Threshold> {
        match self {
            ProbeSpec::Certificate(c) => vec![crate::output::Threshold {
                observation: "seconds_left",
                warn: Some(format!("{}:", c.warn_before.as_secs())),
                crit: Some(format!("{}:", c.critical_before.as_secs())),
            }],
            ProbeSpec::Metadata(c) => vec![crate::output::Threshold {
                observation: "seconds_left",
                warn: Some(format!("{}:", c.warn_before.as_secs())),
                crit: Some(format!("{}:", c.critical_before.as_secs())),
            }],
            ProbeSpec::Http(_) | ProbeSpec::Token(_) | ProbeSpec::Push(_) => Vec::new(),
        }
    }

    /// Other probes this one uses: (key, probe name, the kind it must be).
    pub fn references(&self) -> Vec<(&'static str, &str, &'static str)> {
        match self {
            ProbeSpec::Push(c) => c
                .token_probe
                .as_deref()
                .map(|name| ("token_probe", name, "token"))
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The shortest `timeout` a run of this probe can live with.
    pub fn min_timeout(&self) -> Option<std::time::Duration> {
        match self {
            ProbeSpec::Push(c) => c.min_timeout(),
            _ => None,
        }
    }

    /// Builds the runnable probe. `base_dir` is the directory of the file that
    /// defined the probe: relative paths in the spec resolve against it.
    /// `lookup` finds another probe's spec and directory by name (see `references`).
    pub fn build<'c>(
        &self,
        base_dir: &Path,
        lookup: &dyn Fn(&str) -> Option<(&'c ProbeSpec, &'c Path)>,
    ) -> Result<Arc<dyn Probe>, String> {
        Ok(match self {
            ProbeSpec::Certificate(c) => Arc::new(certificate::CertificateProbe::new(c, base_dir)?),
            ProbeSpec::Http(c) => Arc::new(http::HttpProbe::new(c, base_dir)?),
            ProbeSpec::Metadata(c) => Arc::new(metadata::MetadataProbe::new(c, base_dir)?),
            ProbeSpec::Token(c) => Arc::new(token::TokenProbe::new(c, base_dir)?),
            ProbeSpec::Push(c) => {
                let token = c
                    .token_probe
                    .as_deref()
                    .and_then(lookup)
                    .and_then(|(spec, dir)| match spec {
                        ProbeSpec::Token(t) => Some((t, dir)),
                        _ => None,
                    });
                Arc::new(push::PushProbe::new(c, base_dir, token)?)
            }
        })
    }
}
