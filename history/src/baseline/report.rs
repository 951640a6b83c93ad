//! The stored baselines as `osprey baseline status|show` present them (read from the file,
//! so they work whether or not a collector runs; a running collector writes its changes every
//! `baseline.flush_interval_secs`).

use protocol::Timestamp;
use rusqlite::Connection;

use crate::{identity::Program, HistoryError};

/// Counts per kind and state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredStatus {
    /// (kind, owners)
    pub owners: Vec<(String, u64)>,
    /// (kind, state, items)
    pub entries: Vec<(String, String, u64)>,
    /// Owners still learning, given the learning period.
    pub learning: u64,
    pub novelties_recorded: u64,
    pub overrides_pending: u64,
}

pub fn status(
    conn: &Connection,
    learning_period_hours: f64,
    now: Timestamp,
) -> Result<StoredStatus, HistoryError> {
    let learning_ns = (learning_period_hours * 3_600e9) as i64;
    let owners = conn
        .prepare("SELECT kind, count(*) FROM baseline_owners GROUP BY kind ORDER BY kind")?
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
        .collect::<Result<_, _>>()?;
    let entries = conn
        .prepare(
            "SELECT kind, state, count(*) FROM baseline_entries GROUP BY kind, state ORDER BY kind, state",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64)))?
        .collect::<Result<_, _>>()?;
    let count = |sql: &str, params: &[i64]| -> Result<u64, HistoryError> {
        let n: i64 = conn.query_row(sql, rusqlite::params_from_iter(params), |r| r.get(0))?;
        Ok(n as u64)
    };
    Ok(StoredStatus {
        owners,
        entries,
        learning: count(
            "SELECT count(*) FROM baseline_owners WHERE kind = 'destination' AND first_ns > ?1",
            &[now.unix_nanos().saturating_sub(learning_ns)],
        )?,
        novelties_recorded: count("SELECT count(*) FROM baseline_novelties", &[])?,
        overrides_pending: count(
            "SELECT count(*) FROM baseline_overrides WHERE applied_ns IS NULL",
            &[],
        )?,
    })
}

/// One owner's stored baseline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredOwner {
    pub kind: String,
    pub owner: String,
    pub user: String,
    pub first: Timestamp,
    pub last: Timestamp,
    pub items: Vec<StoredItem>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredItem {
    pub item: String,
    pub state: String,
    pub first: Timestamp,
    pub last: Timestamp,
    pub hits: u32,
}

/// The owners `target` selects (an exe path, a full program, a script path), with their
/// items: destinations, children, hashes.
pub fn show(conn: &Connection, target: &str) -> Result<Vec<StoredOwner>, HistoryError> {
    let mut owners: Vec<StoredOwner> = conn
        .prepare("SELECT kind, owner, user, first_ns, last_ns FROM baseline_owners ORDER BY owner, user, kind")?
        .query_map([], |r| {
            Ok(StoredOwner {
                kind: r.get(0)?,
                owner: r.get(1)?,
                user: r.get(2)?,
                first: Timestamp::from_unix_nanos(r.get(3)?),
                last: Timestamp::from_unix_nanos(r.get(4)?),
                items: Vec::new(),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|o| Program::from(o.owner.as_str()).selected_by(target))
        .collect();
    let mut stmt = conn.prepare(
        "SELECT item, state, first_ns, last_ns, hits FROM baseline_entries
         WHERE kind = ?1 AND owner = ?2 AND user = ?3 ORDER BY item",
    )?;
    for o in &mut owners {
        o.items = stmt
            .query_map([&o.kind, &o.owner, &o.user], |r| {
                Ok(StoredItem {
                    item: r.get(0)?,
                    state: r.get(1)?,
                    first: Timestamp::from_unix_nanos(r.get(2)?),
                    last: Timestamp::from_unix_nanos(r.get(3)?),
                    hits: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
    }
    Ok(owners)
}
