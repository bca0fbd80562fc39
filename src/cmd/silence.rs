//! `sonde silence add|list|remove`: silences live in the store, where the
//! running agent reads them before each evaluation.

use chrono::{DateTime, Utc};

use super::{CmdResult, Done, Failure, EXIT_INVALID_CONFIG};
use crate::cli::SilenceAction;
use crate::config::{Config, ConfigErrors};
use crate::store::Store;

/// Does `action` on the store of the loaded config; `now` starts a silence
/// without `--from` and decides which silences are over.
pub fn silence(
    loaded: Result<Config, ConfigErrors>,
    action: SilenceAction,
    now: DateTime<Utc>,
) -> CmdResult {
    let c = loaded.map_err(|e| Failure::config(&e, EXIT_INVALID_CONFIG))?;
    let store = Store::open(&crate::agent::store_path(&c)).map_err(Failure::unknown)?;
    let stdout = match action {
        SilenceAction::Add {
            target,
            duration,
            from,
            comment,
        } => {
            if !known_target(&c, &target) {
                return Err(Failure::invalid(format!(
                    "`{target}` is no probe of {} (use a probe name, set:HEALTH_SET or *)",
                    c.path.display()
                )));
            }
            let (start, end) = window(&duration, from.as_deref(), now)?;
            let id = store
                .add_silence(&target, start, end, &comment)
                .map_err(Failure::unknown)?;
            format!(
                "silence {id}: {target} from {} until {}\n",
                at(start),
                at(end)
            )
        }
        SilenceAction::List => {
            let list = store.silences(now.timestamp()).map_err(Failure::unknown)?;
            if list.is_empty() {
                "no silences\n".to_string()
            } else {
                list.iter()
                    .map(|s| {
                        format!(
                            "{:>4}  {:<32} {} .. {}  {}\n",
                            s.id,
                            s.target,
                            at(s.from),
                            at(s.to),
                            s.comment
                        )
                    })
                    .collect()
            }
        }
        SilenceAction::Remove { id } => {
            if store.remove_silence(id).map_err(Failure::unknown)? {
                format!("silence {id} removed\n")
            } else {
                format!("no silence {id}\n")
            }
        }
    };
    Ok(Done::ok(stdout))
}

/// A probe name, `set:` and a health set that has probes, or `*`.
fn known_target(c: &Config, target: &str) -> bool {
    target == "*"
        || c.probe(target).is_some()
        || target
            .strip_prefix("set:")
            .is_some_and(|set| c.probes.iter().any(|p| p.health_set == set))
}

/// The silence's start and end (unix seconds) from `--for` and `--from`.
fn window(duration: &str, from: Option<&str>, now: DateTime<Utc>) -> Result<(i64, i64), Failure> {
    let length = match crate::human::duration::parse(duration) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => return Err(Failure::invalid("--for must be longer than 0s")),
        Err(e) => return Err(Failure::invalid(format!("--for {duration}: {e}"))),
    };
    let start = match from.map(DateTime::parse_from_rfc3339) {
        None => now.timestamp(),
        Some(Ok(t)) => t.timestamp(),
        Some(Err(e)) => {
            return Err(Failure::invalid(format!(
                "--from: not an RFC 3339 time ({e})"
            )))
        }
    };
    let end = start.saturating_add(length.as_secs().min(i64::MAX as u64) as i64);
    Ok((start, end))
}

/// A time as `2030-01-01T00:00:00Z`; empty when out of chrono's range.
fn at(t: i64) -> String {
    DateTime::from_timestamp(t, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::tests_support::load;
    use crate::cmd::EXIT_UNKNOWN;

    const PROBES: &str = "[store]\npath = \"s.db\"\n\n[[probe]]\nname = \"web\"\nkind = \"http\"\n\
                          health_set = \"site\"\nurl = \"http://127.0.0.1:9/\"\n";

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn add(target: &str, duration: &str, from: Option<&str>) -> SilenceAction {
        SilenceAction::Add {
            target: target.into(),
            duration: duration.into(),
            from: from.map(str::to_string),
            comment: "deploy".into(),
        }
    }

    #[test]
    fn targets_are_probes_health_sets_with_probes_or_everything() {
        let (_dir, c) = load(PROBES);
        for known in ["web", "set:site", "*"] {
            assert!(known_target(&c, known), "{known}");
        }
        for unknown in ["nope", "set:nope", "set:", "site", "**"] {
            assert!(!known_target(&c, unknown), "{unknown}");
        }
    }

    #[test]
    fn the_window_starts_now_or_at_from() {
        assert_eq!(
            window("2h", None, now()).unwrap(),
            (1_800_000_000, 1_800_007_200)
        );
        assert_eq!(
            window("30m", Some("2030-01-01T01:00:00+01:00"), now()).unwrap(),
            (1_893_456_000, 1_893_457_800)
        );
        assert_eq!(
            window("1y", Some("9999-12-31T23:59:59Z"), now()).unwrap(),
            (253_402_300_799, 253_433_858_399)
        );
        assert_eq!(at(i64::MAX), "", "past chrono's range");
    }

    #[test]
    fn bad_windows_exit_2_naming_the_flag() {
        let bad = |d, from| window(d, from, now()).unwrap_err();
        assert_eq!(
            bad("0s", None),
            Failure::invalid("--for must be longer than 0s")
        );
        assert!(bad("soon", None).stderr.starts_with("sonde: --for soon: "));
        assert!(bad("2y", None).stderr.contains("too long: at most 1 year"));
        assert!(bad("1h", Some("yesterday"))
            .stderr
            .starts_with("sonde: --from: not an RFC 3339 time ("));
        assert_eq!(bad("soon", None).code, EXIT_INVALID_CONFIG);
    }

    #[test]
    fn silences_are_added_listed_and_removed() {
        let (dir, _) = load(PROBES);
        let path = dir.path().join("sonde.toml");
        let run = |action| silence(crate::config::load(&path), action, now());
        assert_eq!(run(SilenceAction::List).unwrap().stdout, "no silences\n");
        let done = run(add("web", "2h", Some("2030-01-01T00:00:00Z"))).unwrap();
        assert_eq!(
            done,
            Done::ok(
                "silence 1: web from 2030-01-01T00:00:00Z until 2030-01-01T02:00:00Z\n".into()
            )
        );
        run(add("set:site", "1h", None)).unwrap();
        assert_eq!(
            run(SilenceAction::List).unwrap().stdout,
            "   2  set:site                         2027-01-15T08:00:00Z .. 2027-01-15T09:00:00Z  deploy\n\
             \x20  1  web                              2030-01-01T00:00:00Z .. 2030-01-01T02:00:00Z  deploy\n"
        );
        let failure = run(add("nope", "1h", None)).unwrap_err();
        assert_eq!(failure.code, EXIT_INVALID_CONFIG);
        assert!(
            failure.stderr.contains("`nope` is no probe of"),
            "{failure:?}"
        );
        assert_eq!(
            run(SilenceAction::Remove { id: 1 }).unwrap().stdout,
            "silence 1 removed\n"
        );
        assert_eq!(
            run(SilenceAction::Remove { id: 1 }).unwrap().stdout,
            "no silence 1\n"
        );
    }

    #[test]
    fn a_store_that_does_not_open_exits_3() {
        // A directory where the database file should be.
        let (dir, _) = load("[store]\npath = \"sub\"\n");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let path = dir.path().join("sonde.toml");
        let failure = silence(crate::config::load(&path), SilenceAction::List, now()).unwrap_err();
        assert_eq!(failure.code, EXIT_UNKNOWN);
        assert!(failure.stderr.starts_with("sonde: "), "{failure:?}");
    }
}
