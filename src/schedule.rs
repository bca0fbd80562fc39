//! When a probe fires: `schedule` (cron, via the `cron` crate) or `every` (a fixed
//! interval with a deterministic splay). Pure: the caller passes `now`.
//!
//! The `cron` crate takes 6 or 7 fields (seconds first) and numbers days of the week
//! 1-7 from Sunday, where standard cron uses 0-6 (or 7) with 1 = Monday. To keep
//! `1-5` from silently meaning Sunday-Thursday, a numeric day of week is rejected:
//! users write names (`MON-FRI`). Schedules are evaluated in UTC.

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
            let cron = cron::Schedule::from_str(expr)
                .map_err(|e| format!("invalid cron `{trimmed}`: {e}"))?;
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
        let cron = cron::Schedule::from_str(&expr)
            .map_err(|e| format!("invalid cron `{trimmed}`: {e}"))?;
        if cron.after(&DateTime::<Utc>::UNIX_EPOCH).next().is_none() {
            return Err(format!("cron `{trimmed}` never fires"));
        }
        Ok(Schedule::Cron {
            text: trimmed.to_string(),
            cron: Box::new(cron),
        })
    }

    /// An interval schedule. The offset inside the interval is derived from `name`
    /// (FNV-1a), so that many probes with the same interval spread out, and a
    /// probe keeps its phase across restarts and hosts.
    pub fn every(every: Duration, name: &str) -> Schedule {
        let millis = every.as_millis().max(1) as u64;
        let offset = Duration::from_millis(fnv1a(name.as_bytes()) % millis);
        Schedule::Every { every, offset }
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron { cron, .. } => cron.after(&after).next(),
            Schedule::Every { every, offset } => {
                let every_ms = every.as_millis().max(1) as i64;
                let offset_ms = offset.as_millis() as i64;
                let now_ms = after.timestamp_millis();
                // smallest k with offset + k*every > now
                let k = (now_ms - offset_ms).div_euclid(every_ms) + 1;
                let next_ms = offset_ms.checked_add(k.checked_mul(every_ms)?)?;
                Utc.timestamp_millis_opt(next_ms).single()
            }
        }
    }
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
}
