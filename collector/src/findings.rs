//! Turns detections into findings, aggregating repeats of the same rule on the same `ExecId`
//! (published once, counted afterwards).

use std::collections::{HashMap, VecDeque};

use protocol::{Ancestor, Event, Finding, FindingId, Process, Timestamp, Trigger};

use crate::detect::Detection;

pub struct Findings {
    host: String,
    /// Finding id → repeats since it was raised.
    seen: HashMap<FindingId, u64>,
    order: VecDeque<FindingId>,
    capacity: usize,
    raised: u64,
    repeats: u64,
}

impl Findings {
    pub fn new(host: String, capacity: usize) -> Self {
        Findings {
            host,
            seen: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            raised: 0,
            repeats: 0,
        }
    }

    /// A new finding, or `None` when this rule already fired for this `ExecId`.
    pub fn raise(&mut self, event: &Event, d: Detection) -> Option<Finding> {
        let trigger = Trigger {
            time: event.time,
            detail: event.detail.clone(),
        };
        self.raise_on(
            &event.process,
            &event.ancestry,
            event.time,
            vec![trigger],
            d,
        )
    }

    /// [`Findings::raise`] for a detection no single event triggered (a hash computed later,
    /// a UDP flow that went idle): `triggers` may be empty.
    pub fn raise_on(
        &mut self,
        process: &Process,
        ancestry: &[Ancestor],
        time: Timestamp,
        triggers: Vec<Trigger>,
        d: Detection,
    ) -> Option<Finding> {
        let id = FindingId::new(&self.host, &process.exec_id, d.detector, &d.rule_id);
        if let Some(count) = self.seen.get_mut(&id) {
            *count += 1;
            self.repeats += 1;
            return None;
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(id.clone(), 0);
        self.order.push_back(id.clone());
        self.raised += 1;
        Some(Finding {
            id,
            time,
            host: self.host.clone(),
            detector: d.detector,
            rule_id: d.rule_id,
            title: d.title,
            description: d.description,
            author: d.author,
            severity: d.severity,
            tags: d.tags,
            process: process.clone(),
            ancestry: ancestry.to_vec(),
            triggers,
            recommended_actions: d.actions,
        })
    }

    pub fn raised(&self) -> u64 {
        self.raised
    }

    /// Detections folded into an existing finding.
    pub fn repeats(&self) -> u64 {
        self.repeats
    }
}
