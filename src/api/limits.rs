//! How the API server bounds its clients, so that no client can take what the
//! probes need: the per-process file descriptor limit (raised at start), the
//! connection cap derived from it, and the timeouts after which an idle or
//! stalled connection is closed. The serving itself is in `api::Server`.

use std::time::Duration;

/// What the server allows each client and all of them together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// How long a client may take to send a request's head, counted from the
    /// moment the server waits for it: on a new connection and between
    /// keep-alive requests alike, so it is also the idle timeout.
    pub header_read_timeout: Duration,
    /// How long one connection may live; then it ends after its current
    /// request (a stalled body or a client that stops reading cannot hold a
    /// connection for longer than this plus `grace`).
    pub max_connection_age: Duration,
    /// How long a connection asked to close (shutdown, age) may take to finish
    /// its request before it is dropped.
    pub grace: Duration,
}

/// Descriptors the API may hold are a quarter of the limit, so that probes,
/// the store and the channels always keep three quarters.
const SHARE_DIVISOR: u64 = 4;
/// Monitoring clients need few connections: this many serve hundreds of
/// scrapers and dashboards, and no more are needed however high the limit.
const MAX_CONNECTIONS: u64 = 1024;
/// The floor, for very low descriptor limits.
const MIN_CONNECTIONS: u64 = 4;
/// Linux refuses a soft limit above `fs.nr_open` (2^20 by default) even when
/// the hard limit says "unlimited"; sonde never needs more.
const NOFILE_TARGET: u64 = 1 << 20;

impl Limits {
    /// The limits for a process allowed `nofile` descriptors.
    pub(crate) fn for_descriptors(nofile: u64) -> Limits {
        let cap = (nofile / SHARE_DIVISOR).clamp(MIN_CONNECTIONS, MAX_CONNECTIONS);
        Limits {
            max_connections: usize::try_from(cap).unwrap_or(usize::MAX),
            header_read_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(300),
            grace: Duration::from_secs(10),
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft limit
/// now in force, or `None` where it cannot be read. Called when the API server
/// binds, so that API clients and probes do not share a small default (often 1,024).
pub(crate) fn raise_descriptor_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(NOFILE_TARGET) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the file descriptor limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_a_quarter_of_the_descriptors_within_bounds() {
        assert_eq!(Limits::for_descriptors(256).max_connections, 64);
        assert_eq!(Limits::for_descriptors(1024).max_connections, 256);
        assert_eq!(Limits::for_descriptors(1 << 20).max_connections, 1024);
        assert_eq!(Limits::for_descriptors(8).max_connections, 4);
        assert_eq!(Limits::for_descriptors(u64::MAX).max_connections, 1024);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        let now = raise_descriptor_limit().unwrap();
        assert!(now >= hard.min(NOFILE_TARGET), "{now} < {hard}");
        let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        assert_eq!(soft, now);
    }
}
