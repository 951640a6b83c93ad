//! The finding raised when a host's heartbeat stops.

use std::time::Duration;

use protocol::{
    ArgvSource, BootId, Detector, ExecId, Finding, FindingId, Process, Severity, Timestamp,
};

pub const RULE_ID: &str = "osprey.host-silent";

/// A `high` finding for `host`, silent for `quiet`. Its process is a placeholder (pid 0):
/// the finding is about the host, not a process. The id is unique per silence episode.
pub fn finding(host: &str, quiet: Duration) -> Finding {
    let now = Timestamp::now();
    let exec_id = ExecId {
        boot: BootId(0),
        pid: 0,
        start_ticks: 0,
        seq: 0,
    };
    Finding {
        id: FindingId::new(host, &exec_id, Detector::Responder, &format!("{RULE_ID}@{}", now.unix_nanos())),
        time: now,
        host: host.to_string(),
        detector: Detector::Responder,
        rule_id: RULE_ID.into(),
        title: format!("host {host} fell silent: no heartbeat for {}s", quiet.as_secs()),
        description: Some("The collector stopped sending heartbeats: it may have been stopped, crashed, or cut off.".into()),
        author: None,
        severity: Severity::High,
        tags: vec!["attack.defense_evasion".into(), "attack.t1562".into()],
        process: Process {
            argv_source: ArgvSource::Os,
            start_time: now,
            ..Process::new(exec_id, String::new(), Vec::new())
        },
        ancestry: Vec::new(),
        triggers: Vec::new(),
        recommended_actions: vec![protocol::ActionKind::Notify],
    }
}
