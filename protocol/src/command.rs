//! Commands from a responder or an operator to a host's actuator (`osprey.cmd.<host>`,
//! request/reply), and the actuator's answer.

use serde::{Deserialize, Serialize};

use crate::{ActionKind, EventDetail, ExecId, Finding, FindingId, Timestamp};

/// A signed instruction for one host. The signature covers the MessagePack encoding of the
/// command without its `signature` field ([`crate::signing`]).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Unique per command (also names the audit records of its handling).
    pub id: String,
    /// Random, single use: a command seen twice is a replay.
    pub nonce: String,
    pub issued_at: Timestamp,
    /// The host that must execute it (equal to the subject's host).
    pub host: String,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding_id: Option<FindingId>,
    /// The human behind an operator command (a console user's name), audited by the host.
    /// Covered by the signature like every other field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// The signer's public key (base64), which must be in the host's trusted keys.
    pub key_id: String,
    /// ed25519 signature (base64); absent on an unsigned command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl Command {
    /// A new unsigned command for `host` with a fresh id and nonce, issued now; sign it with
    /// [`crate::signing::KeyPair::sign`].
    pub fn new(host: impl Into<String>, action: Action, finding_id: Option<FindingId>) -> Command {
        Command {
            id: crate::signing::random_id(),
            nonce: crate::signing::random_id(),
            issued_at: Timestamp::now(),
            host: host.into(),
            action,
            finding_id,
            operator: None,
            key_id: String::new(),
            signature: None,
        }
    }
}

/// What to do. Times to live are in seconds; an expired block or suspension is undone by the
/// actuator itself.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    Kill {
        target: ExecId,
        /// Also every descendant of the target, each identity-checked; the tree is stopped
        /// first, so no member escapes by forking while it is killed.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tree: bool,
    },
    Suspend {
        target: ExecId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_secs: Option<u64>,
    },
    Resume {
        target: ExecId,
    },
    /// Moves the target's executable (or `path`) into the quarantine directory.
    Quarantine {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<ExecId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// Copies the target's readable memory and its maps file.
    Dump {
        target: ExecId,
    },
    /// Refuses connects to `cidr` (and `port`, when given) in the kernel.
    Block {
        cidr: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_secs: Option<u64>,
    },
    Unblock {
        cidr: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
    },
    /// Kills any process that executes this file (by device and inode).
    KillOnExec {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// A process running the file: the file is then found through the process (in its
        /// own mount namespace), never by a path that may name another file on the host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<ExecId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_secs: Option<u64>,
    },
    /// Puts a quarantined file back at its original path with its original mode and owner
    /// (`id` as the quarantine record names it); refused when something is at that path
    /// again or the file came from another mount namespace.
    Release {
        id: String,
    },
}

impl Action {
    /// The action of `kind` on what `finding` is about: its process, its executable, or the
    /// destination of its connect trigger (the address, or with `block_port` its port).
    /// `None` for kinds that act on no host (`notify`, `log`) or when the finding carries
    /// nothing to act on.
    pub fn for_finding(
        kind: ActionKind,
        finding: &Finding,
        ttl_secs: Option<u64>,
        block_port: bool,
    ) -> Option<Action> {
        let target = finding.process.exec_id;
        match kind {
            ActionKind::Kill => Some(Action::Kill {
                target,
                tree: false,
            }),
            ActionKind::Suspend => Some(Action::Suspend { target, ttl_secs }),
            ActionKind::Resume => Some(Action::Resume { target }),
            ActionKind::Dump => Some(Action::Dump { target }),
            ActionKind::Quarantine => Some(Action::Quarantine {
                target: Some(target),
                path: None,
            }),
            ActionKind::KillOnExec => {
                (!finding.process.exe.is_empty()).then(|| Action::KillOnExec {
                    path: Some(finding.process.exe.clone()),
                    target: Some(target),
                    ttl_secs,
                })
            }
            ActionKind::Block => finding.triggers.iter().find_map(|t| match &t.detail {
                EventDetail::Connect(c) => Some(Action::Block {
                    cidr: crate::net::canonical_ip(c.destination_ip).to_string(),
                    port: block_port.then_some(c.destination_port),
                    ttl_secs,
                }),
                _ => None,
            }),
            ActionKind::Notify | ActionKind::Log => None,
        }
    }

    /// The order in which several actions on one process all work: suspended first (it can
    /// do nothing more), its memory dumped while untouched, its executable quarantined (by
    /// the identity the kernel recorded at exec) while the process still holds it, killed
    /// last; the rest after.
    pub fn execution_rank(kind: ActionKind) -> u8 {
        match kind {
            ActionKind::Suspend => 0,
            ActionKind::Dump => 1,
            ActionKind::Quarantine => 2,
            ActionKind::KillOnExec => 3,
            ActionKind::Block => 4,
            ActionKind::Kill => 5,
            ActionKind::Resume => 6,
            ActionKind::Notify | ActionKind::Log => 7,
        }
    }

    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Kill { .. } => ActionKind::Kill,
            Action::Suspend { .. } => ActionKind::Suspend,
            Action::Resume { .. } => ActionKind::Resume,
            Action::Quarantine { .. } | Action::Release { .. } => ActionKind::Quarantine,
            Action::Dump { .. } => ActionKind::Dump,
            Action::Block { .. } | Action::Unblock { .. } => ActionKind::Block,
            Action::KillOnExec { .. } => ActionKind::KillOnExec,
        }
    }

    /// The action's name in audit records (`kill`, `block`, `unblock`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Action::Kill { .. } => "kill",
            Action::Suspend { .. } => "suspend",
            Action::Resume { .. } => "resume",
            Action::Quarantine { .. } => "quarantine",
            Action::Dump { .. } => "dump",
            Action::Block { .. } => "block",
            Action::Unblock { .. } => "unblock",
            Action::KillOnExec { .. } => "kill_on_exec",
            Action::Release { .. } => "release",
        }
    }

    /// The process the action is aimed at, when it has one.
    pub fn target(&self) -> Option<ExecId> {
        match self {
            Action::Kill { target, .. }
            | Action::Suspend { target, .. }
            | Action::Resume { target }
            | Action::Dump { target } => Some(*target),
            Action::Quarantine { target, .. } | Action::KillOnExec { target, .. } => *target,
            _ => None,
        }
    }

    /// A human-readable target: the `ExecId`, the destination or the path.
    pub fn target_text(&self) -> Option<String> {
        match self {
            Action::Block { cidr, port, .. } | Action::Unblock { cidr, port } => Some(match port {
                Some(p) => format!("{cidr} port {p}"),
                None => cidr.clone(),
            }),
            Action::KillOnExec { path: Some(p), .. } => Some(p.clone()),
            Action::Quarantine { target: None, path } => path.clone(),
            Action::Release { id } => Some(id.clone()),
            _ => self.target().map(|t| t.to_string()),
        }
    }
}

/// How the actuator handled a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Done.
    Ok,
    /// Not done: it failed verification or a safety check.
    Refused,
    /// Accepted but the action itself failed (e.g. the process exited meanwhile).
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command's id (empty when the command could not be decoded).
    pub command_id: String,
    pub host: String,
    pub status: CommandStatus,
    /// Why, in one sentence (the reason for a refusal, the error of a failure, or what was done).
    pub reason: String,
    /// Where the action's output went (quarantined file, dump directory), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    pub time: Timestamp,
}
