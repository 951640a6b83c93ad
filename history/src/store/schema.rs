//! The schema, as a list of migrations: step N brings `PRAGMA user_version` from N to N+1
//! inside one transaction. Never edit a released step; add one. Tables this crate does not
//! know (another part's, e.g. an intel verdict cache) are never touched.

use rusqlite::{Connection, Transaction};

use crate::{score::FEATURE_NAMES, HistoryError};

/// Tables of time-ordered rows: what retention deletes, oldest first, by this time column.
pub const TIME_SERIES: &[(&str, &str)] = &[
    ("connections", "start_ns"),
    ("udp_flows", "first_ns"),
    ("samples", "time_ns"),
    ("findings", "time_ns"),
    ("processes", "start_ns"),
    ("baseline_novelties", "time_ns"),
    ("retention_log", "time_ns"),
];

fn feature_columns() -> String {
    FEATURE_NAMES
        .iter()
        .map(|name| format!(",\n    {name} REAL"))
        .collect()
}

/// Step 1: the first schema.
fn v1(tx: &Transaction) -> rusqlite::Result<()> {
    let features = feature_columns();
    tx.execute_batch(&format!(
        "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE processes (
    exec_id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    exe TEXT NOT NULL,
    sha256 TEXT,
    argv TEXT NOT NULL,
    user TEXT,
    uid INTEGER NOT NULL,
    parent_exec_id TEXT,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER,
    exit_code INTEGER,
    signal INTEGER
);
CREATE INDEX processes_start ON processes (start_ns);
CREATE INDEX processes_exe ON processes (exe);
CREATE TABLE connections (
    id INTEGER PRIMARY KEY,
    exec_id TEXT NOT NULL,
    exe TEXT NOT NULL,
    protocol TEXT NOT NULL,
    destination TEXT NOT NULL,
    port INTEGER NOT NULL,
    source_port INTEGER,
    outcome TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER,
    duration_ms INTEGER,
    bytes_sent INTEGER,
    bytes_received INTEGER,
    score REAL,
    label TEXT{features}
);
CREATE INDEX connections_start ON connections (start_ns);
CREATE INDEX connections_flow ON connections (exec_id, destination, port);
CREATE INDEX connections_destination ON connections (destination);
CREATE TABLE udp_flows (
    id INTEGER PRIMARY KEY,
    exec_id TEXT NOT NULL,
    exe TEXT NOT NULL,
    destination TEXT NOT NULL,
    port INTEGER NOT NULL,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    datagrams INTEGER NOT NULL,
    score REAL,
    label TEXT{features}
);
CREATE INDEX udp_flows_first ON udp_flows (first_ns);
CREATE INDEX udp_flows_flow ON udp_flows (exec_id, destination, port);
CREATE TABLE samples (
    exec_id TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    cpu_percent REAL NOT NULL,
    rss_bytes INTEGER NOT NULL
);
CREATE INDEX samples_time ON samples (time_ns);
CREATE INDEX samples_exec ON samples (exec_id);
CREATE TABLE findings (
    id TEXT PRIMARY KEY,
    time_ns INTEGER NOT NULL,
    exec_id TEXT NOT NULL,
    exe TEXT NOT NULL,
    detector TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    title TEXT NOT NULL,
    severity TEXT NOT NULL,
    finding TEXT NOT NULL
);
CREATE INDEX findings_time ON findings (time_ns);
CREATE TABLE baseline_owners (
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    user TEXT NOT NULL,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    PRIMARY KEY (kind, owner, user)
) WITHOUT ROWID;
CREATE TABLE baseline_entries (
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    user TEXT NOT NULL,
    item TEXT NOT NULL,
    state TEXT NOT NULL,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    hits INTEGER NOT NULL,
    PRIMARY KEY (kind, owner, user, item)
) WITHOUT ROWID;
CREATE TABLE baseline_novelties (
    finding_id TEXT NOT NULL,
    exec_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    user TEXT NOT NULL,
    item TEXT NOT NULL,
    destination TEXT,
    port INTEGER,
    time_ns INTEGER NOT NULL,
    PRIMARY KEY (finding_id, kind, owner, user, item)
) WITHOUT ROWID;
CREATE INDEX baseline_novelties_time ON baseline_novelties (time_ns);
CREATE TABLE baseline_overrides (
    id INTEGER PRIMARY KEY,
    time_ns INTEGER NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    actor TEXT NOT NULL,
    applied_ns INTEGER,
    result TEXT
);
CREATE TABLE retention_log (
    time_ns INTEGER NOT NULL,
    table_name TEXT NOT NULL,
    reason TEXT NOT NULL,
    rows INTEGER NOT NULL
);
"
    ))
}

/// Step 2: the open connections of a flow, in start order, for the close that ends the
/// oldest. Through `connections_flow` a close scanned every earlier connection of the flow
/// (a process connecting 5,000 times to one port made it quadratic: 310 µs of the
/// collector's CPU per connect); closed rows leave this index.
fn v2(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE INDEX connections_open ON connections (exec_id, destination, port, protocol, start_ns)
         WHERE end_ns IS NULL;",
    )
}

type Step = fn(&Transaction) -> rusqlite::Result<()>;

/// Every step, in order.
const MIGRATIONS: &[Step] = &[v1, v2];

/// The schema version this build writes.
pub const VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the file to [`VERSION`], one step per transaction.
pub fn migrate(conn: &mut Connection) -> Result<(), HistoryError> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > VERSION {
        return Err(HistoryError::NewerSchema {
            found: current,
            known: VERSION,
        });
    }
    for (step, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        migration(&tx)?;
        tx.pragma_update(None, "user_version", step as u32 + 1)?;
        tx.commit()?;
        tracing::info!(version = step + 1, "history schema migrated");
    }
    Ok(())
}
