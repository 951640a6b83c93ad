//! The collector's event loop: source → process table → enrichment → detectors → findings →
//! publisher, plus the periodic work (heartbeat, reconciliation with the live process list,
//! CPU and resident-memory samples for the policy's memory rules and for host state queries),
//! and the answers to host state queries (`query/`).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use protocol::{
    ArgvTruncation, ConnectEvent, Event, EventDetail, EventKind, ExecEvent, Finding, ForkEvent,
    Heartbeat, MemorySampleEvent, Process, Timestamp,
};
use rules::SubjectKind;
use tokio::sync::mpsc;

use crate::{
    cost::{self, Stage, StageClock},
    detect::Detectors,
    enrich::{ContainerIds, ExeHashes, HashResult, UserNames},
    findings::Findings,
    history_feed::{self, HistoryFeed},
    process::{
        resolve::{Resolved, Resolver},
        ProcessTable,
    },
    publish::Publisher,
    query::{snapshot, Activity, QueryRequest},
    resources::{self, ResourceSample, ResourceSampler, SampleScope},
    source::{EventSource, SensorEvent, SourceError},
};

/// How often the history's periodic work runs.
const HISTORY_TICK: Duration = Duration::from_secs(1);

pub struct PipelineOptions {
    pub host: String,
    pub heartbeat_interval: Duration,
    pub reconcile_interval: Duration,
    /// Between CPU and resident-memory samples: of every process while a loaded rule looks
    /// at samples, else of the processes with network activity or findings.
    pub resource_sample_interval: Duration,
    /// Host state queries to answer (from `query::QueryServer`), if it runs.
    pub queries: Option<mpsc::Receiver<QueryRequest>>,
    /// Processes whose activity is kept for queries (`query.tracked_processes`).
    pub tracked_processes: usize,
    /// Active kernel blocks and kill-on-exec entries, kept by the actuator (heartbeats).
    pub active_blocks: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Local response: findings at least this severe that recommend actions go to the
    /// actuator, which runs them on this host.
    pub local_response: Option<(mpsc::UnboundedSender<Finding>, protocol::Severity)>,
    /// VirusTotal verdicts, when the intel detector looks hashes up.
    pub verdicts: Option<mpsc::Receiver<intel::Answer<protocol::ExecId>>>,
    /// The host's history (`history.enabled`): every event goes in, its detections come
    /// back as findings.
    pub history: Option<HistoryFeed>,
    /// Where audit records the pipeline makes (baseline overrides) are appended, besides
    /// `osprey.audit`.
    pub audit_file: Option<std::path::PathBuf>,
}

pub struct Pipeline<S: EventSource> {
    options: PipelineOptions,
    source: S,
    table: ProcessTable,
    resolver: Resolver,
    resolved: mpsc::UnboundedReceiver<Resolved>,
    users: UserNames,
    containers: ContainerIds,
    hashes: ExeHashes,
    hash_results: mpsc::UnboundedReceiver<HashResult>,
    sampler: ResourceSampler,
    samples: mpsc::UnboundedReceiver<Vec<ResourceSample>>,
    activity: Activity,
    queries: Option<mpsc::Receiver<QueryRequest>>,
    history: Option<HistoryFeed>,
    detectors: Detectors,
    findings: Findings,
    publisher: Publisher,
    events_by_kind: BTreeMap<&'static str, u64>,
    events_at_last_heartbeat: u64,
    last_heartbeat: Instant,
    started: Instant,
    reported_drops: BTreeMap<String, u64>,
    /// Connection closes whose process the table no longer knew.
    unattributed_closes: u64,
    stages: StageClock,
}

impl<S: EventSource> Pipeline<S> {
    /// Takes a started source: the process table is filled from the processes that predate
    /// it (after its probes are attached, so nothing falls between the two).
    pub fn new(
        mut options: PipelineOptions,
        mut source: S,
        mut table: ProcessTable,
        detectors: Detectors,
        publisher: Publisher,
    ) -> Result<Self, SourceError> {
        let existing = source.existing_processes()?;
        tracing::info!(processes = existing.len(), "process table bootstrapped");
        table.bootstrap(existing);
        let (resolver, resolved) =
            Resolver::start(source.process_reader()).map_err(|source| SourceError::Io {
                context: "cannot start the process reading thread".into(),
                source,
            })?;
        let (hashes, hash_results) = ExeHashes::start().map_err(|source| SourceError::Io {
            context: "cannot start the hashing thread".into(),
            source,
        })?;
        let (sampler, samples) = ResourceSampler::start().map_err(|source| SourceError::Io {
            context: "cannot start the resource sampling thread".into(),
            source,
        })?;
        let activity = Activity::new(options.tracked_processes);
        let queries = options.queries.take();
        let mut history = options.history.take();
        if let Some(history) = &mut history {
            for process in table.live() {
                history.existing(process);
            }
        }
        let findings = Findings::new(options.host.clone(), 100_000);
        Ok(Pipeline {
            options,
            source,
            table,
            resolver,
            resolved,
            users: UserNames::new("/etc/passwd"),
            containers: ContainerIds::default(),
            hashes,
            hash_results,
            sampler,
            samples,
            activity,
            queries,
            history,
            detectors,
            findings,
            publisher,
            events_by_kind: EventKind::ALL.iter().map(|k| (k.as_str(), 0)).collect(),
            events_at_last_heartbeat: 0,
            last_heartbeat: Instant::now(),
            started: Instant::now(),
            reported_drops: BTreeMap::new(),
            unattributed_closes: 0,
            stages: StageClock::default(),
        })
    }

    /// Runs until `shutdown` resolves or the source fails.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), SourceError> {
        tokio::pin!(shutdown);
        let mut heartbeat = tokio::time::interval(self.options.heartbeat_interval);
        let mut reconcile = tokio::time::interval(self.options.reconcile_interval);
        reconcile.tick().await; // the table was just built
        let mut sample = tokio::time::interval(self.options.resource_sample_interval);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut history_tick = tokio::time::interval(HISTORY_TICK);
        history_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(1024);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                result = self.source.next_batch(&mut batch) => {
                    result?;
                    for event in batch.drain(..) {
                        self.handle(event);
                    }
                }
                Some(result) = self.hash_results.recv() => self.store_hash(result),
                Some(answer) = recv(&mut self.options.verdicts) => self.on_verdict(answer),
                Some(resolved) = self.resolved.recv() => self.on_resolved(resolved),
                _ = heartbeat.tick() => self.heartbeat(),
                _ = reconcile.tick() => self.reconcile(),
                _ = sample.tick() => self.request_sample(),
                Some(samples) = self.samples.recv() => self.evaluate_samples(samples),
                Some(request) = recv(&mut self.queries) => self.answer(request),
                _ = history_tick.tick() => self.history_tick(),
            }
        }
        self.heartbeat();
        if let Some(history) = self.history.take() {
            history.close();
        }
        Ok(())
    }

    /// Takes one event from the source. A connect from a pid the table does not know waits
    /// until the pid is read from the platform, and so do later events of that pid.
    fn handle(&mut self, event: SensorEvent) {
        let pid = match &event {
            SensorEvent::Exec(e) => e.process.pid,
            SensorEvent::Exit(e) => e.process.pid,
            SensorEvent::Connect(e) => e.pid,
            SensorEvent::Close(e) => e.process.pid,
            SensorEvent::Fork(e) => {
                if self.table.get(e.ppid).is_none() {
                    // Its parent predates us: read it, so later ancestry resolves.
                    self.resolver.request(e.ppid);
                }
                return self.process(event);
            }
        };
        let unknown_source =
            matches!(event, SensorEvent::Connect(_)) && self.table.get(pid).is_none();
        if unknown_source || self.resolver.is_waiting(pid) {
            if let Some(event) = self.resolver.park(pid, event) {
                self.process(event);
            }
            return;
        }
        self.process(event);
    }

    /// A pid was read from the platform: the table takes it in and the events that waited
    /// for it go on, in order.
    fn on_resolved(&mut self, resolved: Resolved) {
        if let Some(record) = &resolved.record {
            self.table.adopt(record);
        }
        for event in self.resolver.release(resolved.pid) {
            self.process(event);
        }
    }

    fn process(&mut self, event: SensorEvent) {
        self.stages.start();
        let time = event.time();
        let (process, detail) = match event {
            SensorEvent::Exec(rec) => {
                let file = rec.exe_file;
                let (process, previous_exe) = self.table.exec(&rec);
                let mut process = self.enrich(process);
                if let Some(file) = file {
                    process.sha256 = self.hashes.lookup(file, process.exec_id, &process.exe);
                    if let Some(entry) = self.table.get_mut(process.pid) {
                        entry.sha256 = process.sha256.clone();
                    }
                }
                (process, EventDetail::Exec(ExecEvent { previous_exe }))
            }
            SensorEvent::Fork(rec) => (self.table.fork(&rec), EventDetail::Fork(ForkEvent {})),
            SensorEvent::Exit(rec) => match self.table.exit(rec.process) {
                Some(p) => (p, EventDetail::Exit(rec.status)),
                None => return,
            },
            SensorEvent::Connect(rec) => {
                let Some(process) = self.process_for(rec.pid, time) else {
                    return;
                };
                (
                    process,
                    EventDetail::Connect(ConnectEvent {
                        family: rec.family,
                        protocol: rec.protocol,
                        destination_ip: rec.destination_ip,
                        destination_port: rec.destination_port,
                        source_ip: rec.source_ip,
                        source_port: rec.source_port,
                        outcome: rec.outcome,
                        errno: rec.errno,
                        hook: rec.hook,
                        late_outcome: rec.late_outcome,
                    }),
                )
            }
            SensorEvent::Close(rec) => {
                // The connecting process, even if it exited since (the usual order: its exit
                // closes the socket). One the table no longer knows cannot be attributed.
                let Some(process) = self.table.by_key(rec.process).cloned() else {
                    self.unattributed_closes += 1;
                    return;
                };
                (process, EventDetail::Close(rec.detail))
            }
        };
        self.stages.charge(Stage::Table);
        // Fork and exit events name the parent (`parent_exec_id`) but carry no ancestry:
        // nothing scores them, consumers have it from the exec, and building and encoding
        // every ancestor's argv was a third of the collector's cost in an exec storm.
        let ancestry = match detail {
            EventDetail::Exec(_) | EventDetail::Connect(_) => self.table.ancestry(&process),
            _ => Vec::new(),
        };
        self.stages.charge(Stage::Ancestry);
        let event = Event {
            time,
            host: self.options.host.clone(),
            process,
            ancestry,
            detail,
        };
        *self
            .events_by_kind
            .entry(event.kind().as_str())
            .or_default() += 1;
        self.publisher.event(&event);
        self.stages.charge(Stage::Publish);
        self.activity.observe(&event);
        self.detect(&event);
        if let Some(history) = &mut self.history {
            self.stages.charge(Stage::Detect);
            let detections = history.event(&event);
            self.stages.charge(Stage::History);
            for d in detections {
                if let Some(finding) = self.findings.raise(&event, history_feed::detection(d)) {
                    self.found(finding);
                }
            }
        }
        if let (EventDetail::Exec(_), Some(sha256)) = (&event.detail, &event.process.sha256) {
            self.judge_hash(event.process.exec_id, sha256);
        }
        self.stages.charge(Stage::Detect);
    }

    /// Executables waiting to be hashed (`osprey scan` waits for none).
    pub fn hash_queue(&self) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        self.hashes.queued()
    }

    /// `osprey scan`: every live process is judged as if it had just started (rules and
    /// heuristics see an exec event, which is not published), its executable hashed and
    /// looked up, and CPU and memory sampled, so the snapshot that follows is complete and
    /// local response acts on what the policy names.
    pub fn scan_existing(&mut self) {
        let live: Vec<(Process, Option<crate::source::FileId>)> = self
            .table
            .live_with_files()
            .map(|(p, file)| (p.clone(), file))
            .collect();
        let now = protocol::Timestamp::now();
        for (process, file) in live {
            let mut process = self.enrich(process);
            self.activity.track(process.exec_id);
            if let Some(file) = file {
                process.sha256 = self.hashes.lookup(file, process.exec_id, &process.exe);
                if let Some(entry) = self.table.get_mut(process.pid) {
                    entry.sha256.clone_from(&process.sha256);
                }
            }
            let event = Event {
                time: now,
                host: self.options.host.clone(),
                ancestry: self.table.ancestry(&process),
                process,
                detail: EventDetail::Exec(ExecEvent { previous_exe: None }),
            };
            self.detect(&event);
            if let Some(sha256) = &event.process.sha256 {
                self.judge_hash(event.process.exec_id, sha256);
            }
        }
        if !self.sampler.request(SampleScope::All) {
            tracing::debug!("resource sample still running: the scan's sample is skipped");
        }
    }

    /// Runs every detector on `event`; new findings (not repeats) are published.
    fn detect(&mut self, event: &Event) {
        for detection in self.detectors.evaluate(event) {
            if let Some(finding) = self.findings.raise(event, detection) {
                self.found(finding);
            }
        }
    }

    /// A new finding: published, remembered (queries, history) and, with local response,
    /// handed to the actuator.
    fn found(&mut self, finding: Finding) {
        crate::metrics::get().finding(finding.severity);
        self.activity.finding(&finding);
        self.publisher.finding(&finding);
        if let Some(history) = &mut self.history {
            history.finding(&finding);
        }
        if let Some((actuator, min_severity)) = &self.options.local_response {
            if finding.severity >= *min_severity
                && !finding.recommended_actions.is_empty()
                && actuator.send(finding).is_err()
            {
                tracing::error!("local response: the actuator is gone; actions not taken");
            }
        }
    }

    /// History detections with no event of their own (a hash computed later, a UDP flow gone
    /// idle): raised on the process as the table remembers it, without a trigger.
    fn raise_history(&mut self, detections: Vec<history::HistoryDetection>) {
        for d in detections {
            let Some((process, _)) = self.table.remembered(&d.exec_id) else {
                continue;
            };
            let process = process.clone();
            let ancestry = self.table.ancestry(&process);
            let detection = history_feed::detection(d);
            if let Some(finding) =
                self.findings
                    .raise_on(&process, &ancestry, Timestamp::now(), Vec::new(), detection)
            {
                self.found(finding);
            }
        }
    }

    /// The history's periodic work; operator overrides it applied are audited.
    fn history_tick(&mut self) {
        let Some(history) = &mut self.history else {
            return;
        };
        let tick = history.tick();
        for record in &tick.audit {
            self.publisher.audit(record);
            if let Some(path) = &self.options.audit_file {
                crate::audit::append(path, record);
            }
        }
        self.raise_history(tick.detections);
    }

    /// The executable hash of a live process became known: threat intelligence judges it
    /// (feeds at once, VirusTotal later through [`Pipeline::on_verdict`]).
    fn judge_hash(&mut self, exec_id: protocol::ExecId, sha256: &str) {
        let Some(process) = self.table.get(exec_id.pid).filter(|p| p.exec_id == exec_id) else {
            return;
        };
        let process = process.clone();
        let Some(intel) = self.detectors.intel() else {
            return;
        };
        let verdicts = intel.on_hash(&process, sha256);
        for verdict in verdicts {
            self.judge(process.clone(), verdict);
        }
    }

    /// A verdict about one process's executable: the rules and the intel detector see it.
    fn judge(&mut self, process: Process, verdict: protocol::IntelVerdictEvent) {
        self.activity.verdict(process.exec_id, &verdict);
        let ancestry = self.table.ancestry(&process);
        let event =
            crate::detect::intel::verdict_event(&self.options.host, process, ancestry, verdict);
        self.detect(&event);
    }

    /// A VirusTotal answer, for every process that asked and is still known.
    fn on_verdict(&mut self, answer: intel::Answer<protocol::ExecId>) {
        let Some(intel) = self.detectors.intel() else {
            return;
        };
        let verdict = intel.on_answer(&answer);
        for exec_id in &answer.requesters {
            let known = self
                .table
                .get(exec_id.pid)
                .filter(|p| p.exec_id == *exec_id)
                .cloned();
            if let Some(process) = known {
                self.judge(process, verdict.clone());
            }
        }
    }

    /// Asks the sampling thread for CPU and resident memory: of every live process when a
    /// loaded rule looks at samples, else of the processes queries show activity for.
    fn request_sample(&mut self) {
        let scope = if self.detectors.engine().rules_for(SubjectKind::Sample) > 0 {
            SampleScope::All
        } else if !self.activity.is_empty() {
            SampleScope::Pids(self.activity.watched_pids())
        } else {
            return;
        };
        if !self.sampler.request(scope) {
            tracing::debug!("resource sample still running: interval tick skipped");
        }
    }

    /// Keeps the samples for queries and evaluates the memory rules on each sampled process
    /// the table knows alive. Samples are not published as events; a finding they raise
    /// carries one as its trigger.
    fn evaluate_samples(&mut self, samples: Vec<ResourceSample>) {
        self.activity.store_samples(&samples, &self.table);
        if let Some(history) = &mut self.history {
            for sample in &samples {
                let tracked = self
                    .table
                    .get(sample.pid)
                    .filter(|p| resources::same_process(sample, p))
                    .filter(|p| self.activity.get(&p.exec_id).is_some());
                if let Some(process) = tracked {
                    history.sample(&process.exec_id, sample.cpu_percent, sample.rss_bytes);
                }
            }
        }
        if self.detectors.engine().rules_for(SubjectKind::Sample) == 0 {
            return;
        }
        let time = Timestamp::now();
        for sample in samples {
            let Some(exec_id) = self.table.get(sample.pid).map(|p| p.exec_id) else {
                continue;
            };
            let Some(process) = self.table.by_exec_id(&exec_id) else {
                continue;
            };
            if !resources::same_process(&sample, process) {
                continue;
            }
            let process = process.clone();
            let ancestry = self.table.ancestry(&process);
            let detail = EventDetail::MemorySample(MemorySampleEvent {
                rss_bytes: sample.rss_bytes,
            });
            let event = Event {
                time,
                host: self.options.host.clone(),
                process,
                ancestry,
                detail,
            };
            self.detect(&event);
        }
    }

    /// The table's process for `pid`, enriched. A pid the platform could not tell about
    /// either (gone before it could be read) gets a minimal entry so its events are not lost.
    fn process_for(&mut self, pid: u32, time: Timestamp) -> Option<Process> {
        if self.table.touch(pid).is_none() {
            let rec = crate::source::ExecRecord {
                time,
                process: crate::source::ProcessKey {
                    pid,
                    start_ticks: 0,
                },
                comm: format!("pid {pid}"),
                argv_truncation: Some(ArgvTruncation::Unavailable),
                ..Default::default()
            };
            self.table.exec(&rec);
        }
        let process = self.table.get(pid)?.clone();
        Some(self.enrich(process))
    }

    /// Fills user and container of a process (cached lookups) and keeps them in the table.
    fn enrich(&mut self, mut process: Process) -> Process {
        if process.user.is_none() {
            process.user = self.users.name(process.uid);
        }
        if process.container_id.is_none() && process.cgroup_id != 0 {
            process.container_id = self.containers.lookup(process.cgroup_id, process.pid);
        }
        if let Some(entry) = self.table.get_mut(process.pid) {
            if entry.exec_id == process.exec_id {
                entry.user.clone_from(&process.user);
                entry.container_id.clone_from(&process.container_id);
            }
        }
        process
    }

    fn store_hash(&mut self, result: HashResult) {
        let waiters = self.hashes.store(&result);
        for exec_id in std::iter::once(result.exec_id).chain(waiters) {
            let fresh = self
                .table
                .get_mut(exec_id.pid)
                .filter(|p| p.exec_id == exec_id && p.sha256.is_none())
                .map(|p| p.sha256 = Some(result.sha256.clone()))
                .is_some();
            if !fresh {
                continue;
            }
            self.judge_hash(exec_id, &result.sha256);
            let hashed = self
                .table
                .by_exec_id(&exec_id)
                .cloned()
                .zip(self.history.as_mut());
            if let Some((process, history)) = hashed {
                let detections = history.hashed(&process);
                self.raise_history(detections);
            }
        }
    }

    /// Answers a host state query from the table as it is now.
    fn answer(&mut self, request: QueryRequest) {
        let (heuristics, engine) = self.detectors.heuristics();
        let sources = snapshot::Sources {
            host: &self.options.host,
            table: &self.table,
            activity: &self.activity,
            heuristics,
            settings: engine.heuristics(),
        };
        let mut answer = snapshot::answer(&sources, &request.query);
        // Processes read from /proc at start-up have no user name yet.
        for state in &mut answer.processes {
            if state.process.user.is_none() {
                state.process.user = self.users.name(state.process.uid);
            }
        }
        // The asker may have given up (timeout): nothing to do then.
        let _ = request.reply.send(answer);
    }

    fn reconcile(&mut self) {
        match self.source.live_processes() {
            Ok(live) => {
                let removed = self.table.reconcile(&live);
                if removed > 0 {
                    tracing::debug!(removed, "process table reconciled");
                }
            }
            Err(e) => tracing::warn!("cannot list live processes: {e}"),
        }
    }

    fn heartbeat(&mut self) {
        self.table.reap();
        let stats = self.source.stats();
        self.stages.add(Stage::Read, stats.read_time);
        for (kind, &count) in &stats.drops {
            let before = self.reported_drops.get(kind).copied().unwrap_or(0);
            if count > before {
                tracing::warn!(
                    kind,
                    lost = count - before,
                    total = count,
                    "kernel records dropped"
                );
            }
        }
        self.reported_drops = stats.drops.clone();
        let mut pending = stats.pending;
        pending.insert("parked_events".into(), self.resolver.parked() as u64);
        let mut evicted = stats.evicted;
        evicted.insert("parked_events".into(), self.resolver.overflow());
        evicted.insert("hash_requests".into(), self.hashes.dropped());
        evicted.insert("hash_cache".into(), self.hashes.evicted());
        evicted.insert("container_ids".into(), self.containers.evicted());
        evicted.insert("unattributed_closes".into(), self.unattributed_closes);
        if let Some(history) = &self.history {
            history_feed::heartbeat_counters(&history.stats(), &mut pending, &mut evicted);
        }
        self.activity.prune(&self.table);
        let activity = self.activity.evictions();
        evicted.insert("query_processes".into(), activity.processes);
        evicted.insert("query_connections".into(), activity.connections);
        evicted.insert("query_findings".into(), activity.findings);
        let publisher = self.publisher.stats();
        let table = self.table.stats();
        let total: u64 = self.events_by_kind.values().sum();
        let elapsed = self.last_heartbeat.elapsed().as_secs_f64().max(0.001);
        let mut heartbeat = Heartbeat {
            host: self.options.host.clone(),
            time: Timestamp::now(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocol_version: protocol::PROTOCOL_VERSION,
            uptime_secs: self.started.elapsed().as_secs(),
            events: self
                .events_by_kind
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            events_per_sec: (total - self.events_at_last_heartbeat) as f64 / elapsed,
            findings: self.findings.raised(),
            drops: stats.drops,
            drops_by_cgroup: stats.drops_by_cgroup,
            pending,
            evicted,
            process_table_size: table.size,
            process_table_evicted: table.evicted,
            active_blocks: self
                .options
                .active_blocks
                .load(std::sync::atomic::Ordering::Relaxed),
            ring: stats.ring,
            stage_ns: self.stages.totals(),
            thread_cpu_ns: cost::thread_cpu_ns(),
            ..Default::default()
        };
        publisher.stamp(&mut heartbeat);
        self.events_at_last_heartbeat = total;
        self.last_heartbeat = Instant::now();
        crate::metrics::get().heartbeat(&heartbeat);
        self.publisher.heartbeat(&heartbeat);
    }
}

/// The next item of an optional receiver (pending forever without one), for `select!`.
async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
