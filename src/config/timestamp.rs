//! Serde helpers for points in time (`from`/`to` of a maintenance window): RFC 3339
//! with an offset, written either as a string (`"2025-06-01T22:00:00Z"`) or as a
//! bare TOML datetime (`2025-06-01T22:00:00Z`). A local time without an offset is
//! refused, so that a window never depends on the host's time zone.
//! Use `#[serde(default, with = "crate::config::timestamp::option")]`.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// Parses an RFC 3339 time with an offset.
pub(crate) fn parse(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            format!(
                "invalid time `{text}`: expected RFC 3339 with an offset, \
                 e.g. `2025-06-01T22:00:00Z` or `2025-06-02T00:00:00+02:00`"
            )
        })
}

struct TimeVisitor;

impl<'de> Visitor<'de> for TimeVisitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an RFC 3339 time such as `2025-06-01T22:00:00Z`")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        parse(text).map_err(E::custom)
    }

    // A bare TOML datetime arrives as a one-entry map.
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let datetime =
            toml::value::Datetime::deserialize(de::value::MapAccessDeserializer::new(map))?;
        parse(&datetime.to_string()).map_err(de::Error::custom)
    }
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<DateTime<Utc>, D::Error> {
    de.deserialize_any(TimeVisitor)
}

pub(crate) mod option {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        de: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        super::deserialize(de).map(Some)
    }
}
