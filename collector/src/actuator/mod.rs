//! The actuator: serves signed commands on `osprey.cmd.<host>` (request/reply).
//!
//! Every command is decoded, checked (addressed to this host, signed by a trusted key,
//! issued within the time window, nonce never seen), rate-limited, checked against the
//! protected processes and destinations, executed, answered with a [`CommandResult`] and
//! audited — refusals included. Blocks, kill-on-exec entries and suspensions with a TTL are
//! kept in a state file and undone on time by the actuator itself (see [`state`]).

mod answered;
mod audit;
mod files;
mod proc;
mod safety;
mod state;

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
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
    subject, Action, AuditRecord, BootId, Command, CommandResult, CommandStatus, Decision,
    Timestamp,
};

pub use self::safety::{nats_endpoints, Endpoint};
use self::{
    answered::{Answered, Seen},
    audit::AuditLog,
    safety::Protected,
    state::{Enforced, Entry, State, StateFile},
};
use crate::{config::ActuatorSection, process::CurrentImages};

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
    pub images: CurrentImages,
}

/// What handling one command produced.
struct Outcome {
    status: CommandStatus,
    reason: String,
    output: Option<String>,
}

impl Outcome {
    fn refused(reason: impl Into<String>) -> Outcome {
        Outcome {
            status: CommandStatus::Refused,
            reason: reason.into(),
            output: None,
        }
    }
    fn failed(reason: impl Into<String>) -> Outcome {
        Outcome {
            status: CommandStatus::Failed,
            reason: reason.into(),
            output: None,
        }
    }
    fn ok(reason: impl Into<String>) -> Outcome {
        Outcome {
            status: CommandStatus::Ok,
            reason: reason.into(),
            output: None,
        }
    }
}

pub struct Actuator {
    host: String,
    boot: BootId,
    section: ActuatorSection,
    trusted: Vec<PublicKey>,
    protected: Protected,
    state_file: StateFile,
    state: State,
    enforcement: Option<Box<dyn Enforcement>>,
    audit: AuditLog,
    /// Accepted actions per kind in the last hour.
    recent: HashMap<&'static str, VecDeque<Instant>>,
    active_blocks: Arc<AtomicU64>,
    images: CurrentImages,
    /// Answers by command id: a command re-sent with the same id is answered, not re-run.
    answered: Answered,
}

impl Actuator {
    /// Loads the trusted keys and the state, re-applies active blocks and kill-on-exec
    /// entries to the (fresh) kernel maps, and undoes what expired while the collector was down.
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
            let net: IpNet = net
                .parse()
                .map_err(|e| anyhow::anyhow!("actuator.protected_networks: {net:?}: {e}"))?;
            destinations.push(Endpoint { net, port: None });
        }
        let protected = Protected::new(&section.protected_executables, destinations);
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
            protected,
            state_file,
            state,
            enforcement,
            audit,
            recent: HashMap::new(),
            active_blocks: options.active_blocks,
            images: options.images,
            answered,
        };
        actuator
            .active_blocks
            .store(actuator.active_blocks(), Ordering::Relaxed);
        actuator.reapply();
        actuator.expire(Timestamp::now());
        Ok(actuator)
    }

    /// Puts the state's kernel entries back into the maps (they start empty).
    fn reapply(&mut self) {
        let entries = self.state.entries.clone();
        for entry in &entries {
            let result = self.apply(&entry.what);
            match result {
                Ok(()) => {
                    tracing::info!(what = %entry.what.target_text(), "actuator: re-applied {}", entry.what.action_name())
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
            Enforced::Suspend { target } => {
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

    /// Handles one request payload: verifies, executes, audits; returns the reply.
    pub fn handle(&mut self, payload: &[u8]) -> CommandResult {
        let command: Command = match protocol::decode(payload) {
            Ok(c) => c,
            Err(e) => {
                let result = CommandResult {
                    command_id: String::new(),
                    host: self.host.clone(),
                    status: CommandStatus::Refused,
                    reason: format!("malformed command: {e}"),
                    output: None,
                    time: Timestamp::now(),
                };
                self.audit_result(None, "unknown", None, &result);
                return result;
            }
        };
        let outcome = match self.answered.seen(&command, &self.host, &self.trusted) {
            Some(Seen::Answered(first)) => {
                tracing::info!(command_id = %command.id, "actuator: command sent again; answering as the first time, not running it again");
                return first;
            }
            Some(Seen::Conflict(reason)) => Outcome::refused(reason),
            None => self.handle_command(&command),
        };
        let result = CommandResult {
            command_id: command.id.clone(),
            host: self.host.clone(),
            status: outcome.status,
            reason: outcome.reason,
            output: outcome.output,
            time: Timestamp::now(),
        };
        self.audit_result(
            Some(&command),
            command.action.name(),
            command.action.target_text(),
            &result,
        );
        result
    }

    fn audit_result(
        &self,
        command: Option<&Command>,
        action: &str,
        target: Option<String>,
        result: &CommandResult,
    ) {
        let (decision, res) = match result.status {
            CommandStatus::Ok => (Decision::Executed, "ok".to_string()),
            CommandStatus::Refused => (Decision::Refused, "refused".to_string()),
            CommandStatus::Failed => (Decision::Failed, format!("error: {}", result.reason)),
        };
        let mut record = AuditRecord::new(
            "actuator",
            self.host.clone(),
            action,
            decision,
            result.reason.clone(),
            res,
        );
        record.time = result.time;
        record.target = target;
        if let Some(c) = command {
            record.finding_id = c.finding_id.clone();
            record.command_id = Some(c.id.clone()).filter(|id| !id.is_empty());
            record.actor.key_id = Some(c.key_id.clone()).filter(|k| !k.is_empty());
            record.pid = c.action.target().map(|t| t.pid);
        }
        self.audit.record(&record);
    }

    fn handle_command(&mut self, command: &Command) -> Outcome {
        if subject::host_token(&command.host) != subject::host_token(&self.host) {
            return Outcome::refused(format!(
                "addressed to host {:?}, this is {:?}",
                command.host, self.host
            ));
        }
        if let Err(e) = signing::verify(command, &self.trusted) {
            return Outcome::refused(format!("signature check failed: {e}"));
        }
        let now = Timestamp::now();
        let window_ns = self.section.command_window_secs as i64 * 1_000_000_000;
        let age = now.unix_nanos() - command.issued_at.unix_nanos();
        if age.abs() > window_ns {
            return Outcome::refused(format!(
                "stale command: issued {}s from now, outside the {}s window",
                -age / 1_000_000_000,
                self.section.command_window_secs
            ));
        }
        self.state
            .nonces
            .retain(|(_, t)| now.unix_nanos() - t.unix_nanos() <= 2 * window_ns);
        if self.state.nonces.iter().any(|(n, _)| *n == command.nonce) {
            return Outcome::refused(format!(
                "replayed command: nonce {} was already used",
                command.nonce
            ));
        }
        self.state
            .nonces
            .push((command.nonce.clone(), command.issued_at));
        self.save();

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
            return Outcome::refused(format!(
                "rate limit: at most {limit} {name} actions per hour on this host"
            ));
        }
        let outcome = self.execute(command);
        self.answered.remember(
            command,
            outcome.status,
            &outcome.reason,
            outcome.output.as_deref(),
        );
        if outcome.status == CommandStatus::Ok {
            self.recent
                .entry(name)
                .or_default()
                .push_back(Instant::now());
        }
        outcome
    }

    fn remember(&mut self, what: Enforced, ttl_secs: Option<u64>, command: &Command) {
        self.state.entries.retain(|e| e.what != what);
        self.state.entries.push(Entry {
            what,
            expires_at: ttl_secs.map(|s| {
                Timestamp::from_unix_nanos(Timestamp::now().unix_nanos() + s as i64 * 1_000_000_000)
            }),
            command_id: command.id.clone(),
            finding_id: command.finding_id.clone(),
        });
        self.save();
    }

    fn forget(&mut self, what: &Enforced) {
        self.state.entries.retain(|e| e.what != *what);
        self.save();
    }

    fn signal_target(&self, target: &protocol::ExecId, sig: i32) -> Outcome {
        let fd = match proc::open_checked(target, self.boot, &self.images) {
            Ok(fd) => fd,
            Err(e) => return Outcome::refused(e),
        };
        if let Err(e) = self.protected.check_process(target.pid) {
            return Outcome::refused(e);
        }
        match fd.signal(sig) {
            Ok(()) => Outcome::ok(format!("signal {sig} sent to {target} through a pidfd")),
            Err(e) => Outcome::failed(format!("cannot signal {target}: {e}")),
        }
    }

    fn execute(&mut self, command: &Command) -> Outcome {
        match &command.action {
            Action::Kill { target } => self.signal_target(target, libc::SIGKILL),
            Action::Suspend { target, ttl_secs } => {
                let outcome = self.signal_target(target, libc::SIGSTOP);
                if outcome.status == CommandStatus::Ok {
                    self.remember(Enforced::Suspend { target: *target }, *ttl_secs, command);
                }
                outcome
            }
            Action::Resume { target } => {
                let outcome = self.signal_target(target, libc::SIGCONT);
                self.forget(&Enforced::Suspend { target: *target });
                outcome
            }
            Action::Dump { target } => {
                if let Err(e) = proc::check_identity(target, self.boot, &self.images)
                    .and_then(|()| self.protected.check_process(target.pid))
                {
                    return Outcome::refused(e);
                }
                match files::dump(target, &self.section.dump_dir, self.section.dump_max_bytes) {
                    Ok(dir) => Outcome {
                        output: Some(dir.display().to_string()),
                        ..Outcome::ok(format!("memory of {target} dumped"))
                    },
                    Err(e) => Outcome::failed(e),
                }
            }
            Action::Quarantine { target, path } => {
                let path = match (target, path) {
                    (Some(t), _) => {
                        if let Err(e) = proc::check_identity(t, self.boot, &self.images)
                            .and_then(|()| self.protected.check_process(t.pid))
                        {
                            return Outcome::refused(e);
                        }
                        match proc::exe_file(t.pid) {
                            Ok((p, _, _)) => p,
                            Err(e) => {
                                return Outcome::failed(format!(
                                    "cannot find the executable of {t}: {e}"
                                ))
                            }
                        }
                    }
                    (None, Some(p)) => PathBuf::from(p),
                    (None, None) => return Outcome::refused("quarantine needs a target or a path"),
                };
                if let Err(e) = self.protected.check_file(&path) {
                    return Outcome::refused(e);
                }
                match files::quarantine(
                    &path,
                    &self.section.quarantine_dir,
                    command.finding_id.clone(),
                ) {
                    Ok(rec) => Outcome {
                        output: Some(
                            self.section
                                .quarantine_dir
                                .join(&rec.id)
                                .display()
                                .to_string(),
                        ),
                        ..Outcome::ok(format!(
                            "{} quarantined as {} (sha256 {})",
                            rec.original_path, rec.id, rec.sha256
                        ))
                    },
                    Err(e) => Outcome::failed(e),
                }
            }
            Action::Block {
                cidr,
                port,
                ttl_secs,
            } => {
                let net: IpNet = match cidr
                    .parse::<IpNet>()
                    .or_else(|_| cidr.parse::<std::net::IpAddr>().map(IpNet::from))
                {
                    Ok(n) => n.trunc(),
                    Err(_) => {
                        return Outcome::refused(format!("{cidr:?} is not an IP address or CIDR"))
                    }
                };
                if let Err(e) = self.protected.check_destination(&net, *port) {
                    return Outcome::refused(e);
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
                let net: IpNet = match cidr
                    .parse::<IpNet>()
                    .or_else(|_| cidr.parse::<std::net::IpAddr>().map(IpNet::from))
                {
                    Ok(n) => n.trunc(),
                    Err(_) => {
                        return Outcome::refused(format!("{cidr:?} is not an IP address or CIDR"))
                    }
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
            Action::KillOnExec { path, ttl_secs } => {
                let Some(path) = path else {
                    return Outcome::refused("kill_on_exec needs a path");
                };
                let (dev, ino) = match self.protected.check_file(std::path::Path::new(path)) {
                    Ok(id) => id,
                    Err(e) => return Outcome::refused(e),
                };
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
        }
    }

    /// Serves `osprey.cmd.<host>` until `shutdown` resolves, expiring TTLs every second.
    pub async fn run(
        mut self,
        client: async_nats::Client,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let subject = subject::command(&self.host);
        let mut sub = match client.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("actuator: cannot subscribe to {subject}: {e}");
                return;
            }
        };
        tracing::info!(
            subject,
            trusted_keys = self.trusted.len(),
            "actuator serving commands"
        );
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut shutdown = shutdown;
        loop {
            tokio::select! {
                msg = sub.next() => {
                    let Some(msg) = msg else { break };
                    // The actuator has a thread of its own (see `main`): blocking here (a
                    // memory dump, a quarantine copy) never stalls the event pipeline.
                    let result = self.handle(&msg.payload);
                    if let Some(reply) = msg.reply {
                        match protocol::encode(&result) {
                            Ok(bytes) => {
                                if let Err(e) = client.publish(reply, bytes.into()).await {
                                    tracing::warn!("actuator: cannot reply: {e}");
                                }
                            }
                            Err(e) => tracing::error!("actuator: cannot encode a reply: {e}"),
                        }
                    }
                }
                _ = tick.tick() => self.expire(Timestamp::now()),
                _ = shutdown.changed() => break,
            }
        }
    }
}
