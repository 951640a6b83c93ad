//! Detectors: each looks at an enriched event and says what it concludes.

pub mod heuristics;

use protocol::{ActionKind, Detector, Severity};

/// One detector's conclusion about one event, before it becomes a [`protocol::Finding`].
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub detector: Detector,
    pub rule_id: String,
    pub title: String,
    pub description: Option<String>,
    pub author: Option<String>,
    pub severity: Severity,
    pub tags: Vec<String>,
    pub actions: Vec<ActionKind>,
}

/// Every detector the collector runs, in order.
pub struct Detectors {
    pub heuristics: heuristics::Heuristics,
}

impl Detectors {
    pub fn evaluate(&self, event: &protocol::Event) -> Vec<Detection> {
        let mut out = Vec::new();
        self.heuristics.evaluate(event, &mut out);
        out
    }
}
