//! NATS subjects. `<host>` is always passed through [`host_token`].
//!
//! Every per-host subject carries the host as its third token (`osprey.<kind>.<host>...`), and
//! the NATS permissions of a host (deploy/nats, `osprey creds host`) are written over these
//! same builders, so what a host may publish is exactly what its collector publishes.

use crate::{EventKind, Severity};

pub const FINDINGS_STREAM: &str = "OSPREY_FINDINGS";
pub const FINDINGS_WILDCARD: &str = "osprey.findings.>";
pub const APPROVALS: &str = "osprey.responder.approvals";
/// Signed [`crate::ResponderControl`] requests (dry-run on/off) to the responder.
pub const RESPONDER_CONTROL: &str = "osprey.responder.control";
/// The responder's audit records. `_responder` can never be a host token (an `_` in a token
/// always starts a two-hex-digit escape), so no host's credentials can publish here.
pub const AUDIT_RESPONDER: &str = "osprey.audit._responder";
/// Every audit record, hosts' and the responder's.
pub const AUDIT_WILDCARD: &str = "osprey.audit.*";
pub const HEARTBEAT_WILDCARD: &str = "osprey.heartbeat.*";
/// Signed [`crate::Proposal`]s (request/reply) from an AI investigator to the responder.
pub const RESPONDER_PROPOSALS: &str = "osprey.responder.proposals";
/// AI triage records, stored by the stream [`INVESTIGATIONS_STREAM`].
pub const INVESTIGATIONS: &str = "osprey.investigations";
pub const INVESTIGATIONS_STREAM: &str = "OSPREY_INVESTIGATIONS";

/// The NATS token of a host name, injective: ASCII letters, digits and `-` stand for
/// themselves; every other byte of the name's UTF-8 (`.` and `_` included) becomes `_`
/// followed by its two lowercase hex digits. So `web.1` is `web_2e1` and `web_1` is
/// `web_5f1`: two hosts never share a token, and [`host_from_token`] gives the name back.
/// The empty name is `_`, which no other name yields.
pub fn host_token(host: &str) -> String {
    if host.is_empty() {
        return "_".to_string();
    }
    let mut token = String::with_capacity(host.len());
    for byte in host.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            token.push(char::from(byte));
        } else {
            token.push('_');
            token.push_str(&format!("{byte:02x}"));
        }
    }
    token
}

/// The host name a token stands for; `None` for anything [`host_token`] cannot produce.
pub fn host_from_token(token: &str) -> Option<String> {
    if token == "_" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut name = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            name.push(byte);
            i += 1;
        } else if byte == b'_' {
            let hex = token.get(i + 1..i + 3)?;
            if !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return None;
            }
            let escaped = u8::from_str_radix(hex, 16).ok()?;
            // Only bytes host_token escapes may appear escaped: one spelling per name.
            if escaped.is_ascii_alphanumeric() || escaped == b'-' {
                return None;
            }
            name.push(escaped);
            i += 3;
        } else {
            return None;
        }
    }
    String::from_utf8(name).ok()
}

/// The host token of a per-host subject (its third token: `osprey.findings.<host>.high`).
pub fn subject_host_token(subject: &str) -> Option<&str> {
    subject.split('.').nth(2).filter(|token| !token.is_empty())
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

/// Where a host's actuator publishes the audit records of the commands it handled.
pub fn audit(host: &str) -> String {
    format!("osprey.audit.{}", host_token(host))
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

/// Where the investigator publishes the records of its investigations of a host's findings.
pub fn investigations(host: &str) -> String {
    format!("{INVESTIGATIONS}.{}", host_token(host))
}

/// Read-only requests for a host's live state (answered by its collector; operators only).
pub fn query(host: &str) -> String {
    format!("osprey.query.{}", host_token(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_become_single_tokens() {
        assert_eq!(host_token("web-1.example.com"), "web-1_2eexample_2ecom");
        assert_eq!(
            findings("a b", Severity::High),
            "osprey.findings.a_20b.high"
        );
        assert_eq!(events("h", EventKind::Connect), "osprey.events.h.connect");
        assert_eq!(audit("web.1"), "osprey.audit.web_2e1");
        assert_eq!(query("db"), "osprey.query.db");
    }

    #[test]
    fn tokens_are_injective() {
        let names = [
            "web.1", "web_1", "web 1", "web*1", "web>1", "web_2e1", "", "_", "Web.1", "wéb",
            "web-1",
        ];
        let tokens: Vec<String> = names.iter().map(|n| host_token(n)).collect();
        for (i, a) in tokens.iter().enumerate() {
            for b in &tokens[i + 1..] {
                assert_ne!(a, b, "two names share a token");
            }
        }
        assert_ne!(host_token("web.1"), host_token("web_1"));
    }

    #[test]
    fn tokens_are_valid_nats_tokens_and_decode_back() {
        for name in [
            "web.1",
            "web_1",
            "a b\tc",
            "x*>y",
            "",
            "ünï.cödé",
            "$SYS",
            "-",
        ] {
            let token = host_token(name);
            assert!(!token.is_empty());
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{token:?}"
            );
            assert_eq!(host_from_token(&token).as_deref(), Some(name), "{token}");
        }
    }

    #[test]
    fn tokens_no_name_yields_are_refused() {
        for token in [
            "web.1",
            "web_1",
            "web_2E1",
            "web_",
            "web_2",
            "a_61",
            "_responder",
            "*",
        ] {
            assert_eq!(host_from_token(token), None, "{token}");
        }
        // The responder's audit subject is outside every host's.
        assert_eq!(host_from_token("_responder"), None);
    }

    #[test]
    fn the_host_of_a_subject_is_its_third_token() {
        assert_eq!(
            subject_host_token("osprey.findings.web_2e1.high"),
            Some("web_2e1")
        );
        assert_eq!(subject_host_token("osprey.heartbeat.h"), Some("h"));
        assert_eq!(subject_host_token("osprey.heartbeat"), None);
    }
}
