//! The responder's decisions: finding → policy → safety controls → signed command, audited.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use protocol::{
    signing::{self, KeyPair, PublicKey},
    subject, Action, ActionKind, Approval, AuditRecord, Command, CommandResult, CommandStatus,
    Decision, Finding, Timestamp, Verdict,
};

use crate::{
    audit::AuditLog, config::ResponderConfig, notify, policy::ResponsePolicy, processed::Processed,
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

/// One action the policy chose for one finding.
#[derive(Clone, Debug)]
struct Planned {
    finding: Finding,
    kind: ActionKind,
    action: Option<Action>,
    target: Option<String>,
}

struct Pending {
    planned: Planned,
    deadline: Instant,
}

pub struct Responder {
    config: ResponderConfig,
    key: KeyPair,
    operators: Vec<PublicKey>,
    policy: ResponsePolicy,
    client: async_nats::Client,
    audit: AuditLog,
    processed: Processed,
    /// (host, action) → times of actions sent in the last hour.
    recent: HashMap<(String, &'static str), VecDeque<Instant>>,
    pending: HashMap<String, Pending>,
    approval_nonces: VecDeque<String>,
    protected_networks: Vec<IpNet>,
    /// Host token → (host name, last heartbeat, already reported silent).
    heartbeats: HashMap<String, (String, Instant, bool)>,
}

fn action_name(kind: ActionKind) -> &'static str {
    kind.as_str()
}

impl Responder {
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
        let processed = Processed::open(&config.state_dir)
            .map_err(|e| anyhow::anyhow!("state_dir {}: {e}", config.state_dir.display()))?;
        let audit = AuditLog::new(config.audit_file.clone(), client.clone());
        Ok(Responder {
            config,
            key,
            operators,
            policy,
            client,
            audit,
            processed,
            recent: HashMap::new(),
            pending: HashMap::new(),
            approval_nonces: VecDeque::new(),
            protected_networks,
            heartbeats: HashMap::new(),
        })
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
        record
    }

    /// Handles one finding from the stream. `subject_host` is the host token of the subject
    /// it arrived on. Returns once every decision is audited.
    pub async fn handle_finding(&mut self, subject_host: &str, finding: Finding) {
        if self.processed.contains(&finding.id.0) {
            tracing::debug!(id = %finding.id, "finding already handled; no second action");
            return;
        }
        let Some(plan) = self.policy.plan(&finding) else {
            let _ = self.processed.insert(&finding.id.0);
            return;
        };
        // Recorded before acting: a redelivery after a crash never acts twice.
        if let Err(e) = self.processed.insert(&finding.id.0) {
            tracing::error!(
                "cannot record finding {} as handled: {e}; not acting on it",
                finding.id
            );
            return;
        }
        for kind in plan.actions.clone() {
            let (action, target) = build_action(kind, &finding, plan.ttl_secs, plan.block_port);
            let planned = Planned {
                finding: finding.clone(),
                kind,
                action,
                target,
            };
            if subject::host_token(&finding.host) != subject_host {
                let r = self.record(
                    &planned,
                    Decision::Refused,
                    format!(
                        "finding for host {:?} arrived on the subject of host {subject_host:?}",
                        finding.host
                    ),
                    "refused",
                    None,
                );
                self.audit.record(r).await;
                continue;
            }
            if let Err(why) = self.safety(&planned) {
                let r = self.record(&planned, Decision::Refused, why, "refused", None);
                self.audit.record(r).await;
                continue;
            }
            if self.config.dry_run || plan.dry_run {
                let r = self.record(
                    &planned,
                    Decision::DryRun,
                    format!("policy rule {}: dry run, nothing sent", plan.rule),
                    "not sent",
                    None,
                );
                self.audit.record(r).await;
                continue;
            }
            if let Err(why) = self.rate_limit(&planned) {
                let r = self.record(&planned, Decision::RateLimited, why, "not sent", None);
                self.audit.record(r).await;
                continue;
            }
            if self.policy.needs_approval(kind) {
                let id = signing::random_id();
                let mut r = self.record(
                    &planned,
                    Decision::AwaitingApproval,
                    format!(
                        "policy rule {}: {} needs an operator's approval; pending id {id}",
                        plan.rule,
                        action_name(kind)
                    ),
                    id.clone(),
                    None,
                );
                r.pending_id = Some(id.clone());
                self.audit.record(r).await;
                self.pending.insert(
                    id,
                    Pending {
                        planned,
                        deadline: Instant::now()
                            + Duration::from_secs(self.config.approval_timeout_secs),
                    },
                );
                continue;
            }
            self.count(&planned);
            self.execute(&planned, format!("policy rule {}", plan.rule))
                .await;
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
            let net: IpNet = cidr.parse().map_err(|e| format!("{cidr}: {e}"))?;
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

    fn rate_limit(&mut self, p: &Planned) -> Result<(), String> {
        let name = action_name(p.kind);
        let limit = self.config.rate_limit(name);
        let recent = self
            .recent
            .entry((p.finding.host.clone(), name))
            .or_default();
        while recent
            .front()
            .is_some_and(|t| t.elapsed() > Duration::from_secs(3600))
        {
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
            .entry((p.finding.host.clone(), action_name(p.kind)))
            .or_default()
            .push_back(Instant::now());
    }

    async fn execute(&mut self, p: &Planned, why: String) {
        match p.kind {
            ActionKind::Log => {
                let r = self.record(p, Decision::Executed, format!("{why}: logged"), "ok", None);
                self.audit.record(r).await;
            }
            ActionKind::Notify => {
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
            _ => {
                let Some(action) = p.action.clone() else {
                    return;
                };
                let mut command = Command {
                    id: signing::random_id(),
                    nonce: signing::random_id(),
                    issued_at: Timestamp::now(),
                    host: p.finding.host.clone(),
                    action,
                    finding_id: Some(p.finding.id.clone()),
                    operator: None,
                    key_id: String::new(),
                    signature: None,
                };
                self.key.sign(&mut command);
                let (decision, reason, result) = match self.send(&command).await {
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
                        CommandStatus::Failed => {
                            (Decision::Failed, why, format!("error: {}", r.reason))
                        }
                    },
                    Err(e) => (Decision::Failed, why, format!("error: {e}")),
                };
                let r = self.record(p, decision, reason, result, Some(command.id.clone()));
                self.audit.record(r).await;
            }
        }
    }

    async fn send(&self, command: &Command) -> Result<CommandResult, String> {
        let payload = protocol::encode(command).map_err(|e| e.to_string())?;
        let request = self
            .client
            .request(subject::command(&command.host), payload.into());
        let reply = tokio::time::timeout(
            Duration::from_secs(self.config.command_timeout_secs),
            request,
        )
        .await
        .map_err(|_| {
            format!(
                "host {} did not answer within {}s",
                command.host, self.config.command_timeout_secs
            )
        })?
        .map_err(|e| format!("request to host {} failed: {e}", command.host))?;
        protocol::decode(&reply.payload).map_err(|e| e.to_string())
    }

    /// An operator's approval or denial of a pending action.
    pub async fn handle_approval(&mut self, payload: &[u8]) {
        let approval: Approval = match protocol::decode(payload) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("ignoring a malformed approval: {e}");
                return;
            }
        };
        if let Err(e) = signing::verify(&approval, &self.operators) {
            tracing::warn!(pending = %approval.pending_id, "ignoring an approval: {e}");
            return;
        }
        let age = Timestamp::now().unix_nanos() - approval.issued_at.unix_nanos();
        if age.abs() > 300 * 1_000_000_000 || self.approval_nonces.contains(&approval.nonce) {
            tracing::warn!(pending = %approval.pending_id, "ignoring a stale or replayed approval");
            return;
        }
        self.approval_nonces.push_back(approval.nonce.clone());
        if self.approval_nonces.len() > 10_000 {
            self.approval_nonces.pop_front();
        }
        let Some(pending) = self.pending.remove(&approval.pending_id) else {
            tracing::warn!(pending = %approval.pending_id, "no such pending action (handled, expired or unknown)");
            return;
        };
        let p = pending.planned;
        match approval.verdict {
            Verdict::Deny => {
                let mut r = self.record(
                    &p,
                    Decision::Denied,
                    format!("denied by operator {}", approval.key_id),
                    "not sent",
                    None,
                );
                r.pending_id = Some(approval.pending_id.clone());
                r.actor.key_id = Some(approval.key_id.clone());
                r.actor.name = approval.operator.clone();
                self.audit.record(r).await;
            }
            Verdict::Approve => {
                let mut r = self.record(
                    &p,
                    Decision::Approved,
                    format!("approved by operator {}", approval.key_id),
                    "ok",
                    None,
                );
                r.pending_id = Some(approval.pending_id.clone());
                r.actor.key_id = Some(approval.key_id.clone());
                r.actor.name = approval.operator.clone();
                self.audit.record(r).await;
                self.count(&p);
                self.execute(&p, format!("approved by operator {}", approval.key_id))
                    .await;
            }
        }
    }

    /// Drops pending actions whose approval did not come in time; raises host-silence
    /// findings.
    pub async fn tick(&mut self, js: &async_nats::jetstream::Context) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(p) = self.pending.remove(&id) {
                let mut r = self.record(
                    &p.planned,
                    Decision::Denied,
                    format!(
                        "no approval within {}s; dropped",
                        self.config.approval_timeout_secs
                    ),
                    "not sent",
                    None,
                );
                r.pending_id = Some(id.clone());
                self.audit.record(r).await;
            }
        }
        if self.config.heartbeat_timeout_secs == 0 {
            return;
        }
        let timeout = Duration::from_secs(self.config.heartbeat_timeout_secs);
        let mut silent = Vec::new();
        for (host, last, reported) in self.heartbeats.values_mut() {
            if !*reported && last.elapsed() > timeout {
                *reported = true;
                silent.push((host.clone(), last.elapsed()));
            }
        }
        for (host, quiet) in silent {
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

    pub fn heartbeat(&mut self, subject_host: &str, host: String) {
        self.heartbeats
            .insert(subject_host.to_string(), (host, Instant::now(), false));
    }

    /// Dry-run: decide and audit, send nothing (switched by operators: `control.rs`).
    pub fn dry_run(&self) -> bool {
        self.config.dry_run
    }

    pub fn set_dry_run(&mut self, on: bool) {
        self.config.dry_run = on;
    }
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
    for url in urls.split(',') {
        let rest = url.trim().split("://").last().unwrap_or("");
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
