//! The SQLite file: opening (WAL, migrations), the one writer thread, retention, and the read
//! side (export and queries). Other parts may keep their own tables in the same file (e.g. an
//! intel verdict cache): they open it with [`open`] and create what they need; migrations and
//! retention here never touch tables they don't know.

pub mod overrides;
pub mod read;
pub mod record;
pub mod retention;
pub mod schema;
pub mod writer;

use std::{path::Path, time::Duration};

use rusqlite::{Connection, OpenFlags};

use crate::HistoryError;

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating the file and its directory when missing) and migrates the history file,
/// read-write, in WAL mode. For the writer thread, the CLI's `baseline accept|forget`, and
/// other parts keeping tables in the same file.
pub fn open(path: &Path) -> Result<Connection, HistoryError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| HistoryError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let mut conn = Connection::open(path).map_err(|e| HistoryError::open(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Incremental auto-vacuum only takes effect on a file without tables: new files get it,
    // so size retention can give freed pages back to the file system.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(HistoryError::open(
            path,
            format!("cannot switch to WAL (journal_mode is {mode})"),
        ));
    }
    // WAL + NORMAL: a crash loses at most the last transactions, never corrupts.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    schema::migrate(&mut conn).map_err(|e| e.at(path))?;
    Ok(conn)
}

/// Opens an existing history file for reading only (export, queries, `baseline status`):
/// never creates or migrates it; a file written by a newer Osprey is refused.
pub fn open_read_only(path: &Path) -> Result<Connection, HistoryError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| HistoryError::open(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == 0 {
        return Err(HistoryError::open(
            path,
            "not an Osprey history file (no schema)",
        ));
    }
    if version > schema::VERSION {
        return Err(HistoryError::NewerSchema {
            found: version,
            known: schema::VERSION,
        }
        .at(path));
    }
    Ok(conn)
}

/// Bytes the file holds in pages in use (the file may be larger by its free pages).
pub fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pragma = |name: &str| -> rusqlite::Result<u64> {
        let n: i64 = conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    };
    Ok(pragma("page_count")?.saturating_sub(pragma("freelist_count")?) * pragma("page_size")?)
}
