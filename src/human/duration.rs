//! Serde helpers for humantime durations (`30s`, `10m`, `14d`) in config files.
//! Use `#[serde(with = "crate::human::duration")]` on a `Duration` field, or
//! `#[serde(default, with = "crate::human::duration::option")]` on an `Option<Duration>`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses a humantime duration, with a message that shows the expected form.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration `{text}`: {e} (expected e.g. `30s`, `10m`, `14d`)"))
}

pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(de)?;
    parse(&text).map_err(serde::de::Error::custom)
}

pub mod option {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(de)?;
        super::parse(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}
