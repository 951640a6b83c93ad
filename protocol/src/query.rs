//! Host state queries (`osprey.query.<host>`, request/reply): a read-only look at a host's
//! live process table, for operators (`osprey ps`, `osprey top`, a console, an investigator).
//! Only operator credentials may publish on these subjects (deploy/nats); the collector
//! answers with a [`Snapshot`], bounded and paged.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

use crate::{
    Ancestor, ExecId, FindingId, Outcome, Process, Severity, Timestamp, TransportProtocol,
};

/// Most processes one answer carries (a bigger `limit` is lowered to this).
pub const MAX_PAGE: u32 = 500;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    #[serde(flatten)]
    pub kind: QueryKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum QueryKind {
    /// Live processes, filtered, sorted and paged.
    Processes(ProcessFilter),
    /// One process, with everything the host knows about it.
    Process { exec_id: ExecId },
}

/// Which processes, in which order, which page.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessFilter {
    /// Only processes at this risk or above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_risk: Option<Severity>,
    /// Only processes of this user (name, or uid in decimal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Only processes whose executable, argv or user contains this text (case-insensitive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Only the process with this pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub sort: SortKey,
    pub offset: u32,
    /// 0: the default page size (50).
    pub limit: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    /// Highest risk first, then most recent start.
    #[default]
    Risk,
    Cpu,
    Rss,
    /// Youngest first.
    Age,
    Pid,
}

/// The answer to a [`Query`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub host: String,
    pub time: Timestamp,
    /// Processes matching the filter, before paging.
    pub total: u32,
    pub processes: Vec<ProcessState>,
    /// Why nothing (or less than asked) came back, when the host could not answer fully
    /// (e.g. "no process c64a9ee2-… in the table").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A live process as its host sees it now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessState {
    pub process: Process,
    /// Nearest parent first. Filled in the answer to a [`QueryKind::Process`] query (a list
    /// leaves it empty: pages stay small).
    #[serde(default)]
    pub ancestry: Vec<Ancestor>,
    pub age_secs: u64,
    /// The process has exited (the host still remembers it for a short while): only a
    /// [`QueryKind::Process`] query answers with an exited process.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exited: bool,
    /// CPU use over the last sampling interval, percent of one core (sampled for processes
    /// with network activity or findings; absent for the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// Open and recent connections, newest first (bounded).
    #[serde(default)]
    pub connections: Vec<ConnectionState>,
    /// Findings raised on this `ExecId`, newest first (bounded).
    #[serde(default)]
    pub findings: Vec<FindingSummary>,
    /// The latest threat-intelligence verdict on its executable (VirusTotal or a feed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel: Option<crate::IntelVerdictEvent>,
    pub risk: Risk,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionState {
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    pub protocol: TransportProtocol,
    pub outcome: Outcome,
    /// Seconds since the attempt.
    pub age_secs: u64,
    /// An established TCP connection the host has not seen close.
    #[serde(default)]
    pub open: bool,
    /// How long it lasted and what it carried, once closed (TCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<ClosedConnection>,
}

/// A TCP connection's lifetime and bytes, from its close.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedConnection {
    pub duration_ms: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingSummary {
    pub id: FindingId,
    pub rule_id: String,
    pub title: String,
    pub severity: Severity,
    pub time: Timestamp,
}

/// How risky a process looks: the heuristics' classes (a script engine with an internet
/// connection is high, one in the background medium) and its findings' highest severity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Risk {
    /// `info` when nothing stands out.
    pub level: Severity,
    /// One short reason per contribution (e.g. "script engine python3 connected to
    /// 203.0.113.7:443").
    #[serde(default)]
    pub reasons: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_round_trip_and_read_as_json() {
        let q = Query {
            kind: QueryKind::Processes(ProcessFilter {
                min_risk: Some(Severity::Medium),
                sort: SortKey::Cpu,
                limit: 5,
                ..Default::default()
            }),
        };
        let bytes = crate::encode(&q).unwrap();
        assert_eq!(crate::decode::<Query>(&bytes).unwrap(), q);
        let json = serde_json::to_value(&q).unwrap();
        assert_eq!(json["query"], "processes");
        assert_eq!(json["min_risk"], "medium");
        assert_eq!(json["sort"], "cpu");
    }
}
