//! Turns detections into findings, aggregating repeats of the same rule on the same `ExecId`
//! (published once, counted afterwards).

use std::collections::{HashMap, VecDeque};

use protocol::{Event, Finding, FindingId, Trigger};

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
        let id = FindingId::new(&self.host, &event.process.exec_id, d.detector, &d.rule_id);
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
            time: event.time,
            host: self.host.clone(),
            detector: d.detector,
            rule_id: d.rule_id,
            title: d.title,
            description: d.description,
            author: d.author,
            severity: d.severity,
            tags: d.tags,
            process: event.process.clone(),
            ancestry: event.ancestry.clone(),
            triggers: vec![Trigger {
                time: event.time,
                detail: event.detail.clone(),
            }],
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
