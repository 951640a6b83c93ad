//! The responder's audit trail: one JSON line per decision, and the same on
//! `osprey.audit._responder`.

use std::{io::Write, path::PathBuf};

use protocol::AuditRecord;

pub struct AuditLog {
    path: PathBuf,
    client: async_nats::Client,
}

impl AuditLog {
    pub fn new(path: PathBuf, client: async_nats::Client) -> AuditLog {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        AuditLog { path, client }
    }

    pub async fn record(&self, record: AuditRecord) {
        crate::metrics::get().audited(&record);
        tracing::info!(
            host = %record.host,
            action = %record.action,
            decision = record.decision.as_str(),
            reason = %record.reason,
            result = %record.result,
            "audit"
        );
        if let Ok(line) = serde_json::to_string(&record) {
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
            if let Err(e) = written {
                tracing::error!(path = %self.path.display(), "cannot write the audit file: {e}");
            }
        }
        if let Ok(bytes) = protocol::encode(&record) {
            if let Err(e) = self
                .client
                .publish(protocol::subject::AUDIT_RESPONDER, bytes.into())
                .await
            {
                tracing::warn!("cannot publish an audit record: {e}");
            }
        }
    }
}
