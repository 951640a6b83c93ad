//! Audit records: one per decision of the responder and per command the actuator handled,
//! written as a JSON line to the audit file and published on `osprey.audit`.

use serde::{Deserialize, Serialize};

use crate::{FindingId, Timestamp};

/// What happened to an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Executed,
    Refused,
    DryRun,
    RateLimited,
    AwaitingApproval,
    Approved,
    Denied,
    RolledBack,
    /// Accepted, but the action failed or the host did not answer.
    Failed,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Executed => "executed",
            Decision::Refused => "refused",
            Decision::DryRun => "dry_run",
            Decision::RateLimited => "rate_limited",
            Decision::AwaitingApproval => "awaiting_approval",
            Decision::Approved => "approved",
            Decision::Denied => "denied",
            Decision::RolledBack => "rolled_back",
            Decision::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub time: Timestamp,
    /// Who decided: `responder` or `actuator`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding_id: Option<FindingId>,
    pub host: String,
    /// The action's name (`kill`, `block`, ...).
    pub action: String,
    /// The target's `ExecId`, or the destination / path for actions without a process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub decision: Decision,
    pub reason: String,
    /// `ok`, or what went wrong.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
}
