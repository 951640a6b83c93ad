//! Operator actions on the bus: signed commands to a host's actuator and host state
//! queries, each awaiting the host's answer. The one place the CLI (one-shot commands and
//! `osprey top`) builds, signs and sends them.

use std::time::Duration;

use async_nats::{Client, Request, RequestErrorKind};
use protocol::{
    signing::{random_id, KeyPair},
    subject, Action, Approval, Command, CommandResult, FindingId, Query, Snapshot, Timestamp,
    Verdict,
};

/// Longest a host may take to answer a command: a quarantine hashes and may copy a file.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("no collector answers on {subject}: is host {host:?} running, with that name, and connected?")]
    NoResponders { subject: String, host: String },
    #[error("host {host:?} did not answer within {}s", .after.as_secs())]
    Timeout { host: String, after: Duration },
    #[error("request to host {host:?} failed: {reason}")]
    Request { host: String, reason: String },
    #[error("cannot encode the request: {0}")]
    Encode(protocol::CodecError),
    #[error("host {host:?} answered something that is not a {what}: {source}")]
    Decode {
        host: String,
        what: &'static str,
        source: protocol::CodecError,
    },
    #[error("cannot publish: {0}")]
    Publish(String),
}

/// A command for `host`, signed with `key`.
pub fn signed_command(
    key: &KeyPair,
    host: &str,
    action: Action,
    finding_id: Option<FindingId>,
) -> Command {
    let mut command = Command {
        id: random_id(),
        nonce: random_id(),
        issued_at: Timestamp::now(),
        host: host.to_string(),
        action,
        finding_id,
        key_id: String::new(),
        signature: None,
    };
    key.sign(&mut command);
    command
}

/// Signs `action` for `host`, sends it on `osprey.cmd.<host>` and returns the host's answer
/// (executed, refused and why, failed and why).
pub async fn send_command(
    client: &Client,
    key: &KeyPair,
    host: &str,
    action: Action,
    finding_id: Option<FindingId>,
) -> Result<CommandResult, OperatorError> {
    let command = signed_command(key, host, action, finding_id);
    let payload = protocol::encode(&command).map_err(OperatorError::Encode)?;
    let reply = request(
        client,
        host,
        subject::command(host),
        payload,
        COMMAND_TIMEOUT,
    )
    .await?;
    protocol::decode(&reply).map_err(|source| OperatorError::Decode {
        host: host.to_string(),
        what: "CommandResult",
        source,
    })
}

/// Asks `host` about its live state.
pub async fn query(client: &Client, host: &str, query: &Query) -> Result<Snapshot, OperatorError> {
    let payload = protocol::encode(query).map_err(OperatorError::Encode)?;
    let reply = request(client, host, subject::query(host), payload, QUERY_TIMEOUT).await?;
    protocol::decode(&reply).map_err(|source| OperatorError::Decode {
        host: host.to_string(),
        what: "Snapshot",
        source,
    })
}

/// Signs and publishes an approval or denial of a pending action (the responder acts on it
/// and audits it: no answer comes back).
pub async fn send_approval(
    client: &Client,
    key: &KeyPair,
    pending_id: &str,
    verdict: Verdict,
) -> Result<(), OperatorError> {
    let mut approval = Approval {
        pending_id: pending_id.to_string(),
        verdict,
        nonce: random_id(),
        issued_at: Timestamp::now(),
        key_id: String::new(),
        signature: None,
    };
    key.sign(&mut approval);
    let payload = protocol::encode(&approval).map_err(OperatorError::Encode)?;
    client
        .publish(subject::APPROVALS, payload.into())
        .await
        .map_err(|e| OperatorError::Publish(e.to_string()))?;
    client
        .flush()
        .await
        .map_err(|e| OperatorError::Publish(e.to_string()))
}

async fn request(
    client: &Client,
    host: &str,
    subject: String,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<bytes::Bytes, OperatorError> {
    let request = Request::new()
        .payload(payload.into())
        .timeout(Some(timeout));
    match client.send_request(subject.clone(), request).await {
        Ok(message) => Ok(message.payload),
        Err(e) => Err(match e.kind() {
            RequestErrorKind::NoResponders => OperatorError::NoResponders {
                subject,
                host: host.to_string(),
            },
            RequestErrorKind::TimedOut => OperatorError::Timeout {
                host: host.to_string(),
                after: timeout,
            },
            RequestErrorKind::Other => OperatorError::Request {
                host: host.to_string(),
                reason: e.to_string(),
            },
        }),
    }
}
