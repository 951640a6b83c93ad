//! What the investigator keeps from what it consumed: each host's latest findings and audit
//! records, for the `related_findings` and `actions_taken` tools.

use std::collections::{HashMap, VecDeque};

use protocol::{AuditRecord, Finding};

pub struct Memory {
    per_host: usize,
    findings: HashMap<String, VecDeque<Finding>>,
    audit: HashMap<String, VecDeque<AuditRecord>>,
}

impl Memory {
    pub fn new(per_host: usize) -> Memory {
        Memory {
            per_host,
            findings: HashMap::new(),
            audit: HashMap::new(),
        }
    }

    fn push<T>(per_host: usize, list: &mut VecDeque<T>, item: T) {
        list.push_back(item);
        while list.len() > per_host {
            list.pop_front();
        }
    }

    /// A finding, already checked to have come on its own host's subject.
    pub fn finding(&mut self, finding: Finding) {
        let list = self.findings.entry(finding.host.clone()).or_default();
        if list.iter().any(|f| f.id == finding.id) {
            return;
        }
        Self::push(self.per_host, list, finding);
    }

    pub fn audit(&mut self, record: AuditRecord) {
        let list = self.audit.entry(record.host.clone()).or_default();
        Self::push(self.per_host, list, record);
    }

    /// The host's other findings, newest first.
    pub fn related(&self, host: &str, except: &protocol::FindingId) -> Vec<Finding> {
        self.findings
            .get(host)
            .map(|l| {
                l.iter()
                    .rev()
                    .filter(|f| &f.id != except)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The host's audit records, newest first.
    pub fn actions(&self, host: &str) -> Vec<AuditRecord> {
        self.audit
            .get(host)
            .map(|l| l.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}
