//! When a probe fires: `schedule` (cron, via the `cron` crate) or `every` (a fixed
//! interval with a deterministic splay). Pure: the caller passes `now`.
//!
//! The `cron` crate takes 6 or 7 fields (seconds first) and numbers days of the week
//! 1-7 from Sunday, where standard cron uses 0-6 (or 7) with 1 = Monday. To keep
//! `1-5` from silently meaning Sunday-Thursday, a numeric day of week is rejected:
//! users write names (`MON-FRI`). Schedules are evaluated in UTC.
//!
//! A probe that starts (with the agent, or anew at a reload) does not wait for its
//! schedule to come round: `Schedule::start` puts its first run within
//! `FIRST_RUN_WINDOW` of the start, so that a health set has a result soon whatever
//! the schedule (see `start` for the rule).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

#[derive(Clone)]
pub enum Schedule {
    /// A cron expression; `text` is what the user wrote.
    Cron {
        text: String,
        cron: Box<cron::Schedule>,
    },
    /// Fires at `offset + k * every` seconds since the Unix epoch.
    Every { every: Duration, offset: Duration },
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Schedule::Cron { text: a, .. }, Schedule::Cron { text: b, .. }) => a == b,
            (
                Schedule::Every {
                    every: a,
                    offset: x,
                },
                Schedule::Every {
                    every: b,
                    offset: y,
                },
            ) => a == b && x == y,
            _ => false,
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Cron { text, .. } => write!(f, "cron {text}"),
            Schedule::Every { every, .. } => {
                write!(f, "every {}", humantime::format_duration(*every))
            }
        }
    }
}

const NICKNAMES: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

impl Schedule {
    /// Parses a 5-field (`*/5 * * * *`), 6-field (seconds first) or 7-field (with
    /// year) cron expression, or a nickname such as `@hourly`.
    pub fn cron(text: &str) -> Result<Schedule, String> {
        let trimmed = text.trim();
        if trimmed.starts_with('@') {
            let nick = trimmed.to_ascii_lowercase();
            if !NICKNAMES.contains(&nick.as_str()) {
                return Err(format!(
                    "unknown schedule `{trimmed}`; expected one of {}",
                    NICKNAMES.join(", ")
                ));
            }
            let expr = match nick.as_str() {
                "@midnight" => "@daily",
                "@annually" => "@yearly",
                other => other,
            };
            let cron = cron::Schedule::from_str(expr).map_err(|e| cron_error(trimmed, expr, &e))?;
            return Ok(Schedule::Cron {
                text: trimmed.to_string(),
                cron: Box::new(cron),
            });
        }
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        let (expr, dow) = match fields.len() {
            5 => (format!("0 {}", fields.join(" ")), fields[4]),
            6 => (fields.join(" "), fields[5]),
            7 => (fields.join(" "), fields[5]),
            n => {
                return Err(format!(
                    "cron `{trimmed}` has {n} fields; expected 5 (min hour day month weekday), \
                     6 (with seconds first) or 7 (with year last)"
                ))
            }
        };
        if dow.chars().any(|c| c.is_ascii_digit()) {
            return Err(format!(
                "day-of-week `{dow}` is numeric; write day names (`MON-FRI`, `SUN`): \
                 the cron crate numbers days 1-7 from Sunday, so numbers would silently \
                 mean another day than standard cron"
            ));
        }
        let cron = cron::Schedule::from_str(&expr).map_err(|e| cron_error(trimmed, &expr, &e))?;
        if cron.after(&DateTime::<Utc>::UNIX_EPOCH).next().is_none() {
            return Err(format!(
                "cron `{trimmed}` never fires: no date matches all its fields (e.g. 31 FEB)"
            ));
        }
        Ok(Schedule::Cron {
            text: trimmed.to_string(),
            cron: Box::new(cron),
        })
    }

    /// `cron`, refusing an expression whose every instant is at or before `now`
    /// (a year field in the past): it would be valid and silently never run.
    pub(crate) fn cron_after(text: &str, now: DateTime<Utc>) -> Result<Schedule, String> {
        let schedule = Schedule::cron(text)?;
        if schedule.next_after(now).is_none() {
            return Err(format!(
                "cron `{}` never fires after now: all its instants have passed",
                text.trim()
            ));
        }
        Ok(schedule)
    }

    /// An interval schedule. The offset inside the interval is derived from `name`
    /// (FNV-1a), so that many probes with the same interval spread out, and a
    /// probe keeps its phase across restarts and hosts.
    pub fn every(every: Duration, name: &str) -> Schedule {
        let offset = Duration::from_millis(fnv1a(name.as_bytes()) % millis(every));
        Schedule::Every { every, offset }
    }

    /// When a probe whose loop starts at `now` first runs, and the schedule it
    /// follows after that first run. The first run is the schedule's own next
    /// instant if that comes within `FIRST_RUN_WINDOW`; otherwise it is
    /// `now + first_run_splay(name)`, and then a cron schedule keeps its cron
    /// instants while an `every` schedule runs every interval from that first run.
    /// A cron whose last instant has passed still runs once. `None` only when
    /// the instants are out of chrono's range.
    pub(crate) fn start(
        &self,
        now: DateTime<Utc>,
        name: &str,
    ) -> Option<(DateTime<Utc>, Schedule)> {
        let window = chrono::Duration::from_std(FIRST_RUN_WINDOW).ok()?;
        let soon = now.checked_add_signed(window)?;
        if let Some(next) = self.next_after(now).filter(|next| *next <= soon) {
            return Some((next, self.clone()));
        }
        let splay = chrono::Duration::from_std(first_run_splay(name)).ok()?;
        let first = now.checked_add_signed(splay)?;
        let then = match self {
            Schedule::Cron { .. } => self.clone(),
            Schedule::Every { every, .. } => {
                let phase = first
                    .timestamp_millis()
                    .rem_euclid(i64::try_from(millis(*every)).ok()?);
                Schedule::Every {
                    every: *every,
                    offset: Duration::from_millis(u64::try_from(phase).ok()?),
                }
            }
        };
        Some((first, then))
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron { cron, .. } => cron.after(&after).next(),
            Schedule::Every { every, offset } => {
                // Config bounds both durations far below these limits; out of
                // range, there is no next fire rather than a wrapped one.
                let every_ms = i64::try_from(millis(*every)).ok()?;
                let offset_ms = i64::try_from(offset.as_millis()).ok()?;
                let now_ms = after.timestamp_millis();
                // smallest k with offset + k*every > now
                let k = now_ms
                    .checked_sub(offset_ms)?
                    .div_euclid(every_ms)
                    .checked_add(1)?;
                let next_ms = offset_ms.checked_add(k.checked_mul(every_ms)?)?;
                Utc.timestamp_millis_opt(next_ms).single()
            }
        }
    }
}

/// The message for an expression the `cron` crate refuses, as one line with a
/// reason. The crate's parse errors repeat the expression with a caret under the
/// bad spot and often no reason at all; here they name the field and say what a
/// field may hold. `expr` is what was given to the crate (with the seconds field
/// added to a 5-field expression).
fn cron_error(text: &str, expr: &str, err: &cron::error::Error) -> String {
    const FIELDS: [&str; 7] = [
        "seconds",
        "minutes",
        "hours",
        "day-of-month",
        "month",
        "day-of-week",
        "year",
    ];
    const FORMS: &str =
        "a field is a number, a name, `*`, a range `a-b`, a list `a,b` or a step `a/n`";
    let message = err.to_string();
    let mut lines = message.lines();
    let first = lines.next().unwrap_or("");
    let caret = lines.clone().next().and_then(|l| {
        let at = l.find('^')?;
        l[..at].chars().all(|c| c == ' ').then_some(at)
    });
    let reason = match caret {
        Some(_) if first == expr => lines.skip(1).collect::<Vec<_>>().join(" "),
        _ => message.lines().collect::<Vec<_>>().join(" "),
    };
    let reason = reason.trim();
    let reason = if reason.is_empty() { FORMS } else { reason };
    // The field the caret points into: the last one that starts at or before it.
    let field = caret.filter(|_| first == expr).and_then(|at| {
        let mut starts = Vec::new();
        let mut prev_space = true;
        for (i, c) in expr.char_indices() {
            if prev_space && !c.is_whitespace() {
                starts.push(i);
            }
            prev_space = c.is_whitespace();
        }
        let index = starts.iter().rposition(|s| *s <= at)?;
        let token = expr[starts[index]..].split_whitespace().next()?;
        Some((FIELDS.get(index)?, token))
    });
    match field {
        Some((name, token)) => format!("invalid cron `{text}`: {name} field `{token}`: {reason}"),
        None => format!("invalid cron `{text}`: {reason}"),
    }
}

/// How soon after its start a probe runs at the latest: a new agent, or a probe
/// added or changed by a reload, has a result within this time.
pub(crate) const FIRST_RUN_WINDOW: Duration = Duration::from_secs(60);

/// Where inside `FIRST_RUN_WINDOW` the probe `name` first runs when its schedule
/// has no instant in that window: derived from the name (FNV-1a, like the offset
/// of `every`), so that probes started together spread out over the window.
pub fn first_run_splay(name: &str) -> Duration {
    Duration::from_millis(fnv1a(name.as_bytes()) % millis(FIRST_RUN_WINDOW))
}

/// `d` in whole milliseconds, at least 1, saturating at `u64::MAX`.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn five_field_cron_fires_on_minute_boundaries() {
        let s = Schedule::cron("*/5 * * * *").unwrap();
        assert_eq!(
            s.next_after(t("2026-03-01T10:58:30Z")),
            Some(t("2026-03-01T11:00:00Z"))
        );
        assert_eq!(
            s.next_after(t("2026-03-01T11:00:00Z")),
            Some(t("2026-03-01T11:05:00Z"))
        );
        assert_eq!(
            s.next_after(t("2026-12-31T23:59:59Z")),
            Some(t("2027-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn six_field_cron_has_seconds() {
        let s = Schedule::cron("*/15 * * * * *").unwrap();
        assert_eq!(
            s.next_after(t("2026-03-01T10:59:50Z")),
            Some(t("2026-03-01T11:00:00Z"))
        );
        assert_eq!(
            s.next_after(t("2026-03-01T11:00:00Z")),
            Some(t("2026-03-01T11:00:15Z"))
        );
    }

    #[test]
    fn weekday_names_mean_what_they_say() {
        // 2026-03-06 is a Friday.
        let s = Schedule::cron("0 9 * * MON-FRI").unwrap();
        assert_eq!(
            s.next_after(t("2026-03-06T10:00:00Z")),
            Some(t("2026-03-09T09:00:00Z"))
        );
        let sun = Schedule::cron("30 8 * * SUN").unwrap();
        assert_eq!(
            sun.next_after(t("2026-03-06T10:00:00Z")),
            Some(t("2026-03-08T08:30:00Z"))
        );
    }

    #[test]
    fn numeric_day_of_week_is_rejected_with_advice() {
        for expr in ["0 9 * * 1-5", "0 0 9 * * 1", "0 0 9 * * */2 2027"] {
            let err = Schedule::cron(expr).unwrap_err();
            assert!(err.contains("write day names (`MON-FRI`"), "{expr}: {err}");
        }
    }

    #[test]
    fn nicknames_and_wrong_field_counts() {
        let h = Schedule::cron("@hourly").unwrap();
        assert_eq!(
            h.next_after(t("2026-03-01T10:59:59Z")),
            Some(t("2026-03-01T11:00:00Z"))
        );
        let d = Schedule::cron("@midnight").unwrap();
        assert_eq!(
            d.next_after(t("2026-03-01T10:00:00Z")),
            Some(t("2026-03-02T00:00:00Z"))
        );
        assert!(Schedule::cron("@sometimes")
            .unwrap_err()
            .contains("unknown schedule"));
        assert!(Schedule::cron("* * *")
            .unwrap_err()
            .contains("has 3 fields"));
        assert!(Schedule::cron("61 * * * *")
            .unwrap_err()
            .contains("invalid cron"));
    }

    #[test]
    fn every_is_aligned_with_a_stable_splay() {
        let a = Schedule::every(Duration::from_secs(30), "probe-a");
        let b = Schedule::every(Duration::from_secs(30), "probe-b");
        assert_eq!(a, Schedule::every(Duration::from_secs(30), "probe-a"));
        assert_ne!(a, b, "different names get different phases");
        let Schedule::Every { offset, .. } = a else {
            unreachable!()
        };
        assert!(offset < Duration::from_secs(30));
        let now = t("2026-03-01T10:59:59Z");
        let first = a.next_after(now).unwrap();
        let second = a.next_after(first).unwrap();
        assert!(first > now && first <= now + chrono::Duration::seconds(30));
        assert_eq!(second - first, chrono::Duration::seconds(30));
        // The phase inside the interval is the splay, whatever `now` is.
        assert_eq!(
            first.timestamp_millis() as u128 % 30_000,
            offset.as_millis()
        );
    }

    #[test]
    fn every_cron_error_has_a_reason() {
        // Parse errors of the cron crate whose own text is empty, and ordinary ones.
        for expr in [
            "a b c d e",
            "*/x * * * *",
            "1- * * * *",
            ", * * * *",
            "* * * * * * *x",
            "0 0 0 31 FEB *",
            "0 0 0 1 1 * 1980-",
            "61 * * * *",
            "* * * JANUAR *",
        ] {
            let err = Schedule::cron(expr).unwrap_err();
            let reason = err.rsplit_once(": ").map(|(_, r)| r.trim()).unwrap_or("");
            assert!(!reason.is_empty(), "{expr}: {err:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn a_cron_parse_error_names_the_field() {
        assert_eq!(
            Schedule::cron("*/x * * * *").unwrap_err(),
            "invalid cron `*/x * * * *`: minutes field `*/x`: a field is a number, a name, \
             `*`, a range `a-b`, a list `a,b` or a step `a/n`"
        );
        assert_eq!(
            Schedule::cron("0 0 9 * JANUAR *").unwrap_err(),
            "invalid cron `0 0 9 * JANUAR *`: month field `JANUAR`: 'JANUAR' is not a valid month name."
        );
        let err = Schedule::cron("0 0 1- * * *").unwrap_err();
        assert!(err.contains("hours field `1-`"), "{err}");
        let err = Schedule::cron("* * * * * * *x").unwrap_err();
        assert!(err.contains("year field `*x`"), "{err}");
    }

    #[test]
    fn a_cron_that_only_fires_in_the_past_is_refused() {
        let now = t("2026-03-01T10:00:00Z");
        let err = Schedule::cron_after("0 0 0 1 1 * 1980", now).unwrap_err();
        assert!(err.contains("never fires after now"), "{err}");
        // The same expression with a year still to come is fine.
        assert!(Schedule::cron_after("0 0 0 1 1 * 2030", now).is_ok());
        assert!(Schedule::cron_after("@daily", now).is_ok());
    }

    #[test]
    fn extreme_intervals_neither_wrap_nor_panic() {
        // Config bounds `every`; the schedule still never fires in the past or
        // divides by zero when given more.
        let now = t("2026-03-01T10:00:00Z");
        for every in [
            Duration::MAX,
            Duration::from_millis(u64::MAX),
            Duration::new(18_446_744_073_709_551, 616_000_000),
            Duration::from_secs(18_446_744_073_709_552),
            Duration::from_millis(1) / 2,
        ] {
            let s = Schedule::every(every, "edge");
            if let Some(next) = s.next_after(now) {
                assert!(next > now, "{every:?}: {next}");
            }
            if let Some((first, _)) = s.start(now, "edge") {
                assert!(first >= now, "{every:?}: {first}");
            }
        }
    }

    #[test]
    fn a_long_interval_starts_within_the_window_then_keeps_its_interval() {
        let now = t("2026-03-01T10:00:00Z");
        let hourly = Schedule::every(Duration::from_secs(3600), "long");
        let (first, then) = hourly.start(now, "long").unwrap();
        assert_eq!(
            first,
            now + chrono::Duration::from_std(first_run_splay("long")).unwrap()
        );
        assert!(first - now < chrono::Duration::seconds(60));
        assert_eq!(
            then.next_after(first),
            Some(first + chrono::Duration::hours(1))
        );
        let second = then.next_after(first).unwrap();
        assert_eq!(
            then.next_after(second),
            Some(second + chrono::Duration::hours(1))
        );
    }

    #[test]
    fn a_short_interval_starts_on_its_own_grid() {
        let now = t("2026-03-01T10:00:00Z");
        let s = Schedule::every(Duration::from_secs(30), "short");
        let (first, then) = s.start(now, "short").unwrap();
        assert_eq!(Some(first), s.next_after(now));
        assert_eq!(then, s, "the phase derived from the name is kept");
    }

    #[test]
    fn a_cron_starts_within_the_window_then_keeps_its_instants() {
        let now = t("2026-03-01T10:00:00Z");
        let daily = Schedule::cron("@daily").unwrap();
        let (first, then) = daily.start(now, "nightly").unwrap();
        assert!(first >= now && first - now < chrono::Duration::seconds(60));
        assert_eq!(then.next_after(first), Some(t("2026-03-02T00:00:00Z")));
        // A cron instant inside the window is the first run itself: no extra run.
        let minutely = Schedule::cron("* * * * *").unwrap();
        let (first, _) = minutely.start(t("2026-03-01T10:00:30Z"), "m").unwrap();
        assert_eq!(first, t("2026-03-01T10:01:00Z"));
        // A cron whose instants are all past still runs once, then never again.
        let past = Schedule::cron("0 0 0 1 1 * 1980").unwrap();
        let (first, then) = past.start(now, "past").unwrap();
        assert!(first - now < chrono::Duration::seconds(60));
        assert_eq!(then.next_after(first), None);
    }

    #[test]
    fn the_first_run_splay_spreads_names_over_the_window() {
        let splays: Vec<_> = (0..200)
            .map(|i| first_run_splay(&format!("p{i}")))
            .collect();
        assert!(splays.iter().all(|s| *s < FIRST_RUN_WINDOW));
        assert!(splays.iter().any(|s| *s < Duration::from_secs(20)));
        assert!(splays.iter().any(|s| *s > Duration::from_secs(40)));
    }
}
