//! [`History`]: what the collector's event loop calls. Every call is in-memory work plus a
//! non-blocking hand-off to the writer thread; the SQLite file is only touched by that thread,
//! by the trainer thread (reads) and at open.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::Path,
    sync::{
        mpsc::{self, Receiver},
        Arc,
    },
};

use protocol::{
    Ancestor, AuditRecord, ConnectEvent, Decision, Detector, ExecId, ExitEvent, Finding, FindingId,
    Outcome, Process, Timestamp, TransportProtocol,
};

use crate::{
    baseline::{Baseline, BaselineStatus, Seen, KIND_CHILD, KIND_DESTINATION, KIND_HASH},
    config::HistoryConfig,
    detection::{self, HistoryDetection},
    flows::{
        tcp::{ConnKey, OpenConnections, Pending},
        udp::{Flow, FlowKey, UdpFlows},
    },
    identity::{user_of, Identity, Program, ScriptEngines},
    score::{
        features::{hour_of, log1p, rarity},
        training::{self, Trainer},
        ConnectFeatures, Features, IsolationForest, Label, ModelError, ModelKind, Scorer,
        FEATURE_NAMES,
    },
    store::{
        self,
        overrides::{Override, OverrideAction},
        record::{ConnectionRow, NoveltyRow, ProcessEnd, ProcessRow, Record, UdpFlowRow},
        writer::{HistoryHandle, StoreStats, Writer},
    },
    HistoryError,
};

/// Processes whose identity and features are cached (the collector's process table is the
/// authority; this is only what scoring needs, kept a while after exit for late closes).
const PROCESS_CACHE: usize = 131_072;
/// How long a process's cache entry outlives its exit (its sockets close after it).
const EXITED_GRACE_NS: i64 = 120_000_000_000;
const NANOS_PER_SEC: i64 = 1_000_000_000;
/// Exited processes leave the cache this often.
const PRUNE_EVERY_NS: i64 = 10 * NANOS_PER_SEC;
/// Baseline items unseen for `expire_after_days` are dropped this often.
const EXPIRE_EVERY_NS: i64 = 3_600 * NANOS_PER_SEC;

/// A TCP connection's end, as the kernel reports it (`inet_sock_set_state` → CLOSE), joined
/// to its connect by process, destination, port (and source port when known).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionClose {
    pub exec_id: ExecId,
    pub protocol: TransportProtocol,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    pub source_port: Option<u16>,
    /// When the connection was established, and when it closed.
    pub start: Timestamp,
    pub end: Timestamp,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// What [`History::tick`] produced.
#[derive(Debug, Default)]
pub struct Tick {
    /// Anomalies of UDP flows finished by idleness.
    pub detections: Vec<HistoryDetection>,
    /// One per operator override applied (`osprey baseline accept|forget`): publish them
    /// like the actuator's audit records.
    pub audit: Vec<AuditRecord>,
}

/// Counters for heartbeats and `osprey history status`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistoryStats {
    pub store: StoreStats,
    pub baseline: BaselineStatus,
    pub open_connections: usize,
    /// TCP connections forgotten before their close (map full).
    pub open_connections_evicted: u64,
    pub udp_flows: usize,
    /// UDP flows written early (map full).
    pub udp_flows_evicted: u64,
    /// Processes not cached (cache full): their features are computed per call.
    pub processes_uncached: u64,
    pub scored: u64,
    pub suspicious: u64,
    /// Rows the model in force was trained on (built-in), when one is.
    pub model_rows: Option<usize>,
    /// The ONNX model in force.
    pub model_path: Option<std::path::PathBuf>,
    /// The last model file that could not be used.
    pub model_error: Option<String>,
    pub onnx_failures: u64,
}

/// What scoring needs about a process.
struct ProcessInfo {
    identity: Identity,
    exe: Arc<str>,
    start: i64,
    script_engine: bool,
    /// 1 / (1 + parent→program pair count) at exec; 1 when the parent is unknown.
    parent_rarity: f32,
    exited: Option<i64>,
    anomaly_reported: bool,
}

pub struct History {
    host: String,
    config: HistoryConfig,
    engines: ScriptEngines,
    handle: HistoryHandle,
    writer: Option<Writer>,
    baseline: Baseline,
    scorer: Scorer,
    processes: HashMap<ExecId, ProcessInfo>,
    processes_uncached: u64,
    tcp: OpenConnections,
    udp: UdpFlows,
    overrides: Receiver<Override>,
    models: Receiver<Arc<IsolationForest>>,
    _trainer: Option<Trainer>,
    next_flush: i64,
    next_expire: i64,
    next_prune: i64,
    scored: u64,
    suspicious: u64,
    model_error: Option<String>,
}

impl History {
    /// Opens (creating or migrating) the history file, loads the baselines, starts the writer
    /// and the trainer. `host` names the host in finding ids; `script_engines` are the
    /// collector's `heuristics.script_engines`. A model file that cannot be used is logged and
    /// reported in stats; the built-in model scores instead.
    pub fn open(
        config: &HistoryConfig,
        host: &str,
        script_engines: &[String],
    ) -> Result<History, HistoryError> {
        config.validate()?;
        let conn = store::open(&config.path)?;
        let now = Timestamp::now();
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('created_ns', ?1)",
            [now.unix_nanos().to_string()],
        )?;
        let created: i64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'created_ns'", [], |r| {
                r.get::<_, String>(0)
            })?
            .parse()
            .unwrap_or(now.unix_nanos());
        let baseline = Baseline::load(&conn, &config.baseline).map_err(|e| e.at(&config.path))?;
        let (overrides_tx, overrides) = mpsc::channel();
        let (writer, handle) = Writer::start(conn, config, 0, overrides_tx)?;
        let mut scorer = Scorer::new(config.scoring.threshold, config.scoring.model_threshold);
        let mut model_error = None;
        if let Some(path) = &config.scoring.model {
            if let Err(error) = scorer.load_model(path) {
                tracing::error!(%error, "the built-in anomaly model scores instead");
                model_error = Some(error.to_string());
            }
        }
        let (models_tx, models) = mpsc::channel();
        let trainer = if config.scoring.enabled {
            let learning = (config.baseline.learning_period_hours * 3_600e9) as i64;
            Some(Trainer::start(
                &config.path,
                &config.scoring,
                Timestamp::from_unix_nanos(created.saturating_add(learning)),
                models_tx,
            )?)
        } else {
            None
        };
        Ok(History {
            host: host.to_string(),
            config: config.clone(),
            engines: ScriptEngines::new(script_engines),
            handle,
            writer: Some(writer),
            baseline,
            scorer,
            processes: HashMap::new(),
            processes_uncached: 0,
            tcp: OpenConnections::new(config.max_open_connections),
            udp: UdpFlows::new(config.udp.max_flows, config.udp.idle_secs),
            overrides,
            models,
            _trainer: trainer,
            next_flush: 0,
            next_expire: 0,
            next_prune: 0,
            scored: 0,
            suspicious: 0,
            model_error,
        })
    }

    /// The writer's queue, for recording from elsewhere (cheap to clone, never blocks).
    pub fn handle(&self) -> HistoryHandle {
        self.handle.clone()
    }

    /// A program image started (exec): its row, and the baseline checks of its parent →
    /// child pair and of its path → hash pair (when the hash is known; else see
    /// [`History::process_hashed`]). `parent` is the event's nearest ancestor.
    pub fn process_exec(
        &mut self,
        process: &Process,
        parent: Option<&Ancestor>,
        time: Timestamp,
    ) -> Vec<HistoryDetection> {
        let now = time.unix_nanos();
        let mut out = Vec::new();
        let program = Program::of(process, &self.engines);
        let parent_program = parent.map(|a| {
            let engine = self.engines.matches(&a.name)
                || self
                    .engines
                    .matches(a.exe.rsplit(['/', '\\']).next().unwrap_or(&a.exe));
            Program::from_parts(&a.exe, &a.argv, None, engine)
        });
        let mut parent_rarity = 1.0;
        if let Some(parent) = &parent_program {
            parent_rarity = rarity(self.baseline.pair_hits(parent, &program));
            if self.config.baseline.enabled {
                let seen = self.baseline.child(parent, &program, process.exec_id, now);
                if seen == Seen::Novel && self.config.baseline.new_child.enabled {
                    let learned = self.baseline.known_children(parent);
                    out.push(self.novelty(
                        detection::NEW_CHILD,
                        process.exec_id,
                        KIND_CHILD,
                        parent.as_str(),
                        "",
                        program.as_str(),
                        None,
                        learned,
                        now,
                    ));
                }
            }
        }
        if let Some(sha256) = &process.sha256 {
            out.extend(self.check_hash(process, sha256, now));
        }
        self.cache(process, program, parent_rarity, now);
        self.handle.record(Record::Process(ProcessRow::of(process)));
        out
    }

    /// A process seen without an exec (a fork, or the /proc scan at start): its row, and
    /// its identity starts learning. No checks.
    pub fn process_seen(&mut self, process: &Process, time: Timestamp) {
        let now = time.unix_nanos();
        let program = Program::of(process, &self.engines);
        self.cache(process, program, 1.0, now);
        self.handle.record(Record::Process(ProcessRow::of(process)));
    }

    /// The executable's hash became known (hashing is off the event path): the path → hash
    /// check, and the row's hash.
    pub fn process_hashed(&mut self, process: &Process, time: Timestamp) -> Vec<HistoryDetection> {
        let Some(sha256) = &process.sha256 else {
            return Vec::new();
        };
        self.handle.record(Record::ProcessHash {
            exec_id: process.exec_id,
            sha256: sha256.clone(),
        });
        self.check_hash(process, sha256, time.unix_nanos())
    }

    /// A process ended. Call it also for processes the collector's table drops without an
    /// exit (reconciliation), so the cache here does not keep them.
    pub fn process_exited(&mut self, exec_id: &ExecId, time: Timestamp, exit: &ExitEvent) {
        if let Some(info) = self.processes.get_mut(exec_id) {
            info.exited = Some(time.unix_nanos());
        }
        self.handle.record(Record::ProcessExit {
            exec_id: *exec_id,
            end: ProcessEnd {
                time,
                exit_code: exit.exit_code,
                signal: exit.signal,
            },
        });
    }

    /// A connect (TCP or UDP, including UDP datagrams to a destination): the baseline's
    /// destination check now; its score once it ends (TCP close, UDP flow idle, or at once
    /// when it failed). An event with `late_outcome` completes the attempt reported before.
    pub fn connection(
        &mut self,
        process: &Process,
        time: Timestamp,
        connect: &ConnectEvent,
    ) -> Vec<HistoryDetection> {
        let now = time.unix_nanos();
        let mut out = Vec::new();
        let failed = !matches!(connect.outcome, Outcome::Ok | Outcome::Pending);
        let key = ConnKey {
            exec_id: process.exec_id,
            destination: connect.destination_ip,
            port: connect.destination_port,
        };
        if connect.late_outcome {
            if failed && connect.protocol == TransportProtocol::Tcp {
                if let Some(pending) = self.tcp.close(&key, connect.source_port) {
                    let row = ConnectionRow {
                        outcome: outcome_str(connect.outcome),
                        end: Some(time),
                        source_port: connect.source_port,
                        ..self.open_row(process.exec_id, &pending.exe, connect, pending.start)
                    };
                    let mut features = pending.features;
                    features.failed = 1.0;
                    self.finish_connection(row, features.complete(0.0, 0, 0), &mut out);
                }
            }
            return out;
        }
        let (identity, exe, connect_features) =
            self.connect_features(process, connect, now, failed);
        if self.config.baseline.enabled {
            let destination = self.baseline.destination_of(
                connect.protocol,
                connect.destination_ip,
                connect.destination_port,
            );
            let seen = self
                .baseline
                .destination(&identity, &destination, process.exec_id, now);
            if seen == Seen::Novel && self.config.baseline.new_destination.enabled {
                let learned = self.baseline.known_destinations(&identity);
                out.push(self.novelty(
                    detection::NEW_DESTINATION,
                    process.exec_id,
                    KIND_DESTINATION,
                    identity.program.as_str(),
                    &identity.user,
                    &destination.to_string(),
                    Some((connect.destination_ip, connect.destination_port)),
                    learned,
                    now,
                ));
            }
        }
        match connect.protocol {
            TransportProtocol::Udp => {
                let flow_key = FlowKey {
                    exec_id: process.exec_id,
                    destination: connect.destination_ip,
                    port: connect.destination_port,
                };
                let finished = self.udp.datagram(flow_key, now, || (exe, connect_features));
                for (key, flow) in finished {
                    self.finish_udp(key, flow, &mut out);
                }
            }
            TransportProtocol::Tcp if failed => {
                let row = ConnectionRow {
                    end: Some(time),
                    ..self.open_row(process.exec_id, &exe, connect, now)
                };
                self.finish_connection(row, connect_features.complete(0.0, 0, 0), &mut out);
            }
            TransportProtocol::Tcp => {
                self.handle.record(Record::Connect(self.open_row(
                    process.exec_id,
                    &exe,
                    connect,
                    now,
                )));
                self.tcp.open(
                    key,
                    Pending {
                        source_port: connect.source_port,
                        start: now,
                        exe,
                        features: connect_features,
                    },
                );
            }
        }
        out
    }

    /// A TCP connection closed: its duration and bytes complete its row, and it is scored.
    pub fn connection_closed(&mut self, close: &ConnectionClose) -> Vec<HistoryDetection> {
        let mut out = Vec::new();
        let key = ConnKey {
            exec_id: close.exec_id,
            destination: close.destination_ip,
            port: close.destination_port,
        };
        let (exe, features) = match self.tcp.close(&key, close.source_port) {
            Some(p) => (p.exe, p.features),
            None => self.features_without_connect(close),
        };
        let duration = (close.end.unix_nanos() - close.start.unix_nanos()).max(0) as f64 / 1e9;
        let row = ConnectionRow {
            exec_id: close.exec_id,
            exe: exe.to_string(),
            protocol: close.protocol.as_str(),
            destination: close.destination_ip,
            port: close.destination_port,
            source_port: close.source_port,
            outcome: outcome_str(Outcome::Ok),
            start: close.start,
            end: Some(close.end),
            bytes_sent: Some(close.bytes_sent),
            bytes_received: Some(close.bytes_received),
            score: None,
            label: None,
            features: None,
        };
        let full = features.complete(duration, close.bytes_sent, close.bytes_received);
        self.finish_connection(row, full, &mut out);
        out
    }

    /// A resource sample of a process (CPU % since the last sample, resident bytes).
    pub fn sample(&mut self, exec_id: &ExecId, time: Timestamp, cpu_percent: f32, rss_bytes: u64) {
        self.handle.record(Record::Sample {
            exec_id: *exec_id,
            time,
            cpu_percent,
            rss_bytes,
        });
    }

    /// A finding the collector published (any detector).
    pub fn finding(&mut self, finding: &Finding) {
        self.handle
            .record(Record::Finding(Box::new(finding.clone())));
    }

    /// Housekeeping, every second or so from the event loop (cheap when there is nothing
    /// to do): installs retrained models, applies operator overrides, finishes idle UDP
    /// flows, flushes and expires the baselines, forgets exited processes.
    pub fn tick(&mut self, now: Timestamp) -> Tick {
        let now_ns = now.unix_nanos();
        let mut tick = Tick::default();
        while let Ok(forest) = self.models.try_recv() {
            self.scorer.set_forest(forest);
        }
        let overrides: Vec<Override> = self.overrides.try_iter().collect();
        let mut applied = Vec::with_capacity(overrides.len());
        for o in &overrides {
            let audit = self.apply(o, now);
            applied.push((o.id, audit.result.clone()));
            tick.audit.push(audit);
        }
        for (key, flow) in self.udp.idle(now_ns) {
            self.finish_udp(key, flow, &mut tick.detections);
        }
        if now_ns >= self.next_expire {
            let expired = self.baseline.expire(now_ns);
            if expired > 0 {
                tracing::info!(expired, "baseline items unseen too long were forgotten");
            }
            self.next_expire = now_ns + EXPIRE_EVERY_NS;
        }
        if !applied.is_empty() || now_ns >= self.next_flush {
            // The accepted entries first, then the mark: a crash between them re-applies
            // the override at the next start (applying twice changes nothing).
            self.flush_baseline();
            for (id, result) in applied {
                self.handle.record(Record::OverrideApplied {
                    id,
                    time: now,
                    result,
                });
            }
            self.next_flush =
                now_ns + self.config.baseline.flush_interval_secs as i64 * NANOS_PER_SEC;
        }
        if now_ns >= self.next_prune {
            self.processes
                .retain(|_, p| p.exited.is_none_or(|t| now_ns - t < EXITED_GRACE_NS));
            self.next_prune = now_ns + PRUNE_EVERY_NS;
        }
        tick
    }

    /// Replaces the ONNX model; on error the models in force keep scoring.
    pub fn load_model(&mut self, path: &Path) -> Result<(), ModelError> {
        match self.scorer.load_model(path) {
            Ok(()) => {
                self.model_error = None;
                Ok(())
            }
            Err(e) => {
                self.model_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Trains the built-in model now, on this thread, from what is written (blocks: for
    /// tools and tests; the collector relies on the trainer thread). Returns the rows used.
    pub fn train_now(&mut self) -> Result<Option<usize>, HistoryError> {
        self.handle.flush()?;
        let conn = store::open_read_only(&self.config.path)?;
        let forest = training::train(&conn, &self.config.scoring, Timestamp::now())?;
        Ok(forest.map(|f| {
            let rows = f.trained_rows();
            self.scorer.set_forest(Arc::new(f));
            rows
        }))
    }

    /// The score the model in force gives a feature vector (`None` before any model).
    pub fn score(&mut self, features: &Features) -> Option<crate::score::Score> {
        self.scorer.score(features)
    }

    pub fn baseline(&self) -> &Baseline {
        &self.baseline
    }

    pub fn stats(&self) -> HistoryStats {
        HistoryStats {
            store: self.handle.stats(),
            baseline: self.baseline.status(Timestamp::now().unix_nanos()),
            open_connections: self.tcp.len(),
            open_connections_evicted: self.tcp.evicted,
            udp_flows: self.udp.len(),
            udp_flows_evicted: self.udp.evicted,
            processes_uncached: self.processes_uncached,
            scored: self.scored,
            suspicious: self.suspicious,
            model_rows: self.scorer.forest().map(IsolationForest::trained_rows),
            model_path: self.scorer.model_path().map(Path::to_path_buf),
            model_error: self.model_error.clone(),
            onnx_failures: self.scorer.onnx_failures,
        }
    }

    /// Writes what is pending (UDP flows, baseline changes, the queue) and stops the writer
    /// (records sent afterwards through clones of the handle are counted as dropped).
    /// Blocks until everything is on disk.
    pub fn close(mut self) -> Result<(), HistoryError> {
        let mut ignored = Vec::new();
        for (key, flow) in self.udp.drain() {
            self.finish_udp(key, flow, &mut ignored);
        }
        self.flush_baseline();
        match self.writer.take() {
            Some(writer) => writer.stop(),
            None => Ok(()),
        }
    }

    /// Writes the baseline changes now (they are written every `flush_interval_secs` by
    /// `tick`).
    pub fn flush_baseline(&mut self) {
        let changes = self.baseline.changes();
        if !changes.is_empty() {
            self.handle.record(Record::Baseline(Box::new(changes)));
        }
    }

    fn cache(&mut self, process: &Process, program: Program, parent_rarity: f32, now: i64) {
        let identity = Identity {
            program,
            user: user_of(process),
        };
        if self.config.baseline.enabled {
            self.baseline.program_seen(&identity, now);
        }
        if self.processes.len() >= PROCESS_CACHE && !self.processes.contains_key(&process.exec_id) {
            self.processes_uncached += 1;
            return;
        }
        self.processes.insert(
            process.exec_id,
            ProcessInfo {
                identity,
                exe: process.exe.as_str().into(),
                start: process.start_time.unix_nanos(),
                script_engine: self.engines.runs(process),
                parent_rarity,
                exited: None,
                anomaly_reported: false,
            },
        );
    }

    fn check_hash(&mut self, process: &Process, sha256: &str, now: i64) -> Vec<HistoryDetection> {
        if !self.config.baseline.enabled {
            return Vec::new();
        }
        let seen = self
            .baseline
            .hash(&process.exe, sha256, process.exec_id, now);
        if seen != Seen::Novel || !self.config.baseline.changed_hash.enabled {
            return Vec::new();
        }
        let learned = self.baseline.known_hashes(&process.exe);
        vec![self.novelty(
            detection::CHANGED_HASH,
            process.exec_id,
            KIND_HASH,
            &process.exe,
            "",
            sha256,
            None,
            learned,
            now,
        )]
    }

    /// The identity, exe and connect-time features of a connection by `process`.
    fn connect_features(
        &mut self,
        process: &Process,
        connect: &ConnectEvent,
        now: i64,
        failed: bool,
    ) -> (Identity, Arc<str>, ConnectFeatures) {
        if !self.processes.contains_key(&process.exec_id) {
            let program = Program::of(process, &self.engines);
            self.cache(process, program, 1.0, now);
        }
        let (identity, exe, start, script, parent_rarity) =
            match self.processes.get(&process.exec_id) {
                Some(p) => (
                    p.identity.clone(),
                    p.exe.clone(),
                    p.start,
                    p.script_engine,
                    p.parent_rarity,
                ),
                None => (
                    Identity {
                        program: Program::of(process, &self.engines),
                        user: user_of(process),
                    },
                    process.exe.as_str().into(),
                    process.start_time.unix_nanos(),
                    self.engines.runs(process),
                    1.0,
                ),
            };
        let destination = self.baseline.destination_of(
            connect.protocol,
            connect.destination_ip,
            connect.destination_port,
        );
        let features = ConnectFeatures {
            hour: hour_of(Timestamp::from_unix_nanos(now)),
            port_rarity: self.baseline.port_rarity(&destination),
            destination_novelty: self.baseline.destination_novelty(&identity, &destination),
            process_age: log1p((now - start).max(0) as f64 / 1e9),
            script_engine: f32::from(u8::from(script)),
            parent_rarity,
            udp: f32::from(u8::from(connect.protocol == TransportProtocol::Udp)),
            failed: f32::from(u8::from(failed)),
        };
        (identity, exe, features)
    }

    /// Features of a closed connection whose connect was not seen (before the collector
    /// started, or forgotten when the open map was full): from what is known now.
    fn features_without_connect(&mut self, close: &ConnectionClose) -> (Arc<str>, ConnectFeatures) {
        let destination = self.baseline.destination_of(
            close.protocol,
            close.destination_ip,
            close.destination_port,
        );
        let info = self.processes.get(&close.exec_id);
        let novelty = match info {
            Some(p) => self.baseline.destination_novelty(&p.identity, &destination),
            None => 1.0,
        };
        let features = ConnectFeatures {
            hour: hour_of(close.start),
            port_rarity: self.baseline.port_rarity(&destination),
            destination_novelty: novelty,
            process_age: info.map_or(0.0, |p| {
                log1p((close.start.unix_nanos() - p.start).max(0) as f64 / 1e9)
            }),
            script_engine: info.map_or(0.0, |p| f32::from(u8::from(p.script_engine))),
            parent_rarity: info.map_or(1.0, |p| p.parent_rarity),
            udp: 0.0,
            failed: 0.0,
        };
        let exe = info.map_or_else(|| Arc::from(""), |p| p.exe.clone());
        (exe, features)
    }

    fn open_row(
        &self,
        exec_id: ExecId,
        exe: &str,
        connect: &ConnectEvent,
        start: i64,
    ) -> ConnectionRow {
        ConnectionRow {
            exec_id,
            exe: exe.to_string(),
            protocol: connect.protocol.as_str(),
            destination: connect.destination_ip,
            port: connect.destination_port,
            source_port: connect.source_port,
            outcome: outcome_str(connect.outcome),
            start: Timestamp::from_unix_nanos(start),
            end: None,
            bytes_sent: None,
            bytes_received: None,
            score: None,
            label: None,
            features: None,
        }
    }

    /// Scores a finished connection, writes its row, and reports it when suspicious.
    fn finish_connection(
        &mut self,
        mut row: ConnectionRow,
        features: Features,
        out: &mut Vec<HistoryDetection>,
    ) {
        let score = self.score_and_report(
            row.exec_id,
            &row.exe,
            &features,
            || format!("{} {}:{}", row.protocol, row.destination, row.port),
            out,
        );
        row.score = score.map(|s| s.0);
        row.label = score.map(|s| s.1);
        row.features = Some(features);
        self.handle.record(Record::Close(row));
    }

    fn finish_udp(&mut self, key: FlowKey, flow: Flow, out: &mut Vec<HistoryDetection>) {
        let features = flow
            .features
            .complete((flow.last - flow.first).max(0) as f64 / 1e9, 0, 0);
        let score = self.score_and_report(
            key.exec_id,
            &flow.exe,
            &features,
            || format!("udp {}:{}", key.destination, key.port),
            out,
        );
        self.handle.record(Record::UdpFlow(UdpFlowRow {
            exec_id: key.exec_id,
            exe: flow.exe.to_string(),
            destination: key.destination,
            port: key.port,
            first: Timestamp::from_unix_nanos(flow.first),
            last: Timestamp::from_unix_nanos(flow.last),
            datagrams: flow.datagrams,
            score: score.map(|s| s.0),
            label: score.map(|s| s.1),
            features,
        }));
    }

    fn score_and_report(
        &mut self,
        exec_id: ExecId,
        exe: &str,
        features: &Features,
        describe: impl FnOnce() -> String,
        out: &mut Vec<HistoryDetection>,
    ) -> Option<(f32, Label)> {
        if !self.config.scoring.enabled {
            return None;
        }
        let score = self.scorer.score(features)?;
        self.scored += 1;
        if score.label == Label::Suspicious {
            self.suspicious += 1;
            let info = self.processes.get_mut(&exec_id);
            let first = info.as_ref().is_none_or(|p| !p.anomaly_reported);
            if let Some(p) = info {
                p.anomaly_reported = true;
            }
            if first {
                let connection = describe();
                let model = match score.model {
                    ModelKind::IsolationForest => "isolation forest",
                    ModelKind::Onnx => "ONNX model",
                };
                let features_text = FEATURE_NAMES
                    .iter()
                    .zip(features)
                    .map(|(n, v)| format!("{n}={v:.3}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                out.push(HistoryDetection {
                    detector: Detector::Anomaly,
                    rule_id: detection::UNUSUAL_CONNECTION,
                    title: format!("Unusual connection by {exe}: {connection}"),
                    description: format!(
                        "{model} score {:.3} above {:.3} for {connection}; {features_text}",
                        score.value, score.threshold
                    ),
                    severity: self.config.scoring.severity,
                    tags: &[],
                    exec_id,
                    finding_id: None,
                    subject: exe.to_string(),
                    novel: connection,
                    learned: Vec::new(),
                    learned_total: 0,
                    score: Some(score.value),
                });
            }
        }
        Some((score.value, score.label))
    }

    /// A baseline detection, and its novelty row (for `osprey baseline accept`).
    #[allow(clippy::too_many_arguments)]
    fn novelty(
        &self,
        rule_id: &'static str,
        exec_id: ExecId,
        kind: &'static str,
        owner: &str,
        user: &str,
        item: &str,
        destination: Option<(IpAddr, u16)>,
        learned: Vec<String>,
        now: i64,
    ) -> HistoryDetection {
        let finding_id = FindingId::new(&self.host, &exec_id, Detector::Baseline, rule_id);
        self.handle.record(Record::Novelty(NoveltyRow {
            finding_id: finding_id.0.clone(),
            exec_id,
            rule_id,
            kind,
            owner: owner.to_string(),
            user: user.to_string(),
            item: item.to_string(),
            destination,
            time: Timestamp::from_unix_nanos(now),
        }));
        let checks = &self.config.baseline;
        let (severity, title, what) = match kind {
            KIND_DESTINATION => (
                checks.new_destination.severity,
                format!("New destination for {owner}: {item}"),
                format!("{owner} (user {user}) connected to {item}"),
            ),
            KIND_CHILD => (
                checks.new_child.severity,
                format!("New child of {owner}: {item}"),
                format!("{owner} started {item}"),
            ),
            _ => (
                checks.changed_hash.severity,
                format!("Changed hash of {owner}: {item}"),
                format!("{owner} has sha256 {item}"),
            ),
        };
        let (learned, learned_total) = HistoryDetection::evidence(learned);
        let description = format!(
            "{what}, which it did not do while learning; learned: {}",
            HistoryDetection::learned_text(&learned, learned_total)
        );
        HistoryDetection {
            detector: Detector::Baseline,
            rule_id,
            title,
            description,
            severity,
            tags: detection::tags(rule_id),
            exec_id,
            finding_id: Some(finding_id),
            subject: if user.is_empty() {
                owner.to_string()
            } else {
                format!("{owner} (user {user})")
            },
            novel: item.to_string(),
            learned,
            learned_total,
            score: None,
        }
    }

    /// Applies an operator override to the baseline in memory; its audit record.
    fn apply(&mut self, o: &Override, now: Timestamp) -> AuditRecord {
        let (action, target, finding_id, decision, result) = match &o.action {
            OverrideAction::Accept { finding_id, items } => {
                let mut accepted = Vec::new();
                for item in items {
                    if self.baseline.accept(
                        &item.kind,
                        &item.owner,
                        &item.user,
                        &item.item,
                        now.unix_nanos(),
                    ) {
                        accepted.push(format!("{} {} for {}", item.kind, item.item, item.owner));
                        if let Some((ip, port)) = item.destination {
                            self.handle.record(Record::Accepted {
                                exec_id: item.exec_id,
                                destination: ip,
                                port,
                            });
                        }
                    }
                }
                let (decision, result) = if accepted.is_empty() {
                    (
                        Decision::Refused,
                        format!("no baseline novelty recorded for finding {finding_id}"),
                    )
                } else {
                    (
                        Decision::Executed,
                        format!("accepted {}", accepted.join("; ")),
                    )
                };
                (
                    "baseline_accept",
                    finding_id.clone(),
                    Some(finding_id),
                    decision,
                    result,
                )
            }
            OverrideAction::Forget { target } => {
                let n = self.baseline.forget(target);
                (
                    "baseline_forget",
                    target.clone(),
                    None,
                    Decision::Executed,
                    format!("forgot {n} baseline owner(s) of {target}; they learn again"),
                )
            }
        };
        tracing::info!(action, %target, actor = %o.actor, %result, "baseline override applied");
        let mut record = AuditRecord::new(
            "collector",
            self.host.clone(),
            action,
            decision,
            format!("operator request #{} by {}", o.id, o.actor),
            result,
        );
        record.time = now;
        record.target = Some(target);
        record.finding_id = finding_id.map(|f| FindingId(f.clone()));
        record.command_id = Some(o.id.to_string());
        record.actor.name = Some(o.actor.clone());
        record
    }
}

fn outcome_str(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ok => "ok",
        Outcome::Refused => "refused",
        Outcome::TimedOut => "timed_out",
        Outcome::Denied => "denied",
        Outcome::Error => "error",
        Outcome::Pending => "pending",
    }
}

#[cfg(test)]
mod tests {
    /// The collector may keep its `History` in an async task or move it to a thread.
    #[test]
    fn history_can_move_between_threads() {
        fn is_send<T: Send>() {}
        is_send::<super::History>();
        is_send::<super::HistoryHandle>();
    }
}
