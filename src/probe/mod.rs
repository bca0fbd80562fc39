//! Probe kinds: the `ProbeKind` trait each kind's config implements, and the one
//! declaration (`probe_kinds!` below) that turns the list of kinds into the
//! closed `ProbeSpec` enum, the `KINDS` list and the `deserialize`/`validate`/
//! `build` dispatch.
//!
//! Adding a kind means: a file beside this one (its config, which implements
//! `ProbeKind`, its run and its unit tests) and one line in the declaration. The
//! compiler rejects a declared kind whose config does not implement `ProbeKind`.
//! The runner (`crate::runner`) owns timeouts, timing, spans and panic isolation;
//! probes only probe.

pub mod certificate;
pub mod http;
pub mod metadata;
pub mod push;
pub mod registration;
#[cfg(test)]
pub mod testkind;
pub mod token;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::outcome::Probe;
use crate::output::Threshold;
use crate::spec::{BuildError, SpecProblem};

/// What a probe kind's config provides beside its keys (which it deserializes
/// itself, rejecting unknown ones). The defaults fit a kind that has no Nagios
/// thresholds, uses no other probe and has no deadline of its own.
pub trait ProbeKind {
    /// Pure checks of the kind's settings (no I/O): every problem at once.
    fn validate(&self) -> Vec<SpecProblem>;

    /// The runnable probe. Files the probe cannot run without (a `ca_file`, a
    /// signing key) are read here, so that `sonde validate` and a start refuse
    /// them alike; what the probe watches is read at each run.
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Probe>, BuildError>;

    /// Nagios warn/crit ranges for the perfdata of `sonde probe --format nagios`.
    fn perf_thresholds(&self) -> Vec<Threshold> {
        Vec::new()
    }

    /// Other probes this one uses: (key, probe name, the kind it must be).
    fn references(&self) -> Vec<(&'static str, &str, &'static str)> {
        Vec::new()
    }

    /// The shortest `timeout` a run of this probe can live with.
    fn min_timeout(&self) -> Option<Duration> {
        None
    }
}

/// What building a probe may look at besides its own settings.
pub struct BuildContext<'a> {
    /// The directory of the file that defined the probe: relative paths in its
    /// settings resolve against it.
    pub base_dir: &'a Path,
    /// Another probe's spec and directory by name (see `ProbeKind::references`).
    pub lookup: &'a dyn Fn(&str) -> Option<(&'a ProbeSpec, &'a Path)>,
}

/// Declares the probe kinds, once: `name: Variant(ConfigType)` per kind, where
/// `name` is the `kind = "name"` of the config (and the metric label) and
/// `ConfigType` implements `ProbeKind` and `serde::Deserialize`. It generates the
/// `ProbeSpec` enum, the `KINDS` list in declaration order, and `ProbeSpec`'s
/// `kind`, `deserialize`, `validate`, `build`, `perf_thresholds`, `references`
/// and `min_timeout`. A line may carry attributes, such as `#[cfg(test)]`.
///
/// ```
/// use std::sync::Arc;
/// use sonde::probe::{BuildContext, ProbeKind};
/// use sonde::spec::{BuildError, SpecProblem};
///
/// #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
/// pub struct PingConfig {
///     target: String,
/// }
///
/// impl ProbeKind for PingConfig {
///     fn validate(&self) -> Vec<SpecProblem> {
///         Vec::new()
///     }
///     fn build(&self, _: &BuildContext<'_>) -> Result<Arc<dyn sonde::outcome::Probe>, BuildError> {
///         Err(BuildError::new("target", "not in this example"))
///     }
/// }
///
/// sonde::probe_kinds! {
///     ping: Ping(PingConfig),
/// }
///
/// assert_eq!(KINDS, ["ping"]);
/// let spec = ProbeSpec::Ping(Box::new(PingConfig { target: "x".into() }));
/// assert_eq!(spec.kind(), "ping");
/// ```
///
/// A kind declared without its implementation does not compile:
///
/// ```compile_fail,E0277
/// use std::sync::Arc;
///
/// #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
/// pub struct PingConfig {
///     target: String,
/// }
///
/// // No `impl ProbeKind for PingConfig`.
///
/// sonde::probe_kinds! {
///     ping: Ping(PingConfig),
/// }
/// ```
#[macro_export]
macro_rules! probe_kinds {
    ($( $(#[$attr:meta])* $name:ident : $variant:ident ( $config:ty ) ),+ $(,)?) => {
        /// Kind-specific configuration, one variant per kind. The config loader
        /// picks the variant from `kind` and deserializes the remaining keys into
        /// it (unknown keys are errors).
        // Boxed: the agent keeps every probe's config for its lifetime, and an
        // unboxed enum is as large as its largest kind (a push probe's) for
        // every probe (at 10,000 probes, megabytes of padding).
        #[derive(Debug, Clone, PartialEq)]
        pub enum ProbeSpec {
            $( $(#[$attr])* $variant(Box<$config>), )+
        }

        /// The kinds the config accepts, in the order the README documents them.
        pub const KINDS: &[&str] = &[ $( $(#[$attr])* stringify!($name), )+ ];

        impl ProbeSpec {
            pub fn kind(&self) -> &'static str {
                match self {
                    $( $(#[$attr])* ProbeSpec::$variant(_) => stringify!($name), )+
                }
            }

            /// The kind's behaviour behind its config.
            fn as_kind(&self) -> &dyn $crate::probe::ProbeKind {
                match self {
                    $( $(#[$attr])* ProbeSpec::$variant(c) => &**c, )+
                }
            }

            /// Deserializes the kind-specific keys of a probe table; `None` for
            /// an unknown kind.
            pub fn deserialize<'de, D>(kind: &str, de: D) -> Result<Option<Self>, D::Error>
            where
                D: ::serde::Deserializer<'de>,
            {
                $(
                    $(#[$attr])*
                    if kind == stringify!($name) {
                        return <$config as ::serde::Deserialize>::deserialize(de)
                            .map(|c| Some(ProbeSpec::$variant(Box::new(c))));
                    }
                )+
                Ok(None)
            }

            /// Pure checks of the kind's settings: every problem at once.
            pub fn validate(&self) -> Vec<$crate::spec::SpecProblem> {
                self.as_kind().validate()
            }

            /// Builds the runnable probe (see `ProbeKind::build`).
            pub fn build(
                &self,
                ctx: &$crate::probe::BuildContext<'_>,
            ) -> Result<::std::sync::Arc<dyn $crate::outcome::Probe>, $crate::spec::BuildError> {
                self.as_kind().build(ctx)
            }

            /// Nagios warn/crit ranges for the perfdata of `sonde probe --format nagios`.
            pub fn perf_thresholds(&self) -> Vec<$crate::output::Threshold> {
                self.as_kind().perf_thresholds()
            }

            /// Other probes this one uses: (key, probe name, the kind it must be).
            pub fn references(&self) -> Vec<(&'static str, &str, &'static str)> {
                self.as_kind().references()
            }

            /// The shortest `timeout` a run of this probe can live with.
            pub fn min_timeout(&self) -> Option<::std::time::Duration> {
                self.as_kind().min_timeout()
            }
        }
    };
}

probe_kinds! {
    certificate: Certificate(certificate::CertificateConfig),
    http: Http(http::HttpConfig),
    metadata: Metadata(metadata::MetadataConfig),
    token: Token(token::TokenConfig),
    push: Push(push::PushConfig),
    registration: Registration(registration::RegistrationConfig),
    #[cfg(test)]
    test: Test(testkind::TestConfig),
}
