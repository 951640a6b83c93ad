//! Findings: what a detector concluded about a process, and what it recommends.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::{Ancestor, EventDetail, ExecId, Process, Severity, Timestamp};

/// Deterministic id of a finding: the same rule on the same `ExecId` on the same host always
/// yields the same id, so a finding re-sent after an outage is de-duplicated by JetStream
/// (`Nats-Msg-Id`) and by consumers.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FindingId(pub String);

impl FindingId {
    pub fn new(host: &str, exec_id: &ExecId, detector: Detector, rule_id: &str) -> Self {
        // FNV-1a over the identifying parts: stable across releases and platforms.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for part in [host, &exec_id.to_string(), detector.as_str(), rule_id] {
            for byte in part.bytes().chain(std::iter::once(0)) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        FindingId(format!("{exec_id}-{hash:016x}"))
    }
}

impl fmt::Display for FindingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which detector raised a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    Heuristic,
    Policy,
    Sigma,
    /// Novel behaviour against a learned baseline.
    Baseline,
    /// A connection the anomaly model scored above its threshold.
    Anomaly,
    Intel,
    /// Raised by the responder itself (e.g. a host fell silent).
    Responder,
}

impl Detector {
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::Heuristic => "heuristic",
            Detector::Policy => "policy",
            Detector::Sigma => "sigma",
            Detector::Baseline => "baseline",
            Detector::Anomaly => "anomaly",
            Detector::Intel => "intel",
            Detector::Responder => "responder",
        }
    }
}

/// Actions a rule recommends. Advice only: the responder's own policy decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Kill,
    Suspend,
    Resume,
    Quarantine,
    Dump,
    Block,
    KillOnExec,
    Notify,
    Log,
}

impl ActionKind {
    /// The action's name in policies and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Kill => "kill",
            ActionKind::Suspend => "suspend",
            ActionKind::Resume => "resume",
            ActionKind::Quarantine => "quarantine",
            ActionKind::Dump => "dump",
            ActionKind::Block => "block",
            ActionKind::KillOnExec => "kill_on_exec",
            ActionKind::Notify => "notify",
            ActionKind::Log => "log",
        }
    }
}

/// What triggered a finding: the event's time and details (the process is the finding's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub time: Timestamp,
    #[serde(flatten)]
    pub detail: EventDetail,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub id: FindingId,
    pub time: Timestamp,
    pub host: String,
    pub detector: Detector,
    pub rule_id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Rule author (Sigma rules' licence requires it in every alert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub severity: Severity,
    /// MITRE ATT&CK and other tags, e.g. `attack.execution`, `attack.t1059`.
    #[serde(default)]
    pub tags: Vec<String>,
    pub process: Process,
    #[serde(default)]
    pub ancestry: Vec<Ancestor>,
    pub triggers: Vec<Trigger>,
    #[serde(default)]
    pub recommended_actions: Vec<ActionKind>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BootId;

    #[test]
    fn finding_ids_are_deterministic_and_distinct() {
        let id = ExecId {
            boot: BootId(1),
            pid: 2,
            start_ticks: 3,
            seq: 0,
        };
        let a = FindingId::new("h", &id, Detector::Sigma, "r1");
        assert_eq!(a, FindingId::new("h", &id, Detector::Sigma, "r1"));
        assert_ne!(a, FindingId::new("h", &id, Detector::Sigma, "r2"));
        assert_ne!(a, FindingId::new("g", &id, Detector::Sigma, "r1"));
    }
}
