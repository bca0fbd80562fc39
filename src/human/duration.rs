//! Serde helpers for humantime durations (`30s`, `10m`, `14d`) in config files.
//! Use `#[serde(with = "crate::human::duration")]` on a `Duration` field, or
//! `#[serde(default, with = "crate::human::duration::option")]` on an `Option<Duration>`.
//!
//! Every duration a user writes is at most `MAX` (one year): no config key needs
//! more, and below it any sum with an instant or a date, and any conversion to
//! milliseconds or to chrono, stays far inside its range.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The longest duration accepted: one year as humantime counts it (`1y`, 365.25 days).
pub(crate) const MAX: Duration = Duration::from_secs(31_557_600);

/// Parses a humantime duration of at most `MAX`, with a message that shows the
/// expected form or names the limit.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration `{text}`: {e} (expected e.g. `30s`, `10m`, `14d`)")
    })?;
    if d > MAX {
        return Err(format!(
            "duration `{text}` is too long: at most 1 year (`1y`, 365.25 days)"
        ));
    }
    Ok(d)
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(de)?;
    parse(&text).map_err(serde::de::Error::custom)
}

pub(crate) mod option {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        de: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(de)?;
        super::parse(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_up_to_a_year_parse() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse(" 1y "), Ok(MAX));
        assert_eq!(parse("365d"), Ok(Duration::from_secs(365 * 86_400)));
    }

    #[test]
    fn durations_past_a_year_are_refused_with_the_limit() {
        for text in [
            "366d",
            "2y",
            "18446744073709551615s",
            "18446744073709551s 616ms",
            "18446744073709552s",
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(
                err,
                format!("duration `{text}` is too long: at most 1 year (`1y`, 365.25 days)")
            );
        }
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        let err = parse("5 parsecs").unwrap_err();
        assert!(err.starts_with("invalid duration `5 parsecs`: "), "{err}");
        assert!(
            err.ends_with("(expected e.g. `30s`, `10m`, `14d`)"),
            "{err}"
        );
        // Too large even for humantime: an error, not a panic.
        assert!(parse("99999999999999999999999s").is_err());
    }
}
