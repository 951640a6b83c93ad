//! Baselines on real SQLite files: learn, report novelty with its evidence, accept through
//! the store as the CLI does, stay silent, survive reopening; children, hashes, decay, forget.

mod common;

use std::time::{Duration, Instant};

use common::*;
use history::{
    detection::{CHANGED_HASH, NEW_CHILD, NEW_DESTINATION},
    store::{self, overrides},
    History, HistoryConfig, HistoryDetection, Tick,
};
use protocol::{Decision, Detector, FindingId, Process, Severity};

const CLIENT: &[&str] = &["python3", "/opt/app/client.py"];
const PROGRAM: &str = "/usr/bin/python3.11 /opt/app/client.py";

fn connect_all(
    history: &mut History,
    p: &Process,
    t: i64,
    destinations: &[(&str, u16)],
) -> Vec<HistoryDetection> {
    destinations
        .iter()
        .enumerate()
        .flat_map(|(i, (ip, port))| history.connection(p, at(t + i as i64 * S), &tcp(ip, *port)))
        .collect()
}

/// Ticks until the writer handed over the pending overrides and they were applied (the
/// writer polls every second in these tests).
fn apply_overrides(history: &mut History) -> Tick {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tick = history.tick(at(now()));
        if !tick.audit.is_empty() || Instant::now() > deadline {
            return tick;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const LEARNED: [(&str, u16); 3] = [
    ("127.0.0.1", 8001),
    ("127.0.0.2", 8002),
    ("127.0.0.3", 8003),
];
const NEW: (&str, u16) = ("127.0.0.4", 8004);

#[test]
fn learn_then_novel_then_accept_then_silent_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let t0 = now();
    let mut history = History::open(&config, HOST, &engines()).unwrap();

    // Learning: three destinations in the first hour.
    let p1 = process(100, CLIENT, t0);
    assert!(history.process_exec(&p1, None, at(t0)).is_empty());
    assert!(connect_all(&mut history, &p1, t0 + S, &LEARNED).is_empty());

    // After learning, a new process of the same program: the same three are silent, the
    // fourth is reported once, naming the program, the new destination and the learned ones.
    let t1 = t0 + 2 * HOUR;
    let p2 = process(101, CLIENT, t1);
    assert!(history.process_exec(&p2, None, at(t1)).is_empty());
    assert!(connect_all(&mut history, &p2, t1, &LEARNED).is_empty());
    let found = connect_all(&mut history, &p2, t1 + 10 * S, &[NEW]);
    assert_eq!(found.len(), 1, "{found:?}");
    let d = &found[0];
    assert_eq!(
        (d.detector, d.rule_id),
        (Detector::Baseline, NEW_DESTINATION)
    );
    assert_eq!(d.severity, Severity::Medium);
    assert_eq!(d.exec_id, p2.exec_id);
    assert_eq!(
        d.title,
        format!("New destination for {PROGRAM}: tcp 127.0.0.4:8004")
    );
    assert_eq!(d.novel, "tcp 127.0.0.4:8004");
    assert_eq!(d.subject, format!("{PROGRAM} (user alice)"));
    assert_eq!(
        d.learned,
        [
            "tcp 127.0.0.1:8001",
            "tcp 127.0.0.2:8002",
            "tcp 127.0.0.3:8003"
        ]
    );
    assert!(
        d.description.contains("tcp 127.0.0.3:8003"),
        "{}",
        d.description
    );
    let finding_id = FindingId::new(HOST, &p2.exec_id, Detector::Baseline, NEW_DESTINATION);
    assert_eq!(d.finding_id.as_ref(), Some(&finding_id));
    // Once per process.
    assert!(connect_all(&mut history, &p2, t1 + 20 * S, &[NEW]).is_empty());
    history.close().unwrap();

    // Restart: the learned destinations are still known, the new one still novel.
    let mut history = History::open(&config, HOST, &engines()).unwrap();
    let t2 = t0 + 3 * HOUR;
    let p3 = process(102, CLIENT, t2);
    history.process_exec(&p3, None, at(t2));
    assert!(connect_all(&mut history, &p3, t2, &LEARNED).is_empty());
    assert_eq!(connect_all(&mut history, &p3, t2 + 10 * S, &[NEW]).len(), 1);

    // The operator accepts the first finding, as `osprey baseline accept` does: through the
    // file, while the collector runs.
    {
        let conn = store::open(&config.path).unwrap();
        let items = overrides::novel_items(&conn, &finding_id.0).unwrap();
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(items[0].item, "tcp 127.0.0.4:8004");
        overrides::request(&conn, "accept", &finding_id.0, "alice", at(now())).unwrap();
    }
    let tick = apply_overrides(&mut history);
    assert_eq!(tick.audit.len(), 1, "{tick:?}");
    let audit = &tick.audit[0];
    assert_eq!(audit.action, "baseline_accept");
    assert_eq!(audit.decision, Decision::Executed);
    assert_eq!(audit.finding_id.as_ref(), Some(&finding_id));
    assert_eq!(audit.actor.name.as_deref(), Some("alice"));
    assert!(
        audit.result.contains("tcp 127.0.0.4:8004"),
        "{}",
        audit.result
    );

    // Silent from now on, also after a restart.
    let p4 = process(103, CLIENT, t2 + HOUR);
    history.process_exec(&p4, None, at(t2 + HOUR));
    assert!(connect_all(&mut history, &p4, t2 + HOUR, &[NEW]).is_empty());
    history.close().unwrap();
    let mut history = History::open(&config, HOST, &engines()).unwrap();
    let p5 = process(104, CLIENT, t2 + 2 * HOUR);
    history.process_exec(&p5, None, at(t2 + 2 * HOUR));
    assert!(connect_all(&mut history, &p5, t2 + 2 * HOUR, &[NEW]).is_empty());
    assert!(connect_all(&mut history, &p5, t2 + 2 * HOUR, &LEARNED).is_empty());
    // The override is marked applied; the accepted connection is labelled for training.
    history.close().unwrap();
    let conn = store::open_read_only(&config.path).unwrap();
    let status = overrides::list(&conn, None, 10).unwrap();
    assert_eq!(status.len(), 1);
    assert!(status[0].applied.is_some());
    assert!(
        status[0].result.as_deref().unwrap().starts_with("accepted"),
        "{status:?}"
    );
    let label: String = conn
        .query_row(
            "SELECT label FROM connections WHERE exec_id = ?1 AND destination = '127.0.0.4'",
            [p2.exec_id.to_string()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(label, "accepted");
}

#[test]
fn a_new_program_learns_on_its_own_clock() {
    let dir = tempfile::tempdir().unwrap();
    let mut history = History::open(&config(dir.path()), HOST, &engines()).unwrap();
    let t0 = now();
    let old = process(200, CLIENT, t0);
    history.process_exec(&old, None, at(t0));
    connect_all(&mut history, &old, t0, &LEARNED);
    // Hours later, a program never seen before: it learns first, whatever the others do.
    let t1 = t0 + 5 * HOUR;
    let new = process(201, &["python3", "/opt/app/other.py"], t1);
    history.process_exec(&new, None, at(t1));
    assert!(connect_all(&mut history, &new, t1 + S, &[NEW]).is_empty());
    let later = process(202, &["python3", "/opt/app/other.py"], t1 + 2 * HOUR);
    history.process_exec(&later, None, at(t1 + 2 * HOUR));
    assert!(connect_all(&mut history, &later, t1 + 2 * HOUR, &[NEW]).is_empty());
    assert_eq!(
        connect_all(&mut history, &later, t1 + 2 * HOUR, &LEARNED[..1]).len(),
        1
    );
    // The same script run by another user is another identity.
    let other_user = Process {
        user: Some("bob".into()),
        uid: 1001,
        ..process(203, CLIENT, t1)
    };
    history.process_exec(&other_user, None, at(t1));
    assert!(connect_all(&mut history, &other_user, t1 + S, &[("10.0.0.1", 1)]).is_empty());
    history.close().unwrap();
}

#[test]
fn a_shell_under_a_server_and_a_changed_binary_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut history = History::open(&config(dir.path()), HOST, &engines()).unwrap();
    let t0 = now();
    let sshd = ancestor(300, "/usr/sbin/sshd", &["sshd", "-D"]);
    let hashed = |pid, argv: &[&str], t, sha: &str| Process {
        sha256: Some(sha.to_string()),
        ..process(pid, argv, t)
    };
    // Learning: sshd starts sshd (privilege separation) and bash (logins).
    assert!(history
        .process_exec(&hashed(301, &["sshd", "-R"], t0, "aa"), Some(&sshd), at(t0))
        .is_empty());
    assert!(history
        .process_exec(&hashed(302, &["bash"], t0, "bb"), Some(&sshd), at(t0))
        .is_empty());
    // After learning: a python child is new, and bash has a new hash.
    let t1 = t0 + 2 * HOUR;
    let found = history.process_exec(
        &hashed(303, &["python3", "-c", "import pty"], t1, "cc"),
        Some(&sshd),
        at(t1),
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].rule_id, NEW_CHILD);
    assert_eq!(found[0].severity, Severity::High);
    assert_eq!(
        found[0].title,
        "New child of /usr/sbin/sshd: /usr/bin/python3.11 -c"
    );
    assert_eq!(found[0].learned, ["/usr/bin/bash", "/usr/sbin/sshd"]);
    let found = history.process_exec(&hashed(304, &["bash"], t1, "dd"), Some(&sshd), at(t1));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].rule_id, CHANGED_HASH);
    assert_eq!(found[0].novel, "dd");
    assert_eq!(found[0].learned, ["bb"]);
    // A hash that arrives after the exec is checked when it arrives.
    let late = process(305, &["bash"], t1);
    assert!(history.process_exec(&late, Some(&sshd), at(t1)).is_empty());
    let hashed_late = Process {
        sha256: Some("ee".into()),
        ..late
    };
    let found = history.process_hashed(&hashed_late, at(t1 + S));
    assert_eq!(
        found.iter().map(|d| d.rule_id).collect::<Vec<_>>(),
        [CHANGED_HASH]
    );
    history.close().unwrap();
}

#[test]
fn items_unseen_for_the_decay_period_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let mut config: HistoryConfig = config(dir.path());
    config.baseline.expire_after_days = 1.0;
    let mut history = History::open(&config, HOST, &engines()).unwrap();
    let t0 = now() - 3 * 24 * HOUR;
    let p = process(400, CLIENT, t0);
    history.process_exec(&p, None, at(t0));
    connect_all(&mut history, &p, t0, &LEARNED);
    // Two days later only the first destination was used again in between.
    let p2 = process(401, CLIENT, t0 + 30 * HOUR);
    assert!(connect_all(&mut history, &p2, t0 + 30 * HOUR, &LEARNED[..1]).is_empty());
    history.tick(at(t0 + 48 * HOUR));
    assert_eq!(history.baseline().status(t0 + 48 * HOUR).destinations, 1);
    let p3 = process(402, CLIENT, t0 + 49 * HOUR);
    let found = connect_all(&mut history, &p3, t0 + 49 * HOUR, &LEARNED);
    assert_eq!(
        found.iter().map(|d| d.novel.as_str()).collect::<Vec<_>>(),
        ["tcp 127.0.0.2:8002", "tcp 127.0.0.3:8003"]
    );
    history.close().unwrap();
}

#[test]
fn forget_makes_a_program_learn_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let mut history = History::open(&config, HOST, &engines()).unwrap();
    let t0 = now() - 5 * HOUR;
    let p = process(500, CLIENT, t0);
    history.process_exec(&p, None, at(t0));
    connect_all(&mut history, &p, t0, &LEARNED);
    {
        let conn = store::open(&config.path).unwrap();
        overrides::request(&conn, "forget", "/opt/app/client.py", "root", at(now())).unwrap();
    }
    let tick = apply_overrides(&mut history);
    assert_eq!(tick.audit.len(), 1);
    assert_eq!(tick.audit[0].action, "baseline_forget");
    assert!(
        tick.audit[0].result.starts_with("forgot 1 "),
        "{}",
        tick.audit[0].result
    );
    // Seen again now: learning from scratch, so nothing is novel.
    let t1 = now();
    let p2 = process(501, CLIENT, t1);
    history.process_exec(&p2, None, at(t1));
    assert!(connect_all(&mut history, &p2, t1, &[NEW]).is_empty());
    history.close().unwrap();
    let history = History::open(&config, HOST, &engines()).unwrap();
    assert_eq!(
        history.baseline().status(t1).destinations,
        1,
        "only the relearned one"
    );
    history.close().unwrap();
}
