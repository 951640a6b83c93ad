//! The actuator: serves signed commands on `osprey.cmd.<host>` (request/reply).
//!
//! Every command is decoded, checked (addressed to this host, signed by a trusted key,
//! issued within the time window, nonce never seen), rate-limited, checked against the
//! protected processes, files and destinations, executed, answered with a [`CommandResult`]
//! and audited — refusals included. Blocks, kill-on-exec entries and suspensions with a TTL
//! are kept in a state file and undone on time by the actuator itself (see [`state`]).
//!
//! Long actions (memory dumps, quarantines) run on the blocking pool and answer when done:
//! a dump of a large process never holds up a kill, a TTL rollback or another command.

mod answered;
mod audit;
mod dump;
mod freeze;
mod local;
mod proc;
mod quarantine;
pub mod release;
mod safety;
mod state;

use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use ipnet::IpNet;
use protocol::{
    signing::{self, PublicKey},
    subject, Action, AuditRecord, BootId, Command, CommandResult, CommandStatus, Decision, ExecId,
    Finding, Timestamp,
};
use tokio::sync::mpsc;

pub use self::local::LocalResponse;
pub use self::quarantine::HardLinks;
pub use self::safety::{nats_endpoints, Endpoint};
use self::{
    answered::{Answered, Seen},
    audit::AuditLog,
    proc::{Member, PidFd},
    safety::{BlockLimits, Protected},
    state::{Enforced, Entry, State, StateFile},
};
use crate::{
    config::ActuatorSection,
    detect::engines::ScriptEngines,
    process::{Image, Images},
};

/// The kernel side of blocks and kill-on-exec (the eBPF source's maps).
pub trait Enforcement: Send + 'static {
    fn add_block(&mut self, net: IpNet, port: Option<u16>) -> Result<(), String>;
    fn remove_block(&mut self, net: IpNet, port: Option<u16>) -> Result<(), String>;
    /// `dev` is the userspace `st_dev`.
    fn add_kill_on_exec(&mut self, dev: u64, ino: u64) -> Result<(), String>;
    fn remove_kill_on_exec(&mut self, dev: u64, ino: u64) -> Result<(), String>;
}

pub struct ActuatorOptions {
    pub host: String,
    pub boot: BootId,
    pub section: ActuatorSection,
    /// Destinations never blocked: the NATS servers (and the configured networks, added here).
    pub protected_destinations: Vec<Endpoint>,
    /// Updated with the number of active blocks and kill-on-exec entries (for heartbeats).
    pub active_blocks: Arc<AtomicU64>,
    /// The process table's view of which image each pid runs (ExecId checks).
    pub images: Images,
    /// The heuristics' script engines: interpreters and shells are never killed on exec or
    /// quarantined unless `allow_interpreters`.
    pub script_engines: Vec<String>,
    /// The cgroup v2 mount (suspensions freeze there).
    pub cgroup_root: PathBuf,
}

/// Why an action was not done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionError {
    /// A check said no (identity, protection, a link where a file should be...).
    Refused(String),
    /// The action was allowed but failed.
    Failed(String),
}

/// What handling one command produced.
#[derive(Clone, Debug, Default)]
struct Outcome {
    status: Status,
    reason: String,
    /// Where the action's output went (quarantined file, dump directory).
    quarantine_path: Option<String>,
    dump_path: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Status {
    #[default]
    Ok,
    Refused,
    Failed,
}

impl Outcome {
    fn refused(reason: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::Refused,
            reason: reason.into(),
            ..Outcome::default()
        }
    }
    fn failed(reason: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::Failed,
            reason: reason.into(),
            ..Outcome::default()
        }
    }
    fn ok(reason: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::Ok,
            reason: reason.into(),
            ..Outcome::default()
        }
    }

    fn command_status(&self) -> CommandStatus {
        match self.status {
            Status::Ok => CommandStatus::Ok,
            Status::Refused => CommandStatus::Refused,
            Status::Failed => CommandStatus::Failed,
        }
    }
}

impl From<ActionError> for Outcome {
    fn from(e: ActionError) -> Outcome {
        match e {
            ActionError::Refused(w) => Outcome::refused(w),
            ActionError::Failed(w) => Outcome::failed(w),
        }
    }
}

/// A command handled now, or an action to finish off the command loop.
pub enum Handled {
    Done(CommandResult),
    Later(Box<LongAction>),
}

/// An action that takes long (a dump, a quarantine): run on the blocking pool, then
/// answered and audited with [`LongAction::finish`].
pub struct LongAction {
    command: Command,
    job: Box<dyn FnOnce() -> Outcome + Send>,
    audit: AuditLog,
    host: String,
    context: AuditContext,
}

impl LongAction {
    /// Runs the action (blocking) and returns the answer, audited.
    pub fn finish(self) -> CommandResult {
        let outcome = (self.job)();
        let result = result_of(&self.host, &self.command, &outcome);
        audit_command(
            &self.audit,
            &self.host,
            Some(&self.command),
            &self.context,
            &outcome,
            &result,
        );
        result
    }
}

/// What an audit record of a command says beyond the command itself.
#[derive(Clone, Debug, Default)]
struct AuditContext {
    /// The target's executable, as the process table knows it.
    exe: Option<String>,
    /// Who asked, when no key signed it (the host's own local response).
    actor: Option<&'static str>,
}

fn result_of(host: &str, command: &Command, outcome: &Outcome) -> CommandResult {
    CommandResult {
        command_id: command.id.clone(),
        host: host.to_string(),
        status: outcome.command_status(),
        reason: outcome.reason.clone(),
        output: outcome
            .quarantine_path
            .clone()
            .or_else(|| outcome.dump_path.clone()),
        time: Timestamp::now(),
    }
}

fn audit_command(
    audit: &AuditLog,
    host: &str,
    command: Option<&Command>,
    context: &AuditContext,
    outcome: &Outcome,
    result: &CommandResult,
) {
    let (decision, res) = match result.status {
        CommandStatus::Ok => (Decision::Executed, "ok".to_string()),
        CommandStatus::Refused => (Decision::Refused, "refused".to_string()),
        CommandStatus::Failed => (Decision::Failed, format!("error: {}", result.reason)),
    };
    let action = command.map_or("unknown", |c| c.action.name());
    let mut record = AuditRecord::new(
        "actuator",
        host,
        action,
        decision,
        result.reason.clone(),
        res,
    );
    record.time = result.time;
    if let Some(c) = command {
        record.target = c.action.target_text();
        record.finding_id = c.finding_id.clone();
        record.command_id = Some(c.id.clone()).filter(|id| !id.is_empty());
        record.actor.key_id = Some(c.key_id.clone()).filter(|k| !k.is_empty());
        record.pid = c.action.target().map(|t| t.pid);
    }
    record.exe = context.exe.clone();
    record.actor.name = context
        .actor
        .map(String::from)
        .or_else(|| command.and_then(|c| c.operator.clone()));
    record.quarantine_path = outcome.quarantine_path.clone();
    record.dump_path = outcome.dump_path.clone();
    audit.record(&record);
}

pub struct Actuator {
    host: String,
    boot: BootId,
    section: ActuatorSection,
    trusted: Vec<PublicKey>,
    protected: Arc<Protected>,
    state_file: StateFile,
    state: State,
    enforcement: Option<Box<dyn Enforcement>>,
    audit: AuditLog,
    /// Accepted actions per kind in the last hour.
    recent: HashMap<&'static str, VecDeque<Instant>>,
    active_blocks: Arc<AtomicU64>,
    images: Images,
    cgroup_root: PathBuf,
    /// Answers by command id: a command re-sent with the same id is answered, not re-run.
    answered: Answered,
}

impl Actuator {
    /// Loads the trusted keys and the state, re-applies active blocks and kill-on-exec
    /// entries to the kernel maps, and undoes what expired while the collector was down.
    pub fn new(
        options: ActuatorOptions,
        enforcement: Option<Box<dyn Enforcement>>,
        client: Option<async_nats::Client>,
    ) -> anyhow::Result<Actuator> {
        let section = options.section;
        let mut trusted = Vec::new();
        for key in &section.trusted_keys {
            trusted.push(
                PublicKey::from_base64(key)
                    .map_err(|e| anyhow::anyhow!("actuator.trusted_keys: {e}"))?,
            );
        }
        for file in &section.trusted_key_files {
            let text = std::fs::read_to_string(file).map_err(|e| {
                anyhow::anyhow!(
                    "actuator.trusted_key_files: cannot read {}: {e}",
                    file.display()
                )
            })?;
            trusted.push(PublicKey::from_base64(&text).map_err(|e| {
                anyhow::anyhow!("actuator.trusted_key_files: {}: {e}", file.display())
            })?);
        }
        if trusted.is_empty() {
            tracing::warn!("actuator: no trusted keys configured; every command will be refused");
        }
        let mut destinations = options.protected_destinations;
        for net in &section.protected_networks {
            let net = protocol::net::parse_net(net).ok_or_else(|| {
                anyhow::anyhow!("actuator.protected_networks: {net:?} is not an address or CIDR")
            })?;
            destinations.push(Endpoint { net, port: None });
        }
        let protected = Protected::new(
            &section.protected_executables,
            destinations,
            BlockLimits {
                min_prefix_v4: section.block_min_prefix_v4,
                min_prefix_v6: section.block_min_prefix_v6,
                resolver_files: section.resolver_files.clone(),
            },
            ScriptEngines::new(&options.script_engines),
            section.allow_interpreters,
        );
        let state_file = StateFile::new(&section.state_dir).map_err(|e| {
            anyhow::anyhow!("actuator.state_dir {}: {e}", section.state_dir.display())
        })?;
        let state = state_file
            .load()
            .map_err(|e| anyhow::anyhow!("actuator state: {e}"))?;
        let audit = AuditLog::new(section.audit_file.clone(), client);
        let answered = Answered::open(&section.state_dir)
            .map_err(|e| anyhow::anyhow!("actuator state: {e}"))?;
        let mut actuator = Actuator {
            host: options.host,
            boot: options.boot,
            section,
            trusted,
            protected: Arc::new(protected),
            state_file,
            state,
            enforcement,
            audit,
            recent: HashMap::new(),
            active_blocks: options.active_blocks,
            images: options.images,
            cgroup_root: options.cgroup_root,
            answered,
        };
        actuator
            .active_blocks
            .store(actuator.active_blocks(), Ordering::Relaxed);
        actuator.reapply();
        actuator.expire(Timestamp::now());
        Ok(actuator)
    }

    /// Puts the state's kernel entries into the maps. Pinned maps usually still hold them
    /// (enforcement went on while the collector restarted); inserting again is harmless.
    fn reapply(&mut self) {
        let entries = self.state.entries.clone();
        for entry in &entries {
            match self.apply(&entry.what) {
                Ok(()) => {
                    tracing::info!(what = %entry.what.target_text(), "actuator: enforcing {}", entry.what.action_name())
                }
                Err(e) => {
                    tracing::error!(what = %entry.what.target_text(), "actuator: cannot re-apply {}: {e}", entry.what.action_name())
                }
            }
        }
    }

    fn apply(&mut self, what: &Enforced) -> Result<(), String> {
        match what {
            Enforced::Block { cidr, port } => {
                let net: IpNet = cidr.parse().map_err(|e| format!("{cidr}: {e}"))?;
                self.kernel()?.add_block(net, *port)
            }
            Enforced::KillOnExec { dev, ino, .. } => self.kernel()?.add_kill_on_exec(*dev, *ino),
            Enforced::Suspend { .. } => Ok(()),
        }
    }

    fn kernel(&mut self) -> Result<&mut Box<dyn Enforcement>, String> {
        self.enforcement
            .as_mut()
            .ok_or_else(|| "kernel enforcement is not available on this host".to_string())
    }

    /// Undoes one enforced entry.
    fn undo(&mut self, what: &Enforced) -> Result<(), String> {
        match what {
            Enforced::Block { cidr, port } => {
                let net: IpNet = cidr.parse().map_err(|e| format!("{cidr}: {e}"))?;
                self.kernel()?.remove_block(net, *port)
            }
            Enforced::KillOnExec { dev, ino, .. } => self.kernel()?.remove_kill_on_exec(*dev, *ino),
            Enforced::Suspend { target, frozen } => {
                if let Some(frozen) = frozen {
                    freeze::thaw(frozen)?;
                }
                let fd = proc::open_checked(target, self.boot, &self.images)?;
                fd.signal(libc::SIGCONT)
                    .map_err(|e| format!("SIGCONT: {e}"))
            }
        }
    }

    fn save(&self) {
        self.active_blocks
            .store(self.active_blocks(), Ordering::Relaxed);
        if let Err(e) = self.state_file.save(&self.state) {
            tracing::error!("actuator: cannot save its state: {e}");
        }
    }

    /// Rolls back every entry whose time is up, auditing each.
    pub fn expire(&mut self, now: Timestamp) {
        let (due, keep): (Vec<Entry>, Vec<Entry>) = self
            .state
            .entries
            .drain(..)
            .partition(|e| e.expires_at.is_some_and(|t| t <= now));
        self.state.entries = keep;
        if due.is_empty() {
            return;
        }
        for entry in due {
            let result = self.undo(&entry.what);
            let mut record = AuditRecord::new(
                "actuator",
                self.host.clone(),
                entry.what.action_name(),
                Decision::RolledBack,
                "time to live expired",
                match &result {
                    Ok(()) => "ok".to_string(),
                    Err(e) => e.clone(),
                },
            );
            record.finding_id = entry.finding_id.clone();
            record.target = Some(entry.what.target_text());
            record.command_id = Some(entry.command_id.clone());
            self.audit.record(&record);
        }
        self.save();
    }

    /// Active kernel entries (for heartbeats).
    pub fn active_blocks(&self) -> u64 {
        self.state
            .entries
            .iter()
            .filter(|e| !matches!(e.what, Enforced::Suspend { .. }))
            .count() as u64
    }

    /// Handles one request payload: verifies and executes it; a short action is answered
    /// (and audited) at once, a long one is handed back to run off the command loop.
    pub fn handle(&mut self, payload: &[u8]) -> Handled {
        let command: Command = match protocol::decode(payload) {
            Ok(c) => c,
            Err(e) => {
                let outcome = Outcome::refused(format!("malformed command: {e}"));
                let result = CommandResult {
                    command_id: String::new(),
                    host: self.host.clone(),
                    status: CommandStatus::Refused,
                    reason: outcome.reason.clone(),
                    output: None,
                    time: Timestamp::now(),
                };
                let context = AuditContext::default();
                audit_command(&self.audit, &self.host, None, &context, &outcome, &result);
                return Handled::Done(result);
            }
        };
        let step = match self.answered.seen(&command, &self.host, &self.trusted) {
            Some(Seen::Answered(first)) => {
                tracing::info!(command_id = %command.id, "actuator: command sent again; answering as the first time, not running it again");
                return Handled::Done(first);
            }
            Some(Seen::Conflict(reason)) => Step::Now(Outcome::refused(reason)),
            None => match self.verify(&command) {
                Ok(()) => self.perform(&command),
                Err(refusal) => Step::Now(refusal),
            },
        };
        self.conclude(command, step, None)
    }

    /// Answers and audits a command handled now, or hands a long one back.
    fn conclude(&self, command: Command, step: Step, actor: Option<&'static str>) -> Handled {
        let context = AuditContext {
            exe: command
                .action
                .target()
                .and_then(|t| {
                    self.images
                        .get(t.pid)
                        .filter(|i| i.exec_id.same_process(&t))
                })
                .map(|i| i.exe),
            actor,
        };
        match step {
            Step::Now(outcome) => {
                let result = result_of(&self.host, &command, &outcome);
                audit_command(
                    &self.audit,
                    &self.host,
                    Some(&command),
                    &context,
                    &outcome,
                    &result,
                );
                Handled::Done(result)
            }
            Step::Later(job) => Handled::Later(Box::new(LongAction {
                command,
                job,
                audit: self.audit.clone(),
                host: self.host.clone(),
                context,
            })),
        }
    }

    /// Refuses a command not addressed to this host, not signed by a trusted key, outside
    /// the time window, or replayed.
    fn verify(&mut self, command: &Command) -> Result<(), Outcome> {
        if subject::host_token(&command.host) != subject::host_token(&self.host) {
            return Err(Outcome::refused(format!(
                "addressed to host {:?}, this is {:?}",
                command.host, self.host
            )));
        }
        if let Err(e) = signing::verify(command, &self.trusted) {
            return Err(Outcome::refused(format!("signature check failed: {e}")));
        }
        let now = Timestamp::now();
        let window_ns = self
            .section
            .command_window_secs
            .saturating_mul(1_000_000_000);
        let distance = now.distance_nanos(command.issued_at);
        if distance > window_ns {
            return Err(Outcome::refused(format!(
                "stale command: issued at {}, {}s {}, outside the {}s window",
                command.issued_at,
                distance / 1_000_000_000,
                if command.issued_at > now {
                    "ahead"
                } else {
                    "ago"
                },
                self.section.command_window_secs
            )));
        }
        self.state
            .nonces
            .retain(|(_, t)| now.distance_nanos(*t) <= window_ns.saturating_mul(2));
        if self.state.nonces.iter().any(|(n, _)| *n == command.nonce) {
            return Err(Outcome::refused(format!(
                "replayed command: nonce {} was already used",
                command.nonce
            )));
        }
        self.state
            .nonces
            .push((command.nonce.clone(), command.issued_at));
        self.save();
        Ok(())
    }

    /// Rate-limits, checks and runs a verified command (or the host's own local response).
    fn perform(&mut self, command: &Command) -> Step {
        let name = command.action.name();
        let limit = self.section.max_actions_per_hour;
        let recent = self.recent.entry(name).or_default();
        while recent
            .front()
            .is_some_and(|t| t.elapsed() > Duration::from_secs(3600))
        {
            recent.pop_front();
        }
        if limit > 0 && recent.len() >= limit as usize {
            return Step::Now(Outcome::refused(format!(
                "rate limit: at most {limit} {name} actions per hour on this host"
            )));
        }
        let step = self.execute(command);
        // A long action counts when accepted: its outcome comes later, audited, and a re-sent
        // command is answered that it was accepted.
        let accepted = match &step {
            Step::Now(outcome) => {
                let result = result_of(&self.host, command, outcome);
                self.answered.remember(
                    command,
                    result.status,
                    &result.reason,
                    result.output.as_deref(),
                );
                outcome.status == Status::Ok
            }
            Step::Later(_) => {
                self.answered.remember(
                    command,
                    CommandStatus::Ok,
                    "accepted: a long action; its outcome is in the audit trail",
                    None,
                );
                true
            }
        };
        if accepted {
            self.recent
                .entry(name)
                .or_default()
                .push_back(Instant::now());
        }
        step
    }

    fn remember(&mut self, what: Enforced, ttl_secs: Option<u64>, command: &Command) {
        self.state.entries.retain(|e| !e.what.same_as(&what));
        self.state.entries.push(Entry {
            what,
            // A TTL beyond the clock's range is "until undone", never one that wraps round
            // into the past.
            expires_at: ttl_secs.map(|s| {
                let nanos = i64::try_from(s)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1_000_000_000);
                Timestamp::from_unix_nanos(Timestamp::now().unix_nanos().saturating_add(nanos))
            }),
            command_id: command.id.clone(),
            finding_id: command.finding_id.clone(),
        });
        self.save();
    }

    /// Removes an entry from the state and returns it as it was stored.
    fn forget(&mut self, what: &Enforced) -> Option<Enforced> {
        let found = self
            .state
            .entries
            .iter()
            .position(|e| e.what.same_as(what))
            .map(|i| self.state.entries.remove(i).what);
        self.save();
        found
    }

    /// A live, identity-checked, unprotected target and a pidfd on it.
    fn checked_target(&self, target: &ExecId) -> Result<PidFd, ActionError> {
        let fd =
            proc::open_checked(target, self.boot, &self.images).map_err(ActionError::Refused)?;
        self.protected
            .check_process(target.pid)
            .map_err(ActionError::Refused)?;
        Ok(fd)
    }

    fn signal_target(&self, target: &ExecId, sig: i32) -> Outcome {
        let fd = match self.checked_target(target) {
            Ok(fd) => fd,
            Err(e) => return e.into(),
        };
        match fd.signal(sig) {
            Ok(()) => Outcome::ok(format!("signal {sig} sent to {target} through a pidfd")),
            Err(e) => Outcome::failed(format!("cannot signal {target}: {e}")),
        }
    }

    fn execute(&mut self, command: &Command) -> Step {
        Step::Now(match &command.action {
            Action::Kill {
                target,
                tree: false,
            } => {
                let outcome = self.signal_target(target, libc::SIGKILL);
                if outcome.status == Status::Ok {
                    self.release_suspension(target);
                }
                outcome
            }
            Action::Kill { target, tree: true } => self.kill_tree(target),
            Action::Suspend { target, ttl_secs } => self.suspend(target, *ttl_secs, command),
            Action::Resume { target } => self.resume(target),
            Action::Dump { target } => {
                if let Err(e) = self.checked_target(target) {
                    return Step::Now(e.into());
                }
                let (target, dir, max) = (
                    *target,
                    self.section.dump_dir.clone(),
                    self.section.dump_max_bytes,
                );
                let deadline = Instant::now() + Duration::from_secs(self.section.dump_timeout_secs);
                return Step::Later(Box::new(move || {
                    match dump::dump(&target, &dir, max, deadline) {
                        Ok(report) => Outcome {
                            dump_path: Some(report.dir.display().to_string()),
                            ..Outcome::ok(report.summary())
                        },
                        Err(e) => Outcome::failed(e),
                    }
                }));
            }
            Action::Quarantine { target, path } => {
                match self.quarantine_job(*target, path, command) {
                    Ok(job) => return Step::Later(job),
                    Err(e) => e.into(),
                }
            }
            Action::Release { id } => {
                let (dir, id) = (self.section.quarantine_dir.clone(), id.clone());
                return Step::Later(Box::new(move || match release::release(&dir, &id) {
                    Ok(rec) => Outcome::ok(format!(
                        "{} released from quarantine {id} (sha256 {}, mode {:o})",
                        rec.original_path, rec.sha256, rec.mode
                    )),
                    Err(e) => e.into(),
                }));
            }
            Action::Block {
                cidr,
                port,
                ttl_secs,
            } => {
                let Some(net) = protocol::net::parse_net(cidr) else {
                    return Step::Now(Outcome::refused(format!(
                        "{cidr:?} is not an IP address or CIDR"
                    )));
                };
                if let Err(e) = self.protected.check_destination(&net, *port) {
                    return Step::Now(Outcome::refused(e));
                }
                let what = Enforced::Block {
                    cidr: net.to_string(),
                    port: *port,
                };
                match self.apply(&what) {
                    Ok(()) => {
                        self.remember(what, *ttl_secs, command);
                        Outcome::ok(format!(
                            "connects to {net}{} are refused{}",
                            port.map(|p| format!(" port {p}")).unwrap_or_default(),
                            ttl_secs.map(|s| format!(" for {s}s")).unwrap_or_default()
                        ))
                    }
                    Err(e) => Outcome::failed(e),
                }
            }
            Action::Unblock { cidr, port } => {
                let Some(net) = protocol::net::parse_net(cidr) else {
                    return Step::Now(Outcome::refused(format!(
                        "{cidr:?} is not an IP address or CIDR"
                    )));
                };
                let what = Enforced::Block {
                    cidr: net.to_string(),
                    port: *port,
                };
                let result = self.undo(&what);
                self.forget(&what);
                match result {
                    Ok(()) => Outcome::ok(format!("{net} unblocked")),
                    Err(e) => Outcome::failed(e),
                }
            }
            Action::KillOnExec {
                path,
                target,
                ttl_secs,
            } => match self.kill_on_exec_file(path.as_deref(), target.as_ref()) {
                Ok((path, dev, ino)) => {
                    let what = Enforced::KillOnExec {
                        path: path.clone(),
                        dev,
                        ino,
                    };
                    match self.apply(&what) {
                        Ok(()) => {
                            self.remember(what, *ttl_secs, command);
                            Outcome::ok(format!(
                                "{path} (device {dev}, inode {ino}) is killed on exec"
                            ))
                        }
                        Err(e) => Outcome::failed(e),
                    }
                }
                Err(e) => e.into(),
            },
        })
    }

    /// Thaws and forgets a suspension of `target` (after it was killed).
    fn release_suspension(&mut self, target: &ExecId) {
        let key = Enforced::Suspend {
            target: *target,
            frozen: None,
        };
        if let Some(Enforced::Suspend {
            frozen: Some(frozen),
            ..
        }) = self.forget(&key)
        {
            if let Err(e) = freeze::thaw(&frozen) {
                tracing::warn!("actuator: cannot remove the freezer cgroup of {target}: {e}");
            }
        }
    }

    /// Stops the process (SIGSTOP, so /proc shows it stopped) and freezes it in a cgroup of
    /// its own, which its user cannot undo.
    fn suspend(&mut self, target: &ExecId, ttl_secs: Option<u64>, command: &Command) -> Outcome {
        let fd = match self.checked_target(target) {
            Ok(fd) => fd,
            Err(e) => return e.into(),
        };
        if let Err(e) = fd.signal(libc::SIGSTOP) {
            return Outcome::failed(format!("cannot stop {target}: {e}"));
        }
        let (frozen, how) = match freeze::freeze(target.pid, target.start_ticks, &self.cgroup_root) {
            Ok(frozen) => {
                let how = format!("frozen in {}", frozen.cgroup.display());
                (Some(frozen), how)
            }
            Err(e) => (
                None,
                format!("stopped with SIGSTOP only (its user can resume it): the cgroup freezer failed: {e}"),
            ),
        };
        self.remember(
            Enforced::Suspend {
                target: *target,
                frozen,
            },
            ttl_secs,
            command,
        );
        Outcome::ok(format!(
            "{target} suspended, {how}{}",
            ttl_secs.map(|s| format!(" for {s}s")).unwrap_or_default()
        ))
    }

    fn resume(&mut self, target: &ExecId) -> Outcome {
        let fd = match self.checked_target(target) {
            Ok(fd) => fd,
            Err(e) => return e.into(),
        };
        let key = Enforced::Suspend {
            target: *target,
            frozen: None,
        };
        if let Some(Enforced::Suspend {
            frozen: Some(frozen),
            ..
        }) = self.forget(&key)
        {
            if let Err(e) = freeze::thaw(&frozen) {
                return Outcome::failed(format!("cannot thaw {target}: {e}"));
            }
        }
        match fd.signal(libc::SIGCONT) {
            Ok(()) => Outcome::ok(format!("{target} resumed")),
            Err(e) => Outcome::failed(format!("cannot resume {target}: {e}")),
        }
    }

    /// Kills `target` and every descendant. The tree is stopped first, level by level, until
    /// no new member appears (a stopped process cannot fork), then every member is killed
    /// through a pidfd opened while its identity held. Protected members are spared.
    fn kill_tree(&mut self, target: &ExecId) -> Outcome {
        let root = match self.checked_target(target) {
            Ok(fd) => fd,
            Err(e) => return e.into(),
        };
        let _ = root.signal(libc::SIGSTOP);
        let mut members: Vec<(Member, PidFd)> = Vec::new();
        let mut spared: Vec<String> = Vec::new();
        let mut known: Vec<u32> = vec![target.pid];
        for _round in 0..64 {
            // Children by /proc parentage, and by the table's fork parentage (which still
            // knows children reparented to init).
            let mut found: Vec<Member> = proc::children_of(&known);
            for image in self.images.descendants(target) {
                found.push(Member {
                    pid: image.exec_id.pid,
                    start_ticks: image.exec_id.start_ticks,
                });
            }
            found.retain(|m| !known.contains(&m.pid));
            found.sort_by_key(|m| m.pid);
            found.dedup();
            if found.is_empty() {
                break;
            }
            for member in found {
                known.push(member.pid);
                // Gone already (or a zombie): nothing to stop, but its children are searched.
                let Some(fd) = proc::open_if_same(member.pid, member.start_ticks) else {
                    continue;
                };
                if proc::exe_file(member.pid).is_err() {
                    continue;
                }
                if let Err(why) = self.protected.check_process(member.pid) {
                    spared.push(why);
                    continue;
                }
                let _ = fd.signal(libc::SIGSTOP);
                members.push((member, fd));
            }
        }
        let mut killed = vec![target.pid];
        let _ = root.signal(libc::SIGKILL);
        for (member, fd) in &members {
            if fd.signal(libc::SIGKILL).is_ok() {
                killed.push(member.pid);
            }
        }
        self.release_suspension(target);
        let mut reason = format!(
            "killed {} process(es) of the tree of {target}: pids {}",
            killed.len(),
            killed
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
        if !spared.is_empty() {
            reason.push_str(&format!("; spared {}", spared.join("; ")));
        }
        Outcome::ok(reason)
    }

    /// The file a kill-on-exec names: the target's executable (by the identity the kernel
    /// reported, even once the process is gone), or a path on the host resolved without
    /// following any symbolic link.
    fn kill_on_exec_file(
        &self,
        path: Option<&str>,
        target: Option<&ExecId>,
    ) -> Result<(String, u64, u64), ActionError> {
        let (shown, dev, ino) = match (target, path) {
            (Some(target), _) => {
                let image = self.image_of(target)?;
                let file = image.file.ok_or_else(|| {
                    ActionError::Refused(format!(
                        "the kernel reported no executable identity for {target}"
                    ))
                })?;
                (image.exe, file.dev, file.ino)
            }
            (None, Some(path)) => {
                let meta = host_file(path)?;
                use std::os::unix::fs::MetadataExt;
                (path.to_string(), meta.dev(), meta.ino())
            }
            (None, None) => {
                return Err(ActionError::Refused(
                    "kill_on_exec needs a target or a path".into(),
                ))
            }
        };
        self.protected
            .check_file(Path::new(&shown), dev, ino)
            .map_err(ActionError::Refused)?;
        Ok((shown, dev, ino))
    }

    /// The table's image for `target`, alive or recently exited, if it is that image.
    fn image_of(&self, target: &ExecId) -> Result<Image, ActionError> {
        match self.images.get(target.pid) {
            Some(image) if image.exec_id == *target && target.boot == self.boot => Ok(image),
            Some(image) => Err(ActionError::Refused(format!(
                "stale ExecId {target}: pid {} is now {}",
                target.pid, image.exec_id
            ))),
            None => Err(ActionError::Refused(format!(
                "unknown ExecId {target}: pid {} is not in this host's process table",
                target.pid
            ))),
        }
    }

    /// Prepares a quarantine: everything that can be checked now is, the file work runs
    /// later. A live target's executable is found in its own mount namespace; a target that
    /// exited (killed first) by the path and identity the kernel reported at exec.
    fn quarantine_job(
        &self,
        target: Option<ExecId>,
        path: &Option<String>,
        command: &Command,
    ) -> Result<Box<dyn FnOnce() -> Outcome + Send>, ActionError> {
        let (root, shown, expect, foreign) = match (target, path) {
            (Some(t), _) => {
                let image = self.image_of(&t)?;
                if image.exited {
                    (PathBuf::from("/"), image.exe, image.file, false)
                } else {
                    proc::check_identity(&t, self.boot, &self.images)
                        .map_err(ActionError::Refused)?;
                    self.protected
                        .check_process(t.pid)
                        .map_err(ActionError::Refused)?;
                    let (path, _, _) = proc::exe_file(t.pid).map_err(|e| {
                        ActionError::Failed(format!("cannot find the executable of {t}: {e}"))
                    })?;
                    let path = path.to_string_lossy().into_owned();
                    if path.ends_with(" (deleted)") {
                        return Err(ActionError::Refused(format!(
                            "the executable of {t} is no longer at its path ({path})"
                        )));
                    }
                    let root = PathBuf::from(format!("/proc/{}/root", t.pid));
                    (root, path, image.file, in_other_namespace(t.pid))
                }
            }
            (None, Some(p)) => (PathBuf::from("/"), p.clone(), None, false),
            (None, None) => {
                return Err(ActionError::Refused(
                    "quarantine needs a target or a path".into(),
                ))
            }
        };
        let protected = self.protected.clone();
        let dir = self.section.quarantine_dir.clone();
        let hard_links = self.section.quarantine_hard_links;
        let finding = command.finding_id.clone();
        Ok(Box::new(move || {
            let target = quarantine::Target {
                root,
                path: &shown,
                expect,
                foreign_namespace: foreign,
            };
            let check =
                |path: &Path, id: crate::source::FileId| protected.check_file(path, id.dev, id.ino);
            match quarantine::quarantine(&target, &dir, finding, hard_links, check) {
                Ok(rec) => Outcome {
                    quarantine_path: Some(dir.join(&rec.id).display().to_string()),
                    ..Outcome::ok(format!(
                        "{}{} quarantined as {} (sha256 {})",
                        rec.original_path,
                        if rec.foreign_namespace {
                            " (in the process's mount namespace)"
                        } else {
                            ""
                        },
                        rec.id,
                        rec.sha256
                    ))
                },
                Err(e) => e.into(),
            }
        }))
    }

    /// Serves `osprey.cmd.<host>` (with NATS) and local response plans (with
    /// `response.mode: local`) until `shutdown` resolves, expiring TTLs every half second.
    /// Long actions run on the blocking pool and answer (or go on with their plan) when done.
    pub async fn run(
        mut self,
        client: Option<async_nats::Client>,
        local: Option<(mpsc::UnboundedReceiver<Finding>, LocalResponse)>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut commands = match &client {
            Some(client) => {
                let subject = subject::command(&self.host);
                match client.subscribe(subject.clone()).await {
                    Ok(sub) => {
                        tracing::info!(
                            subject,
                            trusted_keys = self.trusted.len(),
                            "actuator serving commands"
                        );
                        Some(sub)
                    }
                    Err(e) => {
                        tracing::error!("actuator: cannot subscribe to {subject}: {e}");
                        None
                    }
                }
            }
            None => None,
        };
        let (mut findings, settings) = match local {
            Some((rx, settings)) => {
                tracing::info!(
                    dry_run = settings.dry_run,
                    "local response: this host acts on its findings"
                );
                (Some(rx), settings)
            }
            None => (None, LocalResponse::default()),
        };
        // Plans whose long step finished, to go on with.
        let (resume, mut resumed) = mpsc::unbounded_channel::<local::Plan>();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut shutdown = shutdown;
        loop {
            tokio::select! {
                Some(msg) = next_command(&mut commands) => {
                    let reply = msg.reply.clone();
                    match self.handle(&msg.payload) {
                        Handled::Done(result) => send_reply(client.as_ref(), reply, &result).await,
                        Handled::Later(action) => {
                            let client = client.clone();
                            tokio::spawn(async move {
                                match tokio::task::spawn_blocking(move || action.finish()).await {
                                    Ok(result) => send_reply(client.as_ref(), reply, &result).await,
                                    Err(e) => tracing::error!("actuator: a long action failed: {e}"),
                                }
                            });
                        }
                    }
                }
                Some(finding) = next_finding(&mut findings) => {
                    self.run_plan(local::Plan::new(finding), &settings, &resume);
                }
                Some(plan) = resumed.recv() => self.run_plan(plan, &settings, &resume),
                _ = tick.tick() => self.expire(Timestamp::now()),
                _ = shutdown.changed() => break,
            }
        }
    }

    /// Advances a local plan; its long step runs on the blocking pool and the plan comes
    /// back on `resume` when it is done.
    fn run_plan(
        &mut self,
        plan: local::Plan,
        settings: &LocalResponse,
        resume: &mpsc::UnboundedSender<local::Plan>,
    ) {
        if let Some((action, rest)) = self.advance(plan, settings) {
            let resume = resume.clone();
            tokio::spawn(async move {
                if let Err(e) = tokio::task::spawn_blocking(move || action.finish()).await {
                    tracing::error!("actuator: a long action failed: {e}");
                }
                let _ = resume.send(rest);
            });
        }
    }
}

async fn next_command(sub: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match sub {
        Some(sub) => sub.next().await,
        None => std::future::pending().await,
    }
}

async fn next_finding(rx: &mut Option<mpsc::UnboundedReceiver<Finding>>) -> Option<Finding> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// How a command goes on after its checks.
enum Step {
    Now(Outcome),
    Later(Box<dyn FnOnce() -> Outcome + Send>),
}

async fn send_reply(
    client: Option<&async_nats::Client>,
    reply: Option<async_nats::Subject>,
    result: &CommandResult,
) {
    let (Some(client), Some(reply)) = (client, reply) else {
        return;
    };
    match protocol::encode(result) {
        Ok(bytes) => {
            if let Err(e) = client.publish(reply, bytes.into()).await {
                tracing::warn!("actuator: cannot reply: {e}");
            }
        }
        Err(e) => tracing::error!("actuator: cannot encode a reply: {e}"),
    }
}

/// Whether `pid` lives in another mount namespace than the collector (a container).
fn in_other_namespace(pid: u32) -> bool {
    let ns = |p: &str| std::fs::read_link(p).ok();
    ns(&format!("/proc/{pid}/ns/mnt")) != ns("/proc/self/ns/mnt")
}

/// A file on the host named by an operator: a regular file, reached without following any
/// symbolic link.
fn host_file(path: &str) -> Result<std::fs::Metadata, ActionError> {
    use std::os::unix::fs::OpenOptionsExt;
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(ActionError::Refused(format!(
            "{path} is not an absolute path"
        )));
    }
    // Each directory on the way must be a directory, not a link to one.
    let mut at = PathBuf::from("/");
    for part in p.parent().into_iter().flat_map(|d| d.components().skip(1)) {
        at.push(part);
        let meta = std::fs::symlink_metadata(&at)
            .map_err(|e| ActionError::Refused(format!("{}: {e}", at.display())))?;
        if !meta.is_dir() {
            return Err(ActionError::Refused(format!(
                "{} on the way to {path} is not a directory (a symbolic link is not followed)",
                at.display()
            )));
        }
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(p)
        .map_err(|e| ActionError::Refused(format!("{path}: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| ActionError::Failed(format!("cannot stat {path}: {e}")))?;
    if !meta.is_file() {
        return Err(ActionError::Refused(format!(
            "{path} is not a regular file (a symbolic link is not followed)"
        )));
    }
    Ok(meta)
}
