//! The host's history end to end: the real collector (eBPF in this kernel, close records from
//! `inet_sock_set_state`), its SQLite history, and the `osprey history` / `osprey baseline`
//! commands, with real processes and real loopback sockets.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use osprey_tests::{collector::Collector, eventually, marker, workload};
use protocol::{Detector, Event, EventDetail, ExecId, Finding};

const NEW_DESTINATION: &str = "baseline.new-destination";

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        Host {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn db(&self) -> PathBuf {
        self.path("history.db")
    }

    /// A collector without NATS (JSON lines), its history in this host's directory, with
    /// `history` YAML (indented under `history:`).
    async fn collector(&self, history: &str) -> Collector {
        let config = self.path("collector.yaml");
        let text = format!(
            "actuator:\n  enabled: false\nhistory:\n  path: {db}\n{history}",
            db = self.db().display()
        );
        std::fs::write(&config, text).unwrap();
        Collector::start_offline(&config, &["--history-db", &self.db().display().to_string()]).await
    }

    /// `osprey ARGS --db <this host's history>`.
    fn osprey(&self, args: &[&str]) -> Output {
        let out = Command::new(osprey_tests::bin_dir().join("osprey"))
            .args(args)
            .arg("--db")
            .arg(self.db())
            .output()
            .expect("osprey runs");
        assert!(
            out.status.success(),
            "osprey {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// A listener on 127.0.0.`last` that accepts and drops connections, until the test ends.
fn listener(last: u8) -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::new(127, 0, 0, last), 0)).expect("bind loopback");
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            drop(conn);
        }
    });
    addr
}

/// A Python program of this run's own (its identity is its script path) that connects to
/// each address given and closes.
fn beacon(host: &Host) -> PathBuf {
    let path = host.path(&format!("{}.py", marker("beacon")));
    std::fs::write(
        &path,
        "import socket, sys\nfor a in sys.argv[1:]:\n    h, p = a.rsplit(':', 1)\n    socket.create_connection((h, int(p))).close()\n",
    )
    .unwrap();
    path
}

/// Runs the beacon against `targets`; returns its ExecId once the collector reported all
/// its connects.
async fn run_beacon(collector: &Collector, script: &Path, targets: &[SocketAddr]) -> ExecId {
    let status = Command::new(workload::PYTHON)
        .arg(script)
        .args(targets.iter().map(|t| t.to_string()))
        .status()
        .unwrap();
    assert!(status.success());
    let script = script.display().to_string();
    let ports: Vec<u16> = targets.iter().map(|t| t.port()).collect();
    let seen = eventually(Duration::from_secs(20), || {
        let connects = collector.events(|e| {
            e.process.argv.get(1) == Some(&script)
                && matches!(&e.detail, EventDetail::Connect(c) if ports.contains(&c.destination_port))
        });
        let last = connects.last()?;
        let mine: Vec<&Event> = connects
            .iter()
            .filter(|e| e.process.exec_id == last.process.exec_id)
            .collect();
        (mine.len() >= targets.len()).then_some(last.process.exec_id)
    })
    .await;
    let exec_id = seen.expect("the beacon's connects are reported");
    // A finding follows its event at once; give the output a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    exec_id
}

fn baseline_findings(collector: &Collector, exec_id: ExecId) -> Vec<Finding> {
    collector.findings(|f| f.detector == Detector::Baseline && f.process.exec_id == exec_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_learns_its_destinations_reports_a_new_one_and_an_accept_silences_it() {
    let host = Host::new();
    let learning = "  baseline:\n    prefix_v4: 32\n    learning_period_hours: 0.00139\n    overrides_poll_secs: 1\n  scoring:\n    enabled: false\n";
    let collector = host.collector(learning).await;
    let learned: Vec<SocketAddr> = (2..=4).map(listener).collect();
    let fourth = listener(5);
    let script = beacon(&host);

    // Learning (5 s from the program's first run): three destinations.
    let first = run_beacon(&collector, &script, &learned).await;
    assert!(baseline_findings(&collector, first).is_empty());
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Learned: the same three are normal.
    let again = run_beacon(&collector, &script, &learned).await;
    assert!(
        baseline_findings(&collector, again).is_empty(),
        "learned destinations raise nothing"
    );

    // A fourth is new: one finding, naming the program, the new destination and the learned.
    let novel = run_beacon(&collector, &script, &[learned[0], fourth]).await;
    let found = baseline_findings(&collector, novel);
    assert_eq!(found.len(), 1, "{found:#?}");
    let finding = &found[0];
    assert_eq!(finding.rule_id, NEW_DESTINATION);
    let text = format!(
        "{} {}",
        finding.title,
        finding.description.as_deref().unwrap_or("")
    );
    assert!(
        text.contains(&script.display().to_string()),
        "names the program: {text}"
    );
    assert!(
        text.contains(&fourth.ip().to_string()),
        "names the new destination: {text}"
    );
    for l in &learned {
        assert!(
            text.contains(&l.ip().to_string()),
            "lists learned {l}: {text}"
        );
    }

    // Accepted: the next connect to it is silent.
    let id = finding.id.to_string();
    host.osprey(&["baseline", "accept", &id, "--wait", "10"]);
    let after = run_beacon(&collector, &script, &[fourth]).await;
    assert!(baseline_findings(&collector, after).is_empty());

    // The baseline survives a restart: still silent for the accepted one, still reporting
    // a destination it never learned.
    drop(collector);
    let collector = host.collector(learning).await;
    let restarted = run_beacon(&collector, &script, &[fourth, learned[1]]).await;
    assert!(baseline_findings(&collector, restarted).is_empty());
    let sixth = listener(6);
    let novel = run_beacon(&collector, &script, &[sixth]).await;
    assert_eq!(baseline_findings(&collector, novel).len(), 1);
}

/// Serves one connection: reads 1,234 bytes, answers 5,678, waits for the client to close.
fn echo_server() -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut request = vec![0u8; 1234];
        s.read_exact(&mut request).unwrap();
        s.write_all(&[7u8; 5678]).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    addr
}

const HOLD_TWO_SECONDS: &str = r#"
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
start = time.monotonic()
s.sendall(b"x" * 1234)
got = 0
while got < 5678:
    got += len(s.recv(65536))
time.sleep(max(0.0, 2.0 - (time.monotonic() - start)))
s.close()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_stored_with_its_duration_and_bytes_and_exported_as_csv() {
    let host = Host::new();
    let collector = host.collector("").await;
    let server = echo_server();
    let status = Command::new(workload::PYTHON)
        .args(["-c", HOLD_TWO_SECONDS, &server.port().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    // The kernel's close record, published as an event of the connecting process.
    let close = collector
        .wait_event(
            "close",
            |e| matches!(&e.detail, EventDetail::Close(c) if c.destination_port == server.port()),
        )
        .await;
    let EventDetail::Close(c) = &close.detail else {
        unreachable!()
    };
    assert_eq!((c.bytes_sent, c.bytes_received), (1234, 5678));
    let secs = c.duration_until(close.time).as_secs_f64();
    assert!((1.8..=2.2).contains(&secs), "held {secs} s");
    let exec_id = close.process.exec_id.to_string();

    // The history row: duration and bytes, once the writer has it.
    let row = eventually(Duration::from_secs(10), || {
        let out = host.osprey(&[
            "history",
            "query",
            "--table",
            "connections",
            "--exec-id",
            &exec_id,
            "--format",
            "jsonl",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|r| r["port"] == server.port() && !r["duration_ms"].is_null())
    })
    .await
    .expect("the connection is in the history");
    let ms = row["duration_ms"].as_u64().unwrap();
    assert!((1800..=2200).contains(&ms), "{row}");
    assert_eq!(row["bytes_sent"], 1234, "{row}");
    assert_eq!(row["bytes_received"], 5678, "{row}");

    // The CSV export parses with Python's csv module and holds it with its ExecId.
    let csv = host.path("connections.csv");
    host.osprey(&[
        "history",
        "export",
        "--table",
        "connections",
        "--since",
        "1h",
        "--format",
        "csv",
        "--out",
        &csv.display().to_string(),
    ]);
    let script = r#"
import csv, json, sys
with open(sys.argv[1], newline="") as f:
    rows = list(csv.DictReader(f))
print(json.dumps([[r["exec_id"], r["port"], r["bytes_sent"], r["bytes_received"]] for r in rows]))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<[String; 4]> = serde_json::from_slice(&out.stdout).unwrap();
    let wanted = [
        exec_id,
        server.port().to_string(),
        "1234".into(),
        "5678".into(),
    ];
    assert!(rows.contains(&wanted), "{wanted:?} in {rows:?}");
}

/// `count` processes with `marker` (and `pad` bytes of padding) in their argv, 20 at a time.
fn exec_storm(mark: &str, count: usize, pad: usize) {
    let padding = "p".repeat(pad);
    let script = format!(
        "for i in $(seq {count}); do /bin/true {mark}-$i {padding} & if [ $((i % 20)) = 0 ]; then wait; fi; done; wait"
    );
    let status = Command::new("/bin/sh")
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The stored program images started with `mark-N` as their first argument.
fn stored_processes(host: &Host, mark: &str) -> usize {
    let out = host.osprey(&[
        "history",
        "export",
        "--table",
        "processes",
        "--format",
        "jsonl",
    ]);
    let prefix = format!("{mark}-");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| {
            r["argv"][1]
                .as_str()
                .is_some_and(|a| a.starts_with(&prefix))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_storm_is_stored_in_full_and_a_size_bound_deletes_and_counts() {
    const STORM: usize = 2_000;
    let host = Host::new();
    let collector = host.collector("").await;
    let mark = marker("storm");
    exec_storm(&mark, STORM, 0);
    let stored = eventually(Duration::from_secs(30), || {
        let n = stored_processes(&host, &mark);
        (n >= STORM).then_some(n)
    })
    .await;
    assert_eq!(
        stored,
        Some(STORM),
        "every process of the storm has its row (found {})",
        stored_processes(&host, &mark)
    );
    drop(collector);

    // Bound to 1 MB: the oldest rows go, and the heartbeat says how many.
    let bounded = Host::new();
    let collector = bounded
        .collector("  retention:\n    max_size_mb: 1\n    check_interval_secs: 1\n")
        .await;
    exec_storm(&marker("bounded"), STORM, 600);
    let deleted = eventually(Duration::from_secs(30), || {
        let out = bounded.osprey(&["history", "status"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains("processes rows deleted by size"))
            .map(String::from)
    })
    .await
    .expect("retention deleted process rows and reports how many");
    let size = std::fs::metadata(bounded.db())
        .map(|m| m.len())
        .unwrap_or(0);
    println!("bounded store: {deleted}; file {size} bytes");
    drop(collector);
}
