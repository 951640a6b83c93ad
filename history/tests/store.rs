//! The store on real SQLite files: every row written, retention to a size bound, a full
//! queue counted, migrations leaving other parts' tables alone.

mod common;

use common::*;
use history::{
    store::{self, record::ConnectionRow},
    History, Record,
};
use protocol::ExitEvent;

fn count(conn: &rusqlite::Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn an_exec_storm_of_two_thousand_processes_is_written_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let mut history = History::open(&config, HOST, &engines()).unwrap();
    let t0 = now();
    let parent = ancestor(1, "/usr/bin/bash", &["bash"]);
    for pid in 10..2010 {
        let p = process(pid, &["/usr/bin/true", &pid.to_string()], t0);
        history.process_exec(&p, Some(&parent), at(t0));
        history.process_exited(&p.exec_id, at(t0 + S), &ExitEvent::from_wait_status(0));
    }
    let stats = history.stats();
    history.close().unwrap();
    assert_eq!(stats.store.dropped, 0);

    let conn = store::open_read_only(&config.path).unwrap();
    assert_eq!(count(&conn, "processes"), 2000);
    let ended: i64 = conn
        .query_row(
            "SELECT count(*) FROM processes WHERE end_ns IS NOT NULL AND exit_code = 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ended, 2000);
    for pid in [10, 1000, 2009] {
        let argv: String = conn
            .query_row(
                "SELECT argv FROM processes WHERE exec_id = ?1",
                [exec_id(pid).to_string()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(argv, format!("[\"/usr/bin/true\",\"{pid}\"]"));
    }
}

fn connection_row(pid: u32, start: i64) -> ConnectionRow {
    ConnectionRow {
        exec_id: exec_id(pid),
        exe: "/usr/bin/curl".into(),
        protocol: "tcp",
        destination: "10.1.2.3".parse().unwrap(),
        port: 443,
        source_port: Some(40_000),
        outcome: "ok",
        start: at(start),
        end: Some(at(start + S)),
        bytes_sent: Some(1234),
        bytes_received: Some(5678),
        score: Some(0.4),
        label: Some(history::score::Label::Normal),
        features: Some([0.5; history::score::FEATURE_COUNT]),
    }
}

/// Every column of every connection row, in insertion order.
fn connection_rows(conn: &rusqlite::Connection) -> Vec<Vec<rusqlite::types::Value>> {
    let mut statement = conn
        .prepare("SELECT * FROM connections ORDER BY id")
        .unwrap();
    let columns = statement.column_count();
    statement
        .query_map([], |r| (0..columns).map(|i| r.get(i)).collect())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_connection_closed_in_the_batch_it_opened_in_is_written_as_the_update_would_leave_it() {
    // The same records, once in one batch (the writer pairs the close with its connect and
    // inserts the finished row) and once with a flush before the close (insert, then the
    // update): the rows must be the same.
    let t = now();
    let rows = |one_batch: bool| {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.batch_interval_ms = 2_000; // all sent below is gathered into one batch
        let history = History::open(&config, HOST, &engines()).unwrap();
        let handle = history.handle();
        let open = |source_port| ConnectionRow {
            outcome: "pending",
            end: None,
            bytes_sent: None,
            bytes_received: None,
            score: None,
            label: None,
            features: None,
            source_port: Some(source_port),
            ..connection_row(7, t)
        };
        assert!(handle.record(Record::Connect(open(40_000))));
        // Another socket of the same process to the same destination stays open.
        assert!(handle.record(Record::Connect(open(40_001))));
        if !one_batch {
            handle.flush().unwrap();
        }
        // Established a little after the connect: the duration is the close's.
        let close = ConnectionRow {
            end: Some(at(t + 3 * S)),
            ..connection_row(7, t + S / 10)
        };
        assert!(handle.record(Record::Close(close)));
        let stats = history.stats();
        history.close().unwrap();
        assert_eq!(stats.store.dropped, 0);
        connection_rows(&store::open_read_only(&config.path).unwrap())
    };
    let paired = rows(true);
    assert_eq!(paired, rows(false));
    assert_eq!(paired.len(), 2, "{paired:?}");
}

#[test]
fn retention_keeps_the_file_under_one_megabyte_deleting_the_oldest_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.retention.max_size_mb = 1.0;
    config.retention.check_interval_secs = 3600; // enforced on demand below
                                                 // Another part's table in the same file, created before the history opened it.
    {
        let conn = store::open(&config.path).unwrap();
        conn.execute_batch(
            "CREATE TABLE intel_verdicts (key TEXT PRIMARY KEY, verdict TEXT);
             INSERT INTO intel_verdicts VALUES ('sha256:ab', 'malicious');",
        )
        .unwrap();
    }
    let history = History::open(&config, HOST, &engines()).unwrap();
    let handle = history.handle();
    let t0 = now() - 10 * HOUR;
    let rows = 12_000;
    for i in 0..rows {
        while !handle.record(Record::Close(connection_row(i as u32, t0 + i * S))) {
            handle.flush().unwrap(); // this test wants every row in; drops are tested below
        }
    }
    handle.flush().unwrap();
    let before = std::fs::metadata(&config.path).unwrap().len();
    assert!(
        before > 2 << 20,
        "the test must overfill the bound: {before}"
    );
    let report = handle.enforce_retention().unwrap();
    let stats = handle.stats();
    history.close().unwrap();

    let now_deleted: u64 = report
        .deletions
        .iter()
        .filter(|(t, reason, _)| *t == "connections" && *reason == "size")
        .map(|(_, _, n)| n)
        .sum();
    assert!(now_deleted > 0, "{report:?}");
    let size = std::fs::metadata(&config.path).unwrap().len();
    assert!(size <= 1 << 20, "file is {size} bytes after retention");
    assert!(report.file_bytes <= 1 << 20);

    let conn = store::open_read_only(&config.path).unwrap();
    // The writer may also have enforced the bound while the rows arrived: every pass is
    // counted in the stats and logged in the file.
    let logged: i64 = conn
        .query_row(
            "SELECT sum(rows) FROM retention_log WHERE table_name = 'connections' AND reason = 'size'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let deleted = logged as u64;
    assert!(deleted >= now_deleted);
    assert_eq!(stats.deleted.get("connections"), Some(&deleted));
    let left = count(&conn, "connections");
    assert_eq!(left as u64 + deleted, rows as u64);
    // The oldest went, the newest stayed.
    let (oldest, newest): (i64, i64) = conn
        .query_row(
            "SELECT min(start_ns), max(start_ns) FROM connections",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(newest, t0 + (rows - 1) * S);
    assert_eq!(oldest, t0 + deleted as i64 * S);
    // Another part's table is untouched.
    assert_eq!(count(&conn, "intel_verdicts"), 1);
}

#[test]
fn retention_by_age_deletes_rows_older_than_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let history = History::open(&config, HOST, &engines()).unwrap();
    let handle = history.handle();
    let day = 24 * HOUR;
    let t = now();
    for (pid, start) in [
        (1, t - 40 * day),
        (2, t - 31 * day),
        (3, t - 29 * day),
        (4, t),
    ] {
        assert!(handle.record(Record::Close(connection_row(pid, start))));
    }
    let report = handle.enforce_retention().unwrap();
    history.close().unwrap();
    assert_eq!(report.deletions, [("connections", "age", 2)]);
    let conn = store::open_read_only(&config.path).unwrap();
    assert_eq!(count(&conn, "connections"), 2);
}

#[test]
fn a_full_queue_drops_and_counts_and_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.queue_capacity = 8;
    config.batch_max = 1;
    let history = History::open(&config, HOST, &engines()).unwrap();
    let handle = history.handle();
    // Another connection holds the write lock: the writer thread gets stuck on its first
    // batch (for up to its 5 s busy timeout), and the queue fills up behind it.
    let blocker = store::open(&config.path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let t = now();
    let mut sent = 0u64;
    let mut row = || {
        sent += 1;
        Record::Close(connection_row(sent as u32, t + sent as i64))
    };
    // Fill the queue; once the writer is stuck, refusals stay refusals.
    let mut accepted = 0u64;
    let mut refused = 0u64;
    let mut refused_in_a_row = 0;
    while refused_in_a_row < 5 {
        if handle.record(row()) {
            accepted += 1;
            refused_in_a_row = 0;
        } else {
            refused += 1;
            refused_in_a_row += 1;
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            accepted <= 8 + 2,
            "the writer holds one record, the queue eight"
        );
    }
    // Full: every further record is refused at once and counted, none waits.
    for _ in 0..1_000 {
        assert!(!handle.record(row()));
        refused += 1;
    }
    let stats = handle.stats();
    assert_eq!(stats.dropped, refused);
    blocker.execute_batch("COMMIT").unwrap();
    handle.flush().unwrap();
    let stats = handle.stats();
    assert_eq!(
        (stats.written, stats.dropped),
        (accepted, refused),
        "{stats:?}"
    );
    assert_eq!(stats.written + stats.dropped, sent);
    assert_eq!(stats.failed, 0, "{stats:?}");
    history.close().unwrap();
    let conn = store::open_read_only(&config.path).unwrap();
    assert_eq!(count(&conn, "connections") as u64, stats.written);
}

/// destination, outcome, duration_ms, bytes_sent, bytes_received, source_port
type ConnectionSummary = (
    String,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

#[test]
fn tcp_closes_complete_their_connect_rows_with_duration_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let mut history = History::open(&config, HOST, &engines()).unwrap();
    let t0 = now();
    let p = process(42, &["curl", "https://example.org"], t0);
    history.process_exec(&p, None, at(t0));
    let mut c = tcp("10.1.2.3", 443);
    c.source_port = Some(40_001);
    history.connection(&p, at(t0 + S), &c);
    history.connection_closed(&history::ConnectionClose {
        exec_id: p.exec_id,
        protocol: protocol::TransportProtocol::Tcp,
        destination_ip: c.destination_ip,
        destination_port: 443,
        source_port: Some(40_001),
        start: at(t0 + S),
        end: at(t0 + 3 * S),
        bytes_sent: 1_234,
        bytes_received: 5_678,
    });
    // A refused connect is complete at once.
    history.connection(
        &p,
        at(t0 + 4 * S),
        &connect(
            "10.9.9.9",
            25,
            protocol::TransportProtocol::Tcp,
            protocol::Outcome::Refused,
        ),
    );
    history.close().unwrap();
    let conn = store::open_read_only(&config.path).unwrap();
    let rows: Vec<ConnectionSummary> = conn
        .prepare(
            "SELECT destination, outcome, duration_ms, bytes_sent, bytes_received, source_port
             FROM connections ORDER BY start_ns",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        [
            (
                "10.1.2.3".into(),
                "ok".into(),
                Some(2_000),
                Some(1_234),
                Some(5_678),
                Some(40_001)
            ),
            (
                "10.9.9.9".into(),
                "refused".into(),
                Some(0),
                None,
                None,
                None
            ),
        ]
    );
}

#[test]
fn udp_datagrams_become_flows() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let mut history = History::open(&config, HOST, &engines()).unwrap();
    let t0 = now();
    let p = process(7, &["/usr/bin/dig", "example.org"], t0);
    let dns = connect(
        "10.0.0.53",
        53,
        protocol::TransportProtocol::Udp,
        protocol::Outcome::Ok,
    );
    for i in 0..5 {
        history.connection(&p, at(t0 + i * S), &dns);
    }
    // Idle for longer than udp.idle_secs: the flow is written.
    history.tick(at(t0 + 4 * S + 61 * S));
    assert_eq!(history.stats().udp_flows, 0);
    history.close().unwrap();
    let conn = store::open_read_only(&config.path).unwrap();
    let (datagrams, first, last): (i64, i64, i64) = conn
        .query_row(
            "SELECT datagrams, first_ns, last_ns FROM udp_flows",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((datagrams, first, last), (5, t0, t0 + 4 * S));
}

#[test]
fn a_file_from_a_newer_osprey_is_refused_with_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    {
        let conn = store::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let error = store::open(&path).unwrap_err().to_string();
    assert!(
        error.contains("99") && error.contains(&path.display().to_string()),
        "{error}"
    );
    let error = store::open_read_only(&path).unwrap_err().to_string();
    assert!(error.contains("99"), "{error}");
    // Reopening a current file migrates nothing and keeps its rows.
    let other = dir.path().join("ok.db");
    store::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE intel_verdicts (k TEXT)")
        .unwrap();
    let conn = store::open(&other).unwrap();
    let version: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, store::schema::VERSION);
    assert!(conn.prepare("SELECT k FROM intel_verdicts").is_ok());
}

#[test]
fn samples_and_findings_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let mut history = History::open(&config, HOST, &engines()).unwrap();
    let t = now();
    let p = process(77, &["curl", "https://example.org"], t);
    history.sample(&p.exec_id, at(t), 12.5, 42 << 20);
    let finding = protocol::Finding {
        id: protocol::FindingId::new(HOST, &p.exec_id, protocol::Detector::Policy, "r1"),
        time: at(t),
        host: HOST.into(),
        detector: protocol::Detector::Policy,
        rule_id: "r1".into(),
        title: "Curl to the internet".into(),
        description: None,
        author: None,
        severity: protocol::Severity::Low,
        tags: vec![],
        process: p.clone(),
        ancestry: vec![],
        triggers: vec![],
        recommended_actions: vec![],
    };
    history.finding(&finding);
    history.finding(&finding); // a repeat replaces its row
    history.close().unwrap();
    let conn = store::open_read_only(&config.path).unwrap();
    let (cpu, rss): (f64, i64) = conn
        .query_row("SELECT cpu_percent, rss_bytes FROM samples", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((cpu, rss), (12.5, 42 << 20));
    assert_eq!(count(&conn, "findings"), 1);
    let (id, json): (String, String) = conn
        .query_row("SELECT id, finding FROM findings", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(id, finding.id.0);
    let stored: protocol::Finding = serde_json::from_str(&json).unwrap();
    assert_eq!(stored, finding);
}
