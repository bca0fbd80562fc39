//! Human-readable quantities, both ways: durations written by users (`30s`, `14d`)
//! read from config files, and durations and sizes written for people in
//! summaries and pages. A leaf module: it depends on nothing else in the crate.

pub mod duration;
