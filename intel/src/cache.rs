//! The verdict cache: table `intel_verdicts` in a SQLite file the caller names (the host's
//! history database when there is one, else intel's own). The table is created when missing;
//! no other table is touched.
//!
//! Freshness is decided at read time from the lookup time and the TTLs in force, so
//! changing a TTL applies to verdicts already stored.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use protocol::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};

use crate::{verdict::report_link, Sha256, Verdict, VerdictSource};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot create the directory of the verdict cache {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("verdict cache {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

pub struct VerdictCache {
    conn: Connection,
    path: PathBuf,
    ttl_known: Duration,
    ttl_unknown: Duration,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS intel_verdicts (
    sha256          TEXT PRIMARY KEY NOT NULL,  -- 64 lowercase hex digits
    known           INTEGER NOT NULL,           -- 0: VirusTotal does not know the file
    malicious       INTEGER NOT NULL,
    suspicious      INTEGER NOT NULL,
    harmless        INTEGER NOT NULL,
    undetected      INTEGER NOT NULL,
    engines         INTEGER NOT NULL,
    looked_up_at_ns INTEGER NOT NULL            -- Unix time of the answer, nanoseconds
) WITHOUT ROWID;
";

impl VerdictCache {
    /// Opens (creating when needed) the database and the table.
    pub fn open(
        path: &Path,
        ttl_known: Duration,
        ttl_unknown: Duration,
    ) -> Result<Self, CacheError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CacheError::Directory {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let sql = |source| CacheError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(sql)?;
        // The history writer may share the file: wait for its transactions rather than fail,
        // and let readers and one writer work side by side.
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        Ok(VerdictCache {
            conn,
            path: path.to_path_buf(),
            ttl_known,
            ttl_unknown,
        })
    }

    fn error(&self, source: rusqlite::Error) -> CacheError {
        CacheError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn ttl(&self, known: bool) -> Duration {
        if known {
            self.ttl_known
        } else {
            self.ttl_unknown
        }
    }

    /// The stored verdict about `sha256` if it is still fresh at `now`.
    pub fn get(&self, sha256: &Sha256, now: Timestamp) -> Result<Option<Verdict>, CacheError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT known, malicious, suspicious, harmless, undetected, engines, \
                 looked_up_at_ns FROM intel_verdicts WHERE sha256 = ?1",
            )
            .map_err(|e| self.error(e))?;
        let row = stmt
            .query_row([sha256.to_string()], |row| {
                Ok(Verdict {
                    sha256: *sha256,
                    known: row.get(0)?,
                    malicious: row.get(1)?,
                    suspicious: row.get(2)?,
                    harmless: row.get(3)?,
                    undetected: row.get(4)?,
                    engines: row.get(5)?,
                    link: report_link(sha256),
                    looked_up_at: Timestamp::from_unix_nanos(row.get(6)?),
                    source: VerdictSource::Cache,
                })
            })
            .optional()
            .map_err(|e| self.error(e))?;
        Ok(row.filter(|v| age(v.looked_up_at, now) < self.ttl(v.known)))
    }

    /// Stores (or replaces) a verdict.
    pub fn put(&self, verdict: &Verdict) -> Result<(), CacheError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT OR REPLACE INTO intel_verdicts (sha256, known, malicious, suspicious, \
                 harmless, undetected, engines, looked_up_at_ns) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .map_err(|e| self.error(e))?;
        stmt.execute(params![
            verdict.sha256.to_string(),
            verdict.known,
            verdict.malicious,
            verdict.suspicious,
            verdict.harmless,
            verdict.undetected,
            verdict.engines,
            verdict.looked_up_at.unix_nanos(),
        ])
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Deletes verdicts no TTL can make fresh again; returns how many.
    pub fn prune(&self, now: Timestamp) -> Result<usize, CacheError> {
        let longest = self.ttl_known.max(self.ttl_unknown);
        let cutoff = now
            .unix_nanos()
            .saturating_sub(i64::try_from(longest.as_nanos()).unwrap_or(i64::MAX));
        self.conn
            .execute(
                "DELETE FROM intel_verdicts WHERE looked_up_at_ns < ?1",
                [cutoff],
            )
            .map_err(|e| self.error(e))
    }
}

fn age(then: Timestamp, now: Timestamp) -> Duration {
    Duration::from_nanos(u64::try_from(now.unix_nanos() - then.unix_nanos()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Counts;

    const DAY: i64 = 24 * 3600 * 1_000_000_000;

    fn verdict(byte: u8, known: bool, at: i64) -> Verdict {
        let counts = known.then_some(Counts {
            malicious: 5,
            suspicious: 1,
            harmless: 2,
            undetected: 60,
            engines: 70,
        });
        Verdict::new(
            Sha256::from_bytes([byte; 32]),
            counts,
            Timestamp::from_unix_nanos(at),
        )
    }

    #[test]
    fn fresh_verdicts_come_back_stale_ones_do_not_and_other_tables_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        {
            let other = Connection::open(&path).unwrap();
            other
                .execute_batch(
                    "CREATE TABLE processes (pid INTEGER); INSERT INTO processes VALUES (7);",
                )
                .unwrap();
        }
        let week = Duration::from_secs(7 * 24 * 3600);
        let day = Duration::from_secs(24 * 3600);
        let cache = VerdictCache::open(&path, week, day).unwrap();
        let t0 = 100 * DAY;
        cache.put(&verdict(1, true, t0)).unwrap();
        cache.put(&verdict(2, false, t0)).unwrap();

        let soon = Timestamp::from_unix_nanos(t0 + DAY / 2);
        let hit = cache
            .get(&Sha256::from_bytes([1; 32]), soon)
            .unwrap()
            .unwrap();
        assert_eq!(hit.source, VerdictSource::Cache);
        assert_eq!((hit.malicious, hit.suspicious, hit.engines), (5, 1, 70));
        assert_eq!(hit.looked_up_at, Timestamp::from_unix_nanos(t0));
        assert!(
            !cache
                .get(&Sha256::from_bytes([2; 32]), soon)
                .unwrap()
                .unwrap()
                .known
        );

        // Two days later the unknown one is stale, the known one is not.
        let later = Timestamp::from_unix_nanos(t0 + 2 * DAY);
        assert!(cache
            .get(&Sha256::from_bytes([1; 32]), later)
            .unwrap()
            .is_some());
        assert!(cache
            .get(&Sha256::from_bytes([2; 32]), later)
            .unwrap()
            .is_none());
        assert!(cache
            .get(&Sha256::from_bytes([3; 32]), later)
            .unwrap()
            .is_none());

        let much_later = Timestamp::from_unix_nanos(t0 + 8 * DAY);
        assert_eq!(cache.prune(much_later).unwrap(), 2);
        drop(cache);

        // Reopening keeps the table; the other table was not touched.
        let _again = VerdictCache::open(&path, week, day).unwrap();
        let other = Connection::open(&path).unwrap();
        let pid: i64 = other
            .query_row("SELECT pid FROM processes", [], |r| r.get(0))
            .unwrap();
        assert_eq!(pid, 7);
    }
}
