//! The durable store (SQLite, `[store] path`): monitor states, recent results,
//! the alert outbox and silences. Everything an alert needs is written here, in
//! one transaction with the result that caused it, before anything is sent, so
//! a `kill -9` at any moment loses no alert; delivery state lives beside it so a
//! restart neither re-sends what was delivered nor forgets what was not.
//!
//! The API is synchronous (SQLite calls take microseconds); async callers use
//! `spawn_blocking` for batches. WAL with `synchronous = NORMAL`: durable across
//! process crashes, which is the failure this store is for; a power loss may
//! lose the last transactions.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

/// Results kept per probe (for the API and the status page).
pub(crate) const RESULTS_KEPT: i64 = 200;

/// Why the store failed. Each message is one line naming the cause and, where
/// there is one, what to do; SQLite's own text is not repeated as a chain.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {cause}{}", advice_text(*.advice))]
    Open {
        path: String,
        cause: String,
        advice: Option<&'static str>,
    },
    // Not `#[from]`, which would make it a `source`: a cause chain would
    // repeat what the message already says (see the `From` impl below).
    #[error("store: {}{}", cause_of(.0), advice_text(advice_for(.0)))]
    Sql(rusqlite::Error),
    /// A query failed on the store at `path` (named once the caller knows it).
    #[error("store {path}: {}{}", cause_of(.error), advice_text(advice_for(.error)))]
    At {
        path: String,
        // Not a `source`: the message already says it, a cause chain would
        // repeat it.
        error: rusqlite::Error,
    },
    #[error("store {path} was written by a newer sonde (schema {found}, this one knows {known})")]
    Newer {
        path: String,
        found: i64,
        known: i64,
    },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sql(e)
    }
}

impl StoreError {
    /// This error, naming the store file at `path` if it does not yet.
    pub(crate) fn at(self, path: &Path) -> StoreError {
        match self {
            StoreError::Sql(error) => StoreError::At {
                path: path.display().to_string(),
                error,
            },
            other => other,
        }
    }
}

/// What to do about a damaged database file.
const DAMAGED: &str =
    "the file is damaged or not a sonde store: stop sonde and move it aside (a new store is \
     made at start), or restore a backup";
/// What to do when the file cannot be opened or created.
const PLACE: &str = "check that the directory exists and that the user sonde runs as may \
     write there, or set [store] path";

/// SQLite's error as one short cause, without the "Error code N" repeat.
fn cause_of(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(f, Some(text)) if f.code == rusqlite::ErrorCode::Unknown => {
            text.clone()
        }
        rusqlite::Error::SqliteFailure(f, text) => text.clone().unwrap_or_else(|| f.to_string()),
        rusqlite::Error::Utf8Error(..) | rusqlite::Error::FromSqlConversionFailure(..) => {
            format!("a stored value does not read back ({e})")
        }
        other => other.to_string(),
    }
}

fn advice_for(e: &rusqlite::Error) -> Option<&'static str> {
    use rusqlite::ErrorCode as C;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            C::DatabaseCorrupt | C::NotADatabase => Some(DAMAGED),
            C::CannotOpen | C::ReadOnly | C::PermissionDenied => Some(PLACE),
            C::DiskFull => Some("free space on the disk that holds it"),
            C::DatabaseBusy | C::DatabaseLocked => {
                Some("another process holds it: run one sonde agent per store")
            }
            _ => None,
        },
        rusqlite::Error::Utf8Error(..) | rusqlite::Error::FromSqlConversionFailure(..) => {
            Some(DAMAGED)
        }
        _ => None,
    }
}

fn advice_text(advice: Option<&'static str>) -> String {
    advice.map(|a| format!("; {a}")).unwrap_or_default()
}

/// Why `path` could not be opened, as the file system says it when SQLite only
/// says "unable to open database file".
fn open_cause(path: &Path, e: &rusqlite::Error, dir_error: Option<std::io::Error>) -> String {
    let cannot_open = matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::CannotOpen);
    if !cannot_open {
        return cause_of(e);
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir.filter(|d| d.exists() && !d.is_dir()) {
        return format!("{} is not a directory", dir.display());
    }
    if let (Some(dir), Some(err)) = (dir, dir_error) {
        return format!(
            "cannot create the directory {}: {}",
            dir.display(),
            crate::file::io_reason(&err)
        );
    }
    if path.is_dir() {
        return "it is a directory".into();
    }
    // Opening the file for writing ourselves gives the system's reason.
    match std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
    {
        Err(err) => format!(
            "cannot open the database file: {}",
            crate::file::io_reason(&err)
        ),
        Ok(_) => "SQLite cannot open the database file or its -wal/-shm files beside it".into(),
    }
}

const SCHEMA: i64 = 1;

/// What an operator can do about a store that cannot be opened or written.
pub(crate) fn advice(e: &rusqlite::Error) -> &'static str {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::ReadOnly | C::CannotOpen | C::PermissionDenied) => {
            "check that the file and its directory exist and are writable by sonde's user, or set another [store] path"
        }
        Some(C::DiskFull) => "the disk is full: free some space",
        Some(C::NotADatabase | C::DatabaseCorrupt) => {
            "the file is damaged or not a sonde store: move it aside (sonde starts a new one) or restore a backup"
        }
        Some(C::DatabaseBusy | C::DatabaseLocked) => {
            "another process holds a lock on it (a second sonde on the same store?): stop that process"
        }
        Some(C::SystemIoFailure) => {
            "a read or write failed: check that the disk has space, that the file and its directory are writable (not read-only or immutable), and the system log"
        }
        _ => "see the error above",
    }
}

/// A write the agent could not make at once, kept (`alert::pending`) until the
/// store takes it: a result and the monitor state it led to, and the alerts
/// raised with them (channel, key, alert JSON).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PendingWrite {
    pub result: Option<ResultRow>,
    /// The probe and its monitor's state JSON.
    pub monitor: Option<(String, String)>,
    pub alerts: Vec<(String, String, String)>,
    pub now: i64,
}

/// One probe result as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ResultRow {
    pub probe: String,
    pub started_at: i64,
    pub duration_seconds: f64,
    pub status: String,
    pub category: Option<String>,
    pub summary: String,
    pub observations_json: String,
}

/// An alert waiting for (or done with) delivery to one channel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutboxEntry {
    pub id: i64,
    pub channel: String,
    pub key: String,
    pub alert_json: String,
    pub attempts: u32,
    pub created_at: i64,
}

/// A one-off silence from `sonde silence`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Silence {
    pub id: i64,
    /// A probe name, `set:<health set>`, or `*`.
    pub target: String,
    pub from: i64,
    pub to: i64,
    pub comment: String,
}

/// `Store::recent_results_of`: for each distinct name of the JSON array ?1,
/// the ids of its ?2 newest results (an index seek), then those rows by rowid.
const RECENT_OF: &str = "\
SELECT r.probe, r.started_at, r.duration_seconds, r.status, r.category, r.summary, r.observations_json
FROM (SELECT DISTINCT value AS name FROM json_each(?1)) AS p
JOIN results AS r ON r.id IN (
    SELECT id FROM results WHERE probe = p.name ORDER BY id DESC LIMIT ?2)
ORDER BY r.probe, r.id DESC";

const INSERT_RESULT: &str = "\
INSERT INTO results (probe, started_at, duration_seconds, status, category, summary, observations_json)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

const UPSERT_MONITOR: &str = "\
INSERT INTO monitors (probe, state_json, updated_at) VALUES (?1, ?2, ?3)
ON CONFLICT (probe) DO UPDATE SET state_json = excluded.state_json, updated_at = excluded.updated_at";

/// Drops probe ?1's results older than its `RESULTS_KEPT`-th newest. The
/// offset is written out: SQLite re-prepares a statement whose LIMIT or
/// OFFSET is a bound parameter each time it is bound, a full SQL parse per
/// result.
const PRUNE_PROBE: &str = "\
DELETE FROM results WHERE probe = ?1 AND id < (
    SELECT id FROM results WHERE probe = ?1 ORDER BY id DESC LIMIT 1 OFFSET 199)";
// The offset above is `RESULTS_KEPT - 1`.
const _: () = assert!(RESULTS_KEPT == 200);

pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating on first start) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let mut dir_error = None;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            dir_error = std::fs::create_dir_all(dir).err();
        }
        let opened = Connection::open(path).and_then(|conn| {
            // SQLite opens lazily: read the schema now so that a file that
            // cannot be opened or is not a database says so here, by name.
            conn.query_row("PRAGMA schema_version", [], |_| Ok(()))?;
            Ok(conn)
        });
        let conn = opened.map_err(|e| StoreError::Open {
            path: shown.clone(),
            advice: advice_for(&e),
            cause: open_cause(path, &e, dir_error),
        })?;
        Self::init(conn, &shown)
    }

    #[cfg(test)]
    /// An in-memory store (tests, `sonde probe`).
    pub(crate) fn in_memory() -> Result<Store, StoreError> {
        Self::init(Connection::open_in_memory()?, ":memory:")
    }

    fn init(conn: Connection, shown: &str) -> Result<Store, StoreError> {
        let with_path = |source: rusqlite::Error| StoreError::Open {
            path: shown.to_string(),
            cause: cause_of(&source),
            advice: advice_for(&source),
        };
        let version = Self::prepare(&conn).map_err(with_path)?;
        if version > SCHEMA {
            return Err(StoreError::Newer {
                path: shown.to_string(),
                found: version,
                known: SCHEMA,
            });
        }
        if version < 1 {
            Self::create(&conn).map_err(with_path)?;
        }
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    /// Connection settings; returns the schema version found.
    fn prepare(conn: &Connection) -> rusqlite::Result<i64> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // One plan per statement, whatever values are bound: without it SQLite
        // marks a statement comparing a column with a bound value for
        // re-preparing on every bind, a full SQL parse per stored result.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // 1 MiB of page cache (SQLite's default is 2): writes touch a few
        // pages per result and the rest is the kernel's page cache; at
        // 10,000 probes the difference is a twentieth of the agent.
        conn.pragma_update(None, "cache_size", -1024)?;
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
    }

    fn create(conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS monitors (
                     probe TEXT PRIMARY KEY, state_json TEXT NOT NULL, updated_at INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS results (
                     id INTEGER PRIMARY KEY, probe TEXT NOT NULL, started_at INTEGER NOT NULL,
                     duration_seconds REAL NOT NULL, status TEXT NOT NULL, category TEXT,
                     summary TEXT NOT NULL, observations_json TEXT NOT NULL);
                 CREATE INDEX IF NOT EXISTS results_probe ON results (probe, id);
                 CREATE TABLE IF NOT EXISTS outbox (
                     id INTEGER PRIMARY KEY, channel TEXT NOT NULL, key TEXT NOT NULL,
                     alert_json TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                     created_at INTEGER NOT NULL, next_attempt_at INTEGER NOT NULL,
                     delivered_at INTEGER, dead INTEGER NOT NULL DEFAULT 0, last_error TEXT,
                     UNIQUE (channel, key));
                 CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (channel, delivered_at, dead, id);
                 CREATE TABLE IF NOT EXISTS silences (
                     id INTEGER PRIMARY KEY, target TEXT NOT NULL, from_ts INTEGER NOT NULL,
                     to_ts INTEGER NOT NULL, comment TEXT NOT NULL);
                 PRAGMA user_version = 1;
                 COMMIT;",
        )
    }

    /// How long a write waits for another process's lock before it fails
    /// (5 s by default). The agent waits less: what it cannot write now waits
    /// in memory, not in the pipeline.
    pub(crate) fn set_busy_timeout(&self, wait: std::time::Duration) -> Result<(), StoreError> {
        Ok(self.conn().busy_timeout(wait)?)
    }

    /// Writes `writes` in order, in one transaction, then marks the outbox
    /// entries of `delivered` (channel, key) delivered at `now`: they were
    /// sent before they reached the store.
    pub(crate) fn write_all(
        &self,
        writes: &[PendingWrite],
        delivered: &[(String, String)],
        now: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for w in writes {
            if let Some(result) = &w.result {
                insert_result(&tx, result)?;
            }
            if let Some((probe, json)) = &w.monitor {
                tx.prepare_cached(UPSERT_MONITOR)?
                    .execute(params![probe, json, w.now])?;
            }
            enqueue_in(&tx, &w.alerts, w.now)?;
        }
        let mut mark = tx.prepare_cached(
            "UPDATE outbox SET delivered_at = ?3 WHERE channel = ?1 AND key = ?2 AND delivered_at IS NULL",
        )?;
        for (channel, key) in delivered {
            mark.execute(params![channel, key, now])?;
        }
        drop(mark);
        tx.commit()?;
        Ok(())
    }

    /// Marks the outbox entry (channel, key) delivered, if it is there.
    pub(crate) fn mark_delivered_key(
        &self,
        channel: &str,
        key: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE outbox SET delivered_at = ?3 WHERE channel = ?1 AND key = ?2 AND delivered_at IS NULL",
            params![channel, key, now],
        )?;
        Ok(())
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent: the
        // transaction rolls back. Keep going with the connection.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a result, the monitor state it led to, and the alerts it raised
    /// (channel, key, alert JSON), atomically. An alert whose (channel, key) is
    /// already in the outbox is not added twice. Returns how many were added.
    pub(crate) fn record(
        &self,
        result: &ResultRow,
        monitor_json: &str,
        alerts: &[(String, String, String)],
        now: i64,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert_result(&tx, result)?;
        tx.prepare_cached(UPSERT_MONITOR)?
            .execute(params![result.probe, monitor_json, now])?;
        let added = enqueue_in(&tx, alerts, now)?;
        tx.commit()?;
        Ok(added)
    }

    /// Saves a monitor state and alerts without a result (reminders, silences).
    pub(crate) fn update(
        &self,
        probe: &str,
        monitor_json: &str,
        alerts: &[(String, String, String)],
        now: i64,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.prepare_cached(UPSERT_MONITOR)?
            .execute(params![probe, monitor_json, now])?;
        let added = enqueue_in(&tx, alerts, now)?;
        tx.commit()?;
        Ok(added)
    }

    /// Adds alerts to the outbox (channel, key, alert JSON).
    pub fn enqueue(
        &self,
        alerts: &[(String, String, String)],
        now: i64,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let added = enqueue_in(&tx, alerts, now)?;
        tx.commit()?;
        Ok(added)
    }

    /// Every stored monitor state, by probe.
    pub(crate) fn monitors(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT probe, state_json FROM monitors ORDER BY probe")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest results of a probe, newest first.
    pub(crate) fn recent_results(
        &self,
        probe: &str,
        limit: usize,
    ) -> Result<Vec<ResultRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT probe, started_at, duration_seconds, status, category, summary, observations_json
             FROM results WHERE probe = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![probe, limit as i64], |r| {
            Ok(ResultRow {
                probe: r.get(0)?,
                started_at: r.get(1)?,
                duration_seconds: r.get(2)?,
                status: r.get(3)?,
                category: r.get(4)?,
                summary: r.get(5)?,
                observations_json: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest `limit` results of each probe in `probes`, newest first, in
    /// one query: the names go in as one JSON array, and for each name SQLite
    /// walks the `(probe, id)` index backwards for at most `limit` rows. The
    /// work is linear in `probes.len() * limit`, whatever the table holds, and
    /// there is no statement per probe. A probe without results maps to an
    /// empty list.
    pub(crate) fn recent_results_of(
        &self,
        probes: &[String],
        limit: usize,
    ) -> Result<std::collections::HashMap<String, Vec<ResultRow>>, StoreError> {
        let mut out: std::collections::HashMap<String, Vec<ResultRow>> =
            probes.iter().map(|p| (p.clone(), Vec::new())).collect();
        if probes.is_empty() || limit == 0 {
            return Ok(out);
        }
        // A list of strings always serializes.
        let names = serde_json::to_string(probes).unwrap_or_else(|_| "[]".into());
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(RECENT_OF)?;
        let rows = stmt.query_map(
            params![names, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                Ok(ResultRow {
                    probe: r.get(0)?,
                    started_at: r.get(1)?,
                    duration_seconds: r.get(2)?,
                    status: r.get(3)?,
                    category: r.get(4)?,
                    summary: r.get(5)?,
                    observations_json: r.get(6)?,
                })
            },
        )?;
        // Rows come grouped by name and newest first within each (ORDER BY).
        for row in rows {
            let row = row?;
            if let Some(list) = out.get_mut(&row.probe) {
                list.push(row);
            }
        }
        Ok(out)
    }

    #[cfg(test)]
    /// The oldest undelivered alert of a channel, when it is due at `now`.
    /// Delivery is in order per channel: a later alert waits for the head.
    pub(crate) fn next_due(
        &self,
        channel: &str,
        now: i64,
    ) -> Result<Option<OutboxEntry>, StoreError> {
        Ok(self.due_batch(channel, now, 1)?.into_iter().next())
    }

    /// The due head of a channel's queue and the entries after it, in order, up
    /// to `limit`, stopping at the first one that is not due.
    pub(crate) fn due_batch(
        &self,
        channel: &str,
        now: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, channel, key, alert_json, attempts, created_at, next_attempt_at FROM outbox
             WHERE channel = ?1 AND delivered_at IS NULL AND dead = 0 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![channel, limit as i64], |r| {
            Ok((
                OutboxEntry {
                    id: r.get(0)?,
                    channel: r.get(1)?,
                    key: r.get(2)?,
                    alert_json: r.get(3)?,
                    attempts: r.get(4)?,
                    created_at: r.get(5)?,
                },
                r.get::<_, i64>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (entry, at) = row?;
            if at > now {
                break;
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// When the head of a channel's queue is next due, if anything is pending.
    pub(crate) fn next_attempt_at(&self, channel: &str) -> Result<Option<i64>, StoreError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT next_attempt_at FROM outbox WHERE channel = ?1 AND delivered_at IS NULL AND dead = 0
                 ORDER BY id LIMIT 1",
                params![channel],
                |r| r.get(0),
            )
            .optional()?)
    }

    #[cfg(test)]
    pub(crate) fn mark_delivered(&self, id: i64, now: i64) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "UPDATE outbox SET delivered_at = ?2, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
            )?
            .execute(params![id, now])?;
        Ok(())
    }

    /// Marks several entries delivered, in one transaction.
    pub(crate) fn mark_delivered_many(&self, ids: &[i64], now: i64) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE outbox SET delivered_at = ?2, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
            )?;
            for id in ids {
                stmt.execute(params![id, now])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a failed attempt: retried at `retry_at`, or given up (`None`).
    pub(crate) fn mark_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        match retry_at {
            Some(at) => conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
                params![id, at, error],
            )?,
            None => conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, dead = 1, last_error = ?2 WHERE id = ?1",
                params![id, error],
            )?,
        };
        Ok(())
    }

    /// Undelivered alerts of a channel, and the creation time of the oldest.
    pub fn pending(&self, channel: &str) -> Result<(u64, Option<i64>), StoreError> {
        let conn = self.conn();
        Ok(conn.query_row(
            "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE channel = ?1 AND delivered_at IS NULL AND dead = 0",
            params![channel],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
        )?)
    }

    /// Delivered alerts older than `before` are dropped (the outbox is not an archive).
    pub(crate) fn prune_delivered(&self, before: i64) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM outbox WHERE (delivered_at IS NOT NULL AND delivered_at < ?1) OR (dead = 1 AND created_at < ?1)",
            params![before],
        )?)
    }

    pub(crate) fn add_silence(
        &self,
        target: &str,
        from: i64,
        to: i64,
        comment: &str,
    ) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO silences (target, from_ts, to_ts, comment) VALUES (?1, ?2, ?3, ?4)",
            params![target, from, to, comment],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Silences not yet over at `now`.
    pub(crate) fn silences(&self, now: i64) -> Result<Vec<Silence>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, target, from_ts, to_ts, comment FROM silences WHERE to_ts > ?1 ORDER BY from_ts, id",
        )?;
        let rows = stmt.query_map(params![now], |r| {
            Ok(Silence {
                id: r.get(0)?,
                target: r.get(1)?,
                from: r.get(2)?,
                to: r.get(3)?,
                comment: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(crate) fn remove_silence(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM silences WHERE id = ?1", params![id])?
            > 0)
    }
}

/// Inserts a result and drops that probe's results beyond the newest
/// `RESULTS_KEPT`: two index seeks on `(probe, id)`, whatever the size of the
/// table, so that the cost of a write does not grow with the number of probes.
fn insert_result(tx: &rusqlite::Transaction<'_>, result: &ResultRow) -> Result<(), StoreError> {
    tx.prepare_cached(INSERT_RESULT)?.execute(params![
        result.probe,
        result.started_at,
        result.duration_seconds,
        result.status,
        result.category,
        result.summary,
        result.observations_json
    ])?;
    tx.prepare_cached(PRUNE_PROBE)?
        .execute(params![result.probe])?;
    Ok(())
}

fn enqueue_in(
    tx: &rusqlite::Transaction<'_>,
    alerts: &[(String, String, String)],
    now: i64,
) -> Result<usize, StoreError> {
    let mut added = 0;
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO outbox (channel, key, alert_json, created_at, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?4)",
    )?;
    for (channel, key, json) in alerts {
        added += stmt.execute(params![channel, key, json, now])?;
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_errors_are_one_line_with_the_file_the_cause_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("afile");
        std::fs::write(&file, "").unwrap();
        let under_a_file = file.join("sonde.db");
        let e = Store::open(&under_a_file).err().unwrap();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "store {}: {} is not a directory; ",
                under_a_file.display(),
                file.display()
            )),
            "{text}"
        );
        assert!(text.ends_with(&format!("; {PLACE}")), "{text}");
        assert!(
            std::error::Error::source(&e).is_none(),
            "no repeating chain"
        );

        let corrupt = dir.path().join("corrupt.db");
        std::fs::write(&corrupt, "not a database ".repeat(400)).unwrap();
        let e = Store::open(&corrupt).err().unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "store {}: file is not a database; {DAMAGED}",
                corrupt.display()
            )
        );
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn query_errors_can_name_the_file() {
        let e = StoreError::from(rusqlite::Error::Utf8Error(
            3,
            String::from_utf8(vec![0xff]).unwrap_err().utf8_error(),
        ));
        assert!(
            std::error::Error::source(&e).is_none(),
            "no repeating chain"
        );
        let e = e.at(Path::new("/var/lib/sonde/sonde.db"));
        assert!(
            std::error::Error::source(&e).is_none(),
            "no repeating chain"
        );
        let text = e.to_string();
        assert!(
            text.starts_with("store /var/lib/sonde/sonde.db: a stored value does not read back ("),
            "{text}"
        );
        assert!(text.ends_with(DAMAGED), "{text}");
    }

    fn row(probe: &str, i: i64) -> ResultRow {
        ResultRow {
            probe: probe.into(),
            started_at: i,
            duration_seconds: 0.1,
            status: "critical".into(),
            category: Some("network".into()),
            summary: format!("run {i}"),
            observations_json: "{}".into(),
        }
    }

    fn alert(channel: &str, key: &str) -> (String, String, String) {
        (channel.into(), key.into(), format!("{{\"key\":\"{key}\"}}"))
    }

    /// Inserts `per_probe` results for each of `probes` probes in one
    /// transaction (the test's setup, not the agent's path).
    fn fill(s: &Store, probes: usize, per_probe: i64) {
        let mut conn = s.conn();
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx
                .prepare(
                    "INSERT INTO results (probe, started_at, duration_seconds, status, category, summary, observations_json)
                     VALUES (?1, ?2, 0.1, 'ok', NULL, ?3, '{}')",
                )
                .unwrap();
            for i in 0..per_probe {
                for p in 0..probes {
                    stmt.execute(params![format!("p{p}"), i, format!("run {i}")])
                        .unwrap();
                }
            }
        }
        tx.commit().unwrap();
    }

    #[test]
    fn recent_results_of_many_probes_is_one_query_bounded_per_probe() {
        let s = Store::in_memory().unwrap();
        fill(&s, 3, 5);
        let names: Vec<String> = ["p0", "p2", "absent", "p0"]
            .iter()
            .map(|n| n.to_string())
            .collect();
        let got = s.recent_results_of(&names, 3).unwrap();
        assert_eq!(got.len(), 3);
        for p in ["p0", "p2"] {
            let runs: Vec<i64> = got[p].iter().map(|r| r.started_at).collect();
            assert_eq!(runs, [4, 3, 2], "{p}");
            // The same rows as the one-probe query.
            assert_eq!(got[p], s.recent_results(p, 3).unwrap());
        }
        assert!(got["absent"].is_empty());
        assert!(s.recent_results_of(&[], 3).unwrap().is_empty());
        // Names that look like SQL or JSON are just names.
        let odd = vec!["x' OR 1=1 --".to_string(), "\"]".to_string()];
        let got = s.recent_results_of(&odd, 3).unwrap();
        assert!(got.values().all(Vec::is_empty));

        // The plan seeks the (probe, id) index per name: no scan of results.
        let conn = s.conn();
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {RECENT_OF}"))
            .unwrap();
        let plan: Vec<String> = stmt
            .query_map(params!["[\"p0\"]", 3], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let plan = plan.join("\n");
        assert!(
            plan.contains("USING COVERING INDEX results_probe (probe=?)"),
            "{plan}"
        );
        assert!(
            plan.contains("USING INTEGER PRIMARY KEY (rowid=?)"),
            "{plan}"
        );
        assert!(!plan.contains("SCAN r"), "{plan}");
    }

    #[test]
    fn recent_results_of_ten_thousand_probes_gives_each_its_newest() {
        let s = Store::in_memory().unwrap();
        fill(&s, 10_000, 12);
        let names: Vec<String> = (0..10_000).map(|p| format!("p{p}")).collect();
        let got = s.recent_results_of(&names, 4).unwrap();
        assert_eq!(got.len(), 10_000);
        assert!(got.values().all(|rows| rows.len() == 4));
        assert_eq!(got["p9999"][0].summary, "run 11");
        assert_eq!(got["p9999"][3].summary, "run 8");
    }

    #[test]
    fn a_result_its_state_and_its_alerts_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/sonde.db");
        {
            let s = Store::open(&path).unwrap();
            let added = s
                .record(
                    &row("p", 1),
                    "{\"state\":\"unhealthy\"}",
                    &[alert("mail", "p:1:firing"), alert("am", "p:1:firing")],
                    100,
                )
                .unwrap();
            assert_eq!(added, 2);
            // The same key again is not queued twice.
            assert_eq!(s.enqueue(&[alert("mail", "p:1:firing")], 101).unwrap(), 0);
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(
            s.monitors().unwrap(),
            vec![("p".to_string(), "{\"state\":\"unhealthy\"}".to_string())]
        );
        assert_eq!(s.recent_results("p", 10).unwrap()[0].summary, "run 1");
        let head = s.next_due("mail", 100).unwrap().unwrap();
        assert_eq!(head.key, "p:1:firing");
        assert_eq!(s.pending("mail").unwrap(), (1, Some(100)));
    }

    #[test]
    fn delivery_is_in_order_with_retries_and_dead_letters() {
        let s = Store::in_memory().unwrap();
        s.enqueue(
            &[alert("hook", "a"), alert("hook", "b"), alert("other", "c")],
            10,
        )
        .unwrap();
        let a = s.next_due("hook", 10).unwrap().unwrap();
        assert_eq!(a.key, "a");
        s.mark_failed(a.id, "HTTP 503", Some(20)).unwrap();
        // The head is not due yet, and b waits behind it.
        assert_eq!(s.next_due("hook", 15).unwrap(), None);
        assert_eq!(s.next_attempt_at("hook").unwrap(), Some(20));
        let a = s.next_due("hook", 20).unwrap().unwrap();
        assert_eq!((a.key.as_str(), a.attempts), ("a", 1));
        s.mark_delivered(a.id, 20).unwrap();
        let b = s.next_due("hook", 20).unwrap().unwrap();
        assert_eq!(b.key, "b");
        s.mark_failed(b.id, "HTTP 400", None).unwrap();
        assert_eq!(s.next_due("hook", 100).unwrap(), None);
        assert_eq!(s.pending("hook").unwrap(), (0, None));
        assert_eq!(s.next_due("other", 10).unwrap().unwrap().key, "c");
        assert_eq!(s.prune_delivered(1000).unwrap(), 2);
    }

    #[test]
    fn results_are_capped_per_probe() {
        let s = Store::in_memory().unwrap();
        s.record(&row("q", 0), "{}", &[], 0).unwrap();
        let count = |probe: &str| -> i64 {
            s.conn()
                .query_row(
                    "SELECT COUNT(*) FROM results WHERE probe = ?1",
                    [probe],
                    |r| r.get(0),
                )
                .unwrap()
        };
        for i in 0..(2 * RESULTS_KEPT + 7) {
            s.record(&row("p", i), "{}", &[], i).unwrap();
            // Never more than the cap, after any insert.
            assert_eq!(count("p"), (i + 1).min(RESULTS_KEPT), "after insert {i}");
        }
        // p's newest RESULTS_KEPT remain, and q's one result.
        let kept = s.recent_results("p", 1000).unwrap();
        assert_eq!(kept.len() as i64, RESULTS_KEPT);
        assert_eq!(kept[0].started_at, 2 * RESULTS_KEPT + 6);
        assert_eq!(kept.last().unwrap().started_at, RESULTS_KEPT + 7);
        assert_eq!(s.recent_results("q", 10).unwrap().len(), 1);

        // Pruning seeks the (probe, id) index: its cost does not grow with
        // the other probes' results.
        let conn = s.conn();
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {PRUNE_PROBE}"))
            .unwrap();
        let plan: Vec<String> = stmt
            .query_map(params!["p"], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let plan = plan.join("\n");
        assert!(!plan.contains("SCAN"), "{plan}");
        assert!(plan.contains("INDEX results_probe (probe=?"), "{plan}");
    }

    #[test]
    fn writing_results_never_re_prepares_a_statement() {
        // A statement SQLite must re-prepare on each bind (a bound LIMIT or
        // OFFSET does that) costs a full SQL parse per result.
        let s = Store::in_memory().unwrap();
        let writes: Vec<PendingWrite> = (0..300)
            .map(|i| PendingWrite {
                result: Some(row(&format!("p{}", i % 7), i)),
                monitor: Some((format!("p{}", i % 7), format!("{{\"n\":{i}}}"))),
                alerts: Vec::new(),
                now: i,
            })
            .collect();
        s.write_all(&writes, &[], 300).unwrap();
        s.write_all(&writes[..10], &[], 301).unwrap();
        let conn = s.conn();
        for sql in [INSERT_RESULT, PRUNE_PROBE, UPSERT_MONITOR] {
            let stmt = conn.prepare_cached(sql).unwrap();
            let runs = stmt.get_status(rusqlite::StatementStatus::Run);
            assert!(
                runs >= 300,
                "{sql}: {runs} runs (not the cached statement?)"
            );
            assert_eq!(
                stmt.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "{sql}"
            );
        }
    }

    #[test]
    fn silences_expire_and_can_be_removed() {
        let s = Store::in_memory().unwrap();
        let a = s
            .add_silence("push-connectivity", 0, 100, "certificate renewal")
            .unwrap();
        let b = s
            .add_silence("set:PushNotifications.Proxy", 50, 200, "")
            .unwrap();
        assert_eq!(s.silences(60).unwrap().len(), 2);
        assert_eq!(
            s.silences(150)
                .unwrap()
                .iter()
                .map(|x| x.id)
                .collect::<Vec<_>>(),
            vec![b]
        );
        assert!(s.remove_silence(a).unwrap());
        assert!(!s.remove_silence(a).unwrap());
    }

    #[test]
    fn a_file_that_is_not_a_database_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sonde.db");
        std::fs::write(
            &path,
            b"this is not sqlite, just some text that is long enough to matter",
        )
        .unwrap();
        let err = Store::open(&path).err().unwrap().to_string();
        assert!(err.contains("sonde.db"), "{err}");
        assert!(err.contains("move it aside"), "{err}");
    }

    #[test]
    fn a_store_locked_by_another_process_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sonde.db");
        drop(Store::open(&path).unwrap());
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let s = Store::open(&path).unwrap();
        s.set_busy_timeout(std::time::Duration::from_millis(10))
            .unwrap();
        let err = s.record(&row("p", 1), "{}", &[], 1).err().unwrap();
        let err = match err {
            StoreError::Sql(e) => advice(&e),
            other => panic!("{other}"),
        };
        assert!(err.contains("another process holds a lock"), "{err}");
    }

    #[test]
    fn pending_writes_land_in_order_and_what_was_sent_is_marked_delivered() {
        let s = Store::in_memory().unwrap();
        let writes = vec![
            PendingWrite {
                result: Some(row("p", 1)),
                monitor: Some(("p".into(), "{\"n\":1}".into())),
                alerts: vec![alert("mail", "a"), alert("hook", "a")],
                now: 10,
            },
            PendingWrite {
                result: None,
                monitor: Some(("p".into(), "{\"n\":2}".into())),
                alerts: vec![],
                now: 11,
            },
        ];
        s.write_all(&writes, &[("mail".into(), "a".into())], 12)
            .unwrap();
        assert_eq!(s.monitors().unwrap()[0].1, "{\"n\":2}");
        assert_eq!(s.recent_results("p", 5).unwrap().len(), 1);
        assert_eq!(s.pending("mail").unwrap().0, 0);
        assert_eq!(s.pending("hook").unwrap().0, 1);
    }
}
