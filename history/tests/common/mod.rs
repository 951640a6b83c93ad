//! What the history tests share: a config on a temporary file, processes and connects.
#![allow(dead_code)]

use std::path::Path;

use history::HistoryConfig;
use protocol::{
    Ancestor, ConnectEvent, ConnectHook, ExecId, Outcome, Process, SocketFamily, Timestamp,
    TransportProtocol,
};

pub const HOST: &str = "test-host";
pub const S: i64 = 1_000_000_000;
pub const HOUR: i64 = 3_600 * S;

pub fn engines() -> Vec<String> {
    ["python*", "perl*", "bash", "sh", "node"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// A config on `dir/history.db` with a one-hour learning period, exact destinations, and a
/// quick override poll.
pub fn config(dir: &Path) -> HistoryConfig {
    let mut c = HistoryConfig {
        path: dir.join("history.db"),
        ..HistoryConfig::default()
    };
    c.baseline.learning_period_hours = 1.0;
    c.baseline.prefix_v4 = 32;
    c.baseline.overrides_poll_secs = 1;
    c.scoring.min_training_rows = 100;
    c
}

pub fn exec_id(pid: u32) -> ExecId {
    ExecId {
        boot: protocol::BootId(0x4cd1_1df2),
        pid,
        start_ticks: 1000 + u64::from(pid),
        seq: 0,
    }
}

pub fn process(pid: u32, argv: &[&str], start: i64) -> Process {
    let exe = match argv[0] {
        "python3" => "/usr/bin/python3.11",
        "curl" => "/usr/bin/curl",
        "sshd" => "/usr/sbin/sshd",
        "bash" => "/usr/bin/bash",
        other => other,
    };
    Process {
        ppid: 1,
        parent_exec_id: Some(exec_id(1)),
        user: Some("alice".into()),
        uid: 1000,
        cwd: Some("/home/alice".into()),
        start_time: Timestamp::from_unix_nanos(start),
        ..Process::new(
            exec_id(pid),
            exe,
            argv.iter().map(|s| s.to_string()).collect(),
        )
    }
}

pub fn ancestor(pid: u32, exe: &str, argv: &[&str]) -> Ancestor {
    Ancestor {
        exec_id: exec_id(pid),
        pid,
        name: exe.rsplit('/').next().unwrap_or(exe).to_string(),
        exe: exe.to_string(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        tty: None,
    }
}

pub fn connect(ip: &str, port: u16, protocol: TransportProtocol, outcome: Outcome) -> ConnectEvent {
    ConnectEvent {
        family: SocketFamily::Ipv4,
        protocol,
        destination_ip: ip.parse().unwrap(),
        destination_port: port,
        source_ip: None,
        source_port: None,
        outcome,
        errno: None,
        hook: ConnectHook::Connect,
        late_outcome: false,
    }
}

pub fn tcp(ip: &str, port: u16) -> ConnectEvent {
    connect(ip, port, TransportProtocol::Tcp, Outcome::Ok)
}

pub fn at(nanos: i64) -> Timestamp {
    Timestamp::from_unix_nanos(nanos)
}

pub fn now() -> i64 {
    Timestamp::now().unix_nanos()
}
