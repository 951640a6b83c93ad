//! The console's Prometheus metrics, on its own listener at `/metrics` (docs/console.md).

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use protocol::{AuditRecord, Severity};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuditLabels {
    source: String,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetentionLabels {
    table: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

pub struct Metrics {
    registry: Arc<Registry>,
    findings: metrics::BySeverity,
    duplicates: Counter,
    rejected: Family<ReasonLabel, Counter>,
    audit: Family<AuditLabels, Counter>,
    heartbeats: Counter,
    actions: Family<ActionLabels, Counter>,
    logins: Family<OutcomeLabel, Counter>,
    retention: Family<RetentionLabels, Counter>,
    database_bytes: Gauge,
    live_clients: Gauge,
    live_lagged: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("osprey_console");
        let findings = metrics::BySeverity::register(
            &mut r,
            "findings",
            "Findings stored, by severity (each finding once)",
        );
        let duplicates = Counter::default();
        r.register(
            "findings_duplicate",
            "Findings delivered again (redelivery, replay) and not stored twice",
            duplicates.clone(),
        );
        let rejected = Family::<ReasonLabel, Counter>::default();
        r.register(
            "messages_rejected",
            "Messages not stored: malformed, or a host name that does not match the subject",
            rejected.clone(),
        );
        let audit = Family::<AuditLabels, Counter>::default();
        r.register(
            "audit_records",
            "Audit records stored, by source and decision",
            audit.clone(),
        );
        let heartbeats = Counter::default();
        r.register("heartbeats", "Heartbeats stored", heartbeats.clone());
        let actions = Family::<ActionLabels, Counter>::default();
        r.register(
            "actions",
            "Operator actions sent from the console, by action and result (ok, refused, failed, error)",
            actions.clone(),
        );
        let logins = Family::<OutcomeLabel, Counter>::default();
        r.register(
            "logins",
            "Login attempts by outcome (ok, wrong, throttled)",
            logins.clone(),
        );
        let retention = Family::<RetentionLabels, Counter>::default();
        r.register(
            "retention_deleted_rows",
            "Rows deleted by retention, by table and reason (age, size)",
            retention.clone(),
        );
        let database_bytes = Gauge::default();
        r.register(
            "database_bytes",
            "Bytes the database's live pages take",
            database_bytes.clone(),
        );
        let live_clients = Gauge::default();
        r.register(
            "live_clients",
            "Pages following live updates",
            live_clients.clone(),
        );
        let live_lagged = Counter::default();
        r.register(
            "live_lagged",
            "Live updates a slow page missed (it reloads its lists)",
            live_lagged.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            findings,
            duplicates,
            rejected,
            audit,
            heartbeats,
            actions,
            logins,
            retention,
            database_bytes,
            live_clients,
            live_lagged,
        }
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    pub fn finding(&self, severity: Severity, stored: bool) {
        if stored {
            self.findings.inc(severity);
        } else {
            self.duplicates.inc();
        }
    }

    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn audit(&self, r: &AuditRecord) {
        self.audit
            .get_or_create(&AuditLabels {
                source: r.source.clone(),
                decision: r.decision.as_str(),
            })
            .inc();
    }

    pub fn heartbeat(&self) {
        self.heartbeats.inc();
    }

    pub fn action(&self, action: &str, result: &'static str) {
        self.actions
            .get_or_create(&ActionLabels {
                action: action.to_string(),
                result,
            })
            .inc();
    }

    pub fn login(&self, outcome: &'static str) {
        self.logins.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn retention(&self, deleted: &crate::store::Deleted) {
        for (table, reason, n) in &deleted.0 {
            self.retention
                .get_or_create(&RetentionLabels { table, reason })
                .inc_by(*n);
        }
    }

    pub fn database_bytes(&self, bytes: u64) {
        self.database_bytes.set(bytes as i64);
    }

    pub fn live_clients(&self) -> &Gauge {
        &self.live_clients
    }

    pub fn live_lagged(&self, n: u64) {
        self.live_lagged.inc_by(n);
    }
}
