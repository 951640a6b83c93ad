//! The collector's periodic health report.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::Timestamp;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub host: String,
    pub time: Timestamp,
    /// Collector version.
    pub version: String,
    pub protocol_version: u32,
    pub uptime_secs: u64,
    /// Events seen since start, per kind (`exec`, `fork`, `exit`, `connect`).
    pub events: BTreeMap<String, u64>,
    /// Events per second over the last heartbeat interval.
    pub events_per_sec: f64,
    pub findings: u64,
    /// Records the kernel could not deliver, per type, since start.
    pub drops: BTreeMap<String, u64>,
    /// The same per cgroup v2 id of the tasks that lost them (the cgroups with most drops),
    /// so a workload's losses can be told from the rest of the host's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drops_by_cgroup: BTreeMap<u64, BTreeMap<String, u64>>,
    /// Work in flight, by what it is (`connects` awaiting an outcome, `parked_events`
    /// waiting for a process to be read from /proc): it drains when the host is quiet.
    #[serde(default)]
    pub pending: BTreeMap<String, u64>,
    /// Entries bounded structures pushed out (or found stale) since start, by structure.
    #[serde(default)]
    pub evicted: BTreeMap<String, u64>,
    /// Findings waiting in the on-disk spool for NATS.
    pub spool_depth: u64,
    /// Findings evicted from a full spool since start (lowest severity first, oldest first
    /// within a severity).
    pub spool_evicted: u64,
    /// The same, per severity (`info` ... `critical`); severities with none are absent.
    #[serde(default)]
    pub spool_evicted_by_severity: BTreeMap<String, u64>,
    /// Findings the disk refused to spool (held in memory instead) since start.
    #[serde(default)]
    pub spool_write_errors: u64,
    /// Findings that can never be published (unencodable, unreadable, over max_payload).
    #[serde(default)]
    pub findings_failed: u64,
    /// Events not published (queue full, NATS away) since start.
    #[serde(default)]
    pub events_dropped: u64,
    /// Heartbeats not published (NATS away) since start.
    #[serde(default)]
    pub heartbeats_dropped: u64,
    pub process_table_size: u64,
    /// Process entries evicted from a full table since start.
    pub process_table_evicted: u64,
    /// Active kernel blocks (destinations and kill-on-exec entries).
    #[serde(default)]
    pub active_blocks: u64,
    /// How much of the kernel ring buffer the records take.
    #[serde(default)]
    pub ring: RingUse,
    /// The collector's time per stage of the event path since start, in ns (`read`, `table`,
    /// `ancestry`, `publish`, `detect`, `history`), timed on its pipeline thread.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stage_ns: BTreeMap<String, u64>,
    /// CPU time (user and system) of each of the collector's threads since start, in ns, by
    /// thread name: the pipeline's, the history writer's, the hasher's and the rest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub thread_cpu_ns: BTreeMap<String, u64>,
}

/// The kernel ring buffer's use (zero where the source has none, e.g. ETW).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingUse {
    pub size_bytes: u64,
    /// Bytes of records read since start.
    pub read_bytes: u64,
    /// The most bytes read in one wake-up since the previous heartbeat: how full the ring
    /// got (a wake-up reads all there is). Near `size_bytes`, records are about to drop.
    pub largest_read_bytes: u64,
}
