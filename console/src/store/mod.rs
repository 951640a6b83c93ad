//! The console's SQLite database: findings (with the events that triggered them), audit
//! records, hosts and their heartbeats. One writer connection (the ingest tasks and
//! retention) and one reader connection (the API) in WAL mode, each used on a blocking
//! thread.

pub mod audit;
pub mod findings;
pub mod hosts;
pub mod retention;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use rusqlite::Connection;

pub use audit::{AuditFilter, PendingApproval};
pub use findings::{Cursor, FindingFilter, Overview};
pub use hosts::{HeartbeatPoint, HostRow};
pub use retention::Deleted;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database task failed: {0}")]
    Task(String),
}

#[derive(Clone)]
pub struct Store {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS findings (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    time INTEGER NOT NULL,
    received INTEGER NOT NULL,
    host TEXT NOT NULL,
    severity INTEGER NOT NULL,
    rule_id TEXT NOT NULL,
    title TEXT NOT NULL,
    detector TEXT NOT NULL,
    exec_id TEXT NOT NULL,
    pid INTEGER NOT NULL,
    exe TEXT NOT NULL,
    cmd_line TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS findings_time ON findings(time, seq);
CREATE INDEX IF NOT EXISTS findings_host ON findings(host, time);
CREATE INDEX IF NOT EXISTS findings_exec ON findings(exec_id);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    exec_id TEXT NOT NULL,
    host TEXT NOT NULL,
    time INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (exec_id, time, kind)
);
CREATE INDEX IF NOT EXISTS events_time ON events(time);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time INTEGER NOT NULL,
    source TEXT NOT NULL,
    host TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    result TEXT NOT NULL,
    command_id TEXT,
    finding_id TEXT,
    pending_id TEXT,
    actor_key TEXT,
    actor_name TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_time ON audit(time);
CREATE INDEX IF NOT EXISTS audit_finding ON audit(finding_id);
CREATE INDEX IF NOT EXISTS audit_pending ON audit(pending_id);
CREATE TABLE IF NOT EXISTS hosts (
    host TEXT PRIMARY KEY,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    heartbeat TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS heartbeats (
    host TEXT NOT NULL,
    time INTEGER NOT NULL,
    events_per_sec REAL NOT NULL,
    drops INTEGER NOT NULL,
    spool_depth INTEGER NOT NULL,
    PRIMARY KEY (host, time)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS heartbeats_time ON heartbeats(time);
";

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Incremental auto-vacuum must be chosen before the first table exists; it lets
    // retention give freed pages back to the file system.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        }
        let writer = open_connection(path).map_err(err)?;
        writer.execute_batch(SCHEMA).map_err(err)?;
        let reader = open_connection(path).map_err(err)?;
        Ok(Store {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the writer connection on a blocking thread.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
        .map_err(StoreError::from)
    }

    /// Runs `f` on the reader connection on a blocking thread.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
        .map_err(StoreError::from)
    }
}

/// Bytes the database's live pages take (the file minus its free pages).
pub fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(((pages - free).max(0) * size) as u64)
}

fn json<T: serde::Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn parse(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
pub(crate) mod testing {
    use protocol::*;

    pub fn finding(host: &str, pid: u32, rule: &str, severity: Severity, nanos: i64) -> Finding {
        let exec_id: ExecId = format!("0000abcd-{pid}-100-0").parse().unwrap();
        let process = Process {
            start_time: Timestamp::from_unix_nanos(nanos - 1_000),
            ..Process::new(
                exec_id,
                "/usr/bin/python3",
                vec!["python3".into(), "-c".into(), format!("marker{pid}")],
            )
        };
        Finding {
            id: FindingId::new(host, &exec_id, Detector::Heuristic, rule),
            time: Timestamp::from_unix_nanos(nanos),
            host: host.into(),
            detector: Detector::Heuristic,
            rule_id: rule.into(),
            title: format!("title of {rule}"),
            description: None,
            author: None,
            severity,
            tags: vec![],
            process,
            ancestry: vec![Ancestor {
                exec_id: "0000abcd-1-1-0".parse().unwrap(),
                pid: 1,
                name: "init".into(),
                exe: "/sbin/init".into(),
                argv: vec!["init".into()],
                tty: None,
            }],
            triggers: vec![Trigger {
                time: Timestamp::from_unix_nanos(nanos),
                detail: EventDetail::Exec(ExecEvent::default()),
            }],
            recommended_actions: vec![],
        }
    }
}
