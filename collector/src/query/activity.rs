//! Per-process activity that host state queries show beyond the process table: recent
//! connections, findings raised, the last CPU/RSS sample. Bounded everywhere, with every
//! eviction counted (heartbeat `evicted`): at most [`MAX_CONNECTIONS`] connections and
//! [`MAX_FINDINGS`] findings per process, at most `capacity` processes (the least recently
//! active goes first). The processes it holds are the ones the resource sampler watches.

use std::{collections::VecDeque, net::IpAddr, time::Instant};

use hashlink::LinkedHashMap;
use protocol::{
    CloseEvent, ClosedConnection, Event, EventDetail, ExecId, Finding, FindingSummary, Outcome,
    Process, Severity, Timestamp, TransportProtocol,
};

use crate::{process::ProcessTable, resources::ResourceSample};

/// Connections kept per process, newest first.
pub const MAX_CONNECTIONS: usize = 16;
/// Findings kept per process, newest first (the highest severity is kept apart, so it
/// outlives the list).
pub const MAX_FINDINGS: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub ip: IpAddr,
    pub port: u16,
    pub protocol: TransportProtocol,
    pub outcome: Outcome,
    /// The local port, when the outcome told it (TCP).
    pub source_port: Option<u16>,
    pub at: Instant,
    /// Set when the connection closed (TCP).
    pub closed: Option<ClosedConnection>,
}

impl Connection {
    /// An established TCP connection not seen closing.
    pub fn is_open(&self) -> bool {
        self.protocol == TransportProtocol::Tcp
            && self.outcome == Outcome::Ok
            && self.closed.is_none()
    }
}

#[derive(Clone, Debug, Default)]
pub struct ProcessActivity {
    /// Oldest first.
    pub connections: VecDeque<Connection>,
    /// Oldest first.
    pub findings: VecDeque<FindingSummary>,
    /// Findings raised on the process since it was first tracked.
    pub findings_total: u64,
    /// The highest severity and title among them.
    pub highest: Option<(Severity, String)>,
    pub sample: Option<ResourceSample>,
    /// The latest threat-intelligence verdict on its executable.
    pub intel: Option<protocol::IntelVerdictEvent>,
}

/// Evictions since start, by what was pushed out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActivityEvictions {
    pub processes: u64,
    pub connections: u64,
    pub findings: u64,
}

pub struct Activity {
    /// Least recently active first.
    by_exec: LinkedHashMap<ExecId, ProcessActivity>,
    capacity: usize,
    evicted: ActivityEvictions,
}

impl Activity {
    pub fn new(capacity: usize) -> Self {
        Activity {
            by_exec: LinkedHashMap::new(),
            capacity: capacity.max(1),
            evicted: ActivityEvictions::default(),
        }
    }

    pub fn get(&self, exec_id: &ExecId) -> Option<&ProcessActivity> {
        self.by_exec.get(exec_id)
    }

    pub fn len(&self) -> usize {
        self.by_exec.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_exec.is_empty()
    }

    pub fn evictions(&self) -> ActivityEvictions {
        self.evicted
    }

    /// The entry of `exec_id`, made the most recently active (created, making room, if new).
    fn entry(&mut self, exec_id: ExecId) -> &mut ProcessActivity {
        if self.by_exec.contains_key(&exec_id) {
            self.by_exec.to_back(&exec_id);
        } else {
            if self.by_exec.len() >= self.capacity && self.by_exec.pop_front().is_some() {
                self.evicted.processes += 1;
            }
            self.by_exec.insert(exec_id, ProcessActivity::default());
        }
        self.by_exec
            .get_mut(&exec_id)
            .expect("the entry was just made")
    }

    /// Takes in a connect event (an outcome that arrives late updates the attempt it ends)
    /// or a close (which ends the open connection it names).
    pub fn observe(&mut self, event: &Event) {
        let process = &event.process;
        let c = match &event.detail {
            EventDetail::Connect(c) => c,
            EventDetail::Close(close) => return self.closed(process, close, event.time),
            _ => return,
        };
        let connection = Connection {
            ip: c.destination_ip,
            port: c.destination_port,
            protocol: c.protocol,
            outcome: c.outcome,
            source_port: c.source_port,
            at: Instant::now(),
            closed: None,
        };
        let entry = self.entry(process.exec_id);
        if c.late_outcome {
            if let Some(pending) = entry.connections.iter_mut().rev().find(|k| {
                k.outcome == Outcome::Pending
                    && (k.ip, k.port, k.protocol)
                        == (c.destination_ip, c.destination_port, c.protocol)
            }) {
                pending.outcome = c.outcome;
                pending.source_port = c.source_port;
                return;
            }
        }
        let full = entry.connections.len() >= MAX_CONNECTIONS;
        if full {
            entry.connections.pop_front();
        }
        entry.connections.push_back(connection);
        self.evicted.connections += u64::from(full);
    }

    fn closed(&mut self, process: &Process, close: &CloseEvent, at: Timestamp) {
        let Some(entry) = self.by_exec.get_mut(&process.exec_id) else {
            return;
        };
        let Some(connection) = entry.connections.iter_mut().rev().find(|k| {
            k.is_open()
                && (k.ip, k.port) == (close.destination_ip, close.destination_port)
                && k.source_port.is_none_or(|p| p == close.source_port)
        }) else {
            return;
        };
        connection.closed = Some(ClosedConnection {
            duration_ms: close.duration_until(at).as_millis() as u64,
            bytes_sent: close.bytes_sent,
            bytes_received: close.bytes_received,
        });
    }

    /// Takes in a finding raised on a process.
    /// Keeps activity (samples, verdicts) for this process from now on, as for one with
    /// connections or findings (`osprey scan` tracks every process).
    pub fn track(&mut self, exec_id: ExecId) {
        self.entry(exec_id);
    }

    pub fn verdict(&mut self, exec_id: ExecId, verdict: &protocol::IntelVerdictEvent) {
        self.entry(exec_id).intel = Some(verdict.clone());
    }

    pub fn finding(&mut self, finding: &Finding) {
        let entry = self.entry(finding.process.exec_id);
        let full = entry.findings.len() >= MAX_FINDINGS;
        if full {
            entry.findings.pop_front();
        }
        entry.findings_total += 1;
        if entry
            .highest
            .as_ref()
            .is_none_or(|(s, _)| finding.severity > *s)
        {
            entry.highest = Some((finding.severity, finding.title.clone()));
        }
        entry.findings.push_back(FindingSummary {
            id: finding.id.clone(),
            rule_id: finding.rule_id.clone(),
            title: finding.title.clone(),
            severity: finding.severity,
            time: finding.time,
        });
        self.evicted.findings += u64::from(full);
    }

    /// The pids whose CPU and memory are sampled: every process with activity.
    pub fn watched_pids(&self) -> Vec<u32> {
        self.by_exec.keys().map(|id| id.pid).collect()
    }

    /// Keeps the samples of the processes it tracks (a sample of a reused pid is not theirs).
    pub fn store_samples(&mut self, samples: &[ResourceSample], table: &ProcessTable) {
        for sample in samples {
            let Some(process) = table.get(sample.pid) else {
                continue;
            };
            if !crate::resources::same_process(sample, process) {
                continue;
            }
            if let Some(entry) = self.by_exec.get_mut(&process.exec_id) {
                entry.sample = Some(*sample);
            }
        }
    }

    /// Forgets the processes the table no longer remembers (exited past its grace period).
    pub fn prune(&mut self, table: &ProcessTable) {
        self.by_exec.retain(|id, _| table.remembered(id).is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::*;

    fn process(pid: u32) -> Process {
        Process::new(
            format!("00000001-{pid}-1-0").parse().unwrap(),
            "/usr/bin/python3",
            vec!["python3".into()],
        )
    }

    fn event(process: &Process, detail: EventDetail) -> Event {
        Event {
            time: Timestamp::from_unix_nanos(5_000_000_000),
            host: "h".into(),
            process: process.clone(),
            ancestry: vec![],
            detail,
        }
    }

    fn connect(port: u16, outcome: Outcome, late: bool) -> EventDetail {
        EventDetail::Connect(ConnectEvent {
            family: SocketFamily::Ipv4,
            protocol: TransportProtocol::Tcp,
            destination_ip: "203.0.113.7".parse().unwrap(),
            destination_port: port,
            source_ip: None,
            source_port: None,
            outcome,
            errno: None,
            hook: ConnectHook::Connect,
            late_outcome: late,
        })
    }

    #[test]
    fn connections_are_bounded_per_process_and_late_outcomes_update_the_attempt() {
        let mut a = Activity::new(8);
        let p = process(10);
        a.observe(&event(&p, connect(1, Outcome::Pending, false)));
        a.observe(&event(&p, connect(1, Outcome::Refused, true)));
        let kept = &a.get(&p.exec_id).unwrap().connections;
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].outcome, Outcome::Refused);
        for port in 2..40 {
            a.observe(&event(&p, connect(port, Outcome::Ok, false)));
        }
        let kept = &a.get(&p.exec_id).unwrap().connections;
        assert_eq!(kept.len(), MAX_CONNECTIONS);
        assert_eq!(kept.back().unwrap().port, 39, "the newest is kept");
        assert_eq!(a.evictions().connections, 39 - MAX_CONNECTIONS as u64);
        a.observe(&event(&p, EventDetail::Fork(ForkEvent {})));
        assert_eq!(
            a.get(&p.exec_id).unwrap().connections.len(),
            MAX_CONNECTIONS
        );
    }

    #[test]
    fn processes_are_bounded_least_recently_active_first() {
        let mut a = Activity::new(2);
        let (p1, p2, p3) = (process(1), process(2), process(3));
        a.observe(&event(&p1, connect(1, Outcome::Ok, false)));
        a.observe(&event(&p2, connect(1, Outcome::Ok, false)));
        a.observe(&event(&p1, connect(2, Outcome::Ok, false)));
        a.observe(&event(&p3, connect(1, Outcome::Ok, false)));
        assert!(a.get(&p2.exec_id).is_none(), "least recently active");
        assert!(a.get(&p1.exec_id).is_some() && a.get(&p3.exec_id).is_some());
        assert_eq!(a.evictions().processes, 1);
        let mut pids = a.watched_pids();
        pids.sort();
        assert_eq!(pids, [1, 3]);
    }

    #[test]
    fn a_close_ends_the_open_connection_it_names() {
        let mut a = Activity::new(8);
        let p = process(10);
        a.observe(&event(&p, connect(443, Outcome::Ok, false)));
        a.observe(&event(&p, connect(443, Outcome::Ok, false)));
        let close = |source_port| {
            EventDetail::Close(CloseEvent {
                protocol: TransportProtocol::Tcp,
                destination_ip: "203.0.113.7".parse().unwrap(),
                destination_port: 443,
                source_port,
                established: Timestamp::from_unix_nanos(3_000_000_000),
                bytes_sent: 1234,
                bytes_received: 5678,
            })
        };
        a.observe(&event(&p, close(40000)));
        let kept = &a.get(&p.exec_id).unwrap().connections;
        assert!(kept[0].is_open(), "one close ends one connection");
        assert_eq!(
            kept[1].closed,
            Some(ClosedConnection {
                duration_ms: 2000,
                bytes_sent: 1234,
                bytes_received: 5678
            }),
            "the newest open one"
        );
        a.observe(&event(&p, close(40001)));
        a.observe(&event(&p, close(40002)));
        let kept = &a.get(&p.exec_id).unwrap().connections;
        assert!(kept.iter().all(|c| !c.is_open()));
        assert_eq!(kept.len(), 2, "a close adds no connection");
    }
}
