//! Hosts and their heartbeats (the time series behind the host charts).

use protocol::Heartbeat;
use rusqlite::{params, Connection};
use serde::Serialize;
use serde_json::Value;

use super::{json, parse};

pub fn insert_heartbeat(conn: &mut Connection, h: &Heartbeat) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let time = h.time.unix_nanos();
    let drops: u64 = h.drops.values().sum();
    tx.execute(
        "INSERT INTO heartbeats (host, time, events_per_sec, drops, spool_depth)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
        params![
            h.host,
            time,
            h.events_per_sec,
            drops as i64,
            h.spool_depth as i64
        ],
    )?;
    tx.execute(
        "INSERT INTO hosts (host, first_seen, last_seen, heartbeat) VALUES (?1, ?2, ?2, ?3)
         ON CONFLICT(host) DO UPDATE SET last_seen = excluded.last_seen,
                                         heartbeat = excluded.heartbeat
         WHERE excluded.last_seen >= hosts.last_seen",
        params![h.host, time, json(h)?],
    )?;
    tx.commit()
}

#[derive(Debug, Serialize)]
pub struct HostRow {
    pub host: String,
    pub first_seen: i64,
    pub last_seen: i64,
    /// The latest heartbeat.
    pub heartbeat: Value,
    /// Findings in the last 24 hours.
    pub findings_24h: u64,
}

pub fn list(conn: &Connection, now: i64) -> rusqlite::Result<Vec<HostRow>> {
    let day_ago = now - 24 * 3600 * 1_000_000_000;
    let mut stmt = conn.prepare(
        "SELECT h.host, h.first_seen, h.last_seen, h.heartbeat,
                (SELECT count(*) FROM findings f WHERE f.host = h.host AND f.time >= ?1)
         FROM hosts h ORDER BY h.host",
    )?;
    let rows = stmt.query_map([day_ago], |r| {
        Ok(HostRow {
            host: r.get(0)?,
            first_seen: r.get(1)?,
            last_seen: r.get(2)?,
            heartbeat: parse(&r.get::<_, String>(3)?),
            findings_24h: r.get::<_, i64>(4)? as u64,
        })
    })?;
    rows.collect()
}

/// One heartbeat's figures: `[time (unix ns), events/s, drops since start, spool depth]`.
#[derive(Debug, Serialize)]
pub struct HeartbeatPoint(pub i64, pub f64, pub u64, pub u64);

/// A host's heartbeats since `since`, oldest first, thinned to at most `max_points`.
pub fn series(
    conn: &Connection,
    host: &str,
    since: i64,
    max_points: usize,
) -> rusqlite::Result<Vec<HeartbeatPoint>> {
    let mut stmt = conn.prepare(
        "SELECT time, events_per_sec, drops, spool_depth FROM heartbeats
         WHERE host = ?1 AND time >= ?2 ORDER BY time",
    )?;
    let points: Vec<HeartbeatPoint> = stmt
        .query_map(params![host, since], |r| {
            Ok(HeartbeatPoint(
                r.get(0)?,
                r.get(1)?,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let step = points.len().div_ceil(max_points.max(1)).max(1);
    Ok(points.into_iter().step_by(step).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use protocol::Timestamp;

    #[tokio::test]
    async fn heartbeats_keep_the_latest_and_a_series() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.db")).unwrap();
        for i in 0..10i64 {
            let mut h = Heartbeat {
                host: "h1".into(),
                time: Timestamp::from_unix_nanos(1_000_000_000 * (i + 1)),
                events_per_sec: i as f64,
                spool_depth: i as u64,
                ..Default::default()
            };
            h.drops.insert("exec".into(), 2 * i as u64);
            store.write(move |c| insert_heartbeat(c, &h)).await.unwrap();
        }
        let hosts = store.read(|c| list(c, 20_000_000_000)).await.unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].heartbeat["spool_depth"], 9);
        assert_eq!(hosts[0].first_seen, 1_000_000_000);
        let s = store.read(|c| series(c, "h1", 0, 5)).await.unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!((s[1].0, s[1].2), (3_000_000_000, 4));
    }
}
