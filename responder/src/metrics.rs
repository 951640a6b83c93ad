//! The responder's Prometheus metrics, served on `metrics_address` when configured
//! (docs/responder.md lists them). One set per process: the audit trail and the main loop
//! count into it wherever they are.

use std::sync::{Arc, OnceLock};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use protocol::{AuditRecord, Decision, Severity};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    action: String,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

pub struct Metrics {
    registry: Arc<Registry>,
    findings: metrics::BySeverity,
    decisions: Family<DecisionLabels, Counter>,
    pending: Gauge,
    dry_run: Gauge,
    control: Family<ResultLabel, Counter>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("osprey_responder");
        let findings = metrics::BySeverity::register(
            &mut registry,
            "findings",
            "Findings received from the OSPREY_FINDINGS stream, by severity",
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Audited decisions by action and outcome (executed, refused, dry_run, rate_limited, awaiting_approval, approved, denied, failed)",
            decisions.clone(),
        );
        let pending = Gauge::default();
        registry.register(
            "pending_approvals",
            "Actions waiting for an operator's approval",
            pending.clone(),
        );
        let dry_run = Gauge::default();
        registry.register(
            "dry_run",
            "1 while dry-run is on (nothing is sent to hosts)",
            dry_run.clone(),
        );
        let control = Family::<ResultLabel, Counter>::default();
        registry.register(
            "control_messages",
            "Responder control messages, accepted or refused",
            control.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            findings,
            decisions,
            pending,
            dry_run,
            control,
        }
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    pub fn finding(&self, severity: Severity) {
        self.findings.inc(severity);
    }

    /// Counts an audited decision; pending approvals rise with `awaiting_approval` and fall
    /// with the record that settles them (approved, denied or expired).
    pub fn audited(&self, record: &AuditRecord) {
        self.decisions
            .get_or_create(&DecisionLabels {
                action: record.action.clone(),
                decision: record.decision.as_str(),
            })
            .inc();
        if record.pending_id.is_some() {
            match record.decision {
                Decision::AwaitingApproval => {
                    self.pending.inc();
                }
                Decision::Approved | Decision::Denied => {
                    self.pending.dec();
                }
                _ => {}
            }
        }
    }

    pub fn dry_run(&self, on: bool) {
        self.dry_run.set(i64::from(on));
    }

    pub fn control(&self, accepted: bool) {
        self.control
            .get_or_create(&ResultLabel {
                result: if accepted { "accepted" } else { "refused" },
            })
            .inc();
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}
