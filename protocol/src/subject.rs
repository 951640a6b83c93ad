//! NATS subjects. `<host>` is always passed through [`host_token`].

use crate::{EventKind, Severity};

pub const FINDINGS_STREAM: &str = "OSPREY_FINDINGS";
pub const FINDINGS_WILDCARD: &str = "osprey.findings.>";
pub const AUDIT: &str = "osprey.audit";
/// Audit records published per source (`osprey.audit.<host>`, `osprey.audit.responder`):
/// a reader of the whole trail subscribes to this and to [`AUDIT`].
pub const AUDIT_WILDCARD: &str = "osprey.audit.>";
pub const HEARTBEAT_WILDCARD: &str = "osprey.heartbeat.*";
pub const APPROVALS: &str = "osprey.responder.approvals";
/// Signed [`crate::ResponderControl`] requests (dry-run on/off) to the responder.
pub const RESPONDER_CONTROL: &str = "osprey.responder.control";

/// A NATS-safe token for a host name: characters other than ASCII letters, digits, `-` and
/// `_` become `_` (NATS tokens cannot hold `.`, `*`, `>` or whitespace).
pub fn host_token(host: &str) -> String {
    let token: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if token.is_empty() {
        "_".to_string()
    } else {
        token
    }
}

pub fn events(host: &str, kind: EventKind) -> String {
    format!("osprey.events.{}.{}", host_token(host), kind.as_str())
}

pub fn findings(host: &str, severity: Severity) -> String {
    format!("osprey.findings.{}.{}", host_token(host), severity.as_str())
}

pub fn heartbeat(host: &str) -> String {
    format!("osprey.heartbeat.{}", host_token(host))
}

pub fn command(host: &str) -> String {
    format!("osprey.cmd.{}", host_token(host))
}

/// Every event of one host.
pub fn host_events(host: &str) -> String {
    format!("osprey.events.{}.>", host_token(host))
}

/// Every finding of one host.
pub fn host_findings(host: &str) -> String {
    format!("osprey.findings.{}.>", host_token(host))
}

/// Host state queries (request/reply, operators only).
pub fn query(host: &str) -> String {
    format!("osprey.query.{}", host_token(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_become_single_tokens() {
        assert_eq!(host_token("web-1.example.com"), "web-1_example_com");
        assert_eq!(findings("a b", Severity::High), "osprey.findings.a_b.high");
        assert_eq!(events("h", EventKind::Connect), "osprey.events.h.connect");
    }
}
