//! TCP connections between their connect and their close record: the features known at the
//! connect wait here until duration and bytes complete them. At `max_open_connections` the
//! oldest eighth is forgotten (counted): their close is then scored from what is known then.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::Arc,
};

use protocol::ExecId;

use crate::score::ConnectFeatures;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub exec_id: ExecId,
    pub destination: IpAddr,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub source_port: Option<u16>,
    pub start: i64,
    pub exe: Arc<str>,
    pub features: ConnectFeatures,
}

pub struct OpenConnections {
    open: HashMap<ConnKey, VecDeque<Pending>>,
    len: usize,
    max: usize,
    /// Connections forgotten before their close because the map was full.
    pub evicted: u64,
}

impl OpenConnections {
    pub fn new(max: usize) -> Self {
        OpenConnections {
            open: HashMap::new(),
            len: 0,
            max,
            evicted: 0,
        }
    }

    pub fn open(&mut self, key: ConnKey, pending: Pending) {
        if self.len >= self.max {
            let oldest = super::oldest(
                self.open
                    .iter()
                    .filter_map(|(k, q)| q.front().map(|p| (*k, p.start))),
                8,
            );
            for k in oldest {
                if let Some(q) = self.open.get_mut(&k) {
                    q.pop_front();
                    self.len -= 1;
                    self.evicted += 1;
                    if q.is_empty() {
                        self.open.remove(&k);
                    }
                }
            }
        }
        self.open.entry(key).or_default().push_back(pending);
        self.len += 1;
    }

    /// The connection this close (or late outcome) belongs to: same source port when both
    /// know it, else the oldest of the same process, destination and port.
    pub fn close(&mut self, key: &ConnKey, source_port: Option<u16>) -> Option<Pending> {
        let queue = self.open.get_mut(key)?;
        let index = source_port
            .and_then(|sp| queue.iter().position(|p| p.source_port == Some(sp)))
            .or_else(|| queue.iter().position(|p| p.source_port.is_none()))
            .unwrap_or(0);
        let pending = queue.remove(index)?;
        if queue.is_empty() {
            self.open.remove(key);
        }
        self.len -= 1;
        Some(pending)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
