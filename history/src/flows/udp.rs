//! UDP flows: the sensor reports datagram destinations (once per socket and destination),
//! and this aggregates them per process, destination and port into flows with first/last
//! seen and a datagram count. A flow idle for `udp.idle_secs` is finished (written and
//! scored); at `udp.max_flows` the least recently active are finished early and counted.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use protocol::ExecId;

use crate::score::ConnectFeatures;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub exec_id: ExecId,
    pub destination: IpAddr,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Flow {
    pub exe: Arc<str>,
    pub first: i64,
    pub last: i64,
    pub datagrams: u64,
    /// Computed at the flow's first datagram.
    pub features: ConnectFeatures,
}

pub struct UdpFlows {
    flows: HashMap<FlowKey, Flow>,
    max: usize,
    idle_ns: i64,
    /// Flows finished early because the map was full.
    pub evicted: u64,
}

impl UdpFlows {
    pub fn new(max: usize, idle_secs: u64) -> Self {
        UdpFlows {
            flows: HashMap::new(),
            max,
            idle_ns: (idle_secs as i64).saturating_mul(1_000_000_000),
            evicted: 0,
        }
    }

    /// Counts a datagram; `start` gives the exe and features of a new flow. Returns flows
    /// finished to make room (to be written).
    pub fn datagram(
        &mut self,
        key: FlowKey,
        now: i64,
        start: impl FnOnce() -> (Arc<str>, ConnectFeatures),
    ) -> Vec<(FlowKey, Flow)> {
        if let Some(flow) = self.flows.get_mut(&key) {
            flow.datagrams += 1;
            flow.last = flow.last.max(now);
            return Vec::new();
        }
        let mut finished = Vec::new();
        if self.flows.len() >= self.max {
            finished = self.idle(now);
            if self.flows.len() >= self.max {
                let keys = super::oldest(self.flows.iter().map(|(k, f)| (*k, f.last)), 8);
                self.evicted += keys.len() as u64;
                finished.extend(
                    keys.into_iter()
                        .filter_map(|k| self.flows.remove(&k).map(|f| (k, f))),
                );
            }
        }
        let (exe, features) = start();
        self.flows.insert(
            key,
            Flow {
                exe,
                first: now,
                last: now,
                datagrams: 1,
                features,
            },
        );
        finished
    }

    /// Finishes the flows idle for `idle_secs`.
    pub fn idle(&mut self, now: i64) -> Vec<(FlowKey, Flow)> {
        let cutoff = now.saturating_sub(self.idle_ns);
        let keys: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, f)| f.last <= cutoff)
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter()
            .filter_map(|k| self.flows.remove(&k).map(|f| (k, f)))
            .collect()
    }

    /// Finishes every flow (shutdown).
    pub fn drain(&mut self) -> Vec<(FlowKey, Flow)> {
        self.flows.drain().collect()
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features() -> ConnectFeatures {
        ConnectFeatures {
            hour: 0.0,
            port_rarity: 1.0,
            destination_novelty: 1.0,
            process_age: 0.0,
            script_engine: 0.0,
            parent_rarity: 1.0,
            udp: 1.0,
            failed: 0.0,
        }
    }

    fn key(port: u16) -> FlowKey {
        FlowKey {
            exec_id: "00000001-2-3-0".parse().unwrap(),
            destination: "10.0.0.1".parse().unwrap(),
            port,
        }
    }

    #[test]
    fn datagrams_aggregate_and_idle_flows_finish() {
        let mut flows = UdpFlows::new(10, 60);
        let start = || (Arc::from("/usr/bin/dig"), features());
        let s = 1_000_000_000;
        assert!(flows.datagram(key(53), 0, start).is_empty());
        assert!(flows.datagram(key(53), 5 * s, start).is_empty());
        assert!(flows.datagram(key(123), 30 * s, start).is_empty());
        let done = flows.idle(65 * s);
        assert_eq!(done.len(), 1);
        let (k, f) = &done[0];
        assert_eq!((k.port, f.first, f.last, f.datagrams), (53, 0, 5 * s, 2));
        assert_eq!(flows.len(), 1);
    }

    #[test]
    fn a_full_map_finishes_its_oldest_flows_and_counts_them() {
        let mut flows = UdpFlows::new(16, 3600);
        let start = || (Arc::from("/usr/bin/dig"), features());
        for port in 0..16 {
            assert!(flows.datagram(key(port), i64::from(port), start).is_empty());
        }
        let finished = flows.datagram(key(100), 100, start);
        assert_eq!(finished.len(), 2, "an eighth of 16");
        let mut ports: Vec<u16> = finished.iter().map(|(k, _)| k.port).collect();
        ports.sort();
        assert_eq!(ports, [0, 1]);
        assert_eq!(flows.evicted, 2);
        assert_eq!(flows.len(), 15);
    }
}
