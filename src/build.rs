//! Building: turns a loaded `Config` into what runs (a `Target` per enabled
//! probe, a `Channel` per channel), or reports every reason it cannot, each at
//! the file:line:col of the key it concerns, in the file that defines the table.
//!
//! `sonde run` (at start and at each reload) and `sonde validate` both go through
//! `build`, so a config that validates starts. Not here: loading and the pure
//! checks (`crate::config`), scheduling (`crate::scheduler`).

use std::sync::Arc;

use crate::channel::Channel;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError, ConfigErrors, ProbeConfig};
use crate::probe::BuildContext;
use crate::runner::Target;
use crate::schedule::Schedule;

/// Everything a config runs.
pub struct Built {
    /// The enabled probes, in config order, with their schedules.
    pub probes: Vec<(Target, Schedule)>,
    pub channels: Vec<Arc<Channel>>,
}

/// Builds every enabled probe and every channel; all failures at once, in
/// config order (probes, then channels). `clock` dates what channels compute at
/// send time.
pub fn build(config: &Config, clock: Arc<dyn Clock>) -> Result<Built, ConfigErrors> {
    let mut errors = Vec::new();
    let mut probes = Vec::new();
    for p in config.probes.iter().filter(|p| p.enabled) {
        match build_target(p, &config.probes) {
            Ok(target) => probes.push((target, p.schedule.clone())),
            Err(e) => errors.push(e),
        }
    }
    let mut channels = Vec::new();
    for c in &config.channels {
        match Channel::with_clock(&c.name, &c.spec, &c.base_dir, clock.clone()) {
            Ok(ch) => channels.push(Arc::new(ch)),
            Err(e) => errors.push(c.site.error(e.key, e.message)),
        }
    }
    if errors.is_empty() {
        Ok(Built { probes, channels })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// `sonde validate`: the loaded `config` if it also builds as a start would
/// build it (nothing runs, nothing is sent), or every problem.
pub fn validated(config: Config) -> Result<Config, ConfigErrors> {
    build(&config, Arc::new(SystemClock))?;
    Ok(config)
}

/// Builds the runnable probe of one config entry (`all` holds the probes it
/// may use). A failure is placed at the key it concerns in the probe's table.
pub fn build_target(p: &ProbeConfig, all: &[ProbeConfig]) -> Result<Target, ConfigError> {
    let lookup = |name: &str| {
        all.iter()
            .find(|o| o.name == name)
            .map(|o| (&o.spec, o.base_dir.as_path()))
    };
    let ctx = BuildContext {
        base_dir: &p.base_dir,
        lookup: &lookup,
    };
    let probe = p
        .spec
        .build(&ctx)
        .map_err(|e| p.site.error(e.key, e.message))?;
    Ok(Target {
        name: p.name.as_str().into(),
        kind: p.kind(),
        health_set: p.health_set.as_str().into(),
        timeout: p.timeout,
        retries: p.retries,
        probe,
    })
}
