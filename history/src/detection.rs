//! What the history's detectors conclude: the collector turns each [`HistoryDetection`] into
//! a finding (detector `baseline` or `anomaly`) for the process with `exec_id`.

use protocol::{Detector, ExecId, FindingId, Severity};

/// A known program connected to a destination it never used while learning.
pub const NEW_DESTINATION: &str = "baseline.new-destination";
/// A known parent started a program it never started while learning.
pub const NEW_CHILD: &str = "baseline.new-child";
/// A known executable path has a hash it never had while learning.
pub const CHANGED_HASH: &str = "baseline.changed-hash";
/// A connection scored above the anomaly threshold.
pub const UNUSUAL_CONNECTION: &str = "anomaly.unusual-connection";

/// At most this many learned items are listed as evidence (the count says how many more).
pub const EVIDENCE_MAX: usize = 32;

#[derive(Clone, Debug, PartialEq)]
pub struct HistoryDetection {
    /// [`Detector::Baseline`] or [`Detector::Anomaly`].
    pub detector: Detector,
    /// One of [`NEW_DESTINATION`], [`NEW_CHILD`], [`CHANGED_HASH`], [`UNUSUAL_CONNECTION`].
    pub rule_id: &'static str,
    pub title: String,
    /// The novel item, what was learned instead, and (anomalies) the features.
    pub description: String,
    pub severity: Severity,
    /// MITRE ATT&CK tags.
    pub tags: &'static [&'static str],
    pub exec_id: ExecId,
    /// The finding's id for baseline detections (`FindingId::new(host, exec_id,
    /// Detector::Baseline, rule_id)`): `osprey baseline accept` takes it.
    pub finding_id: Option<FindingId>,
    /// The program (identity, parent or path) the baseline belongs to.
    pub subject: String,
    /// What was new: a destination, a child program, a hash, or the connection scored.
    pub novel: String,
    /// What the baseline had learned (at most [`EVIDENCE_MAX`]).
    pub learned: Vec<String>,
    /// How many learned items there are in all.
    pub learned_total: usize,
    /// The anomaly score (anomaly detections).
    pub score: Option<f32>,
}

impl HistoryDetection {
    pub(crate) fn evidence(mut learned: Vec<String>) -> (Vec<String>, usize) {
        let total = learned.len();
        learned.truncate(EVIDENCE_MAX);
        (learned, total)
    }

    pub(crate) fn learned_text(learned: &[String], total: usize) -> String {
        let mut text = if learned.is_empty() {
            "nothing".to_string()
        } else {
            learned.join(", ")
        };
        if total > learned.len() {
            text.push_str(&format!(" and {} more", total - learned.len()));
        }
        text
    }
}

pub(crate) fn tags(rule_id: &str) -> &'static [&'static str] {
    match rule_id {
        NEW_DESTINATION => &["attack.command_and_control"],
        NEW_CHILD => &["attack.execution"],
        CHANGED_HASH => &["attack.persistence", "attack.t1554"],
        _ => &[],
    }
}
