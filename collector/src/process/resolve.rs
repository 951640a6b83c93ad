//! Pids that events name but the table does not know (a process that predates the sensor
//! and slipped past the start-up scan, or whose fork record was dropped) are read from the
//! platform on a worker thread: the event loop never does that I/O. Events that depend on
//! such a pid wait, in arrival order, until it is read, so they get the process's real
//! identity (its start time, hence its `ExecId`) and keep their order.

use std::{
    collections::HashMap,
    sync::mpsc::{self as std_mpsc, TrySendError},
};

use tokio::sync::mpsc;

use crate::source::{ExecRecord, ProcessReader, SensorEvent};

/// Events held back at most (all pids together); beyond it events are handled at once with
/// what the table knows, and counted.
const MAX_PARKED: usize = 4096;
/// Reads queued at most.
const QUEUE: usize = 1024;

/// A pid read from the platform: `None` when the process was already gone.
pub struct Resolved {
    pub pid: u32,
    pub record: Option<ExecRecord>,
}

pub struct Resolver {
    requests: std_mpsc::SyncSender<u32>,
    parked: HashMap<u32, Vec<SensorEvent>>,
    parked_events: usize,
    /// Events that could not wait (parking or queue full).
    overflow: u64,
}

impl Resolver {
    /// Starts the reading thread; results arrive on the returned receiver.
    pub fn start<R: ProcessReader>(
        reader: R,
    ) -> std::io::Result<(Resolver, mpsc::UnboundedReceiver<Resolved>)> {
        let (req_tx, req_rx) = std_mpsc::sync_channel::<u32>(QUEUE);
        let (res_tx, res_rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("osprey-resolve".into())
            .spawn(move || {
                while let Ok(pid) = req_rx.recv() {
                    let record = reader.read(pid);
                    if res_tx.send(Resolved { pid, record }).is_err() {
                        return;
                    }
                }
            })?;
        Ok((
            Resolver {
                requests: req_tx,
                parked: HashMap::new(),
                parked_events: 0,
                overflow: 0,
            },
            res_rx,
        ))
    }

    /// Whether events about `pid` are waiting for it to be read.
    pub fn is_waiting(&self, pid: u32) -> bool {
        self.parked.contains_key(&pid)
    }

    /// Holds `event` until `pid` is read (asking for the read if it is the first event about
    /// it). Gives the event back when it cannot wait: the caller handles it now.
    // The event goes back as it came: boxing it would cost an allocation per parked event.
    #[allow(clippy::result_large_err)]
    pub fn park(&mut self, pid: u32, event: SensorEvent) -> Result<(), SensorEvent> {
        if self.parked_events >= MAX_PARKED {
            self.overflow += 1;
            return Err(event);
        }
        if !self.parked.contains_key(&pid) {
            match self.requests.try_send(pid) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.overflow += 1;
                    return Err(event);
                }
            }
        }
        self.parked.entry(pid).or_default().push(event);
        self.parked_events += 1;
        Ok(())
    }

    /// Asks for `pid` to be read without holding anything back (e.g. the parent of a fork,
    /// so later ancestry resolves); false when the queue is full.
    pub fn request(&mut self, pid: u32) -> bool {
        self.parked.contains_key(&pid) || self.requests.try_send(pid).is_ok()
    }

    /// The events that waited for `pid`, in arrival order.
    pub fn release(&mut self, pid: u32) -> Vec<SensorEvent> {
        let events = self.parked.remove(&pid).unwrap_or_default();
        self.parked_events -= events.len();
        events
    }

    /// Events waiting now.
    pub fn parked(&self) -> usize {
        self.parked_events
    }

    /// Events handled without waiting because parking was full.
    pub fn overflow(&self) -> u64 {
        self.overflow
    }
}
