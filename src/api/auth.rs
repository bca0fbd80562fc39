//! What guards the API's POST endpoints: the bearer token of `[api] token_env` /
//! `token_file`, compared in constant time, and a per-probe rate limit on
//! on-demand runs. The token never leaves this file: not in a response, not in
//! a log line.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::digest::{digest, SHA256};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::ApiConfig;
use crate::secret::SecretSource;

/// Where the expected token comes from.
#[derive(Clone)]
pub(crate) enum TokenSource {
    /// Neither `token_env` nor `token_file` is set (or the variable is empty):
    /// POST endpoints are refused.
    None,
    /// The value of `token_env`, read once at start.
    Fixed(String),
    /// `token_file`, looked at on each request so that a rotated token takes
    /// effect without a restart.
    File(Arc<TokenFile>),
}

/// A token file and what was last read from it. Each check stats the file and
/// reads it again only when it changed (another inode, size, modification or
/// change time): a read per request would cost more than the check itself.
/// File times advance in coarse steps (a few milliseconds), so a file changed
/// in the last seconds is read on every check until it has been quiet for
/// `SETTLED` seconds.
pub(crate) struct TokenFile {
    path: PathBuf,
    /// Tells how long ago the file last changed.
    clock: Arc<dyn Clock>,
    last: Mutex<Option<(FileStamp, String)>>,
}

/// What tells a changed file apart.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl FileStamp {
    fn of(path: &std::path::Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            modified: (m.mtime(), m.mtime_nsec()),
            changed: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// How long a file must be unchanged before its stamp is trusted.
const SETTLED: i64 = 2;

impl TokenFile {
    /// The token in the file, read again only if the file changed.
    fn token(&self) -> Result<String, String> {
        let stamp = FileStamp::of(&self.path);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(stamp), Some((seen, token))) = (stamp, last.as_ref()) {
            if stamp == *seen {
                return Ok(token.clone());
            }
        }
        *last = None;
        let token = SecretSource::File(self.path.clone())
            .read_blocking("token")
            .map_err(|e| e.to_string())?;
        // Stamped as it was before the read: a change during the read is read
        // again on the next check.
        let now = self.clock.now().timestamp();
        if let Some(stamp) = stamp.filter(|s| now - s.changed.0 > SETTLED) {
            *last = Some((stamp, token.clone()));
        }
        Ok(token)
    }
}

// Never print the token.
impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::None => f.write_str("TokenSource::None"),
            TokenSource::Fixed(_) => f.write_str("TokenSource::Fixed(<redacted>)"),
            TokenSource::File(t) => write!(f, "TokenSource::File({})", t.path.display()),
        }
    }
}

/// The outcome of checking a request's `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed,
    /// No token is configured.
    NotConfigured,
    /// The configured token file cannot be read (the reason, without the token).
    Unavailable(String),
    /// Missing, malformed or wrong credentials.
    Denied,
}

impl TokenSource {
    /// `token_env` wins over `token_file` when both are set; `env` reads the
    /// environment (tests pass their own). `base` resolves a relative file. Both
    /// follow `crate::secret`'s rule: trailing line breaks dropped, empty refused.
    /// `clock` dates the file's changes.
    pub(crate) fn from_config(
        api: &ApiConfig,
        base: &std::path::Path,
        env: &dyn Fn(&str) -> Option<String>,
        clock: Arc<dyn Clock>,
    ) -> TokenSource {
        if let Some(var) = &api.token_env {
            if let Some(v) = env(var).map(crate::secret::clean).filter(|v| !v.is_empty()) {
                return TokenSource::Fixed(v);
            }
        }
        match &api.token_file {
            Some(f) => TokenSource::File(Arc::new(TokenFile {
                path: base.join(f),
                clock,
                last: Mutex::new(None),
            })),
            None => TokenSource::None,
        }
    }

    /// Checks `authorization` (the header's value, if any) against the token.
    pub(crate) fn check(&self, authorization: Option<&str>) -> Verdict {
        let expected = match self {
            TokenSource::None => return Verdict::NotConfigured,
            TokenSource::Fixed(t) => t.clone(),
            TokenSource::File(file) => match file.token() {
                Ok(t) => t,
                Err(e) => return Verdict::Unavailable(e),
            },
        };
        let Some(given) = authorization.and_then(bearer) else {
            return Verdict::Denied;
        };
        if same_secret(given, &expected) {
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }
}

/// The credentials of `Bearer <token>` (scheme case-insensitive, RFC 6750).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares two secrets in time independent of where they differ: both are
/// hashed first, so the comparison runs over equal-length digests and the
/// length of the expected token does not leak either.
pub(crate) fn same_secret(given: &str, expected: &str) -> bool {
    let a = digest(&SHA256, given.as_bytes());
    let b = digest(&SHA256, expected.as_bytes());
    a.as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// At most one on-demand run per probe per `min_interval`: a token bucket of
/// one token per probe, refilled after `min_interval`. A zero interval turns the
/// limit off.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    min_interval: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

impl RateLimiter {
    pub(crate) fn new(min_interval: Duration) -> RateLimiter {
        RateLimiter {
            min_interval,
            last: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn min_interval(&self) -> Duration {
        self.min_interval
    }

    /// Takes the probe's token at `now`, or says how long until it is back.
    pub(crate) fn take(&self, probe: &str, now: Instant) -> Result<(), Duration> {
        if self.min_interval.is_zero() {
            return Ok(());
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&at) = last.get(probe) {
            let ready = at + self.min_interval;
            if now < ready {
                return Err(ready - now);
            }
        }
        last.insert(probe.to_string(), now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use chrono::DateTime;

    #[test]
    fn the_limiter_allows_one_run_per_interval_per_probe() {
        let limiter = RateLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.take("a", t0), Ok(()));
        assert_eq!(
            limiter.take("a", t0 + Duration::from_secs(3)),
            Err(Duration::from_secs(7))
        );
        // Another probe has its own bucket.
        assert_eq!(limiter.take("b", t0 + Duration::from_secs(3)), Ok(()));
        // A refused attempt does not push the next one back.
        assert_eq!(limiter.take("a", t0 + Duration::from_secs(10)), Ok(()));
        assert!(limiter.take("a", t0 + Duration::from_secs(19)).is_err());
        assert_eq!(limiter.take("a", t0 + Duration::from_secs(20)), Ok(()));
        let off = RateLimiter::new(Duration::ZERO);
        assert_eq!(off.take("a", t0), Ok(()));
        assert_eq!(off.take("a", t0), Ok(()));
    }

    #[test]
    fn bearer_tokens_are_checked_and_never_printed() {
        let source = TokenSource::Fixed("s3cret-token".into());
        assert_eq!(source.check(Some("Bearer s3cret-token")), Verdict::Allowed);
        assert_eq!(
            source.check(Some("bearer  s3cret-token ")),
            Verdict::Allowed
        );
        assert_eq!(source.check(Some("Bearer s3cret-toke")), Verdict::Denied);
        assert_eq!(source.check(Some("Basic czNjcmV0")), Verdict::Denied);
        assert_eq!(source.check(Some("Bearer ")), Verdict::Denied);
        assert_eq!(source.check(None), Verdict::Denied);
        assert!(!format!("{source:?}").contains("s3cret"));
        assert_eq!(TokenSource::None.check(None), Verdict::NotConfigured);
        assert!(same_secret("a", "a") && !same_secret("a", "b") && !same_secret("a", "aa"));
    }

    #[test]
    fn the_token_comes_from_env_or_a_file_read_at_each_request() {
        let dir = tempfile::tempdir().unwrap();
        let api = ApiConfig {
            token_env: Some("TOKEN".into()),
            token_file: Some("token.txt".into()),
            ..ApiConfig::default()
        };
        // A clock before the files were written: none of them has settled.
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(
            DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .unwrap()
                .to_utc(),
        ));
        let from_env =
            TokenSource::from_config(&api, dir.path(), &|_| Some("t1\n".into()), clock.clone());
        assert_eq!(from_env.check(Some("Bearer t1")), Verdict::Allowed);
        // An unset variable falls back to the file.
        let from_file = TokenSource::from_config(&api, dir.path(), &|_| None, clock.clone());
        assert!(matches!(
            from_file.check(Some("Bearer t2")),
            Verdict::Unavailable(_)
        ));
        std::fs::write(dir.path().join("token.txt"), "t2\n").unwrap();
        assert_eq!(from_file.check(Some("Bearer t2")), Verdict::Allowed);
        std::fs::write(dir.path().join("token.txt"), "t3").unwrap();
        assert_eq!(from_file.check(Some("Bearer t2")), Verdict::Denied);
        // Rewritten in place at once, same length: the file's times may not
        // have moved, and the new token still counts.
        assert_eq!(from_file.check(Some("Bearer t3")), Verdict::Allowed);
        std::fs::write(dir.path().join("token.txt"), "t4").unwrap();
        assert_eq!(from_file.check(Some("Bearer t4")), Verdict::Allowed);
        assert_eq!(from_file.check(Some("Bearer t3")), Verdict::Denied);
        // A file changed in the last seconds is read on every check; one quiet
        // for longer is read once and kept until its stamp changes.
        let settled = dir.path().join("settled.txt");
        std::fs::write(&settled, "old-token").unwrap();
        let changed = {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(&settled).unwrap();
            DateTime::from_timestamp(m.ctime(), 0).unwrap()
        };
        let clock = Arc::new(ManualClock::new(changed));
        let file = TokenFile {
            path: settled.clone(),
            clock: clock.clone(),
            last: Mutex::new(None),
        };
        let kept = |file: &TokenFile| file.last.lock().unwrap().is_some();
        assert_eq!(file.token().unwrap(), "old-token");
        assert!(!kept(&file), "a fresh file is not trusted");
        clock.set(changed + chrono::Duration::seconds(SETTLED + 1));
        assert_eq!(file.token().unwrap(), "old-token");
        assert!(kept(&file), "a settled file is kept");
        std::fs::write(&settled, "new-token-2").unwrap();
        assert_eq!(file.token().unwrap(), "new-token-2");
        let none = ApiConfig::default();
        assert!(matches!(
            TokenSource::from_config(&none, dir.path(), &|_| Some("x".into()), clock),
            TokenSource::None
        ));
    }
}
