//! The tools the model may call. All but `propose_action` only read; `propose_action` asks
//! the responder, which decides. Every tool works on the investigated finding's host only,
//! and answers with JSON data (redacted by the caller before the model sees it).

use std::time::Duration;

use protocol::{
    signing::KeyPair, subject, ActionKind, ExecId, Finding, ProcessFilter, Proposal, ProposalReply,
    Query, QueryKind, Severity, SortKey,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::investigate::Context;

pub const GET_PROCESS: &str = "get_process";
pub const LIST_PROCESSES: &str = "list_processes";
pub const RELATED_FINDINGS: &str = "related_findings";
pub const ACTIONS_TAKEN: &str = "actions_taken";
pub const PROPOSE_ACTION: &str = "propose_action";
pub const CONCLUDE: &str = "conclude";

/// Most processes `list_processes` returns.
const MAX_LIST: u32 = 50;
/// Most findings or audit records one answer carries.
const MAX_ITEMS: usize = 20;
/// How long a proposal waits for a responder that has not received the finding yet.
const PROPOSAL_PATIENCE: Duration = Duration::from_secs(20);
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The tools' JSON schema, as `tools` of a chat-completions request.
pub fn definitions() -> Value {
    let function = |name: &str, description: &str, parameters: Value| {
        json!({"type": "function", "function": {
            "name": name, "description": description, "parameters": parameters,
        }})
    };
    let exec_id = json!({"type": "string", "description": "an exec_id (bootid-pid-ticks-seq) from earlier data; default: the finding's process"});
    json!([
        function(GET_PROCESS, "The live state of a process on the finding's host: identity, argv, user, ancestry (nearest parent first), connections, findings, threat-intelligence verdict, risk.",
            json!({"type": "object", "properties": {"exec_id": exec_id}})),
        function(LIST_PROCESSES, "A snapshot of the host's live processes, riskiest first.",
            json!({"type": "object", "properties": {
                "text": {"type": "string", "description": "only processes whose executable, argv or user contains this"},
                "min_risk": {"type": "string", "enum": ["info", "low", "medium", "high", "critical"]},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIST},
            }})),
        function(RELATED_FINDINGS, "Other recent findings on the same host, newest first.",
            json!({"type": "object", "properties": {}})),
        function(ACTIONS_TAKEN, "The audit trail of response actions already decided or taken on the host, newest first.",
            json!({"type": "object", "properties": {}})),
        function(PROPOSE_ACTION, "Propose a response action to the responder, which decides under its own policy and safety controls. Propose only what the evidence supports.",
            json!({"type": "object", "required": ["action", "reason"], "properties": {
                "action": {"type": "string", "enum": ["kill", "suspend", "dump", "quarantine", "kill_on_exec", "block", "notify", "log"]},
                "target_exec_id": {"type": "string", "description": "the finding's process (default) or one of its ancestors"},
                "reason": {"type": "string"},
            }})),
        function(CONCLUDE, "End the investigation with your assessment.",
            json!({"type": "object", "required": ["summary", "verdict", "confidence"], "properties": {
                "summary": {"type": "string"},
                "verdict": {"type": "string", "enum": ["benign", "suspicious", "malicious"]},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            }})),
    ])
}

#[derive(Deserialize)]
struct ProcessArgs {
    exec_id: Option<String>,
}

#[derive(Deserialize)]
struct ListArgs {
    text: Option<String>,
    min_risk: Option<Severity>,
    limit: Option<u32>,
}

#[derive(Deserialize)]
pub struct ProposeArgs {
    pub action: ActionKind,
    pub target_exec_id: Option<String>,
    pub reason: String,
}

fn error(text: impl std::fmt::Display) -> Value {
    json!({"error": text.to_string()})
}

fn arguments<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, Value> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    serde_json::from_str(text).map_err(|e| error(format!("invalid arguments: {e}")))
}

fn parse_exec_id(text: Option<&str>, finding: &Finding) -> Result<ExecId, Value> {
    match text {
        None | Some("") => Ok(finding.process.exec_id),
        Some(t) => t.parse().map_err(error),
    }
}

/// Runs one read-only tool; `None` for a name that is not one.
pub async fn read_only(ctx: &Context, finding: &Finding, name: &str, args: &str) -> Option<Value> {
    Some(match name {
        GET_PROCESS => get_process(ctx, finding, args).await,
        LIST_PROCESSES => list_processes(ctx, finding, args).await,
        RELATED_FINDINGS => {
            let memory = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
            let related: Vec<Value> = memory
                .related(&finding.host, &finding.id)
                .iter()
                .take(MAX_ITEMS)
                .map(|f| {
                    json!({"id": f.id, "time": f.time, "rule_id": f.rule_id, "title": f.title,
                        "severity": f.severity, "exec_id": f.process.exec_id, "pid": f.process.pid,
                        "exe": f.process.exe, "argv": f.process.argv})
                })
                .collect();
            json!({"findings": related})
        }
        ACTIONS_TAKEN => {
            let memory = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
            let actions: Vec<Value> = memory
                .actions(&finding.host)
                .iter()
                .take(MAX_ITEMS)
                .map(|r| {
                    json!({"time": r.time, "source": r.source, "action": r.action,
                        "target": r.target, "decision": r.decision, "reason": r.reason,
                        "finding_id": r.finding_id, "investigation_id": r.investigation_id})
                })
                .collect();
            json!({"actions": actions})
        }
        _ => return None,
    })
}

async fn get_process(ctx: &Context, finding: &Finding, args: &str) -> Value {
    let exec_id = match arguments::<ProcessArgs>(args)
        .and_then(|a| parse_exec_id(a.exec_id.as_deref(), finding))
    {
        Ok(id) => id,
        Err(e) => return e,
    };
    let query = Query {
        kind: QueryKind::Process { exec_id },
    };
    match client::query(&ctx.nats, &finding.host, &query, client::QUERY_TIMEOUT).await {
        Ok(snapshot) => match snapshot.processes.into_iter().next() {
            Some(state) => serde_json::to_value(state).unwrap_or_else(error),
            None => json!({"found": false, "note": snapshot.note}),
        },
        Err(e) => error(e),
    }
}

async fn list_processes(ctx: &Context, finding: &Finding, args: &str) -> Value {
    let args = match arguments::<ListArgs>(args) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let query = Query {
        kind: QueryKind::Processes(ProcessFilter {
            min_risk: args.min_risk,
            text: args.text,
            sort: SortKey::Risk,
            limit: args.limit.unwrap_or(20).clamp(1, MAX_LIST),
            ..Default::default()
        }),
    };
    match client::query(&ctx.nats, &finding.host, &query, client::QUERY_TIMEOUT).await {
        Ok(snapshot) => {
            let processes: Vec<Value> = snapshot
                .processes
                .iter()
                .map(|s| {
                    let p = &s.process;
                    json!({"exec_id": p.exec_id, "pid": p.pid, "ppid": p.ppid, "name": p.name,
                        "exe": p.exe, "argv": p.argv, "user": p.user, "age_secs": s.age_secs,
                        "risk": s.risk})
                })
                .collect();
            json!({"total": snapshot.total, "processes": processes})
        }
        Err(e) => error(e),
    }
}

/// Signs and sends a proposal to the responder; asks again while the responder has not
/// received the finding yet (it reads findings on its own, perhaps a little later).
pub async fn propose(
    nats: &async_nats::Client,
    key: &KeyPair,
    investigation_id: &str,
    finding: &Finding,
    args: &ProposeArgs,
) -> Result<ProposalReply, String> {
    let target = match args.target_exec_id.as_deref() {
        None | Some("") => None,
        Some(t) => Some(t.parse::<ExecId>().map_err(|e| e.to_string())?),
    };
    let mut proposal = Proposal::new(
        investigation_id,
        finding.host.clone(),
        finding.id.clone(),
        args.action,
        target,
        args.reason.clone(),
    );
    let deadline = tokio::time::Instant::now() + PROPOSAL_PATIENCE;
    loop {
        proposal.nonce = protocol::signing::random_id();
        proposal.issued_at = protocol::Timestamp::now();
        key.sign(&mut proposal);
        let payload = protocol::encode(&proposal).map_err(|e| e.to_string())?;
        let request = nats.request(subject::RESPONDER_PROPOSALS, payload.into());
        let reply = match tokio::time::timeout(PROPOSAL_TIMEOUT, request).await {
            Err(_) => return Err("the responder did not answer in time".into()),
            Ok(Err(e)) => return Err(format!("cannot reach the responder: {e}")),
            Ok(Ok(message)) => protocol::decode::<ProposalReply>(&message.payload)
                .map_err(|e| format!("the responder's answer is not a proposal reply: {e}"))?,
        };
        if !reply.retry || tokio::time::Instant::now() >= deadline {
            return Ok(reply);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
