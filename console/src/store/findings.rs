//! Findings and the events that triggered them.

use protocol::{Event, Finding, Severity, Timestamp};
use rusqlite::{params, types::Value as Sql, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::Value;

use super::{json, parse};

fn severity_rank(s: Severity) -> i64 {
    Severity::ALL.iter().position(|x| *x == s).unwrap_or(0) as i64
}

/// Stores a finding and its triggers as events. Returns false when it was already stored
/// (a redelivery): each finding is kept, and shown, once.
pub fn insert(conn: &mut Connection, f: &Finding, received: Timestamp) -> rusqlite::Result<bool> {
    let tx = conn.transaction()?;
    let added = tx.execute(
        "INSERT INTO findings (id, time, received, host, severity, rule_id, title, detector,
                               exec_id, pid, exe, cmd_line, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT(id) DO NOTHING",
        params![
            f.id.0,
            f.time.unix_nanos(),
            received.unix_nanos(),
            f.host,
            severity_rank(f.severity),
            f.rule_id,
            f.title,
            f.detector.as_str(),
            f.process.exec_id.to_string(),
            f.process.pid,
            f.process.exe,
            f.process.command_line(),
            json(f)?,
        ],
    )? == 1;
    if added {
        for t in &f.triggers {
            let event = Event {
                time: t.time,
                host: f.host.clone(),
                process: f.process.clone(),
                ancestry: f.ancestry.clone(),
                detail: t.detail.clone(),
            };
            insert_event(&tx, &event)?;
        }
    }
    tx.commit()?;
    Ok(added)
}

/// Stores an event (a finding's trigger, or a published event with `store_events`); an
/// event already stored is skipped.
pub fn insert_event(conn: &Connection, e: &Event) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO events (exec_id, host, time, kind, body) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT DO NOTHING",
        params![
            e.process.exec_id.to_string(),
            e.host,
            e.time.unix_nanos(),
            e.kind().as_str(),
            json(e)?,
        ],
    )?;
    Ok(())
}

/// A position in the findings list, newest first: `time.seq` of the last item seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub time: i64,
    pub seq: i64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.time, self.seq)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (t, q) = s
            .split_once('.')
            .ok_or_else(|| format!("cursor {s:?}: expected TIME.SEQ"))?;
        Ok(Cursor {
            time: t.parse().map_err(|_| format!("cursor {s:?}: bad time"))?,
            seq: q
                .parse()
                .map_err(|_| format!("cursor {s:?}: bad sequence"))?,
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct FindingFilter {
    pub host: Option<String>,
    /// Any of these severities (empty: all).
    pub severities: Vec<Severity>,
    pub min_severity: Option<Severity>,
    /// Substring of the rule id.
    pub rule: Option<String>,
    /// Substring of the title, rule, executable, command line or host.
    pub text: Option<String>,
    pub exec_id: Option<String>,
    /// Unix nanoseconds.
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub before: Option<Cursor>,
    pub limit: u32,
}

fn like(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// Findings matching `filter`, newest first, and the cursor of the next page.
pub fn list(
    conn: &Connection,
    filter: &FindingFilter,
) -> rusqlite::Result<(Vec<Value>, Option<Cursor>)> {
    let mut sql = String::from("SELECT time, seq, body FROM findings WHERE 1=1");
    let mut args: Vec<Sql> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, value: Sql| {
        args.push(value);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    };
    if let Some(h) = &filter.host {
        arg(&mut sql, " AND host = ?", Sql::Text(h.clone()));
    }
    if !filter.severities.is_empty() {
        let ranks: Vec<String> = filter
            .severities
            .iter()
            .map(|s| severity_rank(*s).to_string())
            .collect();
        sql.push_str(&format!(" AND severity IN ({})", ranks.join(",")));
    }
    if let Some(s) = filter.min_severity {
        arg(
            &mut sql,
            " AND severity >= ?",
            Sql::Integer(severity_rank(s)),
        );
    }
    if let Some(r) = &filter.rule {
        arg(
            &mut sql,
            " AND rule_id LIKE ? ESCAPE '\\'",
            Sql::Text(like(r)),
        );
    }
    if let Some(t) = &filter.text {
        arg(
            &mut sql,
            " AND (title LIKE ? ESCAPE '\\' OR rule_id LIKE ? ESCAPE '\\' OR exe LIKE ? ESCAPE '\\' \
             OR cmd_line LIKE ? ESCAPE '\\' OR host LIKE ? ESCAPE '\\')",
            Sql::Text(like(t)),
        );
    }
    if let Some(e) = &filter.exec_id {
        arg(&mut sql, " AND exec_id = ?", Sql::Text(e.clone()));
    }
    if let Some(s) = filter.since {
        arg(&mut sql, " AND time >= ?", Sql::Integer(s));
    }
    if let Some(u) = filter.until {
        arg(&mut sql, " AND time < ?", Sql::Integer(u));
    }
    if let Some(c) = filter.before {
        args.push(Sql::Integer(c.time));
        let t = args.len();
        args.push(Sql::Integer(c.seq));
        let q = args.len();
        sql.push_str(&format!(
            " AND (time < ?{t} OR (time = ?{t} AND seq < ?{q}))"
        ));
    }
    let limit = filter.limit.clamp(1, 1000);
    sql.push_str(&format!(
        " ORDER BY time DESC, seq DESC LIMIT {}",
        limit + 1
    ));
    let mut stmt = conn.prepare(&sql)?;
    let mut rows: Vec<(Cursor, Value)> = stmt
        .query_map(rusqlite::params_from_iter(args), |r| {
            Ok((
                Cursor {
                    time: r.get(0)?,
                    seq: r.get(1)?,
                },
                parse(&r.get::<_, String>(2)?),
            ))
        })?
        .collect::<Result<_, _>>()?;
    let next = (rows.len() > limit as usize).then(|| {
        rows.truncate(limit as usize);
        rows.last().map(|(c, _)| *c)
    });
    Ok((rows.into_iter().map(|(_, v)| v).collect(), next.flatten()))
}

pub fn get(conn: &Connection, id: &str) -> rusqlite::Result<Option<Value>> {
    conn.query_row("SELECT body FROM findings WHERE id = ?1", [id], |r| {
        r.get::<_, String>(0)
    })
    .optional()
    .map(|b| b.map(|b| parse(&b)))
}

/// The events stored for one `ExecId`, oldest first.
pub fn events(conn: &Connection, exec_id: &str, limit: u32) -> rusqlite::Result<Vec<Value>> {
    let mut stmt =
        conn.prepare("SELECT body FROM events WHERE exec_id = ?1 ORDER BY time, seq LIMIT ?2")?;
    let rows = stmt
        .query_map(params![exec_id, limit.clamp(1, 10_000)], |r| {
            r.get::<_, String>(0)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows.iter().map(|b| parse(b)).collect())
}

#[derive(Debug, Serialize)]
pub struct Bucket {
    /// Unix nanoseconds of the bucket's start.
    pub start: i64,
    /// Findings per severity, `info` first.
    pub counts: [u64; 5],
}

#[derive(Debug, Serialize)]
pub struct Ranked {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct Overview {
    pub since: i64,
    pub bucket_nanos: i64,
    pub buckets: Vec<Bucket>,
    /// Findings per severity in the window, `info` first.
    pub totals: [u64; 5],
    pub top_rules: Vec<Ranked>,
    pub top_hosts: Vec<Ranked>,
}

/// Findings per severity over `[since, until)` in `buckets` equal slices, with the top rules
/// and hosts.
pub fn overview(
    conn: &Connection,
    since: i64,
    until: i64,
    buckets: i64,
) -> rusqlite::Result<Overview> {
    let width = ((until - since) / buckets.max(1)).max(1);
    let mut out: Vec<Bucket> = (0..buckets)
        .map(|i| Bucket {
            start: since + i * width,
            counts: [0; 5],
        })
        .collect();
    let mut totals = [0u64; 5];
    let mut stmt = conn.prepare(
        "SELECT (time - ?1) / ?2 AS b, severity, count(*) FROM findings
         WHERE time >= ?1 AND time < ?3 GROUP BY b, severity",
    )?;
    let rows = stmt.query_map(params![since, width, until], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (b, sev, n) = row?;
        let sev = sev.clamp(0, 4) as usize;
        if let Some(bucket) = out.get_mut(b as usize) {
            bucket.counts[sev] += n as u64;
        }
        totals[sev] += n as u64;
    }
    let ranked = |sql: &str| -> rusqlite::Result<Vec<Ranked>> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map(params![since, until], |r| {
            Ok(Ranked {
                name: r.get(0)?,
                title: r.get(1)?,
                count: r.get::<_, i64>(2)? as u64,
            })
        })?;
        rows.collect()
    };
    Ok(Overview {
        since,
        bucket_nanos: width,
        buckets: out,
        totals,
        top_rules: ranked(
            "SELECT rule_id, max(title), count(*) AS n FROM findings WHERE time >= ?1 AND time < ?2
             GROUP BY rule_id ORDER BY n DESC, rule_id LIMIT 10",
        )?,
        top_hosts: ranked(
            "SELECT host, NULL, count(*) AS n FROM findings WHERE time >= ?1 AND time < ?2
             GROUP BY host ORDER BY n DESC, host LIMIT 10",
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{testing::finding, Store};

    #[tokio::test]
    async fn findings_are_kept_once_filtered_and_paged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.db")).unwrap();
        let base = 1_700_000_000_000_000_000i64;
        for i in 0..5u32 {
            let sev = if i % 2 == 0 {
                Severity::High
            } else {
                Severity::Low
            };
            let f = finding(
                "h1",
                100 + i,
                "rule.a",
                sev,
                base + i64::from(i) * 1_000_000_000,
            );
            let again = f.clone();
            assert!(store
                .write(move |c| insert(c, &f, Timestamp::now()))
                .await
                .unwrap());
            assert!(!store
                .write(move |c| insert(c, &again, Timestamp::now()))
                .await
                .unwrap());
        }
        let other = finding("h2", 200, "rule.b", Severity::Critical, base);
        store
            .write(move |c| insert(c, &other, Timestamp::now()))
            .await
            .unwrap();

        let all = store
            .read(|c| {
                list(
                    c,
                    &FindingFilter {
                        limit: 100,
                        ..Default::default()
                    },
                )
            })
            .await
            .unwrap();
        assert_eq!(all.0.len(), 6);
        let high = store
            .read(|c| {
                list(
                    c,
                    &FindingFilter {
                        severities: vec![Severity::High],
                        limit: 2,
                        ..Default::default()
                    },
                )
            })
            .await
            .unwrap();
        assert_eq!(high.0.len(), 2);
        assert_eq!(high.0[0]["process"]["pid"], 104, "newest first");
        let cursor = high.1.expect("a next page");
        let rest = store
            .read(move |c| {
                list(
                    c,
                    &FindingFilter {
                        severities: vec![Severity::High],
                        before: Some(cursor),
                        limit: 2,
                        ..Default::default()
                    },
                )
            })
            .await
            .unwrap();
        assert_eq!(rest.0.len(), 1);
        assert!(rest.1.is_none());
        let text = store
            .read(|c| {
                list(
                    c,
                    &FindingFilter {
                        text: Some("marker102".into()),
                        limit: 10,
                        ..Default::default()
                    },
                )
            })
            .await
            .unwrap();
        assert_eq!(text.0.len(), 1);
        let by_host = store
            .read(|c| {
                list(
                    c,
                    &FindingFilter {
                        host: Some("h2".into()),
                        min_severity: Some(Severity::High),
                        limit: 10,
                        ..Default::default()
                    },
                )
            })
            .await
            .unwrap();
        assert_eq!(by_host.0.len(), 1);
        let exec = all.0[0]["process"]["exec_id"].as_str().unwrap().to_string();
        let evs = store.read(move |c| events(c, &exec, 10)).await.unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0]["kind"], "exec");

        let ov = store
            .read(move |c| overview(c, base, base + 10_000_000_000, 10))
            .await
            .unwrap();
        assert_eq!(ov.totals, [0, 2, 0, 3, 1]);
        assert_eq!(ov.buckets[0].counts, [0, 0, 0, 1, 1]);
        assert_eq!(ov.top_rules[0].name, "rule.a");
        assert_eq!(ov.top_hosts[0].count, 5);
    }
}
