//! `/api/v1/findings`, `/api/v1/findings/{id}`, `/api/v1/events`.

use axum::{
    extract::{Path, Query, State},
    Json,
};
use protocol::{Event, Finding, Severity};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse_time, ApiError};
use crate::{
    app::Shared,
    store::{audit, findings, Cursor, FindingFilter},
};

/// `format=json` (default: Osprey's own shapes) or `format=ocsf`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Ocsf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    host: Option<String>,
    /// One severity or a comma-separated list.
    severity: Option<String>,
    min_severity: Option<Severity>,
    rule: Option<String>,
    q: Option<String>,
    exec_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<String>,
    limit: Option<u32>,
    #[serde(default)]
    format: Format,
}

fn nonempty(s: &Option<String>) -> Option<String> {
    s.as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl ListQuery {
    fn filter(&self) -> Result<FindingFilter, ApiError> {
        let severities = match nonempty(&self.severity) {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|s| s.trim().parse::<Severity>())
                .collect::<Result<_, _>>()
                .map_err(|e| ApiError::bad_request(format!("severity: {e}")))?,
        };
        Ok(FindingFilter {
            host: nonempty(&self.host),
            severities,
            min_severity: self.min_severity,
            rule: nonempty(&self.rule),
            text: nonempty(&self.q),
            exec_id: nonempty(&self.exec_id),
            since: nonempty(&self.since).map(|s| parse_time(&s)).transpose()?,
            until: nonempty(&self.until).map(|s| parse_time(&s)).transpose()?,
            before: nonempty(&self.before)
                .map(|c| c.parse::<Cursor>())
                .transpose()
                .map_err(ApiError::bad_request)?,
            limit: self.limit.unwrap_or(100),
        })
    }
}

fn ocsf_finding(v: Value) -> Value {
    match serde_json::from_value::<Finding>(v) {
        Ok(f) => protocol::ocsf::finding(&f),
        Err(e) => json!({ "error": format!("stored finding does not decode: {e}") }),
    }
}

fn ocsf_event(v: Value) -> Value {
    match serde_json::from_value::<Event>(v) {
        Ok(e) => protocol::ocsf::event(&e),
        Err(e) => json!({ "error": format!("stored event does not decode: {e}") }),
    }
}

pub async fn list(
    State(app): State<Shared>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = query.filter()?;
    let (items, next) = app.store.read(move |c| findings::list(c, &filter)).await?;
    let items: Vec<Value> = match query.format {
        Format::Json => items,
        Format::Ocsf => items.into_iter().map(ocsf_finding).collect(),
    };
    Ok(Json(json!({
        "items": items,
        "next": next.map(|c| c.to_string()),
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatQuery {
    #[serde(default)]
    format: Format,
}

/// A finding with the events on its `ExecId` and the actions taken on it.
pub async fn detail(
    State(app): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<FormatQuery>,
) -> Result<Json<Value>, ApiError> {
    let lookup = id.clone();
    let finding = app
        .store
        .read(move |c| findings::get(c, &lookup))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no finding {id}")))?;
    let exec_id = finding["process"]["exec_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (events, actions) = app
        .store
        .read(move |c| {
            Ok((
                findings::events(c, &exec_id, 1000)?,
                audit::for_finding(c, &id, &exec_id)?,
            ))
        })
        .await?;
    Ok(Json(match query.format {
        Format::Json => json!({ "finding": finding, "events": events, "actions": actions }),
        Format::Ocsf => json!({
            "finding": ocsf_finding(finding),
            "events": events.into_iter().map(ocsf_event).collect::<Vec<_>>(),
            "actions": actions,
        }),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    exec_id: String,
    limit: Option<u32>,
    #[serde(default)]
    format: Format,
}

/// The events stored for one `ExecId`.
pub async fn events(
    State(app): State<Shared>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(1000);
    let exec_id = query.exec_id.clone();
    let items = app
        .store
        .read(move |c| findings::events(c, &exec_id, limit))
        .await?;
    let items: Vec<Value> = match query.format {
        Format::Json => items,
        Format::Ocsf => items.into_iter().map(ocsf_event).collect(),
    };
    Ok(Json(json!({ "items": items })))
}
