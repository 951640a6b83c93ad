//! What the writer thread writes: one [`Record`] per row change, built on the caller's side
//! (owned data, so the event loop never waits for the file).

use std::net::IpAddr;

use protocol::{ExecId, Finding, Timestamp};

use crate::score::{Features, Label};

#[derive(Clone, Debug, PartialEq)]
pub struct ProcessRow {
    pub exec_id: ExecId,
    pub pid: u32,
    pub exe: String,
    pub sha256: Option<String>,
    pub argv: Vec<String>,
    pub user: Option<String>,
    pub uid: u32,
    pub parent_exec_id: Option<ExecId>,
    pub start: Timestamp,
}

impl ProcessRow {
    pub fn of(p: &protocol::Process) -> Self {
        ProcessRow {
            exec_id: p.exec_id,
            pid: p.pid,
            exe: p.exe.clone(),
            sha256: p.sha256.clone(),
            argv: p.argv.clone(),
            user: p.user.clone(),
            uid: p.uid,
            parent_exec_id: p.parent_exec_id,
            start: p.start_time,
        }
    }
}

/// A connection's row: written at the connect (no end yet), completed at its close.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionRow {
    pub exec_id: ExecId,
    pub exe: String,
    pub protocol: &'static str,
    pub destination: IpAddr,
    pub port: u16,
    pub source_port: Option<u16>,
    pub outcome: &'static str,
    pub start: Timestamp,
    pub end: Option<Timestamp>,
    pub bytes_sent: Option<u64>,
    pub bytes_received: Option<u64>,
    pub score: Option<f32>,
    pub label: Option<Label>,
    pub features: Option<Features>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct UdpFlowRow {
    pub exec_id: ExecId,
    pub exe: String,
    pub destination: IpAddr,
    pub port: u16,
    pub first: Timestamp,
    pub last: Timestamp,
    pub datagrams: u64,
    pub score: Option<f32>,
    pub label: Option<Label>,
    pub features: Features,
}

/// A learned owner (program, parent or path) and its learning clock.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnerRow {
    pub kind: &'static str,
    pub owner: String,
    pub user: String,
    pub first: Timestamp,
    pub last: Timestamp,
}

/// One baseline item of an owner.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryRow {
    pub kind: &'static str,
    pub owner: String,
    pub user: String,
    pub item: String,
    pub state: &'static str,
    pub first: Timestamp,
    pub last: Timestamp,
    pub hits: u32,
}

/// What a baseline finding reported as novel: `osprey baseline accept FINDING_ID` accepts it.
#[derive(Clone, Debug, PartialEq)]
pub struct NoveltyRow {
    pub finding_id: String,
    pub exec_id: ExecId,
    pub rule_id: &'static str,
    pub kind: &'static str,
    pub owner: String,
    pub user: String,
    pub item: String,
    /// The connection's exact destination (new-destination findings), for its `label`.
    pub destination: Option<(IpAddr, u16)>,
    pub time: Timestamp,
}

/// Changes of the learned baselines since the last flush.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BaselineChanges {
    pub owners: Vec<OwnerRow>,
    pub entries: Vec<EntryRow>,
    /// (kind, owner, user)
    pub removed_owners: Vec<(&'static str, String, String)>,
    /// (kind, owner, user, item)
    pub removed_entries: Vec<(&'static str, String, String, String)>,
}

impl BaselineChanges {
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
            && self.entries.is_empty()
            && self.removed_owners.is_empty()
            && self.removed_entries.is_empty()
    }
}

/// How and when a process ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessEnd {
    pub time: Timestamp,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

/// One change for the store.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A process (a new `ExecId`): inserted, or replaced when seen again.
    Process(ProcessRow),
    /// The executable's hash arrived after the process row.
    ProcessHash {
        exec_id: ExecId,
        sha256: String,
    },
    ProcessExit {
        exec_id: ExecId,
        end: ProcessEnd,
    },
    /// A connect: a new row.
    Connect(ConnectionRow),
    /// A connection ended (or its late outcome arrived): completes the oldest open row of the
    /// same process, destination and port (and source port when both know it), or inserts
    /// a complete row when there is none.
    Close(ConnectionRow),
    UdpFlow(UdpFlowRow),
    Sample {
        exec_id: ExecId,
        time: Timestamp,
        cpu_percent: f32,
        rss_bytes: u64,
    },
    /// A finding (a repeat of the same id replaces the row).
    Finding(Box<Finding>),
    Baseline(Box<BaselineChanges>),
    Novelty(NoveltyRow),
    /// An operator's accept: the connections it concerned are labelled `accepted`.
    Accepted {
        exec_id: ExecId,
        destination: IpAddr,
        port: u16,
    },
    /// The collector applied `osprey baseline accept|forget` number `id`.
    OverrideApplied {
        id: i64,
        time: Timestamp,
        result: String,
    },
}
