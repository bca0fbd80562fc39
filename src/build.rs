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
pub(crate) struct Built {
    /// The enabled probes, in config order, with their schedules.
    pub probes: Vec<(Target, Schedule)>,
    pub channels: Vec<Arc<Channel>>,
}

/// Builds every enabled probe and every channel; all failures at once, in
/// config order (probes, then channels). `clock` dates what channels compute at
/// send time.
pub(crate) fn build(config: &Config, clock: Arc<dyn Clock>) -> Result<Built, ConfigErrors> {
    let mut probes = Vec::new();
    let mut channels = Vec::new();
    build_each(
        config,
        clock,
        |target, schedule| probes.push((target, schedule)),
        |channel| channels.push(channel),
    )?;
    Ok(Built { probes, channels })
}

/// `sonde validate`: the loaded `config` if it also builds as a start would
/// build it (nothing runs, nothing is sent), or every problem. Each probe and
/// channel is dropped once built, so that checking a large config does not hold
/// all of them at once.
pub fn validated(config: Config) -> Result<Config, ConfigErrors> {
    build_each(&config, Arc::new(SystemClock), |_, _| {}, |_| {})?;
    Ok(config)
}

/// The one build path of `build` and `validated`: hands each built probe and
/// channel on, and collects every failure.
fn build_each(
    config: &Config,
    clock: Arc<dyn Clock>,
    mut on_probe: impl FnMut(Target, Schedule),
    mut on_channel: impl FnMut(Arc<Channel>),
) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    for p in config.probes.iter().filter(|p| p.enabled) {
        match build_target_in(p, config) {
            Ok(target) => on_probe(target, p.schedule.clone()),
            Err(e) => errors.push(e),
        }
    }
    for c in &config.channels {
        match Channel::with_clock(&c.name, &c.spec, &c.base_dir, clock.clone()) {
            Ok(ch) => on_channel(Arc::new(ch)),
            Err(e) => errors.push(c.site.error(e.key, e.message)),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Builds the runnable probe of one config entry (`all` holds the probes it
/// may use). A failure is placed at the key it concerns in the probe's table.
pub(crate) fn build_target(p: &ProbeConfig, all: &[ProbeConfig]) -> Result<Target, ConfigError> {
    build_target_with(p, &|name| all.iter().find(|o| o.name == name))
}

/// `build_target` with the probes of `config`, found by name in its index:
/// building every probe stays linear in their number.
pub(crate) fn build_target_in(p: &ProbeConfig, config: &Config) -> Result<Target, ConfigError> {
    build_target_with(p, &|name| config.probe(name))
}

fn build_target_with<'a>(
    p: &ProbeConfig,
    find: &dyn Fn(&str) -> Option<&'a ProbeConfig>,
) -> Result<Target, ConfigError> {
    let lookup = |name: &str| find(name).map(|o| (&o.spec, &*o.base_dir));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::AlertEvent;
    use crate::clock::ManualClock;
    use crate::config::Loader;
    use crate::outcome::{Category, Status};
    use crate::runner::run_once;

    /// Loads `sonde.toml` from `files` (name, text) written to a new directory.
    fn load(files: &[(&str, &str)]) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let config = Loader { env: &|_| None }
            .load(&dir.path().join("sonde.toml"))
            .unwrap();
        (dir, config)
    }

    fn clock() -> Arc<dyn Clock> {
        Arc::new(ManualClock::new(
            chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .unwrap()
                .to_utc(),
        ))
    }

    /// The `test` kinds are one file and one declaration line each: the loader,
    /// the build and the runner take them like any other kind.
    #[tokio::test]
    async fn a_kind_declared_in_one_line_loads_builds_and_runs() {
        let (_dir, config) = load(&[(
            "sonde.toml",
            r#"
[[channel]]
name = "sink"
kind = "test"

[[probe]]
name = "fine"
kind = "test"
alert = ["sink"]

[[probe]]
name = "bad"
kind = "test"
status = "critical"

[[probe]]
name = "boom"
kind = "test"
panic = true
"#,
        )]);
        let built = build(&config, clock()).unwrap();
        let mut outcomes = Vec::new();
        for (target, _) in &built.probes {
            assert_eq!(target.kind, "test");
            outcomes.push(run_once(target, &clock()).await);
        }
        assert_eq!(outcomes[0].status, Status::Ok);
        assert_eq!(outcomes[1].status, Status::Critical);
        // The runner isolates the panic: an unknown outcome, not a crash.
        assert_eq!(outcomes[2].status, Status::Unknown);
        assert_eq!(outcomes[2].category, Some(Category::Internal));

        let [sink] = &built.channels[..] else {
            panic!("one channel expected");
        };
        assert_eq!(sink.kind(), "test");
        let mut alert = crate::channel::tests::sample();
        alert.event = AlertEvent::Firing;
        sink.deliver(&alert).await.unwrap();
    }

    #[test]
    fn build_errors_point_at_their_key_in_the_file_that_defines_the_table() {
        let (dir, config) = load(&[
            (
                "sonde.toml",
                "include = [\"more.toml\"]\n\n[[probe]]\nname = \"fine\"\nkind = \"test\"\n",
            ),
            (
                "more.toml",
                "# another file\n\n[[probe]]\nname = \"broken\"\nkind = \"test\"\nfail_build = true\n",
            ),
        ]);
        let errors = build(&config, clock()).err().unwrap().0;
        let [e] = &errors[..] else {
            panic!("{errors:?}")
        };
        assert_eq!(e.file, dir.path().join("more.toml"));
        assert_eq!((e.line, e.column), (6, 14));
        assert_eq!(e.key, "probe[0].fail_build");
        assert_eq!(e.message, "told to fail");
    }
}
