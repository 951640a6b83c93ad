//! What each role of the deployment may publish and subscribe to: the one source of the
//! server's permissions. `osprey creds` writes them into `roles.conf` (the responder's and
//! operators' sets, identical for every deployment; a copy is deploy/nats/roles.conf) and into
//! each host's entry of `users.conf` (a host's set names its own token, so it is generated per
//! host from the same subject builders the collector publishes with).
//!
//! NATS applies `deny` over `allow`; a subject not allowed is refused, and the client sees a
//! permissions violation.

use protocol::subject::{self, host_token};

/// The durable consumer through which the responder reads findings. Operators may create
/// consumers of their own on the stream, never this one, and cannot ack its deliveries.
pub const RESPONDER_CONSUMER: &str = "osprey-responder";
/// The investigator's durable consumer of findings; as private to it as the responder's.
pub const INVESTIGATOR_CONSUMER: &str = "osprey-investigator";

/// One role's permissions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish_allow: Vec<String>,
    pub publish_deny: Vec<String>,
    pub subscribe_allow: Vec<String>,
    /// May answer requests it received (one reply each): hosts answer commands and queries.
    pub allow_responses: bool,
}

fn owned(subjects: &[&str]) -> Vec<String> {
    subjects.iter().map(|s| s.to_string()).collect()
}

/// A host: publishes its own events, findings (JetStream), heartbeats and actuator audit;
/// looks up the findings stream (to check it); receives only its own commands, queries and
/// replies. It can create, change or read no stream, and reach no other host.
pub fn host(host: &str) -> Permissions {
    let token = host_token(host);
    Permissions {
        publish_allow: vec![
            format!("osprey.events.{token}.>"),
            format!("osprey.findings.{token}.>"),
            subject::heartbeat(host),
            subject::audit(host),
            format!("$JS.API.STREAM.INFO.{}", subject::FINDINGS_STREAM),
        ],
        publish_deny: Vec::new(),
        subscribe_allow: vec![
            subject::command(host),
            subject::query(host),
            format!("{}.>", crate::Role::Host(host).inbox_prefix()),
        ],
        allow_responses: true,
    }
}

/// The responder: reads findings through its durable consumer (and creates the stream and
/// the consumer when missing), commands hosts, raises host-silent findings, audits, follows
/// heartbeats, hosts' audit records (late command answers) and approvals (which it answers).
pub fn responder() -> Permissions {
    let stream = subject::FINDINGS_STREAM;
    let consumer = RESPONDER_CONSUMER;
    Permissions {
        publish_allow: vec![
            "osprey.cmd.*".to_string(),
            subject::AUDIT_RESPONDER.to_string(),
            // host-silent findings are `high`, on the silent host's subject
            "osprey.findings.*.high".to_string(),
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.STREAM.CREATE.{stream}"),
            format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.{consumer}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.{consumer}.>"),
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{consumer}"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            // acks, in the short and in the domain-qualified form of the ack subject
            format!("$JS.ACK.{stream}.{consumer}.>"),
            format!("$JS.ACK.*.*.{stream}.{consumer}.>"),
        ],
        publish_deny: Vec::new(),
        subscribe_allow: vec![
            subject::HEARTBEAT_WILDCARD.to_string(),
            subject::AUDIT_WILDCARD.to_string(),
            subject::APPROVALS.to_string(),
            subject::RESPONDER_PROPOSALS.to_string(),
            format!("{}.>", crate::Role::Responder.inbox_prefix()),
        ],
        // It answers approvals and proposals with what became of them.
        allow_responses: true,
    }
}

/// The AI investigator: reads findings through its own durable consumer (the stream must
/// exist: it never creates it), queries hosts (read-only), follows the audit trail, creates
/// and publishes to `OSPREY_INVESTIGATIONS`, and sends proposals to the responder. It cannot
/// command hosts, approve, switch the responder's mode, or publish findings or audit
/// records: whatever it concludes, only the responder acts.
pub fn investigator() -> Permissions {
    let findings = subject::FINDINGS_STREAM;
    let consumer = INVESTIGATOR_CONSUMER;
    let investigations = subject::INVESTIGATIONS_STREAM;
    Permissions {
        publish_allow: vec![
            "osprey.query.*".to_string(),
            format!("{}.*", subject::INVESTIGATIONS),
            subject::RESPONDER_PROPOSALS.to_string(),
            format!("$JS.API.STREAM.INFO.{findings}"),
            format!("$JS.API.CONSUMER.INFO.{findings}.{consumer}"),
            format!("$JS.API.CONSUMER.CREATE.{findings}.{consumer}"),
            format!("$JS.API.CONSUMER.CREATE.{findings}.{consumer}.>"),
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{findings}.{consumer}"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{findings}.{consumer}"),
            format!("$JS.ACK.{findings}.{consumer}.>"),
            format!("$JS.ACK.*.*.{findings}.{consumer}.>"),
            format!("$JS.API.STREAM.INFO.{investigations}"),
            format!("$JS.API.STREAM.CREATE.{investigations}"),
        ],
        publish_deny: Vec::new(),
        subscribe_allow: vec![
            subject::AUDIT_WILDCARD.to_string(),
            format!("{}.>", crate::Role::Investigator.inbox_prefix()),
        ],
        allow_responses: false,
    }
}

/// Operators (`osprey tail/top/ps`, approvals, the web console): read everything hosts and
/// the responder publish, read the findings and investigations streams through consumers of
/// their own, query and command hosts, approve. They cannot publish findings, events,
/// heartbeats or audit records, nor touch the responder's consumer.
pub fn operator() -> Permissions {
    let mut publish_allow = owned(&[
        "osprey.cmd.*",
        "osprey.query.*",
        subject::APPROVALS,
        "$JS.API.INFO",
    ]);
    for stream in [subject::FINDINGS_STREAM, subject::INVESTIGATIONS_STREAM] {
        publish_allow.extend([
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.STREAM.MSG.GET.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.*"),
            format!("$JS.API.CONSUMER.INFO.{stream}.*"),
            format!("$JS.API.CONSUMER.DELETE.{stream}.*"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
            format!("$JS.API.CONSUMER.NAMES.{stream}"),
            format!("$JS.API.CONSUMER.LIST.{stream}"),
            format!("$JS.ACK.{stream}.>"),
            format!("$JS.ACK.*.*.{stream}.>"),
            format!("$JS.FC.{stream}.>"),
        ]);
    }
    let stream = subject::FINDINGS_STREAM;
    // The responder's and the investigator's consumers stay theirs: their info may be read
    // (lag), but they cannot be created, deleted, pulled from or acked by anyone else.
    let publish_deny = [RESPONDER_CONSUMER, INVESTIGATOR_CONSUMER]
        .iter()
        .flat_map(|consumer| {
            [
                format!("$JS.API.CONSUMER.CREATE.{stream}.{consumer}"),
                format!("$JS.API.CONSUMER.CREATE.{stream}.{consumer}.>"),
                format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{consumer}"),
                format!("$JS.API.CONSUMER.DELETE.{stream}.{consumer}"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
                format!("$JS.ACK.{stream}.{consumer}.>"),
                format!("$JS.ACK.*.*.{stream}.{consumer}.>"),
            ]
        })
        .collect();
    Permissions {
        publish_allow,
        publish_deny,
        subscribe_allow: vec![
            "osprey.findings.>".to_string(),
            "osprey.events.>".to_string(),
            "osprey.heartbeat.>".to_string(),
            "osprey.audit.>".to_string(),
            subject::INVESTIGATIONS.to_string(),
            format!("{}.>", subject::INVESTIGATIONS),
            format!("{}.>", crate::Role::Operator.inbox_prefix()),
        ],
        allow_responses: false,
    }
}

/// The variable names roles.conf defines.
pub const RESPONDER_VARIABLE: &str = "OSPREY_RESPONDER_PERMISSIONS";
pub const OPERATOR_VARIABLE: &str = "OSPREY_OPERATOR_PERMISSIONS";

impl Permissions {
    /// The permissions as a NATS server configuration map, indented by `indent` spaces.
    pub fn render(&self, indent: usize) -> String {
        let pad = " ".repeat(indent);
        let mut out = String::from("{\n");
        let list = |out: &mut String, key: &str, subjects: &[String], depth: usize| {
            let pad = " ".repeat(depth);
            out.push_str(&format!("{pad}{key}: [\n"));
            let items: Vec<String> = subjects.iter().map(|s| format!("{pad}  \"{s}\"")).collect();
            out.push_str(&items.join(",\n"));
            out.push_str(&format!("\n{pad}]\n"));
        };
        out.push_str(&format!("{pad}  publish: {{\n"));
        list(&mut out, "allow", &self.publish_allow, indent + 4);
        if !self.publish_deny.is_empty() {
            list(&mut out, "deny", &self.publish_deny, indent + 4);
        }
        out.push_str(&format!("{pad}  }}\n"));
        out.push_str(&format!("{pad}  subscribe: {{\n"));
        list(&mut out, "allow", &self.subscribe_allow, indent + 4);
        out.push_str(&format!("{pad}  }}\n"));
        if self.allow_responses {
            out.push_str(&format!("{pad}  allow_responses: true\n"));
        }
        out.push_str(&format!("{pad}}}"));
        out
    }
}

/// The text of `roles.conf`: the responder's and operators' permissions as variables that
/// `users.conf` refers to.
pub fn roles_conf() -> String {
    format!(
        "# Permissions of Osprey's service roles, included by users.conf. Written by `osprey creds`\n\
         # from bus/src/permissions.rs (docs/nats.md explains every line); don't edit it here:\n\
         # a change belongs in the code, so every deployment and the tests get it.\n\
         \n\
         # osprey-responder: its durable consumer on OSPREY_FINDINGS, commands to hosts,\n\
         # host-silent findings, its audit records; heartbeats, hosts' audit, approvals.\n\
         {RESPONDER_VARIABLE}: {}\n\
         \n\
         # Operators (osprey tail/top/ps, approve/deny, the web console): read everything, their\n\
         # own consumers on the findings and investigations streams, queries and commands.\n\
         {OPERATOR_VARIABLE}: {}\n",
        responder().render(0),
        operator().render(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_may_only_use_its_own_subjects() {
        let p = host("web.1");
        for s in &p.publish_allow {
            assert!(
                s.contains("web_2e1") || s.starts_with("$JS.API.STREAM.INFO."),
                "{s}"
            );
            assert!(!s.starts_with("_INBOX"), "{s}");
        }
        assert!(p.subscribe_allow.iter().all(|s| s.contains("web_2e1")));
        assert!(p.allow_responses);
        assert_ne!(host("web.1"), host("web_1"));
    }

    #[test]
    fn the_investigator_can_read_and_propose_but_never_act() {
        let p = investigator();
        let allowed = |s: &str| p.publish_allow.iter().any(|a| a == s);
        assert!(allowed(subject::RESPONDER_PROPOSALS) && allowed("osprey.query.*"));
        for forbidden in [
            "osprey.cmd.*",
            subject::APPROVALS,
            subject::RESPONDER_CONTROL,
            subject::AUDIT_RESPONDER,
            "osprey.findings.*.high",
        ] {
            assert!(!allowed(forbidden), "{forbidden}");
        }
        assert!(p
            .publish_allow
            .iter()
            .all(|s| !s.contains(RESPONDER_CONSUMER) && !s.starts_with("osprey.cmd")));
        assert!(!p.allow_responses);
        // Nobody else may pull from or ack the investigator's consumer.
        assert!(operator().publish_deny.iter().any(|s| s.ends_with(&format!(
            "MSG.NEXT.{}.{INVESTIGATOR_CONSUMER}",
            subject::FINDINGS_STREAM
        ))));
        assert!(responder()
            .subscribe_allow
            .iter()
            .any(|s| s == subject::RESPONDER_PROPOSALS));
    }

    #[test]
    fn roles_conf_in_deploy_is_the_generated_one() {
        let shipped = include_str!("../../deploy/nats/roles.conf");
        assert_eq!(
            shipped,
            roles_conf(),
            "deploy/nats/roles.conf is out of date: regenerate it (osprey creds writes it)"
        );
    }
}
