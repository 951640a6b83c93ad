//! Retention: rows older than their age limit go, and when the database outgrows its size
//! bound the oldest rows go first — heartbeats and stored events before findings and audit
//! records. Every deletion is counted (metrics), never silent.

use rusqlite::{params, Connection};

use crate::config::Retention;

/// Rows deleted in one pass, per table and reason (`age` or `size`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deleted(pub Vec<(&'static str, &'static str, u64)>);

impl Deleted {
    fn add(&mut self, table: &'static str, reason: &'static str, n: usize) {
        if n > 0 {
            self.0.push((table, reason, n as u64));
        }
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, _, n)| n).sum()
    }
}

/// The tables in the order size pressure empties them.
const BY_VALUE: [&str; 4] = ["heartbeats", "events", "audit", "findings"];
const NANOS_PER_HOUR: i64 = 3600 * 1_000_000_000;

pub fn enforce(conn: &mut Connection, now: i64, limits: &Retention) -> rusqlite::Result<Deleted> {
    let mut deleted = Deleted::default();
    let cutoff = now - limits.max_age_days as i64 * 24 * NANOS_PER_HOUR;
    let hb_cutoff = now - limits.heartbeat_max_age_hours as i64 * NANOS_PER_HOUR;
    for table in ["findings", "events", "audit"] {
        let n = conn.execute(&format!("DELETE FROM {table} WHERE time < ?1"), [cutoff])?;
        deleted.add(table, "age", n);
    }
    let n = conn.execute("DELETE FROM heartbeats WHERE time < ?1", [hb_cutoff])?;
    deleted.add("heartbeats", "age", n);
    conn.execute("DELETE FROM hosts WHERE last_seen < ?1", [cutoff])?;

    'size: for _round in 0..100 {
        for table in BY_VALUE {
            if super::used_bytes(conn)? <= limits.max_bytes {
                break 'size;
            }
            let rows: i64 =
                conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
            if rows == 0 {
                continue;
            }
            let batch = (rows / 20).max(100);
            let n = conn.execute(
                &format!(
                    "DELETE FROM {table} WHERE time <=
                     (SELECT time FROM {table} ORDER BY time LIMIT 1 OFFSET ?1)"
                ),
                params![(batch - 1).min(rows - 1)],
            )?;
            deleted.add(table, "size", n);
        }
    }
    if deleted.total() > 0 {
        // Hand the freed pages back to the file system.
        conn.execute_batch("PRAGMA incremental_vacuum;")?;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{findings, testing::finding, used_bytes, Store};
    use protocol::{Severity, Timestamp};

    #[tokio::test]
    async fn old_rows_go_and_size_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.db")).unwrap();
        let day = 24 * NANOS_PER_HOUR;
        let now = 100 * day;
        // Two old findings, then enough recent ones to pass 1 MiB.
        for (i, t) in [(0u32, now - 40 * day), (1, now - 31 * day)] {
            let f = finding("h", i, "r", Severity::High, t);
            store
                .write(move |c| findings::insert(c, &f, Timestamp::now()))
                .await
                .unwrap();
        }
        store
            .write(move |c| {
                for i in 0..3000u32 {
                    let mut f = finding("h", 1000 + i, "r", Severity::Low, now - day + i as i64);
                    f.description = Some("x".repeat(400));
                    findings::insert(c, &f, Timestamp::now())?;
                }
                Ok(())
            })
            .await
            .unwrap();
        let limits = Retention {
            max_bytes: 1 << 20,
            ..Retention::default()
        };
        let deleted = store
            .write(move |c| enforce(c, now, &limits))
            .await
            .unwrap();
        assert!(deleted.0.contains(&("findings", "age", 2)), "{deleted:?}");
        assert!(deleted
            .0
            .iter()
            .any(|(t, r, _)| *t == "findings" && *r == "size"));
        let used = store.read(used_bytes).await.unwrap();
        assert!(used <= 1 << 20, "{used} bytes used");
        // The newest survive.
        let newest = store
            .read(|c| {
                findings::list(
                    c,
                    &findings::FindingFilter {
                        limit: 1,
                        ..Default::default()
                    },
                )
            })
            .await
            .unwrap();
        assert_eq!(newest.0[0]["process"]["pid"], 3999);
    }
}
