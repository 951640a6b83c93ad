//! `osprey baseline accept|forget`: the CLI appends an override to `baseline_overrides`; the
//! collector's writer thread polls for new ones, the baseline in memory applies them and the
//! row is marked applied (with its result). A collector that is not running applies them at
//! its next start. The operator's request and the collector's application are both on record.

use std::net::IpAddr;

use protocol::{ExecId, Timestamp};
use rusqlite::{params, Connection};

use crate::HistoryError;

/// What an override does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OverrideAction {
    /// Accept what a baseline finding reported as novel: its items become part of the
    /// baseline, the finding stops for that pattern.
    Accept {
        finding_id: String,
        items: Vec<NovelItem>,
    },
    /// Forget everything learned for a program (by exe, full program or script path):
    /// it learns again from its next run.
    Forget { target: String },
}

impl OverrideAction {
    pub fn name(&self) -> &'static str {
        match self {
            OverrideAction::Accept { .. } => "accept",
            OverrideAction::Forget { .. } => "forget",
        }
    }
}

/// One item a baseline finding reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NovelItem {
    pub exec_id: ExecId,
    pub rule_id: String,
    pub kind: String,
    pub owner: String,
    pub user: String,
    pub item: String,
    pub destination: Option<(IpAddr, u16)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub id: i64,
    pub time: Timestamp,
    pub actor: String,
    pub action: OverrideAction,
}

/// The items a baseline finding reported (empty when this history has none for it).
pub fn novel_items(conn: &Connection, finding_id: &str) -> Result<Vec<NovelItem>, HistoryError> {
    let mut stmt = conn.prepare_cached(
        "SELECT exec_id, rule_id, kind, owner, user, item, destination, port
         FROM baseline_novelties WHERE finding_id = ?1 ORDER BY time_ns",
    )?;
    let items = stmt
        .query_map([finding_id], |r| {
            let destination: Option<String> = r.get(6)?;
            let port: Option<u16> = r.get(7)?;
            Ok(NovelItem {
                exec_id: exec_id_column(r, 0)?,
                rule_id: r.get(1)?,
                kind: r.get(2)?,
                owner: r.get(3)?,
                user: r.get(4)?,
                item: r.get(5)?,
                destination: destination.and_then(|d| d.parse().ok()).zip(port),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(items)
}

/// An `ExecId` column (text); a value that does not parse is a conversion error.
pub(crate) fn exec_id_column(row: &rusqlite::Row, index: usize) -> rusqlite::Result<ExecId> {
    let text: String = row.get(index)?;
    text.parse().map_err(|e: protocol::ExecIdParseError| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Appends an override (the CLI's side); returns its id.
pub fn request(
    conn: &Connection,
    action: &str,
    target: &str,
    actor: &str,
    now: Timestamp,
) -> Result<i64, HistoryError> {
    conn.execute(
        "INSERT INTO baseline_overrides (time_ns, action, target, actor) VALUES (?1, ?2, ?3, ?4)",
        params![now.unix_nanos(), action, target, actor],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Overrides not applied yet, after id `after` (the writer's side).
pub fn pending(conn: &Connection, after: i64) -> Result<Vec<Override>, HistoryError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, time_ns, action, target, actor FROM baseline_overrides
         WHERE applied_ns IS NULL AND id > ?1 ORDER BY id",
    )?;
    let rows: Vec<(i64, i64, String, String, String)> = stmt
        .query_map([after], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, time, action, target, actor) in rows {
        let action = match action.as_str() {
            "accept" => OverrideAction::Accept {
                items: novel_items(conn, &target)?,
                finding_id: target,
            },
            "forget" => OverrideAction::Forget { target },
            other => {
                // Only the CLI writes here; an unknown action is recorded, not applied.
                conn.execute(
                    "UPDATE baseline_overrides SET applied_ns = ?1, result = ?2 WHERE id = ?3",
                    params![
                        Timestamp::now().unix_nanos(),
                        format!("unknown action {other:?}"),
                        id
                    ],
                )?;
                continue;
            }
        };
        out.push(Override {
            id,
            time: Timestamp::from_unix_nanos(time),
            actor,
            action,
        });
    }
    Ok(out)
}

/// An override's state, for `osprey baseline status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverrideStatus {
    pub id: i64,
    pub time: Timestamp,
    pub action: String,
    pub target: String,
    pub actor: String,
    pub applied: Option<Timestamp>,
    pub result: Option<String>,
}

pub fn get(conn: &Connection, id: i64) -> Result<Option<OverrideStatus>, HistoryError> {
    Ok(list(conn, Some(id), 1)?.into_iter().next())
}

/// The most recent overrides (or the one with `id`).
pub fn list(
    conn: &Connection,
    id: Option<i64>,
    limit: usize,
) -> Result<Vec<OverrideStatus>, HistoryError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, time_ns, action, target, actor, applied_ns, result FROM baseline_overrides
         WHERE ?1 IS NULL OR id = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![id, limit as i64], |r| {
            Ok(OverrideStatus {
                id: r.get(0)?,
                time: Timestamp::from_unix_nanos(r.get(1)?),
                action: r.get(2)?,
                target: r.get(3)?,
                actor: r.get(4)?,
                applied: r.get::<_, Option<i64>>(5)?.map(Timestamp::from_unix_nanos),
                result: r.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}
