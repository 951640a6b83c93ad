//! Synthetic protocol events, shaped like what the collector produces on Debian 12.
#![allow(dead_code)]

use protocol::{
    Ancestor, BootId, ConnectEvent, ConnectHook, Event, EventDetail, ExecEvent, ExecId, Outcome,
    Process, SocketFamily, Timestamp, TransportProtocol,
};
use std::path::PathBuf;

/// The shared Linux Sigma corpus (`../shared/sigma/rules/linux` beside the workspace), or
/// `OSPREY_SIGMA_DIR`.
pub fn sigma_corpus() -> PathBuf {
    let dir = match std::env::var_os("OSPREY_SIGMA_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/sigma/rules/linux"),
    };
    dir.canonicalize().unwrap_or(dir)
}

pub fn example_policy() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy.yaml");
    path.canonicalize().unwrap_or(path)
}

fn exec_id(pid: u32) -> ExecId {
    ExecId {
        boot: BootId(0x4cd1_1df2),
        pid,
        start_ticks: 1000 + u64::from(pid),
        seq: 1,
    }
}

/// A process running `argv`, whose executable resolves to `exe` and was invoked as `invoked`.
pub fn process(argv: &[&str], exe: &str, invoked: Option<&str>) -> Process {
    Process {
        ppid: 4000,
        parent_exec_id: Some(exec_id(4000)),
        invoked_path: invoked.map(Into::into),
        cwd: Some("/home/alice".into()),
        uid: 1000,
        euid: 1000,
        gid: 1000,
        loginuid: Some(1000),
        user: Some("alice".into()),
        tty: Some("pts0".into()),
        cgroup_id: 1,
        start_time: Timestamp::from_unix_nanos(1_700_000_000_000_000_000),
        ..Process::new(
            exec_id(4242),
            exe,
            argv.iter().map(|s| s.to_string()).collect(),
        )
    }
}

/// An interactive bash as the parent, under sshd.
pub fn default_ancestry() -> Vec<Ancestor> {
    vec![
        ancestor(4000, "/usr/bin/bash", &["-bash"]),
        ancestor(3000, "/usr/sbin/sshd", &["sshd: alice [priv]"]),
        ancestor(1, "/usr/lib/systemd/systemd", &["/sbin/init"]),
    ]
}

pub fn ancestor(pid: u32, exe: &str, argv: &[&str]) -> Ancestor {
    Ancestor {
        exec_id: exec_id(pid),
        pid,
        name: exe.rsplit('/').next().unwrap_or(exe).to_string(),
        exe: exe.into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        tty: Some("pts0".into()),
    }
}

pub fn exec(argv: &[&str], exe: &str, invoked: Option<&str>) -> Event {
    Event {
        time: Timestamp::from_unix_nanos(1_700_000_000_000_000_000),
        host: "test-host".into(),
        process: process(argv, exe, invoked),
        ancestry: default_ancestry(),
        detail: EventDetail::Exec(ExecEvent::default()),
    }
}

pub fn connect(
    argv: &[&str],
    exe: &str,
    ip: &str,
    port: u16,
    protocol: TransportProtocol,
) -> Event {
    let destination_ip: std::net::IpAddr = ip.parse().expect("test address");
    Event {
        time: Timestamp::from_unix_nanos(1_700_000_000_000_000_000),
        host: "test-host".into(),
        process: process(argv, exe, None),
        ancestry: default_ancestry(),
        detail: EventDetail::Connect(ConnectEvent {
            family: if destination_ip.is_ipv4() {
                SocketFamily::Ipv4
            } else {
                SocketFamily::Ipv6
            },
            protocol,
            destination_ip,
            destination_port: port,
            source_ip: None,
            source_port: None,
            outcome: Outcome::Ok,
            errno: None,
            hook: ConnectHook::Connect,
            late_outcome: false,
        }),
    }
}
