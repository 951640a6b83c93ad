//! The collector's event loop: source → process table → enrichment → detectors → findings →
//! publisher, plus the periodic work (heartbeat, reconciliation with the live process list,
//! resident-memory samples for the policy's memory rules).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use protocol::{
    ArgvSource, ConnectEvent, Event, EventDetail, EventKind, ExecEvent, ForkEvent, Heartbeat,
    MemorySampleEvent, Process, Timestamp,
};
use rules::SubjectKind;
use tokio::sync::mpsc;

use crate::{
    detect::{
        memory::{MemorySampler, RssSample},
        Detectors,
    },
    enrich::{ContainerIds, ExeHashes, HashResult, UserNames},
    findings::Findings,
    process::ProcessTable,
    publish::Publisher,
    source::{EventSource, SensorEvent, SourceError},
};

pub struct PipelineOptions {
    pub host: String,
    pub heartbeat_interval: Duration,
    pub reconcile_interval: Duration,
    /// How argv of exec events was captured on this platform.
    pub argv_source: ArgvSource,
    /// Between resident-memory samples of live processes (taken only while a loaded rule
    /// looks at samples).
    pub memory_sample_interval: Duration,
    /// Active kernel blocks and kill-on-exec entries, kept by the actuator (heartbeats).
    pub active_blocks: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

pub struct Pipeline<S: EventSource> {
    options: PipelineOptions,
    source: S,
    table: ProcessTable,
    users: UserNames,
    containers: ContainerIds,
    hashes: ExeHashes,
    hash_results: mpsc::UnboundedReceiver<HashResult>,
    sampler: MemorySampler,
    samples: mpsc::UnboundedReceiver<Vec<RssSample>>,
    detectors: Detectors,
    findings: Findings,
    publisher: Publisher,
    events_by_kind: BTreeMap<&'static str, u64>,
    events_at_last_heartbeat: u64,
    last_heartbeat: Instant,
    started: Instant,
    reported_drops: BTreeMap<String, u64>,
}

impl<S: EventSource> Pipeline<S> {
    /// Takes a started source: the process table is filled from the processes that predate
    /// it (after its probes are attached, so nothing falls between the two).
    pub fn new(
        options: PipelineOptions,
        mut source: S,
        mut table: ProcessTable,
        detectors: Detectors,
        publisher: Publisher,
    ) -> Result<Self, SourceError> {
        let existing = source.existing_processes()?;
        tracing::info!(processes = existing.len(), "process table bootstrapped");
        let fallback = if options.argv_source == ArgvSource::Os {
            ArgvSource::Os
        } else {
            ArgvSource::Procfs
        };
        table.bootstrap(existing, fallback);
        let (hashes, hash_results) = ExeHashes::start().map_err(|source| SourceError::Io {
            context: "cannot start the hashing thread".into(),
            source,
        })?;
        let (sampler, samples) = MemorySampler::start().map_err(|source| SourceError::Io {
            context: "cannot start the memory sampling thread".into(),
            source,
        })?;
        let findings = Findings::new(options.host.clone(), 100_000);
        Ok(Pipeline {
            options,
            source,
            table,
            users: UserNames::new("/etc/passwd"),
            containers: ContainerIds::default(),
            hashes,
            hash_results,
            sampler,
            samples,
            detectors,
            findings,
            publisher,
            events_by_kind: EventKind::ALL.iter().map(|k| (k.as_str(), 0)).collect(),
            events_at_last_heartbeat: 0,
            last_heartbeat: Instant::now(),
            started: Instant::now(),
            reported_drops: BTreeMap::new(),
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
        let mut sample = tokio::time::interval(self.options.memory_sample_interval);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                _ = heartbeat.tick() => self.heartbeat(),
                _ = reconcile.tick() => self.reconcile(),
                _ = sample.tick() => self.request_sample(),
                Some(samples) = self.samples.recv() => self.evaluate_samples(samples),
            }
        }
        self.heartbeat();
        Ok(())
    }

    fn handle(&mut self, event: SensorEvent) {
        let time = event.time();
        let (process, detail) = match event {
            SensorEvent::Exec(rec) => {
                let source = if rec.argv.is_some() && self.options.argv_source != ArgvSource::Procfs
                {
                    self.options.argv_source
                } else {
                    ArgvSource::Procfs
                };
                let file = rec.exe_file;
                let (process, previous_exe) = self.table.exec(&rec, source);
                let mut process = self.enrich(process);
                if let Some(file) = file {
                    process.sha256 =
                        self.hashes
                            .lookup(file, process.exec_id, process.pid, &process.exe);
                    if let Some(entry) = self.table.get_mut(process.pid) {
                        entry.sha256 = process.sha256.clone();
                    }
                }
                (process, EventDetail::Exec(ExecEvent { previous_exe }))
            }
            SensorEvent::Fork(rec) => match self.table.fork(&rec) {
                Some(p) => (p, EventDetail::Fork(ForkEvent {})),
                None => return,
            },
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
        };
        // Fork and exit events name the parent (`parent_exec_id`) but carry no ancestry:
        // nothing scores them, consumers have it from the exec, and building and encoding
        // every ancestor's argv was a third of the collector's cost in an exec storm.
        let ancestry = match detail {
            EventDetail::Exec(_) | EventDetail::Connect(_) => self.table.ancestry(&process),
            _ => Vec::new(),
        };
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
        self.detect(&event);
    }

    /// Runs every detector on `event`; new findings (not repeats) are published.
    fn detect(&mut self, event: &Event) {
        for detection in self.detectors.evaluate(event) {
            if let Some(finding) = self.findings.raise(event, detection) {
                self.publisher.finding(&finding);
            }
        }
    }

    /// Asks the sampling thread for the resident memory of every live process, when a
    /// loaded rule looks at samples.
    fn request_sample(&mut self) {
        if self.detectors.engine().rules_for(SubjectKind::Sample) > 0 && !self.sampler.request() {
            tracing::debug!("memory sample still running: interval tick skipped");
        }
    }

    /// Evaluates the rules on each sampled process the table knows alive. Samples are not
    /// published as events; a finding they raise carries one as its trigger.
    fn evaluate_samples(&mut self, samples: Vec<RssSample>) {
        let time = Timestamp::now();
        for sample in samples {
            let Some(exec_id) = self.table.get(sample.pid).map(|p| p.exec_id) else {
                continue;
            };
            let Some(process) = self.table.by_exec_id(&exec_id) else {
                continue;
            };
            // A pid reused between the sample and now is another process (start times in
            // whole seconds, from different clocks: allow a little slack).
            let started = process.start_time.unix_nanos() / 1_000_000_000;
            if sample.start_time_secs != 0 && (started - sample.start_time_secs as i64).abs() > 2 {
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

    /// The table's process for `pid`, enriched; an unknown pid (a race with the /proc scan)
    /// gets a minimal entry so its events are not lost.
    fn process_for(&mut self, pid: u32, time: Timestamp) -> Option<Process> {
        if self.table.get(pid).is_none() {
            let rec = crate::source::ExecRecord {
                time,
                process: crate::source::ProcessKey {
                    pid,
                    start_ticks: 0,
                },
                comm: format!("pid {pid}"),
                ..Default::default()
            };
            self.table.exec(&rec, ArgvSource::Procfs);
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
        self.hashes.store(&result);
        if let Some(p) = self.table.get_mut(result.exec_id.pid) {
            if p.exec_id == result.exec_id {
                p.sha256 = Some(result.sha256);
            }
        }
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
        let publisher = self.publisher.stats();
        let table = self.table.stats();
        let total: u64 = self.events_by_kind.values().sum();
        let elapsed = self.last_heartbeat.elapsed().as_secs_f64().max(0.001);
        let heartbeat = Heartbeat {
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
            spool_depth: publisher.spool_depth,
            spool_evicted: publisher.spool_evicted,
            process_table_size: table.size,
            process_table_evicted: table.evicted,
            active_blocks: self
                .options
                .active_blocks
                .load(std::sync::atomic::Ordering::Relaxed),
            // The publisher writes its own counters in when it queues the heartbeat.
            ..Default::default()
        };
        self.events_at_last_heartbeat = total;
        self.last_heartbeat = Instant::now();
        self.publisher.heartbeat(&heartbeat);
    }
}
