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
pub mod registration;
pub mod token;

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::outcome::Probe;
use crate::spec::SpecProblem;
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
    Registration(registration::RegistrationConfig),
}

/// The kinds the config accepts, in the order the README documents them.
pub const KINDS: &[&str] = &[
    "certificate",
    "http",
    "metadata",
    "token",
    "push",
    "registration",
];

impl ProbeSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeSpec::Certificate(_) => "certificate",
            ProbeSpec::Http(_) => "http",
            ProbeSpec::Metadata(_) => "metadata",
            ProbeSpec::Token(_) => "token",
            ProbeSpec::Push(_) => "push",
            ProbeSpec::Registration(_) => "registration",
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
            "registration" => ProbeSpec::Registration(Deserialize::deserialize(de)?),
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
            ProbeSpec::Registration(c) => c.validate(),
        }
    }

    /// Nagios warn/crit ranges for the perfdata of `sonde probe --format nagios`.
    pub fn perf_thresholds(&self) -> Vec<crate::output::Threshold> {
        match self {
            // The Auth role's rotation rules warn at 60 days and are critical once expired.
            ProbeSpec::Certificate(c) if c.role == Some(certificate::Role::ExchangeAuth) => {
                vec![crate::output::Threshold {
                    observation: "seconds_left",
                    warn: Some(format!("{}:", certificate::AUTH_RENEW_DAYS * 86_400)),
                    crit: Some("0:".to_string()),
                }]
            }
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
            ProbeSpec::Http(_)
            | ProbeSpec::Token(_)
            | ProbeSpec::Push(_)
            | ProbeSpec::Registration(_) => Vec::new(),
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
            ProbeSpec::Registration(c) => {
                Arc::new(registration::RegistrationProbe::new(c, base_dir)?)
            }
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
