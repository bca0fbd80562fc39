//! Human-readable quantities, both ways: durations written by users (`30s`, `14d`)
//! read from config files, sizes (`512KiB`), and durations and timestamps written
//! for people in summaries, alerts and pages; text from peers escaped and
//! clipped before it is shown (`text`). A leaf module: it depends on nothing
//! else in the crate.

pub(crate) mod duration;
pub(crate) mod size;
pub(crate) mod text;

pub(crate) use size::ByteSize;

use chrono::{DateTime, Utc};

/// A duration for people: `3d 4h`, `5h 12m`, `45m`, `30s`; `412d` from 10 days up.
/// Rounds down; a zero lower unit is left out (`3d`, not `3d 0h`); negative input
/// gets a leading `-`. The one format of CLI summaries, alerts and the status page.
pub(crate) fn format_duration(secs: i64) -> String {
    let sign = if secs < 0 { "-" } else { "" };
    let s = secs.unsigned_abs();
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    let body = if d >= 10 {
        format!("{d}d")
    } else if d > 0 {
        if h > 0 {
            format!("{d}d {h}h")
        } else {
            format!("{d}d")
        }
    } else if h > 0 {
        if m > 0 {
            format!("{h}h {m}m")
        } else {
            format!("{h}h")
        }
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{}s", s % 60)
    };
    format!("{sign}{body}")
}

/// A Unix timestamp as RFC 3339 in UTC to the second (`2026-03-01T10:00:00Z`),
/// or `@<ts>` when out of chrono's range.
pub(crate) fn rfc3339(ts: i64) -> String {
    DateTime::<Utc>::from_timestamp(ts, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| format!("@{ts}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn durations_are_short_and_round_down() {
        assert_eq!(format_duration(3 * DAY + 4 * 3600 + 59), "3d 4h");
        assert_eq!(format_duration(3 * DAY), "3d");
        assert_eq!(format_duration(412 * DAY + 5 * 3600), "412d");
        assert_eq!(format_duration(45 * 60 + 30), "45m");
        assert_eq!(format_duration(5 * 3600 + 12 * 60), "5h 12m");
        assert_eq!(format_duration(30), "30s");
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(-2 * DAY), "-2d");
        assert_eq!(format_duration(i64::MIN), "-106751991167300d");
    }

    #[test]
    fn timestamps_are_utc_to_the_second() {
        assert_eq!(rfc3339(1_772_359_200), "2026-03-01T10:00:00Z");
        assert_eq!(rfc3339(i64::MAX), format!("@{}", i64::MAX));
    }
}
