//! What the event loop tells the host's history (`history` crate, docs/history.md), and the
//! detections it answers with, as the collector's [`Detection`]s.
//!
//! Every published event goes in (exec, fork, exit, connect, close); the history writes it
//! off the event path and checks it against the learned baselines and the anomaly model.

use std::collections::BTreeMap;

use history::{ConnectionClose, History, HistoryDetection, HistoryError, HistoryStats, Tick};
use protocol::{Event, EventDetail, ExecId, Finding, Process, Timestamp};

use crate::detect::Detection;

pub struct HistoryFeed {
    history: History,
}

impl HistoryFeed {
    /// Opens the history file (creating or migrating it), loads the baselines and starts the
    /// writer and trainer threads.
    pub fn open(
        config: &history::HistoryConfig,
        host: &str,
        script_engines: &[String],
    ) -> Result<HistoryFeed, HistoryError> {
        Ok(HistoryFeed {
            history: History::open(config, host, script_engines)?,
        })
    }

    /// A process that predates the collector (its /proc scan): its row, and it learns.
    pub fn existing(&mut self, process: &Process) {
        self.history.process_seen(process, Timestamp::now());
    }

    /// Takes in one published event; returns what the baselines and the model conclude.
    pub fn event(&mut self, event: &Event) -> Vec<HistoryDetection> {
        let (process, time) = (&event.process, event.time);
        match &event.detail {
            EventDetail::Exec(_) => {
                self.history
                    .process_exec(process, event.ancestry.first(), time)
            }
            EventDetail::Fork(_) => {
                self.history.process_seen(process, time);
                Vec::new()
            }
            EventDetail::Exit(exit) => {
                self.history.process_exited(&process.exec_id, time, exit);
                Vec::new()
            }
            EventDetail::Connect(connect) => self.history.connection(process, time, connect),
            EventDetail::Close(close) => self.history.connection_closed(&ConnectionClose {
                exec_id: process.exec_id,
                protocol: close.protocol,
                destination_ip: close.destination_ip,
                destination_port: close.destination_port,
                source_port: Some(close.source_port),
                start: close.established,
                end: time,
                bytes_sent: close.bytes_sent,
                bytes_received: close.bytes_received,
            }),
            EventDetail::MemorySample(_) | EventDetail::IntelVerdict(_) => Vec::new(),
        }
    }

    /// The executable's hash of a live process became known.
    pub fn hashed(&mut self, process: &Process) -> Vec<HistoryDetection> {
        self.history.process_hashed(process, Timestamp::now())
    }

    pub fn sample(&mut self, exec_id: &ExecId, cpu_percent: Option<f32>, rss_bytes: u64) {
        self.history.sample(
            exec_id,
            Timestamp::now(),
            cpu_percent.unwrap_or(0.0),
            rss_bytes,
        );
    }

    pub fn finding(&mut self, finding: &Finding) {
        self.history.finding(finding);
    }

    /// The periodic work: retrained models, operator overrides, idle UDP flows.
    pub fn tick(&mut self) -> Tick {
        self.history.tick(Timestamp::now())
    }

    pub fn stats(&self) -> HistoryStats {
        self.history.stats()
    }

    /// Writes what is still in memory (UDP flows, baseline changes, the queue).
    pub fn close(self) {
        if let Err(e) = self.history.close() {
            tracing::error!("history: cannot write what was left at shutdown: {e}");
        }
    }
}

/// A history detection as a finding's detection. The description carries the evidence: what
/// was new and what had been learned (or the score).
pub fn detection(d: HistoryDetection) -> Detection {
    Detection {
        detector: d.detector,
        rule_id: d.rule_id.to_string(),
        title: d.title,
        description: Some(d.description),
        author: None,
        severity: d.severity,
        tags: d.tags.iter().map(|t| t.to_string()).collect(),
        actions: Vec::new(),
    }
}

/// The history's counters for heartbeats: records waiting for the writer, and what it had
/// to drop or forget.
pub fn heartbeat_counters(
    stats: &HistoryStats,
    pending: &mut BTreeMap<String, u64>,
    evicted: &mut BTreeMap<String, u64>,
) {
    pending.insert("history_queue".into(), stats.store.queue_depth);
    pending.insert(
        "history_open_connections".into(),
        stats.open_connections as u64,
    );
    evicted.insert("history_dropped".into(), stats.store.dropped);
    evicted.insert("history_failed".into(), stats.store.failed);
    evicted.insert(
        "history_open_connections".into(),
        stats.open_connections_evicted,
    );
    evicted.insert("history_udp_flows".into(), stats.udp_flows_evicted);
    evicted.insert("baseline_untracked".into(), stats.baseline.untracked);
    for (table, rows) in &stats.store.deleted {
        evicted.insert(format!("history_deleted_{table}"), *rows);
    }
}
