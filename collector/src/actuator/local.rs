//! Local response: with `response.mode: local`, the actions a finding recommends (its policy
//! rule's `actions`) are run by this host's actuator, with the same checks, rate limits,
//! dry-run and audit as a command from the responder — no NATS, responder or keys needed.
//!
//! Several actions on one finding run in the order in which they all work
//! ([`protocol::Action::execution_rank`]): suspend, dump, quarantine, then kill. A step that
//! runs off the command loop (a quarantine, a dump) hands the rest of the plan back, to go on
//! once it is done.

use std::collections::VecDeque;

use protocol::{Action, ActionKind, AuditRecord, Command, Decision, Finding};

use super::{Actuator, Handled, LongAction};

/// Who local response actions are audited as.
const ACTOR: &str = "local response";

/// How local response acts.
#[derive(Clone, Debug, Default)]
pub struct LocalResponse {
    /// Decide and audit, but do nothing.
    pub dry_run: bool,
    /// How long blocks, suspensions and kill-on-exec entries last.
    pub ttl_secs: Option<u64>,
}

/// What is left to do for one finding.
pub struct Plan {
    finding: Finding,
    steps: VecDeque<ActionKind>,
}

impl Plan {
    pub fn new(finding: Finding) -> Plan {
        let mut kinds = finding.recommended_actions.clone();
        kinds.sort_by_key(|k| Action::execution_rank(*k));
        kinds.dedup();
        Plan {
            finding,
            steps: kinds.into(),
        }
    }
}

impl Actuator {
    /// Runs the plan's steps in order until one must run off the command loop: that one is
    /// returned with the rest of the plan, to [`Actuator::advance`] once it is done.
    pub(super) fn advance(
        &mut self,
        mut plan: Plan,
        settings: &LocalResponse,
    ) -> Option<(Box<LongAction>, Plan)> {
        while let Some(kind) = plan.steps.pop_front() {
            let f = &plan.finding;
            let why = format!("policy rule {} ({})", f.rule_id, f.title);
            let Some(action) = Action::for_finding(kind, f, settings.ttl_secs, false) else {
                let (decision, reason) = match kind {
                    ActionKind::Log | ActionKind::Notify => {
                        (Decision::Executed, format!("{why}: logged"))
                    }
                    _ => (
                        Decision::Refused,
                        format!("{why}: the finding carries nothing to act on"),
                    ),
                };
                self.audit_local(f, kind.as_str(), decision, reason);
                continue;
            };
            if settings.dry_run {
                let reason = format!("{why}: dry run, nothing done");
                self.audit_local(f, action.name(), Decision::DryRun, reason);
                continue;
            }
            let command = Command::new(self.host.clone(), action, Some(f.id.clone()));
            let step = self.perform(&command);
            if let Handled::Later(long) = self.conclude(command, step, Some(ACTOR)) {
                return Some((long, plan));
            }
        }
        None
    }

    fn audit_local(&self, f: &Finding, action: &str, decision: Decision, reason: String) {
        let result = match decision {
            Decision::Executed => "ok",
            Decision::DryRun => "not done",
            _ => "refused",
        };
        let mut record = AuditRecord::new(
            "actuator",
            self.host.clone(),
            action,
            decision,
            reason,
            result,
        );
        record.finding_id = Some(f.id.clone());
        record.target = Some(f.process.exec_id.to_string());
        record.pid = Some(f.process.pid);
        record.exe = Some(f.process.exe.clone());
        record.actor.name = Some(ACTOR.into());
        self.audit.record(&record);
    }
}
