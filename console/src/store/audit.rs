//! Audit records from the responder and the hosts' actuators, and the pending approvals
//! derived from them.

use protocol::AuditRecord;
use rusqlite::{params, types::Value as Sql, Connection};
use serde::Serialize;
use serde_json::Value;

use super::{json, parse};

/// Stores an audit record; returns its sequence number.
pub fn insert(conn: &mut Connection, r: &AuditRecord) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO audit (time, source, host, action, target, decision, reason, result,
                            command_id, finding_id, pending_id, actor_key, actor_name, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            r.time.unix_nanos(),
            r.source,
            r.host,
            r.action,
            r.target,
            r.decision.as_str(),
            r.reason,
            r.result,
            r.command_id,
            r.finding_id.as_ref().map(|f| f.0.clone()),
            r.pending_id,
            r.actor.key_id,
            r.actor.name,
            json(r)?,
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub host: Option<String>,
    pub decision: Option<String>,
    pub action: Option<String>,
    pub source: Option<String>,
    pub finding_id: Option<String>,
    /// Records about this finding or aimed at this target (an `ExecId`).
    pub target: Option<String>,
    pub since: Option<i64>,
    /// Sequence number of the last record seen (paging, newest first).
    pub before: Option<i64>,
    pub limit: u32,
}

/// One audit record as the API shows it: the record and its sequence number.
#[derive(Debug, Serialize)]
pub struct AuditRow {
    pub seq: i64,
    #[serde(flatten)]
    pub record: Value,
}

/// Records matching `filter`, newest first.
pub fn list(conn: &Connection, filter: &AuditFilter) -> rusqlite::Result<Vec<AuditRow>> {
    let mut sql = String::from("SELECT seq, body FROM audit WHERE 1=1");
    let mut args: Vec<Sql> = Vec::new();
    let mut eq = |sql: &mut String, column: &str, value: &Option<String>| {
        if let Some(v) = value {
            args.push(Sql::Text(v.clone()));
            sql.push_str(&format!(" AND {column} = ?{}", args.len()));
        }
    };
    eq(&mut sql, "host", &filter.host);
    eq(&mut sql, "decision", &filter.decision);
    eq(&mut sql, "action", &filter.action);
    eq(&mut sql, "source", &filter.source);
    eq(&mut sql, "finding_id", &filter.finding_id);
    if let Some(t) = &filter.target {
        args.push(Sql::Text(t.clone()));
        sql.push_str(&format!(" AND target = ?{}", args.len()));
    }
    if let Some(s) = filter.since {
        args.push(Sql::Integer(s));
        sql.push_str(&format!(" AND time >= ?{}", args.len()));
    }
    if let Some(b) = filter.before {
        args.push(Sql::Integer(b));
        sql.push_str(&format!(" AND seq < ?{}", args.len()));
    }
    sql.push_str(&format!(
        " ORDER BY seq DESC LIMIT {}",
        filter.limit.clamp(1, 1000)
    ));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
        Ok(AuditRow {
            seq: r.get(0)?,
            record: parse(&r.get::<_, String>(1)?),
        })
    })?;
    rows.collect()
}

/// The records about one finding or its process, oldest first.
pub fn for_finding(
    conn: &Connection,
    finding_id: &str,
    exec_id: &str,
) -> rusqlite::Result<Vec<AuditRow>> {
    let mut stmt = conn.prepare(
        "SELECT seq, body FROM audit WHERE finding_id = ?1 OR target = ?2 ORDER BY seq LIMIT 500",
    )?;
    let rows = stmt.query_map(params![finding_id, exec_id], |r| {
        Ok(AuditRow {
            seq: r.get(0)?,
            record: parse(&r.get::<_, String>(1)?),
        })
    })?;
    rows.collect()
}

/// An action awaiting an operator: its `awaiting_approval` record and the finding it is for.
#[derive(Debug, Serialize)]
pub struct PendingApproval {
    pub pending_id: String,
    pub record: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding_title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding_severity: Option<String>,
}

/// Actions audited `awaiting_approval` and not (yet) approved, denied or expired.
pub fn pending(conn: &Connection) -> rusqlite::Result<Vec<PendingApproval>> {
    let mut stmt = conn.prepare(
        "SELECT a.pending_id, a.body, f.title, f.severity FROM audit a
         LEFT JOIN findings f ON f.id = a.finding_id
         WHERE a.decision = 'awaiting_approval' AND a.pending_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM audit b WHERE b.pending_id = a.pending_id
                           AND b.decision IN ('approved', 'denied'))
         ORDER BY a.seq DESC LIMIT 500",
    )?;
    let rows = stmt.query_map([], |r| {
        let severity: Option<i64> = r.get(3)?;
        Ok(PendingApproval {
            pending_id: r.get(0)?,
            record: parse(&r.get::<_, String>(1)?),
            finding_title: r.get(2)?,
            finding_severity: severity
                .and_then(|s| protocol::Severity::ALL.get(s as usize))
                .map(|s| s.as_str().to_string()),
        })
    })?;
    rows.collect()
}

pub fn is_pending(conn: &Connection, pending_id: &str) -> rusqlite::Result<bool> {
    Ok(pending(conn)?.iter().any(|p| p.pending_id == pending_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use protocol::Decision;

    fn record(decision: Decision, pending: &str) -> AuditRecord {
        let mut r = AuditRecord::new("responder", "h", "quarantine", decision, "why", "x");
        r.pending_id = Some(pending.to_string());
        r
    }

    #[tokio::test]
    async fn pending_approvals_clear_when_settled() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.db")).unwrap();
        for r in [
            record(Decision::AwaitingApproval, "p1"),
            record(Decision::AwaitingApproval, "p2"),
            record(Decision::Approved, "p1"),
        ] {
            store.write(move |c| insert(c, &r)).await.unwrap();
        }
        let pending = store.read(pending).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].pending_id, "p2");
        assert!(store.read(|c| is_pending(c, "p2")).await.unwrap());
        assert!(!store.read(|c| is_pending(c, "p1")).await.unwrap());
        let rows = store
            .read(|c| {
                list(
                    c,
                    &AuditFilter {
                        decision: Some("approved".into()),
                        limit: 10,
                        ..Default::default()
                    },
                )
            })
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].record["pending_id"], "p1");
    }
}
