//! Commands and approvals: what the actuator (`osprey.cmd.<host>`) and the responder
//! (`osprey.responder.approvals`) do with a payload before they act on it.

use protocol::{
    signing::{self, SignError, Signed},
    subject, Action, Approval, Command, ExecId,
};
use serde::de::DeserializeOwned;

use crate::fixtures::{signer, TRUSTED};

/// A command payload as the actuator receives it.
pub fn command_bytes(bytes: &[u8]) {
    if let Ok(command) = protocol::decode::<Command>(bytes) {
        let _ = command_checks(&command);
        through_the_wire(&command);
    }
}

/// An approval payload as the responder receives it.
pub fn approval_bytes(bytes: &[u8]) {
    if let Ok(approval) = protocol::decode::<Approval>(bytes) {
        let _ = approval_checks(&approval);
        through_the_wire(&approval);
    }
}

/// What the actuator looks at before executing: the addressed host, the signature against
/// the trusted keys, and the action's target as the audit record names it.
fn command_checks(command: &Command) -> Result<(), SignError> {
    subject::host_token(&command.host);
    let verified = signing::verify(command, &TRUSTED);
    let action = &command.action;
    action.kind();
    action.name();
    let text = action.target_text();
    // The audit record's text is the ExecId, and parses back to the same id (a kill-on-exec
    // naming a path is audited with the path: it outlives the process).
    let names_a_path = matches!(action, Action::KillOnExec { path: Some(_), .. });
    if let (Some(target), false) = (action.target(), names_a_path) {
        assert_eq!(text.as_deref().map(str::parse::<ExecId>), Some(Ok(target)));
    }
    verified
}

/// What the responder looks at before acting on an operator's verdict.
fn approval_checks(approval: &Approval) -> Result<(), SignError> {
    signing::verify(approval, &TRUSTED)
}

/// One input of the structure-aware target: a command or an approval built field by field,
/// signed by the trusted key or not.
#[derive(Debug, arbitrary::Arbitrary)]
pub enum Structured {
    Command { value: Command, sign: bool },
    Approval { value: Approval, sign: bool },
}

/// Signs (or not), encodes and decodes a structured value, then runs the receiver's checks:
/// a value signed by the trusted key verifies after the trip, an unsigned one never does.
pub fn structured(input: Structured) {
    match input {
        Structured::Command { mut value, sign } => {
            if sign {
                signer().sign(&mut value);
            }
            let back: Command = through_the_wire(&value);
            expect_verified(command_checks(&back), sign, value.signature.is_some());
        }
        Structured::Approval { mut value, sign } => {
            if sign {
                signer().sign(&mut value);
            }
            let back: Approval = through_the_wire(&value);
            expect_verified(approval_checks(&back), sign, value.signature.is_some());
        }
    }
}

/// Encodes `value` and decodes it again, which must give the same value: the verifier checks
/// the signature over the re-encoding of what it decoded, so a lossy round trip would make
/// valid signatures fail (or cover something other than what was signed).
fn through_the_wire<T>(value: &T) -> T
where
    T: Signed + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = protocol::encode(value).expect("a decoded or built value encodes");
    let back: T = protocol::decode(&bytes).expect("an encoded value decodes");
    assert_eq!(&back, value);
    back
}

fn expect_verified(verified: Result<(), SignError>, signed: bool, has_signature: bool) {
    if signed {
        assert_eq!(verified, Ok(()), "a value signed by a trusted key verifies");
    } else if !has_signature {
        assert_eq!(verified, Err(SignError::Unsigned));
    } else {
        // An arbitrary signature string: never valid without the secret key.
        assert!(verified.is_err(), "a forged signature verified");
    }
}
