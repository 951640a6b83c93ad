//! Audit records: one per decision of the responder and per command the actuator handled,
//! written as a JSON line to the audit file and published on `osprey.audit.<host>` (the
//! actuator's) or `osprey.audit._responder` ([`crate::subject`]).

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
    /// Accepted, but the action failed (or the host could not be reached).
    Failed,
    /// The host did not answer in time: the command may or may not have run. A later answer
    /// (the host's own audit record) is reconciled by a record with the host's decision.
    Unknown,
    /// An action awaiting approval got none in time.
    Expired,
    /// An AI investigator proposed it; with `ai.autonomy: propose` that is all that happens.
    Proposed,
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
            Decision::Unknown => "unknown",
            Decision::Expired => "expired",
            Decision::Proposed => "proposed",
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
    /// Who asked for the action, when it was not a policy: the signing key of an operator
    /// command (base64 public key), and the operator's name where a console knows it.
    #[serde(default, skip_serializing_if = "Actor::is_empty")]
    pub actor: Actor,
    /// The pending approval this record belongs to (awaiting, approved, denied, expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_id: Option<String>,
    /// The AI investigation that proposed the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub investigation_id: Option<String>,
    /// The target process's pid and executable, when the action had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Where a quarantined file went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_path: Option<String>,
    /// Where a memory dump was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_path: Option<String>,
}

/// The origin of an operator action.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The public key (base64) that signed the command or approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// A human name (a console user), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Actor {
    pub fn is_empty(&self) -> bool {
        self.key_id.is_none() && self.name.is_none()
    }
}

impl AuditRecord {
    /// A record of `decision` on `action` by `source` (`responder`, `actuator`, ...), now;
    /// the optional context is filled in by the caller.
    pub fn new(
        source: impl Into<String>,
        host: impl Into<String>,
        action: impl Into<String>,
        decision: Decision,
        reason: impl Into<String>,
        result: impl Into<String>,
    ) -> AuditRecord {
        AuditRecord {
            time: Timestamp::now(),
            source: source.into(),
            finding_id: None,
            host: host.into(),
            action: action.into(),
            target: None,
            decision,
            reason: reason.into(),
            result: result.into(),
            command_id: None,
            actor: Actor::default(),
            pending_id: None,
            investigation_id: None,
            pid: None,
            exe: None,
            quarantine_path: None,
            dump_path: None,
        }
    }
}
