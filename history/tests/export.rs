//! Export and look-ups: the CSV parses with Python's `csv` module and holds the connections
//! with their ExecIds, labels and features; JSON lines and the filters.

mod common;

use std::process::Command;

use common::*;
use history::{
    score::FEATURE_NAMES,
    store::{
        self,
        read::{export, Filter, Format, Table},
    },
    ConnectionClose, History,
};
use protocol::TransportProtocol;

/// Three connections by two processes, one UDP flow; returns their processes' ExecIds.
fn populate(dir: &std::path::Path) -> (history::HistoryConfig, Vec<protocol::ExecId>, i64) {
    let config = config(dir);
    let mut history = History::open(&config, HOST, &engines()).unwrap();
    let t0 = now() - HOUR;
    let curl = process(10, &["curl", "https://example.org"], t0);
    let py = process(
        11,
        &[
            "python3",
            "/opt/app/client.py",
            "--name",
            "a,\"quoted\" name",
        ],
        t0,
    );
    for p in [&curl, &py] {
        history.process_exec(p, None, at(t0));
    }
    for (p, ip, port, start) in [
        (&curl, "10.1.2.3", 443, t0 + S),
        (&py, "10.1.2.4", 8080, t0 + 2 * S),
        (&py, "192.168.7.1", 22, t0 + 3 * S),
    ] {
        history.connection(p, at(start), &tcp(ip, port));
        history.connection_closed(&ConnectionClose {
            exec_id: p.exec_id,
            protocol: TransportProtocol::Tcp,
            destination_ip: ip.parse().unwrap(),
            destination_port: port,
            source_port: None,
            start: at(start),
            end: at(start + 2 * S),
            bytes_sent: 1_234,
            bytes_received: 5_678,
        });
    }
    history.connection(
        &curl,
        at(t0 + 4 * S),
        &connect(
            "10.0.0.53",
            53,
            TransportProtocol::Udp,
            protocol::Outcome::Ok,
        ),
    );
    history.close().unwrap();
    (config, vec![curl.exec_id, py.exec_id], t0)
}

#[test]
fn the_csv_export_parses_with_pythons_csv_module() {
    let dir = tempfile::tempdir().unwrap();
    let (config, ids, _) = populate(dir.path());
    let conn = store::open_read_only(&config.path).unwrap();
    let mut csv = Vec::new();
    let n = export(
        &conn,
        Table::Connections,
        &Filter::default(),
        Format::Csv,
        &mut csv,
    )
    .unwrap();
    assert_eq!(n, 3);
    let file = dir.path().join("connections.csv");
    std::fs::write(&file, &csv).unwrap();
    let script = r#"
import csv, json, sys
with open(sys.argv[1], newline="") as f:
    rows = list(csv.DictReader(f))
print(json.dumps({
    "columns": list(rows[0].keys()),
    "exec_ids": [r["exec_id"] for r in rows],
    "destinations": [r["destination"] for r in rows],
    "durations": [int(r["duration_ms"]) for r in rows],
    "bytes": [[int(r["bytes_sent"]), int(r["bytes_received"])] for r in rows],
    "labels": [r["label"] for r in rows],
    "hours": [float(r["f_hour"]) for r in rows],
}))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let columns: Vec<String> = serde_json::from_value(parsed["columns"].clone()).unwrap();
    let expected: Vec<String> = Table::Connections
        .columns()
        .iter()
        .map(|c| c.name.to_string())
        .collect();
    assert_eq!(columns, expected);
    assert!(columns.iter().any(|c| c == "label"));
    assert!(FEATURE_NAMES.iter().all(|f| columns.iter().any(|c| c == f)));
    assert_eq!(
        parsed["exec_ids"],
        serde_json::json!([ids[0].to_string(), ids[1].to_string(), ids[1].to_string()])
    );
    assert_eq!(
        parsed["destinations"],
        serde_json::json!(["10.1.2.3", "10.1.2.4", "192.168.7.1"])
    );
    assert_eq!(parsed["durations"], serde_json::json!([2000, 2000, 2000]));
    assert_eq!(parsed["bytes"][2], serde_json::json!([1234, 5678]));
    // No model yet (too little history): unscored, empty label.
    assert_eq!(parsed["labels"], serde_json::json!(["", "", ""]));

    // The processes table holds argv as JSON text, quotes and commas intact.
    let mut csv = Vec::new();
    export(
        &conn,
        Table::Processes,
        &Filter::default(),
        Format::Csv,
        &mut csv,
    )
    .unwrap();
    std::fs::write(&file, &csv).unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg("import csv,json,sys; rows=list(csv.DictReader(open(sys.argv[1],newline=''))); print(json.dumps([json.loads(r['argv']) for r in rows]))")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let argvs: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        argvs[1],
        [
            "python3",
            "/opt/app/client.py",
            "--name",
            "a,\"quoted\" name"
        ]
    );
}

fn jsonl(conn: &rusqlite::Connection, table: Table, filter: &Filter) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    export(conn, table, filter, Format::Jsonl, &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn look_ups_by_exe_destination_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let (config, ids, t0) = populate(dir.path());
    let conn = store::open_read_only(&config.path).unwrap();
    let all = jsonl(&conn, Table::Connections, &Filter::default());
    assert_eq!(all.len(), 3);
    assert_eq!(all[0]["port"], 443);
    assert_eq!(all[0]["bytes_sent"], 1234);
    assert_eq!(all[0]["start"], at(t0 + S).to_string());
    let by_exe = jsonl(
        &conn,
        Table::Connections,
        &Filter {
            exe: Some("*/python3*".into()),
            ..Filter::default()
        },
    );
    assert_eq!(by_exe.len(), 2);
    assert!(by_exe.iter().all(|r| r["exec_id"] == ids[1].to_string()));
    let by_network = jsonl(
        &conn,
        Table::Connections,
        &Filter {
            destination: Some("10.1.2.0/24".into()),
            ..Filter::default()
        },
    );
    assert_eq!(by_network.len(), 2);
    let by_address = jsonl(
        &conn,
        Table::Connections,
        &Filter {
            destination: Some("192.168.7.1".into()),
            ..Filter::default()
        },
    );
    assert_eq!(by_address.len(), 1);
    let since = jsonl(
        &conn,
        Table::Connections,
        &Filter {
            since: Some(at(t0 + 2 * S)),
            limit: Some(1),
            ..Filter::default()
        },
    );
    assert_eq!(since.len(), 1);
    assert_eq!(
        since[0]["destination"], "192.168.7.1",
        "the newest of the two since then"
    );
    let flows = jsonl(&conn, Table::UdpFlows, &Filter::default());
    assert_eq!(flows.len(), 1, "flows are written when the history closes");
    assert_eq!(flows[0]["datagrams"], 1);
    let procs = jsonl(&conn, Table::Processes, &Filter::default());
    assert_eq!(procs[1]["argv"][3], "a,\"quoted\" name");
    let error = export(
        &conn,
        Table::Processes,
        &Filter {
            destination: Some("10.0.0.1".into()),
            ..Filter::default()
        },
        Format::Csv,
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "--destination applies to connections and udp_flows, not processes"
    );
    assert!("bogus"
        .parse::<Table>()
        .unwrap_err()
        .contains("connections, udp_flows"));
}
