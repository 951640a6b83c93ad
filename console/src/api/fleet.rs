//! The fleet at a glance: `/api/v1/overview`, `/api/v1/hosts`, host heartbeats, `/api/v1/audit`.

use axum::{
    extract::{Path, Query, State},
    Json,
};
use protocol::Timestamp;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse_age, parse_time, ApiError};
use crate::{
    app::Shared,
    store::{audit, findings, hosts, AuditFilter, HostRow},
};

const NANOS: i64 = 1_000_000_000;

fn host_json(row: HostRow, now: i64, silent_after_secs: u64) -> Value {
    let silent = now - row.last_seen > silent_after_secs as i64 * NANOS;
    let mut v = serde_json::to_value(&row).unwrap_or_default();
    v["status"] = json!(if silent { "silent" } else { "ok" });
    v
}

pub async fn hosts(State(app): State<Shared>) -> Result<Json<Value>, ApiError> {
    let now = Timestamp::now().unix_nanos();
    let rows = app.store.read(move |c| hosts::list(c, now)).await?;
    let silent = app.config.host_silent_secs;
    Ok(Json(json!({
        "items": rows.into_iter().map(|r| host_json(r, now, silent)).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesQuery {
    since: Option<String>,
    max_points: Option<usize>,
}

/// `[time, events/s, drops since start, spool depth]` per heartbeat, oldest first.
pub async fn heartbeats(
    State(app): State<Shared>,
    Path(host): Path<String>,
    Query(query): Query<SeriesQuery>,
) -> Result<Json<Value>, ApiError> {
    let since = parse_time(query.since.as_deref().unwrap_or("1h"))?;
    let max = query.max_points.unwrap_or(360).clamp(2, 5000);
    let name = host.clone();
    let points = app
        .store
        .read(move |c| hosts::series(c, &name, since, max))
        .await?;
    Ok(Json(json!({
        "host": host,
        "columns": ["time", "events_per_sec", "drops", "spool_depth"],
        "points": points,
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverviewQuery {
    /// How far back: `1h`, `24h` (default), `7d`.
    window: Option<String>,
    buckets: Option<i64>,
}

pub async fn overview(
    State(app): State<Shared>,
    Query(query): Query<OverviewQuery>,
) -> Result<Json<Value>, ApiError> {
    let window = query.window.as_deref().unwrap_or("24h");
    let width = parse_age(window).filter(|w| *w > 0).ok_or_else(|| {
        ApiError::bad_request(format!(
            "window {window:?}: expected an age like 1h, 24h, 7d"
        ))
    })?;
    let buckets = query.buckets.unwrap_or(48).clamp(1, 500);
    let now = Timestamp::now().unix_nanos();
    let (ov, rows, pending) = app
        .store
        .read(move |c| {
            Ok((
                findings::overview(c, now - width, now, buckets)?,
                hosts::list(c, now)?,
                audit::pending(c)?.len(),
            ))
        })
        .await?;
    let silent_after = app.config.host_silent_secs;
    let hosts: Vec<Value> = rows
        .into_iter()
        .map(|r| host_json(r, now, silent_after))
        .collect();
    let sum = |field: &str| -> u64 {
        hosts
            .iter()
            .map(|h| {
                let v = &h["heartbeat"][field];
                v.as_u64().unwrap_or_else(|| {
                    v.as_object()
                        .map(|m| m.values().filter_map(Value::as_u64).sum())
                        .unwrap_or(0)
                })
            })
            .sum()
    };
    Ok(Json(json!({
        "window": window,
        "findings": ov,
        "hosts": {
            "total": hosts.len(),
            "silent": hosts.iter().filter(|h| h["status"] == "silent").count(),
            "items": hosts,
        },
        "drops": sum("drops"),
        "spool_depth": sum("spool_depth"),
        "spool_evicted": sum("spool_evicted"),
        "pending_approvals": pending,
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    host: Option<String>,
    decision: Option<String>,
    action: Option<String>,
    source: Option<String>,
    finding_id: Option<String>,
    target: Option<String>,
    since: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

pub async fn audit(
    State(app): State<Shared>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let some = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let filter = AuditFilter {
        host: some(q.host),
        decision: some(q.decision),
        action: some(q.action),
        source: some(q.source),
        finding_id: some(q.finding_id),
        target: some(q.target),
        since: some(q.since).map(|s| parse_time(&s)).transpose()?,
        before: q.before,
        limit: q.limit.unwrap_or(200),
    };
    let rows = app.store.read(move |c| audit::list(c, &filter)).await?;
    let next = (rows.len() == filter_limit(q.limit)).then(|| rows.last().map(|r| r.seq));
    Ok(Json(json!({ "items": rows, "next": next.flatten() })))
}

fn filter_limit(limit: Option<u32>) -> usize {
    limit.unwrap_or(200).clamp(1, 1000) as usize
}
