//! The actuator's audit trail: one JSON line per decision in the audit file, and the same
//! record on `osprey.audit.<host>`.

use std::{io::Write, path::PathBuf};

use protocol::AuditRecord;

pub struct AuditLog {
    path: PathBuf,
    client: Option<async_nats::Client>,
}

impl AuditLog {
    pub fn new(path: PathBuf, client: Option<async_nats::Client>) -> AuditLog {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        AuditLog { path, client }
    }

    pub fn record(&self, record: &AuditRecord) {
        tracing::info!(
            action = %record.action,
            decision = record.decision.as_str(),
            target = record.target.as_deref().unwrap_or(""),
            reason = %record.reason,
            result = %record.result,
            "audit"
        );
        match serde_json::to_string(record) {
            Ok(line) => {
                let written = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
                if let Err(e) = written {
                    tracing::error!(path = %self.path.display(), "cannot write the audit file: {e}");
                }
            }
            Err(e) => tracing::error!("cannot render an audit record: {e}"),
        }
        if let (Some(client), Ok(bytes)) = (&self.client, protocol::encode(record)) {
            let client = client.clone();
            let subject = protocol::subject::audit(&record.host);
            tokio::spawn(async move {
                if let Err(e) = client.publish(subject, bytes.into()).await {
                    tracing::warn!("cannot publish an audit record: {e}");
                }
            });
        }
    }
}
