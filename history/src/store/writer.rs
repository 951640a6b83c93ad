//! The one writer thread: records arrive through a bounded queue and are written in batched
//! transactions; the sending side never waits (a full queue drops the record and counts it).
//! The thread also enforces retention and polls for operator overrides.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use protocol::Timestamp;
use rusqlite::{params, params_from_iter, types::Value, Connection, Transaction};

use super::{
    overrides::{self, Override},
    record::{BaselineChanges, ConnectionRow, ProcessEnd, ProcessRow, Record, UdpFlowRow},
    retention::{self, RetentionReport},
};
use crate::{
    config::{HistoryConfig, RetentionConfig},
    score::{Features, FEATURE_NAMES},
    HistoryError,
};

// Records are nearly all of the traffic: boxing them would allocate once more per record.
#[allow(clippy::large_enum_variant)]
enum Message {
    Record(Record),
    /// Write everything queued before it, then answer.
    Flush(SyncSender<()>),
    /// Enforce retention now and answer with what was deleted.
    Retention(SyncSender<Result<RetentionReport, String>>),
    /// Write what is queued, checkpoint, and end.
    Stop,
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    batches: AtomicU64,
    file_bytes: AtomicU64,
    deleted: Mutex<BTreeMap<String, u64>>,
    last_error: Mutex<Option<String>>,
}

/// The store's counters (for heartbeats, `osprey history status` and tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Records accepted into the queue.
    pub queued: u64,
    /// Records written.
    pub written: u64,
    /// Records refused because the queue was full (or the writer had stopped).
    pub dropped: u64,
    /// Records the database refused (the error is in `last_error`).
    pub failed: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Records waiting in the queue.
    pub queue_depth: u64,
    /// Size of the file (pages in use) at the last retention check.
    pub file_bytes: u64,
    /// Rows deleted by retention since start, per table.
    pub deleted: BTreeMap<String, u64>,
    pub last_error: Option<String>,
}

/// The caller's side of the queue: cheap to clone, never blocks in [`HistoryHandle::record`].
#[derive(Clone)]
pub struct HistoryHandle {
    tx: SyncSender<Message>,
    counters: Arc<Counters>,
}

impl HistoryHandle {
    /// Queues a record; `false` (and counted in `dropped`) when the queue is full or the
    /// writer has stopped. Never blocks.
    pub fn record(&self, record: Record) -> bool {
        match self.tx.try_send(Message::Record(record)) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Relaxed);
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Waits until everything queued before this call is written. Blocks: not for the event
    /// loop (shutdown, tests, tools).
    pub fn flush(&self) -> Result<(), HistoryError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx
            .send(Message::Flush(tx))
            .map_err(|_| HistoryError::Thread("stopped".into()))?;
        rx.recv()
            .map_err(|_| HistoryError::Thread("stopped before flushing".into()))
    }

    /// Enforces retention now (after writing what is queued). Blocks: not for the event loop.
    pub fn enforce_retention(&self) -> Result<RetentionReport, HistoryError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx
            .send(Message::Retention(tx))
            .map_err(|_| HistoryError::Thread("stopped".into()))?;
        rx.recv()
            .map_err(|_| HistoryError::Thread("stopped before retention".into()))?
            .map_err(HistoryError::Thread)
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.counters;
        let queued = c.queued.load(Relaxed);
        let written = c.written.load(Relaxed);
        let failed = c.failed.load(Relaxed);
        StoreStats {
            queued,
            written,
            dropped: c.dropped.load(Relaxed),
            failed,
            batches: c.batches.load(Relaxed),
            queue_depth: queued.saturating_sub(written + failed),
            file_bytes: c.file_bytes.load(Relaxed),
            deleted: c.deleted.lock().map(|d| d.clone()).unwrap_or_default(),
            last_error: c.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}

/// The writer thread. [`Writer::stop`] ends it after it wrote what was queued; so does
/// dropping every [`HistoryHandle`].
pub struct Writer {
    thread: Option<JoinHandle<()>>,
    tx: SyncSender<Message>,
}

impl Writer {
    /// Starts the thread on an open (migrated) connection. Overrides the CLI appends are
    /// handed to `overrides` as they appear (every `overrides_poll`).
    pub fn start(
        conn: Connection,
        config: &HistoryConfig,
        overrides_after: i64,
        overrides: mpsc::Sender<Override>,
    ) -> Result<(Writer, HistoryHandle), HistoryError> {
        let (tx, rx) = mpsc::sync_channel(config.queue_capacity);
        let counters = Arc::new(Counters::default());
        let state = WriterState {
            conn,
            rx,
            counters: counters.clone(),
            batch_max: config.batch_max,
            batch_interval: Duration::from_millis(config.batch_interval_ms),
            retention: config.retention.clone(),
            overrides_poll: Duration::from_secs(config.baseline.overrides_poll_secs.max(1)),
            overrides_after,
            overrides,
            sql: Sql::new(),
        };
        configure_wal(&state.conn, &config.retention)?;
        let thread = std::thread::Builder::new()
            .name("osprey-history".into())
            .spawn(move || state.run())
            .map_err(|e| HistoryError::Thread(e.to_string()))?;
        Ok((
            Writer {
                thread: Some(thread),
                tx: tx.clone(),
            },
            HistoryHandle { tx, counters },
        ))
    }

    /// Writes what is queued and ends the thread; blocks until it has.
    pub fn stop(mut self) -> Result<(), HistoryError> {
        // A full queue makes this wait: everything before it gets written.
        let _ = self.tx.send(Message::Stop);
        match self.thread.take().map(JoinHandle::join) {
            Some(Err(_)) => Err(HistoryError::Thread("the writer thread panicked".into())),
            _ => Ok(()),
        }
    }
}

/// Keeps the write-ahead log small next to a small size bound: it is checkpointed at a
/// quarter of the bound (between 100 and 1000 pages) and truncated back to that size.
fn configure_wal(conn: &Connection, retention: &RetentionConfig) -> Result<(), HistoryError> {
    let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let bound = if retention.max_size_mb > 0.0 {
        (retention.max_size_mb * 1024.0 * 1024.0 / 4.0) as i64
    } else {
        i64::MAX
    };
    let pages = (bound / page).clamp(100, 1000);
    conn.query_row(&format!("PRAGMA wal_autocheckpoint = {pages}"), [], |_| {
        Ok(())
    })?;
    conn.query_row(
        &format!("PRAGMA journal_size_limit = {}", pages * page),
        [],
        |_| Ok(()),
    )?;
    Ok(())
}

struct WriterState {
    conn: Connection,
    rx: Receiver<Message>,
    counters: Arc<Counters>,
    batch_max: usize,
    batch_interval: Duration,
    retention: RetentionConfig,
    overrides_poll: Duration,
    overrides_after: i64,
    overrides: mpsc::Sender<Override>,
    sql: Sql,
}

impl WriterState {
    fn run(mut self) {
        let retention_every = Duration::from_secs(self.retention.check_interval_secs.max(1));
        let mut next_retention = Instant::now();
        let mut next_poll = Instant::now();
        let mut batch: Vec<Record> = Vec::with_capacity(self.batch_max);
        let mut open = true;
        while open {
            let now = Instant::now();
            let wake = next_retention.min(next_poll);
            // Gather a batch: wait for the first record until the next chore, then for more
            // until the batch is full or its time is up.
            let mut deadline = wake.max(now);
            let mut replies = Vec::new();
            loop {
                match self.next(!batch.is_empty(), deadline) {
                    Ok(Message::Record(record)) => {
                        if batch.is_empty() {
                            deadline = Instant::now() + self.batch_interval;
                        }
                        batch.push(record);
                        if batch.len() >= self.batch_max {
                            break;
                        }
                    }
                    Ok(Message::Stop) => {
                        open = false;
                        break;
                    }
                    Ok(other) => {
                        replies.push(other);
                        break;
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                self.write(&mut batch);
            }
            for message in replies {
                match message {
                    Message::Flush(reply) => {
                        let _ = reply.send(());
                    }
                    Message::Retention(reply) => {
                        let _ = reply.send(self.enforce_retention().map_err(|e| e.to_string()));
                        next_retention = Instant::now() + retention_every;
                    }
                    Message::Record(_) | Message::Stop => {}
                }
            }
            if Instant::now() >= next_retention {
                if let Err(error) = self.enforce_retention() {
                    self.error(format!("retention: {error}"));
                }
                next_retention = Instant::now() + retention_every;
            }
            if Instant::now() >= next_poll {
                self.poll_overrides();
                next_poll = Instant::now() + self.overrides_poll;
            }
        }
        // Checkpoint so the file alone holds everything once the collector stopped.
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }

    /// The next message, by `deadline`. While a batch is `gathering`, the thread sleeps
    /// instead of waiting on the queue: a waiting receiver is woken by every record, and those
    /// wake-ups cost the event loop more than the records themselves.
    fn next(&self, gathering: bool, deadline: Instant) -> Result<Message, RecvTimeoutError> {
        if !gathering {
            return self
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()));
        }
        let taken = match self.rx.try_recv() {
            Err(TryRecvError::Empty) => {
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                self.rx.try_recv()
            }
            taken => taken,
        };
        taken.map_err(|error| match error {
            TryRecvError::Empty => RecvTimeoutError::Timeout,
            TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
        })
    }

    fn error(&self, message: String) {
        report(&self.counters, message);
    }

    fn write(&mut self, batch: &mut Vec<Record>) {
        let count = batch.len() as u64;
        let tx = match self.conn.transaction() {
            Ok(tx) => tx,
            Err(e) => {
                self.counters.failed.fetch_add(count, Relaxed);
                report(&self.counters, format!("cannot begin a transaction: {e}"));
                batch.clear();
                return;
            }
        };
        let mut failed = 0;
        let mut first_error = None;
        let mut pairs = pairs_in_batch(batch);
        for (i, record) in batch.iter().enumerate() {
            let (result, records) = match (record, pairs.remove(&i)) {
                (_, Some(Pairing::Folded)) => continue,
                (Record::Connect(open), Some(Pairing::ClosedBy(close))) => {
                    (self.sql.insert_closed(&tx, open, close), 2)
                }
                (Record::Process(p), Some(Pairing::ExitedBy(end))) => {
                    (self.sql.upsert_process(&tx, p, Some(end)), 2)
                }
                _ => (self.sql.write(&tx, record), 1),
            };
            if let Err(e) = result {
                failed += records;
                first_error.get_or_insert_with(|| format!("{e} (writing {})", record_name(record)));
            }
        }
        batch.clear();
        match tx.commit() {
            Ok(()) => {
                self.counters.written.fetch_add(count - failed, Relaxed);
                self.counters.failed.fetch_add(failed, Relaxed);
                self.counters.batches.fetch_add(1, Relaxed);
            }
            Err(e) => {
                self.counters.failed.fetch_add(count, Relaxed);
                first_error = Some(format!("commit: {e}"));
            }
        }
        if let Some(error) = first_error {
            report(&self.counters, error);
        }
    }

    fn enforce_retention(&mut self) -> Result<RetentionReport, HistoryError> {
        let report = retention::enforce(&mut self.conn, &self.retention, Timestamp::now())?;
        self.counters.file_bytes.store(report.file_bytes, Relaxed);
        if let Ok(mut deleted) = self.counters.deleted.lock() {
            for (table, rows) in report.deleted() {
                *deleted.entry(table.to_string()).or_default() += rows;
            }
        }
        Ok(report)
    }

    fn poll_overrides(&mut self) {
        match overrides::pending(&self.conn, self.overrides_after) {
            Ok(pending) => {
                for o in pending {
                    self.overrides_after = self.overrides_after.max(o.id);
                    // The receiver is gone only while the collector shuts down.
                    let _ = self.overrides.send(o);
                }
            }
            Err(e) => self.error(format!("reading baseline overrides: {e}")),
        }
    }
}

fn report(counters: &Counters, message: String) {
    tracing::warn!(%message, "history store");
    if let Ok(mut last) = counters.last_error.lock() {
        *last = Some(message);
    }
}

fn record_name(record: &Record) -> &'static str {
    match record {
        Record::Process(_) => "process",
        Record::ProcessHash { .. } => "process hash",
        Record::ProcessExit { .. } => "process exit",
        Record::Connect(_) => "connection",
        Record::Close(_) => "connection close",
        Record::UdpFlow(_) => "udp flow",
        Record::Sample { .. } => "sample",
        Record::Finding(_) => "finding",
        Record::Baseline(_) => "baseline",
        Record::Novelty(_) => "baseline novelty",
        Record::Accepted { .. } => "accepted label",
        Record::OverrideApplied { .. } => "override result",
    }
}

/// Statements whose text depends on the feature columns, built once.
struct Sql {
    upsert_process: String,
    /// The same with the process's end (an exit in the same batch).
    upsert_exited_process: String,
    insert_connection: String,
    close_connection: String,
    insert_udp_flow: String,
}

impl Sql {
    fn new() -> Self {
        let names = FEATURE_NAMES.join(", ");
        let marks = |from: usize| {
            (from..from + FEATURE_NAMES.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let sets = |from: usize| {
            FEATURE_NAMES
                .iter()
                .enumerate()
                .map(|(i, n)| format!("{n} = ?{}", from + i))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // A process seen again (a fork, then /proc) keeps what only the first sighting knew.
        const PROCESS_COLUMNS: &str =
            "exec_id, pid, exe, sha256, argv, user, uid, parent_exec_id, start_ns";
        const PROCESS_UPDATES: &str = "pid = excluded.pid, exe = excluded.exe,
             sha256 = coalesce(excluded.sha256, sha256), argv = excluded.argv,
             user = coalesce(excluded.user, user), uid = excluded.uid,
             parent_exec_id = coalesce(excluded.parent_exec_id, parent_exec_id),
             start_ns = excluded.start_ns";
        Sql {
            upsert_process: format!(
                "INSERT INTO processes ({PROCESS_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,
                 ?8, ?9) ON CONFLICT (exec_id) DO UPDATE SET {PROCESS_UPDATES}"
            ),
            upsert_exited_process: format!(
                "INSERT INTO processes ({PROCESS_COLUMNS}, end_ns, exit_code, signal) VALUES
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT (exec_id)
                 DO UPDATE SET {PROCESS_UPDATES}, end_ns = excluded.end_ns,
                 exit_code = excluded.exit_code, signal = excluded.signal"
            ),
            insert_connection: format!(
                "INSERT INTO connections (exec_id, exe, protocol, destination, port, source_port,
                 outcome, start_ns, end_ns, duration_ms, bytes_sent, bytes_received, score, label,
                 {names}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, {})",
                marks(15)
            ),
            close_connection: format!(
                "UPDATE connections SET outcome = ?7, end_ns = ?9, duration_ms = ?10,
                 bytes_sent = ?11, bytes_received = ?12, score = ?13, label = ?14,
                 source_port = coalesce(source_port, ?6), {}
                 WHERE id = (SELECT id FROM connections WHERE exec_id = ?1 AND destination = ?4
                   AND port = ?5 AND protocol = ?3 AND end_ns IS NULL
                   AND (?6 IS NULL OR source_port IS NULL OR source_port = ?6)
                   ORDER BY start_ns LIMIT 1)",
                sets(15)
            ),
            insert_udp_flow: format!(
                "INSERT INTO udp_flows (exec_id, exe, destination, port, first_ns, last_ns,
                 datagrams, score, label, {names}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, {})",
                marks(10)
            ),
        }
    }

    /// A process row, with its end when it exited within the same batch (one statement
    /// instead of an insert and an update).
    fn upsert_process(
        &self,
        tx: &Transaction,
        p: &ProcessRow,
        end: Option<ProcessEnd>,
    ) -> rusqlite::Result<()> {
        let argv = serde_json::to_string(&p.argv).unwrap_or_default();
        let mut values: Vec<Value> = vec![
            p.exec_id.to_string().into(),
            p.pid.into(),
            p.exe.clone().into(),
            p.sha256.clone().into(),
            argv.into(),
            p.user.clone().into(),
            p.uid.into(),
            p.parent_exec_id.map(|id| id.to_string()).into(),
            p.start.unix_nanos().into(),
        ];
        let statement = match end {
            None => &self.upsert_process,
            Some(end) => {
                values.extend([
                    end.time.unix_nanos().into(),
                    end.exit_code.into(),
                    end.signal.into(),
                ]);
                &self.upsert_exited_process
            }
        };
        tx.prepare_cached(statement)?
            .execute(params_from_iter(values))?;
        Ok(())
    }

    /// A connection opened and closed within one batch: inserted as the close would leave
    /// it, in one statement instead of an insert and an update.
    fn insert_closed(
        &self,
        tx: &Transaction,
        open: &ConnectionRow,
        close: &ConnectionRow,
    ) -> rusqlite::Result<()> {
        tx.prepare_cached(&self.insert_connection)?
            .execute(params_from_iter(closed_connection_values(open, close)))?;
        Ok(())
    }

    fn write(&self, tx: &Transaction, record: &Record) -> rusqlite::Result<()> {
        match record {
            Record::Process(p) => self.upsert_process(tx, p, None)?,
            Record::ProcessHash { exec_id, sha256 } => {
                tx.prepare_cached("UPDATE processes SET sha256 = ?2 WHERE exec_id = ?1")?
                    .execute(params![exec_id.to_string(), sha256])?;
            }
            Record::ProcessExit { exec_id, end } => {
                tx.prepare_cached(
                    "UPDATE processes SET end_ns = ?2, exit_code = ?3, signal = ?4 WHERE exec_id = ?1",
                )?
                .execute(params![
                    exec_id.to_string(),
                    end.time.unix_nanos(),
                    end.exit_code,
                    end.signal
                ])?;
            }
            Record::Connect(c) => {
                tx.prepare_cached(&self.insert_connection)?
                    .execute(params_from_iter(connection_values(c)))?;
            }
            Record::Close(c) => {
                let values = connection_values(c);
                let updated = tx
                    .prepare_cached(&self.close_connection)?
                    .execute(params_from_iter(values.iter()))?;
                if updated == 0 {
                    tx.prepare_cached(&self.insert_connection)?
                        .execute(params_from_iter(values))?;
                }
            }
            Record::UdpFlow(f) => {
                tx.prepare_cached(&self.insert_udp_flow)?
                    .execute(params_from_iter(udp_values(f)))?;
            }
            Record::Sample {
                exec_id,
                time,
                cpu_percent,
                rss_bytes,
            } => {
                tx.prepare_cached(
                    "INSERT INTO samples (exec_id, time_ns, cpu_percent, rss_bytes) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    exec_id.to_string(),
                    time.unix_nanos(),
                    f64::from(*cpu_percent),
                    *rss_bytes as i64
                ])?;
            }
            Record::Finding(f) => {
                let json = serde_json::to_string(f).unwrap_or_default();
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO findings (id, time_ns, exec_id, exe, detector, rule_id,
                     title, severity, finding) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    f.id.0,
                    f.time.unix_nanos(),
                    f.process.exec_id.to_string(),
                    f.process.exe,
                    f.detector.as_str(),
                    f.rule_id,
                    f.title,
                    f.severity.as_str(),
                    json
                ])?;
            }
            Record::Baseline(changes) => write_baseline(tx, changes)?,
            Record::Novelty(n) => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO baseline_novelties (finding_id, exec_id, rule_id, kind,
                     owner, user, item, destination, port, time_ns)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?
                .execute(params![
                    n.finding_id,
                    n.exec_id.to_string(),
                    n.rule_id,
                    n.kind,
                    n.owner,
                    n.user,
                    n.item,
                    n.destination.map(|(ip, _)| ip.to_string()),
                    n.destination.map(|(_, port)| port),
                    n.time.unix_nanos()
                ])?;
            }
            Record::Accepted {
                exec_id,
                destination,
                port,
            } => {
                for table in ["connections", "udp_flows"] {
                    tx.prepare_cached(&format!(
                        "UPDATE {table} SET label = 'accepted'
                         WHERE exec_id = ?1 AND destination = ?2 AND port = ?3"
                    ))?
                    .execute(params![
                        exec_id.to_string(),
                        destination.to_string(),
                        port
                    ])?;
                }
            }
            Record::OverrideApplied { id, time, result } => {
                tx.prepare_cached(
                    "UPDATE baseline_overrides SET applied_ns = ?2, result = ?3 WHERE id = ?1",
                )?
                .execute(params![id, time.unix_nanos(), result])?;
            }
        }
        Ok(())
    }
}

fn write_baseline(tx: &Transaction, changes: &BaselineChanges) -> rusqlite::Result<()> {
    for (kind, owner, user) in &changes.removed_owners {
        tx.prepare_cached(
            "DELETE FROM baseline_owners WHERE kind = ?1 AND owner = ?2 AND user = ?3",
        )?
        .execute(params![kind, owner, user])?;
        tx.prepare_cached(
            "DELETE FROM baseline_entries WHERE kind = ?1 AND owner = ?2 AND user = ?3",
        )?
        .execute(params![kind, owner, user])?;
    }
    for (kind, owner, user, item) in &changes.removed_entries {
        tx.prepare_cached(
            "DELETE FROM baseline_entries WHERE kind = ?1 AND owner = ?2 AND user = ?3 AND item = ?4",
        )?
        .execute(params![kind, owner, user, item])?;
    }
    for o in &changes.owners {
        tx.prepare_cached(
            "INSERT INTO baseline_owners (kind, owner, user, first_ns, last_ns) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (kind, owner, user) DO UPDATE SET first_ns = excluded.first_ns,
             last_ns = excluded.last_ns",
        )?
        .execute(params![
            o.kind,
            o.owner,
            o.user,
            o.first.unix_nanos(),
            o.last.unix_nanos()
        ])?;
    }
    for e in &changes.entries {
        tx.prepare_cached(
            "INSERT INTO baseline_entries (kind, owner, user, item, state, first_ns, last_ns, hits)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (kind, owner, user, item) DO UPDATE SET state = excluded.state,
             first_ns = excluded.first_ns, last_ns = excluded.last_ns, hits = excluded.hits",
        )?
        .execute(params![
            e.kind,
            e.owner,
            e.user,
            e.item,
            e.state,
            e.first.unix_nanos(),
            e.last.unix_nanos(),
            e.hits
        ])?;
    }
    Ok(())
}

fn opt_i64(v: Option<u64>) -> Value {
    v.map_or(Value::Null, |v| {
        Value::Integer(v.min(i64::MAX as u64) as i64)
    })
}

fn feature_values(features: Option<&Features>, out: &mut Vec<Value>) {
    for i in 0..FEATURE_NAMES.len() {
        out.push(features.map_or(Value::Null, |f| Value::Real(f64::from(f[i]))));
    }
}

/// How a record of a batch takes part in [`pairs_in_batch`]'s pairs.
#[derive(Debug, PartialEq)]
enum Pairing<'a> {
    /// This connect is closed by that close, later in the batch.
    ClosedBy(&'a ConnectionRow),
    /// This process row ends with that exit, later in the batch.
    ExitedBy(ProcessEnd),
    /// Written with the record it completes, earlier in the batch.
    Folded,
}

/// Pairs the records of a batch that end what an earlier one in it began, so that each pair
/// is one statement instead of an insert and an update:
/// - each close with the connect of the same socket: same process, protocol, destination
///   and port, and the same source port, known to both (without it, `close_connection` may
///   complete an older open row, and so does the writer);
/// - each exit with the latest row of its process (a later row of the same process does not
///   touch its end, so the end is the same).
fn pairs_in_batch(batch: &[Record]) -> HashMap<usize, Pairing<'_>> {
    type Socket = (protocol::ExecId, &'static str, std::net::IpAddr, u16, u16);
    let socket = |c: &ConnectionRow| -> Option<Socket> {
        Some((c.exec_id, c.protocol, c.destination, c.port, c.source_port?))
    };
    let mut open: HashMap<Socket, VecDeque<usize>> = HashMap::new();
    let mut processes: HashMap<protocol::ExecId, usize> = HashMap::new();
    let mut pairs = HashMap::new();
    for (i, record) in batch.iter().enumerate() {
        match record {
            Record::Process(p) => {
                processes.insert(p.exec_id, i);
            }
            Record::ProcessExit { exec_id, end } => {
                if let Some(row) = processes.remove(exec_id) {
                    pairs.insert(row, Pairing::ExitedBy(*end));
                    pairs.insert(i, Pairing::Folded);
                }
            }
            Record::Connect(c) if c.end.is_none() => {
                if let Some(key) = socket(c) {
                    open.entry(key).or_default().push_back(i);
                }
            }
            Record::Close(c) => {
                let connect = socket(c)
                    .and_then(|key| open.get_mut(&key))
                    .and_then(VecDeque::pop_front);
                if let Some(connect) = connect {
                    pairs.insert(connect, Pairing::ClosedBy(c));
                    pairs.insert(i, Pairing::Folded);
                }
            }
            _ => {}
        }
    }
    pairs
}

/// Where `connection_values` puts what identifies a row and when it started (the process,
/// its executable, protocol, destination, port and start), and the source port.
const IDENTITY_VALUES: [usize; 6] = [0, 1, 2, 3, 4, 7];
const SOURCE_PORT_VALUE: usize = 5;

/// The row `close_connection` leaves when `close` completes `open`: the open row's identity
/// and start, its source port or else the close's, and everything else from the close.
fn closed_connection_values(open: &ConnectionRow, close: &ConnectionRow) -> Vec<Value> {
    let mut values = connection_values(close);
    let mut opened = connection_values(open);
    for i in IDENTITY_VALUES {
        values[i] = std::mem::replace(&mut opened[i], Value::Null);
    }
    if opened[SOURCE_PORT_VALUE] != Value::Null {
        values[SOURCE_PORT_VALUE] = std::mem::replace(&mut opened[SOURCE_PORT_VALUE], Value::Null);
    }
    values
}

/// ?1..?14 then the features, in the order of the connection statements.
fn connection_values(c: &ConnectionRow) -> Vec<Value> {
    let duration_ms = c
        .end
        .map(|end| ((end.unix_nanos() - c.start.unix_nanos()).max(0) / 1_000_000) as u64);
    let mut v = vec![
        Value::Text(c.exec_id.to_string()),
        Value::Text(c.exe.clone()),
        Value::Text(c.protocol.into()),
        Value::Text(c.destination.to_string()),
        Value::Integer(c.port.into()),
        c.source_port
            .map_or(Value::Null, |p| Value::Integer(p.into())),
        Value::Text(c.outcome.into()),
        Value::Integer(c.start.unix_nanos()),
        c.end
            .map_or(Value::Null, |t| Value::Integer(t.unix_nanos())),
        opt_i64(duration_ms),
        opt_i64(c.bytes_sent),
        opt_i64(c.bytes_received),
        c.score.map_or(Value::Null, |s| Value::Real(f64::from(s))),
        c.label
            .map_or(Value::Null, |l| Value::Text(l.as_str().into())),
    ];
    feature_values(c.features.as_ref(), &mut v);
    v
}

fn udp_values(f: &UdpFlowRow) -> Vec<Value> {
    let mut v = vec![
        Value::Text(f.exec_id.to_string()),
        Value::Text(f.exe.clone()),
        Value::Text(f.destination.to_string()),
        Value::Integer(f.port.into()),
        Value::Integer(f.first.unix_nanos()),
        Value::Integer(f.last.unix_nanos()),
        opt_i64(Some(f.datagrams)),
        f.score.map_or(Value::Null, |s| Value::Real(f64::from(s))),
        f.label
            .map_or(Value::Null, |l| Value::Text(l.as_str().into())),
    ];
    feature_values(Some(&f.features), &mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(source_port: Option<u16>, end: Option<i64>) -> ConnectionRow {
        ConnectionRow {
            exec_id: "4cd11df2-7-1007-0".parse().expect("an ExecId"),
            exe: "/usr/bin/curl".into(),
            protocol: "tcp",
            destination: "10.1.2.3".parse().expect("an address"),
            port: 443,
            source_port,
            outcome: "ok",
            start: Timestamp::from_unix_nanos(1),
            end: end.map(Timestamp::from_unix_nanos),
            bytes_sent: None,
            bytes_received: None,
            score: None,
            label: None,
            features: None,
        }
    }

    #[test]
    fn a_close_pairs_with_the_oldest_connect_of_its_socket_only() {
        let batch = vec![
            Record::Connect(row(Some(40_000), None)),
            Record::Connect(row(Some(40_001), None)),
            Record::Connect(row(Some(40_000), None)),
            // Without a source port it could be any of them: left to the update.
            Record::Close(row(None, Some(9))),
            Record::Close(row(Some(40_000), Some(9))),
            Record::Close(row(Some(40_002), Some(9))),
        ];
        let pairs = pairs_in_batch(&batch);
        let Record::Close(close) = &batch[4] else {
            unreachable!()
        };
        assert_eq!(pairs.len(), 2, "{pairs:?}");
        assert_eq!(pairs.get(&0), Some(&Pairing::ClosedBy(close)));
        assert_eq!(pairs.get(&4), Some(&Pairing::Folded));
    }

    #[test]
    fn an_exit_pairs_with_the_latest_row_of_its_process() {
        let process = |id: &str| {
            Record::Process(ProcessRow {
                exec_id: id.parse().expect("an ExecId"),
                pid: 7,
                exe: "/usr/bin/true".into(),
                sha256: None,
                argv: vec!["true".into()],
                user: None,
                uid: 0,
                parent_exec_id: None,
                start: Timestamp::from_unix_nanos(1),
            })
        };
        let ended = ProcessEnd {
            time: Timestamp::from_unix_nanos(9),
            exit_code: Some(0),
            signal: None,
        };
        let exit = |id: &str| Record::ProcessExit {
            exec_id: id.parse().expect("an ExecId"),
            end: ended,
        };
        let batch = vec![
            process("4cd11df2-7-1007-0"),
            process("4cd11df2-8-1008-0"),
            process("4cd11df2-7-1007-0"),
            exit("4cd11df2-7-1007-0"),
            // Its row is in an earlier batch: left to the update.
            exit("4cd11df2-9-1009-0"),
        ];
        let pairs = pairs_in_batch(&batch);
        assert_eq!(pairs.len(), 2, "{pairs:?}");
        assert_eq!(pairs.get(&2), Some(&Pairing::ExitedBy(ended)));
        assert_eq!(pairs.get(&3), Some(&Pairing::Folded));
    }
}
