//! The responder's decisions: finding → policy → safety controls → signed command, audited.
//!
//! Every decision is committed to the [journal](crate::journal) before anything is done about
//! it, so a crash between deciding and acting neither loses nor doubles an action (commands
//! carry an id the host's actuator de-duplicates). The host a finding, heartbeat or audit
//! record is about is always the one of the subject it arrived on — the server's permissions
//! guarantee who may publish there — never a name inside the payload.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use protocol::{
    signing::{self, KeyPair, PublicKey},
    subject, Action, ActionKind, Approval, AuditRecord, Command, CommandResult, CommandStatus,
    Decision, ExecId, Finding, FindingId, Process, Proposal, ProposalReply, Timestamp, Verdict,
};
use serde::{Deserialize, Serialize};

use crate::{
    audit::AuditLog,
    config::{Autonomy, ResponderConfig},
    failpoint,
    journal::{self, Effect, Journal, Pending},
    notify,
    policy::{Plan, ResponsePolicy},
};

/// Executables never targeted, whatever the policy says (the actuator checks again by
/// device and inode on the host).
const BUILTIN_PROTECTED: &[&str] = &[
    "/usr/sbin/sshd",
    "/usr/bin/sshd",
    "/usr/sbin/nats-server",
    "/usr/bin/nats-server",
    "/usr/local/bin/nats-server",
    "/usr/bin/osprey-collector",
    "/usr/local/bin/osprey-collector",
    "/usr/bin/osprey-responder",
    "/usr/local/bin/osprey-responder",
    "/sbin/init",
    "/lib/systemd/systemd",
    "/usr/lib/systemd/systemd",
];

/// Commands whose answer did not come in time, kept for reconciling a late answer.
const AWAITING_CAPACITY: usize = 10_000;
const AWAITING_FOR: Duration = Duration::from_secs(3600);

/// Findings kept for investigators' proposals, which name a finding by id: a proposal is
/// only ever about a finding this responder received on its host's subject.
const FINDINGS_KEPT: usize = 10_000;
/// Signed messages (approvals, proposals) older or newer than this are refused as stale.
const FRESH_NANOS: u64 = 300 * 1_000_000_000;
/// Longest proposal reason copied into an audit record (the model's words).
const MAX_REASON: usize = 300;
/// One action the policy chose for one finding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Planned {
    pub finding: Finding,
    pub kind: ActionKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The AI investigation that proposed it (named by every audit record of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub investigation_id: Option<String>,
}

/// A command that timed out, waiting for the host's own audit record of it.
struct Awaiting {
    planned: Planned,
    since: Instant,
}

/// Why a command got no answer.
enum SendError {
    /// No answer in time: it may or may not have run.
    NoAnswer(String),
    /// It certainly did not run (nobody listening, not encodable, ...).
    NotDelivered(String),
}

pub struct Responder {
    config: ResponderConfig,
    key: KeyPair,
    operators: Vec<PublicKey>,
    investigators: Vec<PublicKey>,
    policy: ResponsePolicy,
    client: async_nats::Client,
    audit: AuditLog,
    journal: Journal,
    /// (host, action) → times of actions sent in the last hour (rebuilt from the journal).
    recent: HashMap<(String, String), VecDeque<Timestamp>>,
    approval_nonces: VecDeque<String>,
    protected_networks: Vec<IpNet>,
    /// Host token → (last heartbeat, already reported silent).
    heartbeats: HashMap<String, (Instant, bool)>,
    /// Command id → the command that timed out.
    awaiting: HashMap<String, Awaiting>,
    /// (subject host token, finding id) → the finding, the last [`FINDINGS_KEPT`], oldest first.
    findings: HashMap<(String, FindingId), Finding>,
    findings_order: VecDeque<(String, FindingId)>,
    /// What was proposed about each kept finding (action, target): each at most once.
    proposed: HashSet<(String, FindingId, ActionKind, Option<ExecId>)>,
}

pub fn action_name(kind: ActionKind) -> &'static str {
    kind.as_str()
}

impl Responder {
    /// Opens the journal; effects a crash left undone are carried out by
    /// [`Responder::resume`].
    pub fn new(
        config: ResponderConfig,
        policy: ResponsePolicy,
        key: KeyPair,
        client: async_nats::Client,
    ) -> anyhow::Result<Self> {
        let operators = config
            .operator_keys
            .iter()
            .map(|k| PublicKey::from_base64(k))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("operator_keys: {e}"))?;
        let investigators = config
            .ai
            .investigator_keys
            .iter()
            .map(|k| PublicKey::from_base64(k))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("ai.investigator_keys: {e}"))?;
        let mut protected_networks: Vec<IpNet> = config
            .protected_networks
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        protected_networks.extend(
            nats_addresses(&config.nats.url)
                .into_iter()
                .map(IpNet::from),
        );
        let journal = Journal::open(&config.state_dir)
            .map_err(|e| anyhow::anyhow!("state_dir {}: {e}", config.state_dir.display()))?;
        let mut recent: HashMap<(String, String), VecDeque<Timestamp>> = HashMap::new();
        for counted in journal.counted() {
            recent
                .entry((counted.host.clone(), counted.action.clone()))
                .or_default()
                .push_back(counted.at);
        }
        let audit = AuditLog::new(config.audit_file.clone(), client.clone());
        Ok(Responder {
            config,
            key,
            operators,
            investigators,
            policy,
            client,
            audit,
            journal,
            recent,
            approval_nonces: VecDeque::new(),
            protected_networks,
            heartbeats: HashMap::new(),
            awaiting: HashMap::new(),
            findings: HashMap::new(),
            findings_order: VecDeque::new(),
            proposed: HashSet::new(),
        })
    }

    /// Carries out what a previous run committed but did not finish (commands are sent again
    /// with their ids: a host that ran one answers with its first result).
    pub async fn resume(&mut self) {
        let open = self.journal.open_effects();
        if !open.is_empty() {
            tracing::info!(
                effects = open.len(),
                "carrying out decisions a previous run committed but did not finish"
            );
        }
        self.run(open).await;
        let pending = self.journal.pending().len();
        if pending > 0 {
            tracing::info!(pending, "actions awaiting approval carried over");
        }
    }

    fn record(
        &self,
        p: &Planned,
        decision: Decision,
        reason: impl Into<String>,
        result: impl Into<String>,
        command_id: Option<String>,
    ) -> AuditRecord {
        let mut record = AuditRecord::new(
            "responder",
            p.finding.host.clone(),
            action_name(p.kind),
            decision,
            reason,
            result,
        );
        record.finding_id = Some(p.finding.id.clone());
        record.target = p.target.clone();
        record.command_id = command_id;
        record.pid = Some(p.finding.process.pid);
        record.exe = Some(p.finding.process.exe.clone());
        record.investigation_id.clone_from(&p.investigation_id);
        record
    }

    fn audit_effect(record: AuditRecord) -> Effect {
        Effect::Audit {
            record: Box::new(record),
        }
    }

    /// Handles one finding from the stream. `subject_host` is the host token of the subject
    /// it arrived on. Returns once every decision is committed and carried out.
    pub async fn handle_finding(&mut self, subject_host: &str, finding: Finding) {
        let plan = self.policy.plan(&finding);
        if subject::host_token(&finding.host) != subject_host {
            // Not marked decided: a forged copy on one host's subject must not stop the
            // real finding, on its own host's subject, from being acted on.
            let effects = plan
                .iter()
                .flat_map(|plan| plan.actions.clone())
                .map(|kind| {
                    let planned = planned(kind, &finding, None, false);
                    Self::audit_effect(self.record(
                        &planned,
                        Decision::Refused,
                        format!(
                            "finding for host {:?} arrived on the subject of host token {subject_host:?}",
                            finding.host
                        ),
                        "refused",
                        None,
                    ))
                })
                .collect();
            self.commit_and_run(journal::Decision {
                effects,
                ..Default::default()
            })
            .await;
            return;
        }
        self.remember(subject_host, &finding);
        let key = format!("{subject_host}/{}", finding.id);
        if self.journal.is_decided(&key) {
            tracing::debug!(id = %finding.id, "finding already handled; no second action");
            return;
        }
        let mut decision = journal::Decision {
            decided: Some(key),
            ..Default::default()
        };
        if let Some(plan) = plan {
            for kind in plan.actions.clone() {
                let planned = planned(kind, &finding, plan.ttl_secs, plan.block_port);
                self.decide(&plan, planned, &mut decision, false);
            }
        }
        self.commit_and_run(decision).await;
    }

    /// Decides one planned action: refused, dry run, rate limited, held for approval (when
    /// the policy asks for it, or `force_approval`), or done (logged, notified, sent).
    fn decide(
        &mut self,
        plan: &Plan,
        planned: Planned,
        decision: &mut journal::Decision,
        force_approval: bool,
    ) {
        if let Err(why) = self.safety(&planned) {
            let r = self.record(&planned, Decision::Refused, why, "refused", None);
            decision.effects.push(Self::audit_effect(r));
            return;
        }
        if self.config.dry_run || plan.dry_run {
            let r = self.record(
                &planned,
                Decision::DryRun,
                format!("policy rule {}: dry run, nothing sent", plan.rule),
                "not sent",
                None,
            );
            decision.effects.push(Self::audit_effect(r));
            return;
        }
        if let Err(why) = self.rate_limit(&planned) {
            let r = self.record(&planned, Decision::RateLimited, why, "not sent", None);
            decision.effects.push(Self::audit_effect(r));
            return;
        }
        if force_approval || self.policy.needs_approval(planned.kind) {
            let held = self.journal.pending().len() + decision.pending.len();
            if held >= self.config.max_pending_approvals {
                let r = self.record(
                    &planned,
                    Decision::Refused,
                    format!(
                        "policy rule {}: {} needs an operator's approval, but {held} actions \
                         already await one (max_pending_approvals): not held",
                        plan.rule,
                        action_name(planned.kind)
                    ),
                    "not sent",
                    None,
                );
                decision.effects.push(Self::audit_effect(r));
                return;
            }
            let id = signing::random_id();
            let mut r = self.record(
                &planned,
                Decision::AwaitingApproval,
                format!(
                    "policy rule {}: {} needs an operator's approval; pending id {id}",
                    plan.rule,
                    action_name(planned.kind)
                ),
                id.clone(),
                None,
            );
            r.pending_id = Some(id.clone());
            decision.effects.push(Self::audit_effect(r));
            let deadline = Timestamp::from_unix_nanos(
                Timestamp::now().unix_nanos()
                    + self.config.approval_timeout_secs as i64 * 1_000_000_000,
            );
            decision.pending.push((
                id,
                Pending {
                    planned,
                    rule: plan.rule.clone(),
                    deadline,
                },
            ));
            return;
        }
        let why = format!("policy rule {}", plan.rule);
        self.act(planned, why, None, decision);
    }

    /// Adds the effect that carries out an action (logged, notified or sent), counted
    /// against the rate limits.
    fn act(
        &mut self,
        planned: Planned,
        why: String,
        pending_id: Option<String>,
        decision: &mut journal::Decision,
    ) {
        match planned.kind {
            ActionKind::Log => {
                let mut r = self.record(
                    &planned,
                    Decision::Executed,
                    format!("{why}: logged"),
                    "ok",
                    None,
                );
                r.pending_id = pending_id;
                decision.effects.push(Self::audit_effect(r));
            }
            ActionKind::Notify => decision.effects.push(Effect::Notify {
                planned: Box::new(planned),
                why,
            }),
            _ => {
                self.count(&planned);
                decision.counted.push((
                    planned.finding.host.clone(),
                    action_name(planned.kind).to_string(),
                ));
                decision.effects.push(Effect::Send {
                    command_id: signing::random_id(),
                    planned: Box::new(planned),
                    why,
                    pending_id,
                });
            }
        }
    }

    /// Commits a decision to the journal, then carries it out.
    async fn commit_and_run(&mut self, decision: journal::Decision) {
        match self.journal.commit(decision) {
            Ok(effects) => {
                if effects
                    .iter()
                    .any(|(_, e)| matches!(e, Effect::Send { .. }))
                {
                    failpoint::reached("decided");
                }
                self.run(effects).await;
            }
            Err(e) => tracing::error!(
                "cannot commit a decision to the journal ({}): not acting on it: {e}",
                self.config.state_dir.display()
            ),
        }
    }

    async fn run(&mut self, effects: Vec<(u64, Effect)>) {
        for (id, effect) in effects {
            match effect {
                Effect::Audit { record } => self.audit.record(*record).await,
                Effect::Notify { planned, why } => self.notify(&planned, why).await,
                Effect::Send {
                    command_id,
                    planned,
                    why,
                    pending_id,
                } => {
                    self.send_and_audit(&planned, command_id, why, pending_id)
                        .await
                }
            }
            self.journal.done(id);
        }
    }

    fn safety(&self, p: &Planned) -> Result<(), String> {
        let proc_action = matches!(
            p.kind,
            ActionKind::Kill
                | ActionKind::Suspend
                | ActionKind::Quarantine
                | ActionKind::Dump
                | ActionKind::KillOnExec
        );
        if proc_action {
            if p.finding.process.pid == 1 {
                return Err("pid 1 is protected".into());
            }
            let exe = &p.finding.process.exe;
            if BUILTIN_PROTECTED.contains(&exe.as_str())
                || self.config.protected_executables.iter().any(|e| e == exe)
            {
                return Err(format!("{exe} is a protected executable"));
            }
        }
        if let Some(Action::Block { cidr, .. }) = &p.action {
            // A block built from a finding names one address (`Action::for_finding`), an
            // operator's a CIDR: both are checked as networks (IPv4-mapped IPv6 as IPv4).
            let net = protocol::net::parse_net(cidr)
                .ok_or_else(|| format!("{cidr:?} is neither an address nor a network"))?;
            if let Some(n) = self
                .protected_networks
                .iter()
                .find(|n| n.contains(&net.network()) || net.contains(&n.network()))
            {
                return Err(format!("{net} covers protected destination {n}"));
            }
        }
        if p.action.is_none() && !matches!(p.kind, ActionKind::Notify | ActionKind::Log) {
            return Err(format!(
                "the finding carries nothing to {} (no destination or executable)",
                action_name(p.kind)
            ));
        }
        Ok(())
    }

    /// Whether one more `p.kind` action on its host stays within the hourly limit. Actions
    /// count when they are sent — approved ones included.
    fn rate_limit(&mut self, p: &Planned) -> Result<(), String> {
        let name = action_name(p.kind);
        let limit = self.config.rate_limit(name);
        let hour_ago = Timestamp::now().unix_nanos() - 3600 * 1_000_000_000;
        let recent = self
            .recent
            .entry((p.finding.host.clone(), name.to_string()))
            .or_default();
        while recent.front().is_some_and(|t| t.unix_nanos() <= hour_ago) {
            recent.pop_front();
        }
        if limit > 0 && recent.len() >= limit as usize {
            return Err(format!(
                "rate limit: {limit} {name} actions per hour on host {} reached",
                p.finding.host
            ));
        }
        Ok(())
    }

    fn count(&mut self, p: &Planned) {
        self.recent
            .entry((p.finding.host.clone(), action_name(p.kind).to_string()))
            .or_default()
            .push_back(Timestamp::now());
    }

    async fn notify(&mut self, p: &Planned, why: String) {
        let text = format!(
            "[osprey] {} {} on {}: {} (pid {}, {})",
            p.finding.severity.as_str(),
            p.finding.rule_id,
            p.finding.host,
            p.finding.title,
            p.finding.process.pid,
            p.finding.process.exe
        );
        let (decision, result) = match &self.config.notify_webhook {
            None => (Decision::Failed, "no notify_webhook configured".to_string()),
            Some(url) => match notify::post(url, &text).await {
                Ok(_) => (Decision::Executed, "ok".to_string()),
                Err(e) => (Decision::Failed, e),
            },
        };
        let r = self.record(p, decision, why, result, None);
        self.audit.record(r).await;
    }

    /// Signs (now, with a fresh nonce) and sends the command `command_id`, and audits the
    /// host's answer; no answer in time is audited `unknown` and reconciled if the host's
    /// own audit record of it shows up later.
    async fn send_and_audit(
        &mut self,
        p: &Planned,
        command_id: String,
        why: String,
        pending_id: Option<String>,
    ) {
        let Some(action) = p.action.clone() else {
            return;
        };
        let mut command = Command::new(p.finding.host.clone(), action, Some(p.finding.id.clone()));
        // The id was journaled before sending: a restart re-sends under the same id.
        command.id.clone_from(&command_id);
        self.key.sign(&mut command);
        let answer = self.send(&command).await;
        failpoint::reached("sent");
        let (decision, reason, result) = match answer {
            Ok(r) => match r.status {
                CommandStatus::Ok => (
                    Decision::Executed,
                    format!("{why}: {}", r.reason),
                    "ok".to_string(),
                ),
                CommandStatus::Refused => (
                    Decision::Refused,
                    format!("host refused: {}", r.reason),
                    "refused".to_string(),
                ),
                CommandStatus::Failed => (Decision::Failed, why, format!("error: {}", r.reason)),
            },
            Err(SendError::NoAnswer(e)) => {
                self.await_answer(command_id.clone(), p.clone());
                (
                    Decision::Unknown,
                    format!("{why}: {e}; the host's later answer is reconciled"),
                    "unknown".to_string(),
                )
            }
            Err(SendError::NotDelivered(e)) => (Decision::Failed, why, format!("error: {e}")),
        };
        let mut r = self.record(p, decision, reason, result, Some(command_id));
        r.pending_id = pending_id;
        self.audit.record(r).await;
    }

    async fn send(&self, command: &Command) -> Result<CommandResult, SendError> {
        let payload = protocol::encode(command)
            .map_err(|e| SendError::NotDelivered(format!("cannot encode the command: {e}")))?;
        let request = self
            .client
            .request(subject::command(&command.host), payload.into());
        let timeout = Duration::from_secs(self.config.command_timeout_secs);
        let reply = match tokio::time::timeout(timeout, request).await {
            Err(_) => {
                return Err(SendError::NoAnswer(format!(
                    "host {} did not answer within {}s",
                    command.host, self.config.command_timeout_secs
                )))
            }
            Ok(Err(e)) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => {
                return Err(SendError::NotDelivered(format!(
                    "no actuator listens on {} (host down or actuator off)",
                    subject::command(&command.host)
                )))
            }
            Ok(Err(e)) if e.kind() == async_nats::client::RequestErrorKind::TimedOut => {
                return Err(SendError::NoAnswer(format!(
                    "host {} did not answer in time: {e}",
                    command.host
                )))
            }
            Ok(Err(e)) => {
                return Err(SendError::NotDelivered(format!(
                    "request to host {} failed: {e}",
                    command.host
                )))
            }
            Ok(Ok(reply)) => reply,
        };
        protocol::decode(&reply.payload).map_err(|e| {
            SendError::NoAnswer(format!("the host's answer is not a CommandResult: {e}"))
        })
    }

    fn await_answer(&mut self, command_id: String, planned: Planned) {
        self.awaiting
            .retain(|_, a| a.since.elapsed() < AWAITING_FOR);
        if self.awaiting.len() >= AWAITING_CAPACITY {
            tracing::warn!(
                command_id,
                "too many unanswered commands are followed; a late answer to this one will not be reconciled"
            );
            return;
        }
        self.awaiting.insert(
            command_id,
            Awaiting {
                planned,
                since: Instant::now(),
            },
        );
    }

    /// A host's audit record (`osprey.audit.<host token>`): the late answer to a command that
    /// timed out is audited with the host's decision.
    pub async fn host_audit(&mut self, subject_host: &str, record: AuditRecord) {
        let Some(command_id) = record.command_id.as_deref() else {
            return;
        };
        let Some(awaiting) = self.awaiting.get(command_id) else {
            return;
        };
        // Only the host the command went to can answer for it.
        if subject::host_token(&awaiting.planned.finding.host) != subject_host {
            return;
        }
        let Some(awaiting) = self.awaiting.remove(command_id) else {
            return;
        };
        let r = self.record(
            &awaiting.planned,
            record.decision,
            format!(
                "reconciled: the host answered after the timeout: {}",
                record.reason
            ),
            record.result,
            Some(command_id.to_string()),
        );
        self.audit.record(r).await;
    }

    /// An operator's approval or denial of a pending action; returns what became of it, in
    /// one sentence (the reply `osprey approve` prints).
    pub async fn handle_approval(&mut self, payload: &[u8]) -> String {
        let approval: Approval = match protocol::decode(payload) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("ignoring a malformed approval: {e}");
                return format!("refused: not an approval: {e}");
            }
        };
        if let Err(e) = signing::verify(&approval, &self.operators) {
            tracing::warn!(pending = %approval.pending_id, "ignoring an approval: {e}");
            return format!("refused: {e} (is the key in the responder's operator_keys?)");
        }
        if !self.fresh(approval.issued_at, &approval.nonce) {
            tracing::warn!(pending = %approval.pending_id, "ignoring a stale or replayed approval");
            return "refused: a stale or replayed approval".to_string();
        }
        let Some(pending) = self.journal.pending().get(&approval.pending_id).cloned() else {
            tracing::warn!(pending = %approval.pending_id, "no such pending action (handled, expired or unknown)");
            return format!(
                "no action {} awaits approval (handled, expired or unknown)",
                approval.pending_id
            );
        };
        let p = pending.planned;
        let operator = approval.key_id.clone();
        let mut decision = journal::Decision {
            resolved: vec![approval.pending_id.clone()],
            ..Default::default()
        };
        let with_operator = |mut r: AuditRecord| {
            r.pending_id = Some(approval.pending_id.clone());
            r.actor.key_id = Some(operator.clone());
            r.actor.name.clone_from(&approval.operator);
            Self::audit_effect(r)
        };
        let outcome;
        match approval.verdict {
            Verdict::Deny => {
                outcome = format!("denied: {} not sent", action_name(p.kind));
                let r = self.record(
                    &p,
                    Decision::Denied,
                    format!("denied by operator {operator}"),
                    "not sent",
                    None,
                );
                decision.effects.push(with_operator(r));
            }
            Verdict::Approve => match self.rate_limit(&p) {
                Err(why) => {
                    outcome = format!("approved, but not sent: {why}");
                    let r = self.record(
                        &p,
                        Decision::RateLimited,
                        format!("approved by operator {operator}, but {why}"),
                        "not sent",
                        None,
                    );
                    decision.effects.push(with_operator(r));
                }
                Ok(()) => {
                    outcome = format!(
                        "approved: {} sent to host {} (its outcome is in the audit trail)",
                        action_name(p.kind),
                        p.finding.host
                    );
                    let r = self.record(
                        &p,
                        Decision::Approved,
                        format!("approved by operator {operator}"),
                        "ok",
                        None,
                    );
                    decision.effects.push(with_operator(r));
                    self.act(
                        p,
                        format!("approved by operator {operator}"),
                        Some(approval.pending_id.clone()),
                        &mut decision,
                    );
                }
            },
        }
        self.commit_and_run(decision).await;
        outcome
    }

    /// Whether a signed message issued at `issued_at` with `nonce` is fresh and new; its
    /// nonce is then remembered (approvals and proposals share the set: nonces are random).
    fn fresh(&mut self, issued_at: Timestamp, nonce: &str) -> bool {
        if Timestamp::now().distance_nanos(issued_at) > FRESH_NANOS
            || self.approval_nonces.iter().any(|n| n == nonce)
        {
            return false;
        }
        self.approval_nonces.push_back(nonce.to_string());
        if self.approval_nonces.len() > 10_000 {
            self.approval_nonces.pop_front();
        }
        true
    }

    /// As many proposals await approval as `ai.max_pending_approvals` allows.
    fn ai_pending_full(&self) -> bool {
        let held = self
            .journal
            .pending()
            .values()
            .filter(|p| p.planned.investigation_id.is_some())
            .count();
        held >= self.config.ai.max_pending_approvals
    }

    /// Keeps a finding that arrived on its own host's subject, for proposals about it.
    fn remember(&mut self, subject_host: &str, finding: &Finding) {
        let key = (subject_host.to_string(), finding.id.clone());
        if self.findings.insert(key.clone(), finding.clone()).is_none() {
            self.findings_order.push_back(key);
        }
        while self.findings_order.len() > FINDINGS_KEPT {
            if let Some(old) = self.findings_order.pop_front() {
                self.findings.remove(&old);
                self.proposed
                    .retain(|(h, f, _, _)| (h, f) != (&old.0, &old.1));
            }
        }
    }

    /// An AI investigator's proposal (`osprey.responder.proposals`): verified (a trusted
    /// investigator key, fresh, never seen), then, by `ai.autonomy`, audited as a proposal,
    /// held for approval, or decided as the policy would — through the same safety controls
    /// and code path as the policy's own actions, every audit record naming the
    /// investigation. Returns the answer for the investigator.
    pub async fn handle_proposal(&mut self, payload: &[u8]) -> ProposalReply {
        let answer = |id: &str, reason: String| ProposalReply {
            proposal_id: id.to_string(),
            decision: None,
            reason,
            pending_id: None,
            retry: false,
        };
        let proposal: Proposal = match protocol::decode(payload) {
            Ok(p) => p,
            Err(e) => return answer("", format!("refused: not a proposal: {e}")),
        };
        if let Err(e) = signing::verify(&proposal, &self.investigators) {
            tracing::warn!(proposal = %proposal.id, "ignoring a proposal: {e}");
            return answer(
                &proposal.id,
                format!("refused: {e} (is the key in the responder's ai.investigator_keys?)"),
            );
        }
        if !self.fresh(proposal.issued_at, &proposal.nonce) {
            tracing::warn!(proposal = %proposal.id, "ignoring a stale or replayed proposal");
            return answer(&proposal.id, "refused: a stale or replayed proposal".into());
        }
        let key = (
            subject::host_token(&proposal.host),
            proposal.finding_id.clone(),
        );
        let Some(finding) = self.findings.get(&key).cloned() else {
            return ProposalReply {
                retry: true,
                ..answer(
                    &proposal.id,
                    format!(
                        "the responder has not received finding {} of host {} (yet)",
                        proposal.finding_id, proposal.host
                    ),
                )
            };
        };
        // Not audited: a misbehaving investigator must not be able to flood the trail.
        if !self
            .proposed
            .insert((key.0, key.1, proposal.action, proposal.target))
        {
            return answer(
                &proposal.id,
                "refused: this action on this target was already proposed for this finding".into(),
            );
        }
        let reason: String = proposal.reason.chars().take(MAX_REASON).collect();
        let by = format!("AI investigation {}", proposal.investigation_id);
        let mut decision = journal::Decision::default();
        match proposal_target(&finding, &proposal) {
            Err(why) => {
                let mut p = planned(proposal.action, &finding, None, false);
                p.target = proposal.target.map(|t| t.to_string());
                p.investigation_id = Some(proposal.investigation_id.clone());
                let mut r = self.record(
                    &p,
                    Decision::Refused,
                    format!("{by}: {why}"),
                    "refused",
                    None,
                );
                // The record is about the process the proposal named, not the finding's.
                r.pid = proposal.target.map(|t| t.pid);
                r.exe = None;
                decision.effects.push(Self::audit_effect(r));
            }
            Ok(mut p) => {
                p.investigation_id = Some(proposal.investigation_id.clone());
                self.decide_proposal(&finding, &proposal, p, &by, &reason, &mut decision);
            }
        }
        let reply = proposal_reply(&proposal.id, &decision);
        self.commit_and_run(decision).await;
        reply
    }

    fn decide_proposal(
        &mut self,
        finding: &Finding,
        proposal: &Proposal,
        p: Planned,
        by: &str,
        reason: &str,
        decision: &mut journal::Decision,
    ) {
        let refuse = |this: &Self, p: &Planned, why: String, decision: &mut journal::Decision| {
            let r = this.record(
                p,
                Decision::Refused,
                format!("{by}: {why}"),
                "refused",
                None,
            );
            decision.effects.push(Self::audit_effect(r));
        };
        // The safety controls first, whatever the autonomy: pid 1, protected executables
        // and protected networks are refused as such (the policy path checks them again).
        if let Err(why) = self.safety(&p) {
            refuse(self, &p, why, decision);
            return;
        }
        match self.config.ai.autonomy {
            Autonomy::Propose => {
                let r = self.record(
                    &p,
                    Decision::Proposed,
                    format!("{by} proposes it ({reason}); ai.autonomy is propose: not acted on"),
                    "not sent",
                    None,
                );
                decision.effects.push(Self::audit_effect(r));
            }
            Autonomy::Approval if self.ai_pending_full() => refuse(
                self,
                &p,
                format!(
                    "{} proposals already await approval (ai.max_pending_approvals): not held",
                    self.config.ai.max_pending_approvals
                ),
                decision,
            ),
            Autonomy::Approval => {
                let plan = Plan {
                    rule: by.to_string(),
                    actions: vec![p.kind],
                    ttl_secs: None,
                    dry_run: false,
                    block_port: false,
                };
                self.decide(&plan, p, decision, true);
            }
            Autonomy::WithinPolicy => {
                let own = proposal.target.is_none_or(|t| t == finding.process.exec_id);
                match self.policy.plan(finding) {
                    Some(plan) if own && plan.actions.contains(&p.kind) => {
                        // Exactly what the policy would do: its ttl, its port choice, its path.
                        let mut same = planned(p.kind, finding, plan.ttl_secs, plan.block_port);
                        same.investigation_id = p.investigation_id.clone();
                        self.decide(&plan, same, decision, false);
                    }
                    Some(plan) => refuse(
                        self,
                        &p,
                        format!(
                            "ai.autonomy is within_policy and policy rule {} does not take {} on {}",
                            plan.rule,
                            action_name(p.kind),
                            if own { "this finding" } else { "another process than the finding's" }
                        ),
                        decision,
                    ),
                    None => refuse(
                        self,
                        &p,
                        "ai.autonomy is within_policy and no policy rule matches this finding"
                            .to_string(),
                        decision,
                    ),
                }
            }
        }
    }

    /// Expires pending actions whose approval did not come in time (also those whose time
    /// ran out while the responder was down); raises host-silence findings.
    pub async fn tick(&mut self, js: &async_nats::jetstream::Context) {
        let now = Timestamp::now();
        let expired: Vec<(String, Planned)> = self
            .journal
            .pending()
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, p)| (id.clone(), p.planned.clone()))
            .collect();
        if !expired.is_empty() {
            let mut decision = journal::Decision::default();
            for (id, planned) in expired {
                let mut r = self.record(
                    &planned,
                    Decision::Expired,
                    format!(
                        "no approval within {}s; not sent",
                        self.config.approval_timeout_secs
                    ),
                    "not sent",
                    None,
                );
                r.pending_id = Some(id.clone());
                decision.effects.push(Self::audit_effect(r));
                decision.resolved.push(id);
            }
            self.commit_and_run(decision).await;
        }
        self.report_silent_hosts(js).await;
    }

    async fn report_silent_hosts(&mut self, js: &async_nats::jetstream::Context) {
        if self.config.heartbeat_timeout_secs == 0 {
            return;
        }
        let timeout = Duration::from_secs(self.config.heartbeat_timeout_secs);
        let mut silent = Vec::new();
        for (token, (last, reported)) in &mut self.heartbeats {
            if !*reported && last.elapsed() > timeout {
                *reported = true;
                silent.push((token.clone(), last.elapsed()));
            }
        }
        for (token, quiet) in silent {
            // Tokens come from heartbeats' subjects, which only valid tokens reach.
            let Some(host) = subject::host_from_token(&token) else {
                continue;
            };
            let finding = crate::silence::finding(&host, quiet);
            tracing::warn!(
                host,
                "host fell silent: no heartbeat for {}s",
                quiet.as_secs()
            );
            match protocol::encode(&finding) {
                Ok(bytes) => {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Nats-Msg-Id", finding.id.0.as_str());
                    let sent = js
                        .publish_with_headers(
                            subject::findings(&host, finding.severity),
                            headers,
                            bytes.into(),
                        )
                        .await;
                    if let Err(e) = sent {
                        tracing::error!("cannot publish the host-silence finding: {e}");
                    }
                }
                Err(e) => tracing::error!("cannot encode the host-silence finding: {e}"),
            }
        }
    }

    /// A heartbeat arrived on `osprey.heartbeat.<token>`: that host is alive. Only the
    /// subject counts (a host can only publish its own), never the payload's host name.
    pub fn heartbeat(&mut self, subject_host: &str) {
        if subject::host_from_token(subject_host).is_none() {
            tracing::warn!(
                token = subject_host,
                "a heartbeat on a subject that is no host token; ignored"
            );
            return;
        }
        self.heartbeats
            .insert(subject_host.to_string(), (Instant::now(), false));
    }

    /// Dry-run: decide and audit, send nothing (switched by operators: `control.rs`).
    pub fn dry_run(&self) -> bool {
        self.config.dry_run
    }

    pub fn set_dry_run(&mut self, on: bool) {
        self.config.dry_run = on;
    }
}

fn planned(kind: ActionKind, f: &Finding, ttl_secs: Option<u64>, block_port: bool) -> Planned {
    let (action, target) = build_action(kind, f, ttl_secs, block_port);
    Planned {
        finding: f.clone(),
        kind,
        action,
        target,
        investigation_id: None,
    }
}

/// The action a proposal asks for: on the finding's process, or on one of its ancestors as
/// the finding recorded them (the finding is then about that ancestor for every safety
/// check). Anything else is refused: a proposal cannot name an arbitrary process.
fn proposal_target(finding: &Finding, proposal: &Proposal) -> Result<Planned, String> {
    let target = match proposal.target {
        None => return Ok(planned(proposal.action, finding, None, false)),
        Some(t) if t == finding.process.exec_id => {
            return Ok(planned(proposal.action, finding, None, false))
        }
        Some(t) => t,
    };
    let ancestor = finding
        .ancestry
        .iter()
        .find(|a| a.exec_id == target)
        .ok_or_else(|| {
            format!("{target} is neither the finding's process nor one of its ancestors")
        })?;
    let mut about = finding.clone();
    about.process = Process::new(
        ancestor.exec_id,
        ancestor.exe.clone(),
        ancestor.argv.clone(),
    );
    about.process.pid = ancestor.pid;
    about.process.tty.clone_from(&ancestor.tty);
    about.ancestry.clear();
    Ok(planned(proposal.action, &about, None, false))
}

/// What the investigator is told, from the decision about to be committed.
fn proposal_reply(proposal_id: &str, decision: &journal::Decision) -> ProposalReply {
    let mut reply = ProposalReply {
        proposal_id: proposal_id.to_string(),
        decision: None,
        reason: String::new(),
        pending_id: None,
        retry: false,
    };
    if let Some((id, _)) = decision.pending.first() {
        reply.decision = Some(Decision::AwaitingApproval);
        reply.reason = format!("awaiting an operator's approval (pending id {id})");
        reply.pending_id = Some(id.clone());
        return reply;
    }
    match decision.effects.first() {
        Some(Effect::Audit { record }) => {
            reply.decision = Some(record.decision);
            reply.reason = format!("{}: {}", record.decision.as_str(), record.reason);
        }
        Some(Effect::Send { planned, .. }) => {
            reply.reason = format!(
                "sent to host {} (its outcome is in the audit trail)",
                planned.finding.host
            );
        }
        Some(Effect::Notify { .. }) => reply.reason = "notification sent".to_string(),
        None => reply.reason = "nothing to do".to_string(),
    }
    reply
}

/// The command for an action on a finding, and its target as the audit names it.
fn build_action(
    kind: ActionKind,
    f: &Finding,
    ttl_secs: Option<u64>,
    block_port: bool,
) -> (Option<Action>, Option<String>) {
    let action = Action::for_finding(kind, f, ttl_secs, block_port);
    let text = match &action {
        Some(a) => a.target_text(),
        None => Some(f.process.exec_id.to_string()),
    };
    (action, text)
}

fn nats_addresses(urls: &str) -> Vec<std::net::IpAddr> {
    use std::net::ToSocketAddrs;
    let mut out = Vec::new();
    for url in bus::servers(urls) {
        let rest = url.split("://").last().unwrap_or("");
        let hostport = rest
            .rsplit('@')
            .next()
            .unwrap_or(rest)
            .trim_end_matches('/');
        let with_port = if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:4222")
        };
        if let Ok(addrs) = with_port.to_socket_addrs() {
            out.extend(addrs.map(|a| a.ip()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Ancestor, BootId};

    fn exec(pid: u32) -> ExecId {
        ExecId {
            boot: BootId(7),
            pid,
            start_ticks: 100 + u64::from(pid),
            seq: 0,
        }
    }

    #[test]
    fn a_proposal_may_name_the_finding_s_process_or_an_ancestor_and_nothing_else() {
        let mut finding = crate::silence::finding("h", Duration::from_secs(1));
        finding.process = Process::new(exec(42), "/usr/bin/python3", vec!["python3".into()]);
        finding.ancestry = vec![Ancestor {
            exec_id: exec(1),
            pid: 1,
            name: "systemd".into(),
            exe: "/usr/lib/systemd/systemd".into(),
            argv: vec!["/sbin/init".into()],
            tty: None,
        }];
        let propose = |target| {
            Proposal::new(
                "inv",
                "h",
                finding.id.clone(),
                ActionKind::Kill,
                target,
                "r",
            )
        };
        let own = proposal_target(&finding, &propose(None)).unwrap();
        assert_eq!(own.action.and_then(|a| a.target()), Some(exec(42)));
        // An ancestor: every safety check then sees that process (pid 1 here).
        let init = proposal_target(&finding, &propose(Some(exec(1)))).unwrap();
        assert_eq!(init.finding.process.pid, 1);
        assert_eq!(init.action.and_then(|a| a.target()), Some(exec(1)));
        let stranger = proposal_target(&finding, &propose(Some(exec(99)))).unwrap_err();
        assert!(stranger.contains("neither"), "{stranger}");
    }
}
