//! Approvals: an operator's answer to an action awaiting approval
//! (`osprey.responder.approvals`), signed like commands.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Deny,
}

#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The pending action's id, as the audit record of `awaiting_approval` names it.
    pub pending_id: String,
    pub verdict: Verdict,
    pub nonce: String,
    pub issued_at: Timestamp,
    /// The human behind the approval (a console user's name), audited by the responder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// The operator's public key (base64).
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}
