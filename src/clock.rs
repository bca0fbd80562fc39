//! Wall-clock time behind a trait, so that logic takes `now` from an injected
//! clock. The only reads of the system's wall clock in the crate are here.

use std::fmt;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// Source of the current wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock for tests and the fuzzing harness: it starts at a chosen instant and then moves
/// with tokio's clock, so `#[tokio::test(start_paused = true)]` drives it (pausing
/// tokio time does not move `Utc::now()`). `set` jumps it, like an NTP step.
#[derive(Debug)]
pub(crate) struct ManualClock {
    state: Mutex<(DateTime<Utc>, tokio::time::Instant)>,
}

impl ManualClock {
    pub(crate) fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            state: Mutex::new((start, tokio::time::Instant::now())),
        }
    }

    #[cfg(test)]
    /// Jumps the wall clock to `to`; it keeps following tokio's clock from there.
    pub(crate) fn set(&self, to: DateTime<Utc>) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = (to, tokio::time::Instant::now());
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        let (base, at) = *self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = tokio::time::Instant::now().saturating_duration_since(at);
        chrono::Duration::from_std(elapsed)
            .ok()
            .and_then(|d| base.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn manual_clock_follows_paused_tokio_time() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let clock = ManualClock::new(start);
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), start + chrono::Duration::seconds(90));
        let jump = DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z")
            .unwrap()
            .to_utc();
        clock.set(jump);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(clock.now(), jump + chrono::Duration::seconds(1));
    }
}
