//! The actuator's audit trail: one JSON line per decision in the audit file
//! ([`crate::audit`]), and the same record on `osprey.audit.<host>`.

use std::path::PathBuf;

use protocol::AuditRecord;

#[derive(Clone)]
pub struct AuditLog {
    path: PathBuf,
    client: Option<async_nats::Client>,
}

impl AuditLog {
    pub fn new(path: PathBuf, client: Option<async_nats::Client>) -> AuditLog {
        AuditLog { path, client }
    }

    pub fn record(&self, record: &AuditRecord) {
        crate::audit::append(&self.path, record);
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
