//! Operator control of the responder on `osprey.responder.control` (request/reply): switch
//! dry-run on or off, or ask for the current mode. Signed by an operator key, like approvals;
//! the responder audits every change.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponderControl {
    /// Unique per message (names its audit record).
    pub id: String,
    /// Random, single use: a message seen twice is a replay.
    pub nonce: String,
    pub issued_at: Timestamp,
    /// `Some(on)` switches dry-run on or off; `None` only asks for the current mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// The human behind the change (a console user's name), audited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// The operator's public key (base64), which must be in the responder's `operator_keys`.
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl ResponderControl {
    /// A new unsigned message with a fresh id and nonce, issued now.
    pub fn new(dry_run: Option<bool>, operator: Option<String>) -> ResponderControl {
        ResponderControl {
            id: crate::signing::random_id(),
            nonce: crate::signing::random_id(),
            issued_at: Timestamp::now(),
            dry_run,
            operator,
            key_id: String::new(),
            signature: None,
        }
    }
}

/// The responder's answer: its mode after handling the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    /// The message's id (empty when it could not be decoded).
    pub control_id: String,
    /// Whether the message was verified and applied.
    pub accepted: bool,
    /// Dry-run is on (nothing is sent to hosts).
    pub dry_run: bool,
    /// What was done, or why the message was refused.
    pub reason: String,
    pub time: Timestamp,
}
