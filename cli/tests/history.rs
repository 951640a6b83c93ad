//! `osprey history` and `osprey baseline` on a real history file written by the history
//! crate as the collector writes it.

use std::{path::Path, process::Command};

use history::{History, HistoryConfig};
use protocol::{
    ConnectEvent, ConnectHook, Outcome, Process, SocketFamily, Timestamp, TransportProtocol,
};

const S: i64 = 1_000_000_000;
const HOUR: i64 = 3_600 * S;

fn osprey(db: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_osprey"))
        .args(args)
        .arg("--db")
        .arg(db)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn process(pid: u32, t: i64) -> Process {
    Process {
        user: Some("alice".into()),
        start_time: Timestamp::from_unix_nanos(t),
        ..Process::new(
            format!("4cd11df2-{pid}-{pid}-0").parse().unwrap(),
            "/usr/bin/python3",
            vec!["python3".into(), "/opt/app/client.py".into()],
        )
    }
}

fn tcp(ip: &str, port: u16) -> ConnectEvent {
    ConnectEvent {
        family: SocketFamily::Ipv4,
        protocol: TransportProtocol::Tcp,
        destination_ip: ip.parse().unwrap(),
        destination_port: port,
        source_ip: None,
        source_port: None,
        outcome: Outcome::Refused,
        errno: None,
        hook: ConnectHook::Connect,
        late_outcome: false,
    }
}

fn config(dir: &Path) -> HistoryConfig {
    let mut c = HistoryConfig {
        path: dir.join("history.db"),
        ..HistoryConfig::default()
    };
    c.baseline.learning_period_hours = 1.0;
    c.baseline.prefix_v4 = 32;
    c.baseline.overrides_poll_secs = 1;
    c
}

#[test]
fn export_show_accept_and_forget_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let db = config.path.clone();
    let engines = vec!["python*".to_string()];
    let t0 = Timestamp::now().unix_nanos() - 5 * HOUR;
    let mut history = History::open(&config, "h", &engines).unwrap();
    let learner = process(100, t0);
    history.process_exec(&learner, None, Timestamp::from_unix_nanos(t0));
    history.connection(
        &learner,
        Timestamp::from_unix_nanos(t0 + S),
        &tcp("127.0.0.1", 8001),
    );
    let later = process(101, t0 + 2 * HOUR);
    let t1 = Timestamp::from_unix_nanos(t0 + 2 * HOUR);
    history.process_exec(&later, None, t1);
    let found = history.connection(&later, t1, &tcp("127.0.0.4", 8004));
    let finding_id = found[0].finding_id.clone().unwrap();
    history.close().unwrap();

    // Export: CSV that Python's csv module reads, with the ExecIds.
    let (ok, csv, err) = osprey(
        &db,
        &[
            "history",
            "export",
            "--table",
            "connections",
            "--since",
            "24h",
        ],
    );
    assert!(ok, "{err}");
    let file = dir.path().join("c.csv");
    std::fs::write(&file, csv).unwrap();
    let out = Command::new("python3")
        .args(["-c", "import csv,sys; print(' '.join(r['exec_id'] for r in csv.DictReader(open(sys.argv[1], newline=''))))"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{} {}", learner.exec_id, later.exec_id)
    );
    let (ok, jsonl, _) = osprey(
        &db,
        &[
            "history",
            "query",
            "--destination",
            "127.0.0.4",
            "--format",
            "jsonl",
        ],
    );
    assert!(ok);
    assert_eq!(jsonl.lines().count(), 1);
    assert!(jsonl.contains("\"outcome\":\"refused\""), "{jsonl}");
    let (ok, status, _) = osprey(&db, &["history", "status"]);
    assert!(ok && status.contains("connections   2 rows"), "{status}");

    // Show: the learned and the novel destination of the script.
    let (ok, show, err) = osprey(&db, &["baseline", "show", "/opt/app/client.py"]);
    assert!(ok, "{err}");
    assert!(
        show.contains("tcp 127.0.0.1:8001") && show.contains("learned"),
        "{show}"
    );
    assert!(
        show.contains("tcp 127.0.0.4:8004") && show.contains("novel"),
        "{show}"
    );

    // Accept: an unknown id is refused; a known one is recorded, and the collector applies it
    // when it starts (or within seconds while it runs).
    let (ok, _, err) = osprey(
        &db,
        &["baseline", "accept", "4cd11df2-1-1-0-0000000000000000"],
    );
    assert!(!ok && err.contains("no baseline novelty recorded"), "{err}");
    let (ok, out, err) = osprey(&db, &["baseline", "accept", &finding_id.0]);
    assert!(ok, "{err}");
    assert!(
        out.contains("accepting destination tcp 127.0.0.4:8004"),
        "{out}"
    );
    let (ok, status, _) = osprey(&db, &["baseline", "status"]);
    assert!(ok && status.contains("waiting      1 "), "{status}");

    let mut history = History::open(&config, "h", &engines).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let audit = loop {
        let tick = history.tick(Timestamp::now());
        if !tick.audit.is_empty() || std::time::Instant::now() > deadline {
            break tick.audit;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(audit.len(), 1);
    let again = process(102, t0 + 3 * HOUR);
    let t2 = Timestamp::from_unix_nanos(t0 + 3 * HOUR);
    history.process_exec(&again, None, t2);
    assert!(history
        .connection(&again, t2, &tcp("127.0.0.4", 8004))
        .is_empty());
    history.close().unwrap();
    let (_, show, _) = osprey(&db, &["baseline", "show", "/usr/bin/python3"]);
    assert!(show.contains("accepted"), "{show}");

    // Forget with --wait and no collector running: recorded, and the wait says so.
    let (ok, _, err) = osprey(
        &db,
        &["baseline", "forget", "/opt/app/client.py", "--wait", "1"],
    );
    assert!(!ok && err.contains("not applied within 1 s"), "{err}");
    let (ok, _, err) = osprey(&db, &["baseline", "forget", "/usr/bin/nothing"]);
    assert!(
        !ok && err.contains("nothing learned for /usr/bin/nothing"),
        "{err}"
    );
}
