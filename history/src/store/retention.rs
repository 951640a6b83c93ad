//! Retention: rows older than `max_age_days` go, and while the file's pages in use exceed
//! `max_size_mb` the oldest tenth of each time-ordered table goes, until it is back under 90 %
//! of the bound. Deletions are counted per table and reason, and logged in `retention_log`.
//! Learned baselines are not time-series rows (their size is bounded by decay and the
//! per-owner limits) and tables this crate does not know are never touched.

use protocol::Timestamp;
use rusqlite::{params, Connection};

use super::{schema::TIME_SERIES, used_bytes};
use crate::{config::RetentionConfig, HistoryError};

const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// What one enforcement deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// (table, reason `age`|`size`, rows)
    pub deletions: Vec<(&'static str, &'static str, u64)>,
    /// Pages in use after enforcement, in bytes.
    pub file_bytes: u64,
}

impl RetentionReport {
    /// Rows deleted per table (both reasons).
    pub fn deleted(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.deletions.iter().map(|(t, _, n)| (*t, *n))
    }

    pub fn total(&self) -> u64 {
        self.deletions.iter().map(|(_, _, n)| n).sum()
    }
}

pub fn enforce(
    conn: &mut Connection,
    config: &RetentionConfig,
    now: Timestamp,
) -> Result<RetentionReport, HistoryError> {
    let mut report = RetentionReport::default();
    if config.max_age_days > 0 {
        let cutoff = now
            .unix_nanos()
            .saturating_sub(config.max_age_days as i64 * NANOS_PER_DAY);
        let tx = conn.transaction()?;
        for &(table, column) in TIME_SERIES {
            // A process row ages from its end (a living process's row stays until its start
            // is past the bound too); the start condition lets the index find candidates.
            let condition = if table == "processes" {
                "start_ns < ?1 AND coalesce(end_ns, start_ns) < ?1".to_string()
            } else {
                format!("{column} < ?1")
            };
            let rows = tx.execute(&format!("DELETE FROM {table} WHERE {condition}"), [cutoff])?;
            if rows > 0 {
                report.deletions.push((table, "age", rows as u64));
            }
        }
        tx.commit()?;
    }
    if config.max_size_mb > 0.0 {
        let bound = (config.max_size_mb * 1024.0 * 1024.0) as u64;
        let low_water = bound / 10 * 9;
        if used_bytes(conn)? > bound {
            let mut size_deletions = [0u64; TIME_SERIES.len()];
            while used_bytes(conn)? > low_water {
                let tx = conn.transaction()?;
                let mut deleted = 0;
                for (i, &(table, column)) in TIME_SERIES.iter().enumerate() {
                    // The log of deletions is what reports them: only age removes it.
                    if table == "retention_log" {
                        continue;
                    }
                    let rows: i64 =
                        tx.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
                    if rows == 0 {
                        continue;
                    }
                    // The time of the row a tenth of the way in: everything up to it goes.
                    let cut: i64 = tx.query_row(
                        &format!(
                            "SELECT {column} FROM {table} ORDER BY {column} LIMIT 1 OFFSET ?1"
                        ),
                        [(rows / 10).max(0)],
                        |r| r.get(0),
                    )?;
                    let n =
                        tx.execute(&format!("DELETE FROM {table} WHERE {column} <= ?1"), [cut])?;
                    size_deletions[i] += n as u64;
                    deleted += n;
                }
                tx.commit()?;
                if deleted == 0 {
                    break; // only baselines and other parts' tables left
                }
            }
            for (i, &(table, _)) in TIME_SERIES.iter().enumerate() {
                if size_deletions[i] > 0 {
                    report.deletions.push((table, "size", size_deletions[i]));
                }
            }
            // Give the freed pages back so the file shrinks (new files are created with
            // incremental auto-vacuum), and move the log into it.
            // Each step of the pragma frees pages: run it to the end.
            let mut vacuum = conn.prepare("PRAGMA incremental_vacuum")?;
            let mut steps = vacuum.query([])?;
            while steps.next()?.is_some() {}
            drop(steps);
            drop(vacuum);
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
    }
    if !report.deletions.is_empty() {
        let tx = conn.transaction()?;
        for (table, reason, rows) in &report.deletions {
            tx.execute(
                "INSERT INTO retention_log (time_ns, table_name, reason, rows) VALUES (?1, ?2, ?3, ?4)",
                params![now.unix_nanos(), table, reason, *rows as i64],
            )?;
        }
        tx.commit()?;
        tracing::info!(rows = report.total(), "history retention deleted old rows");
    }
    report.file_bytes = used_bytes(conn)?;
    Ok(report)
}
