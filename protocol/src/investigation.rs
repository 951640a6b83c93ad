//! AI triage (osprey-investigator, docs/investigator.md): the investigation record published
//! on `osprey.investigations.<host>` (stream `OSPREY_INVESTIGATIONS`), and the signed
//! proposals the investigator sends the responder on `osprey.responder.proposals`
//! (request/reply). The investigator only proposes: the responder decides, under its own
//! `ai.autonomy` setting and every safety control.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::{ActionKind, Decision, ExecId, FindingId, Timestamp};

/// The model's assessment of a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assessment {
    Benign,
    Suspicious,
    Malicious,
}

impl Assessment {
    pub fn as_str(self) -> &'static str {
        match self {
            Assessment::Benign => "benign",
            Assessment::Suspicious => "suspicious",
            Assessment::Malicious => "malicious",
        }
    }
}

/// How an investigation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum InvestigationOutcome {
    /// The model concluded (summary, verdict and confidence are its).
    Concluded,
    /// A budget ran out first: `steps`, `tokens`, `wall_time` or `per_hour`.
    BudgetExhausted { budget: String },
    /// The model could not be used: unreachable, too slow, an error status, or an answer
    /// that is not a chat completion.
    LlmUnavailable { reason: String },
}

impl InvestigationOutcome {
    /// `concluded`, `budget_exhausted` or `llm_unavailable`.
    pub fn status(&self) -> &'static str {
        match self {
            InvestigationOutcome::Concluded => "concluded",
            InvestigationOutcome::BudgetExhausted { .. } => "budget_exhausted",
            InvestigationOutcome::LlmUnavailable { .. } => "llm_unavailable",
        }
    }
}

impl fmt::Display for InvestigationOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvestigationOutcome::Concluded => f.write_str("concluded"),
            InvestigationOutcome::BudgetExhausted { budget } => {
                write!(f, "budget_exhausted: {budget}")
            }
            InvestigationOutcome::LlmUnavailable { reason } => {
                write!(f, "llm_unavailable: {reason}")
            }
        }
    }
}

/// One tool call of the model and what the investigator answered (both JSON text, the
/// result as sent to the model: redacted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub tool: String,
    pub arguments: String,
    pub result: String,
}

/// An action the model proposed and what the responder made of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposedAction {
    pub action: ActionKind,
    /// The process it is aimed at; `None`: the finding's process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ExecId>,
    pub reason: String,
    /// The responder's answer (`None` when it could not be asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ProposalReply>,
}

/// The record of one investigation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Investigation {
    pub id: String,
    pub finding_id: FindingId,
    pub host: String,
    pub rule_id: String,
    pub started: Timestamp,
    pub finished: Timestamp,
    pub model: String,
    /// The model's summary, or why there is none.
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Assessment>,
    /// 0 to 1, as the model stated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    #[serde(default)]
    pub steps: Vec<Step>,
    #[serde(default)]
    pub proposals: Vec<ProposedAction>,
    pub outcome: InvestigationOutcome,
    /// Tokens the model reported using (or an estimate where it reported none).
    #[serde(default)]
    pub tokens: u64,
}

/// A signed proposal of one action on one finding, from an investigator to the responder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: String,
    /// Random, single use: a proposal seen twice is a replay.
    pub nonce: String,
    pub issued_at: Timestamp,
    pub investigation_id: String,
    /// The finding's host (the responder acts only on a finding it received for this host).
    pub host: String,
    pub finding_id: FindingId,
    pub action: ActionKind,
    /// `None`: the finding's process; otherwise that process or one of its ancestors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ExecId>,
    pub reason: String,
    /// The investigator's public key (base64), which must be in the responder's
    /// `ai.investigator_keys`.
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl Proposal {
    /// A new unsigned proposal with a fresh id and nonce, issued now.
    pub fn new(
        investigation_id: impl Into<String>,
        host: impl Into<String>,
        finding_id: FindingId,
        action: ActionKind,
        target: Option<ExecId>,
        reason: impl Into<String>,
    ) -> Proposal {
        Proposal {
            id: crate::signing::random_id(),
            nonce: crate::signing::random_id(),
            issued_at: Timestamp::now(),
            investigation_id: investigation_id.into(),
            host: host.into(),
            finding_id,
            action,
            target,
            reason: reason.into(),
            key_id: String::new(),
            signature: None,
        }
    }
}

/// The responder's answer to a proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalReply {
    pub proposal_id: String,
    /// What the responder decided (as audited); `None` when it did not take the proposal up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// One sentence: what became of it, or why not.
    pub reason: String,
    /// The pending approval it became (autonomy `approval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_id: Option<String>,
    /// The responder has not received the finding yet: ask again shortly.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_as_the_docs_say() {
        let o = InvestigationOutcome::LlmUnavailable {
            reason: "connection refused".into(),
        };
        assert_eq!(o.to_string(), "llm_unavailable: connection refused");
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(json["status"], o.status());
        let back: InvestigationOutcome = crate::decode(&crate::encode(&o).unwrap()).unwrap();
        assert_eq!(back, o);
    }
}
