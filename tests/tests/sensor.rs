//! The Linux sensor end to end: real processes and sockets, the eBPF programs in this kernel,
//! the collector, and events and findings received from a real nats-server.

use std::{net::TcpListener, time::Duration};

use osprey_tests::{
    collector::{is_exec_with, Collector},
    marker,
    nats::NatsServer,
    workload::{self, python, PYTHON},
};
use protocol::{EventDetail, Outcome, Severity, SocketFamily, TransportProtocol};

/// Loopback counts as non-local here, so connections to it are scored like internet ones.
const NOTHING_LOCAL: &[&str] = &["--local-networks", "169.254.0.0/16"];

/// Fields drop in order: the collector stops before its NATS server and directories go.
struct Setup {
    collector: Collector,
    _nats: NatsServer,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let client = nats.client().await;
    let collector = Collector::start(
        &client,
        &nats.url(),
        &dir.path().join("spool"),
        NOTHING_LOCAL,
    )
    .await;
    Setup {
        collector,
        _nats: nats,
        _dir: dir,
    }
}

fn connect_event(e: &protocol::Event, pid: u32, port: u16) -> Option<protocol::ConnectEvent> {
    match &e.detail {
        EventDetail::Connect(c) if e.process.pid == pid && c.destination_port == port => {
            Some(c.clone())
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_engine_connecting_out_is_reported_with_argv_ancestry_outcome_and_a_high_finding() {
    let s = setup().await;
    let c = &s.collector;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mark = marker("connect");
    let script = format!(
        "# {mark}\nimport socket\nsocket.create_connection(('127.0.0.1', {port})).close()\n\
         s = socket.socket()\nassert s.connect_ex(('127.0.0.1', {closed_port})) != 0\n"
    );
    let child = python(&script);
    let pid = child.id();
    workload::finish(child, "python connect");

    let exec = c
        .wait_event("python exec", |e| is_exec_with(e, &mark))
        .await;
    assert_eq!(exec.process.pid, pid);
    assert_eq!(
        exec.process.argv,
        vec![PYTHON.to_string(), "-c".into(), script.clone()]
    );
    assert_eq!(exec.process.argv_source, protocol::ArgvSource::Kernel);
    assert_eq!(
        exec.process.ppid,
        std::process::id(),
        "parent is this test process"
    );
    assert_eq!(
        exec.ancestry.first().map(|a| a.pid),
        Some(std::process::id())
    );
    assert!(
        exec.ancestry.len() >= 2,
        "ancestry goes beyond the parent: {:?}",
        exec.ancestry
    );
    assert!(
        exec.process.exe.starts_with("/usr/bin/python3"),
        "resolved exe {}",
        exec.process.exe
    );

    let ok = c
        .wait_event("connect ok", |e| connect_event(e, pid, port).is_some())
        .await;
    let ok = connect_event(&ok, pid, port).unwrap();
    assert_eq!(ok.destination_ip.to_string(), "127.0.0.1");
    assert_eq!(
        (ok.protocol, ok.family, ok.outcome),
        (TransportProtocol::Tcp, SocketFamily::Ipv4, Outcome::Ok)
    );

    let refused = c
        .wait_event("connect refused", |e| {
            connect_event(e, pid, closed_port).is_some()
        })
        .await;
    assert_eq!(
        connect_event(&refused, pid, closed_port).unwrap().outcome,
        Outcome::Refused
    );

    let finding = c
        .wait_finding("script engine network", |f| {
            f.process.pid == pid && f.rule_id == "osprey.script-engine-network"
        })
        .await;
    assert_eq!(finding.severity, Severity::High);
    assert!(finding.title.contains("python3"), "{}", finding.title);
    assert!(
        finding.title.contains(&format!("127.0.0.1:{port}")),
        "{}",
        finding.title
    );
    assert!(finding.process.argv.iter().any(|a| a.contains(&mark)));
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argv_is_captured_at_exec_even_when_rewritten_or_short_lived() {
    let s = setup().await;
    let c = &s.collector;
    let dir = tempfile::tempdir().unwrap();
    let scrubber = workload::compile_c(
        dir.path(),
        "scrub",
        r#"#include <string.h>
           #include <unistd.h>
           int main(int argc, char **argv) {
               for (int i = 1; i < argc; i++) memset(argv[i], 'X', strlen(argv[i]));
               sleep(3);
               return 0;
           }"#,
    );
    let mark = marker("scrub");
    let mut child = std::process::Command::new(&scrubber)
        .arg(&mark)
        .arg("second-arg")
        .spawn()
        .unwrap();
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(500));
    let now = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&now).contains(&mark),
        "the process did overwrite its argv"
    );

    let exec = c.wait_event("scrub exec", |e| is_exec_with(e, &mark)).await;
    assert_eq!(exec.process.pid, pid);
    assert_eq!(
        exec.process.argv[1..],
        [mark.clone(), "second-arg".to_string()]
    );
    child.wait().unwrap();

    let mark = marker("true");
    let status = std::process::Command::new("/bin/true")
        .arg(&mark)
        .status()
        .unwrap();
    assert!(status.success());
    let exec = c.wait_event("true exec", |e| is_exec_with(e, &mark)).await;
    assert_eq!(
        exec.process.argv,
        vec!["/bin/true".to_string(), mark.clone()]
    );
    assert_eq!(exec.process.invoked_path.as_deref(), Some("/bin/true"));
    let exit = c
        .wait_event("true exit", |e| {
            matches!(e.detail, EventDetail::Exit(_)) && e.process.exec_id == exec.process.exec_id
        })
        .await;
    match exit.detail {
        EventDetail::Exit(x) => assert_eq!(x.exit_code, Some(0)),
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_udp_preexisting_and_duplicated_sockets_are_attributed() {
    // A socket created before the collector starts, used afterwards.
    let early_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let early_port = early_listener.local_addr().unwrap().port();
    let early = python(&format!(
        "import socket, sys\ns = socket.socket()\nprint('ready', flush=True)\nsys.stdin.readline()\n\
         s.connect(('127.0.0.1', {early_port}))\n"
    ));
    let early_pid = early.id();
    let mut early = early;
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(early.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
    }

    let s = setup().await;
    let c = &s.collector;
    {
        use std::io::Write;
        early.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }
    workload::finish(early, "pre-existing socket");
    let e = c
        .wait_event("pre-existing socket connect", |e| {
            connect_event(e, early_pid, early_port).is_some()
        })
        .await;
    let conn = connect_event(&e, early_pid, early_port).unwrap();
    assert_eq!(
        (conn.family, conn.protocol, conn.outcome),
        (SocketFamily::Ipv4, TransportProtocol::Tcp, Outcome::Ok)
    );

    let v6 = TcpListener::bind("[::1]:0").unwrap();
    let v6_port = v6.local_addr().unwrap().port();
    let udp_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let udp_sendto_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dup_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dup_port = dup_listener.local_addr().unwrap().port();
    let child = python(&format!(
        "import socket, os\n\
         socket.create_connection(('::1', {v6_port})).close()\n\
         u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(('127.0.0.1', {udp_port})); u.send(b'x')\n\
         v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); v.sendto(b'y', ('127.0.0.1', {udp_sendto_port}))\n\
         t = socket.socket(); os.dup2(t.fileno(), 77); d = socket.socket(fileno=77); d.connect(('127.0.0.1', {dup_port}))\n"
    ));
    let pid = child.id();
    workload::finish(child, "socket workload");

    for (what, port, family, proto) in [
        (
            "IPv6 TCP",
            v6_port,
            SocketFamily::Ipv6,
            TransportProtocol::Tcp,
        ),
        (
            "connected UDP",
            udp_port,
            SocketFamily::Ipv4,
            TransportProtocol::Udp,
        ),
        (
            "unconnected UDP sendto",
            udp_sendto_port,
            SocketFamily::Ipv4,
            TransportProtocol::Udp,
        ),
        (
            "dup2'd TCP",
            dup_port,
            SocketFamily::Ipv4,
            TransportProtocol::Tcp,
        ),
    ] {
        let e = c
            .wait_event(what, |e| connect_event(e, pid, port).is_some())
            .await;
        let conn = connect_event(&e, pid, port).unwrap();
        assert_eq!((conn.family, conn.protocol), (family, proto), "{what}");
        assert_eq!(conn.outcome, Outcome::Ok, "{what}");
        assert_eq!(e.process.pid, pid, "{what}");
    }
    drop((v6, dup_listener, early_listener));
}
