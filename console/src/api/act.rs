//! Operator actions, signed with the console's key and carrying the user's name:
//! `/api/v1/actions` (commands to a host's actuator), `/api/v1/approvals` (pending actions of
//! the responder), `/api/v1/responder` (dry-run on/off).

use std::time::Duration;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use protocol::{signing::KeyPair, Action, CommandStatus, FindingId, Verdict};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, Who};
use crate::{app::Shared, store::audit};

/// How long an approval waits for a responder to listen (e.g. while it restarts).
const APPROVAL_WAIT: Duration = Duration::from_secs(5);

fn key(app: &Shared) -> Result<&KeyPair, ApiError> {
    app.key.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the console has no operator_key: it is read-only",
        )
    })
}

fn timeout(app: &Shared) -> Duration {
    Duration::from_secs(app.config.command_timeout_secs)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    host: String,
    /// As in `Command.action`: `{"kind": "kill", "target": "<ExecId>"}`, `{"kind": "block",
    /// "cidr": "203.0.113.7/32", "port": 443, "ttl_secs": 3600}`, ...
    action: Action,
    finding_id: Option<FindingId>,
}

/// Sends a command to a host and returns the actuator's answer.
pub async fn action(
    State(app): State<Shared>,
    who: Who,
    Json(request): Json<ActionRequest>,
) -> Result<Json<Value>, ApiError> {
    if request.host.trim().is_empty() {
        return Err(ApiError::bad_request("host is empty"));
    }
    let name = request.action.name();
    let operator = client::Operator {
        key: key(&app)?,
        name: Some(&who.name),
    };
    tracing::info!(user = %who.name, host = %request.host, action = name, target = ?request.action.target_text(), "operator action");
    let sent = client::send_command(
        &app.nats,
        &operator,
        client::CommandRequest {
            host: request.host,
            action: request.action,
            finding_id: request.finding_id,
        },
        timeout(&app),
    )
    .await;
    match sent {
        Ok((command, result)) => {
            app.metrics.action(
                name,
                match result.status {
                    CommandStatus::Ok => "ok",
                    CommandStatus::Refused => "refused",
                    CommandStatus::Failed => "failed",
                },
            );
            Ok(Json(json!({ "command_id": command.id, "result": result })))
        }
        Err(e) => {
            app.metrics.action(name, "error");
            Err(e.into())
        }
    }
}

pub async fn approvals(State(app): State<Shared>) -> Result<Json<Value>, ApiError> {
    let items = app.store.read(audit::pending).await?;
    Ok(Json(json!({ "items": items })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    verdict: Verdict,
}

/// Approves or denies a pending action; the responder audits what it does with it.
pub async fn decide(
    State(app): State<Shared>,
    who: Who,
    Path(pending_id): Path<String>,
    Json(decision): Json<Decision>,
) -> Result<Json<Value>, ApiError> {
    let id = pending_id.clone();
    if !app.store.read(move |c| audit::is_pending(c, &id)).await? {
        return Err(ApiError::not_found(format!(
            "no pending action {pending_id} (already decided, expired, or never seen here)"
        )));
    }
    let operator = client::Operator {
        key: key(&app)?,
        name: Some(&who.name),
    };
    tracing::info!(user = %who.name, pending = %pending_id, verdict = ?decision.verdict, "approval");
    let answer = client::send_approval(
        &app.nats,
        &operator,
        &pending_id,
        decision.verdict,
        APPROVAL_WAIT,
    )
    .await?;
    app.metrics.action(
        match decision.verdict {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        },
        if answer.carried_out() {
            "ok"
        } else {
            "not_carried_out"
        },
    );
    Ok(Json(
        json!({ "pending_id": pending_id, "verdict": decision.verdict, "sent": true, "carried_out": answer.carried_out(), "answer": answer.text }),
    ))
}

/// The responder's mode, as it answers a signed query.
pub async fn responder(State(app): State<Shared>, who: Who) -> Result<Json<Value>, ApiError> {
    let operator = client::Operator {
        key: key(&app)?,
        name: Some(&who.name),
    };
    let reply = client::send_control(&app.nats, &operator, None, timeout(&app)).await?;
    Ok(Json(serde_json::to_value(reply).unwrap_or_default()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mode {
    dry_run: bool,
}

pub async fn set_responder(
    State(app): State<Shared>,
    who: Who,
    Json(mode): Json<Mode>,
) -> Result<Json<Value>, ApiError> {
    let operator = client::Operator {
        key: key(&app)?,
        name: Some(&who.name),
    };
    tracing::info!(user = %who.name, dry_run = mode.dry_run, "responder mode");
    let reply =
        client::send_control(&app.nats, &operator, Some(mode.dry_run), timeout(&app)).await?;
    app.metrics
        .action("dry_run", if reply.accepted { "ok" } else { "refused" });
    if !reply.accepted {
        return Err(ApiError::upstream(reply.reason));
    }
    Ok(Json(serde_json::to_value(reply).unwrap_or_default()))
}
